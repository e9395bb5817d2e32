//! The durable record: calls, their status history, speakers, segments with
//! transcripts, suggestions, clarifying questions, stage errors, pipeline
//! versions, and the ordered log of everything the dashboard is shown (the
//! live stream replays it after a `Last-Event-ID`).
//!
//! sqlx with migrations: a SQLite file in the data dir by default, Postgres
//! with `CALLPIPE_DATABASE_URL=postgres://...`. The SQL is written once with
//! `?` placeholders and numbered for Postgres.

pub mod clock;
pub mod items;
mod records;

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
}

pub enum Db {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

pub struct Store {
    db: Db,
    /// The URL without a password, for logs.
    pub display: String,
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
                .connect_with(options)
                .await
                .map_err(open)?;
            sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
            Db::Sqlite(pool)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(8)
                .connect(url)
                .await
                .map_err(open)?;
            sqlx::migrate!("./migrations/postgres").run(&pool).await?;
            Db::Postgres(pool)
        } else {
            return Err(StoreError::Url(display));
        };
        Ok(Store { db, display })
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
    pub(crate) fn sql(&self, q: &'static str) -> sqlx::AssertSqlSafe<Cow<'static, str>> {
        sqlx::AssertSqlSafe(match self.db {
            Db::Sqlite(_) => Cow::Borrowed(q),
            Db::Postgres(_) => {
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

    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
