//! Behaviour checks shared by the SQLite and PostgreSQL tests: each takes a database and
//! asserts the Feathers semantics on it.

#![allow(dead_code)]

pub(crate) mod postgres;
mod writes;

pub(crate) use writes::*;

use plume::memory::Multi;
use plume::{ErrorKind, Id, Params};
use plume_sql::{ColumnType, Database, SqlService};
use serde_json::{Value, json};

/// A fresh `people` table (dropped first) with every column type.
pub(crate) async fn people(db: &Database, table: &str, multi: Multi) -> SqlService {
    drop_table(db, table).await;
    let service: SqlService = SqlService::builder(db, table)
        .column("name", ColumnType::String)
        .column("age", ColumnType::Integer)
        .column("created", ColumnType::Boolean)
        .column("score", ColumnType::Number)
        .column("tags", ColumnType::Json)
        .unique_column("email", ColumnType::String)
        .multi(multi)
        .build()
        .expect("valid names");
    service.create_table().await.expect("create table");
    service
}

pub(crate) async fn drop_table(db: &Database, table: &str) {
    let sql = format!("DROP TABLE IF EXISTS {table}");
    match db.pool() {
        plume_sql::Pool::Sqlite(p) => {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(p)
                .await
                .expect("drop");
        }
        plume_sql::Pool::Postgres(p) => {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(p)
                .await
                .expect("drop");
        }
    }
}

pub(super) fn q(query: Value) -> Params {
    Params::new().with_query(query)
}

pub(super) fn no_pages() -> Params {
    let mut params = Params::new();
    params.extra.insert("paginate".into(), Value::Bool(false));
    params
}

pub(super) async fn names(service: &SqlService, query: Value) -> Vec<String> {
    let found = service.find(q(query)).await.expect("find");
    found
        .as_array()
        .expect("an array")
        .iter()
        .map(|r| r["name"].as_str().unwrap_or("<null>").to_owned())
        .collect()
}

pub(super) async fn seed(service: &SqlService) {
    for (name, age, created, score) in [
        ("Alice", Some(19), true, 1.5),
        ("Bob", Some(25), false, 2.0),
        ("Doug", Some(32), true, 3.25),
        ("bob", None, false, 0.5),
    ] {
        service
            .create(
                json!({"name": name, "age": age, "created": created, "score": score}),
                Params::new(),
            )
            .await
            .expect("create");
    }
}

/// create/get/find/update/patch/remove and their results.
pub(crate) async fn crud(db: &Database) {
    let people = people(db, "crud_people", Multi::None).await;
    let doug = people
        .create(
            json!({"name": "Doug", "age": 32, "tags": {"a": [1, 2]}, "score": 2.5}),
            Params::new(),
        )
        .await
        .expect("create");
    assert_eq!(
        doug,
        json!({"id": 1, "name": "Doug", "age": 32, "created": null, "score": 2.5,
               "tags": {"a": [1, 2]}, "email": null})
    );
    assert_eq!(
        people.get(Id::Int(1), Params::new()).await.expect("get"),
        doug
    );
    // REST ids arrive as strings.
    assert_eq!(
        people.get(Id::from("1"), Params::new()).await.expect("get"),
        doug
    );
    let found = people.find(Params::new()).await.expect("find");
    assert_eq!(found, json!([doug]));

    let updated = people
        .update(
            Id::Int(1),
            json!({"name": "Dougler", "id": 99}),
            Params::new(),
        )
        .await
        .expect("update");
    assert_eq!(updated["id"], 1, "update keeps the id");
    assert_eq!(updated["name"], "Dougler");
    assert_eq!(updated["age"], Value::Null, "update replaces the record");
    assert_eq!(updated["tags"], Value::Null);

    let patched = people
        .patch(
            Some(Id::Int(1)),
            json!({"age": 40.0, "score": 3}),
            q(json!({"$select": ["age"]})),
        )
        .await
        .expect("patch");
    assert_eq!(patched, json!({"id": 1, "age": 40}));
    let stored = people.get(Id::Int(1), Params::new()).await.expect("get");
    assert_eq!(stored["name"], "Dougler", "patch keeps other fields");
    assert_eq!(
        stored["score"], 3,
        "an integral number comes back as an integer"
    );

    let removed = people
        .remove(Some(Id::Int(1)), Params::new())
        .await
        .expect("remove");
    assert_eq!(removed["name"], "Dougler");
    let err = people
        .get(Id::Int(1), Params::new())
        .await
        .expect_err("gone");
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(err.message(), "No record found for id '1'");
}

