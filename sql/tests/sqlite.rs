//! The SQL adapter on SQLite: in memory and in a WAL file shared by two pools.

mod common;

use plume::Params;
use plume::memory::Multi;
use plume_sql::Database;
use serde_json::{Value, json};

#[tokio::test]
async fn feathers_semantics_on_sqlite_in_memory() {
    let db = Database::connect("sqlite::memory:").await.expect("connect");
    common::all(&db).await;
}

#[tokio::test]
async fn a_file_is_shared_by_two_pools_in_wal_mode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("shared.db");
    let url = path.to_str().expect("utf-8 path");
    let first = Database::connect(url).await.expect("connect");
    let second = Database::connect(&format!("sqlite://{url}"))
        .await
        .expect("connect");
    let a = common::people(&first, "shared", Multi::None).await;
    let b = common::people(&second, "shared", Multi::None).await;
    a.create(json!({"name": "from a"}), Params::new())
        .await
        .expect("create");
    let seen = b.find(Params::new()).await.expect("find");
    assert_eq!(seen[0]["name"], "from a");
    if let plume_sql::Pool::Sqlite(pool) = first.pool() {
        let mode: (String,) = sqlx::query_as("PRAGMA journal_mode")
            .fetch_one(pool)
            .await
            .expect("pragma");
        assert_eq!(mode.0, "wal");
        // WAL with synchronous = NORMAL (1), the documented default.
        let sync: (i64,) = sqlx::query_as("PRAGMA synchronous")
            .fetch_one(pool)
            .await
            .expect("pragma");
        assert_eq!(sync.0, 1);
    }
    first.close().await;
    let err = a.find(Params::new()).await.expect_err("closed");
    assert_eq!(err.kind(), plume::ErrorKind::Unavailable);
}

/// Two pools (as two processes would) writing one file at once: the busy timeout and
/// `BEGIN IMMEDIATE` make every write wait its turn instead of failing with "database is locked".
#[tokio::test]
async fn a_file_may_flush_every_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("full.db");
    let options = plume_sql::ConnectOptions {
        sqlite_synchronous: sqlx::sqlite::SqliteSynchronous::Full,
        ..Default::default()
    };
    let db = Database::connect_with(path.to_str().expect("utf-8 path"), options)
        .await
        .expect("connect");
    let plume_sql::Pool::Sqlite(pool) = db.pool() else {
        panic!("a SQLite pool")
    };
    let sync: (i64,) = sqlx::query_as("PRAGMA synchronous")
        .fetch_one(pool)
        .await
        .expect("pragma");
    assert_eq!(sync.0, 2, "FULL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_on_one_file_all_succeed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = dir.path().join("busy.db");
    let url = url.to_str().expect("utf-8 path");
    let first = Database::connect(url).await.expect("connect");
    let second = Database::connect(url).await.expect("connect");
    let a = std::sync::Arc::new(common::people(&first, "busy", Multi::All).await);
    let b = std::sync::Arc::new(common::people(&second, "busy", Multi::All).await);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..100 {
        let service = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.spawn(async move {
            service
                .create(
                    json!([{"name": format!("w{i}")}, {"name": format!("x{i}")}]),
                    Params::new(),
                )
                .await?;
            // A read, then a write, in one transaction.
            let query = json!({"name": {"$in": [format!("w{i}"), format!("x{i}")]}});
            service
                .patch(None, json!({"age": i}), Params::new().with_query(query))
                .await
        });
    }
    while let Some(outcome) = tasks.join_next().await {
        outcome.expect("task").expect("every write succeeds");
    }
    let all = a
        .find(Params::new().with_query(json!({"$limit": 1000})))
        .await
        .expect("find");
    let all = all.as_array().expect("an array");
    assert_eq!(all.len(), 200);
    let unpatched: Vec<&Value> = all.iter().filter(|r| !r["age"].is_i64()).collect();
    assert!(
        unpatched.is_empty(),
        "every record was patched: {unpatched:?}"
    );
}
