//! Property tests: random records and random queries give the same results (and the same
//! error classes) on `SqlService` as on Plume's `MemoryService`: over SQLite (a fresh in-memory
//! database per case) and over a real PostgreSQL (one private server, the table made anew per
//! case).

mod common;

use plume::memory::Multi;
use plume::query::{FieldType, Schema};
use plume::{MemoryOptions, MemoryService, Params, Result};
use plume_sql::{ColumnType, Database, SqlService};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

const FIELDS: [&str; 4] = ["name", "age", "created", "score"];

fn name() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        prop::sample::select(vec!["a", "b", "B", "ab", "ba", "é"]).prop_map(Value::from),
    ]
}

fn age() -> impl Strategy<Value = Value> {
    prop_oneof![Just(Value::Null), (-3i64..4).prop_map(Value::from)]
}

fn created() -> impl Strategy<Value = Value> {
    prop_oneof![Just(Value::Null), any::<bool>().prop_map(Value::from)]
}

fn score() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        (-2i64..3).prop_map(Value::from),
        prop::sample::select(vec![-1.5, 0.5, 2.5]).prop_map(Value::from),
    ]
}

fn value_of(field: &'static str) -> BoxedStrategy<Value> {
    match field {
        "name" => name().boxed(),
        "age" => age().boxed(),
        "created" => created().boxed(),
        _ => score().boxed(),
    }
}

fn record() -> impl Strategy<Value = Value> {
    (name(), age(), created(), score())
        .prop_map(|(n, a, c, s)| json!({"name": n, "age": a, "created": c, "score": s}))
}

/// One condition on a field: `{field: value}` or `{field: {$op: operand}}`.
fn property() -> impl Strategy<Value = (String, Value)> {
    prop::sample::select(FIELDS.to_vec()).prop_flat_map(|field| {
        let op = prop::sample::select(vec![
            "eq", "$ne", "$in", "$nin", "$lt", "$lte", "$gt", "$gte",
        ]);
        (
            op,
            value_of(field),
            prop::collection::vec(value_of(field), 0..3),
        )
            .prop_map(move |(op, v, list)| {
                let condition = match op {
                    "eq" => v,
                    "$in" | "$nin" => json!({ op: list }),
                    _ => json!({ op: v }),
                };
                (field.to_owned(), condition)
            })
    })
}

fn filter() -> impl Strategy<Value = Map<String, Value>> {
    let leaf = prop::collection::vec(property(), 0..3)
        .prop_map(|props| props.into_iter().collect::<Map<String, Value>>());
    leaf.prop_recursive(2, 8, 3, |inner| {
        (
            prop::collection::vec(inner.clone(), 0..3),
            prop::sample::select(vec!["$or", "$and"]),
            inner,
        )
            .prop_map(|(branches, key, mut base)| {
                base.insert(
                    key.to_owned(),
                    Value::Array(branches.into_iter().map(Value::Object).collect()),
                );
                base
            })
    })
}

fn query() -> impl Strategy<Value = Value> {
    (
        filter(),
        prop::collection::vec(
            (prop::sample::select(FIELDS.to_vec()), prop::bool::ANY),
            0..3,
        ),
        prop::option::of(0usize..5),
        prop::option::of(0usize..4),
        prop::option::of(prop::sample::subsequence(FIELDS.to_vec(), 0..3)),
    )
        .prop_map(|(mut q, sort, limit, skip, select)| {
            if !sort.is_empty() {
                let keys: Map<String, Value> = sort
                    .into_iter()
                    .map(|(f, asc)| (f.to_owned(), json!(if asc { 1 } else { -1 })))
                    .collect();
                q.insert("$sort".into(), Value::Object(keys));
            }
            if let Some(limit) = limit {
                q.insert("$limit".into(), json!(limit));
            }
            if let Some(skip) = skip {
                q.insert("$skip".into(), json!(skip));
            }
            if let Some(select) = select {
                q.insert("$select".into(), json!(select));
            }
            Value::Object(q)
        })
}

/// A query's values as a REST query string delivers them: every scalar a string.
fn stringify(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), stringify(v))).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(stringify).collect()),
        Value::Number(n) => Value::String(n.to_string()),
        Value::Bool(b) => Value::String(b.to_string()),
        other => other.clone(),
    }
}

