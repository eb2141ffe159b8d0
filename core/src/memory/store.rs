//! The store of a memory service: records by id, and the lookup that lets the REST id `"5"`
//! find the record `5` without a scan.

use indexmap::IndexMap;
use serde_json::Value;

use crate::params::Id;

/// The records of a memory service, by id, in insertion order.
#[derive(Debug)]
pub(super) struct Store {
    pub(super) records: IndexMap<Id, Value>,
    pub(super) next_id: i64,
}

impl Store {
    /// The stored key of the record `id` denotes (`"5"` finds `5`).
    pub(super) fn key_of(&self, id: &Id) -> Option<Id> {
        if self.records.contains_key(id) {
            return Some(id.clone());
        }
        // The only other key `id` matches (see `Id::matches`) is its other spelling: `Str("5")`
        // for `Int(5)`, and `Int(5)` for `Str("5")` (but not for `Str("05")`). Two lookups
        // instead of a scan of every key: creates and gets stay O(1) as the store grows.
        let other = match id {
            Id::Int(n) => Id::Str(n.to_string()),
            Id::Str(s) => match s.parse::<i64>() {
                Ok(n) if n.to_string() == *s => Id::Int(n),
                _ => return None,
            },
        };
        self.records.contains_key(&other).then_some(other)
    }
}

#[cfg(test)]
mod key_tests {
    use super::{Id, IndexMap, Store, Value};
    use proptest::prelude::*;

    fn id_strategy() -> impl Strategy<Value = Id> {
        prop_oneof![
            (-20i64..20).prop_map(Id::Int),
            (-20i64..20).prop_map(|n| Id::Str(n.to_string())),
            "-?0?[0-9]{1,2}|[a-z]{1,2}|\\+[0-9]".prop_map(Id::Str),
        ]
    }

    proptest! {
        /// `key_of` finds exactly the key a scan with `Id::matches` finds.
        #[test]
        fn key_of_agrees_with_a_scan(keys in proptest::collection::vec(id_strategy(), 0..30),
                                     probe in id_strategy()) {
            let mut records = IndexMap::new();
            for key in keys {
                // A store never holds two keys that match each other.
                if !records.keys().any(|k: &Id| k.matches(&key)) {
                    records.insert(key, Value::Null);
                }
            }
            let store = Store { records, next_id: 0 };
            let scanned = store.records.keys().find(|k| k.matches(&probe)).cloned();
            prop_assert_eq!(store.key_of(&probe), scanned);
        }
    }
}
