//! Behaviour of `#[service]`: typed calls through an App, errors, custom methods, registration
//! and the typed client.

use std::collections::BTreeMap;
use std::sync::Mutex;

use plume::{App, ErrorKind, Id, Method, Params, Result, Service};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Todo {
    id: i64,
    title: String,
    done: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct NewTodo {
    title: String,
    #[serde(default)]
    done: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct TodoPatch {
    done: Option<bool>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ArchiveRequest {
    ids: Vec<i64>,
}

#[derive(Debug, Default)]
struct Todos {
    store: Mutex<BTreeMap<i64, Todo>>,
}

impl Todos {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<i64, Todo>> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[plume::service(path = "macro-todos", events = ["archived"])]
impl Todos {
    async fn find(&self, params: Params) -> Result<Vec<Todo>> {
        let only_done = params.query.get("done").and_then(Value::as_bool);
        Ok(self
            .lock()
            .values()
            .filter(|t| only_done.is_none_or(|d| t.done == d))
            .cloned()
            .collect())
    }

    async fn get(&self, id: i64, _params: Params) -> Result<Todo> {
        self.lock()
            .get(&id)
            .cloned()
            .ok_or_else(|| plume::Error::no_record(id))
    }

    async fn create(&self, data: NewTodo, _params: Params) -> Result<Todo> {
        let mut store = self.lock();
        let id = store.keys().next_back().map_or(1, |k| k + 1);
        let todo = Todo {
            id,
            title: data.title,
            done: data.done,
        };
        store.insert(id, todo.clone());
        Ok(todo)
    }

    async fn patch(&self, id: Option<i64>, data: TodoPatch) -> Result<Vec<Todo>> {
        let mut store = self.lock();
        let mut out = Vec::new();
        for todo in store
            .values_mut()
            .filter(|t| id.is_none_or(|id| t.id == id))
        {
            if let Some(done) = data.done {
                todo.done = done;
            }
            out.push(todo.clone());
        }
        Ok(out)
    }

    #[method]
    async fn archive(&self, data: ArchiveRequest, _params: Params) -> Result<usize> {
        let mut store = self.lock();
        let before = store.len();
        store.retain(|id, _| !data.ids.contains(id));
        Ok(before - store.len())
    }

    #[method(idempotent)]
    async fn count(&self, _data: Value) -> std::result::Result<usize, plume::Error> {
        Ok(self.lock().len())
    }
}

/// A service with only `get`, taking the id as a plain `Id`, and no registration.
#[derive(Debug, Default)]
struct Echo;

#[plume::service(vis = pub(crate))]
impl Echo {
    async fn get(&self, id: Id) -> Result<Value> {
        Ok(json!({ "id": id }))
    }
}

fn app_with_todos() -> (App, plume::ServiceHandle) {
    let app = App::new();
    let handle = app.use_service("todos", Todos::default());
    (app, handle)
}

#[tokio::test]
async fn typed_round_trip_through_an_app() {
    let (_app, todos) = app_with_todos();
    let created = todos
        .create(json!({"title": "write macro"}), Params::new())
        .await
        .unwrap();
    assert_eq!(
        created,
        json!({"id": 1, "title": "write macro", "done": false})
    );
    todos
        .create(json!({"title": "test it", "done": true}), Params::new())
        .await
        .unwrap();

    // An id from a URL is a string: "2" must reach `get(&self, id: i64)` as 2.
    let got = todos
        .get(Id::parse_segment("2"), Params::new())
        .await
        .unwrap();
    assert_eq!(got["title"], "test it");
    let got = todos.get(Id::Str("2".into()), Params::new()).await.unwrap();
    assert_eq!(got["id"], 2);

    let done = todos
        .find(Params::new().with_query(json!({"done": true})))
        .await
        .unwrap();
    assert_eq!(done, json!([{"id": 2, "title": "test it", "done": true}]));

    // patch without params, with an optional id: one record, then all.
    let patched = todos
        .patch(Some(Id::Int(1)), json!({"done": true}), Params::new())
        .await;
    assert_eq!(patched.unwrap().as_array().map(Vec::len), Some(1));
    let all = todos
        .patch(None, json!({"done": false}), Params::new())
        .await
        .unwrap();
    assert_eq!(all.as_array().map(Vec::len), Some(2));

    let err = todos.get(Id::Int(9), Params::new()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn bad_data_is_a_bad_request_naming_the_field() {
    let (_app, todos) = app_with_todos();
    let err = todos
        .create(json!({"title": 42}), Params::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadRequest);
    assert!(err.message().contains("title"), "{}", err.message());

    let err = todos
        .create(json!({"done": true}), Params::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadRequest);
    assert!(err.message().contains("title"), "{}", err.message());

    let err = todos
        .call("archive", json!({"ids": [1, "x"]}), Params::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadRequest);
    assert!(err.message().contains("ids[1]"), "{}", err.message());

    let err = todos
        .get(Id::Str("abc".into()), Params::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadRequest);
}

#[tokio::test]
async fn methods_it_does_not_define_are_not_allowed() {
    let (_app, todos) = app_with_todos();
    let err = todos.update(1, json!({}), Params::new()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MethodNotAllowed);
    let err = todos.remove(None, Params::new()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MethodNotAllowed);
    let err = todos
        .call("explode", json!({}), Params::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MethodNotAllowed);

    // Also straight on the trait, without the App in between.
    let svc = Todos::default();
    let err = Service::remove(&svc, None, Params::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MethodNotAllowed);
    let err = Service::call(&svc, "explode", json!({}), Params::new())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MethodNotAllowed);
    let err = Service::find(&Echo, Params::new()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MethodNotAllowed);
}

#[tokio::test]
async fn methods_events_and_options_are_declared() {
    let svc = Todos::default();
    assert_eq!(
        svc.methods(),
        vec![
            Method::Find,
            Method::Get,
            Method::Create,
            Method::Patch,
            Method::Custom("archive".into()),
            Method::Custom("count".into()),
        ]
    );
    assert_eq!(svc.events(), vec!["archived".to_owned()]);
    assert_eq!(svc.options(), json!({"idempotentMethods": ["count"]}));
    assert_eq!(Echo.methods(), vec![Method::Get]);
    assert!(Echo.events().is_empty());
    assert_eq!(Echo.options(), Value::Null);
}

#[tokio::test]
async fn custom_methods_are_routed_by_name() {
    let (_app, todos) = app_with_todos();
    for title in ["a", "b", "c"] {
        todos
            .create(json!({ "title": title }), Params::new())
            .await
            .unwrap();
    }
    let archived = todos
        .call("archive", json!({"ids": [1, 3]}), Params::new())
        .await
        .unwrap();
    assert_eq!(archived, json!(2));
    assert_eq!(
        todos
            .call("count", Value::Null, Params::new())
            .await
            .unwrap(),
        json!(1)
    );
    let left = todos.find(Params::new()).await.unwrap();
    assert_eq!(left, json!([{"id": 2, "title": "b", "done": false}]));
}

#[tokio::test]
async fn registration_is_picked_up_by_use_registered() {
    let registered = plume::registry::registered();
    let reg = registered
        .iter()
        .find(|r| r.path == "macro-todos")
        .expect("Todos is registered");
    assert_eq!(reg.type_name, "Todos");

    let app = App::new();
    let mounted = app.use_registered();
    assert!(mounted.iter().any(|p| p == "macro-todos"), "{mounted:?}");
    let handle = app.service("macro-todos").expect("mounted");
    let created = handle
        .create(json!({"title": "registered"}), Params::new())
        .await
        .unwrap();
    assert_eq!(created["id"], 1);
    assert!(handle.methods().contains(&Method::Custom("archive".into())));
}

/// `app.client::<TodosClient>()` finds the service at the path `#[service(path = ..)]` gave.
#[tokio::test]
async fn a_typed_client_by_type_from_the_app() {
    use plume::ServiceClient;

    assert_eq!(TodosClient::PATH, "macro-todos");
    let app = App::new();
    let err = app
        .client::<TodosClient>()
        .expect_err("nothing mounted yet");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(err.message(), "Service 'macro-todos' not found");

    app.use_registered();
    let todos = app.client::<TodosClient>().expect("mounted");
    assert_eq!(todos.handle().path(), "macro-todos");
    let todo: Todo = todos
        .create(
            NewTodo {
                title: "by type".into(),
                done: false,
            },
            Params::new(),
        )
        .await
        .unwrap();
    assert_eq!(todos.get(todo.id, Params::new()).await.unwrap(), todo);
}

#[tokio::test]
async fn typed_client_has_the_service_signatures() {
    let (_app, handle) = app_with_todos();
    let client = TodosClient::new(handle);
    let todo: Todo = client
        .create(
            NewTodo {
                title: "typed".into(),
                done: false,
            },
            Params::new(),
        )
        .await
        .unwrap();
    assert_eq!(
        todo,
        Todo {
            id: 1,
            title: "typed".into(),
            done: false
        }
    );
    client
        .create(
            NewTodo {
                title: "two".into(),
                done: true,
            },
            Params::new(),
        )
        .await
        .unwrap();

    assert_eq!(client.get(2, Params::new()).await.unwrap().title, "two");
    let done = client
        .find(Params::new().with_query(json!({"done": true})))
        .await
        .unwrap();
    assert_eq!(done.len(), 1);
    let patched = client
        .patch(Some(1), TodoPatch { done: Some(true) })
        .await
        .unwrap();
    assert!(patched[0].done);
    assert_eq!(
        client
            .archive(ArchiveRequest { ids: vec![1] }, Params::new())
            .await
            .unwrap(),
        1
    );
    assert_eq!(client.count(Value::Null).await.unwrap(), 1);
    assert_eq!(client.handle().path(), "todos");

    let err = client.get(7, Params::new()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);

    let echo = EchoClient::new(App::new().use_service("echo", Echo));
    assert_eq!(echo.get(Id::from("x")).await.unwrap(), json!({"id": "x"}));
}