/// Every operator of the query syntax, with the memory adapter's rules.
pub(crate) async fn query_syntax(db: &Database) {
    let people = people(db, "query_people", Multi::None).await;
    seed(&people).await;

    assert_eq!(names(&people, json!({"name": "Alice"})).await, ["Alice"]);
    assert_eq!(
        names(&people, json!({"name": "Alice", "age": 20})).await,
        Vec::<String>::new()
    );
    assert_eq!(names(&people, json!({"age": null})).await, ["bob"]);
    // $ne includes records without a value, as in the memory adapter.
    assert_eq!(
        names(&people, json!({"age": {"$ne": 25}})).await,
        ["Alice", "Doug", "bob"]
    );
    assert_eq!(
        names(&people, json!({"age": {"$ne": null}})).await,
        ["Alice", "Bob", "Doug"]
    );
    assert_eq!(
        names(
            &people,
            json!({"name": {"$in": ["Alice", "Bob"]}, "$sort": {"name": -1}})
        )
        .await,
        ["Bob", "Alice"]
    );
    assert_eq!(
        names(&people, json!({"age": {"$in": [19, null]}})).await,
        ["Alice", "bob"]
    );
    assert_eq!(
        names(&people, json!({"age": {"$in": []}})).await,
        Vec::<String>::new()
    );
    assert_eq!(
        names(&people, json!({"name": {"$nin": ["Alice", "Bob"]}})).await,
        ["Doug", "bob"]
    );
    assert_eq!(
        names(&people, json!({"age": {"$nin": [19, null]}})).await,
        ["Bob", "Doug"]
    );
    assert_eq!(names(&people, json!({"age": {"$lt": 25}})).await, ["Alice"]);
    assert_eq!(
        names(&people, json!({"age": {"$lte": 25}})).await,
        ["Alice", "Bob"]
    );
    assert_eq!(names(&people, json!({"age": {"$gt": 25}})).await, ["Doug"]);
    assert_eq!(
        names(&people, json!({"age": {"$gte": 25, "$lt": 30}})).await,
        ["Bob"]
    );
    assert_eq!(
        names(&people, json!({"score": {"$gt": 1.5}})).await,
        ["Bob", "Doug"]
    );
    assert_eq!(
        names(&people, json!({"created": true, "$sort": {"name": 1}})).await,
        ["Alice", "Doug"]
    );
    assert_eq!(
        names(
            &people,
            json!({"$or": [{"name": "Doug"}, {"age": {"$gte": 18, "$lt": 25}}], "$sort": {"name": 1}})
        )
        .await,
        ["Alice", "Doug"]
    );
    assert_eq!(
        names(
            &people,
            json!({"$and": [{"$or": [{"name": "Alice"}]}, {"age": 19}]})
        )
        .await,
        ["Alice"]
    );
    assert_eq!(
        names(&people, json!({"$or": []})).await,
        Vec::<String>::new()
    );
    // Text sorts by code point ("B" < "D" < "b"); NULL first ascending, last descending.
    assert_eq!(
        names(&people, json!({"$sort": {"name": 1}})).await,
        ["Alice", "Bob", "Doug", "bob"]
    );
    assert_eq!(
        names(&people, json!({"$sort": {"age": 1}})).await,
        ["bob", "Alice", "Bob", "Doug"]
    );
    assert_eq!(
        names(&people, json!({"$sort": {"age": -1}})).await,
        ["Doug", "Bob", "Alice", "bob"]
    );
    assert_eq!(
        names(&people, json!({"$sort": {"created": -1, "name": -1}})).await,
        ["Doug", "Alice", "bob", "Bob"]
    );
    assert_eq!(
        names(
            &people,
            json!({"$sort": {"name": "1"}, "$skip": "1", "$limit": "2"})
        )
        .await,
        ["Bob", "Doug"]
    );
    assert_eq!(
        names(&people, json!({"$sort": {"name": 1}, "$skip": 3})).await,
        ["bob"]
    );
    assert_eq!(
        names(&people, json!({"$limit": 0})).await,
        Vec::<String>::new()
    );

    // $select: the id is always there.
    let selected = people
        .find(q(json!({"name": "Alice", "$select": ["name"]})))
        .await
        .expect("find");
    assert_eq!(selected, json!([{"id": 1, "name": "Alice"}]));

    // $like is case-sensitive on both backends, $ilike is not.
    assert_eq!(
        names(&people, json!({"name": {"$like": "B%"}})).await,
        ["Bob"]
    );
    assert_eq!(
        names(&people, json!({"name": {"$like": "_o%"}})).await,
        ["Bob", "Doug", "bob"]
    );
    assert_eq!(
        names(&people, json!({"name": {"$ilike": "b%"}})).await,
        ["Bob", "bob"]
    );
    assert_eq!(
        names(&people, json!({"name": {"$notlike": "%o%"}})).await,
        ["Alice"]
    );
    assert_eq!(
        names(
            &people,
            json!({"$or": [{"name": {"$ilike": "ALI%"}}, {"age": 32}]})
        )
        .await,
        ["Alice", "Doug"]
    );

    // REST queries arrive as strings and are coerced by the column types.
    assert_eq!(
        names(
            &people,
            json!({"age": {"$gt": "20"}, "created": "false", "score": {"$in": {"0": "2"}}})
        )
        .await,
        ["Bob"]
    );
}

