//! The SQL adapter on SQLite: in memory and in a WAL file shared by two pools.

mod common;

use plume::Params;
use plume::memory::Multi;
use plume_sql::Database;
use serde_json::json;

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
    }
    first.close().await;
    let err = a.find(Params::new()).await.expect_err("closed");
    assert_eq!(err.kind(), plume::ErrorKind::Unavailable);
}
