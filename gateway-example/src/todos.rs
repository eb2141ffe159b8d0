//! A todos replica: a `#[service]` over a store, served over REST and socket.io without
//! authentication and published on the mesh under the distribution key `todos`. The store is a
//! SQL database shared by every replica (`plume_sql::SqlService`: a SQLite file by default, or
//! PostgreSQL), or, with `--store memory`, a `MemoryService` of this replica alone.

use std::net::SocketAddr;

use plume::channels::{ANONYMOUS, AUTHENTICATED};
use plume::{App, ErrorKind, MemoryOptions, MemoryService, Params, Result, Service};
use plume_sql::{ColumnType, Database, IdGeneration, SqlService};
use plume_transport::distribution::Distribution;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// The path of the service, on the replicas and (as a proxy) on the gateway.
pub(crate) const PATH: &str = "todos";
/// The distribution key of the replicas.
pub(crate) const KEY: &str = "todos";

/// Where a replica keeps its todos.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Store {
    /// A SQL database shared by the replicas: a SQLite file (`sqlite://path`, or a bare path)
    /// or `postgres://…`.
    Sql(String),
    /// A `MemoryService` of this replica alone: gone when it stops.
    Memory,
}

/// A todo as stored and returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub(crate) struct Todo {
    /// The id: `<replica>-<random hex>`, so that ids never collide across replicas.
    pub(crate) id: String,
    /// What to do.
    pub(crate) text: String,
    /// Whether it is done.
    #[serde(default)]
    pub(crate) done: bool,
    /// The replica that created it.
    pub(crate) replica: String,
}

/// The data of a new todo.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewTodo {
    /// What to do.
    pub(crate) text: String,
    /// Whether it is done already.
    #[serde(default)]
    pub(crate) done: bool,
}

/// The fields a patch may change.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TodoPatch {
    /// New text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) text: Option<String>,
    /// New state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) done: Option<bool>,
}

/// How long a replica keeps trying to set up a store that answers `Unavailable` (busy).
const SETUP_WITHIN: std::time::Duration = std::time::Duration::from_secs(20);

/// The todos service of one replica.
pub(crate) struct Todos {
    replica: String,
    store: Box<dyn Service>,
}

impl Todos {
    /// The todos service of the replica `name` over `store`, with the replica's welcome todo
    /// (`<name>-1`) added when it is missing.
    ///
    /// Both replicas of the demo set up one new SQLite file at once; a write that meets the
    /// other's lock in a way SQLite cannot wait out (`SQLITE_BUSY`, an `Unavailable`) is tried
    /// again with a growing pause, for at most [`SETUP_WITHIN`].
    pub(crate) async fn new(replica: &str, store: &Store) -> Result<Self> {
        let deadline = tokio::time::Instant::now() + SETUP_WITHIN;
        let mut pause = std::time::Duration::from_millis(50);
        loop {
            match Self::open(replica, store).await {
                Err(err)
                    if err.kind() == ErrorKind::Unavailable
                        && tokio::time::Instant::now() + pause < deadline =>
                {
                    tracing::warn!(replica, %err, ?pause, "the store is not ready; trying again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_secs(1));
                }
                result => return result,
            }
        }
    }

    async fn open(replica: &str, store: &Store) -> Result<Self> {
        let store: Box<dyn Service> = match store {
            Store::Memory => Box::new(MemoryService::<Todo>::with_options(
                MemoryOptions::new().paginate(50, 100),
            )),
            Store::Sql(url) => {
                let db = Database::connect(url).await?;
                let sql = SqlService::<Todo>::builder(&db, "todos")
                    .id("id", IdGeneration::Uuid) // a text id; `create` below picks it
                    .column("text", ColumnType::String)
                    .column("done", ColumnType::Boolean)
                    .column("replica", ColumnType::String)
                    .paginate(50, 100)
                    .build()?;
                // Both replicas start at once: on PostgreSQL the one that loses the race to
                // create the table gets a Conflict, and the table is there.
                ignore_conflict(sql.create_table().await)?;
                Box::new(sql)
            }
        };
        let welcome = json!({
            "id": format!("{replica}-1"),
            "text": format!("Hello from {replica}"),
            "done": false,
            "replica": replica,
        });
        ignore_conflict(store.create(welcome, Params::new()).await)?;
        Ok(Self {
            replica: replica.to_owned(),
            store,
        })
    }

    /// `record` with `answeredBy` naming this replica (not stored: it says who answered).
    fn answered(&self, mut record: Value) -> Value {
        if let Value::Object(map) = &mut record {
            map.insert("answeredBy".into(), Value::String(self.replica.clone()));
        }
        record
    }
}

/// `Ok` also when `result` is a `Conflict`: what was to be made exists already.
fn ignore_conflict<T>(result: Result<T>) -> Result<()> {
    match result {
        Err(err) if err.kind() != ErrorKind::Conflict => Err(err),
        _ => Ok(()),
    }
}

// `record = Todo`: the API docs describe the results (`Value`, with `answeredBy` added) as
// todos, and `find` as a page of them.
#[plume::service(vis = pub(crate), record = Todo)]
impl Todos {
    /// A page of todos, with `replica` naming the replica that answered.
    async fn find(&self, params: Params) -> Result<Value> {
        let mut page = self.store.find(params).await?;
        if let Value::Object(map) = &mut page {
            map.insert("replica".into(), Value::String(self.replica.clone()));
        }
        Ok(page)
    }

