//! API docs across the mesh: a provider publishes its service's schemas with the descriptor,
//! and the consumer's OpenAPI document describes the remote service like a local one.

use std::time::Duration;

use plume::docs::{DocsOptions, Page};
use plume::schemars::JsonSchema;
use plume::{App, Result};
use plume_transport::distribution::Distribution;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(10);

/// A todo.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(crate = "plume::schemars")]
struct Todo {
    id: u32,
    text: String,
}

struct Todos;

#[plume::service]
impl Todos {
    /// Every todo.
    async fn find(&self) -> Result<Page<Todo>> {
        Ok(Page {
            total: 0,
            limit: 10,
            skip: 0,
            data: Vec::new(),
        })
    }
    async fn get(&self, id: u32) -> Result<Todo> {
        Ok(Todo {
            id,
            text: "remote".into(),
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_documents_the_remote_service_with_its_providers_schemas() {
    let environment = format!(
        "docs-{}-{:?}",
        std::process::id(),
        std::time::Instant::now()
    );
    let provider = App::new();
    provider.use_service("todos", Todos);
    let _p = Distribution::new()
        .environment(&environment)
        .key("todos")
        .remote_services(false)
        .start(&provider)
        .await
        .expect("the provider starts");

    let gateway = App::new();
    let (tx, mut added) = mpsc::channel(16);
    gateway.on_service_added(move |h| {
        let _ = tx.try_send(h.path().to_owned());
    });
    let g = Distribution::new()
        .environment(&environment)
        .key("gateway")
        .services(false)
        .start(&gateway)
        .await
        .expect("the gateway starts");
    let mounted = timeout(WAIT, async {
        while let Some(path) = added.recv().await {
            if path == "todos" {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(mounted, Ok(true), "the proxy is mounted");
    timeout(WAIT, g.remote_ready("todos"))
        .await
        .expect("the proxy is ready");

    // The proxy describes itself as the provider does.
    let proxy = gateway.service("todos").expect("mounted");
    let local = provider.service("todos").expect("local");
    assert_eq!(proxy.service().schema(), local.service().schema());

    let doc = gateway.openapi(&DocsOptions::new());
    let get = &doc["paths"]["/todos/{id}"]["get"];
    assert_eq!(get["parameters"][0]["schema"]["type"], "integer");
    assert_eq!(
        get["responses"]["200"]["content"]["application/json"]["schema"],
        json!({ "$ref": "#/components/schemas/Todo" })
    );
    assert_eq!(doc["paths"]["/todos"]["get"]["description"], "Every todo.");
    assert_eq!(
        doc["components"]["schemas"]["Todo"]["required"],
        json!(["id", "text"])
    );
    // Only what the provider offers.
    assert!(doc["paths"]["/todos"].get("post").is_none());
}
