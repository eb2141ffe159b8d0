//! Running sea-query statements on a pool or a transaction of either backend, and decoding rows
//! into JSON records by the column types.

use plume::Result;
use sea_query::{PostgresQueryBuilder, SqliteQueryBuilder};
use sea_query_sqlx::SqlxBinder;
use serde_json::{Map, Value};
use sqlx::{ColumnIndex, Decode, PgConnection, Row, SqliteConnection, Type};

use crate::database::{Pool, db_error};
use crate::schema::{Column, ColumnType, number};
use crate::transaction::{SharedTx, Tx};

/// Where one statement runs.
pub(crate) enum Conn<'a> {
    SqlitePool(&'a sqlx::SqlitePool),
    PgPool(&'a sqlx::PgPool),
    Sqlite(&'a mut SqliteConnection),
    Pg(&'a mut PgConnection),
}

/// Build the statement for the connection's backend and run `$body` with the bound query `$q`
/// and the executor `$e`.
macro_rules! run {
    ($conn:expr, $stmt:expr, |$q:ident, $e:ident| $body:expr) => {
        match $conn {
            Conn::SqlitePool(pool) => {
                let (sql, values) = $stmt.build_sqlx(SqliteQueryBuilder);
                let $q = sqlx::query_with(sqlx::AssertSqlSafe(sql), values);
                let $e = *pool;
                $body
            }
            Conn::PgPool(pool) => {
                let (sql, values) = $stmt.build_sqlx(PostgresQueryBuilder);
                let $q = sqlx::query_with(sqlx::AssertSqlSafe(sql), values);
                let $e = *pool;
                $body
            }
            Conn::Sqlite(conn) => {
                let (sql, values) = $stmt.build_sqlx(SqliteQueryBuilder);
                let $q = sqlx::query_with(sqlx::AssertSqlSafe(sql), values);
                let $e = &mut **conn;
                $body
            }
            Conn::Pg(conn) => {
                let (sql, values) = $stmt.build_sqlx(PostgresQueryBuilder);
                let $q = sqlx::query_with(sqlx::AssertSqlSafe(sql), values);
                let $e = &mut **conn;
                $body
            }
        }
    };
}

impl Conn<'_> {
    /// The rows of a statement, as records of these columns (in the statement's column order).
    pub(crate) async fn fetch<S: SqlxBinder>(
        &mut self,
        stmt: &S,
        columns: &[Column],
    ) -> Result<Vec<Map<String, Value>>> {
        run!(self, stmt, |q, e| {
            let rows = q.fetch_all(e).await.map_err(db_error)?;
            rows.iter().map(|row| decode(row, columns)).collect()
        })
    }

    /// The single integer a statement returns (`COUNT(*)`).
    pub(crate) async fn count<S: SqlxBinder>(&mut self, stmt: &S) -> Result<i64> {
        run!(self, stmt, |q, e| {
            let row = q.fetch_one(e).await.map_err(db_error)?;
            row.try_get::<i64, _>(0).map_err(db_error)
        })
    }

    /// Run a statement; the number of rows it changed.
    pub(crate) async fn execute<S: SqlxBinder>(&mut self, stmt: &S) -> Result<u64> {
        run!(self, stmt, |q, e| {
            let done = q.execute(e).await.map_err(db_error)?;
            Ok(done.rows_affected())
        })
    }
}

/// A row as a record: each column decoded by its type.
fn decode<R>(row: &R, columns: &[Column]) -> Result<Map<String, Value>>
where
    R: Row,
    usize: ColumnIndex<R>,
    for<'r> i64: Decode<'r, R::Database>,
    for<'r> f64: Decode<'r, R::Database>,
    for<'r> bool: Decode<'r, R::Database>,
    for<'r> String: Decode<'r, R::Database>,
    i64: Type<R::Database>,
    f64: Type<R::Database>,
    bool: Type<R::Database>,
    String: Type<R::Database>,
{
    let mut record = Map::with_capacity(columns.len());
    for (i, column) in columns.iter().enumerate() {
        let value = match column.ty {
            ColumnType::Integer => row
                .try_get::<Option<i64>, _>(i)
                .map_err(db_error)?
                .map_or(Value::Null, Value::from),
            ColumnType::Number => row
                .try_get::<Option<f64>, _>(i)
                .map_err(db_error)?
                .map_or(Value::Null, number),
            ColumnType::Boolean => row
                .try_get::<Option<bool>, _>(i)
                .map_err(db_error)?
                .map_or(Value::Null, Value::Bool),
            ColumnType::String => row
                .try_get::<Option<String>, _>(i)
                .map_err(db_error)?
                .map_or(Value::Null, Value::String),
            ColumnType::Json => match row.try_get::<Option<String>, _>(i).map_err(db_error)? {
                None => Value::Null,
                Some(text) => serde_json::from_str(&text).unwrap_or(Value::String(text)),
            },
        };
        record.insert(column.name.clone(), value);
    }
    Ok(record)
}

/// The connection(s) of one service call: the pool, a transaction of the call's own, or the
/// transaction a hook opened (see [`crate::transaction`]).
pub(crate) enum Session<'a> {
    Pool(&'a Pool),
    Own(Tx),
    Shared(SharedTx),
}

impl Session<'_> {
    /// Where the next statement runs.
    pub(crate) fn conn(&mut self) -> Result<Conn<'_>> {
        Ok(match self {
            Session::Pool(Pool::Sqlite(p)) => Conn::SqlitePool(p),
            Session::Pool(Pool::Postgres(p)) => Conn::PgPool(p),
            Session::Own(tx) => tx.conn(),
            Session::Shared(guard) => guard.conn()?,
        })
    }

    /// Commit a transaction of the call's own; nothing for the others.
    pub(crate) async fn finish(self) -> Result<()> {
        match self {
            Session::Own(tx) => tx.commit().await,
            Session::Pool(_) | Session::Shared(_) => Ok(()),
        }
    }
}
