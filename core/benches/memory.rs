//! `MemoryService::find` over 10,000 records: an equality filter, a range with a sort, and deep
//! pagination, as the demo's todos service is configured (paginate 10 / 50).

use std::hint::black_box;
use std::time::Duration;

use criterion::Criterion;
use plume::query::{FieldType, Schema};
use plume::{MemoryOptions, MemoryService, Params, Provider};
use serde_json::{Value, json};
use tokio::runtime::Runtime;

const RECORDS: i64 = 10_000;

fn runtime() -> Runtime {
    // invariant: a bench cannot run without a runtime.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn store() -> MemoryService {
    let options = MemoryOptions::new().paginate(10, 50).schema(
        Schema::new()
            .field("id", FieldType::Integer)
            .field("priority", FieldType::Integer)
            .field("done", FieldType::Boolean),
    );
    let records = (0..RECORDS).map(|i| {
        json!({
            "id": i,
            "text": format!("todo number {:05}", (i * 7919) % RECORDS),
            "done": i % 2 == 0,
            "priority": i % 100,
            "user": format!("user-{}", i % 100),
        })
    });
    // invariant: the records are distinct objects with distinct ids.
    MemoryService::with_options(options)
        .with_records(records)
        .expect("seed records")
}

fn benches(c: &mut Criterion) {
    let rt = runtime();
    let todos = store();
    let cases: [(&str, Value, Option<Provider>); 5] = [
        ("no_filter_first_page", json!({}), None),
        ("equality_user", json!({"user": "user-7"}), None),
        (
            "range_and_sort",
            json!({"priority": {"$gte": 40, "$lt": 60}, "$sort": {"text": 1}}),
            None,
        ),
        (
            "deep_page_sorted_desc",
            json!({"$skip": 5000, "$limit": 50, "$sort": {"id": -1}}),
            None,
        ),
        (
            "rest_strings_coerced",
            json!({"done": "false", "priority": {"$lt": "10"}, "$limit": "50"}),
            Some(Provider::Rest),
        ),
    ];
    let mut g = c.benchmark_group("memory_find_10k");
    for (name, query, provider) in cases {
        let params = match provider {
            Some(p) => Params::new().with_query(query).with_provider(p),
            None => Params::new().with_query(query),
        };
        g.bench_function(name, |b| {
            b.to_async(&rt)
                .iter(|| async { black_box(todos.find(params.clone()).await) });
        });
    }
    g.finish();
}

mod group {
    #![allow(missing_docs)]
    use super::{Criterion, Duration, benches};

    criterion::criterion_group! {
        name = memory_benches;
        config = Criterion::default()
            .sample_size(20)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1));
        targets = benches
    }
}

fn main() {
    group::memory_benches();
    Criterion::default().configure_from_args().final_summary();
}
