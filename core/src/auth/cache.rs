//! Caches on the per-request authentication path.
//!
//! * Verified tokens: a token that verified once is valid until its `exp` (the configuration
//!   that verified it never changes), so its payload is kept until then instead of checking
//!   the signature and parsing the claims on every request.
//! * Entities: the user loaded for a token's `sub`, for a short time (`AuthConfig::entity_cache`),
//!   dropped at once when the entity service emits `updated`, `patched` or `removed` for it.
//!
//! Both maps are bounded: when one is full, expired entries go first, then everything.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use serde_json::{Map, Value};

use crate::params::Id;
use crate::shared::SharedValue;
use crate::sync::lock;

/// The most tokens and entities each map holds.
pub(crate) const MAX_ENTRIES: usize = 4096;

/// The cache key of an id: `5` and `"5"` are the same record.
fn key(id: &Id) -> Cow<'_, str> {
    match id {
        Id::Int(i) => Cow::Owned(i.to_string()),
        Id::Str(s) => Cow::Borrowed(s),
    }
}

/// A verified token, with what the `jwt` strategy makes of it on every request.
#[derive(Debug, PartialEq)]
pub(crate) struct Verified {
    /// `{strategy: "jwt", accessToken, payload}`: `params.authentication` (shared by every call
    /// with the token).
    pub(crate) authentication: SharedValue,
    /// The payload's `sub`.
    pub(crate) sub: Option<Id>,
    /// The last second it is valid in, leeway included; `None` without `exp`.
    valid_until: Option<u64>,
}

impl Verified {
    pub(crate) fn new(token: &str, payload: Map<String, Value>, leeway: u64) -> Self {
        let sub = payload
            .get("sub")
            .and_then(Value::as_str)
            .map(Id::parse_segment);
        let valid_until = payload
            .get("exp")
            .and_then(Value::as_u64)
            .map(|exp| exp.saturating_add(leeway));
        let mut authentication = Map::new();
        authentication.insert("strategy".into(), Value::String("jwt".into()));
        authentication.insert("accessToken".into(), Value::String(token.into()));
        authentication.insert("payload".into(), Value::Object(payload));
        Self {
            authentication: Value::Object(authentication).into(),
            sub,
            valid_until,
        }
    }

    /// The token's payload.
    pub(crate) fn payload(&self) -> Map<String, Value> {
        match self.authentication.get("payload") {
            Some(Value::Object(payload)) => payload.clone(),
            // invariant: `new` always stores the payload object.
            _ => Map::new(),
        }
    }
}

#[derive(Default)]
pub(crate) struct AuthCache {
    /// token → what it verified to. Hashed with foldhash (a random seed per map): SipHash of
    /// a 200-byte JWT was some 800 instructions per request, and only verified tokens are
    /// stored, so an outsider cannot fill the map with colliding keys.
    tokens: Mutex<HashMap<Box<str>, Arc<Verified>, foldhash::fast::RandomState>>,
    /// entity id → the entity (shared by every call of the user). foldhash too (random seed):
    /// ids come from verified tokens.
    entities: Mutex<HashMap<String, (SharedValue, Instant), foldhash::fast::RandomState>>,
    /// Bumped by every invalidation: an entity loaded while it changed is not stored.
    generation: AtomicU64,
}

impl AuthCache {
    /// A token that verified before and is still valid at `now` (seconds).
    pub(crate) fn token(&self, token: &str, now: u64) -> Option<Arc<Verified>> {
        let mut tokens = lock(&self.tokens);
        match tokens.get(token) {
            Some(v) if v.valid_until.is_some_and(|until| now <= until) => Some(v.clone()),
            Some(_) => {
                tokens.remove(token);
                None
            }
            None => None,
        }
    }

    /// Remember a verified token until it expires; one without `exp` is not kept.
    pub(crate) fn put_token(&self, token: &str, verified: &Arc<Verified>, now: u64) {
        if verified.valid_until.is_none() {
            return;
        }
        let mut tokens = lock(&self.tokens);
        if tokens.len() >= MAX_ENTRIES {
            tokens.retain(|_, v| v.valid_until.is_some_and(|until| now <= until));
            if tokens.len() >= MAX_ENTRIES {
                tokens.clear();
            }
        }
        tokens.insert(token.into(), verified.clone());
    }

