//! `GET /distribution/mounted` of the gateway (what `bench/scale.sh` waits on): real
//! `gateway-example gateway` and `todos` processes on a private loopback mesh (an environment
//! and a discovery port of this test's own).

use std::time::Duration;

use axum::body::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use plume_tests::child::spawn_first_line;
use serde_json::{Value, json};
use tokio::process::Child;
use tokio::time::{Instant, timeout};

/// How long a process may take to start, and the gateway to see a replica.
const WAIT: Duration = Duration::from_secs(20);

type Http = Client<HttpConnector, Empty<Bytes>>;

/// Start `gateway-example ARGS` with `vars`; expect a first line starting with `ready` and
/// return the child and the port at the end of that line (`…http://127.0.0.1:PORT`).
async fn start(args: &[&str], vars: &[(&str, String)], ready: &str) -> (Child, u16) {
    let (child, line) =
        spawn_first_line(env!("CARGO_BIN_EXE_gateway-example"), args, vars, WAIT).await;
    assert!(line.starts_with(ready), "unexpected first line {line:?}");
    let port = line
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    (child, port)
}

async fn get(client: &Http, port: u16, path: &str) -> Value {
    let uri = format!("http://127.0.0.1:{port}{path}");
    let response = timeout(WAIT, client.get(uri.parse().expect("a URI")))
        .await
        .expect("an answer in time")
        .expect("the gateway answers");
    assert_eq!(response.status(), 200, "GET {path}");
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes();
    serde_json::from_slice(&bytes).expect("JSON")
}

/// Ask `path` until it answers `want` (bounded by `WAIT`): the gateway learns of replicas over
/// the mesh.
async fn until(client: &Http, port: u16, path: &str, want: &Value) {
    let deadline = Instant::now() + WAIT;
    loop {
        let have = get(client, port, path).await;
        if &have == want {
            return;
        }
        assert!(Instant::now() < deadline, "{path}: {have}, want {want}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_gateway_counts_its_mounted_services_and_their_providers() {
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("a UDP port");
    let discovery_port = udp.local_addr().expect("its address").port().to_string();
    drop(udp);
    let vars = [
        ("PLUME_ENV", format!("mounted-test-{}", std::process::id())),
        ("PLUME_DISCOVERY", "loopback".to_owned()),
        ("PLUME_DISCOVERY_PORT", discovery_port),
        ("PLUME_JWT_SECRET", "mounted-test-secret".to_owned()),
    ];
    let client: Http = Client::builder(TokioExecutor::new()).build_http();
    let (_gateway, gw) = start(&["gateway", "--port", "0"], &vars, "gateway listening on").await;
    assert_eq!(
        get(&client, gw, "/distribution/mounted").await,
        json!({"count": 0})
    );
    assert_eq!(
        get(&client, gw, "/distribution/mounted?providers").await,
        json!({"count": 0, "providers": 0})
    );

    let replica = |name: &'static str| {
        let vars = vars.clone();
        async move {
            let args = ["todos", "--name", name, "--port", "0", "--store", "memory"];
            start(&args, &vars, &format!("todos {name} listening on")).await
        }
    };
    let (_a, _) = replica("todos-a").await;
    until(
        &client,
        gw,
        "/distribution/mounted?providers",
        &json!({"count": 1, "providers": 1}),
    )
    .await;
    assert_eq!(
        get(&client, gw, "/distribution/mounted").await,
        json!({"count": 1})
    );
    // A second replica of the same service: one proxy, two providers.
    let (_b, _) = replica("todos-b").await;
    until(
        &client,
        gw,
        "/distribution/mounted?providers",
        &json!({"count": 1, "providers": 2}),
    )
    .await;
}
