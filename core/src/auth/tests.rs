//! Tests of the authentication service, strategies and hooks, on an in-process App.

use std::sync::Mutex;

use async_trait::async_trait;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::*;
use crate::error::ErrorKind;
use crate::params::Provider;
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
    users
        .hooks()
        .before_for(&["find", "get", "patch", "remove"], authenticate(["jwt"]));
    users
        .hooks()
        .before_for(&["create", "update", "patch"], hash_password("password"));
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

#[tokio::test]
async fn created_user_has_no_password_and_a_hash_is_stored() {
    let f = fixture().await;
    assert_eq!(f.user, json!({"email": "a@example.com", "id": 1}));
    let users = ok(f.app.require("users"));
    let stored = users.service().get(Id::Int(1), Params::new()).await;
    let hash = ok(stored)["password"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_default();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(ok(password::verify("pw-1", &hash).await));
    assert!(!ok(password::verify("pw-2", &hash).await));
}

#[tokio::test]
async fn local_login_returns_the_contract_shape() {
    let f = fixture().await;
    let result = login(&f).await;
    let keys: Vec<&String> = result
        .as_object()
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    assert_eq!(keys, ["accessToken", "authentication", "user"]);
    assert_eq!(result["user"], json!({"email": "a@example.com", "id": 1}));
    assert_eq!(result["authentication"]["strategy"], "local");
    assert!(result["authentication"].get("accessToken").is_none());
    let token = token_of(&result);
    let (header, payload) = decode_unverified(&token).unwrap_or_default();
    assert_eq!(result["authentication"]["payload"], payload);
    // Exactly Node's header bytes.
    assert_eq!(
        token.split('.').next(),
        Some("eyJhbGciOiJIUzI1NiIsInR5cCI6ImFjY2VzcyJ9")
    );
    assert_eq!(header, json!({"alg": "HS256", "typ": "access"}));
    let claims: Vec<&String> = payload
        .as_object()
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    let mut sorted = claims.clone();
    sorted.sort();
    assert_eq!(sorted, ["aud", "exp", "iat", "iss", "jti", "sub"]);
    assert_eq!(payload["sub"], "1");
    assert_eq!(payload["aud"], "https://yourdomain.com");
    assert_eq!(payload["iss"], "feathers");
    assert!(
        is_uuid_v4(payload["jti"].as_str().unwrap_or_default()),
        "{payload}"
    );
    let (iat, exp) = (payload["iat"].as_u64(), payload["exp"].as_u64());
    let now = jwt::now();
    assert!(iat.is_some_and(|i| i.abs_diff(now) < 5));
    assert_eq!(exp.zip(iat).map(|(e, i)| e - i), Some(86_400));
    // The raw claims come in Node's order.
    let raw = token.split('.').nth(1).unwrap_or_default();
    let text = String::from_utf8(
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, raw)
            .unwrap_or_default(),
    )
    .unwrap_or_default();
    let order: Vec<usize> = [
        "\"iat\"", "\"exp\"", "\"aud\"", "\"iss\"", "\"sub\"", "\"jti\"",
    ]
    .iter()
    .map(|k| text.find(k).unwrap_or(usize::MAX))
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
}

#[tokio::test]
async fn each_login_gets_a_new_jti_and_jwt_login_echoes_the_token() {
    let f = fixture().await;
    let first = token_of(&login(&f).await);
    let second = token_of(&login(&f).await);
    assert_ne!(first, second);
    let svc = ok(f.app.require("authentication"));
    let result = ok(svc
        .create(json!({"strategy": "jwt", "accessToken": first}), rest())
        .await);
    assert_eq!(result["accessToken"], first.as_str());
    assert_eq!(result["authentication"]["strategy"], "jwt");
    assert_eq!(result["authentication"]["accessToken"], first.as_str());
    assert_eq!(result["user"], json!({"email": "a@example.com", "id": 1}));
}

