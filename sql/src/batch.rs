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
//!   SQLite undoes that statement only, and the transaction goes on;
//! - any other failure (the record does not fit the service's type, a busy or broken database)
//!   fails that create; the transaction is rolled back and the others of the group run again,
//!   each in a transaction of its own, so nothing is stored for a caller that was told it failed,
//!   nothing is lost for one that was told it succeeded, and no create runs more than twice;
//! - a failed `COMMIT` fails every create of the group that had succeeded.
//!
//! A caller that stopped waiting (its request was dropped) before its turn is skipped.

use std::sync::Arc;
use std::time::Duration;

use plume::{Error, Result};
use sea_query::InsertStatement;
use serde_json::{Map, Value};
use sqlx::SqlitePool;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::database::{db_error, take_turn};
use crate::exec::Conn;
use crate::schema::Column;

/// The most creates one transaction takes.
pub(crate) const MAX_BATCH: usize = 128;
/// The most creates waiting for the writer; a caller beyond waits for room (bounded by the
/// acquire timeout, then `503`).
const QUEUE: usize = 1024;

/// Checks a stored record before its transaction commits (the service's record type).
pub(crate) type Check = fn(&Map<String, Value>) -> Result<()>;

/// One create for the writer.
pub(crate) struct InsertJob {
    pub(crate) stmt: InsertStatement,
    pub(crate) columns: Arc<[Column]>,
    pub(crate) check: Check,
    reply: oneshot::Sender<Result<Map<String, Value>>>,
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

    /// Insert with `stmt` (an `INSERT … RETURNING` of `columns`) in the next group; the record
    /// as stored.
    pub(crate) async fn insert(
        &self,
        stmt: InsertStatement,
        columns: Arc<[Column]>,
        check: Check,
    ) -> Result<Map<String, Value>> {
        let (reply, answer) = oneshot::channel();
        let job = InsertJob {
            stmt,
            columns,
            check,
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
        for job in again {
            run_group(&pool, &gate, acquire_timeout, vec![job]).await;
        }
    }
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
    let mut rest = group.into_iter();
    while let Some(job) = rest.next() {
        let outcome = Conn::Sqlite(&mut tx).fetch(&job.stmt, &job.columns).await;
        let failure = match outcome {
            Ok(mut rows) => match rows.pop() {
                Some(record) => match (job.check)(&record) {
                    Ok(()) => {
                        stored.push((job, record));
                        continue;
                    }
                    Err(err) => err,
                },
                None => Error::general_error("The insert returned no row"),
            },
            // A constraint: SQLite undid this statement only.
            Err(err) if is_constraint(&err) => {
                let _ = job.reply.send(Err(err));
                continue;
            }
            Err(err) => err,
        };
        // The record must not stay, or the transaction's state is unknown: roll back (dropping
        // the transaction does) and run the others again.
        let _ = job.reply.send(Err(failure));
        drop(tx);
        drop(turn);
        return stored.into_iter().map(|(job, _)| job).chain(rest).collect();
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

/// A Feathers error that stands for a constraint violation (see `db_error`).
fn is_constraint(err: &Error) -> bool {
    matches!(err.code(), 400 | 409)
}

fn fail_all(jobs: impl IntoIterator<Item = InsertJob>, err: &Error) {
    for job in jobs {
        let _ = job.reply.send(Err(err.clone()));
    }
}
