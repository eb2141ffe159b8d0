//! Group commit of single-record creates on SQLite.
//!
//! SQLite takes one write at a time, and every statement is a trip to sqlx's worker thread of
//! the connection. A create on its own transaction costs three trips (`BEGIN IMMEDIATE`, the
//! `INSERT … RETURNING`, `COMMIT`) and one commit; under load the creates queue for their turn
//! anyway. So the creates of one [`Database`](crate::Database) that come without a transaction
//! of the caller's go to one writer task, which takes every create waiting at that moment (up to
//! [`MAX_BATCH`]) and runs them in one transaction: one trip each, plus one `BEGIN` and one
//! `COMMIT` for the group.
//!
//! Each caller still gets its own outcome:
//! - a create that breaks a constraint (unique, not null, check, foreign key) fails alone:
//!   SQLite undoes that statement only, and the transaction goes on (a multi-row statement that
//!   breaks one is undone whole, and its rows run again one statement each);
//! - any other failure (the record does not fit the service's type, a busy or broken database)
//!   fails that create; the transaction is rolled back and the others of the group run again,
//!   each in a transaction of its own, so nothing is stored for a caller that was told it failed,
//!   nothing is lost for one that was told it succeeded, and no create runs more than twice;
//! - a failed `COMMIT` fails every create of the group that had succeeded.
//!
//! A caller that stopped waiting (its request was dropped) before its turn is skipped.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use plume::{Error, Result};
use sea_query::{Alias, Expr, InsertStatement};
use serde_json::{Map, Value};
use sqlx::{Sqlite, SqlitePool, Transaction};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::database::{db_error, take_turn};
use crate::exec::Conn;
use crate::schema::Column;

/// The most creates one transaction takes.
pub(crate) const MAX_BATCH: usize = 128;
/// The most creates waiting for the writer; a caller beyond waits for room (bounded by the
/// acquire timeout, then `503`).
const QUEUE: usize = 1024;
/// The most values one multi-row statement binds (SQLite allows 32,766).
const MAX_PARAMS: usize = 30_000;

/// Checks a stored record before its transaction commits (the service's record type).
pub(crate) type Check = fn(&Map<String, Value>) -> Result<()>;

/// What one create inserts.
pub(crate) enum Insert {
    /// A statement of its own (`INSERT … RETURNING` of the job's columns).
    Statement(Box<InsertStatement>),
    /// One row whose id the database makes (`INTEGER PRIMARY KEY AUTOINCREMENT`): it may share
    /// a multi-row statement with neighbours of the same table and columns.
    Row {
        table: Arc<str>,
        names: Vec<String>,
        values: Vec<sea_query::Value>,
    },
}

/// One create for the writer.
pub(crate) struct InsertJob {
    insert: Insert,
    /// The table's columns, the id first: what the statement returns.
    columns: Arc<[Column]>,
    check: Check,
    /// Run in a statement of its own (set for a second run).
    alone: bool,
    reply: oneshot::Sender<Result<Map<String, Value>>>,
}

impl InsertJob {
    fn joins(&self, run: &[InsertJob]) -> bool {
        let (Some(first), false) = (run.first(), self.alone) else {
            return false;
        };
        match (&first.insert, &self.insert) {
            (
                Insert::Row { table, names, .. },
                Insert::Row {
                    table: t, names: n, ..
                },
            ) => {
                !first.alone
                    && table == t
                    && names == n
                    && Arc::ptr_eq(&first.columns, &self.columns)
                    && (run.len() + 1) * names.len() <= MAX_PARAMS
            }
            _ => false,
        }
    }
}

/// The sending side of a database's writer; the task ends when every clone is dropped.
#[derive(Clone)]
pub(crate) struct Batcher {
    jobs: mpsc::Sender<InsertJob>,
    acquire_timeout: Duration,
}