#[tokio::test]
async fn create_errors_have_the_verbatim_messages() {
    let f = fixture().await;
    let svc = ok(f.app.require("authentication"));
    let cases = [
        (
            json!({"strategy": "local", "email": "a@example.com", "password": "nope"}),
            "Invalid login",
        ),
        (
            json!({"strategy": "local", "email": "b@example.com", "password": "pw-1"}),
            "Invalid login",
        ),
        (
            json!({"strategy": "local", "email": "a@example.com"}),
            "Invalid login",
        ),
        (
            json!({"email": "a@example.com", "password": "pw-1"}),
            NO_STRATEGY,
        ),
        (json!("local"), NO_STRATEGY),
        (json!({"strategy": "nope"}), STRATEGY_NOT_ALLOWED),
        (json!({"strategy": "jwt"}), "No access token"),
        (
            json!({"strategy": "jwt", "accessToken": ""}),
            "No access token",
        ),
    ];
    for (data, message) in cases {
        let e = err(svc.create(data.clone(), rest()).await);
        assert_eq!(
            (e.kind(), e.message()),
            (ErrorKind::NotAuthenticated, message),
            "{data}"
        );
    }
}

#[tokio::test]
async fn a_strategy_not_listed_in_the_config_is_refused() {
    let app = App::new();
    app.use_service("users", Users::default());
    AuthenticationService::setup(&app, AuthConfig::new(SECRET).with_strategies(["jwt"]));
    let e = err(ok(app.require("authentication"))
        .create(
            json!({"strategy": "local", "email": "x", "password": "y"}),
            rest(),
        )
        .await);
    assert_eq!(e.message(), STRATEGY_NOT_ALLOWED);
}

fn sign_with(secret: &str, options: &JwtOptions, sub: &str, iat: u64) -> String {
    ok(jwt::sign(
        secret,
        options,
        Map::new(),
        Some(sub.into()),
        iat,
    ))
}

async fn find_with_token(f: &Fixture, token: &str) -> Result<Value> {
    ok(f.app.require("whoami"))
        .find(bearer(&format!("Bearer {token}")))
        .await
}

#[tokio::test]
async fn expired_foreign_malformed_and_misaddressed_tokens_are_401() {
    let f = fixture().await;
    let options = JwtOptions::default();
    let expired = sign_with(SECRET, &options, "1", jwt::now() - 2 * 86_400);
    let foreign = sign_with("another-secret", &options, "1", jwt::now());
    let wrong_aud = sign_with(
        SECRET,
        &JwtOptions {
            audience: Some("https://elsewhere".into()),
            ..options.clone()
        },
        "1",
        jwt::now(),
    );
    let no_iss = sign_with(
        SECRET,
        &JwtOptions {
            issuer: None,
            ..options.clone()
        },
        "1",
        jwt::now(),
    );
    let hs512 = sign_with(
        SECRET,
        &JwtOptions {
            algorithm: JwtAlgorithm::HS512,
            ..options.clone()
        },
        "1",
        jwt::now(),
    );
    let good = token_of(&login(&f).await);
    let (h, p, s) = {
        let mut it = good.split('.');
        (
            it.next().unwrap_or_default(),
            it.next().unwrap_or_default(),
            it.next().unwrap_or_default(),
        )
    };
    let tampered = format!("{h}.{p}.{}AAAA", &s[..s.len() - 4]);
    let cases = [
        (expired.as_str(), "jwt expired"),
        (foreign.as_str(), "invalid signature"),
        (tampered.as_str(), "invalid signature"),
        (
            wrong_aud.as_str(),
            "jwt audience invalid. expected: https://yourdomain.com",
        ),
        (no_iss.as_str(), "jwt issuer invalid. expected: feathers"),
        (hs512.as_str(), "invalid algorithm"),
        ("not.a.jwt", "invalid token"),
        ("garbage", "jwt malformed"),
    ];
    for (token, message) in cases {
        let e = err(find_with_token(&f, token).await);
        assert_eq!(
            (e.kind(), e.message()),
            (ErrorKind::NotAuthenticated, message),
            "{token}"
        );
        let e = err(ok(f.app.require("authentication"))
            .create(json!({"strategy": "jwt", "accessToken": token}), rest())
            .await);
        assert_eq!(e.kind(), ErrorKind::NotAuthenticated);
    }
    let expired_err = err(find_with_token(&f, &expired).await);
    assert_eq!(
        expired_err.data().map(|d| d["name"].clone()),
        Some(json!("TokenExpiredError"))
    );
    assert!(find_with_token(&f, &good).await.is_ok());
}

