//! Tokens and where they come from: expired, foreign and malformed tokens, header forms,
//! `params.authentication`, logout, and a token of a deleted user.

use super::*;

fn sign_with(secret: &str, options: &JwtOptions, sub: &str, iat: u64) -> String {
    ok(jwt::sign(
        secret,
        options,
        Map::new(),
        Some(sub.into()),
        iat,
    ))
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
    params.authentication = Some(json!({"strategy": "jwt", "accessToken": token}).into());
    let out = ok(whoami.find(params).await);
    assert_eq!(out["user"]["id"], 1);
    // The same user (without its password) and authentication as a bearer token gives.
    let by_header = ok(whoami.find(bearer(&format!("Bearer {token}"))).await);
    assert_eq!(out["user"], by_header["user"]);
    assert_eq!(out["user"].get("password"), None);
    assert_eq!(out["authentication"], by_header["authentication"]);
    assert_eq!(out["authentication"]["payload"]["sub"], "1");
    // A `jwt` authentication without a string token is the strategy's refusal.
    for bad in [
        json!({"strategy": "jwt"}),
        json!({"strategy": "jwt", "accessToken": 5}),
    ] {
        let mut params = Params::new().with_provider(Provider::Socketio);
        params.authentication = Some(bad.into());
        let e = err(whoami.find(params).await);
        assert_eq!((e.code(), e.message()), (401, "No access token"));
    }
    let mut params = Params::new().with_provider(Provider::Socketio);
    params.authentication = Some(json!({"strategy": "jwt", "accessToken": "not.a.jwt"}).into());
    assert_eq!(err(whoami.find(params).await).code(), 401);
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
        Some(json!({"strategy": "local", "email": "a@example.com", "password": "pw-1"}).into());
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
