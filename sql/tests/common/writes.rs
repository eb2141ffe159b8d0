//! The write checks: multi, errors, typed records, transactions, ids, migrations.

use plume::hooks::hook;
use plume::memory::Multi;
use plume::{App, Error, ErrorKind, Id, Method, Params};
use plume_sql::{ColumnType, Database, IdGeneration, SqlService, transaction};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{drop_table, no_pages, people, q, seed};

/// `multi`, the one-transaction multi create, and per-call `params.extra["multi"]`.
pub(crate) async fn multi(db: &Database) {
    let people = people(db, "multi_people", Multi::None).await;
    let err = people
        .create(json!([]), Params::new())
        .await
        .expect_err("no multi");
    assert_eq!(err.kind(), ErrorKind::MethodNotAllowed);
    let err = people
        .patch(None, json!({"age": 1}), Params::new())
        .await
        .expect_err("no multi");
    assert_eq!(err.message(), "Can not patch multiple entries");
    let err = people
        .remove(None, Params::new())
        .await
        .expect_err("no multi");
    assert_eq!(err.message(), "Can not remove multiple entries");

    let mut multi = Params::new();
    multi
        .extra
        .insert("multi".into(), json!(["create", "patch", "remove"]));
    let created = people
        .create(
            json!([{"name": "A", "age": 1, "email": "a@x"}, {"name": "B", "age": 2, "email": "b@x"}]),
            multi.clone(),
        )
        .await
        .expect("multi create");
    assert_eq!(created.as_array().map(Vec::len), Some(2));
    assert_eq!(created[1]["name"], "B");

    // One transaction: a conflict in the third record stores none of the three.
    let err = people
        .create(
            json!([{"name": "C", "email": "c@x"}, {"name": "D"}, {"name": "E", "email": "a@x"}]),
            multi.clone(),
        )
        .await
        .expect_err("duplicate email");
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert!(
        !err.message().contains("INSERT"),
        "no SQL text: {}",
        err.message()
    );
    let all = people.find(Params::new()).await.expect("find");
    assert_eq!(
        all.as_array().map(Vec::len),
        Some(2),
        "nothing of the failed batch"
    );

    let mut params = multi.clone();
    params.query = json!({"age": {"$gte": 1}})
        .as_object()
        .cloned()
        .unwrap_or_default();
    let patched = people
        .patch(None, json!({"age": 7}), params.clone())
        .await
        .expect("multi patch");
    assert_eq!(
        patched,
        json!([
            {"id": 1, "name": "A", "age": 7, "created": null, "score": null, "tags": null, "email": "a@x"},
            {"id": 2, "name": "B", "age": 7, "created": null, "score": null, "tags": null, "email": "b@x"}
        ])
    );
    let removed = people.remove(None, multi).await.expect("multi remove");
    assert_eq!(removed.as_array().map(Vec::len), Some(2));
    assert_eq!(people.find(Params::new()).await.expect("find"), json!([]));
}

fn assert_bad_request(err: &Error, field: &str) {
    assert_eq!(err.kind(), ErrorKind::BadRequest, "{err:?}");
    assert!(
        err.message().contains(field),
        "names '{field}': {}",
        err.message()
    );
    for sql in ["SELECT", "INSERT", "UPDATE", "syntax", "sqlite", "postgres"] {
        assert!(
            !err.message().contains(sql),
            "no SQL text: {}",
            err.message()
        );
    }
}

