//! [`SqlService`]: a Plume service over one table.

use std::fmt;
use std::marker::PhantomData;

use plume::memory::{Multi, from_record};
use plume::query::Query;
use plume::{Error, Id, Paginate, Params, Result, Service, async_trait};
use sea_query::{Alias, Condition, Expr, ExprTrait, SelectStatement};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::database::{Backend, Database};
use crate::exec::Session;
use crate::filter::{self, SqlQuery};
use crate::schema::{Column, TableDef, to_sql};
use crate::transaction::{SharedTx, Tx};

/// A Feathers service over one SQL table, like `@feathersjs/knex`: the whole common query syntax
/// plus `$like`, `$notlike` and `$ilike`, pagination, `multi`, and Feathers errors.
///
/// Build it with [`SqlService::builder`]; the table can be made with
/// [`create_table`](SqlService::create_table) or by your migrations.
///
/// * `find` returns `{total, limit, skip, data}` when paginated (the total from a `COUNT`),
///   otherwise an array. `params.extra["paginate"]` overrides the pagination per call (`false`
///   turns it off, `{"default": d, "max": m}` replaces it) and `params.extra["multi"]` the
///   `multi` option (`true`, `false` or a list of method names), as in the memory adapter.
/// * `get`, `update`, `patch` and `remove` also apply `params.query`; an id no record has (or
///   that cannot be an id of the table, such as `"abc"` for integer ids) is `NotFound`.
/// * `create` with an array (with `multi`) inserts every record in one transaction: all or none.
/// * `update` replaces the record (columns missing from the data become `NULL`); `patch`
///   changes the given columns of one record, or of every record matching the query.
/// * Data with a field that is not a column, or a value of the wrong type, is a `BadRequest`
///   naming the field; so is a query on an unknown field. A unique violation is a `Conflict`;
///   a database that cannot be reached answers `Unavailable`.
/// * With `T` other than [`Value`], every record a call would store is first checked by
///   deserializing it into `T` (a failure is a `BadRequest` and nothing is stored).
pub struct SqlService<T = Value> {
    pub(crate) db: Database,
    pub(crate) table: TableDef,
    pub(crate) columns: std::sync::Arc<[Column]>,
    pub(crate) paginate: Option<Paginate>,
    pub(crate) multi: Multi,
    pub(crate) _record: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for SqlService<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlService")
            .field("table", &self.table)
            .field("paginate", &self.paginate)
            .field("multi", &self.multi)
            .finish_non_exhaustive()
    }
}

/// The data of a write, by column.
pub(crate) type Row = Vec<(Column, sea_query::Value)>;

impl<T> SqlService<T> {
    /// The table.
    pub fn table(&self) -> &TableDef {
        &self.table
    }

    /// The database.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Create the table if it does not exist (for tests and small apps; real apps use
    /// migrations). Safe to call from several processes at once: on PostgreSQL, where two
    /// concurrent `CREATE TABLE IF NOT EXISTS` of one table can fail (`type "…" already
    /// exists`), the creations are serialized by a transaction-scoped advisory lock.
    pub async fn create_table(&self) -> Result<()> {
        let sql = match self.db.backend() {
            Backend::Sqlite => self
                .table
                .create_statement(Backend::Sqlite)
                .to_string(sea_query::SqliteQueryBuilder),
            Backend::Postgres => self
                .table
                .create_statement(Backend::Postgres)
                .to_string(sea_query::PostgresQueryBuilder),
        };
        // DDL from names checked by `build`; it binds no values.
        let result = match &self.db.pool {
            crate::Pool::Sqlite(p) => sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(p)
                .await
                .map(drop),
            crate::Pool::Postgres(p) => create_serialized(p, sql).await,
        };
        result.map_err(crate::database::db_error)
    }

    pub(crate) fn backend(&self) -> Backend {
        self.db.backend()
    }

    /// The result of a method on one (`id` given) or several records.
    pub(crate) fn results(
        &self,
        query: &Query,
        records: &[Map<String, Value>],
        one: bool,
    ) -> Value {
        let mut results = records.iter().map(|r| self.select_fields(query, r));
        if one {
            results.next().unwrap_or(Value::Null)
        } else {
            Value::Array(results.collect())
        }
    }

