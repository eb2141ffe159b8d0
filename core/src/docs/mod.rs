//! API documentation generated from the services themselves: an OpenAPI 3.1 document
//! ([`App::openapi`]), served at `/docs/openapi.json` with a page at `/docs` when enabled
//! ([`App::enable_docs`], feature `server`).
//!
//! `#[service]` describes each method from its Rust types: ids, data and results get JSON
//! Schemas (JSON Schema 2020-12, the dialect of OpenAPI 3.1) from [`schemars`] for every type
//! that derives [`JsonSchema`]. A type that does not still compiles: its
//! schema is "any JSON". `#[service(record = T)]` names the schema of one record, which then
//! describes the results typed `Value` (`find` as a list or a [`Page`] of records).
//!
//! ```
//! use plume::docs::{DocsOptions, Page};
//! use plume::{App, Result};
//! use schemars::JsonSchema;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize, JsonSchema)]
//! struct Todo { id: u64, text: String }
//!
//! #[derive(Serialize, Deserialize, JsonSchema)]
//! struct NewTodo { text: String }
//!
//! struct Todos;
//!
//! #[plume::service]
//! impl Todos {
//!     /// Every todo, a page at a time.
//!     async fn find(&self) -> Result<Page<Todo>> {
//!         Ok(Page { total: 0, limit: 10, skip: 0, data: vec![] })
//!     }
//!     async fn create(&self, data: NewTodo) -> Result<Todo> {
//!         Ok(Todo { id: 1, text: data.text })
//!     }
//! }
//!
//! let app = App::new();
//! app.use_service("todos", Todos);
//! let doc = app.openapi(&DocsOptions::new().title("Todos API"));
//! assert_eq!(doc["openapi"], "3.1.0");
//! assert_eq!(doc["paths"]["/todos"]["post"]["requestBody"]["content"]["application/json"]
//!     ["schema"]["$ref"], "#/components/schemas/NewTodo");
//! assert!(doc["components"]["schemas"]["Todo"].is_object());
//! ```

mod openapi;
mod schema;
#[cfg(feature = "server")]
mod serve;
mod typescript;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::app::App;

pub use openapi::document;
pub use schema::{COMPONENTS, MethodSchema, Probe, ServiceSchema, ViaAny, ViaSchema, generator};
pub use typescript::typescript;

/// What the document says about itself, and where the docs are served.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DocsOptions {
    /// The API's title (`info.title`).
    pub title: String,
    /// The API's version (`info.version`).
    pub version: String,
    /// A longer description (`info.description`).
    pub description: Option<String>,
}

impl Default for DocsOptions {
    fn default() -> Self {
        Self {
            title: "Plume API".to_owned(),
            version: "1.0.0".to_owned(),
            description: None,
        }
    }
}

impl DocsOptions {
    /// Title "Plume API", version "1.0.0".
    pub fn new() -> Self {
        Self::default()
    }

    /// Set the title.
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = title.into();
        self
    }

    /// Set the version.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// Set the description.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }
}

/// The Feathers page a paginated `find` returns: `{total, limit, skip, data}`.
///
/// Return it from a typed `find` to have the document (and clients) see the page shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Page<T> {
    /// How many records match the query in all.
    pub total: u64,
    /// The page size used.
    pub limit: u64,
    /// How many records were skipped.
    pub skip: u64,
    /// The records of this page.
    pub data: Vec<T>,
}

impl App {
    /// The schemas of every service of this App, by path (sorted), limited to the methods each
    /// exposes. A service that does not describe itself (a hand-written
    /// [`Service`](crate::Service), the memory adapter) is described by its methods' names
    /// alone.
    pub fn service_schemas(&self) -> Vec<(String, ServiceSchema)> {
        let mut paths = self.services();
        paths.sort();
        paths
            .into_iter()
            .filter_map(|path| {
                let handle = self.service(&path)?;
                let mut schema = handle.service().schema().unwrap_or_else(|| {
                    ServiceSchema::untyped(handle.methods().iter().map(|m| m.as_str().to_owned()))
                });
                schema
                    .methods
                    .retain(|m| handle.exposes(&crate::Method::from_name(&m.name)));
                Some((path, schema))
            })
            .collect()
    }

    /// The OpenAPI 3.1 document of every service of this App (remote services mounted by the
    /// distribution plugin included, as their providers describe them).
    pub fn openapi(&self, options: &DocsOptions) -> Value {
        document(options, &self.service_schemas())
    }
}
