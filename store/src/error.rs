//! The store's one error type. Database errors are classified here, once: a missing row becomes
//! `NotFound`, a unique or foreign-key violation becomes `Conflict`/`Invalid` with the constraint,
//! so callers (CLI, admin API, gateway) can answer with a clear message instead of a panic.

use sqlx::error::ErrorKind;

/// Everything a store call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The named row does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// A uniqueness rule was violated (e.g. an organization name already taken).
    #[error("already exists ({constraint})")]
    Conflict {
        /// The violated constraint or the columns it covers, as the database names it.
        constraint: String,
    },
    /// A referenced row is missing or a check constraint failed.
    #[error("invalid reference or value ({0})")]
    Invalid(String),
    /// The change would leave an organization without an owner.
    #[error("an organization must keep at least one owner")]
    LastOwner,
    /// Bad input caught before it reached the database.
    #[error("{0}")]
    Validation(String),
    /// The database URL could not be understood.
    #[error("invalid database url: {0}")]
    InvalidUrl(String),
    /// A filesystem problem (e.g. creating the SQLite directory).
    #[error("i/o error: {0}")]
    Io(String),
    /// A migration failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database is unreachable or answered with an unexpected error.
    #[error("database error: {0}")]
    Database(sqlx::Error),
    /// SQLite's own error, from the event writer's connection (`sqlite_events`).
    #[error("database error: {message}")]
    Sqlite {
        /// SQLite's message.
        message: String,
        /// The file is busy, unreadable or unwritable (retrying later may work).
        unavailable: bool,
    },
}

impl StoreError {
    /// A short static name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::NotFound(_) => "not_found",
            StoreError::Conflict { .. } => "conflict",
            StoreError::Invalid(_) => "invalid",
            StoreError::LastOwner => "last_owner",
            StoreError::Validation(_) => "validation",
            StoreError::InvalidUrl(_) => "invalid_url",
            StoreError::Io(_) => "io",
            StoreError::Migrate(_) => "migrate",
            StoreError::Database(_) | StoreError::Sqlite { .. } => "database",
        }
    }

    /// True when the database could not be reached or did not answer (as opposed to refusing
    /// the request): the caller may retry later or fail open.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Database(e) => sqlx_unavailable(e),
            StoreError::Sqlite { unavailable, .. } => *unavailable,
            StoreError::Migrate(sqlx::migrate::MigrateError::Execute(e)) => sqlx_unavailable(e),
            StoreError::Migrate(sqlx::migrate::MigrateError::ExecuteMigration(e, _)) => {
                sqlx_unavailable(e)
            }
            _ => false,
        }
    }
}

fn sqlx_unavailable(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Tls(_)
    )
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::RowNotFound => StoreError::NotFound("row".into()),
            sqlx::Error::Database(db) => {
                let constraint = db
                    .constraint()
                    .map(str::to_owned)
                    .unwrap_or_else(|| db.message().to_owned());
                match db.kind() {
                    ErrorKind::UniqueViolation => StoreError::Conflict { constraint },
                    ErrorKind::ForeignKeyViolation
                    | ErrorKind::CheckViolation
                    | ErrorKind::NotNullViolation => StoreError::Invalid(constraint),
                    _ => StoreError::Database(sqlx::Error::Database(db)),
                }
            }
            other => StoreError::Database(other),
        }
    }
}

/// Maps `RowNotFound` to a `NotFound` naming the entity.
pub(crate) fn not_found(what: impl Into<String>) -> impl FnOnce(StoreError) -> StoreError {
    let what = what.into();
    move |e| match e {
        StoreError::NotFound(_) => StoreError::NotFound(what),
        other => other,
    }
}
