//! The SQL adapter on a real PostgreSQL server started for the test (see common/postgres.rs).

mod common;

use common::postgres::PgServer;
use plume::memory::Multi;
use plume::{ErrorKind, Params};
use plume_sql::{ConnectOptions, Database};
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feathers_semantics_on_postgres() {
    let server = PgServer::start().expect("PostgreSQL must be installed and start");
    let db = Database::connect(&server.url()).await.expect("connect");
    common::all(&db).await;
    db.close().await;
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_answer_503_while_the_server_is_down_and_recover_after() {
    let mut server = PgServer::start().expect("PostgreSQL must be installed and start");
    let options = ConnectOptions {
        acquire_timeout: Duration::from_secs(2),
        ..ConnectOptions::default()
    };
    let db = Database::connect_with(&server.url(), options)
        .await
        .expect("connect");
    let people = common::people(&db, "restart_people", Multi::None).await;
    people
        .create(json!({"name": "before"}), Params::new())
        .await
        .expect("create");

    server.stop().expect("stop");
    for _ in 0..3 {
        let err = people.find(Params::new()).await.expect_err("down");
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err:?}");
        assert_eq!(err.code(), 503);
        let err = people
            .create(json!({"name": "while down"}), Params::new())
            .await
            .expect_err("down");
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err:?}");
    }

    server.resume().expect("restart");
    let found = people
        .find(Params::new())
        .await
        .expect("the pool reconnects");
    assert_eq!(found.as_array().map(Vec::len), Some(1));
    people
        .create(json!({"name": "after"}), Params::new())
        .await
        .expect("create");
    assert_eq!(
        people
            .find(Params::new())
            .await
            .expect("find")
            .as_array()
            .map(Vec::len),
        Some(2)
    );
}
