//! A strategy registered in place of the built-in `jwt` one.

use super::*;

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

/// A socket.io call with a connection's `{strategy: "jwt", accessToken}`.
async fn find_on_a_socket(f: &Fixture, token: &str) -> Result<Value> {
    let mut params = Params::new().with_provider(Provider::Socketio);
    params.authentication = Some(json!({"strategy": "jwt", "accessToken": token}).into());
    ok(f.app.require("whoami")).find(params).await
}

#[tokio::test]
async fn a_replaced_jwt_strategy_is_what_the_hook_uses_for_a_header_and_a_connection() {
    let f = fixture().await;
    let token = token_of(&login(&f).await);
    // The built-in strategy takes the header and the connection's authentication.
    for r in [
        ok(find_with_token(&f, &token).await),
        ok(find_on_a_socket(&f, &token).await),
    ] {
        assert_eq!(r["user"]["email"], "a@example.com");
        assert_eq!(r["authentication"]["payload"]["sub"], "1");
    }

    f.auth.register("jwt", MagicJwt);
    for r in [
        ok(find_with_token(&f, "magic").await),
        ok(find_on_a_socket(&f, "magic").await),
    ] {
        assert_eq!(r["user"]["id"], 99);
    }
    for e in [
        err(find_with_token(&f, &token).await),
        err(find_on_a_socket(&f, &token).await),
    ] {
        assert_eq!((e.code(), e.message()), (401, "not magic"));
    }
}
