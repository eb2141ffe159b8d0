//! An App with a `users` service set up as a generated Feathers app has it (authenticate on
//! reads and writes, hash_password, protect), the authentication service, and one user
//! `a@example.com` / `pw`. Included with `#[path]` by the security tests.

#![allow(dead_code)]

use plume::auth::{AuthConfig, AuthenticationService, authenticate, hash_password, protect};
use plume::{App, MemoryOptions, MemoryService, Method, Params};
use serde_json::{Value, json};

/// The user's email and password.
pub(crate) const EMAIL: &str = "a@example.com";
pub(crate) const PASSWORD: &str = "pw";

/// The App, with `protected` fields protected and `extra` fields stored in the user.
pub(crate) async fn users_app(config: AuthConfig, protected: &[&str], extra: Value) -> App {
    let app = App::new();
    let store: MemoryService = MemoryService::with_options(MemoryOptions::new().start_id(1));
    let users = app.use_service("users", store);
    let mut fields = vec!["password"];
    fields.extend_from_slice(protected);
    users
        .hooks()
        .before_for(
            [Method::Find, Method::Get, Method::Patch, Method::Remove],
            authenticate(["jwt"]),
        )
        .before_for([Method::Create, Method::Patch], hash_password("password"))
        .after(protect(fields));
    AuthenticationService::setup(&app, config);
    let mut user = json!({"email": EMAIL, "password": PASSWORD});
    if let (Some(user), Value::Object(extra)) = (user.as_object_mut(), extra) {
        user.extend(extra);
    }
    users
        .create(user, Params::new())
        .await
        .expect("user created");
    app
}

/// The body of a `local` login.
pub(crate) fn login(email: &str, password: &str) -> Value {
    json!({"strategy": "local", "email": email, "password": password})
}
