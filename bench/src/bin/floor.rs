//! The plain-axum floor: `GET /todos` answers the page the demo's todos replica answers to a
//! `find`, `POST /todos` answers a created todo. No framework beyond axum.
//!
//! Usage: `floor PORT` (127.0.0.1 only).

use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

async fn find() -> Json<Value> {
    Json(json!({
        "total": 1, "limit": 10, "skip": 0,
        "data": [{"id": 1, "text": "Hello from todos-a", "done": false, "replica": "todos-a"}]
    }))
}

async fn create(Json(data): Json<Value>) -> Json<Value> {
    Json(json!({"id": 2, "text": data["text"], "done": false, "replica": "todos-a"}))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .map(|p| p.parse())
        .transpose()?
        .unwrap_or(0);
    let app = Router::new().route("/todos", get(find).post(create));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    eprintln!("floor listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