/// Pagination with a COUNT total, per-call overrides, and `$limit` capped at `max`.
pub(crate) async fn pagination(db: &Database) {
    drop_table(db, "paged_people").await;
    let people: SqlService = SqlService::builder(db, "paged_people")
        .column("name", ColumnType::String)
        .column("age", ColumnType::Integer)
        .column("created", ColumnType::Boolean)
        .column("score", ColumnType::Number)
        .paginate(2, 3)
        .build()
        .expect("valid");
    people.create_table().await.expect("table");
    seed(&people).await;
    let page = people
        .find(q(json!({"$sort": {"name": -1}})))
        .await
        .expect("find");
    assert_eq!(page["total"], 4);
    assert_eq!(page["limit"], 2);
    assert_eq!(page["skip"], 0);
    assert_eq!(page["data"][0]["name"], "bob");
    let page = people
        .find(q(
            json!({"$limit": 10, "$skip": 1, "age": {"$ne": null}, "$sort": {"age": 1}}),
        ))
        .await
        .expect("find");
    assert_eq!(page["total"], 3);
    assert_eq!(page["limit"], 3, "capped at max");
    assert_eq!(page["data"].as_array().map(Vec::len), Some(2));
    let page = people.find(q(json!({"$limit": 0}))).await.expect("find");
    assert_eq!(page["total"], 4);
    assert_eq!(page["data"], json!([]));
    let all = people.find(no_pages()).await.expect("find");
    assert_eq!(all.as_array().map(Vec::len), Some(4));
    let mut params = Params::new();
    params
        .extra
        .insert("paginate".into(), json!({"default": 3, "max": 10}));
    let page = people.find(params).await.expect("find");
    assert_eq!(page["limit"], 3);
}

/// Every check above.
pub(crate) async fn all(db: &Database) {
    large_multi(db).await;
    explicit_ids(db).await;
    migrations(db).await;
    crud(db).await;
    query_syntax(db).await;
    pagination(db).await;
    multi(db).await;
    errors(db).await;
    typed_with_uuids(db).await;
    transactions(db).await;
}
