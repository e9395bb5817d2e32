//! Several hosts on one database: who runs which call, who is alive (a
//! lease each host renews), and the notifications that tell every host
//! about events another one stored (Postgres `LISTEN`/`NOTIFY`).

use super::records::{CallRow, EventRow};
use super::{Db, Store, StoreError, on_pool};
use crate::clock::now_epoch;
use sqlx::Row;
use std::time::Duration;

/// A host as the others see it.
#[derive(Debug, Clone, PartialEq)]
pub struct HostRow {
    pub host_id: String,
    /// Where the other hosts reach it (`http://host:port`), or empty.
    pub address: String,
    /// Seconds since the epoch until which it counts as alive.
    pub lease_until: f64,
}

/// A `HostRow` from a row with `host_id`, `address` and `lease_until`
/// (either backend's row type).
macro_rules! host_row {
    ($r:expr) => {
        HostRow {
            host_id: $r.try_get("host_id")?,
            address: $r.try_get("address")?,
            lease_until: $r.try_get("lease_until")?,
        }
    };
}

/// One event another host stored: its id and the host that wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub event_id: i64,
    pub host_id: String,
}

impl Notice {
    /// `"<id> <host>"`, the notification's payload.
    pub(crate) fn payload(event_id: i64, host_id: &str) -> String {
        format!("{event_id} {host_id}")
    }

    fn parse(payload: &str) -> Option<Notice> {
        let (id, host) = payload.split_once(' ')?;
        Some(Notice {
            event_id: id.parse().ok()?,
            host_id: host.to_string(),
        })
    }
}

/// What a host's claim on a call came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The call is this host's.
    Taken,
    /// Another live host runs it (its id).
    Elsewhere(String),
    /// The call has ended: nothing may start for it again.
    Ended,
}

/// What a listener gets: stored events, or word that notices may have been
/// missed (the connection dropped) and the store must be read to catch up.
#[derive(Debug)]
pub enum Heard {
    Events(Vec<Notice>),
    Reconnected,
}

/// Listens for the events other hosts store (Postgres only).
pub struct Listener {
    inner: sqlx::postgres::PgListener,
}

impl Listener {
    /// Waits for the next notices (all that arrived together).
    pub async fn next(&mut self) -> Result<Heard, StoreError> {
        let Some(first) = self.inner.try_recv().await? else {
            return Ok(Heard::Reconnected);
        };
        let mut notices: Vec<Notice> = Notice::parse(first.payload()).into_iter().collect();
        while let Some(n) = self.inner.next_buffered() {
            notices.extend(Notice::parse(n.payload()));
        }
        Ok(Heard::Events(notices))
    }
}

/// Tells the other hosts that an event is stored: inside the event's
/// transaction, so it is delivered at commit or never. Only Postgres has
/// other hosts to tell.
pub(crate) trait NotifyIn {
    async fn notify_in(self, store: &Store, id: i64) -> Result<(), StoreError>;
}

impl NotifyIn for &mut sqlx::SqliteConnection {
    async fn notify_in(self, _: &Store, _: i64) -> Result<(), StoreError> {
        Ok(())
    }
}

impl NotifyIn for &mut sqlx::PgConnection {
    async fn notify_in(self, store: &Store, id: i64) -> Result<(), StoreError> {
        let Some(channel) = store.notify_channel.get() else {
            return Ok(());
        };
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel)
            .bind(Notice::payload(id, store.host().unwrap_or("")))
            .execute(self)
            .await?;
        Ok(())
    }
}

impl Store {
    /// The host this process is, as it signs the events it stores. Set once,
    /// before the first write.
    pub fn set_host(&self, host_id: &str) {
        let _ = self.host_id.set(host_id.to_string());
    }

    pub fn host(&self) -> Option<&str> {
        self.host_id.get().map(String::as_str)
    }

    /// The notification channel of this database and schema (Postgres):
    /// channels are database-wide, so two deployments in two schemas must
    /// not hear each other.
    pub(crate) async fn channel(&self) -> Result<Option<String>, StoreError> {
        let Db::Postgres(pool) = &self.db else {
            return Ok(None);
        };
        let schema: String = sqlx::query_scalar("SELECT current_schema()::text")
            .fetch_one(pool)
            .await?;
        let clean: String = schema
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .take(40)
            .collect();
        Ok(Some(format!("callpipe_events_{clean}")))
    }

    /// Starts listening for other hosts' events: `None` on SQLite (one host).
    pub async fn listen(&self) -> Result<Option<Listener>, StoreError> {
        let (Db::Postgres(pool), Some(channel)) = (&self.db, self.notify_channel.get()) else {
            return Ok(None);
        };
        let mut inner = sqlx::postgres::PgListener::connect_with(pool).await?;
        inner.listen(channel).await?;
        Ok(Some(Listener { inner }))
    }

