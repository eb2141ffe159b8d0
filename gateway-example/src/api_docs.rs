//! The demo's API docs: the gateway serves the OpenAPI document of its services (its own
//! `users` and `authentication`, and the remote `todos` as the replicas describe them) at
//! `/docs/openapi.json`, with a page at `/docs`.

use plume::docs::DocsOptions;

/// What the gateway's document says about itself.
pub(crate) fn options() -> DocsOptions {
    DocsOptions::new()
        .title("Plume gateway demo")
        .version(env!("CARGO_PKG_VERSION"))
        .description(
            "The demo's gateway: `users` and `authentication` of its own, and the `todos` \
             service of the replicas, reached over the mesh behind a JWT (log in with \
             `POST /authentication`).",
        )
}

/// The OpenAPI 3.1 validation of core's tests (the official schema, vendored there).
/// The TypeScript declarations of the services a client of the gateway sees: the gateway's
/// own and the replicas' `todos`, as `feathers<ServiceTypes>()` of `@feathersjs/feathers` takes
/// them. Made from in-process Apps (a memory replica; nothing is served or joined).
pub(crate) async fn client_types() -> anyhow::Result<String> {
    let gateway = crate::gateway::gateway_app().await?;
    let replica = crate::todos::replica_app("todos", &crate::todos::Store::Memory).await?;
    let mut services = gateway.service_schemas();
    services.extend(replica.service_schemas());
    services.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(plume::docs::typescript(&services))
}