    /// The generation to pass to [`put_entity`](Self::put_entity) for a load starting now.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// A cached entity younger than `ttl`.
    pub(crate) fn entity(&self, id: &Id, ttl: Duration, now: Instant) -> Option<SharedValue> {
        let mut entities = lock(&self.entities);
        let k = key(id);
        match entities.get(k.as_ref()) {
            Some((entity, at)) if now.saturating_duration_since(*at) < ttl => Some(entity.clone()),
            Some(_) => {
                entities.remove(k.as_ref());
                None
            }
            None => None,
        }
    }

    /// Store an entity loaded at `at`, unless an invalidation happened since `generation`.
    pub(crate) fn put_entity(
        &self,
        id: &Id,
        entity: &SharedValue,
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
        entities.insert(key(id).into_owned(), (entity.clone(), at));
    }

    /// Drop the entity `id`, or every entity when the id is unknown.
    pub(crate) fn invalidate(&self, id: Option<&Id>) {
        let mut entities = lock(&self.entities);
        self.generation.fetch_add(1, Ordering::AcqRel);
        match id {
            Some(id) => {
                entities.remove(key(id).as_ref());
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

    /// A verified token `t` of user `n`, valid until `until`.
    fn verified(t: &str, n: u64, until: u64) -> Arc<Verified> {
        let mut p = payload(n);
        p.insert("exp".into(), until.into());
        Arc::new(Verified::new(t, p, 0))
    }

    fn sub(v: Option<Arc<Verified>>) -> Option<Id> {
        v.and_then(|v| v.sub.clone())
    }

    #[test]
    fn a_verified_token_carries_what_the_jwt_strategy_needs() {
        let v = Verified::new("tok", payload(5), 30);
        assert_eq!(v.sub, Some(Id::Int(5)));
        assert_eq!(v.valid_until, Some(130));
        assert_eq!(
            v.authentication,
            json!({"strategy": "jwt", "accessToken": "tok", "payload": {"sub": "5", "exp": 100}})
        );
        assert_eq!(v.payload(), payload(5));
        let no_exp = Verified::new("tok", Map::new(), 30);
        assert_eq!((no_exp.sub, no_exp.valid_until), (None, None));
    }

    #[test]
    fn a_token_is_served_until_its_last_valid_second() {
        let cache = AuthCache::default();
        cache.put_token("t", &verified("t", 1, 100), 50);
        assert_eq!(sub(cache.token("t", 100)), Some(Id::Int(1)));
        assert_eq!(cache.token("t", 101), None);
        // The expired entry is gone, not just hidden.
        assert_eq!(cache.len().0, 0);
        assert_eq!(cache.token("other", 50), None);
        // A token without `exp` is not kept.
        cache.put_token(
            "forever",
            &Arc::new(Verified::new("forever", Map::new(), 0)),
            50,
        );
        assert_eq!(cache.len().0, 0);
    }

    #[test]
    fn the_token_map_stays_bounded() {
        let cache = AuthCache::default();
        for i in 0..(MAX_ENTRIES as u64 + 10) {
            let t = format!("t{i}");
            cache.put_token(&t, &verified(&t, i, 1_000), 0);
        }
        assert!(cache.len().0 <= MAX_ENTRIES);
        // The newest one is always there.
        let last = MAX_ENTRIES as u64 + 9;
        assert_eq!(
            sub(cache.token(&format!("t{last}"), 0)),
            Some(Id::Int(last as i64))
        );
    }

    #[test]
    fn expired_tokens_are_evicted_before_live_ones() {
        let cache = AuthCache::default();
        for i in 0..MAX_ENTRIES as u64 {
            // Half of them are valid until 10, half until 1000.
            let until = if i % 2 == 0 { 10 } else { 1_000 };
            let t = format!("t{i}");
            cache.put_token(&t, &verified(&t, i, until), 0);
        }
        cache.put_token("new", &verified("new", 0, 1_000), 20);
        assert_eq!(cache.len().0, MAX_ENTRIES / 2 + 1);
        assert_eq!(sub(cache.token("t1", 20)), Some(Id::Int(1)));
    }

    #[test]
    fn entities_expire_after_the_ttl_and_ids_match_across_types() {
        let cache = AuthCache::default();
        let t0 = Instant::now();
        let ttl = Duration::from_secs(5);
        let user = SharedValue::from(json!({ "id": 7, "email": "a@b" }));
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
        let user = SharedValue::from(json!({ "id": 1 }));
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
