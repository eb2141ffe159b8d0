//! Tests of [`crate::servers::ports`].

use crate::servers::ports::{HELD_FOR, LOWEST, first_free, free_port, reserve, window};
use std::fs::OpenOptions;
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

#[test]
fn ports_are_below_the_ephemeral_range_and_never_handed_out_twice() {
    let (_, ephemeral_low) = window();
    let ports: Vec<u16> = (0..64).map(|_| free_port()).collect();
    let mut unique = ports.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), ports.len(), "{ports:?}");
    assert!(ports.iter().all(|&p| (LOWEST..ephemeral_low).contains(&p)));
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("plume-ports-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

#[test]
fn a_port_someone_listens_on_or_another_test_holds_is_passed_over() {
    let dir = scratch("passed-over");
    let listening = TcpListener::bind(("127.0.0.1", 0)).expect("bind");
    let busy = listening.local_addr().expect("addr").port();
    let free = TcpListener::bind(("127.0.0.1", 0)).expect("bind");
    let (held, open) = (free.local_addr().expect("addr").port(), {
        let l = TcpListener::bind(("127.0.0.1", 0)).expect("bind");
        l.local_addr().expect("addr").port()
    });
    drop(free);
    assert!(reserve(&dir, held), "a fresh reservation");
    assert_eq!(first_free(&dir, [busy, held, open].into_iter()), Some(open));
    assert_eq!(
        first_free(&dir, [busy, held, open].into_iter()),
        None,
        "all taken now"
    );
    std::fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn a_reservation_older_than_the_hold_is_taken_over() {
    let dir = scratch("stale");
    let (fresh, stale) = (1_u16, 2_u16);
    assert!(reserve(&dir, fresh) && reserve(&dir, stale));
    let old = SystemTime::now() - HELD_FOR - Duration::from_secs(60);
    OpenOptions::new()
        .write(true)
        .open(dir.join(stale.to_string()))
        .and_then(|f| f.set_modified(old))
        .expect("age the file");
    assert!(!reserve(&dir, fresh), "a fresh reservation holds");
    assert!(reserve(&dir, stale), "a stale one lapses");
    assert!(!reserve(&dir, stale), "and is held anew");
    std::fs::remove_dir_all(&dir).expect("clean up");
}
