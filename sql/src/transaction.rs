//! Several service calls in one database transaction.
//!
//! [`transaction`] is an around hook: it begins a transaction, marks `params.extra` with it, runs
//! the rest of the call (before hooks, the method, after hooks) and commits, or rolls back when
//! anything failed. Every [`SqlService`](crate::SqlService) on the same [`Database`] that is called
//! with those params (the method itself, and any service a hook calls with `ctx.params`) runs its
//! statements in that transaction. [`Database::begin`] does the same by hand.
//!
//! The mark is `params.extra["sqlTransaction"] = {"database": …, "id": …}`: plain JSON, so params
//! stay cloneable; the transaction itself stays in the [`Database`]. Open transactions are bounded
//! by the pool: each holds one connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use plume::hooks::{AroundHook, HookContext, Next};
use plume::{Error, Params, Result, async_trait, sync};
use serde_json::{Value, json};
use sqlx::{Postgres, Sqlite};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard, OwnedSemaphorePermit};
use uuid::Uuid;

use crate::database::{Database, Pool, db_error};
use crate::exec::Conn;

/// The key of `params.extra` that names the open transaction.
pub const TRANSACTION_KEY: &str = "sqlTransaction";

/// A transaction of either backend.
/// A transaction of either backend; a SQLite one holds this process's turn to write (released
/// after the transaction is dropped, committed or rolled back: fields drop in order).
pub(crate) enum Tx {
    Sqlite(sqlx::Transaction<'static, Sqlite>, OwnedSemaphorePermit),
    Postgres(sqlx::Transaction<'static, Postgres>),
}

impl Tx {
    pub(crate) async fn begin(db: &Database) -> Result<Tx> {
        Ok(match &db.pool {
            // IMMEDIATE: take the write lock at once, so two writers never deadlock upgrading a
            // read lock (they wait for each other within the busy timeout instead).
            Pool::Sqlite(p) => {
                let turn = db.write_turn().await?;
                Tx::Sqlite(
                    p.begin_with("BEGIN IMMEDIATE").await.map_err(db_error)?,
                    turn,
                )
            }
            Pool::Postgres(p) => Tx::Postgres(p.begin().await.map_err(db_error)?),
        })
    }

    pub(crate) fn conn(&mut self) -> Conn<'_> {
        match self {
            Tx::Sqlite(tx, _) => Conn::Sqlite(tx),
            Tx::Postgres(tx) => Conn::Pg(tx),
        }
    }

    pub(crate) async fn commit(self) -> Result<()> {
        match self {
            Tx::Sqlite(tx, _turn) => tx.commit().await,
            Tx::Postgres(tx) => tx.commit().await,
        }
        .map_err(db_error)
    }

    async fn rollback(self) -> Result<()> {
        match self {
            Tx::Sqlite(tx, _turn) => tx.rollback().await,
            Tx::Postgres(tx) => tx.rollback().await,
        }
        .map_err(db_error)
    }
}

type Slot = Arc<AsyncMutex<Option<Tx>>>;

/// A locked transaction a hook opened, for the statements of one call.
pub(crate) struct SharedTx(OwnedMutexGuard<Option<Tx>>);

impl SharedTx {
    pub(crate) fn conn(&mut self) -> Result<Conn<'_>> {
        match &mut *self.0 {
            Some(tx) => Ok(tx.conn()),
            None => Err(ended()),
        }
    }
}

fn ended() -> Error {
    Error::general_error("The transaction has already ended")
}

/// The open transactions of one [`Database`].
pub(crate) struct Registry {
    database: Uuid,
    open: Mutex<HashMap<Uuid, Slot>>,
    limit: usize,
}

impl Registry {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            database: Uuid::new_v4(),
            open: Mutex::new(HashMap::new()),
            limit: limit.max(1),
        }
    }

    fn insert(&self, tx: Tx) -> Result<Uuid> {
        let mut open = sync::lock(&self.open);
        if open.len() >= self.limit {
            return Err(Error::unavailable("Too many open transactions"));
        }
        let id = Uuid::new_v4();
        open.insert(id, Arc::new(AsyncMutex::new(Some(tx))));
        Ok(id)
    }

    fn remove(&self, id: &Uuid) -> Option<Slot> {
        sync::lock(&self.open).remove(id)
    }

    /// The transaction `params` names: `None` when they name none of this database's; an
    /// error when they name one that has ended.
    fn slot(&self, params: &Params) -> Result<Option<Slot>> {
        let Some(mark) = params.extra.get(TRANSACTION_KEY) else {
            return Ok(None);
        };
        let database = mark.get("database").and_then(Value::as_str);
        if database != Some(self.database.to_string().as_str()) {
            return Ok(None);
        }
        let id = mark
            .get("id")
            .and_then(Value::as_str)
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(ended)?;
        let open = sync::lock(&self.open);
        open.get(&id).cloned().map(Some).ok_or_else(ended)
    }

    /// The transaction `params` names, locked for the statements of one call.
    pub(crate) async fn lock(&self, params: &Params) -> Result<Option<SharedTx>> {
        match self.slot(params)? {
            Some(slot) => Ok(Some(SharedTx(slot.lock_owned().await))),
            None => Ok(None),
        }
    }
}

