//! The durable record: calls, their status history, speakers, segments with
//! transcripts, suggestions, clarifying questions, stage errors, pipeline
//! versions, and the ordered log of everything the dashboard is shown (the
//! live stream replays it after a `Last-Event-ID`).
//!
//! sqlx with migrations: a SQLite file in the data dir by default, Postgres
//! with `CALLPIPE_DATABASE_URL=postgres://...`. The SQL is written once with
//! `?` placeholders and numbered for Postgres.

pub mod clock;
mod hosts;
pub mod items;
mod records;

pub use hosts::{Claim, Heard, HostRow, Listener, Notice};
pub use records::{CallRow, EventRow, NewCall, StageErrorRow};

use std::borrow::Cow;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database {url}: {source}")]
    Open {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("`{0}` is not a database URL (sqlite://FILE or postgres://...)")]
    Url(String),
    /// An update of a call whose row does not exist (yet).
    #[error("no call `{0}` in the store")]
    MissingCall(String),
    /// Another live process renews a lease under this host's id.
    #[error(
        "another process is alive as host `{0}` (it renews the lease under that id): \
         give each host its own CALLPIPE_HOST_ID"
    )]
    HostIdTaken(String),
}

/// How long a write waits for a connection before it fails (and the writer
/// retries it): sqlx's default of 30 s would hold every queued write behind
/// one unreachable server for that long per try.
pub const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

impl StoreError {
    /// Whether trying the same write again later may succeed: the database
    /// is unreachable, restarting, busy or out of connections.
    pub fn is_transient(&self) -> bool {
        let e = match self {
            StoreError::Sql(e) | StoreError::Open { source: e, .. } => e,
            _ => return false,
        };
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(db) => db.code().is_some_and(|c| transient_code(&c)),
            _ => false,
        }
    }

    /// Whether the write failed because its call's row is missing (a
    /// foreign key): creating the row and writing again repairs it.
    pub fn is_missing_call(&self) -> bool {
        matches!(self, StoreError::MissingCall(_))
            || matches!(self, StoreError::Sql(sqlx::Error::Database(db))
            if db.kind() == sqlx::error::ErrorKind::ForeignKeyViolation)
    }
}

/// Postgres classes 08 (connection), 40 (rollback: serialization,
/// deadlock), 53 (insufficient resources), 57 (operator intervention:
/// shutdown, restart); SQLite's busy and locked codes.
fn transient_code(code: &str) -> bool {
    ["08", "40", "53", "57"]
        .iter()
        .any(|class| code.starts_with(class))
        || matches!(code, "5" | "6" | "261" | "262" | "517")
}

pub enum Db {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

pub struct Store {
    db: Db,
    /// The URL without a password, for logs.
    pub display: String,
    /// The host this process is (it signs the events it stores).
    host_id: std::sync::OnceLock<String>,
    /// Where stored events are announced (Postgres).
    notify_channel: std::sync::OnceLock<String>,
}

/// Runs the same statement-building code against whichever pool it is.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.db {
            Db::Sqlite($pool) => $body,
            Db::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// `postgres://user:secret@host/db` -> `postgres://user:***@host/db`
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

impl Store {
    /// `url`, or `sqlite://DATA_DIR/callpipe.db` without one.
    pub async fn open(data_dir: &Path, url: Option<&str>) -> Result<Store, StoreError> {
        match url.map(str::trim) {
            Some(url) if !url.is_empty() => Store::connect(url).await,
            _ => {
                std::fs::create_dir_all(data_dir).map_err(|e| StoreError::Open {
                    url: data_dir.display().to_string(),
                    source: sqlx::Error::Io(e),
                })?;
                Store::connect(&format!(
                    "sqlite://{}",
                    data_dir.join("callpipe.db").display()
                ))
                .await
            }
        }
    }