#[tokio::test]
async fn every_authorization_header_form_is_accepted_and_basic_is_ignored() {
    let f = fixture().await;
    let token = token_of(&login(&f).await);
    let whoami = ok(f.app.require("whoami"));
    for value in [
        format!("Bearer {token}"),
        format!("bearer {token}"),
        format!("JWT {token}"),
        token.clone(),
    ] {
        let out = ok(whoami.find(bearer(&value)).await);
        assert_eq!(out["user"]["id"], 1, "{value}");
        assert_eq!(out["user"]["email"], "a@example.com");
        assert_eq!(out["authentication"]["strategy"], "jwt");
        assert_eq!(out["authentication"]["accessToken"], token.as_str());
        assert_eq!(out["authentication"]["payload"]["sub"], "1");
    }
    let e = err(whoami.find(bearer(&format!("Basic {token}"))).await);
    assert_eq!(e.message(), "Not authenticated");
    let e = err(whoami.find(rest()).await);
    assert_eq!((e.code(), e.message()), (401, "Not authenticated"));
}

#[tokio::test]
async fn params_authentication_is_used_and_internal_calls_pass() {
    let f = fixture().await;
    let token = token_of(&login(&f).await);
    let whoami = ok(f.app.require("whoami"));
    let mut params = Params::new().with_provider(Provider::Socketio);
    params.authentication = Some(json!({"strategy": "jwt", "accessToken": token}));
    let out = ok(whoami.find(params).await);
    assert_eq!(out["user"]["id"], 1);
    // A socket call relies on the connection's authentication, not its handshake header.
    let mut socket = bearer(&format!("Bearer {token}"));
    socket.provider = Some(Provider::Socketio);
    assert_eq!(
        err(whoami.find(socket).await).message(),
        "Not authenticated"
    );
    // Internal call without authentication passes, with no user.
    let out = ok(whoami.find(Params::new()).await);
    assert_eq!(out["user"], Value::Null);
    // A call from another node is external.
    let remote = Params {
        from_remote: true,
        ..Params::new()
    };
    assert_eq!(err(whoami.find(remote).await).code(), 401);
    // A strategy the hook does not list is refused.
    let mut params = rest();
    params.authentication =
        Some(json!({"strategy": "local", "email": "a@example.com", "password": "pw-1"}));
    assert_eq!(
        err(whoami.find(params).await).message(),
        STRATEGY_NOT_ALLOWED
    );
}

#[tokio::test]
async fn a_valid_token_of_a_deleted_user_is_not_found() {
    let f = fixture().await;
    let token = token_of(&login(&f).await);
    remove_user_then_expect_404(&f, &token).await;
}

/// Remove user 1; a request with its token is then the users service's 404.
async fn remove_user_then_expect_404(f: &Fixture, token: &str) {
    ok(ok(f.app.require("users"))
        .remove(Some(Id::Int(1)), Params::new())
        .await);
    let e = err(find_with_token(f, token).await);
    assert_eq!((e.code(), e.message()), (404, "No record found for id '1'"));
}

#[tokio::test]
async fn logout_checks_the_id_and_returns_the_jwt_result() {
    let f = fixture().await;
    let token = token_of(&login(&f).await);
    let svc = ok(f.app.require("authentication"));
    let out = ok(svc.remove(None, bearer(&format!("Bearer {token}"))).await);
    assert_eq!(out["accessToken"], token.as_str());
    assert_eq!(out["authentication"]["strategy"], "jwt");
    assert_eq!(out["user"], json!({"email": "a@example.com", "id": 1}));
    let same = ok(svc
        .remove(
            Some(Id::Str(token.clone())),
            bearer(&format!("Bearer {token}")),
        )
        .await);
    assert_eq!(same["accessToken"], token.as_str());
    let e = err(svc
        .remove(
            Some(Id::from("not-the-token")),
            bearer(&format!("Bearer {token}")),
        )
        .await);
    assert_eq!((e.code(), e.message()), (401, "Invalid access token"));
    let e = err(svc.remove(None, rest()).await);
    assert_eq!(e.message(), NO_STRATEGY);
    // Stateless: the token still works after logout.
    assert!(find_with_token(&f, &token).await.is_ok());
}

