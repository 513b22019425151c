//! Tollgate's data model and persistence: organizations, users, memberships, API keys, feature
//! flags, usage limits, usage events and their daily rollups, limit alerts, the audit log and
//! gateway heartbeats.
//!
//! This is the only crate that writes SQL. One [`Store`] type speaks to SQLite (the embedded
//! default) or PostgreSQL (production and fleets) with the same API and the same behaviour; every
//! query is written once with `$1` placeholders and runs on both. Nothing here is called on the
//! gateway's request path: the gateway loads snapshots and writes event batches off the hot path.

mod accounts;
mod audit;
mod error;
mod features;
mod instances;
mod keys;
mod limits;
mod model;
mod orgs;
mod reports;
mod resources;
mod retention;
mod sqlite_events;
mod usage;
mod users;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

pub use accounts::{PersonalToken, Session, TokenCheck, TOKEN_PREFIX};
pub use audit::Audit;
pub use error::StoreError;
pub use keys::{generate_key, hash_key, key_prefix, KEY_PREFIX};
pub use model::*;
pub use reports::{AuditQuery, Breakdowns, EventCursor, EventPage, RollupGroup};
pub use resources::{ResourceChange, ResourceOwner};
pub use retention::{PruneStep, TableStat};
pub use usage::PeriodUsage;
pub use users::{dummy_password_hash, verify_password};

/// Result of every store call.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Runs the same block of code against whichever pool the store holds. The query text and binds
/// are shared; only the concrete pool type differs.
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store {
            $crate::Store::Sqlite($pool, _) => $body,
            $crate::Store::Postgres($pool) => $body,
        }
    };
}
pub(crate) use with_pool;

/// Connection settings beyond the URL.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Largest number of pooled connections.
    pub max_connections: u32,
    /// How long to wait for a connection before giving up.
    pub acquire_timeout: Duration,
    /// PostgreSQL only: the schema to use (created if missing). Tests use one per test.
    pub pg_schema: Option<String>,
    /// PostgreSQL only: what these connections do, after `tollgate-` in their `application_name`
    /// (`tollgate-prune`), so an operator can single them out in `pg_stat_activity`.
    pub role: Option<&'static str>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            max_connections: 8,
            acquire_timeout: Duration::from_secs(5),
            pg_schema: None,
            role: None,
        }
    }
}

/// A PostgreSQL URL's options, with our `application_name`: named in `pg_stat_activity`, so
/// an operator sees (and can single out) our connections.
fn pg_options(url: &str, opts: &ConnectOptions) -> Result<PgConnectOptions> {
    let options =
        PgConnectOptions::from_str(url).map_err(|e| StoreError::InvalidUrl(e.to_string()))?;
    let name = match opts.role {
        Some(role) => format!("tollgate-{role}"),
        None => "tollgate".to_owned(),
    };
    Ok(options.application_name(&match &opts.pg_schema {
        Some(schema) => format!("{name}/{schema}"),
        None => name,
    }))
}

/// A handle to the database: cheap to clone (the pools are reference counted).
#[derive(Clone)]
pub enum Store {
    /// The embedded default, one file on one machine; usage event batches go through a
    /// connection of their own (`sqlite_events`), except for an in-memory database.
    Sqlite(SqlitePool, Option<std::sync::Arc<sqlite_events::EventDb>>),
    /// Production and fleets of gateways.
    Postgres(PgPool),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the URL: it can carry a password.
        f.write_str(match self {
            Store::Sqlite(..) => "Store::Sqlite",
            Store::Postgres(_) => "Store::Postgres",
        })
    }
}

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `sqlite:` URLs.
    Sqlite,
    /// `postgres:` and `postgresql:` URLs.
    Postgres,
}

impl Backend {
    /// The backend a database URL names, or `None` for an unsupported scheme.
    pub fn from_url(url: &str) -> Option<Backend> {
        if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Backend::Postgres)
        } else {
            None
        }
    }
}

/// SHA-384 of `migrations/<dialect>/20261128000001_initial.sql` as first shipped (commit ba42822),
/// before `client_request_id` was added to it: see [`Store::repair_edited_initial`].
const INITIAL_AS_SHIPPED_SQLITE: &str = "c4e41fc2e0a44075831fb0d68ab5da008ba9e88cee381da94c537c7ef2bf61c28c6c692a338cc1a37cd7837119f9fe4e";
const INITIAL_AS_SHIPPED_POSTGRES: &str = "d96b0a833ebd678500468bf025d81476fec6896bef9e7ebb36817d74b00c84cb5d90ac71f712676e14b11ae9c19d0991";

