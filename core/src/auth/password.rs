//! Password hashing with argon2 (Argon2id, default parameters, a random salt per hash).
//!
//! Both functions run the hash on tokio's blocking pool: it costs tens of milliseconds of CPU
//! and must not stall the async workers.

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use crate::error::{Error, Result};

/// Hash a password; returns a PHC string (`$argon2id$v=19$...`).
pub async fn hash(password: &str) -> Result<String> {
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || hash_blocking(&password))
        .await
        .map_err(Error::internal)?
}

/// Check a password against a PHC hash string. `Ok(false)` for a wrong password; a
/// BadRequest when `hash` is not a valid PHC string.
pub async fn verify(password: &str, hash: &str) -> Result<bool> {
    let (password, hash) = (password.to_owned(), hash.to_owned());
    tokio::task::spawn_blocking(move || verify_blocking(&password, &hash))
        .await
        .map_err(Error::internal)?
}

/// A hash of a fixed password, computed once: checking against it costs what a real check
/// costs (the `local` strategy uses it for unknown users).
pub(crate) async fn dummy_hash() -> Result<&'static str> {
    static DUMMY: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    DUMMY
        .get_or_try_init(|| hash("plume: no such user"))
        .await
        .map(String::as_str)
}

/// [`hash`] on the current thread.
pub fn hash_blocking(password: &str) -> Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(Error::internal)
}

/// [`verify`] on the current thread.
pub fn verify_blocking(password: &str, hash: &str) -> Result<bool> {
    let parsed = PasswordHash::new(hash)
        .map_err(|e| Error::bad_request(format!("invalid password hash: {e}")))?;
    match Argon2::default().verify_password(password.as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(e) => Err(Error::bad_request(format!("invalid password hash: {e}"))),
    }
}