/// Bad input gets clear Feathers errors.
pub(crate) async fn errors(db: &Database) {
    let people = people(db, "error_people", Multi::None).await;
    seed(&people).await;
    let find_err = |query: Value| {
        let people = &people;
        async move { people.find(q(query)).await.expect_err("bad query") }
    };
    assert_bad_request(&find_err(json!({"nope": 1})).await, "nope");
    assert_bad_request(&find_err(json!({"$or": [{"nope": 1}]})).await, "nope");
    assert_bad_request(&find_err(json!({"$select": ["nope"]})).await, "nope");
    assert_bad_request(&find_err(json!({"$sort": {"nope": 1}})).await, "nope");
    assert_bad_request(&find_err(json!({"age": {"$gt": "old"}})).await, "age");
    assert_bad_request(&find_err(json!({"age": {"$like": "1%"}})).await, "age");
    assert_bad_request(&find_err(json!({"tags": "x"})).await, "tags");
    assert_bad_request(&find_err(json!({"created": "maybe"})).await, "created");
    assert_bad_request(&find_err(json!({"name": {"$regex": "x"}})).await, "$regex");
    assert_bad_request(&find_err(json!({"$foo": 1})).await, "$foo");

    let err = people
        .create(json!({"name": "X", "nope": 1}), Params::new())
        .await
        .expect_err("unknown field");
    assert_bad_request(&err, "nope");
    let err = people
        .create(json!({"name": "X", "age": "old"}), Params::new())
        .await
        .expect_err("wrong type");
    assert_bad_request(&err, "age");
    let err = people
        .patch(Some(Id::Int(1)), json!({"created": 3}), Params::new())
        .await
        .expect_err("wrong type");
    assert_bad_request(&err, "created");
    let err = people
        .create(json!("text"), Params::new())
        .await
        .expect_err("not an object");
    assert_eq!(err.kind(), ErrorKind::BadRequest);

    // An id the table cannot have is simply not found (what the Feathers adapter tests want).
    for id in [
        Id::from("568225fbfe21222432e836ff"),
        Id::Int(123_456_789),
        Id::from("01"),
    ] {
        let err = people
            .get(id.clone(), Params::new())
            .await
            .expect_err("no such id");
        assert_eq!(err.kind(), ErrorKind::NotFound, "{id:?}");
        let err = people
            .patch(Some(id.clone()), json!({"age": 1}), Params::new())
            .await
            .expect_err("no such id");
        assert_eq!(err.kind(), ErrorKind::NotFound);
        let err = people
            .remove(Some(id), Params::new())
            .await
            .expect_err("no such id");
        assert_eq!(err.kind(), ErrorKind::NotFound);
    }
    // get/update/patch/remove also apply the query.
    let err = people
        .update(Id::Int(1), json!({"name": "Y"}), q(json!({"name": "Bob"})))
        .await
        .expect_err("query does not match");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(
        people.get(Id::Int(1), Params::new()).await.expect("get")["name"],
        "Alice",
        "not updated"
    );

    // A unique violation is a Conflict, and the explicit id of an existing record too.
    people
        .create(json!({"name": "E", "email": "e@x"}), Params::new())
        .await
        .expect("create");
    let err = people
        .create(json!({"name": "F", "email": "e@x"}), Params::new())
        .await
        .expect_err("duplicate");
    assert_eq!(err.kind(), ErrorKind::Conflict);
    let err = people
        .create(json!({"id": 1, "name": "Again"}), Params::new())
        .await
        .expect_err("duplicate id");
    assert_eq!(err.kind(), ErrorKind::Conflict);
}

/// A typed record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Todo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub text: String,
    pub done: bool,
}