/// The two services holding `records` (ids 1..): SQLite in memory, or a fresh table of `db`.
async fn services(db: Option<&Database>, records: &[Value]) -> (MemoryService, SqlService) {
    let schema = Schema::new()
        .field("id", FieldType::Integer)
        .field("name", FieldType::String)
        .field("age", FieldType::Integer)
        .field("created", FieldType::Boolean)
        .field("score", FieldType::Number);
    let memory: MemoryService =
        MemoryService::with_options(MemoryOptions::new().schema(schema).multi(Multi::All));
    let db = match db {
        Some(db) => {
            common::drop_table(db, "people").await;
            db.clone()
        }
        None => Database::connect("sqlite::memory:").await.expect("connect"),
    };
    let sql: SqlService = SqlService::builder(&db, "people")
        .column("name", ColumnType::String)
        .column("age", ColumnType::Integer)
        .column("created", ColumnType::Boolean)
        .column("score", ColumnType::Number)
        .multi(Multi::All)
        .build()
        .expect("valid");
    sql.create_table().await.expect("table");
    for (i, record) in records.iter().enumerate() {
        let mut record = record.clone();
        record["id"] = json!(i + 1);
        memory
            .create(record.clone(), Params::new())
            .await
            .expect("memory create");
        sql.create(record, Params::new()).await.expect("sql create");
    }
    (memory, sql)
}

fn same(
    label: &str,
    memory: Result<Value>,
    sql: Result<Value>,
) -> std::result::Result<(), TestCaseError> {
    match (memory, sql) {
        (Ok(m), Ok(s)) => prop_assert_eq!(m, s, "{}", label),
        (Err(m), Err(s)) => prop_assert_eq!(m.kind(), s.kind(), "{}: {:?} vs {:?}", label, m, s),
        (m, s) => prop_assert!(false, "{}: memory {:?}, sql {:?}", label, m, s),
    }
    Ok(())
}

fn run<F: std::future::Future<Output = std::result::Result<(), TestCaseError>>>(
    f: F,
) -> std::result::Result<(), TestCaseError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

type Outcome = std::result::Result<(), TestCaseError>;

/// find, with and without pagination, with JSON and with REST (string) values.
async fn check_find(memory: &MemoryService, sql: &SqlService, q: &Value) -> Outcome {
    for query in [q.clone(), stringify(q)] {
        let params = Params::new().with_query(query.clone());
        same(
            &format!("find {query}"),
            memory.find(params.clone()).await,
            sql.find(params.clone()).await,
        )?;
        let mut paged = params;
        paged
            .extra
            .insert("paginate".into(), json!({"default": 3, "max": 4}));
        same(
            &format!("paged find {query}"),
            memory.find(paged.clone()).await,
            sql.find(paged).await,
        )?;
    }
    Ok(())
}

/// Multi patch and remove change the same records and return the same results.
async fn check_writes(
    memory: &MemoryService,
    sql: &SqlService,
    q: &Value,
    patch: &Value,
) -> Outcome {
    let params = Params::new().with_query(q.clone());
    same(
        &format!("patch {q}"),
        memory.patch(None, patch.clone(), params.clone()).await,
        sql.patch(None, patch.clone(), params.clone()).await,
    )?;
    same(
        "after patch",
        memory.find(Params::new()).await,
        sql.find(Params::new()).await,
    )?;
    same(
        &format!("remove {q}"),
        memory.remove(None, params.clone()).await,
        sql.remove(None, params).await,
    )?;
    same(
        "after remove",
        memory.find(Params::new()).await,
        sql.find(Params::new()).await,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn find_agrees_with_memory(records in prop::collection::vec(record(), 0..8), q in query()) {
        run(async {
            let (memory, sql) = services(None, &records).await;
            check_find(&memory, &sql, &q).await
        })?;
    }

    #[test]
    fn patch_and_remove_agree_with_memory(
        records in prop::collection::vec(record(), 0..8),
        q in query(),
        patch in record(),
    ) {
        run(async {
            let (memory, sql) = services(None, &records).await;
            check_writes(&memory, &sql, &q, &patch).await
        })?;
    }
}

/// The same properties on PostgreSQL (text by code point, `NULL` order, types), 256 cases.
#[test]
fn postgres_agrees_with_memory() {
    let server =
        common::postgres::PgServer::start().expect("PostgreSQL must be installed and start");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let db = rt
        .block_on(Database::connect(&server.url()))
        .expect("connect");
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(256));
    let cases = (prop::collection::vec(record(), 0..8), query(), record());
    let outcome = runner.run(&cases, |(records, q, patch)| {
        rt.block_on(async {
            let (memory, sql) = services(Some(&db), &records).await;
            check_find(&memory, &sql, &q).await?;
            check_writes(&memory, &sql, &q, &patch).await
        })
    });
    rt.block_on(db.close());
    drop(server);
    if let Err(err) = outcome {
        panic!("PostgreSQL differs from the memory adapter: {err}");
    }
}
