//! A configuration whose `create_instance` keeps failing on one node: retried with backoff
//! there, then given up and run elsewhere; the giving-up lasts `refuse_for`.

use std::time::Duration;

use tokio::time::Instant;

use super::{Cluster, LIMIT, lock};

#[tokio::test(start_paused = true)]
async fn a_config_that_keeps_failing_on_one_node_moves_elsewhere() {
    let mut c = Cluster::new(7);
    for n in ["a", "b", "c"] {
        c.add(n);
    }
    c.wait("3/2/2", LIMIT, |c| c.counts() == vec![3, 2, 2])
        .await;
    // One of a's configurations breaks on a: it is disconnected (made sick) and its creation
    // there fails from now on.
    let running = c.running();
    let bad = running
        .iter()
        .find(|(_, n)| n.as_str() == "a")
        .map(|(cfg, _)| cfg.clone())
        .expect("a runs something");
    lock(&c.broken).insert(("a".to_owned(), bad.clone()), 0);
    lock(&c.sick).insert(bad.clone());
    let t0 = Instant::now();
    let took = c
        .wait("the broken config runs elsewhere", LIMIT, |c| {
            c.running().get(&bad).is_some_and(|n| n != "a") && c.running().len() == 7
        })
        .await;
    let tries = lock(&c.broken)[&("a".to_owned(), bad.clone())];
    let settings = c.settings;
    // Exactly `create_failures` attempts on a, spaced by the backoff (renew, then 2 × renew):
    // not one per renewal.
    assert_eq!(tries, settings.create_failures as usize, "attempts on a");
    let backoff: Duration = (0..settings.create_failures - 1)
        .map(|k| settings.renew * (1 << k))
        .sum();
    assert!(
        took >= backoff,
        "moved after {took:?}, before the backoff {backoff:?}"
    );
    assert!(took < LIMIT);
    // It stays away from a while a refuses it, and all seven keep running (time is paused:
    // this sleep only advances the clock).
    tokio::time::sleep(settings.refuse_for / 2).await;
    let running = c.running();
    assert_eq!(running.len(), 7, "{running:?}");
    assert_ne!(running.get(&bad).map(String::as_str), Some("a"));
    assert_eq!(lock(&c.broken)[&("a".to_owned(), bad.clone())], tries);
    assert!(t0.elapsed() < settings.refuse_for);
    c.shutdown().await;
}
