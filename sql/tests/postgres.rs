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

/// Text sorts and compares by code point even in a column whose collation says otherwise (an
/// ICU collation, as a database created with a real locale would have).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_order_is_by_code_point_whatever_the_collation() {
    let server = PgServer::start().expect("PostgreSQL must be installed and start");
    let db = Database::connect(&server.url()).await.expect("connect");
    let plume_sql::Pool::Postgres(pool) = db.pool() else {
        panic!("a PostgreSQL pool");
    };
    sqlx::raw_sql("CREATE TABLE words (id BIGSERIAL PRIMARY KEY, name TEXT COLLATE \"und-x-icu\")")
        .execute(pool)
        .await
        .expect("a table with an ICU collation");
    let words: plume_sql::SqlService = plume_sql::SqlService::builder(&db, "words")
        .column("name", plume_sql::ColumnType::String)
        .build()
        .expect("valid");
    for name in ["b", "A", "a", "B"] {
        words
            .create(json!({ "name": name }), Params::new())
            .await
            .expect("create");
    }
    let names = |found: serde_json::Value| -> Vec<String> {
        found
            .as_array()
            .expect("an array")
            .iter()
            .filter_map(|r| r["name"].as_str().map(str::to_owned))
            .collect()
    };
    let sorted = words
        .find(Params::new().with_query(json!({"$sort": {"name": 1}})))
        .await
        .expect("find");
    assert_eq!(names(sorted), ["A", "B", "a", "b"]);
    let below = words
        .find(Params::new().with_query(json!({"name": {"$lt": "a"}, "$sort": {"name": -1}})))
        .await
        .expect("find");
    assert_eq!(names(below), ["B", "A"]);
    db.close().await;
    drop(server);
}

/// Replicas that start at once on one database each create the table: on PostgreSQL two
/// concurrent `CREATE TABLE IF NOT EXISTS` can fail (`type "…" already exists`), so the adapter
/// serializes them. Several pools (as several processes have) race on fresh tables, round after
/// round; every creation succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_creating_one_table_at_once_all_succeed() {
    use plume_sql::{ColumnType, SqlService};
    let server = PgServer::start().expect("PostgreSQL must be installed and start");
    let mut pools = Vec::new();
    for _ in 0..4 {
        pools.push(Database::connect(&server.url()).await.expect("connect"));
    }
    for round in 0..15 {
        let table = format!("raced_{round}");
        let creations = pools.iter().map(|db| {
            let table = table.clone();
            async move {
                let service: SqlService = SqlService::builder(db, &table)
                    .column("text", ColumnType::String)
                    .build()
                    .expect("valid names");
                service.create_table().await
            }
        });
        for (i, result) in futures::future::join_all(creations)
            .await
            .into_iter()
            .enumerate()
        {
            if let Err(e) = result {
                panic!("round {round}: creator {i} failed: {e:?}");
            }
        }
    }
    for db in pools {
        db.close().await;
    }
    drop(server);
}
