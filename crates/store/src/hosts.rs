//! Several hosts on one database: who runs which call, who is alive (a
//! lease each host renews), and the notifications that tell every host
//! about events another one stored (Postgres `LISTEN`/`NOTIFY`).

use super::records::{CallRow, EventRow};
use super::{Db, Store, StoreError, on_pool};
use crate::clock::now_epoch;
use sqlx::Row;

/// A host as the others see it.
#[derive(Debug, Clone, PartialEq)]
pub struct HostRow {
    pub host_id: String,
    /// Where the other hosts reach it (`http://host:port`), or empty.
    pub address: String,
    /// Seconds since the epoch until which it counts as alive.
    pub lease_until: f64,
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

    /// Records that `host_id` is alive until `ttl` from now, reachable at
    /// `address`.
    pub async fn renew_lease(
        &self,
        host_id: &str,
        address: &str,
        ttl: std::time::Duration,
    ) -> Result<(), StoreError> {
        let now = now_epoch();
        let sql = self.sql(
            "INSERT INTO hosts (host_id, address, started_at, lease_until) VALUES (?, ?, ?, ?) \
             ON CONFLICT (host_id) DO UPDATE SET address = excluded.address, \
             lease_until = excluded.lease_until",
        );
        on_pool!(self, pool => sqlx::query(sql)
            .bind(host_id)
            .bind(address)
            .bind(now)
            .bind(now + ttl.as_secs_f64())
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// Gives the lease up (a clean stop): the others need not wait for it
    /// to expire.
    pub async fn release_lease(&self, host_id: &str) -> Result<(), StoreError> {
        let sql = self.sql("UPDATE hosts SET lease_until = 0 WHERE host_id = ?");
        on_pool!(self, pool => sqlx::query(sql).bind(host_id).execute(pool).await.map(|_| ()))?;
        Ok(())
    }

    pub async fn host_row(&self, host_id: &str) -> Result<Option<HostRow>, StoreError> {
        let sql = self.sql("SELECT host_id, address, lease_until FROM hosts WHERE host_id = ?");
        on_pool!(self, pool => {
            let row = sqlx::query(sql).bind(host_id).fetch_optional(pool).await?;
            row.map(|r| -> Result<HostRow, sqlx::Error> {
                Ok(HostRow {
                    host_id: r.try_get("host_id")?,
                    address: r.try_get("address")?,
                    lease_until: r.try_get("lease_until")?,
                })
            })
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

    /// Unfinished calls of `host_id` (and of no host: recorded before hosts
    /// were), for the host itself at start.
    pub async fn unfinished_of(&self, host_id: &str) -> Result<Vec<String>, StoreError> {
        let sql = self.sql(
            "SELECT session_id FROM calls WHERE ended_at IS NULL \
             AND (host_id = ? OR host_id IS NULL)",
        );
        on_pool!(self, pool => {
            let rows = sqlx::query(sql).bind(host_id).fetch_all(pool).await?;
            rows.iter()
                .map(|r| r.try_get("session_id"))
                .collect::<Result<Vec<String>, sqlx::Error>>()
                .map_err(StoreError::from)
        })
    }

    /// Unfinished calls whose host's lease has expired (or that never had
    /// one): the host is gone and nobody will end them.
    pub async fn orphaned_calls(&self) -> Result<Vec<(String, String)>, StoreError> {
        let sql = self.sql(
            "SELECT c.session_id, c.host_id FROM calls c LEFT JOIN hosts h ON h.host_id = c.host_id \
             WHERE c.ended_at IS NULL AND c.host_id IS NOT NULL \
             AND (h.host_id IS NULL OR h.lease_until < ?)",
        );
        on_pool!(self, pool => {
            let rows = sqlx::query(sql).bind(now_epoch()).fetch_all(pool).await?;
            rows.iter()
                .map(|r| Ok((r.try_get("session_id")?, r.try_get("host_id")?)))
                .collect::<Result<Vec<(String, String)>, sqlx::Error>>()
                .map_err(StoreError::from)
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
