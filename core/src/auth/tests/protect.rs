//! The hooks around the service: socket handshakes, `protect`, `hash_password`, extra claims.

use super::*;

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
