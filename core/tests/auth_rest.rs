//! Authentication over REST, through the real router: login, the header forms, and every kind of
//! bad token answered with a Feathers NotAuthenticated body.

use axum::body::Body;
use http::{Request, StatusCode, header};
use jsonwebtoken::{EncodingKey, Header};
use plume::auth::{AuthConfig, AuthenticationService, authenticate, hash_password, protect};
use plume::{App, MemoryOptions, MemoryService, Method, ServiceOptions};
use serde_json::{Value, json};
use tower::ServiceExt;

const SECRET: &str = "rest-test-secret";

fn app() -> App {
    let app = App::new();
    let store: MemoryService = MemoryService::with_options(MemoryOptions::new().start_id(1));
    let users = app.use_service_with(
        "users",
        store,
        ServiceOptions::new().methods([
            Method::Find,
            Method::Get,
            Method::Create,
            Method::Patch,
            Method::Remove,
        ]),
    );
    users
        .hooks()
        .before_for(
            [Method::Find, Method::Get, Method::Patch, Method::Remove],
            authenticate(["jwt"]),
        )
        .before_for([Method::Create, Method::Patch], hash_password("password"))
        .after(protect(["password"]));
    AuthenticationService::setup(&app, AuthConfig::new(SECRET));
    app
}

async fn send(
    app: &App,
    method: &str,
    uri: &str,
    auth: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(auth) = auth {
        req = req.header(header::AUTHORIZATION, auth);
    }
    let body = match body {
        Some(v) => {
            req = req.header(header::CONTENT_TYPE, "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    let req = req.body(body).unwrap_or_else(|e| panic!("{e}"));
    let res = app
        .into_router()
        .oneshot(req)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let status = res.status();
    let ct = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if !bytes.is_empty() {
        assert!(ct.starts_with("application/json"), "content type {ct}");
    }
    (status, value)
}

async fn signed_up_and_logged_in(app: &App) -> String {
    let (status, user) = send(
        app,
        "POST",
        "/users",
        None,
        Some(json!({"email": "a@example.com", "password": "pw"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(user, json!({"email": "a@example.com", "id": 1}));
    let (status, login) = send(
        app,
        "POST",
        "/authentication",
        None,
        Some(json!({"strategy": "local", "email": "a@example.com", "password": "pw"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(login["user"], user);
    login["accessToken"].as_str().unwrap_or_default().to_owned()
}

fn not_authenticated(body: &Value) {
    assert_eq!(body["name"], "NotAuthenticated", "{body}");
    assert_eq!(body["code"], 401);
    assert_eq!(body["className"], "not-authenticated");
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn token(secret: &str, iat: u64, exp: u64) -> String {
    let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
    header.typ = Some("access".into());
    let claims = json!({"iat": iat, "exp": exp, "aud": "https://yourdomain.com",
                        "iss": "feathers", "sub": "1", "jti": "6b0889cb-27be-45e2-b893-5e9d40adbbad"});
    jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn header_forms_over_rest() {
    let app = app();
    let token = signed_up_and_logged_in(&app).await;
    for value in [
        format!("Bearer {token}"),
        format!("bearer {token}"),
        format!("JWT {token}"),
        token.clone(),
    ] {
        let (status, user) = send(&app, "GET", "/users/1", Some(&value), None).await;
        assert_eq!(status, StatusCode::OK, "{value}");
        assert_eq!(user, json!({"email": "a@example.com", "id": 1}));
    }
    for value in [None, Some(format!("Basic {token}"))] {
        let (status, body) = send(&app, "GET", "/users/1", value.as_deref(), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        not_authenticated(&body);
        assert_eq!(body["message"], "Not authenticated");
    }
}

#[tokio::test]
async fn bad_tokens_are_401_bodies() {
    let app = app();
    let good = signed_up_and_logged_in(&app).await;
    // A token built by another JWT library with our secret is accepted: the format is standard.
    let (status, _) = send(
        &app,
        "GET",
        "/users/1",
        Some(&format!("Bearer {}", token(SECRET, now(), now() + 60))),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let cases = [
        (token(SECRET, now() - 7200, now() - 3600), "jwt expired"),
        (token("foreign", now(), now() + 60), "invalid signature"),
        ("not.a.jwt".to_owned(), "invalid token"),
        ("garbage".to_owned(), "jwt malformed"),
        (format!("{good}x"), "invalid signature"),
    ];
    for (bad, message) in cases {
        let (status, body) =
            send(&app, "GET", "/users", Some(&format!("Bearer {bad}")), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad}");
        not_authenticated(&body);
        assert_eq!(body["message"], message);
        let (status, body) = send(
            &app,
            "POST",
            "/authentication",
            None,
            Some(json!({"strategy": "jwt", "accessToken": bad})),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        not_authenticated(&body);
    }
}

#[tokio::test]
async fn logout_over_rest() {
    let app = app();
    let token = signed_up_and_logged_in(&app).await;
    let bearer = format!("Bearer {token}");
    let (status, body) = send(&app, "DELETE", "/authentication", Some(&bearer), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["accessToken"], token.as_str());
    assert_eq!(body["authentication"]["strategy"], "jwt");
    assert_eq!(body["user"]["id"], 1);
    let (status, body) = send(
        &app,
        "DELETE",
        "/authentication/not-the-token",
        Some(&bearer),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["message"], "Invalid access token");
    let (status, body) = send(&app, "DELETE", "/authentication", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        body["message"],
        "Invalid authentication information (no `strategy` set)"
    );
    // The authentication service has no find/get/update/patch.
    let (status, _) = send(&app, "GET", "/authentication", Some(&bearer), None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}