/// How long a SQLite connection waits for another's write to finish.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

impl Store {
    /// Opens the database a URL names. For SQLite the file and its directory are created when
    /// missing. Migrations are not applied: call [`Store::migrate`].
    pub async fn connect(url: &str, opts: &ConnectOptions) -> Result<Store> {
        match Backend::from_url(url) {
            Some(Backend::Sqlite) => Self::connect_sqlite(url, opts).await,
            Some(Backend::Postgres) => Self::connect_postgres(url, opts).await,
            None => Err(StoreError::InvalidUrl(
                "expected sqlite://PATH or postgres://USER@HOST/DB".into(),
            )),
        }
    }

    async fn connect_sqlite(url: &str, opts: &ConnectOptions) -> Result<Store> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::InvalidUrl(e.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(SQLITE_BUSY_TIMEOUT)
            .foreign_keys(true);
        let file = options.get_filename().to_path_buf();
        // sqlx names an in-memory database `file:sqlx-in-memory-N`: no other connection sees it.
        let in_memory = file.as_os_str().is_empty()
            || file.to_string_lossy().starts_with("file:sqlx-in-memory-")
            || url.contains(":memory:")
            || url.contains("mode=memory");
        if let Some(dir) = Path::new(options.get_filename()).parent() {
            if !dir.as_os_str().is_empty() && !dir.exists() {
                std::fs::create_dir_all(dir).map_err(|e| StoreError::Io(e.to_string()))?;
            }
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(opts.max_connections)
            .acquire_timeout(opts.acquire_timeout)
            .connect_with(options)
            .await?;
        let events = (!in_memory).then(|| sqlite_events::EventDb::new(file, SQLITE_BUSY_TIMEOUT));
        Ok(Store::Sqlite(pool, events))
    }

    /// Like [`Store::connect`], but a PostgreSQL pool is created without connecting: a service
    /// can start while the database is down and use it once it answers.
    pub async fn connect_lazy(url: &str, opts: &ConnectOptions) -> Result<Store> {
        match Self::connect(url, opts).await {
            Err(e) if e.is_unavailable() && Backend::from_url(url) == Some(Backend::Postgres) => {
                let mut options = pg_options(url, opts)?;
                if let Some(schema) = &opts.pg_schema {
                    options = options.options([("search_path", schema.as_str())]);
                }
                let pool = PgPoolOptions::new()
                    .max_connections(opts.max_connections)
                    .acquire_timeout(opts.acquire_timeout)
                    .connect_lazy_with(options);
                Ok(Store::Postgres(pool))
            }
            other => other,
        }
    }

    async fn connect_postgres(url: &str, opts: &ConnectOptions) -> Result<Store> {
        let mut options = pg_options(url, opts)?;
        if let Some(schema) = &opts.pg_schema {
            if !schema
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(StoreError::InvalidUrl(format!(
                    "bad schema name {schema:?}"
                )));
            }
            // Create the schema on a throwaway connection, then pin the pool's search_path to it.
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(opts.acquire_timeout)
                .connect_with(options.clone())
                .await?;
            // The name was checked above; DDL cannot take a bind parameter.
            let ddl = format!("CREATE SCHEMA IF NOT EXISTS {schema}");
            sqlx::query(&ddl).execute(&pool).await?;
            pool.close().await;
            options = options.options([("search_path", schema.as_str())]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections)
            .acquire_timeout(opts.acquire_timeout)
            .connect_with(options)
            .await?;
        Ok(Store::Postgres(pool))
    }

    /// Whether this is an in-memory SQLite database, which no other connection can open.
    pub fn is_in_memory(&self) -> bool {
        matches!(self, Store::Sqlite(_, None))
    }

    /// Applies every embedded migration not yet applied. Re-running is harmless.
    ///
    /// A database created by a build whose initial migration lacked
    /// `usage_events.client_request_id` is brought forward first (see
    /// [`Store::repair_edited_initial`]); any other edited migration is refused by sqlx.
    pub async fn migrate(&self) -> Result<()> {
        self.repair_edited_initial().await?;
        match self {
            Store::Sqlite(pool, _) => SQLITE_MIGRATOR.run(pool).await?,
            Store::Postgres(pool) => POSTGRES_MIGRATOR.run(pool).await?,
        }
        Ok(())
    }

    /// The initial migration was edited in place after it had shipped: `client_request_id` and
    /// its index were added to `usage_events` (commit 590652e). Databases created before that
    /// record the earlier file's checksum, and sqlx refuses to migrate them ("previously applied
    /// but has been modified"). This applies the difference (the column and the index, which
    /// migration 20261128000002 then narrows) and records the current checksum, in one
    /// transaction. It recognises only that exact earlier file; returns whether it repaired.
    pub async fn repair_edited_initial(&self) -> Result<bool> {
        const VERSION: i64 = 20261128000001;
        let (migrator, shipped) = match self {
            Store::Sqlite(..) => (&SQLITE_MIGRATOR, INITIAL_AS_SHIPPED_SQLITE),
            Store::Postgres(_) => (&POSTGRES_MIGRATOR, INITIAL_AS_SHIPPED_POSTGRES),
        };
        let Some(current) = migrator.iter().find(|m| m.version == VERSION) else {
            return Ok(false);
        };
        let migrated_before = match self {
            Store::Sqlite(pool, _) => sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations')",
            )
            .fetch_one(pool)
            .await?,
            Store::Postgres(pool) => {
                sqlx::query_scalar::<_, bool>("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
                    .fetch_one(pool)
                    .await?
            }
        };
        if !migrated_before {
            return Ok(false);
        }
        // A constant: it decodes (the upgrade tests would fail otherwise).
        let old = hex::decode(shipped).unwrap_or_default();
        let ddl = [
            match self {
                Store::Sqlite(..) => "ALTER TABLE usage_events ADD COLUMN client_request_id TEXT",
                Store::Postgres(_) => {
                    "ALTER TABLE usage_events ADD COLUMN IF NOT EXISTS client_request_id TEXT"
                }
            },
            "CREATE INDEX IF NOT EXISTS usage_events_client_request ON usage_events(client_request_id)",
        ];
        macro_rules! repair {
            ($pool:expr) => {{
                let mut tx = $pool.begin().await?;
                let recorded: Option<Vec<u8>> =
                    sqlx::query_scalar("SELECT checksum FROM _sqlx_migrations WHERE version = $1")
                        .bind(VERSION)
                        .fetch_optional(&mut *tx)
                        .await?;
                if recorded.as_deref() != Some(old.as_slice()) {
                    return Ok(false);
                }
                for statement in ddl {
                    sqlx::query(statement).execute(&mut *tx).await?;
                }
                sqlx::query("UPDATE _sqlx_migrations SET checksum = $1 WHERE version = $2")
                    .bind(current.checksum.as_ref())
                    .bind(VERSION)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }};
        }
        match self {
            Store::Sqlite(pool, _) => repair!(pool),
            Store::Postgres(pool) => repair!(pool),
        }
        tracing::info!(
            version = VERSION,
            "migrations: added usage_events.client_request_id to a database created before it \
             joined the initial migration"
        );
        Ok(true)
    }

    /// Which database this store talks to.
    pub fn backend(&self) -> Backend {
        match self {
            Store::Sqlite(..) => Backend::Sqlite,
            Store::Postgres(_) => Backend::Postgres,
        }
    }

    /// A cheap round trip, for readiness checks.
    pub async fn ping(&self) -> Result<()> {
        with_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(drop))?;
        Ok(())
    }

    /// The live-config version: bumped (by triggers) whenever orgs, keys, feature flags or limits
    /// change, however they were changed. Equal versions mean an unchanged gateway snapshot.
    pub async fn config_version(&self) -> Result<i64> {
        let v = with_pool!(self, pool => sqlx::query_scalar::<_, i64>("SELECT version FROM config_version WHERE id = 1")
            .fetch_one(pool)
            .await)?;
        Ok(v)
    }

    /// Closes every pooled connection.
    pub async fn close(&self) {
        with_pool!(self, pool => pool.close().await)
    }

    /// The versions of the embedded migrations, per dialect (for the lockstep test).
    pub fn migration_versions() -> (Vec<i64>, Vec<i64>) {
        let v = |m: &sqlx::migrate::Migrator| m.iter().map(|m| m.version).collect();
        (v(&SQLITE_MIGRATOR), v(&POSTGRES_MIGRATOR))
    }
}