impl Batcher {
    /// Start the writer of a SQLite pool; `gate` is the database's write turn.
    pub(crate) fn start(pool: SqlitePool, gate: Arc<Semaphore>, acquire_timeout: Duration) -> Self {
        let (jobs, rx) = mpsc::channel(QUEUE);
        tokio::spawn(writer(pool, gate, acquire_timeout, rx));
        Self {
            jobs,
            acquire_timeout,
        }
    }

    /// Insert in the next group; the record as stored, returning `columns`.
    pub(crate) async fn insert(
        &self,
        insert: Insert,
        columns: Arc<[Column]>,
        check: Check,
    ) -> Result<Map<String, Value>> {
        let (reply, answer) = oneshot::channel();
        let job = InsertJob {
            insert,
            columns,
            check,
            alone: false,
            reply,
        };
        match tokio::time::timeout(self.acquire_timeout, self.jobs.send(job)).await {
            Ok(Ok(())) => {}
            Err(_) => return Err(Error::unavailable("The database is busy")),
            Ok(Err(_)) => return Err(closed()),
        }
        answer.await.unwrap_or_else(|_| Err(closed()))
    }
}

fn closed() -> Error {
    Error::unavailable("The database is unavailable")
}

async fn writer(
    pool: SqlitePool,
    gate: Arc<Semaphore>,
    acquire_timeout: Duration,
    mut rx: mpsc::Receiver<InsertJob>,
) {
    let mut group: Vec<InsertJob> = Vec::with_capacity(MAX_BATCH);
    loop {
        match rx.recv().await {
            Some(job) => group.push(job),
            None => return,
        }
        while group.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        group.retain(|job| !job.reply.is_closed());
        let again = run_group(&pool, &gate, acquire_timeout, std::mem::take(&mut group)).await;
        // After a rollback, the others run one per transaction: a group with many failing
        // records then costs each create at most two runs, not one run per failure before it.
        for mut job in again {
            job.alone = true;
            run_group(&pool, &gate, acquire_timeout, vec![job]).await;
        }
    }
}

/// What running part of a group left to do.
enum Step {
    /// Go on with the next part.
    Next,
    /// Roll back, and run these creates again (each alone).
    Again(Vec<InsertJob>),
}

/// Run one group in one transaction; the creates to run again (after a rollback).
async fn run_group(
    pool: &SqlitePool,
    gate: &Arc<Semaphore>,
    acquire_timeout: Duration,
    group: Vec<InsertJob>,
) -> Vec<InsertJob> {
    if group.is_empty() {
        return group;
    }
    let turn = match take_turn(gate, acquire_timeout).await {
        Ok(turn) => turn,
        Err(err) => {
            fail_all(group, &err);
            return Vec::new();
        }
    };
    let mut tx = match pool.begin_with("BEGIN IMMEDIATE").await {
        Ok(tx) => tx,
        Err(err) => {
            fail_all(group, &db_error(err));
            return Vec::new();
        }
    };
    let mut stored: Vec<(InsertJob, Map<String, Value>)> = Vec::with_capacity(group.len());
    let mut queue: VecDeque<InsertJob> = group.into();
    while let Some(first) = queue.pop_front() {
        let mut run = vec![first];
        while queue.front().is_some_and(|next| next.joins(&run)) {
            run.extend(queue.pop_front());
        }
        let step = if run.len() == 1 {
            run_one(&mut tx, run, &mut stored).await
        } else {
            run_many(&mut tx, run, &mut stored, &mut queue).await
        };
        if let Step::Again(mut again) = step {
            // Roll back (dropping the transaction does): nothing of this group stays.
            drop(tx);
            drop(turn);
            again.extend(stored.into_iter().map(|(job, _)| job));
            again.extend(queue);
            return again;
        }
    }
    match tx.commit().await {
        Ok(()) => {
            for (job, record) in stored {
                let _ = job.reply.send(Ok(record));
            }
        }
        Err(err) => fail_all(stored.into_iter().map(|(job, _)| job), &db_error(err)),
    }
    drop(turn);
    Vec::new()
}