#[tokio::test]
async fn the_authentication_service_emits_no_events() {
    let f = fixture().await;
    let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    f.app.on_event(move |e| {
        sync::lock(&sink).push(e.path.clone());
    });
    let token = token_of(&login(&f).await);
    ok(ok(f.app.require("authentication"))
        .remove(None, bearer(&token))
        .await);
    assert!(sync::lock(&seen).iter().all(|p| p != "authentication"));
    // Control: other services do emit.
    ok(ok(f.app.require("users"))
        .create(json!({"email": "c@example.com", "password": "x"}), rest())
        .await);
    assert!(sync::lock(&seen).iter().any(|p| p == "users"));
}

#[tokio::test]
async fn authenticate_header_serves_socket_handshakes() {
    let f = fixture().await;
    let token = token_of(&login(&f).await);
    assert_eq!(
        ok(f.auth.authenticate_authorization("Basic abc").await),
        None
    );
    assert_eq!(ok(f.auth.authenticate_authorization("").await), None);
    let out = ok(f
        .auth
        .authenticate_authorization(&format!("Bearer {token}"))
        .await);
    let out = out.unwrap_or_default();
    assert_eq!(out["accessToken"], token.as_str());
    assert_eq!(out["user"], json!({"email": "a@example.com", "id": 1}));
    assert_eq!(
        err(f.auth.authenticate_authorization("Bearer not.a.jwt").await).code(),
        401
    );
}

#[tokio::test]
async fn protect_strips_records_arrays_and_pages_for_external_calls_only() {
    let f = fixture().await;
    let token = token_of(&login(&f).await);
    let users = ok(f.app.require("users"));
    let page = ok(users.find(bearer(&token)).await);
    assert_eq!(page["data"], json!([{"email": "a@example.com", "id": 1}]));
    let internal = ok(users.find(Params::new()).await);
    assert!(internal["data"][0]["password"].is_string());
    let p = protect(["password", "secret"]);
    let mut array = json!([{"id": 1, "password": "h", "secret": 1}, {"id": 2}]);
    p.strip(&mut array);
    assert_eq!(array, json!([{"id": 1}, {"id": 2}]));
    let mut record = json!({"id": 1, "password": "h", "data": [{"password": "kept"}]});
    p.strip(&mut record);
    assert_eq!(record, json!({"id": 1, "data": [{"password": "kept"}]}));
}

#[tokio::test]
async fn hash_password_hashes_each_record_of_a_multi_create_and_patch() {
    let app = App::new();
    struct Echo;
    #[async_trait]
    impl Service for Echo {
        async fn create(&self, data: Value, _p: Params) -> Result<Value> {
            Ok(data)
        }
        async fn patch(&self, _id: Option<Id>, data: Value, _p: Params) -> Result<Value> {
            Ok(data)
        }
        async fn find(&self, _p: Params) -> Result<Value> {
            Ok(json!({"password": "plain"}))
        }
    }
    let echo = app.use_service("echo", Echo);
    echo.hooks().before(hash_password("password"));
    let out = ok(echo
        .create(
            json!([{"password": "a"}, {"password": "b"}, {"other": 1}]),
            Params::new(),
        )
        .await);
    let a = out[0]["password"].as_str().unwrap_or_default().to_owned();
    let b = out[1]["password"].as_str().unwrap_or_default().to_owned();
    assert!(ok(password::verify("a", &a).await) && ok(password::verify("b", &b).await));
    assert_eq!(out[2], json!({"other": 1}));
    let patched = ok(echo
        .patch(None, json!({"password": "c"}), Params::new())
        .await);
    assert!(ok(password::verify(
        "c",
        patched["password"].as_str().unwrap_or_default()
    )
    .await));
    // Not for find.
    assert_eq!(ok(echo.find(Params::new()).await)["password"], "plain");
    assert_eq!(
        password::verify("x", "not a hash")
            .await
            .map_err(|e| e.kind()),
        Err(ErrorKind::BadRequest)
    );
}

