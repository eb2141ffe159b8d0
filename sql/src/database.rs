//! The connection pool of one database (SQLite or PostgreSQL), and how its errors become Feathers
//! errors.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use plume::{Error, Result};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::batch::{Batcher, Check, Insert};
use crate::schema::Column;
use crate::transaction::Registry;

/// Which database a [`Database`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite, embedded (a file or `:memory:`).
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// The sqlx pool of a [`Database`]: hand it to `sqlx::migrate!` or to your own queries.
#[derive(Debug, Clone)]
pub enum Pool {
    /// A SQLite pool.
    Sqlite(SqlitePool),
    /// A PostgreSQL pool.
    Postgres(PgPool),
}

/// How [`Database::connect_with`] sets up its pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectOptions {
    /// The most connections the pool opens (default 10; always 1 for an in-memory SQLite
    /// database, which lives and dies with its one connection).
    pub max_connections: u32,
    /// How long a call waits for a connection before it fails with `503 Unavailable`
    /// (default 5 s). A database that is down fails calls this fast.
    pub acquire_timeout: Duration,
    /// How long SQLite waits for a lock held by another connection or process (default 5 s).
    pub busy_timeout: Duration,
    /// SQLite files (WAL mode): when a commit waits for the disk. `Normal` (the default, as
    /// SQLite recommends for WAL and as `better-sqlite3` builds it): a commit is written to the
    /// log but not flushed, so an application crash loses nothing and the file never corrupts,
    /// while a power loss or OS crash may roll back the last commits. `Full`: every commit is
    /// flushed to disk before it returns (one `fsync` per write).
    pub sqlite_synchronous: SqliteSynchronous,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
            busy_timeout: Duration::from_secs(5),
            sqlite_synchronous: SqliteSynchronous::Normal,
        }
    }
}

/// A pool of connections to one database, shared by every [`SqlService`](crate::SqlService)
/// built on it (clones share the pool).
///
/// * `sqlite::memory:` (or `:memory:`): a private in-memory database;
/// * `sqlite://path/to/file.db` (or a bare path): a file, created when missing, in WAL mode with
///   a busy timeout, so several processes can share it;
/// * `postgres://user:password@host:port/database`: a PostgreSQL server.
///
/// The pool checks a connection before handing it out, so after the database was restarted
/// calls succeed again without any action; while it is down they fail with `503 Unavailable`.
#[derive(Clone)]
pub struct Database {
    pub(crate) pool: Pool,
    pub(crate) transactions: Arc<Registry>,
    /// SQLite: one write transaction of this process at a time (see [`Database::write_turn`]).
    write_gate: Arc<Semaphore>,
    /// SQLite: the group-commit writer of single creates (started by the first one).
    batcher: Arc<OnceLock<Batcher>>,
    acquire_timeout: Duration,
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Database")
            .field("backend", &self.backend())
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Connect with the default [`ConnectOptions`].
    pub async fn connect(url: &str) -> Result<Database> {
        Self::connect_with(url, ConnectOptions::default()).await
    }

    /// Connect with these options. A URL that is not `postgres://`/`postgresql://` is SQLite.
    pub async fn connect_with(url: &str, options: ConnectOptions) -> Result<Database> {
        let pool = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(options.max_connections)
                .acquire_timeout(options.acquire_timeout)
                .connect(url)
                .await
                .map_err(db_error)?;
            Pool::Postgres(pool)
        } else {
            Pool::Sqlite(connect_sqlite(url, &options).await?)
        };
        Ok(Self::from_pool(pool))
    }

    /// Wrap a pool you built yourself. For SQLite, turn on `case_sensitive_like` on its
    /// connections for the documented `$like` rules.
    pub fn from_pool(pool: Pool) -> Database {
        let (limit, acquire_timeout) = match &pool {
            Pool::Sqlite(p) => (
                p.options().get_max_connections(),
                p.options().get_acquire_timeout(),
            ),
            Pool::Postgres(p) => (
                p.options().get_max_connections(),
                p.options().get_acquire_timeout(),
            ),
        };
        Database {
            pool,
            transactions: Arc::new(Registry::new(limit as usize)),
            write_gate: Arc::new(Semaphore::new(1)),
            batcher: Arc::new(OnceLock::new()),
            acquire_timeout,
        }
    }

    /// SQLite: wait for this process's turn to write. SQLite lets one writer in at a time; when
    /// several connections of one pool ask at once, all but one wait in SQLite's busy handler,
    /// which sleeps in growing steps (up to 100 ms) and polls, so a burst of writes spent most
    /// of its time asleep (`POST` throughput fell below knex's one-connection pool). Waiting
    /// here instead is a FIFO queue that wakes the next writer the moment the last one ends;
    /// the busy timeout still covers other processes sharing the file. Bounded by the pool's
    /// acquire timeout (then `503`, as for a connection).
    pub(crate) async fn write_turn(&self) -> Result<OwnedSemaphorePermit> {
        take_turn(&self.write_gate, self.acquire_timeout).await
    }

    /// SQLite: insert one record (returning `columns`) in the next group commit (see
    /// [`crate::batch`]). SQLite only.
    pub(crate) async fn grouped_insert(
        &self,
        insert: Insert,
        columns: Arc<[Column]>,
        check: Check,
    ) -> Result<serde_json::Map<String, serde_json::Value>> {
        let Pool::Sqlite(pool) = &self.pool else {
            return Err(Error::general_error("Group commit is for SQLite"));
        };
        let batcher = self.batcher.get_or_init(|| {
            Batcher::start(pool.clone(), self.write_gate.clone(), self.acquire_timeout)
        });
        batcher.insert(insert, columns, check).await
    }

    /// The backend.
    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// The sqlx pool, for migrations and your own queries.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Run sqlx migrations on this database, e.g. `sqlx::migrate!("./migrations")` or
    /// `Migrator::new(Path::new("migrations"))` (`plume_sql::sqlx` is the sqlx this crate uses).
    pub async fn migrate(&self, migrator: &sqlx::migrate::Migrator) -> Result<()> {
        let outcome = match &self.pool {
            Pool::Sqlite(p) => migrator.run(p).await,
            Pool::Postgres(p) => migrator.run(p).await,
        };
        outcome.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(err) => db_error(err),
            other => Error::general_error(format!("Migration failed: {other}")),
        })
    }

    /// Close every connection; later calls fail with `503 Unavailable`.
    pub async fn close(&self) {
        match &self.pool {
            Pool::Sqlite(p) => p.close().await,
            Pool::Postgres(p) => p.close().await,
        }
    }
}