/// UUID ids and a typed `T` whose rules every stored record must pass.
pub(crate) async fn typed_with_uuids(db: &Database) {
    drop_table(db, "typed_todos").await;
    let todos: SqlService<Todo> = SqlService::builder(db, "typed_todos")
        .id("uid", IdGeneration::Uuid)
        .column("text", ColumnType::String)
        .column("done", ColumnType::Boolean)
        .build()
        .expect("valid");
    todos.create_table().await.expect("table");
    let created = todos
        .create(json!({"text": "write", "done": false}), Params::new())
        .await
        .expect("create");
    let uid = created["uid"].as_str().expect("a uuid").to_owned();
    assert!(uuid::Uuid::parse_str(&uid).is_ok(), "{uid}");
    let err = todos
        .create(json!({"text": "no done"}), Params::new())
        .await
        .expect_err("T needs done");
    assert_eq!(err.kind(), ErrorKind::BadRequest);
    let err = todos
        .patch(
            Some(Id::Str(uid.clone())),
            json!({"done": null}),
            Params::new(),
        )
        .await
        .expect_err("T needs done");
    assert_eq!(err.kind(), ErrorKind::BadRequest);
    assert_eq!(
        todos
            .find(Params::new())
            .await
            .expect("find")
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    let got: Todo = todos
        .get_typed(Id::Str(uid.clone()), Params::new())
        .await
        .expect("get");
    assert_eq!(got.text, "write");
    let err = todos
        .get(Id::from("not-a-uuid"), Params::new())
        .await
        .expect_err("none");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let listed = todos.find_typed(Params::new()).await.expect("find");
    assert_eq!(listed, vec![got]);
}

/// The transaction hook: a failing after hook rolls the whole call back, a successful call
/// commits, and a service called by a hook with the call's params joins the transaction.
pub(crate) async fn transactions(db: &Database) {
    let people = people(db, "tx_people", Multi::All).await;
    let audit = people_like(db, "tx_audit").await;
    let app = App::new();
    app.use_service("audit", audit);
    let handle = app.use_service("people", people);
    handle.hooks().around(transaction(db));
    handle.hooks().after_for(
        [Method::Create],
        hook(|ctx| {
            Box::pin(async move {
                // Runs inside the transaction: the audit row goes with the call.
                let audit = ctx.app.require("audit")?;
                audit
                    .create(json!({"name": "audit"}), ctx.params.clone())
                    .await?;
                if ctx.params.extra.contains_key("fail") {
                    return Err(Error::bad_request("the after hook failed"));
                }
                Ok(())
            })
        }),
    );
    let people = app.require("people").expect("service");
    let audit = app.require("audit").expect("service");

    people
        .create(json!({"name": "kept"}), Params::new())
        .await
        .expect("committed");
    let err = people
        .create(json!({"name": "rolled back"}), failing())
        .await
        .expect_err("after hook fails");
    assert_eq!(err.message(), "the after hook failed");
    let stored = people.find(no_pages()).await.expect("find");
    assert_eq!(stored.as_array().map(Vec::len), Some(1), "{stored}");
    assert_eq!(stored[0]["name"], "kept");
    let audited = audit.find(no_pages()).await.expect("find");
    assert_eq!(
        audited.as_array().map(Vec::len),
        Some(1),
        "the failed call's audit row was rolled back too: {audited}"
    );

    // By hand: begin, two calls, roll back.
    let mut params = Params::new();
    let tx = db.begin(&mut params).await.expect("begin");
    audit
        .create(json!({"name": "one"}), params.clone())
        .await
        .expect("in tx");
    audit
        .create(json!({"name": "two"}), params.clone())
        .await
        .expect("in tx");
    let inside = audit.find(params.clone()).await.expect("find");
    assert_eq!(
        inside.as_array().map(Vec::len),
        Some(3),
        "seen inside the transaction"
    );
    tx.rollback().await.expect("rollback");
    let after = audit.find(Params::new()).await.expect("find");
    assert_eq!(after.as_array().map(Vec::len), Some(1));
    let err = audit.find(params).await.expect_err("ended");
    assert_eq!(err.kind(), ErrorKind::GeneralError);
}

fn failing() -> Params {
    let mut params = Params::new();
    params.extra.insert("fail".into(), Value::Bool(true));
    params
}

async fn people_like(db: &Database, table: &str) -> SqlService {
    people(db, table, Multi::None).await
}

/// An explicit id is kept, and ids made later do not collide with it.
pub(crate) async fn explicit_ids(db: &Database) {
    let people = people(db, "explicit_people", Multi::None).await;
    let ten = people
        .create(json!({"id": 10, "name": "ten"}), Params::new())
        .await
        .expect("explicit id");
    assert_eq!(ten["id"], 10);
    let next = people
        .create(json!({"name": "next"}), Params::new())
        .await
        .expect("a generated id after an explicit one");
    assert_eq!(next["id"], 11);
    let err = people
        .create(json!({"id": "x", "name": "bad"}), Params::new())
        .await
        .expect_err("an integer id");
    assert_eq!(err.kind(), ErrorKind::BadRequest);
}

/// A table made by sqlx migrations (the same SQL on both backends).
pub(crate) async fn migrations(db: &Database) {
    drop_table(db, "notes").await;
    drop_table(db, "_sqlx_migrations").await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/migrations");
    let migrator = plume_sql::sqlx::migrate::Migrator::new(dir)
        .await
        .expect("migrations");
    db.migrate(&migrator).await.expect("migrate");
    db.migrate(&migrator)
        .await
        .expect("migrating twice is a no-op");
    let notes: SqlService = SqlService::builder(db, "notes")
        .id("id", IdGeneration::Uuid)
        .column("text", ColumnType::String)
        .column("pinned", ColumnType::Boolean)
        .build()
        .expect("valid");
    let note = notes
        .create(json!({"text": "migrated", "pinned": true}), Params::new())
        .await
        .expect("create");
    assert_eq!(note["pinned"], true);
    let err = notes
        .create(json!({"pinned": true}), Params::new())
        .await
        .expect_err("text is NOT NULL");
    assert_eq!(err.kind(), ErrorKind::BadRequest);
    assert_eq!(err.message(), "'text' is required");
}

/// Multi writes larger than one `IN (…)` chunk: every record, in order.
pub(crate) async fn large_multi(db: &Database) {
    let people = people(db, "large_people", Multi::All).await;
    let batch: Vec<Value> = (0..2500)
        .map(|i| json!({"name": format!("p{i:04}"), "age": i % 7}))
        .collect();
    let created = people
        .create(Value::Array(batch), Params::new())
        .await
        .expect("multi create");
    assert_eq!(created.as_array().map(Vec::len), Some(2500));
    let patched = people
        .patch(
            None,
            json!({"created": true}),
            q(json!({"$sort": {"name": -1}})),
        )
        .await
        .expect("multi patch");
    let patched = patched.as_array().expect("an array");
    assert_eq!(patched.len(), 2500);
    assert_eq!(patched[0]["name"], "p2499", "in $sort order");
    assert!(patched.iter().all(|r| r["created"] == true));
    let removed = people
        .remove(None, q(json!({"age": {"$lt": 3}})))
        .await
        .expect("multi remove");
    let expected = (0..2500).filter(|i| i % 7 < 3).count();
    assert_eq!(removed.as_array().map(Vec::len), Some(expected));
    let left = people.find(no_pages()).await.expect("find");
    assert_eq!(left.as_array().map(Vec::len), Some(2500 - expected));
}
