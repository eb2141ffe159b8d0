//! Readiness through the gateway: a logged-in `find` on `todos`, and which replica answered it.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::time::{Instant, timeout};

use crate::gateway::{DEMO_EMAIL, DEMO_PASSWORD};
use crate::{http, say, todos};

/// How long the gateway may take to answer a logged-in `find` from every replica.
pub(super) const READY_DEADLINE: Duration = Duration::from_secs(30);
/// The pause between two readiness probes (bounded by `READY_DEADLINE`), drawn anew each time
/// from this range: two checks running at once (both replicas restarted together) must not fall
/// into step with the gateway's round-robin, where each would only ever meet the replica the
/// other is not waiting for (seen: a check that never saw its replica).
const PROBE_INTERVAL_MS: std::ops::Range<u64> = 50..150;
/// How long one probe request may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Wait until a logged-in `find` on `todos` through the gateway works and every replica of
/// `replicas` has answered one (any replica when it is empty).
pub(super) async fn wait_ready(gateway: SocketAddr, replicas: &[&str]) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_DEADLINE;
    let mut token: Option<String> = None;
    let mut answered = BTreeSet::new();
    loop {
        let last_error = match timeout(PROBE_TIMEOUT, probe(gateway, &mut token)).await {
            Ok(Ok(replica)) => {
                answered.insert(replica);
                None
            }
            Ok(Err(err)) => Some(format!("{err:#}")),
            Err(_) => Some(format!("no answer within {PROBE_TIMEOUT:?}")),
        };
        if !answered.is_empty() && replicas.iter().all(|r| answered.contains(*r)) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "the gateway did not answer a logged-in find from every replica within \
                 {READY_DEADLINE:?} (replicas that answered: {answered:?}; last error: {})",
                last_error.as_deref().unwrap_or("none")
            );
        }
        let pause = rand::random_range(PROBE_INTERVAL_MS);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

/// After a restart: wait (bounded) until the gateway answers a `find` from `replica` (from any
/// replica when `None`, after a restart of the gateway itself), and say so.
pub(super) async fn announce_serving(gateway: SocketAddr, replica: Option<&'static str>) {
    let replicas: Vec<&str> = replica.into_iter().collect();
    let what = replica.unwrap_or(todos::PATH);
    match wait_ready(gateway, &replicas).await {
        Ok(()) => say(&format!("gateway serves {what} again")),
        Err(err) => say(&format!("gateway does not serve {what} yet: {err:#}")),
    }
}

/// Log in (once) and `find` todos through the gateway; return the replica that answered.
async fn probe(gateway: SocketAddr, token: &mut Option<String>) -> anyhow::Result<String> {
    let access = match token {
        Some(t) => t.clone(),
        None => {
            let login =
                json!({"strategy": "local", "email": DEMO_EMAIL, "password": DEMO_PASSWORD});
            let (status, body) =
                http::request(gateway, "POST", "/authentication", None, Some(&login)).await?;
            if status != 201 {
                bail!("login answered {status}: {body}");
            }
            let access = body["accessToken"]
                .as_str()
                .context("the login result has no accessToken")?
                .to_owned();
            token.insert(access).clone()
        }
    };
    let path = format!("/{}", todos::PATH);
    let (status, body) = http::request(gateway, "GET", &path, Some(&access), None).await?;
    if status != 200 {
        bail!("find answered {status}: {body}");
    }
    match &body["replica"] {
        Value::String(replica) => Ok(replica.clone()),
        _ => bail!("the find result names no replica: {body}"),
    }
}