/// One create, one statement.
async fn run_one(
    tx: &mut Transaction<'static, Sqlite>,
    mut run: Vec<InsertJob>,
    stored: &mut Vec<(InsertJob, Map<String, Value>)>,
) -> Step {
    let Some(job) = run.pop() else {
        return Step::Next;
    };
    let outcome = match statement(std::slice::from_ref(&job)) {
        Ok(stmt) => Conn::Sqlite(tx).fetch(&*stmt, &job.columns).await,
        Err(err) => Err(err),
    };
    let failure = match outcome {
        Ok(mut rows) => match rows.pop() {
            Some(record) => match (job.check)(&record) {
                Ok(()) => {
                    stored.push((job, record));
                    return Step::Next;
                }
                Err(err) => err,
            },
            None => Error::general_error("The insert returned no row"),
        },
        // A constraint: SQLite undid this statement only.
        Err(err) if is_constraint(&err) => {
            let _ = job.reply.send(Err(err));
            return Step::Next;
        }
        Err(err) => err,
    };
    // The record must not stay, or the transaction's state is unknown.
    let _ = job.reply.send(Err(failure));
    Step::Again(Vec::new())
}

/// Several rows of one table and columns, one statement.
async fn run_many(
    tx: &mut Transaction<'static, Sqlite>,
    run: Vec<InsertJob>,
    stored: &mut Vec<(InsertJob, Map<String, Value>)>,
    queue: &mut VecDeque<InsertJob>,
) -> Step {
    let columns = run[0].columns.clone();
    let outcome = match statement(&run) {
        Ok(stmt) => Conn::Sqlite(tx).fetch(&*stmt, &columns).await,
        Err(err) => Err(err),
    };
    let mut records = match outcome {
        Ok(records) if records.len() == run.len() => records,
        // Undone whole: each row again in a statement of its own, first in the queue.
        Err(err) if is_constraint(&err) => {
            for mut job in run.into_iter().rev() {
                job.alone = true;
                queue.push_front(job);
            }
            return Step::Next;
        }
        // The transaction's state is unknown: every create again, alone.
        Ok(_) | Err(_) => return Step::Again(run),
    };
    // The ids the database made grow with the rows' order.
    let id = columns.first().map(|c| c.name.clone()).unwrap_or_default();
    records.sort_by_key(|r| r.get(&id).and_then(Value::as_i64).unwrap_or(i64::MAX));
    let mut run = run.into_iter();
    let mut records = records.into_iter();
    while let (Some(job), Some(record)) = (run.next(), records.next()) {
        if let Err(err) = (job.check)(&record) {
            let _ = job.reply.send(Err(err));
            return Step::Again(run.collect());
        }
        stored.push((job, record));
    }
    Step::Next
}

/// The `INSERT … RETURNING` of `run`: one job's statement, or the rows of a run of
/// [`Insert::Row`]s of one table and columns.
fn statement(run: &[InsertJob]) -> Result<Cow<'_, InsertStatement>> {
    let Some(first) = run.first() else {
        return Err(Error::general_error("An empty insert"));
    };
    let (table, names) = match &first.insert {
        Insert::Statement(stmt) => return Ok(Cow::Borrowed(&**stmt)),
        Insert::Row { table, names, .. } => (table, names),
    };
    let mut stmt = sea_query::Query::insert();
    stmt.into_table(Alias::new(&**table))
        .columns(names.iter().map(Alias::new));
    for job in run {
        if let Insert::Row { values, .. } = &job.insert {
            stmt.values(values.iter().cloned().map(Expr::val))
                .map_err(Error::internal)?;
        }
    }
    stmt.returning(
        sea_query::Query::returning().columns(first.columns.iter().map(|c| Alias::new(&c.name))),
    );
    Ok(Cow::Owned(stmt))
}

/// A Feathers error that stands for a constraint violation (see `db_error`).
fn is_constraint(err: &Error) -> bool {
    matches!(err.code(), 400 | 409)
}

fn fail_all(jobs: impl IntoIterator<Item = InsertJob>, err: &Error) {
    for job in jobs {
        let _ = job.reply.send(Err(err.clone()));
    }
}
