//! [`SqlService`]: a Plume service over one table.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;

use plume::memory::Multi;
use plume::query::Query;
use plume::{Error, Id, Method, Paginate, Params, Result, Service, async_trait};
use sea_query::{Alias, Condition, Expr, ExprTrait, Func, SelectStatement};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::database::{Backend, Database};
use crate::exec::Session;
use crate::filter::{self, SqlQuery};
use crate::schema::{Column, ColumnType, IdGeneration, TableDef, to_sql};
use crate::transaction::Tx;

/// The most ids one `IN (…)` list binds (SQLite allows 32,766 parameters, PostgreSQL 65,535).
const ID_CHUNK: usize = 1000;

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
    db: Database,
    table: TableDef,
    columns: Vec<Column>,
    paginate: Option<Paginate>,
    multi: Multi,
    _record: PhantomData<fn() -> T>,
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

/// The builder of a [`SqlService`].
#[derive(Debug)]
pub struct SqlServiceBuilder<T = Value> {
    db: Database,
    table: TableDef,
    paginate: Option<Paginate>,
    multi: Multi,
    _record: PhantomData<fn() -> T>,
}

impl<T> SqlServiceBuilder<T> {
    /// The id column (default `id`, integers counted by the database).
    #[must_use]
    pub fn id(mut self, name: impl Into<String>, generation: IdGeneration) -> Self {
        self.table.id = name.into();
        self.table.id_generation = generation;
        self
    }

    /// Add a column.
    #[must_use]
    pub fn column(mut self, name: impl Into<String>, ty: ColumnType) -> Self {
        self.table.columns.push(Column {
            name: name.into(),
            ty,
            unique: false,
        });
        self
    }

    /// Add a column with a unique constraint (a duplicate value is a `409 Conflict`).
    #[must_use]
    pub fn unique_column(mut self, name: impl Into<String>, ty: ColumnType) -> Self {
        self.table.columns.push(Column {
            name: name.into(),
            ty,
            unique: true,
        });
        self
    }

    /// Paginate `find` with this default and maximum page size.
    #[must_use]
    pub fn paginate(mut self, default: usize, max: usize) -> Self {
        self.paginate = Some(Paginate { default, max });
        self
    }

    /// Which methods may work on several records.
    #[must_use]
    pub fn multi(mut self, multi: Multi) -> Self {
        self.multi = multi;
        self
    }

    /// The service. Fails on a table or column name that is not a plain identifier
    /// (`[A-Za-z_][A-Za-z0-9_]*`) or a column named twice.
    pub fn build(self) -> Result<SqlService<T>> {
        let columns = self.table.all_columns();
        for name in std::iter::once(&self.table.name).chain(columns.iter().map(|c| &c.name)) {
            let mut chars = name.chars();
            let plain = chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !plain {
                return Err(Error::bad_request(format!("Invalid SQL name '{name}'")));
            }
        }
        for (i, c) in columns.iter().enumerate() {
            if columns[..i].iter().any(|o| o.name == c.name) {
                return Err(Error::bad_request(format!(
                    "Column '{}' is defined twice",
                    c.name
                )));
            }
        }
        Ok(SqlService {
            db: self.db,
            table: self.table,
            columns,
            paginate: self.paginate,
            multi: self.multi,
            _record: PhantomData,
        })
    }
}

/// The data of a write, by column.
type Row = Vec<(Column, sea_query::Value)>;

impl<T> SqlService<T> {
    /// A builder for a service over `table` of `db`.
    pub fn builder(db: &Database, table: impl Into<String>) -> SqlServiceBuilder<T> {
        SqlServiceBuilder {
            db: db.clone(),
            table: TableDef {
                name: table.into(),
                id: "id".to_owned(),
                id_generation: IdGeneration::Integer,
                columns: Vec::new(),
            },
            paginate: None,
            multi: Multi::None,
            _record: PhantomData,
        }
    }

    /// The table.
    pub fn table(&self) -> &TableDef {
        &self.table
    }