/// A transaction begun with [`Database::begin`]: commit or roll it back. Dropping it rolls back.
#[must_use = "a transaction that is dropped rolls back"]
pub struct OpenTransaction {
    database: Database,
    id: Uuid,
}

impl std::fmt::Debug for OpenTransaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenTransaction")
            .field("id", &self.id)
            .finish()
    }
}

impl OpenTransaction {
    async fn take(&self) -> Result<Tx> {
        let slot = self
            .database
            .transactions
            .remove(&self.id)
            .ok_or_else(ended)?;
        let tx = slot.lock().await.take();
        tx.ok_or_else(ended)
    }

    /// Commit.
    pub async fn commit(self) -> Result<()> {
        self.take().await?.commit().await
    }

    /// Roll back.
    pub async fn rollback(self) -> Result<()> {
        self.take().await?.rollback().await
    }
}

impl Drop for OpenTransaction {
    fn drop(&mut self) {
        // Dropping the sqlx transaction (if no call holds it) rolls it back.
        drop(self.database.transactions.remove(&self.id));
    }
}

impl Database {
    /// Begin a transaction and mark `params` with it: every [`SqlService`](crate::SqlService) of
    /// this database called with these params (or clones of them) runs in it until it is
    /// committed or rolled back.
    ///
    /// ```
    /// use plume::{Params, Service};
    /// use plume_sql::{ColumnType, Database, SqlService};
    /// use serde_json::json;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> plume::Result<()> {
    /// let db = Database::connect("sqlite::memory:").await?;
    /// let notes: SqlService = SqlService::builder(&db, "notes").column("text", ColumnType::String).build()?;
    /// notes.create_table().await?;
    ///
    /// let mut params = Params::new();
    /// let tx = db.begin(&mut params).await?;
    /// notes.create(json!({"text": "draft"}), params.clone()).await?;
    /// tx.rollback().await?;
    /// assert_eq!(notes.find(Params::new()).await?, json!([]));
    /// # Ok(())
    /// # }
    /// ```
    pub async fn begin(&self, params: &mut Params) -> Result<OpenTransaction> {
        let tx = Tx::begin(self).await?;
        let id = self.transactions.insert(tx)?;
        params.extra.insert(
            TRANSACTION_KEY.to_owned(),
            json!({ "database": self.transactions.database.to_string(), "id": id.to_string() }),
        );
        Ok(OpenTransaction {
            database: self.clone(),
            id,
        })
    }
}

/// The around hook of [`transaction`].
#[derive(Debug, Clone)]
pub struct TransactionHook {
    database: Database,
}

/// An around hook that runs the rest of the call in one transaction of `database`: committed
/// when the call succeeds, rolled back when a before hook, the method or an after hook fails.
/// A call that already runs in a transaction of this database joins it.
///
/// ```
/// use plume::App;
/// use plume_sql::{transaction, ColumnType, Database, SqlService};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> plume::Result<()> {
/// let db = Database::connect("sqlite::memory:").await?;
/// let orders: SqlService = SqlService::builder(&db, "orders").column("total", ColumnType::Number).build()?;
/// orders.create_table().await?;
/// let app = App::new();
/// app.use_service("orders", orders).hooks().around(transaction(&db));
/// # Ok(())
/// # }
/// ```
pub fn transaction(database: &Database) -> TransactionHook {
    TransactionHook {
        database: database.clone(),
    }
}

#[async_trait]
impl AroundHook for TransactionHook {
    async fn run(&self, ctx: &mut HookContext, next: Next<'_>) -> Result<()> {
        if self.database.transactions.slot(&ctx.params)?.is_some() {
            return next.run(ctx).await;
        }
        let tx = self.database.begin(&mut ctx.params).await?;
        let outcome = next.run(ctx).await;
        ctx.params.extra.remove(TRANSACTION_KEY);
        match outcome {
            Ok(()) => tx.commit().await,
            Err(err) => {
                if let Err(rollback) = tx.rollback().await {
                    tracing::warn!(error = %rollback, "rollback failed");
                }
                Err(err)
            }
        }
    }
}
