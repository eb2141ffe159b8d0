//! Group commit of single creates on SQLite (`sql/src/batch.rs`): creates that arrive together
//! share one transaction, and each caller still gets its own outcome.

use futures::future::join_all;
use plume::{ErrorKind, Params};
use plume_sql::{ColumnType, Database, SqlService};
use serde::Deserialize;
use serde_json::{Value, json};

async fn file_db(dir: &tempfile::TempDir) -> Database {
    let path = dir.path().join("group.db");
    Database::connect(path.to_str().expect("utf-8 path"))
        .await
        .expect("connect")
}

async fn accounts<T: serde::de::DeserializeOwned>(db: &Database) -> SqlService<T> {
    let service = SqlService::builder(db, "accounts")
        .unique_column("email", ColumnType::String)
        .column("age", ColumnType::Integer)
        .build()
        .expect("build");
    service.create_table().await.expect("table");
    service
}

fn all(mut params: Params) -> Params {
    params.extra.insert("paginate".into(), json!(false));
    params
}

async fn stored(service: &SqlService<Value>) -> Vec<Value> {
    let found = service.find(all(Params::new())).await.expect("find");
    found.as_array().expect("array").clone()
}

/// 200 creates at once: every one stored once, each caller gets its own record and id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_at_once_each_get_their_own_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = file_db(&dir).await;
    let service = accounts::<Value>(&db).await;
    // Every fifth gives its own id (negative, out of the way of the ids SQLite makes): those
    // break the runs of rows that share one statement.
    let calls = (0..200i64).map(|i| {
        let data = match i % 5 {
            0 => json!({"id": -i - 1, "email": format!("user{i}@example.com"), "age": i}),
            _ => json!({"email": format!("user{i}@example.com"), "age": i}),
        };
        service.create(data, Params::new())
    });
    let created: Vec<Value> = join_all(calls)
        .await
        .into_iter()
        .map(|r| r.expect("create"))
        .collect();
    for (i, record) in (0i64..).zip(&created) {
        assert_eq!(record["email"], format!("user{i}@example.com"));
        assert_eq!(record["age"], i);
        if i % 5 == 0 {
            assert_eq!(record["id"], -i - 1);
        }
    }
    // What each caller was told is what the table holds.
    let mut held = stored(&service).await;
    held.sort_by_key(|r| r["age"].as_i64());
    assert_eq!(held, created);
    let mut ids: Vec<i64> = created
        .iter()
        .map(|r| r["id"].as_i64().expect("id"))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 200);
}

/// A unique violation in the middle of a group fails that create alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflict_fails_only_its_own_create() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = file_db(&dir).await;
    let service = accounts::<Value>(&db).await;
    service
        .create(
            json!({"email": "taken@example.com", "age": 1}),
            Params::new(),
        )
        .await
        .expect("first");
    let emails: Vec<String> = (0..50)
        .map(|i| match i {
            10 | 30 => "taken@example.com".to_string(),
            _ => format!("user{i}@example.com"),
        })
        .collect();
    let outcomes = join_all(
        emails
            .iter()
            .map(|email| service.create(json!({"email": email, "age": 2}), Params::new())),
    )
    .await;
    for (i, outcome) in outcomes.iter().enumerate() {
        match i {
            10 | 30 => {
                let err = outcome.as_ref().expect_err("duplicate");
                assert_eq!(err.kind(), ErrorKind::Conflict);
            }
            _ => assert_eq!(outcome.as_ref().expect("create")["email"], emails[i]),
        }
    }
    assert_eq!(stored(&service).await.len(), 1 + 48);
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Adult {
    email: String,
    age: u8,
}

/// A record that does not fit the service's type fails its create, nothing of it is stored,
/// and the others of its group are stored (they run again after the rollback).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_of_the_wrong_type_is_rolled_back_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = file_db(&dir).await;
    let typed = accounts::<Adult>(&db).await;
    let plain: SqlService<Value> = SqlService::builder(&db, "accounts")
        .unique_column("email", ColumnType::String)
        .column("age", ColumnType::Integer)
        .build()
        .expect("build");
    let ages: Vec<i64> = (0..40).map(|i| if i % 7 == 3 { -5 } else { i }).collect();
    let outcomes = join_all(ages.iter().enumerate().map(|(i, age)| {
        typed.create(
            json!({"email": format!("u{i}@example.com"), "age": age}),
            Params::new(),
        )
    }))
    .await;
    let mut expected = Vec::new();
    for (i, (outcome, age)) in outcomes.iter().zip(&ages).enumerate() {
        if *age < 0 {
            let err = outcome.as_ref().expect_err("negative age");
            assert_eq!(err.kind(), ErrorKind::BadRequest);
            assert_eq!(err.data(), Some(&json!({"field": "age"})));
        } else {
            outcome.as_ref().expect("create");
            expected.push(format!("u{i}@example.com"));
        }
    }
    let mut emails: Vec<String> = stored(&plain)
        .await
        .iter()
        .map(|r| r["email"].as_str().expect("email").to_string())
        .collect();
    emails.sort();
    expected.sort();
    assert_eq!(emails, expected);
}

/// A create inside a caller's transaction does not go to the group: it rolls back with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_in_a_transaction_rolls_back_with_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = file_db(&dir).await;
    let service = accounts::<Value>(&db).await;
    let mut params = Params::new();
    let tx = db.begin(&mut params).await.expect("begin");
    service
        .create(json!({"email": "tx@example.com", "age": 3}), params.clone())
        .await
        .expect("create in transaction");
    tx.rollback().await.expect("rollback");
    assert!(stored(&service).await.is_empty());
}