    /// Records that `host_id` is alive until `ttl` from now on the
    /// database's clock, reachable at `address`, as process `incarnation`.
    /// Fails with `HostIdTaken` while another incarnation's lease under the
    /// same id has not expired (two processes given one id).
    pub async fn renew_lease(
        &self,
        host_id: &str,
        incarnation: &str,
        address: &str,
        ttl: std::time::Duration,
    ) -> Result<(), StoreError> {
        let sql = self.sql(
            "INSERT INTO hosts (host_id, address, started_at, lease_until, incarnation) \
             VALUES (?, ?, {now}, {now} + ?, ?) \
             ON CONFLICT (host_id) DO UPDATE SET address = excluded.address, \
             lease_until = excluded.lease_until, incarnation = excluded.incarnation, \
             started_at = CASE WHEN hosts.incarnation = excluded.incarnation \
                THEN hosts.started_at ELSE excluded.started_at END \
             WHERE hosts.incarnation = excluded.incarnation \
                OR hosts.lease_until < excluded.started_at",
        );
        let renewed = on_pool!(self, pool => sqlx::query(sql)
            .bind(host_id)
            .bind(address)
            .bind(ttl.as_secs_f64())
            .bind(incarnation)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?;
        if renewed == 0 {
            return Err(StoreError::HostIdTaken(host_id.to_string()));
        }
        Ok(())
    }

    /// Gives the lease up (a clean stop): the others need not wait for it
    /// to expire.
    pub async fn release_lease(&self, host_id: &str, incarnation: &str) -> Result<(), StoreError> {
        let sql =
            self.sql("UPDATE hosts SET lease_until = 0 WHERE host_id = ? AND incarnation = ?");
        on_pool!(self, pool => sqlx::query(sql)
            .bind(host_id)
            .bind(incarnation)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// Spends a media-stream token's nonce for every host sharing the
    /// database: true the first time, false when any host already spent it.
    /// Kept ten minutes past `expires_at` (Unix seconds, the token's own
    /// expiry): a host whose clock runs behind the database's still takes
    /// the token for valid a while after it expired there.
    pub async fn spend_token(&self, nonce: &str, expires_at: f64) -> Result<bool, StoreError> {
        let forget = self.sql("DELETE FROM spent_tokens WHERE expires_at < {now} - 600");
        let spend = self.sql(
            "INSERT INTO spent_tokens (nonce, expires_at) VALUES (?, ?) \
             ON CONFLICT (nonce) DO NOTHING",
        );
        on_pool!(self, pool => {
            sqlx::query(forget).execute(pool).await?;
            let spent = sqlx::query(spend)
                .bind(nonce)
                .bind(expires_at)
                .execute(pool)
                .await?
                .rows_affected();
            Ok(spent == 1)
        })
    }

    pub async fn host_row(&self, host_id: &str) -> Result<Option<HostRow>, StoreError> {
        let sql = self.sql("SELECT host_id, address, lease_until FROM hosts WHERE host_id = ?");
        on_pool!(self, pool => {
            let row = sqlx::query(sql).bind(host_id).fetch_optional(pool).await?;
            row.map(|r| -> Result<HostRow, sqlx::Error> { Ok(host_row!(r)) })
            .transpose()
            .map_err(StoreError::from)
        })
    }

    /// Ends a call that has not ended yet with `status` (history, event,
    /// notice); `None` if it had ended (another host got there first).
    pub async fn end_unfinished(
        &self,
        session_id: &str,
        status: &str,
    ) -> Result<Option<i64>, StoreError> {
        let at = now_epoch();
        let claim = self.sql(
            "UPDATE calls SET status = ?, ended_at = ? WHERE session_id = ? AND ended_at IS NULL",
        );
        let history = self.sql("INSERT INTO call_status (session_id, status, at) VALUES (?, ?, ?)");
        let data = serde_json::json!({ "status": status, "at": at }).to_string();
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let claimed = sqlx::query(claim)
                .bind(status)
                .bind(at)
                .bind(session_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if claimed == 0 {
                return Ok(None);
            }
            sqlx::query(history).bind(session_id).bind(status).bind(at).execute(&mut *tx).await?;
            let id = super::records::event_in!(self, tx, session_id, "status", &data, at);
            tx.commit().await?;
            Ok(Some(id))
        })
    }

    /// Unfinished calls of `host_id`, for the host itself at start. Calls
    /// of no host are not its own: another host may be ringing them (they
    /// end by age, `unstarted_calls`).
    pub async fn unfinished_of(&self, host_id: &str) -> Result<Vec<String>, StoreError> {
        let sql = self.sql("SELECT session_id FROM calls WHERE ended_at IS NULL AND host_id = ?");
        on_pool!(self, pool => {
            let rows = sqlx::query(sql).bind(host_id).fetch_all(pool).await?;
            rows.iter()
                .map(|r| r.try_get("session_id"))
                .collect::<Result<Vec<String>, sqlx::Error>>()
                .map_err(StoreError::from)
        })
    }

    /// Unfinished calls whose host's lease expired more than `grace` ago
    /// on the database's clock (or that name a host never seen): the host
    /// is gone and nobody will end them. The grace keeps a host that lost
    /// the database briefly from having its live calls ended under it.
    pub async fn orphaned_calls(
        &self,
        grace: std::time::Duration,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let sql = self.sql(
            "SELECT c.session_id, c.host_id FROM calls c LEFT JOIN hosts h ON h.host_id = c.host_id \
             WHERE c.ended_at IS NULL AND c.host_id IS NOT NULL \
             AND (h.host_id IS NULL OR h.lease_until + ? < {now})",
        );
        on_pool!(self, pool => {
            let rows = sqlx::query(sql).bind(grace.as_secs_f64()).fetch_all(pool).await?;
            rows.iter()
                .map(|r| Ok((r.try_get("session_id")?, r.try_get("host_id")?)))
                .collect::<Result<Vec<(String, String)>, sqlx::Error>>()
                .map_err(StoreError::from)
        })
    }

    /// Unfinished calls no host ever took that are older than `age` on the
    /// database's clock: their TwiML was served but no stream or chat
    /// started (or its host died before recording itself). Any host may
    /// end them.
    pub async fn unstarted_calls(&self, age: Duration) -> Result<Vec<String>, StoreError> {
        let sql = self.sql(
            "SELECT session_id FROM calls WHERE ended_at IS NULL AND host_id IS NULL \
             AND started_at < {now} - ?",
        );
        on_pool!(self, pool => {
            let rows = sqlx::query(sql).bind(age.as_secs_f64()).fetch_all(pool).await?;
            rows.iter()
                .map(|r| r.try_get("session_id"))
                .collect::<Result<Vec<String>, sqlx::Error>>()
                .map_err(StoreError::from)
        })
    }

    /// Makes `host_id` the call's one owner before its pipeline starts:
    /// taken when the call has no host, is already this host's, or its host's
    /// lease expired more than `grace` ago; refused while another live host
    /// runs it or once it has ended. The row is created if missing.
    pub async fn claim_call(
        &self,
        session_id: &str,
        host_id: &str,
        grace: Duration,
    ) -> Result<Claim, StoreError> {
        let claim = self.sql(
            "INSERT INTO calls (session_id, technician_id, technician_name, status, started_at, \
             host_id) VALUES (?, '', '', 'created', {now}, ?) \
             ON CONFLICT (session_id) DO UPDATE SET host_id = excluded.host_id \
             WHERE calls.ended_at IS NULL AND (calls.host_id IS NULL \
                OR calls.host_id = excluded.host_id \
                OR NOT EXISTS (SELECT 1 FROM hosts h WHERE h.host_id = calls.host_id \
                    AND h.lease_until + ? >= {now}))",
        );
        let read = self.sql("SELECT host_id, ended_at FROM calls WHERE session_id = ?");
        on_pool!(self, pool => {
            let taken = sqlx::query(claim)
                .bind(session_id)
                .bind(host_id)
                .bind(grace.as_secs_f64())
                .execute(pool)
                .await?
                .rows_affected();
            if taken > 0 {
                return Ok(Claim::Taken);
            }
            let row = sqlx::query(read).bind(session_id).fetch_optional(pool).await?;
            let Some(row) = row else {
                return Err(StoreError::MissingCall(session_id.to_string()));
            };
            if row.try_get::<Option<f64>, _>("ended_at")?.is_some() {
                return Ok(Claim::Ended);
            }
            Ok(Claim::Elsewhere(
                row.try_get::<Option<String>, _>("host_id")?.unwrap_or_default(),
            ))
        })
    }

    /// The host that runs `session_id` while its lease holds, if another
    /// than `me` and the call has not ended.
    pub async fn live_owner(
        &self,
        session_id: &str,
        me: &str,
    ) -> Result<Option<HostRow>, StoreError> {
        let sql = self.sql(
            "SELECT h.host_id, h.address, h.lease_until FROM calls c \
             JOIN hosts h ON h.host_id = c.host_id \
             WHERE c.session_id = ? AND c.ended_at IS NULL AND c.host_id <> ? \
             AND h.lease_until >= {now}",
        );
        on_pool!(self, pool => {
            let row = sqlx::query(sql).bind(session_id).bind(me).fetch_optional(pool).await?;
            row.map(|r| -> Result<HostRow, sqlx::Error> { Ok(host_row!(r)) })
            .transpose()
            .map_err(StoreError::from)
        })
    }

    /// A call `host_id` still runs that another host marked `interrupted`
    /// (it took this host for gone while it could not reach the database):
    /// the call is open again, the wrong entries leave its status history,
    /// and the status it had before comes back as a new event. `None` when
    /// there was nothing to undo.
    pub async fn reclaim(
        &self,
        session_id: &str,
        host_id: &str,
    ) -> Result<Option<i64>, StoreError> {
        let reopen = self.sql(
            "UPDATE calls SET ended_at = NULL, status = COALESCE((SELECT s.status FROM call_status s \
             WHERE s.session_id = calls.session_id AND s.status <> 'interrupted' \
             ORDER BY s.id DESC LIMIT 1), 'in-progress') \
             WHERE session_id = ? AND host_id = ? AND status = 'interrupted' \
             AND ended_at IS NOT NULL",
        );
        let forget =
            self.sql("DELETE FROM call_status WHERE session_id = ? AND status = 'interrupted'");
        let status = self.sql("SELECT status FROM calls WHERE session_id = ?");
        let at = now_epoch();
        on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let reopened = sqlx::query(reopen)
                .bind(session_id)
                .bind(host_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if reopened == 0 {
                return Ok(None);
            }
            sqlx::query(forget).bind(session_id).execute(&mut *tx).await?;
            let now: String = sqlx::query(status).bind(session_id).fetch_one(&mut *tx).await?.try_get(0)?;
            let data = serde_json::json!({ "status": now, "at": at, "reclaimed": true }).to_string();
            let id = super::records::event_in!(self, tx, session_id, "status", &data, at);
            tx.commit().await?;
            Ok(Some(id))
        })
    }

    /// The call a Twilio call SID belongs to.
    pub async fn call_by_sid(&self, call_sid: &str) -> Result<Option<CallRow>, StoreError> {
        let sql = self.sql(super::records::select_calls!(
            "WHERE call_sid = ? ORDER BY started_at DESC LIMIT 1"
        ));
        on_pool!(self, pool => {
            let row = sqlx::query(sql).bind(call_sid).fetch_optional(pool).await?;
            row.map(|r| -> Result<CallRow, sqlx::Error> { Ok(super::records::call_row!(r)) })
                .transpose()
                .map_err(StoreError::from)
        })
    }

    /// Events by id, oldest first, with their session (what a notice names).
    pub async fn events_by_id(&self, ids: &[i64]) -> Result<Vec<(String, EventRow)>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // Ids are numbers: listing them inline is safe and works on both.
        let list: Vec<String> = ids.iter().map(i64::to_string).collect();
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT id, session_id, kind, data, at FROM events WHERE id IN ({}) ORDER BY id",
            list.join(",")
        ));
        on_pool!(self, pool => {
            let rows = sqlx::query(sql).fetch_all(pool).await?;
            rows.iter()
                .map(|r| Ok((r.try_get("session_id")?, super::records::event_row!(r))))
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(StoreError::from)
        })
    }

    /// Events after `after` written by another host than `host_id`, oldest
    /// first: what a listener that lost its connection may have missed.
    pub async fn events_of_others_after(
        &self,
        after: i64,
        host_id: &str,
        limit: i64,
    ) -> Result<Vec<(String, EventRow)>, StoreError> {
        let sql = self.sql(
            "SELECT id, session_id, kind, data, at FROM events WHERE id > ? \
             AND (host_id IS NULL OR host_id <> ?) ORDER BY id LIMIT ?",
        );
        on_pool!(self, pool => {
            let rows = sqlx::query(sql)
                .bind(after)
                .bind(host_id)
                .bind(limit)
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|r| Ok((r.try_get("session_id")?, super::records::event_row!(r))))
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(StoreError::from)
        })
    }

    /// The newest event id (0 without events).
    pub async fn last_event_id(&self) -> Result<i64, StoreError> {
        let sql = self.sql("SELECT COALESCE(MAX(id), 0) FROM events");
        on_pool!(self, pool => {
            let row = sqlx::query(sql).fetch_one(pool).await?;
            Ok(row.try_get::<i64, _>(0)?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_round_trip_and_junk_is_ignored() {
        let p = Notice::payload(42, "host-a:8080");
        assert_eq!(
            Notice::parse(&p),
            Some(Notice {
                event_id: 42,
                host_id: "host-a:8080".into()
            })
        );
        assert_eq!(Notice::parse("x y"), None);
        assert_eq!(Notice::parse("12"), None);
    }
}
