//! A Postgres schema of its own per test, on the machine's server
//! (`CALLPIPE_TEST_DATABASE_URL`, default postgres://postgres@127.0.0.1:5432/test).

use crate::fixture_present;
use std::time::Duration;

/// One test's schema: the admin pool that made it, its name, and the
/// server's URL (without the schema).
pub struct Schema {
    pub admin: sqlx::PgPool,
    pub name: String,
    pub base: String,
}

impl Schema {
    /// A new schema `callpipe_{tag}_...`, or `None` without a Postgres server
    /// (which fails under `CI=true`).
    pub async fn create(tag: &str) -> Option<Schema> {
        let base = std::env::var("CALLPIPE_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let admin = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(3))
            .connect(&base)
            .await;
        let Ok(admin) = admin else {
            fixture_present(false, &format!("a Postgres server at {base}"));
            return None;
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!("callpipe_{tag}_{}_{nanos}", std::process::id());
        // The schema name is ours: letters, digits and underscores.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .execute(&admin)
            .await
            .expect("create schema");
        Some(Schema { admin, name, base })
    }

    /// `url` (this server, or a proxy in front of it) with the schema as its
    /// search path.
    pub fn url_via(&self, url: &str) -> String {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}options=-c%20search_path%3D{}", self.name)
    }

    pub fn url(&self) -> String {
        self.url_via(&self.base)
    }

    /// A pool on the schema (its tables as the servers see them).
    pub async fn pool(&self) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&self.url())
            .await
            .expect("a connection to the schema")
    }

    pub async fn drop(self) {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA {} CASCADE",
            self.name
        )))
        .execute(&self.admin)
        .await;
    }
}
