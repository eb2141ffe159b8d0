//! The todos service of the demo: a `#[service]` over `MemoryService`.

use plume::memory::Multi;
use plume::query::{FieldType, Schema};
use plume::{Id, MemoryOptions, MemoryService, Params, Result};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// A todo as stored and returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Todo {
    /// The id, given by the store.
    pub(crate) id: i64,
    /// What to do.
    pub(crate) text: String,
    /// Whether it is done.
    #[serde(default)]
    pub(crate) done: bool,
    /// The replica that stored it.
    #[serde(default)]
    pub(crate) replica: String,
}

/// The data of a new todo.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewTodo {
    /// What to do.
    pub(crate) text: String,
    /// Whether it is done already.
    #[serde(default)]
    pub(crate) done: bool,
}

/// The todos service of one replica.
pub(crate) struct Todos {
    replica: String,
    store: MemoryService<Todo>,
}

impl Todos {
    /// A todos service for the replica `name`, seeded with one todo.
    pub(crate) fn new(replica: &str) -> Result<Self> {
        let options = MemoryOptions::new()
            .paginate(10, 50)
            .start_id(2)
            .multi(Multi::All)
            .schema(
                Schema::new()
                    .field("id", FieldType::Integer)
                    .field("done", FieldType::Boolean),
            );
        let store = MemoryService::with_options(options).with_records([json!({
            "id": 1,
            "text": format!("Hello from {replica}"),
            "done": false,
            "replica": replica,
        })])?;
        Ok(Self {
            replica: replica.to_owned(),
            store,
        })
    }
}

#[plume::service(vis = pub(crate))]
impl Todos {
    async fn find(&self, params: Params) -> Result<Value> {
        self.store.find(params).await
    }

    async fn get(&self, id: Id, params: Params) -> Result<Todo> {
        self.store.get_typed(id, params).await
    }

    async fn create(&self, data: NewTodo, params: Params) -> Result<Value> {
        let record = json!({ "text": data.text, "done": data.done, "replica": self.replica });
        self.store.create(record, params).await
    }

    async fn patch(&self, id: Option<Id>, data: Value, params: Params) -> Result<Value> {
        self.store.patch(id, data, params).await
    }

    async fn remove(&self, id: Option<Id>, params: Params) -> Result<Value> {
        self.store.remove(id, params).await
    }
}
