//! What is written and read. Every write that the dashboard shows also
//! appends to `events` in the same transaction, so the stream and the
//! tables never disagree.

use super::items::{LineTranslation, SuggestionRecord, TranscriptLine, Translation};
use super::{Db, Store, StoreError, on_pool};
use crate::clock::now_epoch;
use serde::Serialize;
use sqlx::Row;

#[derive(Debug, Clone, Default)]
pub struct NewCall<'a> {
    pub session_id: &'a str,
    pub call_sid: Option<&'a str>,
    pub technician_id: &'a str,
    pub technician_name: &'a str,
    pub phone_number: Option<&'a str>,
    pub pipeline_version: Option<&'a str>,
    /// The host that runs the call now (given when a pipeline starts for
    /// it; writes that do not give one leave it).
    pub host_id: Option<&'a str>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CallRow {
    pub session_id: String,
    pub call_sid: Option<String>,
    pub technician_id: String,
    pub technician_name: String,
    pub phone_number: Option<String>,
    pub status: String,
    pub pipeline_version: Option<String>,
    pub started_at: f64,
    pub ended_at: Option<f64>,
    /// The host that runs (or ran) the call.
    pub host_id: Option<String>,
    /// The end-of-call summary (JSON), when a stage wrote one.
    pub summary: Option<String>,
    /// What the agent typed about the technician and the site (JSON).
    pub context: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StageErrorRow {
    pub session_id: String,
    pub stage: String,
    pub message: String,
    pub at: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EventRow {
    pub id: i64,
    pub kind: String,
    /// The JSON document the dashboard gets.
    pub data: String,
    pub at: f64,
}

/// Appends to the dashboard's event log inside the caller's transaction
/// (its last statement before the commit); evaluates to the new event's id.
macro_rules! event_in {
    ($store:expr, $tx:ident, $session:expr, $kind:expr, $data:expr, $at:expr) => {{
        $crate::records::InOrder::in_order(&mut *$tx, $session).await?;
        let sql = $store.sql(
            "INSERT INTO events (session_id, kind, data, at, host_id) \
             VALUES (?, ?, ?, ?, ?) RETURNING id",
        );
        let row = sqlx::query(sql)
            .bind($session)
            .bind($kind)
            .bind($data)
            .bind($at)
            .bind($store.host())
            .fetch_one(&mut *$tx)
            .await?;
        let id = row.try_get::<i64, _>(0)?;
        $crate::hosts::NotifyIn::notify_in(&mut *$tx, $store, id).await?;
        id
    }};
}
pub(crate) use event_in;

/// A session's events commit in the order of their ids, so a reader that
/// resumes after the newest id it saw (a dashboard reconnecting with
/// `Last-Event-ID`) misses none. Postgres hands ids out at insert and shows
/// rows at commit: two transactions of one session, on two connections or
/// two hosts, could commit out of id order. Each takes the session's
/// transaction lock before its id and keeps it to its commit. SQLite has
/// one writer at a time already.
pub(crate) trait InOrder {
    async fn in_order(self, session_id: &str) -> Result<(), StoreError>;
}

impl InOrder for &mut sqlx::SqliteConnection {
    async fn in_order(self, _: &str) -> Result<(), StoreError> {
        Ok(())
    }
}

impl InOrder for &mut sqlx::PgConnection {
    async fn in_order(self, session_id: &str) -> Result<(), StoreError> {
        // Sessions whose hashes collide only wait for each other.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(session_id)
            .execute(self)
            .await?;
        Ok(())
    }
}

/// `SELECT <the columns call_row! reads> FROM calls <rest>`
macro_rules! select_calls {
    ($rest:literal) => {
        concat!(
            "SELECT session_id, call_sid, technician_id, technician_name, phone_number, status, \
             pipeline_version, started_at, ended_at, host_id, summary, context FROM calls ",
            $rest
        )
    };
}

pub(crate) use select_calls;

/// A `calls` row (selected with `select_calls!`), on either backend.
macro_rules! call_row {
    ($r:expr) => {
        CallRow {
            session_id: $r.try_get("session_id")?,
            call_sid: $r.try_get("call_sid")?,
            technician_id: $r.try_get("technician_id")?,
            technician_name: $r.try_get("technician_name")?,
            phone_number: $r.try_get("phone_number")?,
            status: $r.try_get("status")?,
            pipeline_version: $r.try_get("pipeline_version")?,
            started_at: $r.try_get("started_at")?,
            ended_at: $r.try_get("ended_at")?,
            host_id: $r.try_get("host_id")?,
            summary: $r.try_get("summary")?,
            context: $r.try_get("context")?,
        }
    };
}
pub(crate) use call_row;

/// An `events` row (id, kind, data, at), on either backend.
macro_rules! event_row {
    ($r:expr) => {
        EventRow {
            id: $r.try_get("id")?,
            kind: $r.try_get("kind")?,
            data: $r.try_get("data")?,
            at: $r.try_get("at")?,
        }
    };
}
pub(crate) use event_row;

const TERMINAL: [&str; 6] = [
    "completed",
    "failed",
    "busy",
    "no-answer",
    "canceled",
    "interrupted",
];

impl Store {
    pub async fn record_pipeline(
        &self,
        version: &str,
        name: &str,
        path: &str,
        source: &str,
    ) -> Result<(), StoreError> {
        let sql = self.sql(
            "INSERT INTO pipeline_versions (version, name, path, source, loaded_at) \
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (version) DO NOTHING",
        );
        on_pool!(self, pool => sqlx::query(sql)
            .bind(version)
            .bind(name)
            .bind(path)
            .bind(source)
            .bind(now_epoch())
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// Creates the call, or fills in what is newly known about it. Its start
    /// is stamped on the database's clock, as leases are: a call that rings
    /// with no host is ended by age (`unstarted_calls`) by whichever host
    /// looks, and a host whose clock is off must not make it look older.
    pub async fn open_call(&self, c: &NewCall<'_>) -> Result<(), StoreError> {
        let sql = self.sql(
            "INSERT INTO calls (session_id, call_sid, technician_id, technician_name, \
             phone_number, status, pipeline_version, started_at, host_id) \
             VALUES (?, ?, ?, ?, ?, 'created', ?, {now}, ?) \
             ON CONFLICT (session_id) DO UPDATE SET \
             host_id = COALESCE(calls.host_id, excluded.host_id), \
             call_sid = COALESCE(excluded.call_sid, calls.call_sid), \
             technician_id = CASE WHEN excluded.technician_id = '' \
                THEN calls.technician_id ELSE excluded.technician_id END, \
             technician_name = CASE WHEN excluded.technician_name = '' \
                THEN calls.technician_name ELSE excluded.technician_name END, \
             phone_number = COALESCE(excluded.phone_number, calls.phone_number), \
             pipeline_version = COALESCE(excluded.pipeline_version, calls.pipeline_version)",
        );
        on_pool!(self, pool => sqlx::query(sql)
            .bind(c.session_id)
            .bind(c.call_sid)
            .bind(c.technician_id)
            .bind(c.technician_name)
            .bind(c.phone_number)
            .bind(c.pipeline_version)
            .bind(c.host_id)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// A status change (history row, the call's current status, and an
    /// event); terminal statuses end the call. Returns the event id, or
    /// `None` when the change is refused: after a terminal status only
    /// another terminal one is recorded (in the history; the status stays),
    /// except that `interrupted` (callpipe's guess that the call died) gives
    /// way to the terminal status the call really had.
    pub async fn set_status(
        &self,
        session_id: &str,
        status: &str,
    ) -> Result<Option<i64>, StoreError> {
        self.set_status_at(session_id, status, now_epoch()).await
    }

    /// `set_status` for a change that happened at `at` (the live view's
    /// time: what was shown and what is stored are the same event).
    pub async fn set_status_at(
        &self,
        session_id: &str,
        status: &str,
        at: f64,
    ) -> Result<Option<i64>, StoreError> {
        let terminal = TERMINAL.contains(&status);
        let ended = terminal.then_some(at);
        // Postgres locks the row: two changes of one call are decided in turn.
        let current = match self.db {
            Db::Postgres(_) => {
                self.sql("SELECT status, ended_at FROM calls WHERE session_id = ? FOR UPDATE")
            }
            Db::Sqlite(_) => self.sql("SELECT status, ended_at FROM calls WHERE session_id = ?"),
        };
        let history = self.sql("INSERT INTO call_status (session_id, status, at) VALUES (?, ?, ?)");
        let update = self.sql(
            "UPDATE calls SET status = ?, ended_at = COALESCE(ended_at, ?) WHERE session_id = ?",
        );
        let replace = self.sql("UPDATE calls SET status = ?, ended_at = ? WHERE session_id = ?");
        let forget =
            self.sql("DELETE FROM call_status WHERE session_id = ? AND status = 'interrupted'");
        let data = serde_json::json!({ "status": status, "at": at }).to_string();
        // A write first: SQLite's transaction takes the write lock at once
        // (a read that later upgrades fails "database is locked" at once
        // when another writer holds it, without waiting).
        let lock = self.sql("UPDATE calls SET status = status WHERE session_id = ?");
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(lock).bind(session_id).execute(&mut *tx).await?;
            let row = sqlx::query(current).bind(session_id).fetch_optional(&mut *tx).await?;
            let Some(row) = row else {
                return Err(StoreError::MissingCall(session_id.to_string()));
            };
            let was: String = row.try_get("status")?;
            let was_ended = row.try_get::<Option<f64>, _>("ended_at")?.is_some();
            match (was_ended, terminal) {
                (false, _) => {
                    sqlx::query(update).bind(status).bind(ended).bind(session_id).execute(&mut *tx).await?;
                }
                (true, false) => return Ok(None),
                (true, true) if was == "interrupted" && status != "interrupted" => {
                    sqlx::query(forget).bind(session_id).execute(&mut *tx).await?;
                    sqlx::query(replace).bind(status).bind(at).bind(session_id).execute(&mut *tx).await?;
                }
                // Ended already: the history keeps what was reported.
                (true, true) => {}
            }
            sqlx::query(history).bind(session_id).bind(status).bind(at).execute(&mut *tx).await?;
            let id = event_in!(self, tx, session_id, "status", &data, at);
            tx.commit().await?;
            Ok(Some(id))
        })
    }

    /// One more segment by `speaker_id`.
    pub async fn add_segment(
        &self,
        session_id: &str,
        speaker_id: &str,
        role: &str,
    ) -> Result<(), StoreError> {
        let sql = self.sql(
            "INSERT INTO speakers (session_id, speaker_id, role, segments) VALUES (?, ?, ?, 1) \
             ON CONFLICT (session_id, speaker_id) DO UPDATE SET segments = speakers.segments + 1",
        );
        on_pool!(self, pool => sqlx::query(sql)
            .bind(session_id)
            .bind(speaker_id)
            .bind(role)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// A transcript line; returns its event id.
    pub async fn add_transcript(
        &self,
        session_id: &str,
        line: &TranscriptLine,
    ) -> Result<i64, StoreError> {
        let at = now_epoch();
        let sql = self.sql(
            "INSERT INTO segments (session_id, speaker_id, role, start_ms, end_ms, text, \
             language, confidence, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        );
        let data = serde_json::to_string(line).unwrap_or_default();
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(sql)
                .bind(session_id)
                .bind(&line.speaker_id)
                .bind(&line.speaker_role)
                .bind(line.start_ms as i64)
                .bind(line.end_ms as i64)
                .bind(&line.text)
                .bind(&line.language)
                .bind(line.confidence as f64)
                .bind(at)
                .execute(&mut *tx)
                .await?;
            let id = event_in!(self, tx, session_id, "transcript", &data, at);
            tx.commit().await?;
            Ok(id)
        })
    }

    /// A line's translation, kept with the line (found by role, start and
    /// text) and as a `translation` event; returns the event id. A line the
    /// store does not have keeps nothing but the event.
    pub async fn add_translation(
        &self,
        session_id: &str,
        t: &LineTranslation,
    ) -> Result<i64, StoreError> {
        let at = now_epoch();
        let sql = self.sql(
            "UPDATE segments SET translation = ?, translation_language = ? \
             WHERE session_id = ? AND role = ? AND start_ms = ? AND text = ?",
        );
        let data = serde_json::to_string(t).unwrap_or_default();
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(sql)
                .bind(&t.text)
                .bind(&t.language)
                .bind(session_id)
                .bind(&t.speaker_role)
                .bind(t.start_ms as i64)
                .bind(&t.original)
                .execute(&mut *tx)
                .await?;
            let id = event_in!(self, tx, session_id, "translation", &data, at);
            tx.commit().await?;
            Ok(id)
        })
    }

    /// A suggestion or a clarifying question (by its kind); one with a known
    /// id is updated. Returns its event id.
    pub async fn add_suggestion(
        &self,
        session_id: &str,
        s: &SuggestionRecord,
    ) -> Result<i64, StoreError> {
        let sources = serde_json::to_string(&s.sources).unwrap_or_else(|_| "[]".into());
        let data = serde_json::to_string(s).unwrap_or_default();
        let question = s.kind == "clarification_question";
        let sql = if question {
            self.sql(
                "INSERT INTO questions (session_id, question_id, title, content, sources, \
                 language, at, confidence, model_written) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (session_id, question_id) DO UPDATE SET title = excluded.title, \
                 content = excluded.content, sources = excluded.sources, \
                 confidence = excluded.confidence, at = excluded.at, \
                 model_written = excluded.model_written",
            )
        } else {
            self.sql(
                "INSERT INTO suggestions (session_id, suggestion_id, title, content, sources, \
                 language, at, confidence, model_written) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (session_id, suggestion_id) DO UPDATE SET title = excluded.title, \
                 content = excluded.content, sources = excluded.sources, \
                 confidence = excluded.confidence, at = excluded.at, \
                 model_written = excluded.model_written",
            )
        };
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(sql)
                .bind(session_id)
                .bind(&s.id)
                .bind(&s.title)
                .bind(&s.content)
                .bind(&sources)
                .bind(&s.language)
                .bind(s.at)
                .bind(s.confidence as f64)
                .bind(s.model_written)
                .execute(&mut *tx)
                .await?;
            let id = event_in!(self, tx, session_id, "suggestion", &data, s.at);
            tx.commit().await?;
            Ok(id)
        })
    }

    /// The call's end-of-call summary (JSON; a later one replaces it);
    /// returns its event id.
    pub async fn set_summary(&self, session_id: &str, json: &str) -> Result<i64, StoreError> {
        let at = now_epoch();
        let sql = self.sql("UPDATE calls SET summary = ? WHERE session_id = ?");
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let updated = sqlx::query(sql)
                .bind(json)
                .bind(session_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if updated == 0 {
                return Err(StoreError::MissingCall(session_id.to_string()));
            }
            let id = event_in!(self, tx, session_id, "summary", json, at);
            tx.commit().await?;
            Ok(id)
        })
    }

    /// What the agent typed about the technician and the site (JSON; the
    /// latest replaces it).
    pub async fn set_context(&self, session_id: &str, json: &str) -> Result<(), StoreError> {
        let sql = self.sql("UPDATE calls SET context = ? WHERE session_id = ?");
        let updated = on_pool!(self, pool => sqlx::query(sql)
            .bind(json)
            .bind(session_id)
            .execute(pool)
            .await?
            .rows_affected());
        if updated == 0 {
            return Err(StoreError::MissingCall(session_id.to_string()));
        }
        Ok(())
    }

    pub async fn add_stage_error(
        &self,
        session_id: &str,
        stage: &str,
        message: &str,
        at: f64,
    ) -> Result<(), StoreError> {
        let sql = self
            .sql("INSERT INTO stage_errors (session_id, stage, message, at) VALUES (?, ?, ?, ?)");
        on_pool!(self, pool => sqlx::query(sql)
            .bind(session_id)
            .bind(stage)
            .bind(message)
            .bind(at)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    pub async fn call(&self, session_id: &str) -> Result<Option<CallRow>, StoreError> {
        let sql = self.sql(select_calls!("WHERE session_id = ?"));
        on_pool!(self, pool => {
            let row = sqlx::query(sql).bind(session_id).fetch_optional(pool).await?;
            row.map(|r| -> Result<CallRow, sqlx::Error> { Ok(call_row!(r)) })
                .transpose()
                .map_err(StoreError::from)
        })
    }

    /// The most recent calls, newest first.
    pub async fn recent_calls(&self, limit: i64) -> Result<Vec<CallRow>, StoreError> {
        let sql = self.sql(select_calls!("ORDER BY started_at DESC LIMIT ?"));
        on_pool!(self, pool => {
            let rows = sqlx::query(sql).bind(limit).fetch_all(pool).await?;
            rows.iter()
                .map(|r| Ok(call_row!(r)))
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(StoreError::from)
        })
    }

    /// At start: calls this host (or, before hosts were recorded, any
    /// process) never ended because it was killed are marked `interrupted`.
    /// Returns their session ids.
    pub async fn interrupt_unfinished(&self, host_id: &str) -> Result<Vec<String>, StoreError> {
        let mut ended = Vec::new();
        for id in self.unfinished_of(host_id).await? {
            if self.end_unfinished(&id, "interrupted").await?.is_some() {
                ended.push(id);
            }
        }
        Ok(ended)
    }

    /// The call's status changes, oldest first.
    pub async fn status_history(&self, session_id: &str) -> Result<Vec<(String, f64)>, StoreError> {
        let sql = self.sql("SELECT status, at FROM call_status WHERE session_id = ? ORDER BY id");
        on_pool!(self, pool => {
            let rows = sqlx::query(sql).bind(session_id).fetch_all(pool).await?;
            rows.iter()
                .map(|r| Ok((r.try_get("status")?, r.try_get("at")?)))
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(StoreError::from)
        })
    }

    /// The latest stage errors, newest first.
    pub async fn recent_stage_errors(&self, limit: i64) -> Result<Vec<StageErrorRow>, StoreError> {
        let sql = self.sql(
            "SELECT session_id, stage, message, at FROM stage_errors ORDER BY id DESC LIMIT ?",
        );
        on_pool!(self, pool => {
            let rows = sqlx::query(sql).bind(limit).fetch_all(pool).await?;
            rows.iter()
                .map(|r| Ok(StageErrorRow {
                    session_id: r.try_get("session_id")?,
                    stage: r.try_get("stage")?,
                    message: r.try_get("message")?,
                    at: r.try_get("at")?,
                }))
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(StoreError::from)
        })
    }

    /// (speaker id, role, segments) of a call.
    pub async fn speakers(
        &self,
        session_id: &str,
    ) -> Result<Vec<(String, String, i64)>, StoreError> {
        let sql = self.sql(
            "SELECT speaker_id, role, segments FROM speakers WHERE session_id = ? ORDER BY speaker_id",
        );
        on_pool!(self, pool => {
            let rows = sqlx::query(sql).bind(session_id).fetch_all(pool).await?;
            rows.iter()
                .map(|r| Ok((r.try_get("speaker_id")?, r.try_get("role")?, r.try_get("segments")?)))
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(StoreError::from)
        })
    }

    /// Transcript lines, oldest first.
    pub async fn transcripts(&self, session_id: &str) -> Result<Vec<TranscriptLine>, StoreError> {
        let sql = self.sql(
            "SELECT speaker_id, role, start_ms, end_ms, text, language, confidence, \
             translation, translation_language FROM segments WHERE session_id = ? ORDER BY id",
        );
        on_pool!(self, pool => {
            let rows = sqlx::query(sql).bind(session_id).fetch_all(pool).await?;
            rows.iter()
                .map(|r| {
                    Ok(TranscriptLine {
                        speaker_id: r.try_get("speaker_id")?,
                        speaker_role: r.try_get("role")?,
                        start_ms: r.try_get::<i64, _>("start_ms")?.max(0) as u64,
                        end_ms: r.try_get::<i64, _>("end_ms")?.max(0) as u64,
                        text: r.try_get("text")?,
                        language: r.try_get("language")?,
                        confidence: r.try_get::<f64, _>("confidence")? as f32,
                        translation: match (
                            r.try_get::<Option<String>, _>("translation")?,
                            r.try_get::<Option<String>, _>("translation_language")?,
                        ) {
                            (Some(text), Some(language)) => Some(Translation { language, text }),
                            _ => None,
                        },
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(StoreError::from)
        })
    }

    /// Suggestions and questions, oldest first, as the live session has them.
    pub async fn suggestions(&self, session_id: &str) -> Result<Vec<SuggestionRecord>, StoreError> {
        let sql = self.sql(
            "SELECT suggestion_id AS id, 'knowledge_base' AS kind, title, content, sources, \
             confidence, language, at, model_written FROM suggestions WHERE session_id = ? \
             UNION ALL SELECT question_id, 'clarification_question', title, content, sources, \
             confidence, language, at, model_written FROM questions WHERE session_id = ? \
             ORDER BY at",
        );
        on_pool!(self, pool => {
            let rows = sqlx::query(sql)
                .bind(session_id)
                .bind(session_id)
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|r| {
                    let sources: String = r.try_get("sources")?;
                    Ok(SuggestionRecord {
                        id: r.try_get("id")?,
                        kind: r.try_get("kind")?,
                        title: r.try_get("title")?,
                        content: r.try_get("content")?,
                        sources: serde_json::from_str(&sources).unwrap_or_default(),
                        confidence: r.try_get::<f64, _>("confidence")? as f32,
                        language: r.try_get("language")?,
                        at: r.try_get("at")?,
                        model_written: r.try_get("model_written")?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(StoreError::from)
        })
    }

    /// The dashboard's events after `after` (an event id), oldest first.
    pub async fn events_after(
        &self,
        session_id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<EventRow>, StoreError> {
        let sql = self.sql(
            "SELECT id, kind, data, at FROM events WHERE session_id = ? AND id > ? \
             ORDER BY id LIMIT ?",
        );
        on_pool!(self, pool => {
            let rows = sqlx::query(sql)
                .bind(session_id)
                .bind(after)
                .bind(limit)
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|r| Ok(event_row!(r)))
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(StoreError::from)
        })
    }
}
