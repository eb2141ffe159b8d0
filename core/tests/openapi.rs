//! The OpenAPI document generated from `#[service]`: valid OpenAPI 3.1 (checked against the
//! official schema, vendored), served at `/docs/openapi.json` with a page at `/docs` only when
//! enabled, and describing the real responses of the services it documents.

#[path = "support/http.rs"]
mod http;
#[path = "support/openapi.rs"]
mod openapi;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Mutex;

use plume::docs::{DocsOptions, Page};
use plume::{App, Error, MemoryService, Params, Result};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use openapi::{assert_response_matches, assert_valid_openapi};

/// A todo.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
struct Todo {
    id: i64,
    text: String,
    done: bool,
}

/// The data of a new todo.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct NewTodo {
    text: String,
}

/// What `archive` takes.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct Archive {
    done_only: bool,
}

#[derive(Default)]
struct Todos {
    items: Mutex<Vec<Todo>>,
}

impl Todos {
    fn items(&self) -> std::sync::MutexGuard<'_, Vec<Todo>> {
        self.items.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[plume::service]
impl Todos {
    /// Every todo, a page at a time.
    async fn find(&self) -> Result<Page<Todo>> {
        let data = self.items().clone();
        Ok(Page {
            total: data.len() as u64,
            limit: 10,
            skip: 0,
            data,
        })
    }

    async fn get(&self, id: i64) -> Result<Todo> {
        self.items()
            .iter()
            .find(|t| t.id == id)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("No record found for id '{id}'")))
    }

    async fn create(&self, data: NewTodo) -> Result<Todo> {
        let mut items = self.items();
        let todo = Todo {
            id: items.len() as i64 + 1,
            text: data.text,
            done: false,
        };
        items.push(todo.clone());
        Ok(todo)
    }

    /// Remove one todo, or every todo when no id is given.
    async fn remove(&self, id: Option<i64>) -> Result<Vec<Todo>> {
        let mut items = self.items();
        let (gone, kept) = items
            .drain(..)
            .partition(|t| id.is_none_or(|id| t.id == id));
        *items = kept;
        Ok(gone)
    }

    /// Archive the todos: answers how many.
    #[method]
    async fn archive(&self, data: Archive) -> Result<u32> {
        let n = self
            .items()
            .iter()
            .filter(|t| t.done || !data.done_only)
            .count();
        Ok(n as u32)
    }
}

/// Types without `JsonSchema`: the service still compiles, and is documented as any JSON.
#[derive(Debug, Serialize, Deserialize)]
struct Plain {
    word: String,
}

struct Echo;

#[plume::service]
impl Echo {
    async fn create(&self, data: Plain) -> Result<Plain> {
        Ok(data)
    }
}

/// A service of `Value`s that names its record type.
struct Notes;

#[plume::service(record = Todo)]
impl Notes {
    async fn find(&self, _params: Params) -> Result<Value> {
        Ok(json!([{ "id": 1, "text": "a note", "done": false }]))
    }
    async fn get(&self, id: i64) -> Result<Value> {
        Ok(json!({ "id": id, "text": "a note", "done": true }))
    }
}

fn app() -> App {
    let app = App::new();
    app.use_service("todos", Todos::default());
    app.use_service("echo", Echo);
    app.use_service("notes", Notes);
    app.use_service("users/:userId/memos", MemoryService::<Value>::new());
    app
}

