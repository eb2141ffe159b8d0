//! The memory adapter: every operator, pagination edges, multi, ids, `$select`, errors, coercion.

use std::sync::Arc;

use plume::memory::Multi;
use plume::query::{FieldType, Schema, coerce};
use plume::{
    Error, ErrorKind, Id, MemoryOptions, MemoryService, Method, Params, Result, Service, dispatch,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

fn seed() -> Vec<Value> {
    vec![
        json!({"text": "a", "done": false, "priority": 1, "tag": "x"}),
        json!({"text": "b", "done": true, "priority": 2, "tag": "x"}),
        json!({"text": "c", "done": false, "priority": 3, "tag": "y"}),
        json!({"text": "d", "done": true, "priority": 1, "tag": "y"}),
        json!({"text": "e", "done": false, "priority": 2.5, "tag": "x", "extra": null}),
        // A string priority: range operators are type-strict, so it only meets strings.
        json!({"text": "f", "done": true, "priority": "3", "tag": "z"}),
    ]
}

fn service(options: MemoryOptions) -> MemoryService {
    MemoryService::with_options(options)
        .with_records(seed())
        .expect("valid seed")
}

fn query(q: Value) -> Params {
    Params::new().with_query(q)
}

fn ids(result: &Value) -> Vec<i64> {
    let list = match result {
        Value::Array(items) => items,
        other => other["data"].as_array().expect("a page"),
    };
    list.iter()
        .map(|r| r["id"].as_i64().expect("an integer id"))
        .collect()
}

async fn find_ids(store: &MemoryService, q: Value) -> Result<Vec<i64>> {
    Ok(ids(&store.find(query(q)).await?))
}

#[tokio::test]
async fn every_operator_and_combination() {
    let store = service(MemoryOptions::new());
    let all = vec![0, 1, 2, 3, 4, 5];
    let table: Vec<(Value, Vec<i64>)> = vec![
        (json!({}), all.clone()),
        (json!({"text": "c"}), vec![2]),
        (json!({"priority": 1}), vec![0, 3]),
        (json!({"priority": 1.0}), vec![0, 3]),
        (json!({"priority": "3"}), vec![5]),
        (json!({"done": true}), vec![1, 3, 5]),
        (json!({"id": 3}), vec![3]),
        (json!({"extra": null}), all.clone()),
        (json!({"extra": {"$ne": null}}), vec![]),
        (json!({"missing": {"$ne": 1}}), all.clone()),
        (json!({"missing": {"$gt": 0}}), vec![]),
        (json!({"priority": {"$in": [1, 3]}}), vec![0, 2, 3]),
        (json!({"priority": {"$in": []}}), vec![]),
        (json!({"priority": {"$nin": [1, 3]}}), vec![1, 4, 5]),
        (json!({"priority": {"$nin": []}}), all.clone()),
        (json!({"priority": {"$lt": 2}}), vec![0, 3]),
        (json!({"priority": {"$lte": 2}}), vec![0, 1, 3]),
        (json!({"priority": {"$gt": 2}}), vec![2, 4]),
        (json!({"priority": {"$gte": 2.5}}), vec![2, 4]),
        (json!({"priority": {"$gt": "2"}}), vec![5]),
        (json!({"priority": {"$ne": 1}}), vec![1, 2, 4, 5]),
        (json!({"priority": {"$gt": 1, "$lt": 3}}), vec![1, 4]),
        (json!({"text": {"$gte": "b", "$lt": "e"}}), vec![1, 2, 3]),
        (json!({"done": {"$gt": false}}), vec![1, 3, 5]),
        (json!({"id": {"$in": [1, "4"]}}), vec![1]),
        (
            json!({"$or": [{"done": true}, {"priority": 3}]}),
            vec![1, 2, 3, 5],
        ),
        (json!({"$or": []}), vec![]),
        // qs-style index objects are lists too.
        (
            json!({"priority": {"$in": {"0": 1, "1": 3}}}),
            vec![0, 2, 3],
        ),
        (
            json!({"$or": {"0": {"text": "a"}, "1": {"text": "f"}}}),
            vec![0, 5],
        ),
        (
            json!({"$and": [{"priority": {"$gte": 1}}, {"priority": {"$lte": 2}}]}),
            vec![0, 1, 3],
        ),
        (json!({"$and": []}), all.clone()),
        (
            json!({"tag": "x", "$or": [{"priority": 1}, {"priority": 2}]}),
            vec![0, 1],
        ),
        (
            json!({"$or": [{"$and": [{"tag": "y"}, {"done": true}]}, {"text": "a"}]}),
            vec![0, 3],
        ),
        (
            json!({"$and": [{"$or": [{"tag": "x"}, {"tag": "z"}]}, {"done": true}]}),
            vec![1, 5],
        ),
        (
            json!({"tag": {"$in": ["x", "y"]}, "done": {"$ne": true}, "priority": {"$gte": 2}}),
            vec![2, 4],
        ),
        (
            json!({"$or": [{"priority": {"$in": [2, 3]}}], "$and": [{"tag": {"$nin": ["y"]}}]}),
            vec![1],
        ),
    ];
    for (q, expected) in table {
        let got = find_ids(&store, q.clone())
            .await
            .unwrap_or_else(|e| panic!("{q}: {e}"));
        assert_eq!(got, expected, "query {q}");
    }
}

#[tokio::test]
async fn unknown_operators_and_malformed_filters_are_bad_requests() {
    let store = service(MemoryOptions::new());
    let table = [
        (json!({"$foo": 1}), "Invalid filter value $foo"),
        (
            json!({"text": {"$regex": "a"}}),
            "Invalid query parameter $regex",
        ),
        (json!({"text": {"$eq": "a"}}), "Invalid query parameter $eq"),
        (
            json!({"$or": [{"$bar": 1}]}),
            "Invalid query parameter $bar",
        ),
        (
            json!({"$and": [{"x": {"$exists": true}}]}),
            "Invalid query parameter $exists",
        ),
        (
            json!({"priority": {"$in": 3}}),
            "Invalid query parameter $in: expected an array",
        ),
        (
            json!({"$or": {"done": true}}),
            "Invalid query parameter $or: expected an array",
        ),
        (
            json!({"$sort": {"text": 0}}),
            "Invalid $sort value for 'text': expected 1 or -1",
        ),
    ];
    for (q, message) in table {
        let err = store.find(query(q.clone())).await.expect_err("must fail");
        assert_eq!(err.kind(), ErrorKind::BadRequest, "{q}");
        assert_eq!(err.message(), message, "{q}");
        // The same check applies to the methods that take a query.
        let err = store
            .get(Id::Int(0), query(q.clone()))
            .await
            .expect_err("must fail");
        assert_eq!(err.kind(), ErrorKind::BadRequest, "get {q}");
    }
}

#[tokio::test]
async fn sort_by_several_keys_first_key_first() {
    let store = service(MemoryOptions::new());
    // priorities: 0:1 a, 1:2 b, 2:3 c, 3:1 d, 4:2.5 e, 5:"3" f (numbers sort before strings).
    let table = [
        (
            json!({"$sort": {"priority": 1, "text": -1}}),
            vec![3, 0, 1, 4, 2, 5],
        ),
        (
            json!({"$sort": {"priority": -1, "text": 1}}),
            vec![5, 2, 4, 1, 0, 3],
        ),
        (
            json!({"$sort": {"tag": 1, "text": -1}}),
            vec![4, 1, 0, 3, 2, 5],
        ),
        (
            json!({"$sort": {"text": -1, "tag": 1}}),
            vec![5, 4, 3, 2, 1, 0],
        ),
        (
            json!({"$sort": {"done": 1, "priority": 1}}),
            vec![0, 4, 2, 3, 1, 5],
        ),
        // missing < null: records without `extra` keep their order, then the one with null.
        (json!({"$sort": {"extra": 1}}), vec![0, 1, 2, 3, 5, 4]),
        (
            json!({"$sort": {"priority": "-1"}, "$limit": 2}),
            vec![5, 2],
        ),
    ];
    for (q, expected) in table {
        assert_eq!(
            find_ids(&store, q.clone()).await.expect("valid"),
            expected,
            "{q}"
        );
    }
}

#[tokio::test]
async fn pagination_edges() {
    let store = service(MemoryOptions::new().paginate(2, 4));
    let page = |v: &Value| {
        (
            v["total"].clone(),
            v["limit"].clone(),
            v["skip"].clone(),
            ids(v),
        )
    };
    let table = [
        (json!({}), (json!(6), json!(2), json!(0), vec![0, 1])),
        (json!({"$limit": 0}), (json!(6), json!(0), json!(0), vec![])),
        (
            json!({"$limit": 100}),
            (json!(6), json!(4), json!(0), vec![0, 1, 2, 3]),
        ),
        (
            json!({"$limit": -1}),
            (json!(6), json!(2), json!(0), vec![0, 1]),
        ),
        (
            json!({"$limit": "3"}),
            (json!(6), json!(3), json!(0), vec![0, 1, 2]),
        ),
        (
            json!({"$skip": 10}),
            (json!(6), json!(2), json!(10), vec![]),
        ),
        (
            json!({"$skip": 4, "$limit": 4}),
            (json!(6), json!(4), json!(4), vec![4, 5]),
        ),
        (
            json!({"$skip": 6, "$limit": 0}),
            (json!(6), json!(0), json!(6), vec![]),
        ),
        (
            json!({"done": true, "$limit": 1}),
            (json!(3), json!(1), json!(0), vec![1]),
        ),
        (
            json!({"done": true, "$limit": 1, "$skip": 1, "$sort": {"text": -1}}),
            (json!(3), json!(1), json!(1), vec![3]),
        ),
    ];
    for (q, expected) in table {
        let result = store.find(query(q.clone())).await.expect("valid");
        let keys: Vec<&String> = result.as_object().expect("a page").keys().collect();
        assert_eq!(keys, ["total", "limit", "skip", "data"], "{q}");
        assert_eq!(page(&result), expected, "{q}");
    }

    // A per-call override for internal callers.
    let mut params = query(json!({"$limit": 100}));
    params.extra.insert("paginate".into(), json!(false));
    assert_eq!(
        ids(&store.find(params).await.expect("valid")),
        vec![0, 1, 2, 3, 4, 5]
    );
}

#[tokio::test]
async fn without_paginate_find_returns_a_plain_array() {
    let store = service(MemoryOptions::new());
    let result = store.find(Params::new()).await.expect("valid");
    assert_eq!(result.as_array().map(Vec::len), Some(6));
    assert_eq!(
        find_ids(&store, json!({"$limit": 2, "$skip": 1}))
            .await
            .expect("ok"),
        vec![1, 2]
    );
    assert_eq!(
        find_ids(&store, json!({"$limit": 0})).await.expect("ok"),
        Vec::<i64>::new()
    );
    assert_eq!(
        find_ids(&store, json!({"$skip": 9})).await.expect("ok"),
        Vec::<i64>::new()
    );
}

#[tokio::test]
async fn multi_off_refuses_and_changes_nothing() {
    let store = service(MemoryOptions::new());
    let err = store
        .create(json!([{"text": "g"}, {"text": "h"}]), Params::new())
        .await;
    let err = err.expect_err("multi create is off");
    assert_eq!(err.kind(), ErrorKind::MethodNotAllowed);
    assert_eq!(err.message(), "Can not create multiple entries");
    let err = store
        .patch(None, json!({"done": true}), Params::new())
        .await
        .expect_err("off");
    assert_eq!(
        (err.kind(), err.message()),
        (
            ErrorKind::MethodNotAllowed,
            "Can not patch multiple entries"
        )
    );
    let err = store.remove(None, Params::new()).await.expect_err("off");
    assert_eq!(
        (err.kind(), err.message()),
        (
            ErrorKind::MethodNotAllowed,
            "Can not remove multiple entries"
        )
    );
    assert_eq!(store.records(), service(MemoryOptions::new()).records());

    // Only the listed methods.
    let store = service(MemoryOptions::new().multi(Multi::Methods(vec![Method::Create])));
    let created = store
        .create(json!([{"text": "g"}, {"text": "h"}]), Params::new())
        .await;
    assert_eq!(ids(&created.expect("allowed")), vec![6, 7]);
    let err = store
        .remove(None, Params::new())
        .await
        .expect_err("remove is not listed");
    assert_eq!(err.kind(), ErrorKind::MethodNotAllowed);
}

/// `params.extra["multi"]` and `params.extra["paginate"]` override the options for one call,
/// as Feathers' `params.adapter` and `params.paginate` do (the adapter test suite needs both).
#[tokio::test]
async fn per_call_multi_and_paginate_override_the_options() {
    let store = service(MemoryOptions::new().paginate(2, 4));
    let mut params = Params::new();
    params.extra.insert("multi".into(), json!(["create"]));
    let created = store
        .create(json!([{"text": "g"}, {"text": "h"}]), params.clone())
        .await
        .expect("create is allowed for this call");
    assert_eq!(ids(&created), vec![6, 7]);
    let err = store
        .patch(None, json!({"done": true}), params)
        .await
        .expect_err("patch is not");
    assert_eq!(err.message(), "Can not patch multiple entries");
    let mut params = Params::new();
    params.extra.insert("multi".into(), json!(true));
    store.remove(None, params).await.expect("every method");
    let mut params = Params::new();
    params.extra.insert("multi".into(), json!(false));
    assert!(
        MemoryService::<Value>::with_options(MemoryOptions::new().multi(Multi::All))
            .remove(None, params)
            .await
            .is_err()
    );

    let store = service(MemoryOptions::new().paginate(2, 4));
    let mut params = query(json!({"$limit": 10}));
    // No `max`: `$limit` is not capped.
    params
        .extra
        .insert("paginate".into(), json!({"default": 3}));
    let page = store.find(params).await.expect("find");
    assert_eq!(
        (page["limit"].clone(), page["total"].clone()),
        (json!(10), json!(6))
    );
    let mut params = Params::new();
    params
        .extra
        .insert("paginate".into(), json!({"default": 3}));
    assert_eq!(store.find(params).await.expect("find")["limit"], 3);
    let mut params = Params::new();
    params.extra.insert("paginate".into(), json!({"max": 3}));
    let err = store.find(params).await.expect_err("no default");
    assert_eq!(err.kind(), ErrorKind::BadRequest);
}

#[tokio::test]
async fn multi_on_patches_and_removes_every_match() {
    let store = service(MemoryOptions::new().multi(Multi::All).paginate(2, 4));
    let patched = store
        .patch(
            None,
            json!({"priority": 9}),
            query(json!({"tag": "x", "$sort": {"text": -1}})),
        )
        .await
        .expect("multi patch");
    assert_eq!(ids(&patched), vec![4, 1, 0]);
    assert!(
        patched
            .as_array()
            .expect("array")
            .iter()
            .all(|r| r["priority"] == 9)
    );
    assert_eq!(
        find_ids(&store, json!({"priority": 9, "$limit": 4}))
            .await
            .expect("ok"),
        vec![0, 1, 4]
    );
    assert_eq!(
        find_ids(&store, json!({"priority": {"$ne": 9}, "$limit": 4}))
            .await
            .expect("ok"),
        vec![2, 3, 5]
    );

    // $limit does not cap multi remove, even with pagination.
    let removed = store
        .remove(None, query(json!({"done": true, "$limit": 1})))
        .await
        .expect("ok");
    assert_eq!(ids(&removed), vec![1, 3, 5]);
    assert_eq!(store.len(), 3);
    let removed = store.remove(None, Params::new()).await.expect("remove all");
    assert_eq!(ids(&removed), vec![0, 2, 4]);
    assert!(store.is_empty());
}

#[tokio::test]
async fn integer_and_string_ids() {
    let store: MemoryService = MemoryService::with_options(MemoryOptions::new().start_id(100));
    let a = store
        .create(json!({"n": 1}), Params::new())
        .await
        .expect("ok");
    let b = store
        .create(json!({"n": 2, "id": 0}), Params::new())
        .await
        .expect("falsy id");
    assert_eq!((a["id"].clone(), b["id"].clone()), (json!(100), json!(101)));
    store
        .create(json!({"id": 102}), Params::new())
        .await
        .expect("explicit id");
    let c = store.create(json!({}), Params::new()).await.expect("ok");
    assert_eq!(c["id"], 103, "the counter skips ids in use");
    let s = store
        .create(json!({"id": "abc", "n": 3}), Params::new())
        .await
        .expect("string id");
    assert_eq!(s["id"], "abc");

    // REST sends ids as strings: "100" finds 100.
    let got = store
        .get(Id::Str("100".into()), Params::new())
        .await
        .expect("found");
    assert_eq!(got, json!({"n": 1, "id": 100}));
    assert_eq!(
        store
            .get(Id::from("abc"), Params::new())
            .await
            .expect("found")["n"],
        3
    );

    let err = store
        .create(json!({"id": "abc"}), Params::new())
        .await
        .expect_err("taken");
    assert_eq!(err.kind(), ErrorKind::Conflict);
    let err = store
        .create(json!({"id": 1.5}), Params::new())
        .await
        .expect_err("bad id");
    assert_eq!(err.kind(), ErrorKind::BadRequest);
    let err = store
        .create(json!("text"), Params::new())
        .await
        .expect_err("not an object");
    assert_eq!(err.kind(), ErrorKind::BadRequest);

    // A custom id field.
    let store: MemoryService = MemoryService::with_options(MemoryOptions::new().id_field("_id"));
    let r = store
        .create(json!({"text": "x", "id": "not the id"}), Params::new())
        .await
        .expect("ok");
    assert_eq!(r["_id"], 0);
    let r = store
        .get(Id::Int(0), query(json!({"$select": ["text"]})))
        .await
        .expect("found");
    assert_eq!(r, json!({"text": "x", "_id": 0}));
}

#[tokio::test]
async fn not_found_messages_are_verbatim() {
    let store = service(MemoryOptions::new());
    let expect_404 = |result: Result<Value>, message: &str| {
        let err = result.expect_err("not found");
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert_eq!(err.message(), message);
        assert_eq!(err.to_json()["message"], message);
    };
    expect_404(
        store.get(Id::Str("nope".into()), Params::new()).await,
        "No record found for id 'nope'",
    );
    expect_404(
        store.get(Id::Int(99), Params::new()).await,
        "No record found for id '99'",
    );
    // A record that exists but does not match the query.
    let no = query(json!({"done": true}));
    expect_404(
        store.get(Id::Str("0".into()), no.clone()).await,
        "No record found for id '0'",
    );
    expect_404(
        store.update(Id::Int(0), json!({}), no.clone()).await,
        "No record found for id '0'",
    );
    expect_404(
        store.patch(Some(Id::Int(0)), json!({}), no.clone()).await,
        "No record found for id '0'",
    );
    expect_404(
        store.remove(Some(Id::Int(0)), no).await,
        "No record found for id '0'",
    );
    expect_404(
        store.remove(Some(Id::Int(42)), Params::new()).await,
        "No record found for id '42'",
    );
    assert_eq!(store.len(), 6, "nothing was removed");
    // And a matching query finds it.
    let ok = store
        .get(Id::Int(0), query(json!({"done": false})))
        .await
        .expect("matches");
    assert_eq!(ok["text"], "a");
}

#[tokio::test]
async fn update_replaces_and_patch_merges_keeping_the_id() {
    let store = service(MemoryOptions::new());
    let updated = store
        .update(
            Id::Str("1".into()),
            json!({"text": "new", "id": 99}),
            Params::new(),
        )
        .await
        .expect("updated");
    assert_eq!(updated, json!({"text": "new", "id": 1}));
    assert_eq!(
        store.get(Id::Int(1), Params::new()).await.expect("found"),
        updated
    );

    let patched = store
        .patch(
            Some(Id::Int(2)),
            json!({"done": true, "id": 77, "note": "n"}),
            Params::new(),
        )
        .await
        .expect("patched");
    assert_eq!(
        patched,
        json!({"text": "c", "done": true, "priority": 3, "tag": "y", "id": 2, "note": "n"})
    );
    // Order is kept: record 1 is still second.
    assert_eq!(
        find_ids(&store, json!({})).await.expect("ok"),
        vec![0, 1, 2, 3, 4, 5]
    );
}

#[tokio::test]
async fn select_applies_to_every_method_and_keeps_the_id() {
    let store = service(MemoryOptions::new().multi(Multi::All).paginate(10, 10));
    let sel = || query(json!({"$select": ["text"]}));
    let only_text = |v: &Value| {
        let keys: Vec<&String> = v.as_object().expect("object").keys().collect();
        let mut keys: Vec<&str> = keys.iter().map(|k| k.as_str()).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["id", "text"], "{v}");
    };
    let page = store.find(sel()).await.expect("ok");
    page["data"]
        .as_array()
        .expect("data")
        .iter()
        .for_each(only_text);
    only_text(&store.get(Id::Int(0), sel()).await.expect("ok"));
    only_text(
        &store
            .create(json!({"text": "g", "done": false}), sel())
            .await
            .expect("ok"),
    );
    only_text(
        &store
            .update(Id::Int(6), json!({"text": "g2", "done": true}), sel())
            .await
            .expect("ok"),
    );
    only_text(
        &store
            .patch(Some(Id::Int(6)), json!({"done": false}), sel())
            .await
            .expect("ok"),
    );
    let many = store
        .patch(None, json!({"seen": true}), sel())
        .await
        .expect("ok");
    many.as_array().expect("array").iter().for_each(only_text);
    only_text(&store.remove(Some(Id::Int(6)), sel()).await.expect("ok"));
    // The stored records are whole.
    assert_eq!(
        store.get(Id::Int(0), Params::new()).await.expect("ok")["tag"],
        "x"
    );
    // qs-style $select forms.
    let q = query(json!({"$select": {"0": "text"}, "id": 0}));
    only_text(&store.find(q).await.expect("ok")["data"][0]);
    let q = query(json!({"$select": "text", "id": 0}));
    only_text(&store.find(q).await.expect("ok")["data"][0]);
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Todo {
    id: i64,
    text: String,
    done: bool,
    priority: f64,
}

#[tokio::test]
async fn typed_records_are_validated_naming_the_field() {
    let store: MemoryService<Todo> = MemoryService::new();
    let ok = store
        .create(
            json!({"text": "a", "done": false, "priority": 1}),
            Params::new(),
        )
        .await;
    assert_eq!(ok.expect("valid")["id"], 0);

    let err = store
        .create(
            json!({"text": "b", "done": "yes", "priority": 1}),
            Params::new(),
        )
        .await
        .expect_err("done is not a boolean");
    assert_eq!(err.kind(), ErrorKind::BadRequest);
    assert!(err.message().contains("done"), "{}", err.message());

    let err = store
        .update(
            Id::Int(0),
            json!({"text": "x", "done": true}),
            Params::new(),
        )
        .await;
    let err = err.expect_err("priority is missing");
    assert!(err.message().contains("priority"), "{}", err.message());

    let err = store
        .patch(Some(Id::Int(0)), json!({"bogus": 1}), Params::new())
        .await;
    let err = err.expect_err("unknown field");
    assert!(err.message().contains("bogus"), "{}", err.message());

    let err = store
        .patch(Some(Id::Int(0)), json!({"text": 5}), Params::new())
        .await;
    assert!(err.expect_err("wrong type").message().contains("text"));

    // Nothing was changed by the failures.
    let todo = store
        .get_typed(Id::Int(0), Params::new())
        .await
        .expect("typed");
    assert_eq!(
        todo,
        Todo {
            id: 0,
            text: "a".into(),
            done: false,
            priority: 1.0
        }
    );
    let all = store.find_typed(Params::new()).await.expect("typed");
    assert_eq!(all.len(), 1);
}

#[tokio::test]
async fn a_failing_item_of_a_multi_create_stores_nothing() {
    let store: MemoryService<Todo> =
        MemoryService::with_options(MemoryOptions::new().multi(Multi::All));
    let data = json!([
        {"text": "a", "done": false, "priority": 1},
        {"text": "b", "done": false}
    ]);
    let err = store
        .create(data, Params::new())
        .await
        .expect_err("second is invalid");
    assert!(err.message().contains("priority"));
    assert!(store.is_empty());
    // Two items with the same id (5 and "5" denote one record).
    let store: MemoryService = MemoryService::with_options(MemoryOptions::new().multi(Multi::All));
    let err = store
        .create(json!([{"id": 5}, {"id": "5"}]), Params::new())
        .await;
    assert_eq!(err.expect_err("duplicate").kind(), ErrorKind::Conflict);
    assert!(store.is_empty());
}

fn todo_schema() -> Schema {
    Schema::new()
        .field("id", FieldType::Integer)
        .field("priority", FieldType::Number)
        .field("done", FieldType::Boolean)
        .field("text", FieldType::String)
}

fn map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

#[test]
fn coercion_table() {
    let schema = todo_schema();
    let table = [
        (
            json!({"done": "true", "id": "5"}),
            json!({"done": true, "id": 5}),
        ),
        (json!({"done": "false"}), json!({"done": false})),
        (json!({"priority": "2.5"}), json!({"priority": 2.5})),
        (
            json!({"priority": {"$gt": "2", "$lte": "4"}}),
            json!({"priority": {"$gt": 2, "$lte": 4}}),
        ),
        (
            json!({"priority": {"$in": ["1", "3"]}}),
            json!({"priority": {"$in": [1, 3]}}),
        ),
        (
            json!({"priority": {"$nin": {"0": "1", "1": "3"}}}),
            json!({"priority": {"$nin": [1, 3]}}),
        ),
        (
            json!({"priority": {"$in": "1"}}),
            json!({"priority": {"$in": [1]}}),
        ),
        (
            json!({"done": {"$ne": "true"}}),
            json!({"done": {"$ne": true}}),
        ),
        (
            json!({"$or": [{"done": "true"}, {"priority": {"$in": ["3"]}}]}),
            json!({"$or": [{"done": true}, {"priority": {"$in": [3]}}]}),
        ),
        (
            json!({"$and": {"0": {"$or": [{"id": "1"}]}, "1": {"done": "false"}}}),
            json!({"$and": [{"$or": [{"id": 1}]}, {"done": false}]}),
        ),
        (
            json!({"$limit": "10", "$skip": "0", "$sort": {"priority": "-1", "text": "1"}}),
            json!({"$limit": 10, "$skip": 0, "$sort": {"priority": -1, "text": 1}}),
        ),
        (
            json!({"$select": {"0": "text", "1": "done"}}),
            json!({"$select": ["text", "done"]}),
        ),
        (json!({"$select": "text"}), json!({"$select": ["text"]})),
        (
            json!({"text": 5, "tag": "5"}),
            json!({"text": "5", "tag": "5"}),
        ),
        (
            json!({"done": true, "priority": 3, "id": null}),
            json!({"done": true, "priority": 3, "id": null}),
        ),
        (
            json!({"text": {"$regex": "x"}}),
            json!({"text": {"$regex": "x"}}),
        ),
    ];
    for (input, expected) in table {
        let mut q = map(input.clone());
        coerce(&mut q, &schema).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(Value::Object(q), expected, "{input}");
    }
    let failures = [
        (json!({"done": "yes"}), "'done'"),
        (json!({"done": "1"}), "'done'"),
        (json!({"id": "1.5"}), "'id'"),
        (json!({"priority": "high"}), "'priority'"),
        (json!({"priority": {"$in": ["1", "x"]}}), "'priority'"),
        (json!({"$or": [{"priority": {"$gt": "x"}}]}), "'priority'"),
        (json!({"$limit": "ten"}), "'$limit'"),
        (json!({"$sort": {"text": "up"}}), "$sort[text]"),
        (json!({"$select": [1]}), "'$select'"),
        (json!({"priority": [1, 2]}), "'priority'"),
    ];
    for (input, needle) in failures {
        let mut q = map(input.clone());
        let err = coerce(&mut q, &schema).expect_err("must fail");
        assert_eq!(err.kind(), ErrorKind::BadRequest, "{input}");
        assert!(err.message().contains(needle), "{input}: {}", err.message());
    }
}

#[tokio::test]
async fn a_schema_makes_rest_string_queries_work() {
    let rest = |q: Value| query(q).with_provider(plume::Provider::Rest);
    let plain = service(MemoryOptions::new());
    // Without a schema, strings do not equal numbers or booleans (as in Feathers).
    assert_eq!(
        ids(&plain.find(rest(json!({"done": "true"}))).await.expect("ok")),
        Vec::<i64>::new()
    );

    let store = service(MemoryOptions::new().schema(todo_schema()).paginate(10, 50));
    let table = [
        (json!({"done": "true"}), vec![1, 3, 5]),
        (json!({"priority": {"$gt": "2"}}), vec![2, 4]),
        (json!({"id": {"$in": ["1", "3"]}}), vec![1, 3]),
        (
            json!({"$or": [{"done": "true"}, {"priority": "3"}]}),
            vec![1, 2, 3, 5],
        ),
        (
            json!({"done": "false", "priority": {"$gte": "2"}, "$limit": "50"}),
            vec![2, 4],
        ),
        (
            json!({"$sort": {"priority": "-1"}, "$limit": "2"}),
            vec![5, 2],
        ),
    ];
    for (q, expected) in table {
        assert_eq!(
            ids(&store.find(rest(q.clone())).await.expect("ok")),
            expected,
            "{q}"
        );
    }
    let got = store
        .get(Id::Str("1".into()), rest(json!({"done": "true"})))
        .await
        .expect("ok");
    assert_eq!(got["text"], "b");
    let err = store
        .find(rest(json!({"done": "maybe"})))
        .await
        .expect_err("bad value");
    assert_eq!(err.kind(), ErrorKind::BadRequest);
    assert!(err.message().contains("'done'"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_get_distinct_ids_through_dyn_service() {
    let store: Arc<dyn Service> = Arc::new(MemoryService::<Value>::new());
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for j in 0..25 {
                let data = json!({"task": i, "n": j});
                let created = dispatch(&*store, &Method::Create, None, Some(data), Params::new());
                ids.push(created.await?["id"].as_i64().unwrap_or(-1));
            }
            Ok::<_, Error>(ids)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("task ran").expect("creates succeed"));
    }
    all.sort_unstable();
    assert_eq!(all, (0..200).collect::<Vec<i64>>());
    let found = store.find(Params::new()).await.expect("ok");
    assert_eq!(found.as_array().map(Vec::len), Some(200));
    assert_eq!(store.options()["id"], "id");
}

/// Data for a new todo, without an id: the store gives it one.
#[derive(serde::Serialize)]
struct NewTodo {
    text: &'static str,
    done: bool,
    priority: f64,
}

#[tokio::test]
async fn every_method_has_a_typed_form() {
    let store: MemoryService<Todo> =
        MemoryService::with_options(MemoryOptions::new().multi(Multi::All));
    let todo = |id, text: &str, done, priority| Todo {
        id,
        text: text.into(),
        done,
        priority,
    };
    let a = NewTodo {
        text: "a",
        done: false,
        priority: 1.0,
    };
    assert_eq!(
        store.create_typed(&a, Params::new()).await.expect("create"),
        todo(0, "a", false, 1.0)
    );
    let more = [
        NewTodo {
            text: "b",
            done: false,
            priority: 2.0,
        },
        NewTodo {
            text: "c",
            done: true,
            priority: 3.0,
        },
    ];
    assert_eq!(
        store
            .create_many_typed(&more, Params::new())
            .await
            .expect("create many"),
        [todo(1, "b", false, 2.0), todo(2, "c", true, 3.0)]
    );
    // One record at a time: an array is refused, and nothing is stored.
    let err = store
        .create_typed(&more, Params::new())
        .await
        .expect_err("an array");
    assert_eq!(err.kind(), ErrorKind::BadRequest);
    assert_eq!(store.len(), 3);

    assert_eq!(
        store.get_typed(1, Params::new()).await.expect("get"),
        todo(1, "b", false, 2.0)
    );
    assert_eq!(
        store
            .update_typed("1", &a, Params::new())
            .await
            .expect("update"),
        todo(1, "a", false, 1.0)
    );
    assert_eq!(
        store
            .patch_typed(1, &json!({"done": true}), Params::new())
            .await
            .expect("patch"),
        todo(1, "a", true, 1.0)
    );
    // The data is checked against `Todo` as the JSON methods check it.
    let err = store
        .patch_typed(1, &json!({"done": "yes"}), Params::new())
        .await
        .expect_err("not a boolean");
    assert!(err.message().contains("done"), "{}", err.message());

    let undone = || Params::new().with_query(json!({"done": true}));
    assert_eq!(
        store
            .patch_many_typed(&json!({"priority": 9.0}), undone())
            .await
            .expect("patch many"),
        [todo(1, "a", true, 9.0), todo(2, "c", true, 9.0)]
    );
    assert_eq!(
        store.remove_typed(0, Params::new()).await.expect("remove"),
        todo(0, "a", false, 1.0)
    );
    assert_eq!(
        store
            .remove_many_typed(undone())
            .await
            .expect("remove many"),
        [todo(1, "a", true, 9.0), todo(2, "c", true, 9.0)]
    );
    assert!(store.is_empty());
    let err = store
        .get_typed(0, Params::new())
        .await
        .expect_err("removed");
    assert_eq!(err.kind(), ErrorKind::NotFound);
}
