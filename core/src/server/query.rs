//! Query strings in `qs` syntax (`a[b]=1`, `a[0]=x`, `a[]=x`, percent-encoded or not).

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Parse a query string (without the `?`) the `qs` way into a JSON map whose leaves are
/// strings. Bracket notation nests (`$sort[name]=1`), numeric and empty brackets make arrays
/// (`id[$in][]=1`, `$or[0][done]=true`), and a repeated key gives an array.
///
/// An invalid query string is a BadRequest. Unlike `qs`, sparse indices (`a[0]=x&a[5]=y`) are
/// rejected rather than compacted; the official clients never send them.
///
/// ```
/// use serde_json::json;
/// let q = plume::server::parse_query("%24sort%5Bname%5D=1&id[$in][]=1&id[$in][]=2&$or[0][done]=true").unwrap();
/// assert_eq!(serde_json::Value::Object(q), json!({
///     "$sort": {"name": "1"},
///     "id": {"$in": ["1", "2"]},
///     "$or": [{"done": "true"}],
/// }));
/// ```
pub fn parse_query(raw: &str) -> Result<Map<String, Value>> {
    if raw.is_empty() {
        return Ok(Map::new());
    }
    // Brackets may arrive percent-encoded (`%5B`); the qs parser wants them literal. Decoding
    // them alone keeps every other escape (an encoded `&` or `=`) for the parser itself.
    let raw = raw
        .replace("%5B", "[")
        .replace("%5b", "[")
        .replace("%5D", "]")
        .replace("%5d", "]");
    let parsed: Map<String, Value> = serde_qs::Config::new()
        .max_depth(5)
        .deserialize_str(&raw)
        .map_err(|e| Error::bad_request(format!("Invalid query string: {e}")))?;
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn q(s: &str) -> Value {
        Value::Object(parse_query(s).expect("valid"))
    }

    #[test]
    fn qs_shapes() {
        assert_eq!(q(""), json!({}));
        assert_eq!(
            q("a=1&b=x+y&c=%20z"),
            json!({"a": "1", "b": "x y", "c": " z"})
        );
        assert_eq!(
            q("$sort[name]=1&$sort[id]=-1"),
            json!({"$sort": {"name": "1", "id": "-1"}})
        );
        assert_eq!(
            q("id[$in][]=1&id[$in][]=2"),
            json!({"id": {"$in": ["1", "2"]}})
        );
        assert_eq!(
            q("id%5B%24in%5D%5B0%5D=1&id%5B%24in%5D%5B1%5D=3"),
            json!({"id": {"$in": ["1", "3"]}})
        );
        assert_eq!(
            q("$or[0][done]=true&$or[1][priority][$gt]=2"),
            json!({"$or": [{"done": "true"}, {"priority": {"$gt": "2"}}]})
        );
        assert_eq!(q("a[1]=y&a[0]=x"), json!({"a": ["x", "y"]}));
        assert_eq!(q("a=1&a=2"), json!({"a": ["1", "2"]}));
        assert_eq!(q("tag=&x=1"), json!({"tag": "", "x": "1"}));
        assert_eq!(q("%24select%5B0%5D=text"), json!({"$select": ["text"]}));
        assert_eq!(q("a=%26%3D"), json!({"a": "&="}));
    }

    #[test]
    fn invalid_query_strings_are_bad_requests() {
        for bad in ["a[b=1", "a=%ff", "a=1&a[b]=2", "a[0]=x&a[5]=y", "a[21]=x"] {
            match parse_query(bad) {
                Ok(v) => panic!("{bad:?} parsed as {v:?}"),
                Err(e) => assert_eq!(e.code(), 400, "{bad:?}"),
            }
        }
    }

    proptest! {
        #[test]
        fn arbitrary_input_never_panics(s in ".{0,64}") {
            let _ = parse_query(&s);
        }

        #[test]
        fn flat_pairs_round_trip(pairs in proptest::collection::btree_map("[a-z]{1,6}", "[a-zA-Z0-9 ]{0,8}", 0..6)) {
            let raw: Vec<String> = pairs
                .iter()
                .map(|(k, v)| format!("{k}={}", percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)))
                .collect();
            let parsed = parse_query(&raw.join("&")).expect("valid");
            let expected: Map<String, Value> = pairs.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
            prop_assert_eq!(parsed, expected);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Query strings at the real sizes: brackets nested past the depth limit (5), lists
        /// past the query limits (1,000 items), long values, up to about 64 KiB in all (the
        /// most a request line carries).
        #[test]
        fn large_and_deep_query_strings_never_panic(
            depth in 0usize..64,
            items in 0usize..2500,
            value_len in 0usize..16 * 1024,
            junk in ".{0,64}",
        ) {
            let deep = format!("a{}=1&{junk}", "[b]".repeat(depth));
            let _ = parse_query(&deep);
            let list: String = (0..items).map(|i| format!("id[$in][]={i}&")).collect();
            let indexed: String = (0..items.min(500)).map(|i| format!("$or[{i}][x]=1&")).collect();
            let raw = format!("{list}{indexed}v={}", "z".repeat(value_len));
            let parsed = parse_query(&raw);
            prop_assert!(parsed.is_ok(), "{:?}", parsed.map(|_| ()));
            if let Ok(parsed) = parsed {
                let checked = crate::query::QueryLimits::default().check(&parsed);
                let over = items > crate::query::DEFAULT_MAX_LIST;
                prop_assert_eq!(checked.is_err(), over, "{} items", items);
                if let Err(e) = checked {
                    prop_assert_eq!(e.code(), 400);
                }
            }
        }
    }
}
