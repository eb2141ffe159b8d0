//! [`SqlServiceBuilder`]: the table, columns, ids and options of a [`SqlService`].

use std::marker::PhantomData;

use plume::memory::Multi;
use plume::{Error, Paginate, Result};
use serde_json::Value;

use crate::database::Database;
use crate::schema::{Column, ColumnType, IdGeneration, TableDef};
use crate::service::SqlService;

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
            columns: columns.into(),
            paginate: self.paginate,
            multi: self.multi,
            _record: PhantomData,
        })
    }
}