    /// One todo, with `answeredBy` naming the replica that answered.
    async fn get(&self, id: String, params: Params) -> Result<Value> {
        Ok(self.answered(self.store.get(id.into(), params).await?))
    }

    /// A new todo, stored by this replica (its id starts with the replica's name).
    async fn create(&self, data: NewTodo, params: Params) -> Result<Value> {
        let random: u32 = rand::random();
        let record = json!({
            "id": format!("{}-{random:08x}", self.replica),
            "text": data.text,
            "done": data.done,
            "replica": self.replica,
        });
        Ok(self.answered(self.store.create(record, params).await?))
    }

    /// Change a todo's text or state.
    async fn patch(&self, id: String, data: TodoPatch, params: Params) -> Result<Value> {
        let fields: Map<String, Value> = match serde_json::to_value(data)? {
            Value::Object(map) => map,
            // invariant: a struct with named fields serializes to an object
            _ => Map::new(),
        };
        let patched = self
            .store
            .patch(Some(id.into()), Value::Object(fields), params);
        Ok(self.answered(patched.await?))
    }

    /// Remove a todo.
    async fn remove(&self, id: String, params: Params) -> Result<Value> {
        Ok(self.answered(self.store.remove(Some(id.into()), params).await?))
    }
}

/// The App of a replica: the todos service at [`PATH`] over `store`, and its events published
/// to every socket.io connection (this port has no authentication).
pub(crate) async fn replica_app(name: &str, store: &Store) -> Result<App> {
    let app = App::new();
    app.use_service(PATH, Todos::new(name, store).await?);
    app.publish(|_event, _app| vec![ANONYMOUS.to_owned(), AUTHENTICATED.to_owned()]);
    crate::gateway::observability(&app)?;
    Ok(app)
}

/// Run a replica until `stop` resolves: serve on `addr`, publish `todos` on the mesh (consuming
/// nothing), and print `todos <name> listening on http://<addr>` once both are up.
pub(crate) async fn run(
    name: &str,
    store: &Store,
    addr: SocketAddr,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let app = replica_app(name, store).await?;
    let server = app.listen(addr).await?;
    // PLUME_DISCOVERY=cote: join a feathers-distributed fleet instead of the Plume mesh.
    let _cote = if plume_cote::CoteConfig::selected() {
        Some(plume_cote::CoteNode::start(&app, cote_config()?).await?)
    } else {
        Distribution::from_env()?
            .key(KEY)
            .remote_services(false)
            .start(&app)
            .await?
            .mesh()
            .set_name(name);
        None
    };
    crate::say(&format!(
        "todos {name} listening on http://{}",
        server.local_addr()
    ));
    stop.await;
    tracing::info!(replica = name, "stopping");
    app.shutdown().await;
    Ok(())
}

/// The cote settings of a replica: the environment's, with the key `todos` unless `PLUME_KEY`
/// names another.
fn cote_config() -> anyhow::Result<plume_cote::CoteConfig> {
    let mut config = plume_cote::CoteConfig::from_env()?;
    if std::env::var("PLUME_KEY").map_or(true, |k| k.is_empty()) {
        config.key = KEY.to_owned();
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use plume::{Id, Provider};

    fn rest() -> Params {
        Params::new().with_provider(Provider::Rest)
    }

    #[tokio::test]
    async fn a_replica_mounts_exactly_the_todos_service_seeded_with_its_name() -> Result<()> {
        let app = replica_app("todos-x", &Store::Memory).await?;
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
        let app = replica_app("todos-y", &Store::Memory).await?;
        let todos = app.require(PATH)?;
        let a = todos.create(json!({"text": "one"}), rest()).await?;
        let b = todos.create(json!({"text": "two"}), rest()).await?;
        let a_id = a["id"].as_str().unwrap_or_default().to_owned();
        assert!(
            a_id.starts_with("todos-y-") && a_id.len() == "todos-y-".len() + 8,
            "{a}"
        );
        assert_ne!(a["id"], b["id"]);
        assert_eq!(
            a,
            json!({"id": a_id, "text": "one", "done": false, "replica": "todos-y",
                   "answeredBy": "todos-y"})
        );

        // A client cannot choose the replica, nor the id.
        let err = todos
            .create(json!({"text": "x", "replica": "other"}), rest())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadRequest);

        let patched = todos
            .patch(Some(Id::from(a_id.as_str())), json!({"done": true}), rest())
            .await?;
        assert_eq!(
            (&patched["done"], &patched["replica"]),
            (&json!(true), &json!("todos-y"))
        );
        let err = todos
            .patch(
                Some(Id::from(a_id.as_str())),
                json!({"replica": "z"}),
                rest(),
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadRequest);

        // In memory, a todo of another replica is not here.
        let err = todos
            .remove(Some(Id::from("todos-z-1")), rest())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        todos.remove(Some(Id::from(a_id.as_str())), rest()).await?;
        let page = todos.find(Params::new()).await?;
        assert_eq!(page["total"], 2);
        Ok(())
    }

    #[tokio::test]
    async fn replicas_over_one_sqlite_file_share_their_todos() -> Result<()> {
        let dir = tempfile::tempdir().map_err(plume::Error::internal)?;
        let store = Store::Sql(dir.path().join("todos.db").display().to_string());
        let a = replica_app("todos-a", &store).await?.require(PATH)?;
        let b = replica_app("todos-b", &store).await?.require(PATH)?;

        let created = a.create(json!({"text": "shared"}), rest()).await?;
        let id = Id::from(created["id"].as_str().unwrap_or_default());
        let got = b.get(id.clone(), rest()).await?;
        assert_eq!(
            (&got["text"], &got["replica"], &got["answeredBy"]),
            (&json!("shared"), &json!("todos-a"), &json!("todos-b"))
        );
        let patched = b
            .patch(Some(id.clone()), json!({"done": true}), rest())
            .await?;
        assert_eq!(patched["done"], true);
        assert_eq!(a.get(id.clone(), rest()).await?["done"], true);

        // A replica started again over the same file finds everything, welcome todos once.
        let a = replica_app("todos-a", &store).await?.require(PATH)?;
        let page = a.find(Params::new()).await?;
        let mut texts: Vec<&str> = page["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["text"].as_str())
            .collect();
        texts.sort_unstable();
        assert_eq!(
            texts,
            ["Hello from todos-a", "Hello from todos-b", "shared"]
        );

        a.remove(Some(id.clone()), rest()).await?;
        let err = b.get(id, rest()).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        Ok(())
    }
}
