//! feathers-distributed's `test/failures.test.js` (`feathers-distributed:network`, §7 failures
//! cases 1–3 of `shared/peers/feathers-distributed.md`) ported to Plume, with real replica loss:
//! the consumer (key `app`) runs in this test process; two `dist-node` processes are replicas of
//! `messages` (key `messages`) and a third provides `other` (key `other`). Replicas are lost by
//! SIGKILL, not by closing one component. Also the §9 regressions "losing one key's last replica
//! leaves other keys' proxies alone" and "no 20 s hang when a replica dies", across processes.

mod fd;

use std::time::Duration;

use fd::{start_proc, unique_env, within};
use plume::{App, ErrorKind, Params};
use plume_transport::distribution::{Distribution, DistributionHandle};
use serde_json::json;

const DIST_NODE: &str = env!("CARGO_BIN_EXE_dist-node");

async fn wait_providers(d: &DistributionHandle, path: &str, n: usize) {
    within(&format!("{n} providers of {path}"), async {
        while d.providers(path).len() != n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feathers_distributed_network_failures() {
    let env = unique_env("failures");
    let app = App::new();
    // A deadline far above the test's waits: a call that hung on a dead replica instead of
    // failing fast would trip `within` (20 s) first, not come back as a Timeout.
    let d = Distribution::new()
        .environment(&env)
        .key("app")
        .services(false)
        .timeout(Duration::from_secs(120))
        .grace_period(Duration::from_secs(2))
        .start(&app)
        .await
        .expect("consumer starts");
    let replica = ["--env", &env, "--key", "messages"];
    let other = ["--env", &env, "--key", "other", "--path", "other"];
    let (a, b, o) = tokio::join!(
        start_proc(DIST_NODE, &replica, &[]),
        start_proc(DIST_NODE, &replica, &[]),
        start_proc(DIST_NODE, &other, &[]),
    );
    wait_providers(&d, "messages", 2).await;
    within("other proxy", d.remote_ready("other")).await;
    let messages = app.service("messages").expect("proxy");
    let hc = app
        .service("distribution/healthcheck")
        .expect("healthcheck");

    // Case 1: the remote service is accessible (each replica seeded one record).
    let found = messages.find(Params::new()).await.expect("find");
    assert!(found.as_array().is_some_and(|l| !l.is_empty()), "case 1");
    assert_eq!(
        hc.get("messages", Params::new()).await.expect("healthy"),
        json!({"messages": true}),
        "case 1"
    );

    // Case 2: one replica lost (SIGKILL): calls keep working, during and after the table
    // update; the survivor is the only provider left.
    let survivor = b.ready[0].clone();
    a.kill().await;
    for _ in 0..10 {
        within("find after a replica died", messages.find(Params::new()))
            .await
            .expect("case 2: find on the survivor");
    }
    wait_providers(&d, "messages", 1).await;
    assert_eq!(
        d.providers("messages")[0].node.to_string(),
        survivor,
        "case 2"
    );
    assert!(
        within("find", messages.find(Params::new()))
            .await
            .expect("case 2")
            .is_array()
    );

    // Case 3: complete failure: 503 Unavailable at once (no hang), then the proxy is removed.
    b.kill().await;
    wait_providers(&d, "messages", 0).await;
    assert!(
        app.service("messages").is_some(),
        "case 3: in its grace period"
    );
    let err = within("a fast failure", messages.find(Params::new()))
        .await
        .expect_err("case 3: no provider left");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "case 3: {err:?}");
    within("proxy removal", d.remote_gone("messages")).await;
    assert!(
        app.service("messages").is_none(),
        "case 3: the proxy is gone"
    );

    // §9: the other key's proxy was left alone through all of it.
    let other_proxy = app.service("other").expect("other proxy untouched");
    let seed = other_proxy.find(Params::new()).await.expect("other works");
    assert_eq!(seed[0]["text"], "seed of other");
    assert_eq!(
        hc.get("other", Params::new()).await.expect("healthy"),
        json!({"other": true})
    );
    // The lost key is now unknown to the healthcheck.
    let err = hc
        .get("messages", Params::new())
        .await
        .expect_err("no app with key messages");
    assert_eq!(err.kind(), ErrorKind::NotFound);

    drop(o);
    d.shutdown().await;
    app.shutdown().await;
}
