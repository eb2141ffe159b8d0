//! A todos replica: a `#[service]` over `MemoryService`, served over REST and socket.io without
//! authentication and published on the mesh under the distribution key `todos`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use plume::channels::{ANONYMOUS, AUTHENTICATED};
use plume::{App, MemoryOptions, MemoryService, Params, Result};
use plume_transport::distribution::Distribution;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// The path of the service, on the replicas and (as a proxy) on the gateway.
pub(crate) const PATH: &str = "todos";
/// The distribution key of the replicas.
pub(crate) const KEY: &str = "todos";

/// A todo as stored and returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Todo {
    /// The id: `<replica>-<n>`, so that ids never collide across replicas.
    pub(crate) id: String,
    /// What to do.
    pub(crate) text: String,
    /// Whether it is done.
    #[serde(default)]
    pub(crate) done: bool,
    /// The replica that stored it.
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

/// The fields a patch may change.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TodoPatch {
    /// New text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) text: Option<String>,
    /// New state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) done: Option<bool>,
}

/// The todos service of one replica.
pub(crate) struct Todos {
    replica: String,
    next: AtomicU64,
    store: MemoryService<Todo>,
}

impl Todos {
    /// A todos service for the replica `name`, seeded with one todo.
    pub(crate) fn new(replica: &str) -> Result<Self> {
        let store = MemoryService::with_options(MemoryOptions::new().paginate(50, 100))
            .with_records([json!({
                "id": format!("{replica}-1"),
                "text": format!("Hello from {replica}"),
                "done": false,
                "replica": replica,
            })])?;
        Ok(Self {
            replica: replica.to_owned(),
            next: AtomicU64::new(2),
            store,
        })
    }
}

#[plume::service(vis = pub(crate))]
impl Todos {
    /// The page of todos of this replica, with `replica` naming the replica that answered.
    async fn find(&self, params: Params) -> Result<Value> {
        let mut page = self.store.find(params).await?;
        if let Value::Object(map) = &mut page {
            map.insert("replica".into(), Value::String(self.replica.clone()));
        }
        Ok(page)
    }

    async fn get(&self, id: String, params: Params) -> Result<Todo> {
        self.store.get_typed(id.into(), params).await
    }

    async fn create(&self, data: NewTodo, params: Params) -> Result<Value> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let record = json!({
            "id": format!("{}-{n}", self.replica),
            "text": data.text,
            "done": data.done,
            "replica": self.replica,
        });
        self.store.create(record, params).await
    }

    async fn patch(&self, id: String, data: TodoPatch, params: Params) -> Result<Value> {
        let fields: Map<String, Value> = match serde_json::to_value(data)? {
            Value::Object(map) => map,
            // invariant: a struct with named fields serializes to an object
            _ => Map::new(),
        };
        self.store
            .patch(Some(id.into()), Value::Object(fields), params)
            .await
    }

    async fn remove(&self, id: String, params: Params) -> Result<Value> {
        self.store.remove(Some(id.into()), params).await
    }
}

/// The App of a replica: the todos service at [`PATH`], and its events published to every
/// socket.io connection (this port has no authentication).
pub(crate) fn replica_app(name: &str) -> Result<App> {
    let app = App::new();
    app.use_service(PATH, Todos::new(name)?);
    app.publish(|_event, _app| vec![ANONYMOUS.to_owned(), AUTHENTICATED.to_owned()]);
    Ok(app)
}

/// Run a replica until `stop` resolves: serve on `addr`, publish `todos` on the mesh (consuming
/// nothing), and print `todos <name> listening on http://<addr>` once both are up.
pub(crate) async fn run(
    name: &str,
    addr: SocketAddr,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let app = replica_app(name)?;
    let server = app.listen(addr).await?;
    Distribution::from_env()?
        .key(KEY)
        .remote_services(false)
        .start(&app)
        .await?;
    crate::say(&format!(
        "todos {name} listening on http://{}",
        server.local_addr()
    ));
    stop.await;
    tracing::info!(replica = name, "stopping");
    app.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use plume::{ErrorKind, Id, Provider};

    #[tokio::test]
    async fn a_replica_mounts_exactly_the_todos_service_seeded_with_its_name() -> Result<()> {
        let app = replica_app("todos-x")?;
        assert_eq!(app.services(), vec![PATH.to_owned()]);
        let todos = app.require(PATH)?;
        let mut methods: Vec<String> = todos
            .service()
            .methods()
            .iter()
            .map(|m| m.to_string())
            .collect();
        methods.sort();
        assert_eq!(methods, ["create", "find", "get", "patch", "remove"]);

        let page = todos.find(Params::new()).await?;
        assert_eq!(page["replica"], "todos-x");
        assert_eq!(
            page["data"],
            json!([{"id": "todos-x-1", "text": "Hello from todos-x", "done": false,
                    "replica": "todos-x"}])
        );
        Ok(())
    }

    #[tokio::test]
    async fn created_todos_are_stamped_with_the_replica_and_get_unique_ids() -> Result<()> {
        let app = replica_app("todos-y")?;
        let todos = app.require(PATH)?;
        let rest = || Params::new().with_provider(Provider::Rest);
        let a = todos.create(json!({"text": "one"}), rest()).await?;
        let b = todos.create(json!({"text": "two"}), rest()).await?;
        assert_eq!(
            a,
            json!({"id": "todos-y-2", "text": "one", "done": false, "replica": "todos-y"})
        );
        assert_eq!(b["id"], "todos-y-3");

        // A client cannot choose the replica, nor the id.
        let err = todos
            .create(json!({"text": "x", "replica": "other"}), rest())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadRequest);

        let patched = todos
            .patch(Some(Id::from("todos-y-2")), json!({"done": true}), rest())
            .await?;
        assert_eq!(patched["done"], true);
        assert_eq!(patched["replica"], "todos-y");
        let err = todos
            .patch(Some(Id::from("todos-y-2")), json!({"replica": "z"}), rest())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadRequest);

        // An id of another replica is not found here (the page then asks the next replica).
        let err = todos
            .remove(Some(Id::from("todos-z-2")), rest())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        todos.remove(Some(Id::from("todos-y-3")), rest()).await?;
        let page = todos.find(Params::new()).await?;
        assert_eq!(page["total"], 2);
        Ok(())
    }
}
