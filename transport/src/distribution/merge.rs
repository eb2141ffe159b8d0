//! A `find` over the replicas of a partitioned service: each replica is asked for its first
//! `$skip + $limit` matches, and the pages are merged into the one page a `find` over the union
//! of their records would give (`$sort`, `$skip`, `$limit` and `total` right over the union).

use std::cmp::Ordering;
use std::future::Future;

use plume::{Error, Result};
use serde_json::{Map, Value, json};

/// `$skip` and `$limit` of a find query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    pub(crate) skip: usize,
    pub(crate) limit: Option<usize>,
}

fn count(query: &Map<String, Value>, key: &str) -> Result<Option<usize>> {
    match query.get(key) {
        None => Ok(None),
        Some(v) => {
            let n = match v {
                Value::Number(n) => n.as_u64(),
                Value::String(s) => s.parse().ok(),
                _ => None,
            };
            n.and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| Error::bad_request(format!("{key} must be a non-negative integer")))
        }
    }
}

/// The window the client asked for, and the query each replica gets: its first
/// `$skip + $limit` matches (all of them without a `$limit`).
pub(crate) fn replica_query(query: &Map<String, Value>) -> Result<(Window, Map<String, Value>)> {
    let window = Window {
        skip: count(query, "$skip")?.unwrap_or(0),
        limit: count(query, "$limit")?,
    };
    let mut each = query.clone();
    each.remove("$skip");
    if let Some(limit) = window.limit {
        each.insert("$limit".into(), json!(window.skip.saturating_add(limit)));
    }
    Ok((window, each))
}

/// A find over every replica: `ask` sends a query to every replica and returns their answers.
///
/// Without a `$limit` and with a `$skip`, the replicas' page size is known only from their
/// first answers: they are asked once more for their first `$skip` + that many.
pub(crate) async fn find_merged<F, Fut>(query: &Map<String, Value>, ask: F) -> Result<Value>
where
    F: Fn(Map<String, Value>) -> Fut,
    Fut: Future<Output = Result<Vec<Value>>>,
{
    let (window, mut each) = replica_query(query)?;
    let mut answers = ask(each.clone()).await?;
    if window.limit.is_none() && window.skip > 0 {
        let page_limit = answers
            .iter()
            .filter_map(|a| a.get("limit").and_then(Value::as_u64))
            .max();
        if let Some(l) = page_limit {
            each.insert("$limit".into(), json!(l.saturating_add(window.skip as u64)));
            answers = ask(each).await?;
        }
    }
    Ok(merge(query, window, answers))
}

/// Compare two JSON values as a Feathers sort does: numbers by value, strings by text, booleans,
/// and null/missing first.
fn compare(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    fn rank(v: Option<&Value>) -> u8 {
        match v {
            None | Some(Value::Null) => 0,
            Some(Value::Bool(_)) => 1,
            Some(Value::Number(_)) => 2,
            Some(Value::String(_)) => 3,
            Some(_) => 4,
        }
    }
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => {
            let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
            x.partial_cmp(&y).unwrap_or(Ordering::Equal)
        }
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        _ => rank(a).cmp(&rank(b)),
    }
}

/// Sort `records` by a `$sort` object (`{"field": 1 | -1, …}`, the first field first).
fn sort(records: &mut [Value], by: &Map<String, Value>) {
    let keys: Vec<(&str, bool)> = by
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_i64().is_some_and(|d| d < 0)))
        .collect();
    records.sort_by(|a, b| {
        keys.iter()
            .map(|(k, desc)| {
                let o = compare(a.get(*k), b.get(*k));
                if *desc { o.reverse() } else { o }
            })
            .find(|o| *o != Ordering::Equal)
            .unwrap_or(Ordering::Equal)
    });
}

