//! Wire compatibility with nats-hemera 7.0.2: a real `nats-server` on a free loopback port and
//! real Node Hemera processes (tests/hemera, pinned by its lockfile) calling Plume and being
//! called by it.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use plume_pattern::{Hemera, HemeraError, Options, Req, typed};
use serde::Deserialize;
use serde_json::{Value, json};
use support::Peer;
use support::servers::{Kind, Server};

async fn node(server: &Server, name: &str) -> Hemera {
    let options = Options {
        name: name.into(),
        ..Options::default()
    };
    Hemera::connect(&server.url(), options).await.expect("NATS")
}

#[derive(Deserialize)]
struct Add {
    a: f64,
    b: f64,
}

/// The Plume service the Node client acts on: `{topic: 'plume'}`.
async fn plume_service(node: &Hemera, notes: Arc<Mutex<Vec<Value>>>) {
    let add = |cmd: &'static str| json!({"topic": "plume", "cmd": cmd});
    node.add(add("add"), |r: Req| async move {
        Ok(json!(
            r.pattern()["a"].as_i64().unwrap_or(0) + r.pattern()["b"].as_i64().unwrap_or(0)
        ))
    })
    .await
    .expect("add");
    node.add(
        add("typed"),
        typed(|p: Add, _r: Req| async move { Ok::<_, HemeraError>(p.a + p.b) }),
    )
    .await
    .expect("add");
    // A JSON-schema rule (hemera-ajv's `properties`): checked before the handler runs.
    node.add(
        json!({"topic": "plume", "cmd": "schema",
               "properties": {"a": {"type": "number"}, "b": {"type": "number"}}}),
        |r: Req| async move {
            Ok(json!(
                r.pattern()["a"].as_f64().unwrap_or(0.0) + r.pattern()["b"].as_f64().unwrap_or(0.0)
            ))
        },
    )
    .await
    .expect("add");
    node.add(add("fail"), |_r: Req| async move {
        Err::<Value, _>(
            HemeraError::new("BusinessError", "no funds")
                .with_code("E_FUNDS")
                .with_data(json!({"account": 7})),
        )
    })
    .await
    .expect("add");
    node.add(add("slow"), |_r: Req| async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok(json!("late"))
    })
    .await
    .expect("add");
    node.add(add("meta"), |r: Req| async move {
        Ok(json!({"meta": r.meta, "delegate": r.delegate}))
    })
    .await
    .expect("add");
    // Acts on the Node client's own action from inside the handler.
    node.add(add("nested"), |r: Req| async move {
        let inner = r.act(json!({"topic": "node", "cmd": "echo"})).await?;
        Ok(json!({"inner": inner, "traceId": r.trace_id, "spanId": r.span_id}))
    })
    .await
    .expect("add");
    node.add(add("stream"), |r: Req| async move {
        r.reply_next(json!("a")).await?;
        r.reply_next(json!("b")).await?;
        Ok(json!("c"))
    })
    .await
    .expect("add");
    node.add(add("note"), move |r: Req| {
        let notes = Arc::clone(&notes);
        async move {
            notes
                .lock()
                .expect("notes")
                .push(Value::Object(r.pattern().clone()));
            Ok(Value::Null)
        }
    })
    .await
    .expect("add");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hemera_acts_reach_plume_adds() {
    let server = Server::start(Kind::Nats);
    let plume = node(&server, "plume-srv").await;
    let notes = Arc::new(Mutex::new(Vec::new()));
    plume_service(&plume, Arc::clone(&notes)).await;
    let url = server.url();
    let mut client = Peer::spawn("client.js", &[&url]);
    let mut cases = HashMap::new();
    while cases.len() < 12 {
        let line = client.json().await;
        let label = line["case"].as_str().expect("case").to_owned();
        cases.insert(label, line);
    }
    assert!(client.exit_ok().await, "client.js exits 0");

    let add = &cases["add"];
    assert_eq!(add["data"], json!(3), "{add}");
    // The trace is echoed: Hemera computes a duration from it.
    assert!(
        add["duration"].as_f64().is_some_and(f64::is_finite),
        "{add}"
    );
    assert_eq!(cases["typed"]["data"], json!(3.5));

    let nf = &cases["notfound"]["error"];
    assert_eq!(nf["name"], "PatternNotFound", "{nf}");
    assert_eq!(nf["isServer"], true);
    assert_eq!(nf["pattern"], "cmd:nope,topic:plume");

    let fail = &cases["fail"]["error"];
    assert_eq!(fail["name"], "BusinessError", "{fail}");
    assert_eq!(fail["message"], "no funds");
    assert_eq!(fail["code"], "E_FUNDS");
    assert_eq!(fail["data"], json!({"account": 7}));
    assert_eq!(fail["hops"][0]["service"], "plume");
    assert_eq!(fail["hops"][0]["app"], "plume-srv");

    let invalid = &cases["invalid"]["error"];
    assert_eq!(invalid["name"], "PayloadValidationError", "{invalid}");
    assert_eq!(invalid["field"], "a");

    // The schema rule's breach reaches the Hemera caller, naming the field.
    let schema = &cases["schema"]["error"];
    assert_eq!(schema["name"], "PayloadValidationError", "{schema}");
    assert_eq!(schema["field"], "b");
    assert_eq!(schema["instancePath"], "/b");
    assert_eq!(schema["keyword"], "type");
    assert!(
        schema["message"]
            .as_str()
            .is_some_and(|m| m.contains("`b`")),
        "{schema}"
    );
    assert_eq!(schema["hops"][0]["app"], "plume-srv");
    assert_eq!(cases["schemaok"]["data"], json!(3));

    let timeout = &cases["timeout"];
    assert_eq!(timeout["error"]["name"], "TimeoutError", "{timeout}");
    let ms = timeout["ms"].as_u64().expect("ms");
    assert!((150..1500).contains(&ms), "timed out after {ms} ms");

    let meta = &cases["meta"];
    assert_eq!(meta["data"]["meta"], json!({"k": 1}), "{meta}");
    assert_eq!(meta["data"]["delegate"], json!({"d": 2}));
    assert_eq!(meta["meta"], json!({"k": 1}), "meta$ echoed back");

    let nested = &cases["nested"];
    let data = &nested["data"];
    // Hemera's client merges `meta$` into its root context (its known leak), so `k` from the
    // earlier case rides along: Plume passes the meta it got on, whole and unchanged.
    assert_eq!(data["inner"]["meta"]["user"], "u1", "{nested}");
    assert_eq!(data["inner"]["meta"], nested["meta"]);
    assert_eq!(
        data["traceId"], nested["traceId"],
        "Plume saw the root trace id"
    );
    assert_eq!(
        data["inner"]["traceId"], nested["traceId"],
        "the nested act kept it"
    );
    assert_eq!(data["inner"]["parentSpanId"], data["spanId"]);

    assert_eq!(cases["stream"]["data"], json!(["a", "b", "c"]));
    assert_eq!(cases["pubsub"]["sent"], true);
    // The pubsub$ message reaches the handler (no reply was asked for).
    let deadline = Instant::now() + Duration::from_secs(10);
    while notes.lock().expect("notes").is_empty() {
        assert!(
            Instant::now() < deadline,
            "the pubsub$ message never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(notes.lock().expect("notes")[0]["n"], json!(7));
    plume.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plume_acts_reach_hemera_adds() {
    let server = Server::start(Kind::Nats);
    let mut peer = Peer::spawn("server.js", &[&server.url(), "node-srv"]);
    peer.ready().await;
    let plume = node(&server, "plume-client").await;
    // The Node `nested` action acts back on this Plume pattern.
    plume
        .add(
            json!({"topic": "plume", "cmd": "trace"}),
            |r: Req| async move {
                Ok(json!({"meta": r.meta, "traceId": r.trace_id, "spanId": r.span_id}))
            },
        )
        .await
        .expect("add");

    let sum = plume
        .act(json!({"topic": "math", "cmd": "add", "a": 1, "b": 2}))
        .await
        .expect("add");
    assert_eq!(sum, json!(3));
    let typed: f64 = plume
        .act_as(&json!({"topic": "math", "cmd": "add", "a": 1.5, "b": 2}))
        .await
        .expect("typed");
    assert_eq!(typed, 3.5);

    let e = plume
        .act(json!({"topic": "math", "cmd": "fail"}))
        .await
        .expect_err("fails");
    assert_eq!((e.name.as_str(), e.message.as_str()), ("Error", "Uups"));
    assert_eq!(e.code(), Some(&json!(444)));
    assert_eq!(e.props["extra"], json!("x"));
    assert_eq!(e.props["hops"][0]["service"], json!("math"));
    assert_eq!(e.props["hops"][0]["app"], json!("node-srv"));

    let e = plume
        .act(json!({"topic": "math", "cmd": "nope"}))
        .await
        .expect_err("no match");
    assert_eq!(e.name, "PatternNotFound");
    assert_eq!(e.props["isServer"], json!(true));

    let started = Instant::now();
    let e = plume
        .act(json!({"topic": "math", "cmd": "slow", "timeout$": 200}))
        .await
        .expect_err("too slow");
    assert_eq!(
        (e.name.as_str(), e.message.as_str()),
        ("TimeoutError", "Client timeout")
    );
    assert!(
        started.elapsed() < Duration::from_millis(1400),
        "{:?}",
        started.elapsed()
    );

    let seen = plume
        .act(json!({"topic": "math", "cmd": "meta", "meta$": {"k": 1}, "delegate$": {"d": 2}}))
        .await
        .expect("meta");
    assert_eq!(seen, json!({"meta": {"k": 1}, "delegate": {"d": 2}}));

    // Joi validation on the Node side: Hemera's ValidationError with the path.
    let e = plume
        .act(json!({"topic": "math", "cmd": "joi", "a": "x"}))
        .await
        .expect_err("invalid");
    assert_eq!(e.name, "ValidationError");
    assert_eq!(e.props["details"][0]["path"], json!(["a"]));

    // Several replies: maxMessages$ and expectedMessages$.
    let replies = plume
        .act_many(json!({"topic": "math", "cmd": "stream", "n": 3, "maxMessages$": 3}))
        .await
        .expect("stream");
    let values: Vec<Value> = replies.into_iter().map(|r| r.expect("reply")).collect();
    assert_eq!(values, vec![json!(0), json!(1), json!(2)]);
    let replies = plume
        .act_many(
            json!({"topic": "math", "cmd": "stream", "n": 2, "expectedMessages$": 3,
                         "timeout$": 300}),
        )
        .await
        .expect("stream");
    assert_eq!(replies.len(), 3);
    assert_eq!(replies[1], Ok(json!(1)));
    assert_eq!(
        replies[2].as_ref().map_err(|e| e.name.as_str()),
        Err("TimeoutError")
    );

    // Nested acts across the two: Plume → Node → Plume keeps meta$ and the trace id.
    let root_trace = "ROOTTRACE0000000000001";
    let out = plume
        .act(
            json!({"topic": "math", "cmd": "nested", "meta$": {"user": "u2"},
                     "trace$": {"traceId": root_trace}}),
        )
        .await
        .expect("nested");
    assert_eq!(out["trace"]["traceId"], json!(root_trace), "{out}");
    assert_eq!(out["meta"], json!({"user": "u2"}));
    assert_eq!(out["inner"]["traceId"], json!(root_trace));
    assert_eq!(out["inner"]["meta"], json!({"user": "u2"}));

    // Nobody serves the topic: NATS says so at once (Hemera would wait for its timeout).
    let e = plume
        .act(json!({"topic": "nobody", "cmd": "x"}))
        .await
        .expect_err("no subscriber");
    assert_eq!(e.name, "PatternNotFound");
    plume.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plume_and_hemera_responders_share_a_topic() {
    let server = Server::start(Kind::Nats);
    let mut peer = Peer::spawn("server.js", &[&server.url(), "node-srv"]);
    peer.ready().await;
    let responder = node(&server, "plume-srv").await;
    responder
        .add(
            json!({"topic": "share", "cmd": "who"}),
            |_r: Req| async move { Ok(json!("plume-srv")) },
        )
        .await
        .expect("add");
    let caller = node(&server, "caller").await;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..60 {
        let who = caller
            .act(json!({"topic": "share", "cmd": "who"}))
            .await
            .expect("who");
        *counts
            .entry(who.as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
    }
    // One queue group `queue.share`: each act reaches exactly one of the two, both get some.
    assert_eq!(counts.values().sum::<usize>(), 60);
    assert!(
        counts.get("plume-srv").is_some_and(|n| *n > 0),
        "{counts:?}"
    );
    assert!(counts.get("node-srv").is_some_and(|n| *n > 0), "{counts:?}");
    responder.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelopes_that_do_not_parse_get_a_clear_answer() {
    let server = Server::start(Kind::Nats);
    let plume = node(&server, "plume-srv").await;
    plume
        .add(
            json!({"topic": "math", "cmd": "add"}),
            |_r: Req| async move { Ok(json!(3)) },
        )
        .await
        .expect("add");
    let raw = async_nats::connect(server.url()).await.expect("raw client");
    let within = Some(Duration::from_secs(5));
    for (body, needle) in [
        (&b"not json"[..], "not JSON"),
        (
            br#"{"pattern":{"topic":"math","cmd":"add"}}"#,
            "no `request`",
        ),
        (
            br#"{"pattern":{"topic":"math"},"request":{"id":"x"}}"#,
            "request.type",
        ),
        (br#"[1,2,3]"#, "must be a JSON object"),
    ] {
        let request = async_nats::Request::new()
            .payload(body.to_vec().into())
            .timeout(within);
        let reply = raw.send_request("math", request).await.expect("a reply");
        let reply: Value = serde_json::from_slice(&reply.payload).expect("JSON reply");
        assert_eq!(reply["error"]["name"], "HemeraParseError", "{reply}");
        assert!(
            reply["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(needle)),
            "{reply} lacks {needle}"
        );
        assert_eq!(reply["request"], json!({"type": "request", "id": ""}));
    }
    // Without a reply subject the bad message is only logged; the node keeps serving.
    raw.publish("math", "garbage".into())
        .await
        .expect("publish");
    raw.flush().await.expect("flush");
    let client = node(&server, "plume-client").await;
    assert_eq!(
        client.act(json!({"topic": "math", "cmd": "add"})).await,
        Ok(json!(3))
    );

    // A responder whose reply is not an envelope: the caller gets a parse error, not a hang.
    let mut bogus = raw.subscribe("bogus").await.expect("subscribe");
    // a round trip on the same connection: the server has the subscription after it
    let _ = raw.request(raw.new_inbox(), "".into()).await;
    let responder = raw.clone();
    tokio::spawn(async move {
        use futures::StreamExt;
        while let Some(msg) = bogus.next().await {
            if let Some(reply) = msg.reply {
                let _ = responder.publish(reply, "<html>".into()).await;
            }
        }
    });
    let e = client
        .act(json!({"topic": "bogus", "timeout$": 5000}))
        .await
        .expect_err("bad reply");
    assert_eq!(e.name, "HemeraParseError", "{e}");
    plume.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_groups_pubsub_and_max_messages_on_nats() {
    let server = Server::start(Kind::Nats);
    let caller = node(&server, "caller").await;
    let mut nodes = Vec::new();
    // Two nodes in the default group `queue.grp`: one copy; two groups via `queue$`: two.
    for (name, topic, extra) in [
        ("g1", "grp", json!({})),
        ("g2", "grp", json!({})),
        ("q1", "queues", json!({"queue$": "one"})),
        ("q2", "queues", json!({"queue$": "two"})),
    ] {
        let n = node(&server, name).await;
        let mut pattern = json!({"topic": topic});
        if let (Some(p), Some(e)) = (pattern.as_object_mut(), extra.as_object()) {
            p.extend(e.clone());
        }
        n.add(pattern, move |_r: Req| async move { Ok(json!(name)) })
            .await
            .expect("add");
        nodes.push(n);
    }
    let grp = caller
        .act_many(json!({"topic": "grp", "expectedMessages$": 2, "timeout$": 300}))
        .await
        .expect("act");
    assert_eq!(grp.len(), 2, "{grp:?}");
    assert!(grp[0].is_ok() && grp[1].as_ref().is_err_and(|e| e.name == "TimeoutError"));
    let queues = caller
        .act_many(json!({"topic": "queues", "maxMessages$": 2, "timeout$": 3000}))
        .await
        .expect("act");
    let mut names: Vec<Value> = queues.into_iter().map(|r| r.expect("reply")).collect();
    names.sort_by_key(Value::to_string);
    assert_eq!(names, vec![json!("q1"), json!("q2")]);

    // maxMessages$ on add: the topic serves two messages, then it is gone.
    let once = node(&server, "once").await;
    once.add(
        json!({"topic": "twice", "maxMessages$": 2}),
        |_r: Req| async move { Ok(json!("ok")) },
    )
    .await
    .expect("add");
    for _ in 0..2 {
        assert_eq!(caller.act(json!({"topic": "twice"})).await, Ok(json!("ok")));
    }
    let e = caller
        .act(json!({"topic": "twice", "timeout$": 500}))
        .await
        .expect_err("gone");
    assert!(
        e.name == "PatternNotFound" || e.name == "TimeoutError",
        "{e}"
    );
    // and the pattern can be added again
    once.add(json!({"topic": "twice"}), |_r: Req| async move {
        Ok(json!("again"))
    })
    .await
    .expect("add again");
    assert_eq!(
        caller.act(json!({"topic": "twice"})).await,
        Ok(json!("again"))
    );
    for n in nodes {
        n.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_fans_out_and_handlers_stream_on_nats() {
    let server = Server::start(Kind::Nats);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<&'static str>(16);
    let mut nodes = Vec::new();
    for name in ["s1", "s2"] {
        let n = node(&server, name).await;
        let tx = tx.clone();
        n.add(json!({"topic": "news", "pubsub$": true}), move |_r: Req| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(name).await;
                Ok(Value::Null)
            }
        })
        .await
        .expect("add");
        nodes.push(n);
    }
    let caller = node(&server, "caller").await;
    // A streaming Plume handler (Hemera's reply.next): two replies, then its result.
    nodes[0]
        .add(json!({"topic": "count"}), |r: Req| async move {
            r.reply_next(json!(0)).await?;
            r.reply_next(json!(1)).await?;
            Ok(json!(2))
        })
        .await
        .expect("add");
    let replies = caller
        .act_many(json!({"topic": "count", "maxMessages$": 3}))
        .await
        .expect("stream");
    assert_eq!(replies, vec![Ok(json!(0)), Ok(json!(1)), Ok(json!(2))]);
    assert_eq!(
        caller
            .act(json!({"topic": "news", "pubsub$": true, "n": 1}))
            .await,
        Ok(Value::Null)
    );
    let mut got = Vec::new();
    for _ in 0..2 {
        let name = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("delivered in time")
            .expect("sender alive");
        got.push(name);
    }
    got.sort_unstable();
    assert_eq!(got, ["s1", "s2"], "each subscriber got the one message");
    for n in nodes {
        n.close().await;
    }
}