async fn send(server: SocketAddr, head: &str, body: &str) -> (u16, String) {
    let mut stream = http::connect_from(Ipv4Addr::LOCALHOST.into(), server).await;
    let request = format!(
        "{head}\r\nHost: {server}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut raw)
        .await
        .expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = http::parse_response(&raw).0;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

async fn call(server: SocketAddr, method: &str, path: &str, body: &Value) -> (u16, Value) {
    http::request_from(Ipv4Addr::LOCALHOST.into(), server, method, path, body).await
}

#[test]
fn the_document_is_valid_openapi_3_1_and_describes_every_method() {
    let doc = app().openapi(&DocsOptions::new().title("Test API").version("0.1.0"));
    assert_valid_openapi(&doc);
    assert_eq!(
        doc["info"],
        json!({ "title": "Test API", "version": "0.1.0" })
    );

    let paths = &doc["paths"];
    let todos = &paths["/todos"];
    // find: the page shape, the query syntax.
    let find = &todos["get"];
    assert_eq!(find["description"], "Every todo, a page at a time.");
    let names: Vec<&str> = find["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(names, ["$limit", "$skip", "$sort", "$select", "query"]);
    let page_ref = find["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
        .as_str()
        .unwrap_or_default();
    let page = doc
        .pointer(page_ref.trim_start_matches('#'))
        .unwrap_or(&Value::Null);
    assert_eq!(
        page["required"],
        json!(["total", "limit", "skip", "data"]),
        "{page:#}"
    );
    // create: data and result types, 201.
    let create = &todos["post"];
    assert_eq!(
        create["requestBody"]["content"]["application/json"]["schema"],
        json!({ "$ref": "#/components/schemas/NewTodo" })
    );
    assert!(create["responses"]["201"].is_object());
    // get: an integer id in the path, and a 404.
    let get = &paths["/todos/{id}"]["get"];
    assert_eq!(get["parameters"][0]["schema"]["type"], "integer");
    assert_eq!(
        get["responses"]["404"]["$ref"],
        "#/components/responses/NotFound"
    );
    // remove with an optional id: one at /todos/{id}, many at /todos.
    assert!(paths["/todos/{id}"]["delete"].is_object());
    assert_eq!(todos["delete"]["operationId"], "todos.removeMany");
    // No update, no patch: not offered.
    assert!(paths["/todos/{id}"].get("put").is_none());
    assert!(paths["/todos/{id}"].get("patch").is_none());
    // The custom method: POST with the X-Service-Method header.
    let archive = &paths["/todos#archive"]["post"];
    assert_eq!(archive["parameters"][0]["name"], "X-Service-Method");
    assert_eq!(archive["parameters"][0]["schema"]["const"], "archive");
    assert_eq!(
        archive["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/Archive"
    );

    // Types without JsonSchema: any JSON.
    let echo = &paths["/echo"]["post"];
    assert_eq!(
        echo["requestBody"]["content"]["application/json"]["schema"],
        json!({})
    );
    // The record type describes Value results: find as a list or a page.
    let notes_find = &paths["/notes"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        ["oneOf"];
    assert_eq!(notes_find[0]["items"]["$ref"], "#/components/schemas/Todo");
    assert_eq!(
        notes_find[1]["properties"]["data"]["items"]["$ref"],
        "#/components/schemas/Todo"
    );
    // A memory service on a route with a placeholder: every standard method, untyped.
    let memos = &paths["/users/{userId}/memos/{id}"];
    assert_eq!(memos["parameters"][0]["name"], "userId");
    for verb in ["get", "put", "patch", "delete"] {
        assert!(memos[verb].is_object(), "{verb} of memos");
    }
}

#[test]
fn a_document_that_breaks_the_openapi_schema_is_refused() {
    // The validator is real: it refuses a document with a wrong version and a bad path item.
    let mut doc = app().openapi(&DocsOptions::new());
    doc["openapi"] = json!("3.0.0");
    let refused = std::panic::catch_unwind(|| assert_valid_openapi(&doc));
    assert!(refused.is_err());
    let mut doc = app().openapi(&DocsOptions::new());
    doc["paths"]["/todos"]["get"]["parameters"][0]["in"] = json!("body");
    assert!(std::panic::catch_unwind(|| assert_valid_openapi(&doc)).is_err());
}

#[tokio::test]
async fn docs_are_served_only_when_enabled_and_match_the_real_responses() {
    // Off by default: the paths are the REST fallback's 404s.
    let plain = app();
    let server = plain.listen("127.0.0.1:0").await.expect("listen");
    let (status, _) = call(
        server.local_addr(),
        "GET",
        "/docs/openapi.json",
        &Value::Null,
    )
    .await;
    assert_eq!(status, 404);
    server.shutdown().await;

    let app = app();
    app.enable_docs(DocsOptions::new().title("Served"));
    let server = app.listen("127.0.0.1:0").await.expect("listen");
    let addr = server.local_addr();

    let (status, doc) = call(addr, "GET", "/docs/openapi.json", &Value::Null).await;
    assert_eq!(status, 200);
    assert_eq!(doc["info"]["title"], "Served");
    assert_valid_openapi(&doc);

    // The page: ours, self-contained (no script or style from elsewhere).
    let (status, page) = send(addr, "GET /docs HTTP/1.1", "").await;
    assert_eq!(status, 200);
    assert!(page.contains("openapi.json"), "{page}");
    assert!(
        !page.contains("src=\"http") && !page.contains("href=\"http"),
        "{page}"
    );

    // Real responses validate against the document's schemas.
    let (status, created) = call(addr, "POST", "/todos", &json!({ "text": "write docs" })).await;
    assert_eq!(status, 201);
    assert_response_matches(&doc, "/todos", "post", 201, &created);
    let (status, got) = call(addr, "GET", "/todos/1", &Value::Null).await;
    assert_eq!(status, 200);
    assert_response_matches(&doc, "/todos/{id}", "get", 200, &got);
    let (status, page) = call(addr, "GET", "/todos?$limit=5", &Value::Null).await;
    assert_eq!(status, 200);
    assert_response_matches(&doc, "/todos", "get", 200, &page);
    let (status, notes) = call(addr, "GET", "/notes", &Value::Null).await;
    assert_eq!(status, 200);
    assert_response_matches(&doc, "/notes", "get", 200, &notes);
    let (status, body) = send(
        addr,
        "POST /todos HTTP/1.1\r\nX-Service-Method: archive",
        r#"{"done_only": false}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let archived: Value = serde_json::from_str(&body).expect("JSON");
    assert_response_matches(&doc, "/todos#archive", "post", 200, &archived);
    // And they are checked for real: a todo is not what `archive` answers.
    let wrong = std::panic::catch_unwind(|| {
        assert_response_matches(&doc, "/todos#archive", "post", 200, &got)
    });
    assert!(wrong.is_err());

    // Errors are Feathers errors, as documented.
    let (status, error) = call(addr, "GET", "/todos/99", &Value::Null).await;
    assert_eq!(status, 404);
    assert_response_matches(&doc, "/todos/{id}", "get", 404, &error);
    let (status, error) = call(addr, "POST", "/todos", &json!({ "nope": 1 })).await;
    assert_eq!(status, 400);
    assert_response_matches(&doc, "/todos", "post", 400, &error);

    let (status, removed) = call(addr, "DELETE", "/todos", &Value::Null).await;
    assert_eq!(status, 200);
    assert_response_matches(&doc, "/todos", "delete", 200, &removed);
    server.shutdown().await;
}

/// The page at `/docs`, in a real browser: it loads the document and lists every operation.
#[tokio::test]
async fn the_docs_page_renders_the_document_in_headless_chromium() {
    let app = app();
    app.enable_docs(DocsOptions::new().title("Rendered").version("9.9.9"));
    let server = app.listen("127.0.0.1:0").await.expect("listen");
    let chromium = std::env::var("PLUME_CHROMIUM").unwrap_or_else(|_| "chromium".to_owned());
    let profile = std::env::temp_dir().join(format!("plume-docs-chromium-{}", std::process::id()));
    let run = tokio::process::Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("http://{}/docs", server.local_addr()))
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(60), run)
        .await
        .expect("chromium finishes within a minute")
        .unwrap_or_else(|e| panic!("{chromium} is needed for this test (PLUME_CHROMIUM): {e}"));
    let _ = std::fs::remove_dir_all(&profile);
    let dom = String::from_utf8_lossy(&output.stdout);
    for rendered in [
        "<h1 id=\"title\">Rendered</h1>",
        "version 9.9.9 · OpenAPI 3.1.0",
        "id=\"service-todos\"",
        "<code>/todos#archive</code>",
        "<code>/todos/{id}</code>",
        "id=\"service-users/:userId/memos\"",
        "Every todo, a page at a time.",
        "#/components/schemas/NewTodo",
    ] {
        assert!(
            dom.contains(rendered),
            "no `{rendered}` in the rendered page:\n{dom}"
        );
    }
    server.shutdown().await;
}