proptest! {
    #[test]
    fn verify_never_panics_and_always_answers_401(token in ".{0,200}") {
        let e = jwt::verify(SECRET, &JwtOptions::default(), &token);
        prop_assert!(e.is_err_and(|e| e.code() == 401));
    }

    #[test]
    fn verify_never_panics_on_three_base64ish_parts(
        a in "[A-Za-z0-9_-]{0,60}", b in "[A-Za-z0-9_-]{0,60}", c in "[A-Za-z0-9_-]{0,60}"
    ) {
        let token = format!("{a}.{b}.{c}");
        prop_assert!(jwt::verify(SECRET, &JwtOptions::default(), &token).is_err());
        let _ = decode_unverified(&token);
    }

    #[test]
    fn sign_then_verify_round_trips(sub in "[a-z0-9]{1,20}", extra in "[a-z]{1,10}", n in any::<i32>()) {
        let mut payload = Map::new();
        payload.insert(extra.clone(), json!(n));
        let token = jwt::sign(SECRET, &JwtOptions::default(), payload, Some(sub.clone()), jwt::now());
        let claims = token.and_then(|t| jwt::verify(SECRET, &JwtOptions::default(), &t));
        prop_assert!(claims.is_ok());
        let claims = claims.unwrap_or_default();
        prop_assert_eq!(claims.get("sub"), Some(&json!(sub)));
        if !["iat", "exp", "aud", "iss", "sub", "jti"].contains(&extra.as_str()) {
            prop_assert_eq!(claims.get(&extra), Some(&json!(n)));
        }
    }

    /// Tokens at the real sizes: up to 16 KiB (past any header limit) of base64-ish parts.
    #[test]
    fn verify_never_panics_on_long_tokens(
        parts in prop::collection::vec(prop::collection::vec(prop::sample::select(b"AZaz09_-.".to_vec()), 0..6000), 1..4),
    ) {
        let token: String = parts
            .iter()
            .map(|p| p.iter().map(|b| char::from(*b)).collect::<String>())
            .collect::<Vec<_>>()
            .join(".");
        let e = jwt::verify(SECRET, &JwtOptions::default(), &token);
        prop_assert!(e.is_err_and(|e| e.code() == 401));
        let _ = decode_unverified(&token);
        let _ = parse_authorization(&format!("Bearer {token}"));
    }

    #[test]
    fn parse_authorization_never_panics(header in ".{0,100}") {
        if let Some(v) = parse_authorization(&header) {
            prop_assert_eq!(&v["strategy"], "jwt");
            prop_assert!(v["accessToken"].as_str().is_some_and(|t| !t.is_empty()));
        }
    }
}

#[tokio::test]
async fn a_hook_can_add_claims_but_not_replace_the_standard_ones() {
    let f = fixture().await;
    let auth = ok(f.app.require("authentication"));
    auth.hooks().before(crate::hooks::hook_sync(|ctx| {
        ctx.params
            .extra
            .insert("payload".into(), json!({"role": "admin", "sub": "999"}));
        Ok(())
    }));
    let token = token_of(&login(&f).await);
    let payload = ok(f.auth.verify_access_token(&token));
    assert_eq!(payload.get("role"), Some(&json!("admin")));
    assert_eq!(payload.get("sub"), Some(&json!("1")));
    let keys: Vec<&String> = payload.keys().collect();
    assert_eq!(keys, ["role", "iat", "exp", "aud", "iss", "sub", "jti"]);
}

/// Count the entity loads (`get` on users) from now on.
fn count_gets(f: &Fixture) -> Arc<std::sync::atomic::AtomicUsize> {
    let gets = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = Arc::clone(&gets);
    ok(f.app.require("users")).hooks().before_for(
        &["get"],
        crate::hooks::hook_sync(move |_| {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }),
    );
    gets
}

fn loads(gets: &std::sync::atomic::AtomicUsize) -> usize {
    gets.load(std::sync::atomic::Ordering::SeqCst)
}

#[tokio::test]
async fn the_jwt_strategy_reuses_the_entity_until_the_service_changes_it() {
    let f = fixture().await;
    let token = token_of(&login(&f).await);
    let gets = count_gets(&f);
    for _ in 0..3 {
        let r = ok(find_with_token(&f, &token).await);
        assert_eq!(r["user"]["email"], "a@example.com");
    }
    assert_eq!(loads(&gets), 1, "one load for three requests");

    // A patch through the service (an internal call) is seen by the next request.
    ok(ok(f.app.require("users"))
        .patch(Some(Id::Int(1)), json!({"name": "Ada"}), Params::new())
        .await);
    let r = ok(find_with_token(&f, &token).await);
    assert_eq!(r["user"]["name"], "Ada");
    assert_eq!(loads(&gets), 2);

    // So is a removal: the token now names a user that is gone.
    remove_user_then_expect_404(&f, &token).await;
}

