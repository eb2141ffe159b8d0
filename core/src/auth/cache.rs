//! Caches on the per-request authentication path.
//!
//! * Verified tokens: a token that verified once is valid until its `exp` (the configuration
//!   that verified it never changes), so its payload is kept until then instead of checking
//!   the signature and parsing the claims on every request.
//! * Entities: the user loaded for a token's `sub`, for a short time (`AuthConfig::entity_cache`),
//!   dropped at once when the entity service emits `updated`, `patched` or `removed` for it.
//!
//! Both maps are bounded: when one is full, expired entries go first, then everything.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use serde_json::{Map, Value};

use crate::params::Id;

/// The most tokens and entities each map holds.
pub(crate) const MAX_ENTRIES: usize = 4096;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The cache key of an id: `5` and `"5"` are the same record.
fn key(id: &Id) -> String {
    match id {
        Id::Int(i) => i.to_string(),
        Id::Str(s) => s.clone(),
    }
}

#[derive(Default)]
pub(crate) struct AuthCache {
    /// token → (payload, last second it is valid in, leeway included).
    tokens: Mutex<HashMap<Box<str>, (Map<String, Value>, u64)>>,
    entities: Mutex<HashMap<String, (Value, Instant)>>,
    /// Bumped by every invalidation: an entity loaded while it changed is not stored.
    generation: AtomicU64,
}

impl AuthCache {
    /// The payload of a token that verified before and is still valid at `now` (seconds).
    pub(crate) fn token(&self, token: &str, now: u64) -> Option<Map<String, Value>> {
        let mut tokens = lock(&self.tokens);
        match tokens.get(token) {
            Some((payload, valid_until)) if now <= *valid_until => Some(payload.clone()),
            Some(_) => {
                tokens.remove(token);
                None
            }
            None => None,
        }
    }

    /// Remember a verified token's payload until `valid_until` (seconds, leeway included).
    pub(crate) fn put_token(
        &self,
        token: &str,
        payload: &Map<String, Value>,
        valid_until: u64,
        now: u64,
    ) {
        let mut tokens = lock(&self.tokens);
        if tokens.len() >= MAX_ENTRIES {
            tokens.retain(|_, (_, until)| now <= *until);
            if tokens.len() >= MAX_ENTRIES {
                tokens.clear();
            }
        }
        tokens.insert(token.into(), (payload.clone(), valid_until));
    }

    /// The generation to pass to [`put_entity`](Self::put_entity) for a load starting now.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// A cached entity younger than `ttl`.
    pub(crate) fn entity(&self, id: &Id, ttl: Duration, now: Instant) -> Option<Value> {
        let mut entities = lock(&self.entities);
        let k = key(id);
        match entities.get(&k) {
            Some((entity, at)) if now.saturating_duration_since(*at) < ttl => Some(entity.clone()),
            Some(_) => {
                entities.remove(&k);
                None
            }
            None => None,
        }
    }

    /// Store an entity loaded at `at`, unless an invalidation happened since `generation`.
    pub(crate) fn put_entity(
        &self,
        id: &Id,
        entity: &Value,
        generation: u64,
        ttl: Duration,
        at: Instant,
    ) {
        let mut entities = lock(&self.entities);
        // Checked under the lock that `invalidate` takes too: no stale entry survives it.
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if entities.len() >= MAX_ENTRIES {
            entities.retain(|_, (_, loaded)| at.saturating_duration_since(*loaded) < ttl);
            if entities.len() >= MAX_ENTRIES {
                entities.clear();
            }
        }
        entities.insert(key(id), (entity.clone(), at));
    }

    /// Drop the entity `id`, or every entity when the id is unknown.
    pub(crate) fn invalidate(&self, id: Option<&Id>) {
        let mut entities = lock(&self.entities);
        self.generation.fetch_add(1, Ordering::AcqRel);
        match id {
            Some(id) => {
                entities.remove(&key(id));
            }
            None => entities.clear(),
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> (usize, usize) {
        (lock(&self.tokens).len(), lock(&self.entities).len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn payload(n: u64) -> Map<String, Value> {
        let Value::Object(map) = json!({ "sub": n.to_string(), "exp": 100 }) else {
            unreachable!("an object literal")
        };
        map
    }

    #[test]
    fn a_token_is_served_until_its_last_valid_second() {
        let cache = AuthCache::default();
        cache.put_token("t", &payload(1), 100, 50);
        assert_eq!(cache.token("t", 100), Some(payload(1)));
        assert_eq!(cache.token("t", 101), None);
        // The expired entry is gone, not just hidden.
        assert_eq!(cache.len().0, 0);
        assert_eq!(cache.token("other", 50), None);
    }

    #[test]
    fn the_token_map_stays_bounded() {
        let cache = AuthCache::default();
        for i in 0..(MAX_ENTRIES as u64 + 10) {
            cache.put_token(&format!("t{i}"), &payload(i), 1_000, 0);
        }
        assert!(cache.len().0 <= MAX_ENTRIES);
        // The newest one is always there.
        let last = MAX_ENTRIES as u64 + 9;
        assert_eq!(cache.token(&format!("t{last}"), 0), Some(payload(last)));
    }

    #[test]
    fn expired_tokens_are_evicted_before_live_ones() {
        let cache = AuthCache::default();
        for i in 0..MAX_ENTRIES as u64 {
            // Half of them are valid until 10, half until 1000.
            let until = if i % 2 == 0 { 10 } else { 1_000 };
            cache.put_token(&format!("t{i}"), &payload(i), until, 0);
        }
        cache.put_token("new", &payload(0), 1_000, 20);
        assert_eq!(cache.len().0, MAX_ENTRIES / 2 + 1);
        assert_eq!(cache.token("t1", 20), Some(payload(1)));
    }

    #[test]
    fn entities_expire_after_the_ttl_and_ids_match_across_types() {
        let cache = AuthCache::default();
        let t0 = Instant::now();
        let ttl = Duration::from_secs(5);
        let user = json!({ "id": 7, "email": "a@b" });
        cache.put_entity(&Id::Int(7), &user, cache.generation(), ttl, t0);
        assert_eq!(
            cache.entity(&Id::Str("7".into()), ttl, t0 + Duration::from_secs(4)),
            Some(user.clone())
        );
        assert_eq!(cache.entity(&Id::Int(7), ttl, t0 + ttl), None);
        assert_eq!(cache.len().1, 0);
    }

    #[test]
    fn an_invalidation_drops_the_entity_and_blocks_a_load_that_raced_it() {
        let cache = AuthCache::default();
        let now = Instant::now();
        let ttl = Duration::from_secs(5);
        let user = json!({ "id": 1 });
        cache.put_entity(&Id::Int(1), &user, cache.generation(), ttl, now);
        cache.put_entity(&Id::Int(2), &user, cache.generation(), ttl, now);
        cache.invalidate(Some(&Id::Str("1".into())));
        assert_eq!(cache.entity(&Id::Int(1), ttl, now), None);
        assert_eq!(cache.entity(&Id::Int(2), ttl, now), Some(user.clone()));

        // A load that started before an invalidation is not stored.
        let generation = cache.generation();
        cache.invalidate(Some(&Id::Int(3)));
        cache.put_entity(&Id::Int(3), &user, generation, ttl, now);
        assert_eq!(cache.entity(&Id::Int(3), ttl, now), None);

        // Without an id, everything goes.
        cache.invalidate(None);
        assert_eq!(cache.len().1, 0);
    }
}