    /// The session of a call that only reads.
    pub(crate) async fn reader(&self, params: &Params) -> Result<Session<'_>> {
        Ok(match self.db.transactions.lock(params).await? {
            Some(shared) => Session::Shared(shared),
            None => Session::Pool(&self.db.pool),
        })
    }

    /// The session of a call that writes: the hook's transaction, or one of its own.
    pub(crate) async fn writer(&self, params: &Params) -> Result<Session<'_>> {
        let shared = self.db.transactions.lock(params).await?;
        self.writer_in(shared).await
    }

    /// The session of a call that writes in `shared` (already locked) or in one of its own.
    pub(crate) async fn writer_in(&self, shared: Option<SharedTx>) -> Result<Session<'_>> {
        Ok(match shared {
            Some(shared) => Session::Shared(shared),
            None => Session::Own(Tx::begin(&self.db).await?),
        })
    }

    /// The columns a result shows: all, or the id and the `$select`ed ones.
    pub(crate) fn shown(&self, query: &Query) -> Vec<Column> {
        match &query.select {
            None => self.columns.to_vec(),
            Some(fields) => self
                .columns
                .iter()
                .filter(|c| c.name == self.table.id || fields.contains(&c.name))
                .cloned()
                .collect(),
        }
    }

    pub(crate) fn select_fields(&self, query: &Query, record: &Map<String, Value>) -> Value {
        match &query.select {
            None => Value::Object(record.clone()),
            Some(fields) => Value::Object(
                record
                    .iter()
                    .filter(|(k, _)| **k == self.table.id || fields.contains(k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
        }
    }

    pub(crate) fn id_col(&self) -> Expr {
        Expr::col(Alias::new(&self.table.id))
    }

    /// `SELECT columns FROM table WHERE cond ORDER BY $sort, insertion order`.
    pub(crate) fn select(
        &self,
        columns: &[Column],
        cond: Condition,
        query: &Query,
    ) -> Result<SelectStatement> {
        let mut stmt = sea_query::Query::select();
        stmt.from(Alias::new(&self.table.name))
            .columns(columns.iter().map(|c| Alias::new(&c.name)))
            .cond_where(cond);
        for (expr, order, nulls) in filter::sort_keys(&query.sort, &self.table, self.backend())? {
            stmt.order_by_expr_with_nulls(expr, order, nulls);
        }
        // Ties keep insertion order (SQLite's rowid; ids on PostgreSQL).
        let tie = match self.backend() {
            Backend::Sqlite => Expr::cust("rowid"),
            Backend::Postgres => self.id_col(),
        };
        stmt.order_by_expr(tie, sea_query::Order::Asc);
        Ok(stmt)
    }

    pub(crate) fn condition(&self, parsed: &SqlQuery) -> Result<Condition> {
        filter::condition(&parsed.filter, &self.table, self.backend())
    }

    /// The records matching `id` (if any) and the query, full, in `$sort` order.
    pub(crate) async fn matching(
        &self,
        session: &mut Session<'_>,
        id: Option<&Id>,
        parsed: &SqlQuery,
    ) -> Result<Vec<Map<String, Value>>> {
        let mut cond = self.condition(parsed)?;
        if let Some(id) = id {
            let Some(value) = self.table.id_value(id) else {
                return Err(Error::no_record(id));
            };
            cond = cond.add(self.id_col().eq(value));
        }
        let stmt = self.select(&self.columns, cond, &parsed.query)?;
        let found = session.conn()?.fetch(&stmt, &self.columns).await?;
        match (id, found.is_empty()) {
            (Some(id), true) => Err(Error::no_record(id)),
            _ => Ok(found),
        }
    }

    /// The SQL values of the data fields (every field must be a column; the id is skipped).
    pub(crate) fn data_row(&self, data: &Map<String, Value>) -> Result<Row> {
        let mut row = Vec::with_capacity(data.len());
        for (field, value) in data {
            if *field == self.table.id {
                continue;
            }
            let column = self
                .table
                .columns
                .iter()
                .find(|c| c.name == *field)
                .ok_or_else(|| {
                    Error::bad_request(format!("Unknown field '{field}'"))
                        .with_data(json!({ "field": field }))
                })?;
            row.push((column.clone(), to_sql(field, column.ty, value)?));
        }
        Ok(row)
    }

    pub(crate) fn id_of(&self, record: &Map<String, Value>) -> Result<sea_query::Value> {
        let value = record.get(&self.table.id).unwrap_or(&Value::Null);
        to_sql(&self.table.id, self.table.id_type(), value)
    }
}

impl<T: DeserializeOwned> SqlService<T> {
    /// Check that a record deserializes into `T`.
    pub(crate) fn validate(&self, record: &Map<String, Value>) -> Result<()> {
        Self::validate_record(record)
    }

    /// Check that a record deserializes into `T` (as a plain function: see [`crate::batch`]).
    pub(crate) fn validate_record(record: &Map<String, Value>) -> Result<()> {
        let value = Value::Object(record.clone());
        serde_path_to_error::deserialize::<_, T>(&value)
            .map(drop)
            .map_err(|err| {
                let path = err.path().to_string();
                let inner = err.into_inner();
                Error::bad_request(format!("Invalid data at '{path}': {inner}"))
                    .with_data(json!({ "field": path }))
            })
    }

    /// `find(params)`.
    pub async fn find(&self, params: Params) -> Result<Value> {
        let parsed = filter::parse(&params.query, &self.table)?;
        let paginate = Paginate::for_call(self.paginate, &params)?;
        let q = &parsed.query;
        let limit = match paginate {
            Some(p) => Some(q.limit.unwrap_or(p.default).min(p.max)),
            None => q.limit,
        };
        let cond = self.condition(&parsed)?;
        let shown = self.shown(q);
        let mut session = self.reader(&params).await?;
        let data = if limit == Some(0) {
            Vec::new()
        } else {
            let mut stmt = self.select(&shown, cond.clone(), q)?;
            if let Some(limit) = limit {
                stmt.limit(limit as u64);
            } else if q.skip > 0 {
                stmt.limit(i64::MAX as u64);
            }
            if q.skip > 0 {
                stmt.offset(q.skip as u64);
            }
            session.conn()?.fetch(&stmt, &shown).await?
        };
        let data: Vec<Value> = data.into_iter().map(Value::Object).collect();
        Ok(match (paginate, limit) {
            (Some(_), Some(limit)) => {
                let mut count = sea_query::Query::select();
                count
                    .from(Alias::new(&self.table.name))
                    .expr(Expr::cust("COUNT(*)"))
                    .cond_where(cond);
                let total = session.conn()?.count(&count).await?;
                json!({ "total": total, "limit": limit, "skip": q.skip, "data": data })
            }
            _ => Value::Array(data),
        })
    }

    /// `get(id, params)`.
    pub async fn get(&self, id: Id, params: Params) -> Result<Value> {
        let parsed = filter::parse(&params.query, &self.table)?;
        let Some(value) = self.table.id_value(&id) else {
            return Err(Error::no_record(&id));
        };
        let cond = self.condition(&parsed)?.add(self.id_col().eq(value));
        let shown = self.shown(&parsed.query);
        let stmt = self.select(&shown, cond, &parsed.query)?;
        let mut session = self.reader(&params).await?;
        let found = session.conn()?.fetch(&stmt, &shown).await?;
        found
            .into_iter()
            .next()
            .map(Value::Object)
            .ok_or_else(|| Error::no_record(&id))
    }

    /// `get`, deserialized into `T`.
    pub async fn get_typed(&self, id: Id, params: Params) -> Result<T> {
        from_record(self.get(id, params).await?)
    }

    /// `find` without pagination, deserialized into `T`.
    pub async fn find_typed(&self, mut params: Params) -> Result<Vec<T>> {
        params
            .extra
            .insert("paginate".to_owned(), Value::Bool(false));
        let Value::Array(records) = self.find(params).await? else {
            return Err(Error::general_error(
                "find without pagination returned no array",
            ));
        };
        records.into_iter().map(from_record).collect()
    }
}

impl<T: Serialize + DeserializeOwned> SqlService<T> {
    /// `create` from a typed record; the stored record (with its id) back.
    pub async fn create_typed(&self, record: &T, params: Params) -> Result<T> {
        let data = serde_json::to_value(record).map_err(Error::internal)?;
        from_record(self.create(data, params).await?)
    }
}

#[async_trait]
impl<T: DeserializeOwned + 'static> Service for SqlService<T> {
    async fn find(&self, params: Params) -> Result<Value> {
        SqlService::find(self, params).await
    }

    async fn get(&self, id: Id, params: Params) -> Result<Value> {
        SqlService::get(self, id, params).await
    }

    async fn create(&self, data: Value, params: Params) -> Result<Value> {
        SqlService::create(self, data, params).await
    }

    async fn update(&self, id: Id, data: Value, params: Params) -> Result<Value> {
        SqlService::update(self, id, data, params).await
    }

    async fn patch(&self, id: Option<Id>, data: Value, params: Params) -> Result<Value> {
        SqlService::patch(self, id, data, params).await
    }

    async fn remove(&self, id: Option<Id>, params: Params) -> Result<Value> {
        SqlService::remove(self, id, params).await
    }

    fn options(&self) -> Value {
        json!({
            "id": self.table.id,
            "paginate": self.paginate.map_or(Value::Bool(false), |p| json!(p)),
            "multi": self.multi.to_json(),
        })
    }
}

/// The advisory lock key under which every `create_table` on a PostgreSQL database runs
/// ("plume_sql" in ASCII).
const CREATE_TABLE_LOCK: i64 = 0x706c_756d_655f_7371;

/// Run the DDL `sql` on PostgreSQL in a transaction that first takes
/// [`CREATE_TABLE_LOCK`]: concurrent creators wait for each other, and the later ones find
/// the table there.
async fn create_serialized(
    pool: &sqlx::PgPool,
    sql: String,
) -> std::result::Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(CREATE_TABLE_LOCK)
        .execute(&mut *tx)
        .await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}