#[tokio::test]
async fn an_entity_is_reloaded_once_the_cache_time_is_over() {
    let f = fixture().await;
    let token = token_of(&login(&f).await);
    let gets = count_gets(&f);
    tokio::time::pause();
    ok(find_with_token(&f, &token).await);
    tokio::time::advance(DEFAULT_ENTITY_CACHE - std::time::Duration::from_millis(1)).await;
    ok(find_with_token(&f, &token).await);
    assert_eq!(loads(&gets), 1);
    tokio::time::advance(std::time::Duration::from_millis(1)).await;
    ok(find_with_token(&f, &token).await);
    assert_eq!(loads(&gets), 2);
}

#[tokio::test]
async fn without_the_entity_cache_every_request_loads_the_entity() {
    let f = fixture_with(AuthConfig::new(SECRET).with_entity_cache(None)).await;
    let token = token_of(&login(&f).await);
    let gets = count_gets(&f);
    for _ in 0..3 {
        ok(find_with_token(&f, &token).await);
    }
    assert_eq!(loads(&gets), 3);
}

#[test]
fn the_entity_cache_setting_is_milliseconds_or_off() {
    let parse = |v: Value| AuthConfig::from_settings(&v, Some(SECRET.into()));
    assert_eq!(
        ok(parse(json!({}))).entity_cache,
        Some(DEFAULT_ENTITY_CACHE)
    );
    assert_eq!(
        ok(parse(json!({"entityCache": 250}))).entity_cache,
        Some(std::time::Duration::from_millis(250))
    );
    assert_eq!(ok(parse(json!({"entityCache": 0}))).entity_cache, None);
    assert_eq!(ok(parse(json!({"entityCache": false}))).entity_cache, None);
    let e = err(parse(json!({"entityCache": "soon"})));
    assert!(e.message().contains("entityCache"), "{e}");
}

#[test]
fn the_login_limit_setting_is_burst_and_interval_or_off() {
    let parse = |v: Value| AuthConfig::from_settings(&v, Some(SECRET.into()));
    assert_eq!(
        ok(parse(json!({}))).login_limit,
        Some(crate::auth::DEFAULT_LOGIN_LIMIT)
    );
    assert_eq!(
        ok(parse(
            json!({"loginLimit": {"burst": 3, "intervalMs": 500}})
        ))
        .login_limit,
        Some(crate::auth::LoginLimit {
            burst: 3,
            interval: std::time::Duration::from_millis(500),
        })
    );
    assert_eq!(
        ok(parse(json!({"loginLimit": {"burst": 7}}))).login_limit,
        Some(crate::auth::LoginLimit {
            burst: 7,
            ..crate::auth::DEFAULT_LOGIN_LIMIT
        })
    );
    assert_eq!(ok(parse(json!({"loginLimit": false}))).login_limit, None);
    for bad in [json!(5), json!({"burst": 0}), json!({"intervalMs": "1s"})] {
        let e = err(parse(json!({ "loginLimit": bad })));
        assert!(e.message().contains("loginLimit"), "{e}");
    }
}

/// A `jwt` strategy that accepts one fixed token.
struct MagicJwt;

#[async_trait]
impl AuthStrategy for MagicJwt {
    async fn authenticate(
        &self,
        _service: &AuthenticationService,
        data: &Map<String, Value>,
        _params: &Params,
    ) -> Result<Value> {
        match data.get("accessToken").and_then(Value::as_str) {
            Some("magic") => Ok(json!({
                "authentication": {"strategy": "jwt"},
                "user": {"id": 99, "email": "magic@example.com"}
            })),
            _ => Err(Error::not_authenticated("not magic")),
        }
    }
}

#[tokio::test]
async fn a_replaced_jwt_strategy_is_what_the_hook_uses_for_a_header() {
    let f = fixture().await;
    let token = token_of(&login(&f).await);
    // The built-in strategy takes the header.
    let r = ok(find_with_token(&f, &token).await);
    assert_eq!(r["user"]["email"], "a@example.com");
    assert_eq!(r["authentication"]["payload"]["sub"], "1");

    f.auth.register("jwt", MagicJwt);
    let r = ok(find_with_token(&f, "magic").await);
    assert_eq!(r["user"]["id"], 99);
    let e = err(find_with_token(&f, &token).await);
    assert_eq!((e.code(), e.message()), (401, "not magic"));
}
