//! Multi-process distribution tests: `dist-node` child processes publish services; the test
//! process runs the gateway App and consumes them through the mesh (loopback discovery).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use plume::{App, ErrorKind, Params};
use plume_tests::child::ChildNode as Node;
use plume_transport::distribution::{Distribution, DistributionHandle};
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(15);

/// A `dist-node` child publishing `messages` under `key`.
async fn start_node(env: &str, key: &str) -> Node {
    let args = ["--env", env, "--key", key];
    Node::start(env!("CARGO_BIN_EXE_dist-node"), &args, &[], WAIT).await
}

/// The id of the record every `dist-node` seeds (the second word of its READY line).
fn seed(node: &Node) -> i64 {
    node.ready[1].parse().expect("seed id")
}

fn unique_env(test: &str) -> String {
    format!("mpd-{test}-{}", std::process::id())
}

async fn gateway(env: &str) -> (App, DistributionHandle) {
    let app = App::new();
    let d = Distribution::new()
        .environment(env)
        .key("gateway")
        .services(false)
        .start(&app)
        .await
        .expect("gateway starts");
    (app, d)
}

async fn wait_providers(d: &DistributionHandle, path: &str, n: usize) {
    timeout(WAIT, async {
        loop {
            if d.providers(path).len() == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{n} providers of {path} in time"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_provider_process_answers_through_the_gateway_and_leaves_cleanly() {
    let env = unique_env("join");
    let (app, d) = gateway(&env).await;
    let node = start_node(&env, "messages").await;
    timeout(WAIT, d.remote_ready("messages"))
        .await
        .expect("proxy in time");
    assert_eq!(d.providers("messages")[0].node.to_string(), node.id());
    let proxy = app.service("messages").expect("proxy");
    let seed = proxy.get(seed(&node), Params::new()).await.expect("get");
    assert_eq!(seed["text"], "seed of messages");
    let err = proxy
        .get(987_654, Params::new())
        .await
        .expect_err("missing");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let hc = app
        .service("distribution/healthcheck")
        .expect("healthcheck");
    assert_eq!(
        hc.get("messages", Params::new()).await.expect("healthy"),
        serde_json::json!({"messages": true})
    );
    // A graceful stop leaves the proxy in its grace period: 503 at once.
    node.terminate().await;
    timeout(WAIT, async {
        while d.providers("messages").len() == 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("provider gone");
    let err = proxy.find(Params::new()).await.expect_err("503");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_one_replica_under_load_fails_no_find_or_get() {
    let env = unique_env("sigkill");
    let (app, d) = gateway(&env).await;
    let first = start_node(&env, "messages").await;
    let second = start_node(&env, "messages").await;
    wait_providers(&d, "messages", 2).await;
    let proxy = app.service("messages").expect("proxy");
    let seed = seed(&first);
    assert_eq!(seed, self::seed(&second), "both replicas seed the same id");

    // Bounded load: 4 workers alternating find and get until told to stop (at most 50 000
    // calls each); the kill lands in the middle of it.
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (proxy, done, stop) = (proxy.clone(), done.clone(), stop.clone());
            tokio::spawn(async move {
                let mut failures = Vec::new();
                for i in 0..50_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let r = if (i + w) % 2 == 0 {
                        proxy.find(Params::new()).await
                    } else {
                        proxy.get(seed, Params::new()).await
                    };
                    if let Err(e) = r {
                        failures.push(e);
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
                failures
            })
        })
        .collect();
    let wait_calls = |n: usize| {
        let done = done.clone();
        async move {
            timeout(WAIT, async {
                while done.load(Ordering::Relaxed) < n {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
            .await
            .expect("load running");
        }
    };
    wait_calls(200).await;
    let before_kill = done.load(Ordering::Relaxed);
    first.kill().await;
    wait_providers(&d, "messages", 1).await;
    let after_removal = done.load(Ordering::Relaxed);
    wait_calls(after_removal + 400).await;
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for w in workers {
        failures.extend(
            timeout(WAIT, w)
                .await
                .expect("workers finish")
                .expect("join"),
        );
    }
    assert!(failures.is_empty(), "failed calls: {failures:?}");
    let total = done.load(Ordering::Relaxed);
    assert!(
        before_kill < 50_000 * 4 && total > after_removal + 400,
        "{before_kill} {after_removal} {total}"
    );
    assert_eq!(d.providers("messages")[0].node.to_string(), second.id());

    // All replicas gone: 503 Unavailable, not a timeout.
    second.kill().await;
    wait_providers(&d, "messages", 0).await;
    let err = proxy.get(seed, Params::new()).await.expect_err("503");
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    app.shutdown().await;
}
