//! The writes of a [`SqlService`]: create, update, patch and remove.

use std::collections::HashMap;

use plume::memory::is_truthy;
use plume::{Error, Id, Method, Params, Result};
use sea_query::{Alias, Expr, ExprTrait, Func, InsertStatement};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::batch::Insert;
use crate::database::Backend;
use crate::exec::Session;
use crate::filter;
use crate::schema::{Column, ColumnType, IdGeneration, to_sql};
use crate::service::{Row, SqlService};

/// The most ids one `IN (…)` list binds (SQLite allows 32,766 parameters, PostgreSQL 65,535).
const ID_CHUNK: usize = 1000;

fn object(data: Value) -> Result<Map<String, Value>> {
    match data {
        Value::Object(map) => Ok(map),
        _ => Err(Error::bad_request("Data must be an object")),
    }
}

impl<T: DeserializeOwned> SqlService<T> {
    /// `create(data, params)`: one record, or (with `multi`) an array of them in one transaction.
    /// On SQLite, a single create outside a caller's transaction goes to the database's group
    /// commit (see [`crate::batch`]).
    pub async fn create(&self, data: Value, params: Params) -> Result<Value> {
        let parsed = filter::parse(&params.query, &self.table)?;
        let (items, many) = match data {
            Value::Array(items) => {
                self.multi.check(Method::Create, &params)?;
                (items, true)
            }
            single => (vec![single], false),
        };
        let shared = self.db.transactions.lock(&params).await?;
        if shared.is_none() && !many && self.backend() == Backend::Sqlite {
            let item = object(items.into_iter().next().unwrap_or(Value::Null))?;
            let insert = self.grouped(item)?;
            let record = self
                .db
                .grouped_insert(insert, self.columns.clone(), Self::validate_record)
                .await?;
            return Ok(self.select_fields(&parsed.query, &record));
        }
        let mut session = self.writer_in(shared).await?;
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
        let (stmt, explicit_id) = self.insert_statement(data)?;
        let mut rows = session.conn()?.fetch(&stmt, &self.columns).await?;
        let record = rows
            .pop()
            .ok_or_else(|| Error::general_error("The insert returned no row"))?;
        self.validate(&record)?;
        if explicit_id
            && self.backend() == Backend::Postgres
            && self.table.id_generation == IdGeneration::Integer
        {
            self.advance_sequence(session).await?;
        }
        Ok(record)
    }

    /// One record for the group commit: a row that may share a statement when the database makes
    /// its id, otherwise a statement of its own.
    fn grouped(&self, data: Map<String, Value>) -> Result<Insert> {
        let auto_id = self.table.id_generation == IdGeneration::Integer
            && !data.get(&self.table.id).is_some_and(is_truthy);
        if auto_id {
            let row = self.data_row(&data)?;
            if !row.is_empty() {
                let (names, values) = row.into_iter().map(|(c, v)| (c.name, v)).unzip();
                return Ok(Insert::Row {
                    table: self.table.name.as_str().into(),
                    names,
                    values,
                });
            }
        }
        Ok(Insert::Statement(Box::new(self.insert_statement(data)?.0)))
    }

    /// The `INSERT … RETURNING` of one record, and whether the data gave the id.
    fn insert_statement(&self, data: Map<String, Value>) -> Result<(InsertStatement, bool)> {
        let mut row = self.data_row(&data)?;
        let id_column = self.columns[0].clone();
        let explicit_id = data.get(&self.table.id).filter(|v| is_truthy(v));
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
                .values([default])
                .map_err(Error::internal)?;
        } else {
            stmt.columns(row.iter().map(|(c, _)| Alias::new(&c.name)))
                .values(row.into_iter().map(|(_, v)| Expr::val(v)))
                .map_err(Error::internal)?;
        }
        stmt.returning(
            sea_query::Query::returning().columns(self.columns.iter().map(|c| Alias::new(&c.name))),
        );
        Ok((stmt, explicit_id.is_some()))
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
}
