//! The JWT strategy's entity cache, and the settings of the cache and the login limit.

use super::*;

/// Count the entity loads (`get` on users) from now on.
fn count_gets(f: &Fixture) -> Arc<std::sync::atomic::AtomicUsize> {
    let gets = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = Arc::clone(&gets);
    ok(f.app.require("users")).hooks().before_for(
        [Method::Get],
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
