//! `gateway-example cote-gateway`: a Plume gateway in front of a feathers-distributed fleet.
//! It joins the fleet over cote (`plume-cote`), mounts every service the Node apps publish, and
//! serves them over REST and socket.io (no authentication; every connection gets every event).
//! Prints `SERVICE <path>` when it mounts a service, `REMOVED <path>` when it drops one.

use std::net::SocketAddr;

use plume::App;
use plume::channels::{ANONYMOUS, AUTHENTICATED};
use plume_cote::{CoteConfig, CoteNode};

/// Run the gateway until `stop` resolves.
pub(crate) async fn run(addr: SocketAddr, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    let app = App::new();
    app.publish(|_event, _app| vec![ANONYMOUS.to_owned(), AUTHENTICATED.to_owned()]);
    app.on_service_added(|h| crate::say(&format!("SERVICE {}", h.path())));
    app.on_service_removed(|h| crate::say(&format!("REMOVED {}", h.path())));
    let server = app.listen(addr).await?;
    let mut config = CoteConfig::from_env()?;
    config.consume = true;
    config.provide = false;
    if std::env::var("PLUME_KEY").map_or(true, |k| k.is_empty()) {
        config.key = "gateway".to_owned();
    }
    let _node = CoteNode::start(&app, config).await?;
    crate::say(&format!(
        "cote-gateway listening on http://{}",
        server.local_addr()
    ));
    stop.await;
    app.shutdown().await;
    Ok(())
}
