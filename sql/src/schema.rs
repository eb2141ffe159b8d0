//! The table a service stores its records in: columns, their types, and how values cross between
//! JSON and SQL.

use plume::query::{FieldType, Schema};
use plume::{Error, Id, Result};
use sea_query::{Alias, ColumnDef, Table, TableCreateStatement};
use serde_json::{Number, Value, json};

use crate::database::Backend;

/// The type of a column, which decides how query values are coerced and how the column is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// A whole number: `BIGINT` (SQLite `INTEGER`).
    Integer,
    /// Any number: `DOUBLE PRECISION` (SQLite `REAL`). Integral values come back as integers.
    Number,
    /// `BOOLEAN` (SQLite stores 0/1).
    Boolean,
    /// `TEXT`.
    String,
    /// Nested data (objects, arrays), stored as JSON text. Not queryable or sortable.
    Json,
}

impl ColumnType {
    fn field_type(self) -> Option<FieldType> {
        match self {
            ColumnType::Integer => Some(FieldType::Integer),
            ColumnType::Number => Some(FieldType::Number),
            ColumnType::Boolean => Some(FieldType::Boolean),
            ColumnType::String => Some(FieldType::String),
            ColumnType::Json => None,
        }
    }
}

/// How a record created without an id gets one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdGeneration {
    /// The database counts (`INTEGER PRIMARY KEY AUTOINCREMENT` / `BIGSERIAL`); ids are integers.
    Integer,
    /// A random UUID (v4) made by the service; ids are strings (any string given on create is
    /// kept).
    Uuid,
}

/// One column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Its name (also the record's field name).
    pub name: String,
    /// Its type.
    pub ty: ColumnType,
    /// Whether it has a unique constraint (in [`TableDef::create_statement`]).
    pub unique: bool,
}

/// A table: name, id column and the other columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDef {
    /// The table name.
    pub name: String,
    /// The id column's name.
    pub id: String,
    /// How ids are made.
    pub id_generation: IdGeneration,
    /// The other columns, in order.
    pub columns: Vec<Column>,
}

impl TableDef {
    /// The id column followed by the others.
    pub(crate) fn all_columns(&self) -> Vec<Column> {
        let mut all = Vec::with_capacity(self.columns.len() + 1);
        all.push(Column {
            name: self.id.clone(),
            ty: self.id_type(),
            unique: true,
        });
        all.extend(self.columns.iter().cloned());
        all
    }

    pub(crate) fn id_type(&self) -> ColumnType {
        match self.id_generation {
            IdGeneration::Integer => ColumnType::Integer,
            IdGeneration::Uuid => ColumnType::String,
        }
    }

    /// The type of a field, or `None` for an unknown one.
    pub(crate) fn type_of(&self, field: &str) -> Option<ColumnType> {
        if field == self.id {
            return Some(self.id_type());
        }
        self.columns.iter().find(|c| c.name == field).map(|c| c.ty)
    }

    /// The query coercion schema: every queryable column.
    pub(crate) fn query_schema(&self) -> Schema {
        self.all_columns()
            .iter()
            .filter_map(|c| Some((c.name.clone(), c.ty.field_type()?)))
            .collect()
    }

    /// `CREATE TABLE IF NOT EXISTS` for this table.
    pub fn create_statement(&self, backend: Backend) -> TableCreateStatement {
        let mut table = Table::create();
        table.table(Alias::new(&self.name)).if_not_exists();
        let mut id = ColumnDef::new(Alias::new(&self.id));
        match self.id_generation {
            // SQLite: `INTEGER PRIMARY KEY AUTOINCREMENT` (the rowid); PostgreSQL: `BIGSERIAL`.
            IdGeneration::Integer if backend == Backend::Sqlite => {
                id.integer().auto_increment().primary_key()
            }
            IdGeneration::Integer => id.big_integer().auto_increment().primary_key(),
            IdGeneration::Uuid => id.text().primary_key(),
        };
        table.col(id);
        for column in &self.columns {
            let mut def = ColumnDef::new(Alias::new(&column.name));
            match column.ty {
                ColumnType::Integer => def.big_integer(),
                ColumnType::Number => def.double(),
                ColumnType::Boolean => def.boolean(),
                ColumnType::String | ColumnType::Json => def.text(),
            };
            if column.unique {
                def.unique_key();
            }
            table.col(def);
        }
        table.to_owned()
    }

    /// The SQL value of an id, or `None` when `id` cannot be an id of this table (then no record
    /// has it: `NotFound`, as the Feathers adapter tests expect).
    pub(crate) fn id_value(&self, id: &Id) -> Option<sea_query::Value> {
        match (self.id_generation, id) {
            (IdGeneration::Integer, Id::Int(n)) => Some((*n).into()),
            (IdGeneration::Integer, Id::Str(s)) => match s.parse::<i64>() {
                Ok(n) if n.to_string() == *s => Some(n.into()),
                _ => None,
            },
            (IdGeneration::Uuid, Id::Str(s)) => Some(s.clone().into()),
            (IdGeneration::Uuid, Id::Int(n)) => Some(n.to_string().into()),
        }
    }
}

fn expected(field: &str, what: &str) -> Error {
    Error::bad_request(format!("Invalid value for '{field}': expected {what}"))
        .with_data(json!({ "field": field }))
}

/// The SQL value of a JSON value for a column of type `ty` (data being stored, or an already
/// coerced query operand). `null` is SQL `NULL` of the column's type.
pub(crate) fn to_sql(field: &str, ty: ColumnType, value: &Value) -> Result<sea_query::Value> {
    use sea_query::Value as V;
    Ok(match (ty, value) {
        (ColumnType::Integer, Value::Null) => V::BigInt(None),
        (ColumnType::Number, Value::Null) => V::Double(None),
        (ColumnType::Boolean, Value::Null) => V::Bool(None),
        (ColumnType::String | ColumnType::Json, Value::Null) => V::String(None),
        (ColumnType::Integer, Value::Number(n)) => V::BigInt(Some(
            n.as_i64()
                .or_else(|| integral(n.as_f64()?))
                .ok_or_else(|| expected(field, "an integer"))?,
        )),
        (ColumnType::Number, Value::Number(n)) => {
            V::Double(Some(n.as_f64().ok_or_else(|| expected(field, "a number"))?))
        }
        (ColumnType::Boolean, Value::Bool(b)) => V::Bool(Some(*b)),
        (ColumnType::String, Value::String(s)) => V::String(Some(s.clone())),
        (ColumnType::Json, other) => V::String(Some(other.to_string())),
        (ColumnType::Integer, _) => return Err(expected(field, "an integer")),
        (ColumnType::Number, _) => return Err(expected(field, "a number")),
        (ColumnType::Boolean, _) => return Err(expected(field, "a boolean")),
        (ColumnType::String, _) => return Err(expected(field, "a string")),
    })
}

/// An integral float within ±2^53 (`2.0`) as an integer.
fn integral(f: f64) -> Option<i64> {
    // The cast is exact: `f` is integral and within ±2^53.
    #[allow(clippy::cast_possible_truncation)]
    (f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0).then_some(f as i64)
}

/// A float as JSON: integral values within ±2^53 as integers (a `REAL` column gives back `32.0`
/// for a stored `32`).
pub(crate) fn number(f: f64) -> Value {
    match integral(f) {
        Some(i) => Value::from(i),
        None => Number::from_f64(f).map_or(Value::Null, Value::Number),
    }
}