    /// Opens (creating a SQLite file if needed) and migrates.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        let display = redact(url);
        let open = |source| StoreError::Open {
            url: display.clone(),
            source,
        };
        let db = if url.starts_with("sqlite:") {
            use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
            let options: SqliteConnectOptions = url.parse().map_err(open)?;
            let options = options
                .create_if_missing(true)
                // Readers never wait for the writer; a crash loses nothing
                // committed.
                .journal_mode(SqliteJournalMode::Wal)
                .foreign_keys(true)
                .busy_timeout(std::time::Duration::from_secs(5));
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect_with(options)
                .await
                .map_err(open)?;
            sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
            Db::Sqlite(pool)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(8)
                .acquire_timeout(ACQUIRE_TIMEOUT)
                .connect(url)
                .await
                .map_err(open)?;
            sqlx::migrate!("./migrations/postgres").run(&pool).await?;
            Db::Postgres(pool)
        } else {
            return Err(StoreError::Url(display));
        };
        let store = Store {
            db,
            display,
            host_id: Default::default(),
            notify_channel: Default::default(),
        };
        if let Some(channel) = store.channel().await? {
            let _ = store.notify_channel.set(channel);
        }
        Ok(store)
    }

    pub fn backend(&self) -> &'static str {
        match self.db {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    /// The statement for this backend: `?` numbered `$1, $2...` on Postgres.
    /// Only ever given the literal statements of this module, so it is safe
    /// to hand to sqlx as it is.
    ///
    /// `{now}` is the database's clock in seconds since the epoch: leases
    /// are stamped and compared on one clock, whatever each host's says.
    pub(crate) fn sql(&self, q: &'static str) -> sqlx::AssertSqlSafe<Cow<'static, str>> {
        const NOW: &str = "{now}";
        sqlx::AssertSqlSafe(match self.db {
            Db::Sqlite(_) if q.contains(NOW) => {
                Cow::Owned(q.replace(NOW, "((julianday('now') - 2440587.5) * 86400.0)"))
            }
            Db::Sqlite(_) => Cow::Borrowed(q),
            Db::Postgres(_) => {
                let q = q.replace(NOW, "EXTRACT(EPOCH FROM clock_timestamp())::float8");
                let mut out = String::with_capacity(q.len() + 8);
                let mut n = 0;
                for c in q.chars() {
                    if c == '?' {
                        n += 1;
                        out.push('$');
                        out.push_str(&n.to_string());
                    } else {
                        out.push(c);
                    }
                }
                Cow::Owned(out)
            }
        })
    }

    /// The database's clock, in seconds since the epoch.
    pub async fn db_now(&self) -> Result<f64, StoreError> {
        let sql = self.sql("SELECT {now}");
        on_pool!(self, pool => {
            let row = sqlx::query(sql).fetch_one(pool).await?;
            Ok(sqlx::Row::try_get::<f64, _>(&row, 0)?)
        })
    }

    /// Whether the database answers within `limit`.
    pub async fn ping(&self, limit: std::time::Duration) -> Result<(), StoreError> {
        let sql = self.sql("SELECT 1");
        let query =
            async { on_pool!(self, pool => sqlx::query(sql).execute(pool).await.map(|_| ())) };
        match tokio::time::timeout(limit, query).await {
            Ok(r) => r.map_err(StoreError::from),
            Err(_) => Err(StoreError::Sql(sqlx::Error::PoolTimedOut)),
        }
    }

    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_trouble_is_transient_and_bad_sql_is_not() {
        let io = StoreError::Sql(sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert!(io.is_transient() && !io.is_missing_call());
        assert!(StoreError::Sql(sqlx::Error::PoolTimedOut).is_transient());
        assert!(!StoreError::Sql(sqlx::Error::RowNotFound).is_transient());
        assert!(!StoreError::Url("mysql://x".into()).is_transient());
        for code in ["08006", "57P01", "53300", "40001", "5", "517"] {
            assert!(transient_code(code), "{code}");
        }
        for code in ["23503", "42P01", "787", "19"] {
            assert!(!transient_code(code), "{code}");
        }
    }

    #[test]
    fn passwords_stay_out_of_logs() {
        assert_eq!(
            redact("postgres://me:secret@db:5432/x"),
            "postgres://me:***@db:5432/x"
        );
        assert_eq!(
            redact("sqlite://data/callpipe.db"),
            "sqlite://data/callpipe.db"
        );
        assert_eq!(redact("postgres://me@db/x"), "postgres://me@db/x");
    }
}
