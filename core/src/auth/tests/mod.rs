//! Tests of the authentication service, strategies and hooks, on an in-process App: the
//! fixture (a users store, a protected service, helpers) here, the tests by subject in the
//! files next to it.

use std::sync::Mutex;

use async_trait::async_trait;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::*;
use crate::error::ErrorKind;
use crate::params::{Method, Provider};
use crate::sync;

const SECRET: &str = "test-secret-0123456789";

/// A minimal users store: integer ids, equality queries, `$` keys ignored.
#[derive(Default)]
struct Users {
    records: Mutex<Vec<Value>>,
}

#[async_trait]
impl Service for Users {
    async fn find(&self, params: Params) -> Result<Value> {
        let records = sync::lock(&self.records);
        let hits: Vec<Value> = records
            .iter()
            .filter(|r| {
                params
                    .query
                    .iter()
                    .filter(|(k, _)| !k.starts_with('$'))
                    .all(|(k, v)| r.get(k) == Some(v))
            })
            .cloned()
            .collect();
        Ok(json!({ "total": hits.len(), "limit": 10, "skip": 0, "data": hits }))
    }

    async fn get(&self, id: Id, _params: Params) -> Result<Value> {
        let records = sync::lock(&self.records);
        records
            .iter()
            .find(|r| id.matches_value(&r["id"]))
            .cloned()
            .ok_or_else(|| Error::no_record(&id))
    }

    async fn create(&self, data: Value, _params: Params) -> Result<Value> {
        let mut records = sync::lock(&self.records);
        let mut record = data;
        record["id"] = json!(records.len() + 1);
        records.push(record.clone());
        Ok(record)
    }

    async fn patch(&self, id: Option<Id>, data: Value, _params: Params) -> Result<Value> {
        let mut records = sync::lock(&self.records);
        let id = id.ok_or_else(|| Error::bad_request("id required"))?;
        let record = records
            .iter_mut()
            .find(|r| id.matches_value(&r["id"]))
            .ok_or_else(|| Error::no_record(&id))?;
        if let (Value::Object(record), Value::Object(data)) = (&mut *record, data) {
            record.extend(data);
        }
        Ok(record.clone())
    }

    async fn remove(&self, id: Option<Id>, _params: Params) -> Result<Value> {
        let mut records = sync::lock(&self.records);
        let id = id.ok_or_else(|| Error::bad_request("id required"))?;
        let pos = records
            .iter()
            .position(|r| id.matches_value(&r["id"]))
            .ok_or_else(|| Error::no_record(&id))?;
        Ok(records.remove(pos))
    }
}

/// A protected service that echoes the caller's user.
struct Whoami;

#[async_trait]
impl Service for Whoami {
    async fn find(&self, params: Params) -> Result<Value> {
        Ok(json!({ "user": params.user, "authentication": params.authentication }))
    }
}

struct Fixture {
    app: App,
    auth: AuthenticationService,
    user: Value,
}

fn rest() -> Params {
    Params::new().with_provider(Provider::Rest)
}

fn ok<T>(r: Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("unexpected error: {e}"))
}

fn err<T: fmt::Debug>(r: Result<T>) -> Error {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e,
    }
}

async fn fixture() -> Fixture {
    fixture_with(AuthConfig::new(SECRET)).await
}

async fn fixture_with(config: AuthConfig) -> Fixture {
    let app = App::new();
    let users = app.use_service("users", Users::default());
    users.hooks().before_for(
        [Method::Find, Method::Get, Method::Patch, Method::Remove],
        authenticate(["jwt"]),
    );
    users.hooks().before_for(
        [Method::Create, Method::Update, Method::Patch],
        hash_password("password"),
    );
    users.hooks().after(protect(["password"]));
    let whoami = app.use_service("whoami", Whoami);
    whoami.hooks().before(authenticate(["jwt"]));
    let auth = AuthenticationService::setup(&app, config);
    let user = ok(users
        .create(
            json!({"email": "a@example.com", "password": "pw-1"}),
            rest(),
        )
        .await);
    Fixture { app, auth, user }
}

async fn login(f: &Fixture) -> Value {
    let svc = ok(f.app.require("authentication"));
    ok(svc
        .create(
            json!({"strategy": "local", "email": "a@example.com", "password": "pw-1"}),
            rest(),
        )
        .await)
}

fn token_of(result: &Value) -> String {
    result["accessToken"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_default()
}

fn bearer(value: &str) -> Params {
    let mut params = rest();
    if let Ok(v) = http::HeaderValue::from_str(value) {
        params.headers.insert(http::header::AUTHORIZATION, v);
    }
    params
}

fn is_uuid_v4(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok_and(|u| u.get_version_num() == 4)
        && s.len() == 36
        && s == s.to_ascii_lowercase()
}

async fn find_with_token(f: &Fixture, token: &str) -> Result<Value> {
    ok(f.app.require("whoami"))
        .find(bearer(&format!("Bearer {token}")))
        .await
}

/// Remove user 1; a request with its token is then the users service's 404.
async fn remove_user_then_expect_404(f: &Fixture, token: &str) {
    ok(ok(f.app.require("users"))
        .remove(Some(Id::Int(1)), Params::new())
        .await);
    let e = err(find_with_token(f, token).await);
    assert_eq!((e.code(), e.message()), (404, "No record found for id '1'"));
}

mod custom_strategy;
mod entity_cache;
mod login;
mod protect;
mod tokens;