    /// The database.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Create the table if it does not exist (for tests and small apps; real apps use
    /// migrations).
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
            crate::Pool::Postgres(p) => sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(p)
                .await
                .map(drop),
        };
        result.map_err(crate::database::db_error)
    }

    fn backend(&self) -> Backend {
        self.db.backend()
    }

    /// The result of a method on one (`id` given) or several records.
    fn results(&self, query: &Query, records: &[Map<String, Value>], one: bool) -> Value {
        let mut results = records.iter().map(|r| self.select_fields(query, r));
        if one {
            results.next().unwrap_or(Value::Null)
        } else {
            Value::Array(results.collect())
        }
    }

    /// The session of a call that only reads.
    async fn reader(&self, params: &Params) -> Result<Session<'_>> {
        Ok(match self.db.transactions.lock(params).await? {
            Some(shared) => Session::Shared(shared),
            None => Session::Pool(&self.db.pool),
        })
    }

    /// The session of a call that writes: the hook's transaction, or one of its own.
    async fn writer(&self, params: &Params) -> Result<Session<'_>> {
        Ok(match self.db.transactions.lock(params).await? {
            Some(shared) => Session::Shared(shared),
            None => Session::Own(Tx::begin(&self.db.pool).await?),
        })
    }

    /// The columns a result shows: all, or the id and the `$select`ed ones.
    fn shown(&self, query: &Query) -> Vec<Column> {
        match &query.select {
            None => self.columns.clone(),
            Some(fields) => self
                .columns
                .iter()
                .filter(|c| c.name == self.table.id || fields.contains(&c.name))
                .cloned()
                .collect(),
        }
    }

    fn select_fields(&self, query: &Query, record: &Map<String, Value>) -> Value {
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

    fn id_col(&self) -> Expr {
        Expr::col(Alias::new(&self.table.id))
    }

    /// `SELECT columns FROM table WHERE cond ORDER BY $sort, insertion order`.
    fn select(
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

    fn condition(&self, parsed: &SqlQuery) -> Result<Condition> {
        filter::condition(&parsed.filter, &self.table, self.backend())
    }

    /// The records matching `id` (if any) and the query, full, in `$sort` order.
    async fn matching(
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
    fn data_row(&self, data: &Map<String, Value>) -> Result<Row> {
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

    fn id_of(&self, record: &Map<String, Value>) -> Result<sea_query::Value> {
        let value = record.get(&self.table.id).unwrap_or(&Value::Null);
        to_sql(&self.table.id, self.table.id_type(), value)
    }
}

/// JavaScript truthiness of an id value: `null`, `false`, `0` and `""` mean "no id".
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

fn object(data: Value) -> Result<Map<String, Value>> {
    match data {
        Value::Object(map) => Ok(map),
        _ => Err(Error::bad_request("Data must be an object")),
    }
}

impl<T: DeserializeOwned> SqlService<T> {
    /// Check that a record deserializes into `T`.
    fn validate(&self, record: &Map<String, Value>) -> Result<()> {
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

    /// `create(data, params)`: one record, or (with `multi`) an array of them in one transaction.
    pub async fn create(&self, data: Value, params: Params) -> Result<Value> {
        let parsed = filter::parse(&params.query, &self.table)?;
        let (items, many) = match data {
            Value::Array(items) => {
                self.multi.check(Method::Create, &params)?;
                (items, true)
            }
            single => (vec![single], false),
        };
        let mut session = self.writer(&params).await?;
        let mut created = Vec::with_capacity(items.len());
        for item in items {
            let record = self.insert(&mut session, object(item)?).await?;
            created.push(self.select_fields(&parsed.query, &record));
        }
        session.finish().await?;
        Ok(if many {
            Value::Array(created)
        } else {
            created.into_iter().next().unwrap_or(Value::Null)
        })
    }

    async fn insert(
        &self,
        session: &mut Session<'_>,
        data: Map<String, Value>,
    ) -> Result<Map<String, Value>> {
        let mut row = self.data_row(&data)?;
        let id_column = self.columns[0].clone();
        let explicit_id = data.get(&self.table.id).filter(|v| truthy(v));
        match explicit_id {
            Some(id) => {
                let value = to_sql(&self.table.id, id_column.ty, id)?;
                row.insert(0, (id_column, value));
            }
            None if self.table.id_generation == IdGeneration::Uuid => {
                let id = uuid::Uuid::new_v4().to_string();
                row.insert(0, (id_column, id.into()));
            }
            None => {}
        }
        let mut stmt = sea_query::Query::insert();
        stmt.into_table(Alias::new(&self.table.name));
        if row.is_empty() {
            // Only the id, which the database makes.
            let default = match self.backend() {
                Backend::Sqlite => Expr::cust("NULL"),
                Backend::Postgres => Expr::cust("DEFAULT"),
            };
            stmt.columns([Alias::new(&self.table.id)])
                .values_panic([default]);
        } else {
            stmt.columns(row.iter().map(|(c, _)| Alias::new(&c.name)))
                .values_panic(row.into_iter().map(|(_, v)| Expr::val(v)));
        }
        stmt.returning(
            sea_query::Query::returning().columns(self.columns.iter().map(|c| Alias::new(&c.name))),
        );
        let mut rows = session.conn()?.fetch(&stmt, &self.columns).await?;
        let record = rows
            .pop()
            .ok_or_else(|| Error::general_error("The insert returned no row"))?;
        self.validate(&record)?;
        if explicit_id.is_some()
            && self.backend() == Backend::Postgres
            && self.table.id_generation == IdGeneration::Integer
        {
            self.advance_sequence(session).await?;
        }
        Ok(record)
    }

    /// After a record was created with an explicit integer id on PostgreSQL: move the id
    /// sequence past the largest id, so later generated ids do not collide with it.
    async fn advance_sequence(&self, session: &mut Session<'_>) -> Result<()> {
        let mut largest = sea_query::Query::select();
        largest
            .expr(Func::greatest([
                Expr::from(Func::coalesce([self.id_col().max(), Expr::val(0)])),
                Expr::val(1),
            ]))
            .from(Alias::new(&self.table.name));
        // The names are plain identifiers (checked by `build`), quoted to keep their case.
        let sequence = Func::cust("pg_get_serial_sequence")
            .arg(Expr::val(format!("\"{}\"", self.table.name)))
            .arg(Expr::val(self.table.id.clone()));
        let mut stmt = sea_query::Query::select();
        stmt.expr(
            Func::cust("setval")
                .arg(sequence)
                .arg(Expr::SubQuery(None, Box::new(largest.into()))),
        );
        // NULL (no sequence: the id column is not serial) is fine.
        let value = Column {
            name: "setval".to_owned(),
            ty: ColumnType::Integer,
            unique: false,
        };
        session.conn()?.fetch(&stmt, &[value]).await.map(drop)
    }

    /// `update(id, data, params)`: replace the record, keeping its id.
    pub async fn update(&self, id: Id, data: Value, params: Params) -> Result<Value> {
        let parsed = filter::parse(&params.query, &self.table)?;
        let data = object(data)?;
        let given = self.data_row(&data)?;
        let mut session = self.writer(&params).await?;
        let current = self.matching(&mut session, Some(&id), &parsed).await?;
        let current = current
            .into_iter()
            .next()
            .ok_or_else(|| Error::no_record(&id))?;
        let mut record = Map::new();
        record.insert(
            self.table.id.clone(),
            current.get(&self.table.id).cloned().unwrap_or(Value::Null),
        );
        let mut row = Vec::with_capacity(self.table.columns.len());
        for column in &self.table.columns {
            let value = data.get(&column.name).cloned().unwrap_or(Value::Null);
            let sql = match given.iter().find(|(c, _)| c.name == column.name) {
                Some((_, v)) => v.clone(),
                None => to_sql(&column.name, column.ty, &Value::Null)?,
            };
            record.insert(column.name.clone(), value);
            row.push((column.clone(), sql));
        }
        self.validate(&record)?;
        let ids = [self.id_of(&current)?];
        let updated = self.write_rows(&mut session, &ids, row).await?;
        session.finish().await?;
        let stored = updated.into_iter().next().unwrap_or(record);
        Ok(self.select_fields(&parsed.query, &stored))
    }

    /// `patch(id, data, params)`: merge fields into one record, or (with `multi`, `id` `None`)
    /// into every record matching the query.
    pub async fn patch(&self, id: Option<Id>, data: Value, params: Params) -> Result<Value> {
        let parsed = filter::parse(&params.query, &self.table)?;
        if id.is_none() {
            self.multi.check(Method::Patch, &params)?;
        }
        let data = object(data)?;
        let row = self.data_row(&data)?;
        let mut session = self.writer(&params).await?;
        let current = self.matching(&mut session, id.as_ref(), &parsed).await?;
        let mut ids = Vec::with_capacity(current.len());
        for record in &current {
            let mut merged = record.clone();
            for (field, value) in &data {
                if *field != self.table.id {
                    merged.insert(field.clone(), value.clone());
                }
            }
            self.validate(&merged)?;
            ids.push(self.id_of(record)?);
        }
        let patched = if row.is_empty() {
            current
        } else {
            self.write_rows(&mut session, &ids, row).await?
        };
        session.finish().await?;
        Ok(self.results(&parsed.query, &patched, id.is_some()))
    }

    /// `UPDATE … SET row WHERE id IN ids`, in chunks; the updated records in `ids` order.
    async fn write_rows(
        &self,
        session: &mut Session<'_>,
        ids: &[sea_query::Value],
        row: Row,
    ) -> Result<Vec<Map<String, Value>>> {
        let mut updated = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(ID_CHUNK) {
            let mut stmt = sea_query::Query::update();
            stmt.table(Alias::new(&self.table.name))
                .values(
                    row.iter()
                        .map(|(c, v)| (Alias::new(&c.name), Expr::val(v.clone()))),
                )
                .and_where(self.id_col().is_in(chunk.iter().cloned()))
                .returning(
                    sea_query::Query::returning()
                        .columns(self.columns.iter().map(|c| Alias::new(&c.name))),
                );
            updated.extend(session.conn()?.fetch(&stmt, &self.columns).await?);
        }
        // RETURNING has no order: put the records back in the order of `ids`.
        let key = |id: &sea_query::Value| format!("{id:?}");
        let mut by_id: HashMap<String, Map<String, Value>> = HashMap::with_capacity(updated.len());
        for record in updated {
            by_id.insert(key(&self.id_of(&record)?), record);
        }
        Ok(ids.iter().filter_map(|id| by_id.remove(&key(id))).collect())
    }

    /// `remove(id, params)`: one record, or (with `multi`, `id` `None`) every record matching
    /// the query.
    pub async fn remove(&self, id: Option<Id>, params: Params) -> Result<Value> {
        let parsed = filter::parse(&params.query, &self.table)?;
        if id.is_none() {
            self.multi.check(Method::Remove, &params)?;
        }
        let mut session = self.writer(&params).await?;
        let current = self.matching(&mut session, id.as_ref(), &parsed).await?;
        let ids = current
            .iter()
            .map(|r| self.id_of(r))
            .collect::<Result<Vec<_>>>()?;
        for chunk in ids.chunks(ID_CHUNK) {
            let mut stmt = sea_query::Query::delete();
            stmt.from_table(Alias::new(&self.table.name))
                .and_where(self.id_col().is_in(chunk.iter().cloned()));
            session.conn()?.execute(&stmt).await?;
        }
        session.finish().await?;
        Ok(self.results(&parsed.query, &current, id.is_some()))
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

fn from_record<T: DeserializeOwned>(record: Value) -> Result<T> {
    serde_path_to_error::deserialize(&record).map_err(|err| {
        Error::bad_request(format!(
            "Invalid record at '{}': {}",
            err.path(),
            err.inner()
        ))
    })
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