/// Merge the replicas' answers to the [`replica_query`] of `query` into one: a page
/// `{total, limit, skip, data}` when the replicas paginate, else an array.
fn merge(query: &Map<String, Value>, window: Window, answers: Vec<Value>) -> Value {
    let mut records = Vec::new();
    let mut total: u64 = 0;
    let mut page_limit: Option<u64> = None;
    let mut paged = false;
    for answer in answers {
        match answer {
            Value::Array(list) => {
                total += list.len() as u64;
                records.extend(list);
            }
            Value::Object(mut page) => {
                paged = true;
                let data = match page.remove("data") {
                    Some(Value::Array(list)) => list,
                    _ => Vec::new(),
                };
                total += page
                    .get("total")
                    .and_then(Value::as_u64)
                    .unwrap_or(data.len() as u64);
                if window.limit.is_none() {
                    page_limit = page_limit.max(page.get("limit").and_then(Value::as_u64));
                }
                records.extend(data);
            }
            other => records.push(other),
        }
    }
    if let Some(Value::Object(by)) = query.get("$sort") {
        sort(&mut records, by);
    }
    // Without a `$limit`, the replicas' page size (asked for `$skip` more when skipping).
    let limit = window.limit.or_else(|| {
        page_limit.and_then(|l| usize::try_from(l).ok()).map(|l| {
            if window.skip > 0 {
                l - window.skip.min(l)
            } else {
                l
            }
        })
    });
    let data: Vec<Value> = records
        .into_iter()
        .skip(window.skip)
        .take(limit.unwrap_or(usize::MAX))
        .collect();
    if !paged {
        return Value::Array(data);
    }
    json!({
        "total": total,
        "limit": limit,
        "skip": window.skip,
        "data": data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use plume::{MemoryOptions, MemoryService, Paginate, Params};
    use proptest::prelude::*;

    async fn memory(records: &[Value]) -> MemoryService<Value> {
        let store = MemoryService::<Value>::with_options(MemoryOptions {
            paginate: Some(Paginate {
                default: 10,
                max: 1000,
            }),
            ..MemoryOptions::default()
        });
        for r in records {
            store
                .create(r.clone(), Params::new())
                .await
                .expect("stored");
        }
        store
    }

    fn params(query: &Map<String, Value>) -> Params {
        let mut p = Params::new();
        p.query = query.clone();
        p
    }

    fn run<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
            .block_on(f)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// A find over replicas, merged, equals the find over the union of their records.
        #[test]
        fn merged_pages_equal_a_find_over_the_union(
            ranks in proptest::collection::hash_set(0u32..10_000, 0..40),
            shards in proptest::collection::vec(0usize..3, 40),
            skip in 0usize..20,
            limit in proptest::option::of(0usize..15),
            desc in any::<bool>(),
            done in proptest::option::of(any::<bool>()),
        ) {
            // Unique sort keys, so that the order is the same whatever the store.
            let records: Vec<Value> = ranks
                .iter()
                .enumerate()
                .map(|(i, r)| json!({ "id": i, "rank": r, "done": r % 2 == 0 }))
                .collect();
            let mut query = Map::new();
            query.insert("$sort".into(), json!({ "rank": if desc { -1 } else { 1 } }));
            query.insert("$skip".into(), json!(skip));
            if let Some(l) = limit {
                query.insert("$limit".into(), json!(l));
            }
            if let Some(d) = done {
                query.insert("done".into(), json!(d));
            }
            let parts: Vec<Vec<Value>> = (0..3)
                .map(|s| {
                    records
                        .iter()
                        .zip(&shards)
                        .filter(|(_, shard)| **shard == s)
                        .map(|(r, _)| r.clone())
                        .collect()
                })
                .collect();
            let (want, got) = run(async {
                let want = memory(&records).await.find(params(&query)).await.expect("find over the union");
                let mut stores = Vec::new();
                for part in &parts {
                    stores.push(memory(part).await);
                }
                let got = find_merged(&query, |each| {
                    let stores = &stores;
                    async move {
                        let mut answers = Vec::new();
                        for store in stores {
                            answers.push(store.find(params(&each)).await?);
                        }
                        Ok(answers)
                    }
                })
                .await
                .expect("merged");
                (want, got)
            });
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn arrays_merge_into_an_array_and_bad_windows_are_refused() {
        let mut query = Map::new();
        query.insert("$sort".into(), json!({"n": -1}));
        query.insert("$limit".into(), json!(2));
        let (window, each) = replica_query(&query).expect("valid");
        assert_eq!(each["$limit"], json!(2));
        let got = super::merge(
            &query,
            window,
            vec![json!([{"n": 1}, {"n": 5}]), json!([{"n": 3}])],
        );
        assert_eq!(got, json!([{"n": 5}, {"n": 3}]));
        query.insert("$skip".into(), json!(-1));
        let err = replica_query(&query).expect_err("negative skip");
        assert_eq!(err.kind(), plume::ErrorKind::BadRequest);
    }
}
