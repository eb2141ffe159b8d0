//! Limits on the cost of a query from outside: the length of `$in`/`$nin` (and `$or`/`$and`)
//! lists, the nesting depth of `$or`/`$and`, and `$limit`.
//!
//! Every external call (REST, socket.io, a mesh peer) is checked before its hooks run, whatever
//! the transport decoded the query from, so a service never sees a query over a limit.

use serde_json::{Map, Value};

use crate::app::App;
use crate::error::{Error, Result};

/// The default of [`QueryLimits::max_list`].
pub const DEFAULT_MAX_LIST: usize = 1_000;
/// The default of [`QueryLimits::max_depth`].
pub const DEFAULT_MAX_DEPTH: usize = 8;
/// The default of [`QueryLimits::max_limit`].
pub const DEFAULT_MAX_LIMIT: usize = 10_000;

/// Limits on the queries of external calls (set with
/// [`App::set_query_limits`](crate::App::set_query_limits)). A query over one is a
/// BadRequest (400) whose message names the limit.
///
/// ```
/// use plume::query::QueryLimits;
/// use serde_json::json;
///
/// let limits = QueryLimits::default();
/// let ok = json!({"id": {"$in": [1, 2, 3]}, "$or": [{"a": 1}, {"b": 2}]});
/// assert!(limits.check(ok.as_object().unwrap()).is_ok());
/// let long = json!({"id": {"$in": vec![0; 1001]}});
/// let err = limits.check(long.as_object().unwrap()).unwrap_err();
/// assert_eq!(err.code(), 400);
/// assert!(err.message().contains("$in"), "{err}");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryLimits {
    /// The most items of a `$in`, `$nin`, `$or` or `$and` list (default 1,000).
    pub max_list: usize,
    /// The deepest nesting of `$or`/`$and` (default 8; a top-level `$or` is depth 1).
    pub max_depth: usize,
    /// The largest `$limit` (default 10,000). It matters for services without pagination,
    /// whose `$limit` nothing else caps.
    pub max_limit: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        Self {
            max_list: DEFAULT_MAX_LIST,
            max_depth: DEFAULT_MAX_DEPTH,
            max_limit: DEFAULT_MAX_LIMIT,
        }
    }
}

fn over(what: &str, detail: String, limit: &str, max: usize) -> Error {
    Error::bad_request(format!("{what} {detail} (the maximum is {max})"))
        .with_data(serde_json::json!({ "limit": limit, "max": max }))
}

/// The items of a list operand: an array or a qs-style index object.
fn list_len(value: &Value) -> usize {
    match value {
        Value::Array(items) => items.len(),
        Value::Object(obj) => obj.len(),
        _ => 0,
    }
}

impl QueryLimits {
    /// Check a query against the limits.
    pub fn check(&self, query: &Map<String, Value>) -> Result<()> {
        if let Some(limit) = query.get("$limit")
            && let Some(n) = super::parse_int(limit)
            && usize::try_from(n).is_ok_and(|n| n > self.max_limit)
        {
            return Err(over(
                "$limit",
                format!("{n} is too large"),
                "maxLimit",
                self.max_limit,
            ));
        }
        self.check_level(query, 0)
    }

    fn check_level(&self, query: &Map<String, Value>, depth: usize) -> Result<()> {
        for (key, value) in query {
            match key.as_str() {
                "$or" | "$and" => {
                    if depth + 1 > self.max_depth {
                        return Err(over(
                            key,
                            format!("is nested {} deep", depth + 1),
                            "maxDepth",
                            self.max_depth,
                        ));
                    }
                    self.check_list(key, value)?;
                    let branches: Vec<&Value> = match value {
                        Value::Array(items) => items.iter().collect(),
                        Value::Object(obj) => obj.values().collect(),
                        _ => Vec::new(),
                    };
                    for branch in branches {
                        if let Value::Object(branch) = branch {
                            self.check_level(branch, depth + 1)?;
                        }
                    }
                }
                _ => {
                    if let Value::Object(ops) = value {
                        for (op, operand) in ops {
                            if op == "$in" || op == "$nin" {
                                self.check_list(op, operand)?;
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn check_list(&self, name: &str, value: &Value) -> Result<()> {
        let len = list_len(value);
        if len > self.max_list {
            return Err(over(
                name,
                format!("has {len} items"),
                "maxList",
                self.max_list,
            ));
        }
        Ok(())
    }
}

/// Query limits on the App.
impl App {
    /// Set the limits on the queries of external calls (default [`QueryLimits::default`]).
    pub fn set_query_limits(&self, limits: QueryLimits) {
        self.insert_extension(limits);
    }

    /// The limits on the queries of external calls.
    pub fn query_limits(&self) -> QueryLimits {
        self.extension::<QueryLimits>()
            .map(|l| *l)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(limits: &QueryLimits, q: Value) -> Result<()> {
        limits.check(q.as_object().expect("object"))
    }

    fn nested(depth: usize) -> Value {
        let mut q = json!({"a": 1});
        for _ in 0..depth {
            q = json!({"$or": [q, {"b": 2}]});
        }
        q
    }

    #[test]
    fn each_limit_is_a_400_naming_it() {
        let limits = QueryLimits {
            max_list: 3,
            max_depth: 2,
            max_limit: 50,
        };
        assert!(check(&limits, json!({"a": {"$in": [1, 2, 3]}, "$limit": 50})).is_ok());
        for (q, name) in [
            (json!({"a": {"$in": [1, 2, 3, 4]}}), "$in"),
            (
                json!({"a": {"$nin": {"0": 1, "1": 2, "2": 3, "3": 4}}}),
                "$nin",
            ),
            (json!({"$or": [{}, {}, {}, {}]}), "$or"),
            (json!({"$and": [{"a": {"$in": [1, 2, 3, 4]}}]}), "$in"),
            (json!({"$limit": 51}), "$limit"),
            (json!({"$limit": "51"}), "$limit"),
            (nested(3), "$or"),
        ] {
            let err = check(&limits, q.clone()).expect_err("over a limit");
            assert_eq!(err.code(), 400, "{q}");
            assert!(err.message().starts_with(name), "{q}: {err}");
        }
        assert!(check(&limits, nested(2)).is_ok());
        // A negative or absent $limit is not "too large".
        assert!(check(&limits, json!({"$limit": -1})).is_ok());
    }
}
