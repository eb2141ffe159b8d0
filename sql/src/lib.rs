//! A SQL adapter for Plume: [`SqlService`] stores a service's records in a table of SQLite (the
//! embedded default) or PostgreSQL, with the whole Feathers query syntax, like
//! `@feathersjs/knex`. SQL is built with sea-query and every value is bound, never spliced.
//!
//! ```
//! use plume::{Params, Service};
//! use plume_sql::{ColumnType, Database, SqlService};
//! use serde_json::json;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> plume::Result<()> {
//! let db = Database::connect("sqlite::memory:").await?;
//! let people: SqlService = SqlService::builder(&db, "people")
//!     .column("name", ColumnType::String)
//!     .column("age", ColumnType::Integer)
//!     .paginate(10, 50)
//!     .build()?;
//! people.create_table().await?;
//! people.create(json!({"name": "Alice", "age": 19}), Params::new()).await?;
//! people.create(json!({"name": "Bob", "age": 25}), Params::new()).await?;
//!
//! // What `GET /people?age[$gt]=20&name[$like]=B%25` hands the service: strings, coerced by
//! // the column types.
//! let page = people
//!     .find(Params::new().with_query(json!({"age": {"$gt": "20"}, "name": {"$like": "B%"}})))
//!     .await?;
//! assert_eq!(page, json!({"total": 1, "limit": 10, "skip": 0,
//!                         "data": [{"id": 2, "name": "Bob", "age": 25}]}));
//! # Ok(())
//! # }
//! ```
//!
//! See [`guide`] (`docs/sql.md`) for migrations, transactions, PostgreSQL and the operator
//! table with each backend's rules.

mod batch;
mod builder;
mod database;
mod exec;
mod filter;
mod schema;
mod service;
pub mod transaction;
mod write;

#[doc = include_str!("../../docs/sql.md")]
pub mod guide {}

/// The sqlx this crate is built on (for migrations and your own queries).
pub use sqlx;

pub use builder::SqlServiceBuilder;
pub use database::{Backend, ConnectOptions, Database, Pool};
pub use schema::{Column, ColumnType, IdGeneration, TableDef};
pub use service::SqlService;
pub use transaction::{OpenTransaction, TransactionHook, transaction};
