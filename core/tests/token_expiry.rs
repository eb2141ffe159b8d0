//! A socket.io connection whose access token expires is logged out at its `exp` and stops
//! receiving events (as Feathers v5), under paused time.

#[path = "support/polling.rs"]
mod polling;
#[path = "support/users.rs"]
mod users;

use std::time::Duration;

use plume::auth::{AuthConfig, JwtOptions};
use plume::channels::AUTHENTICATED;
use plume::{App, MemoryService, Params};
use polling::{Packet, PollingSocket};
use serde_json::{Value, json};
use users::{EMAIL, PASSWORD, users_app};

async fn app() -> App {
    // Tokens live 10 s: less than socket.io's ping interval, so no ping is due meanwhile.
    let jwt = JwtOptions {
        expires_in: 10,
        ..JwtOptions::default()
    };
    let app = users_app(
        AuthConfig::new("expiry-secret").with_jwt(jwt),
        &[],
        Value::Null,
    )
    .await;
    app.use_service("notes", MemoryService::<Value>::new());
    app
}

/// The `notes created` events the socket received before the acknowledgement of a call made
/// after them (events and acks of one connection arrive in order).
async fn notes_events(socket: &mut PollingSocket) -> Vec<Value> {
    let (_, before) = socket.call("find", &[json!("notes"), json!({})]).await;
    before
        .into_iter()
        .filter_map(|p| match p {
            Packet::Event(name, mut args) if name == "notes created" => Some(args.remove(0)),
            _ => None,
        })
        .collect()
}

/// The App's `count` connections are all logged in; 11 s later (past the tokens' `exp`) none
/// is in any channel.
async fn all_expire(app: &App, count: usize) {
    let conns = app.connections();
    assert_eq!(conns.len(), count);
    assert!(conns.iter().all(|c| app.channel(AUTHENTICATED).contains(c)));
    tokio::time::sleep(Duration::from_secs(11)).await;
    for conn in conns {
        assert!(
            app.channels_of(&conn).is_empty(),
            "{conn:?} in {:?} after its token expired",
            app.channels_of(&conn)
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_socket_whose_token_expires_leaves_its_channels_and_gets_no_more_events() {
    let app = app().await;
    let (mut socket, _) = PollingSocket::open(&app, None).await;
    let ack = socket.login(EMAIL, PASSWORD).await;
    assert_eq!(ack[0], Value::Null, "login: {ack:?}");
    let conn = app.connections().pop().expect("one connection");
    assert!(app.channel(AUTHENTICATED).contains(&conn));
    let notes = app.service("notes").expect("notes");

    // Paused time: the clock jumps, and every timer due before then (the expiry) runs first.
    tokio::time::sleep(Duration::from_secs(8)).await;
    notes
        .create(json!({"n": 1}), Params::new())
        .await
        .expect("note");
    assert_eq!(
        notes_events(&mut socket).await.len(),
        1,
        "still logged in at 8 s"
    );
    assert!(app.channel(AUTHENTICATED).contains(&conn));

    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        app.channels_of(&conn).is_empty(),
        "in {:?} after its token expired",
        app.channels_of(&conn)
    );
    assert!(
        app.connection(&conn)
            .is_some_and(|c| c.authentication.is_none())
    );
    notes
        .create(json!({"n": 2}), Params::new())
        .await
        .expect("note");
    assert!(
        notes_events(&mut socket).await.is_empty(),
        "an event reached a connection whose token expired"
    );
}

/// A connection authenticated by its handshake `Authorization` header expires the same way.
#[tokio::test(start_paused = true)]
async fn a_socket_authenticated_at_the_handshake_expires_too() {
    let app = app().await;
    let (mut login_socket, _) = PollingSocket::open(&app, None).await;
    let ack = login_socket.login(EMAIL, PASSWORD).await;
    let token = ack[1]["accessToken"].as_str().expect("token").to_owned();
    let (_socket, connected) = PollingSocket::open(&app, Some(&format!("Bearer {token}"))).await;
    assert!(
        matches!(connected, Packet::Other(ref p) if p.starts_with("40")),
        "{connected:?}"
    );
    all_expire(&app, 2).await;
}

/// Logged-in connections share one expiry timer: logging in many sockets starts no task per
/// socket (a task each, with its timer and a copy of the token, was a share of every socket's
/// memory in the gateway), and each is still logged out at its token's `exp`.
#[tokio::test(start_paused = true)]
async fn logged_in_sockets_share_one_expiry_timer() {
    const SOCKETS: usize = 20;
    let app = app().await;
    let (mut first, _) = PollingSocket::open(&app, None).await;
    let ack = first.login(EMAIL, PASSWORD).await;
    let token = ack[1]["accessToken"].as_str().expect("token").to_owned();
    let mut sockets = Vec::new();
    for _ in 0..SOCKETS {
        sockets.push(PollingSocket::open(&app, None).await.0);
    }
    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let before = tasks();
    for socket in &mut sockets {
        let jwt = json!({"strategy": "jwt", "accessToken": token});
        let (ack, _) = socket
            .call("create", &[json!("authentication"), jwt, json!({})])
            .await;
        assert_eq!(ack[0], Value::Null, "login: {ack:?}");
    }
    let after = tasks();
    assert!(
        after <= before + 1,
        "{SOCKETS} logins started {} tasks",
        after.saturating_sub(before)
    );
    all_expire(&app, SOCKETS + 1).await;
}