/// Wait up to `timeout` for the write turn of `gate` (see [`Database::write_turn`]).
pub(crate) async fn take_turn(
    gate: &Arc<Semaphore>,
    timeout: Duration,
) -> Result<OwnedSemaphorePermit> {
    match tokio::time::timeout(timeout, gate.clone().acquire_owned()).await {
        Ok(Ok(permit)) => Ok(permit),
        // The gate is never closed; a timeout is a database too busy to take the write.
        Ok(Err(_)) | Err(_) => Err(Error::unavailable("The database is busy")),
    }
}

async fn connect_sqlite(url: &str, options: &ConnectOptions) -> Result<SqlitePool> {
    let url = match url {
        ":memory:" => "sqlite::memory:",
        other => other,
    };
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    let mut connect = if url.starts_with("sqlite:") {
        SqliteConnectOptions::from_str(url)
            .map_err(|e| Error::bad_request(format!("Invalid SQLite URL: {e}")))?
    } else {
        SqliteConnectOptions::new().filename(url)
    };
    connect = connect
        .create_if_missing(true)
        .busy_timeout(options.busy_timeout)
        .foreign_keys(true)
        // `$like` is case-sensitive on both backends; `$ilike` is the case-insensitive one.
        .pragma("case_sensitive_like", "ON");
    if !in_memory {
        connect = connect
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(options.sqlite_synchronous);
    }
    // No ping before each use: a SQLite connection is a file handle in this process, with no
    // server that could have gone away (on PostgreSQL the ping is what lets calls recover after
    // a restart). It was one more trip to sqlx's worker thread per statement.
    let mut pool = SqlitePoolOptions::new()
        .acquire_timeout(options.acquire_timeout)
        .test_before_acquire(false);
    pool = if in_memory {
        // Every connection to `:memory:` opens a new, empty database: keep exactly one, forever.
        pool.max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
    } else {
        pool.max_connections(options.max_connections)
    };
    pool.connect_with(connect).await.map_err(db_error)
}

/// The Feathers error for a database error. Never shows SQL text or driver details to the
/// caller (they are logged): a unique violation is a `Conflict`, a database that cannot be
/// reached `Unavailable`, anything else a `GeneralError`.
pub(crate) fn db_error(err: sqlx::Error) -> Error {
    match &err {
        sqlx::Error::Database(db) => {
            if db.is_unique_violation() {
                tracing::debug!(error = %err, "unique violation");
                return Error::conflict("A record with this value already exists");
            }
            if matches!(db.kind(), sqlx::error::ErrorKind::NotNullViolation) {
                tracing::debug!(error = %err, "not-null violation");
                return match not_null_column(db.as_ref()) {
                    Some(field) => Error::bad_request(format!("'{field}' is required"))
                        .with_data(serde_json::json!({ "field": field })),
                    None => Error::bad_request("A required field is missing"),
                };
            }
            if db.is_foreign_key_violation() || db.is_check_violation() {
                tracing::debug!(error = %err, "constraint violation");
                return Error::bad_request("The data violates a constraint of the table");
            }
            let code = db.code().unwrap_or_default();
            // PostgreSQL: 08xxx connection exceptions, 57P0x shutdown / cannot connect now.
            if code.starts_with("08") || code.starts_with("57P") {
                tracing::warn!(error = %err, "database unavailable");
                return Error::unavailable("The database is unavailable");
            }
            // SQLite: SQLITE_BUSY (5) / SQLITE_LOCKED (6) after the busy timeout.
            if code == "5" || code == "6" {
                tracing::warn!(error = %err, "database busy");
                return Error::unavailable("The database is busy");
            }
            tracing::error!(error = %err, "database error");
            Error::general_error("Database error")
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => {
            tracing::warn!(error = %err, "database unavailable");
            Error::unavailable("The database is unavailable")
        }
        _ => {
            tracing::error!(error = %err, "database error");
            Error::general_error("Database error")
        }
    }
}

/// The column of a NOT NULL violation: PostgreSQL names it; SQLite's message ends with
/// `table.column`.
fn not_null_column(db: &dyn sqlx::error::DatabaseError) -> Option<String> {
    if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        return pg.column().map(str::to_owned);
    }
    let message = db.message();
    let (_, qualified) = message.rsplit_once(": ")?;
    let (_, column) = qualified.rsplit_once('.')?;
    let plain = column
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_');
    plain.then(|| column.to_owned())
}
