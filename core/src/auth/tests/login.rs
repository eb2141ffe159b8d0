//! Creating users and logging in: the result's shape, verbatim errors, strategies allowed.

use super::*;

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
