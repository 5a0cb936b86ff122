//! The control plane's SQL store through sqlx: SQLite (a file, zero setup) or Postgres (shared by
//! replicas), chosen by URL, with forward-only migrations from `migrations/{sqlite,postgres}`
//! applied at start. Queries are written once in SQL both dialects accept, with parameters
//! numbered in order of first use (`$1`, `$2`...).

pub mod cli;
pub mod configs;
pub mod keys;
pub mod logs;
pub mod rotate;
pub mod seal;
pub mod secret_file;
pub mod virtual_keys;

use sqlx::AnyPool;
use sqlx::any::{AnyPoolOptions, install_default_drivers};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or dropped a query.
    #[error("store: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration could not be applied.
    #[error("store migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The thing named does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The slug or name is taken.
    #[error("{0} already exists")]
    Conflict(String),
}

/// Which SQL dialect the URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite.
    Sqlite,
    /// Postgres.
    Postgres,
}

/// A pool of connections to the control plane's database.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    dialect: Dialect,
}

impl Store {
    /// A pool that connects on first use (nothing is opened here).
    pub fn connect_lazy(url: &str) -> Result<Self, StoreError> {
        install_default_drivers();
        let dialect = if url.starts_with("postgres") {
            Dialect::Postgres
        } else {
            Dialect::Sqlite
        };
        let mut options = AnyPoolOptions::new();
        options = match dialect {
            // An in-memory database lives as long as its one connection.
            Dialect::Sqlite if url.contains(":memory:") => options
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None),
            Dialect::Sqlite => options.max_connections(4),
            Dialect::Postgres => options.max_connections(8),
        };
        let pool = options
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect_lazy(url)?;
        Ok(Self { pool, dialect })
    }

    /// Connects and applies the migrations not applied yet.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self.dialect {
            Dialect::Sqlite => sqlx::migrate!("migrations/sqlite").run(&self.pool).await?,
            Dialect::Postgres => {
                sqlx::migrate!("migrations/postgres")
                    .run(&self.pool)
                    .await?
            }
        }
        Ok(())
    }

    /// The dialect in use.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A transaction that will write. On SQLite it takes the write lock at its start
    /// (`BEGIN IMMEDIATE`): a deferred one that reads first fails at once with `SQLITE_BUSY`,
    /// whatever the busy timeout, when another writer (the request log's, say) committed in
    /// between, and an admin's update would answer 503.
    pub(crate) async fn begin_write(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
        Ok(match self.dialect {
            Dialect::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Dialect::Postgres => self.pool.begin().await?,
        })
    }

    /// Marks the live row of `table` named `slug` in `tenant` deleted and renames its slug, so the slug is
    /// free for a new row; `also` sets more columns (such as erasing a secret). `what` names the
    /// row in a not-found error.
    async fn soft_delete(
        &self,
        table: &'static str,
        also: &'static str,
        tenant: &str,
        slug: &str,
        what: &str,
    ) -> Result<(), StoreError> {
        let sql = format!(
            "UPDATE {table} SET deleted_at = $1, slug = $2{also} WHERE tenant = $3 AND slug = $4 AND deleted_at IS NULL"
        );
        let done = sqlx::query(&sql)
            .bind(now_ms())
            .bind(format!("{slug}~deleted~{}", random_hex(4)))
            .bind(tenant)
            .bind(slug)
            .execute(self.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("{what} `{slug}`")));
        }
        Ok(())
    }
}

pub use crate::clock::now_ms;

/// `n` random bytes as lowercase hex.
pub fn random_hex(n: usize) -> String {
    use rand::RngCore;
    let mut bytes = vec![0u8; n];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether a unique constraint refused the write.
fn is_conflict(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}
