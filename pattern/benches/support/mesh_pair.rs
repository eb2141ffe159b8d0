//! The two mesh nodes of the mesh benchmarks, shared by `benches/pattern.rs` and
//! `examples/mesh_count.rs` (both include it with `#[path]`): node `a` answers the plain endpoint
//! `plain.add` and the pattern `{topic:'math',cmd:'add'}`; node `b` calls them.

use std::time::{Duration, Instant};

use plume_pattern::{Hemera, HemeraError, Options, Req, typed};
use plume_transport::{Mesh, Request};
use serde::Deserialize;
use serde_json::json;

/// The typed payload of the `add` pattern.
#[derive(Deserialize)]
pub(crate) struct Add {
    pub(crate) a: f64,
    pub(crate) b: f64,
}

/// Start nodes `a` and `b` on a private environment and wait, at most `meet_within`, until
/// `b` sees both of `a`'s endpoints: `(a, b, responder on a, caller on b)`.
pub(crate) async fn mesh_pair(meet_within: Duration) -> (Mesh, Mesh, Hemera, Hemera) {
    let env = format!("pattern-bench-{}", std::process::id());
    let start = |key: &'static str| {
        Mesh::builder()
            .environment(env.clone())
            .key(key)
            .secret(None::<&str>)
            .start()
    };
    let (a, b) = (
        start("a").await.expect("mesh"),
        start("b").await.expect("mesh"),
    );
    a.respond("plain.add", |r: Request| async move {
        Ok(json!(
            r.body["a"].as_f64().unwrap_or(0.0) + r.body["b"].as_f64().unwrap_or(0.0)
        ))
    });
    let responder = Hemera::mesh(a.clone(), Options::default());
    responder
        .add(
            json!({"topic": "math", "cmd": "add"}),
            typed(|p: Add, _r: Req| async move { Ok::<_, HemeraError>(p.a + p.b) }),
        )
        .await
        .expect("add");
    let caller = Hemera::mesh(b.clone(), Options::default());
    let deadline = Instant::now() + meet_within;
    while b.providers("plain.add").is_empty() || b.providers("hemera.math").is_empty() {
        assert!(Instant::now() < deadline, "the mesh nodes never met");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (a, b, responder, caller)
}
