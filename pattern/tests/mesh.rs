//! The pattern API on the Plume TCP mesh (loopback discovery, real sockets, no NATS): the same
//! matching, options, errors and bad-input handling as on NATS.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use plume_pattern::{Hemera, HemeraError, Options, Pattern, Req, typed};
use plume_transport::{CallOptions, Mesh};
use regex::Regex;
use serde::Deserialize;
use serde_json::{Value, json};

fn unique_env(test: &str) -> String {
    format!("pattern-{test}-{}", std::process::id())
}

async fn mesh_node(env: &str, key: &str) -> Mesh {
    Mesh::builder()
        .environment(env)
        .key(key)
        .secret(None::<&str>)
        .start()
        .await
        .expect("mesh node")
}

fn options(name: &str) -> Options {
    Options {
        name: name.into(),
        ..Options::default()
    }
}

/// Act until the pattern's node is reachable (the mesh links up in the background), then once
/// more: the first act that does not time out.
async fn first_reply(node: &Hemera, message: Value) -> Result<Value, HemeraError> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = node.act(message.clone()).await;
        match &out {
            Err(e) if e.name == "TimeoutError" && Instant::now() < deadline => continue,
            _ => return out,
        }
    }
}

#[derive(Deserialize)]
struct Add {
    a: f64,
    b: f64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pattern_api_works_across_the_mesh() {
    let env = unique_env("api");
    let (ma, mb) = (mesh_node(&env, "a").await, mesh_node(&env, "b").await);
    let server = Hemera::mesh(ma.clone(), options("srv"));
    let caller = Hemera::mesh(mb.clone(), options("caller"));

    server
        .add(
            json!({"topic": "math", "cmd": "add"}),
            typed(|p: Add, _r: Req| async move { Ok::<_, HemeraError>(p.a + p.b) }),
        )
        .await
        .expect("add");
    server
        .add(
            json!({"topic": "math", "cmd": "add", "kind": "int"}),
            |r: Req| async move {
                let p: Add = r.payload()?;
                Ok(json!({"int": (p.a + p.b) as i64}))
            },
        )
        .await
        .expect("add");
    let re = Pattern::new(&json!({"topic": "math"}))
        .and_then(|p| p.regex("cmd", Regex::new("^fail").expect("regex")))
        .expect("pattern");
    server
        .add_pattern(re, |r: Req| async move {
            Err::<Value, _>(
                HemeraError::new("BusinessError", format!("{} refused", r.pattern()["cmd"]))
                    .with_code(409)
                    .with_data(json!({"why": "test"})),
            )
        })
        .await
        .expect("add");
    server
        .add(
            json!({"topic": "math", "cmd": "slow"}),
            |_r: Req| async move {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(Value::Null)
            },
        )
        .await
        .expect("add");
    server
        .add(
            json!({"topic": "math", "cmd": "ctx"}),
            |r: Req| async move {
                let inner = r.act(json!({"topic": "echo", "cmd": "ctx"})).await?;
                Ok(
                    json!({"meta": r.meta, "delegate": r.delegate, "trace": r.trace_id,
                      "span": r.span_id, "inner": inner}),
                )
            },
        )
        .await
        .expect("add");
    caller
        .add(
            json!({"topic": "echo", "cmd": "ctx"}),
            |r: Req| async move {
                Ok(
                    json!({"meta": r.meta, "delegate": r.delegate, "trace": r.trace_id,
                      "span": r.span_id}),
                )
            },
        )
        .await
        .expect("add");

    let sum = first_reply(
        &caller,
        json!({"topic": "math", "cmd": "add", "a": 1, "b": 2}),
    )
    .await
    .expect("sum");
    assert_eq!(sum, json!(3.0));
    // the most specific pattern wins
    let int: Value = caller
        .act_as(&json!({"topic": "math", "cmd": "add", "kind": "int", "a": 1.5, "b": 2}))
        .await
        .expect("int");
    assert_eq!(int, json!({"int": 3}));
    // a handler's error keeps name, message, code, data; hops name the server
    let e = caller
        .act(json!({"topic": "math", "cmd": "failing"}))
        .await
        .expect_err("fails");
    assert_eq!(
        (e.name.as_str(), e.message.as_str()),
        ("BusinessError", "\"failing\" refused")
    );
    assert_eq!(e.code(), Some(&json!(409)));
    assert_eq!(e.data(), Some(&json!({"why": "test"})));
    assert_eq!(e.props["hops"][0]["app"], json!("srv"));
    // the typed payload names the bad field
    let e = caller
        .act(json!({"topic": "math", "cmd": "add", "a": "x", "b": 2}))
        .await
        .expect_err("invalid");
    assert_eq!(e.name, "PayloadValidationError");
    assert_eq!(e.props["field"], json!("a"));
    assert!(e.message.contains("`a`"), "{}", e.message);
    // no match
    let e = caller
        .act(json!({"topic": "math", "cmd": "nope"}))
        .await
        .expect_err("no match");
    assert_eq!(e.name, "PatternNotFound");
    assert_eq!(e.props["pattern"], json!("cmd:nope,topic:math"));
    // deadline
    let started = Instant::now();
    let e = caller
        .act(json!({"topic": "math", "cmd": "slow", "timeout$": 150}))
        .await
        .expect_err("late");
    assert_eq!(e.name, "TimeoutError");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // meta$ reaches the handler and its nested act, delegate$ only the handler; one trace id
    let out = caller
        .act(
            json!({"topic": "math", "cmd": "ctx", "meta$": {"user": "u"},
                     "delegate$": {"d": 1}, "trace$": {"traceId": "T1"}}),
        )
        .await
        .expect("ctx");
    assert_eq!(out["meta"], json!({"user": "u"}));
    assert_eq!(out["delegate"], json!({"d": 1}));
    assert_eq!(out["trace"], json!("T1"));
    assert_eq!(out["inner"]["meta"], json!({"user": "u"}));
    assert_eq!(out["inner"]["delegate"], json!({}));
    assert_eq!(out["inner"]["trace"], json!("T1"));
    assert_ne!(
        out["inner"]["span"], out["span"],
        "a nested act has a span of its own"
    );
    // meta$ does not leak into later acts of the caller
    let again = caller
        .act(json!({"topic": "math", "cmd": "ctx"}))
        .await
        .expect("ctx");
    assert_eq!(again["meta"], json!({}));

    // remove: the pattern goes, the topic's others stay
    assert!(
        server
            .remove(&json!({"topic": "math", "cmd": "add", "kind": "int"}))
            .await
            .expect("remove")
    );
    let fallback = caller
        .act(json!({"topic": "math", "cmd": "add", "kind": "int", "a": 1, "b": 1}))
        .await
        .expect("less specific");
    assert_eq!(fallback, json!(2.0));
    assert!(
        !server
            .remove(&json!({"topic": "math", "cmd": "absent"}))
            .await
            .expect("remove")
    );
    // remove_topic: every pattern of the topic goes, and its endpoint with them
    assert!(server.remove_topic("math").await);
    assert!(!server.remove_topic("math").await);
    let e = caller
        .act(json!({"topic": "math", "cmd": "add", "a": 1, "b": 1, "timeout$": 300}))
        .await
        .expect_err("gone");
    // the caller may still hold the route for a moment (the node then says it serves no such
    // topic) or already know that nobody serves it (it waits, then times out)
    assert!(
        e.name == "PatternNotFound" || e.name == "TimeoutError",
        "{e}"
    );
    server.close().await;
    caller.close().await;
    ma.shutdown().await;
    mb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_clear_error_never_a_panic() {
    let env = unique_env("bad");
    let (ma, mb) = (mesh_node(&env, "a").await, mesh_node(&env, "b").await);
    let server = Hemera::mesh(ma.clone(), options("srv"));
    let caller = Hemera::mesh(mb.clone(), options("caller"));
    server
        .add(json!({"topic": "t", "cmd": "boom"}), |_r: Req| async move {
            if Instant::now().elapsed() < Duration::from_secs(3600) {
                panic!("handler bug");
            }
            Ok(Value::Null)
        })
        .await
        .expect("add");
    server
        .add(json!({"topic": "t", "cmd": "ok"}), |_r: Req| async move {
            Ok(json!("ok"))
        })
        .await
        .expect("add");

    for (message, needle) in [
        (json!([1, 2]), "must be a JSON object"),
        (json!("text"), "must be a JSON object"),
        (json!({"cmd": "ok"}), "needs a `topic`"),
        (
            json!({"topic": "t", "cmd": "ok", "timeout$": "soon"}),
            "`timeout$` must be a number",
        ),
        (
            json!({"topic": "t", "cmd": "ok", "meta$": [1]}),
            "`meta$` must be an object",
        ),
    ] {
        let e = caller.act(message.clone()).await.expect_err("bad message");
        assert_eq!(e.name, "HemeraError", "{message}");
        assert!(e.message.contains(needle), "{message}: {}", e.message);
    }
    for pattern in [
        json!({}),
        json!({"topic": {"x": 1}}),
        json!(7),
        json!({"cmd": "x"}),
    ] {
        let e = server
            .add(pattern.clone(), |_r: Req| async move { Ok(Value::Null) })
            .await
            .expect_err("bad pattern");
        assert_eq!(e.name, "HemeraError", "{pattern}");
    }
    // one subscription per topic: other transport options for a served topic are refused
    let e = server
        .add(
            json!({"topic": "t", "cmd": "x", "pubsub$": true}),
            |_r: Req| async move { Ok(Value::Null) },
        )
        .await
        .expect_err("collision");
    assert!(
        e.message.contains("other transport options"),
        "{}",
        e.message
    );

    // a handler that panics answers an error; the node keeps serving
    let e = first_reply(&caller, json!({"topic": "t", "cmd": "boom"}))
        .await
        .expect_err("panic");
    assert_eq!(e.name, "HemeraError");
    assert!(e.message.contains("panic"), "{}", e.message);
    assert_eq!(
        caller.act(json!({"topic": "t", "cmd": "ok"})).await,
        Ok(json!("ok"))
    );

    // envelopes that do not parse get a parse error back
    let opts = CallOptions {
        timeout: Some(Duration::from_secs(5)),
        idempotent: false,
    };
    for body in [
        json!("not an envelope"),
        json!({"meta": {}}),
        json!({"pattern": [1]}),
        json!({"pattern": {"topic": "t"}, "traceId": 5}),
    ] {
        let reply = mb
            .to("hemera.t")
            .options(opts)
            .send(&body)
            .await
            .expect("reply");
        assert_eq!(
            reply["error"]["name"],
            json!("HemeraParseError"),
            "{body}: {reply}"
        );
        assert!(reply.get("result").is_none(), "{reply}");
    }
    // the smallest envelope, a pattern alone, is served
    let reply = mb
        .to("hemera.t")
        .options(opts)
        .send(&json!({"pattern": {"topic": "t", "cmd": "ok"}}))
        .await
        .expect("reply");
    assert_eq!(reply, json!({"result": "ok"}));
    server.close().await;
    ma.shutdown().await;
    mb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responders_share_load_and_pubsub_fans_out() {
    let env = unique_env("share");
    let (m1, m2, mc) = (
        mesh_node(&env, "one").await,
        mesh_node(&env, "two").await,
        mesh_node(&env, "caller").await,
    );
    let caller = Hemera::mesh(mc.clone(), options("caller"));
    let heard = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let mut nodes = Vec::new();
    for (i, name, mesh) in [(0, "one", &m1), (1, "two", &m2)] {
        let node = Hemera::mesh(mesh.clone(), options(name));
        node.add(json!({"topic": "who"}), move |_r: Req| async move {
            Ok(json!(name))
        })
        .await
        .expect("add");
        let heard = Arc::clone(&heard);
        node.add(json!({"topic": "news", "pubsub$": true}), move |_r: Req| {
            let heard = Arc::clone(&heard);
            async move {
                heard[i].fetch_add(1, Ordering::SeqCst);
                Ok(Value::Null)
            }
        })
        .await
        .expect("add");
        nodes.push(node);
    }
    // wait until both providers are known to the caller, then act
    let deadline = Instant::now() + Duration::from_secs(15);
    while mc.providers("hemera.who").len() < 2 {
        assert!(Instant::now() < deadline, "providers never appeared");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..40 {
        let who = caller.act(json!({"topic": "who"})).await.expect("who");
        *counts
            .entry(who.as_str().unwrap_or("?").into())
            .or_default() += 1;
    }
    assert!(counts.get("one").is_some_and(|n| *n > 0), "{counts:?}");
    assert!(counts.get("two").is_some_and(|n| *n > 0), "{counts:?}");

    // pubsub$: every subscriber gets the messages (fan-out, not one of the group); the act
    // resolves with null at once. Sent until both subscriptions have reached the caller.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut sent = 0;
    while heard.iter().any(|h| h.load(Ordering::SeqCst) == 0) {
        assert!(
            Instant::now() < deadline && sent < 300,
            "pubsub$ never reached both"
        );
        let out = caller.act(json!({"topic": "news", "pubsub$": true})).await;
        assert_eq!(out, Ok(Value::Null));
        sent += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for node in &nodes {
        node.close().await;
    }
    for m in [m1, m2, mc] {
        m.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_schema_rules_check_payloads_across_the_mesh() {
    let env = unique_env("schema");
    let (ma, mb) = (mesh_node(&env, "a").await, mesh_node(&env, "b").await);
    let server = Hemera::mesh(ma.clone(), options("srv"));
    let caller = Hemera::mesh(mb.clone(), options("caller"));
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    server
        .add(
            json!({"topic": "orders", "cmd": "create", "schema": {"request": {
            "type": "object", "required": ["qty", "items"],
            "properties": {
                "qty": {"type": "integer", "minimum": 1},
                "items": {"type": "array", "items": {"type": "object",
                          "required": ["sku"], "properties": {"sku": {"type": "string"}}}}
            }}}}),
            move |r: Req| {
                counted.fetch_add(1, Ordering::SeqCst);
                async move { Ok(json!({"qty": r.pattern()["qty"]})) }
            },
        )
        .await
        .expect("add");
    server
        .add(
            json!({"topic": "orders", "cmd": "note", "properties": {"text": {"type": "string"}}}),
            |_r: Req| async move { Ok(json!("noted")) },
        )
        .await
        .expect("add");

    let ok = first_reply(
        &caller,
        json!({"topic": "orders", "cmd": "create", "qty": 2, "items": [{"sku": "a"}]}),
    )
    .await;
    assert_eq!(ok, Ok(json!({"qty": 2})));
    for (message, field, pointer, keyword) in [
        (
            json!({"topic": "orders", "cmd": "create", "qty": 0, "items": []}),
            "qty",
            "/qty",
            "minimum",
        ),
        (
            json!({"topic": "orders", "cmd": "create", "items": []}),
            "qty",
            "/qty",
            "required",
        ),
        (
            json!({"topic": "orders", "cmd": "create", "qty": 1,
                   "items": [{"sku": "a"}, {"sku": 7}]}),
            "items[1].sku",
            "/items/1/sku",
            "type",
        ),
        (
            json!({"topic": "orders", "cmd": "note", "text": 5}),
            "text",
            "/text",
            "type",
        ),
    ] {
        let e = caller.act(message.clone()).await.expect_err("invalid");
        assert_eq!(e.name, "PayloadValidationError", "{message}: {e:?}");
        assert_eq!(e.props["field"], json!(field), "{message}");
        assert_eq!(e.props["instancePath"], json!(pointer), "{message}");
        assert_eq!(e.props["keyword"], json!(keyword), "{message}");
        assert!(e.message.contains(&format!("`{field}`")), "{}", e.message);
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "a breach never reaches the handler"
    );
    // the `$` options are not part of the checked payload; a property the rule does not name
    // passes
    assert_eq!(
        caller
            .act(
                json!({"topic": "orders", "cmd": "note", "text": "hi", "extra": 1,
                        "timeout$": 5000})
            )
            .await,
        Ok(json!("noted"))
    );
    // a rule that is not JSON schema is refused at add
    let e = server
        .add(
            json!({"topic": "orders", "cmd": "bad", "properties": {"x": {"type": "numbr"}}}),
            |_r: Req| async move { Ok(Value::Null) },
        )
        .await
        .expect_err("bad schema");
    assert!(e.message.contains("not valid JSON schema"), "{}", e.message);
    server.close().await;
    ma.shutdown().await;
    mb.shutdown().await;
}