#[cfg(test)]
#[path = "../../core/tests/support/openapi.rs"]
mod openapi;

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use plume_transport::distribution::Distribution;
    use serde_json::{Value, json};

    use super::openapi::{assert_response_matches, assert_valid_openapi};
    use crate::gateway::{DEMO_EMAIL, DEMO_PASSWORD, gateway_app};
    use crate::http::request;
    use crate::todos::{Store, replica_app};

    const WAIT: Duration = Duration::from_secs(10);

    /// A gateway and one replica on a mesh of their own, the gateway served on loopback.
    async fn demo(environment: &str) -> anyhow::Result<(plume::App, plume::App, SocketAddr)> {
        let replica = replica_app("todos-a", &Store::Memory).await?;
        Distribution::new()
            .environment(environment)
            .key(crate::todos::KEY)
            .remote_services(false)
            .start(&replica)
            .await?;
        let gateway = gateway_app().await?;
        let server = gateway.listen("127.0.0.1:0").await?;
        let handle = Distribution::new()
            .environment(environment)
            .key(crate::gateway::KEY)
            .services(false)
            .hooks(|hooks| {
                hooks.before(plume::auth::authenticate(["jwt"]));
            })
            .start(&gateway)
            .await?;
        tokio::time::timeout(WAIT, handle.remote_ready(crate::todos::PATH)).await?;
        Ok((replica, gateway, server.local_addr()))
    }

    #[tokio::test]
    async fn client_types_declare_every_service_a_client_of_the_gateway_sees() -> anyhow::Result<()>
    {
        let ts = super::client_types().await?;
        for line in [
            "export interface ServiceTypes {",
            "'todos': TodosService;",
            "'users': UsersService;",
            "'authentication': AuthenticationService;",
            "create(data: NewTodo, params?: Params): Promise<Todo>;",
            "get(id: string, params?: Params): Promise<Todo>;",
            "find(params?: Params): Promise<Todo[] | Paginated<Todo>>;",
            "export interface TodoPatch {",
        ] {
            assert!(ts.contains(line), "no `{line}` in\n{ts}");
        }
        // What the todos service does not offer is not declared (update).
        assert!(!ts.contains("update("), "{ts}");
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_gateway_documents_its_own_and_the_remote_services_and_they_answer_as_documented()
    -> anyhow::Result<()> {
        let environment = format!("docs-demo-{}", std::process::id());
        let (_replica, gateway, addr) = demo(&environment).await?;

        let (status, doc) = request(addr, "GET", "/docs/openapi.json", None, None).await?;
        assert_eq!(status, 200);
        assert_valid_openapi(&doc);
        assert_eq!(doc["info"]["title"], "Plume gateway demo");
        // The remote todos, with the replicas' types: the merged document.
        let tags: Vec<&str> = doc["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["name"].as_str())
            .collect();
        assert_eq!(
            tags,
            [
                "authentication",
                "distribution/healthcheck",
                "distribution/mesh",
                "todos",
                "users"
            ]
        );
        assert_eq!(
            doc["paths"]["/todos"]["post"]["requestBody"]["content"]["application/json"]["schema"]
                ["$ref"],
            "#/components/schemas/NewTodo"
        );
        assert_eq!(
            doc["paths"]["/todos/{id}"]["get"]["parameters"][0]["schema"]["type"],
            "string"
        );
        assert!(doc["components"]["schemas"]["Todo"].is_object());
        // users offers find and get only.
        assert!(doc["paths"]["/users"].get("post").is_none());
        assert!(doc["paths"]["/users/{id}"]["get"].is_object());
        assert!(doc.to_string().len() < 200_000, "a sane size");
        drop(gateway);

        // Real answers through the gateway validate against the document.
        let login = json!({"strategy": "local", "email": DEMO_EMAIL, "password": DEMO_PASSWORD});
        let (status, auth) = request(addr, "POST", "/authentication", None, Some(&login)).await?;
        assert_eq!(status, 201);
        let token = auth["accessToken"].as_str().unwrap_or_default().to_owned();
        let token = Some(token.as_str());

        let new = json!({"text": "document the API"});
        let (status, created) = request(addr, "POST", "/todos", token, Some(&new)).await?;
        assert_eq!(status, 201, "{created}");
        assert_response_matches(&doc, "/todos", "post", 201, &created);
        let id = created["id"].as_str().unwrap_or_default().to_owned();
        let (status, page) = request(addr, "GET", "/todos", token, None).await?;
        assert_eq!(status, 200);
        assert_eq!(page["total"], 2, "{page}");
        assert_response_matches(&doc, "/todos", "get", 200, &page);
        let (status, got) = request(addr, "GET", &format!("/todos/{id}"), token, None).await?;
        assert_eq!(status, 200);
        assert_response_matches(&doc, "/todos/{id}", "get", 200, &got);
        let patch = json!({"done": true});
        let at = format!("/todos/{id}");
        let (status, patched) = request(addr, "PATCH", &at, token, Some(&patch)).await?;
        assert_eq!(status, 200);
        assert_response_matches(&doc, "/todos/{id}", "patch", 200, &patched);
        let (status, removed) = request(addr, "DELETE", &at, token, None).await?;
        assert_eq!(status, 200);
        assert_response_matches(&doc, "/todos/{id}", "delete", 200, &removed);

        // Errors: as documented, Feathers errors.
        let (status, error) = request(addr, "GET", "/todos", None, None).await?;
        assert_eq!(status, 401);
        assert_response_matches(&doc, "/todos", "get", 401, &error);
        let bad = json!({"text": "x", "replica": "other"});
        let (status, error) = request(addr, "POST", "/todos", token, Some(&bad)).await?;
        assert_eq!(status, 400);
        assert_response_matches(&doc, "/todos", "post", 400, &error);
        let (status, error) = request(addr, "GET", &at, token, None).await?;
        assert_eq!(status, 404);
        assert_response_matches(&doc, "/todos/{id}", "get", 404, &error);

        // A todo is not a page: the schemas do tell them apart.
        let not_a_page: Value = got.clone();
        let refused = std::panic::catch_unwind(|| {
            assert_response_matches(&doc, "/todos", "get", 200, &not_a_page)
        });
        assert!(refused.is_err());
        Ok(())
    }
}
