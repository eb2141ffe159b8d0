//! Access tokens: signing and verification.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{DecodingKey, EncodingKey, Validation};
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::config::JwtOptions;
use crate::error::{Error, Result};

/// Seconds since the Unix epoch.
pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[derive(Serialize)]
struct Header<'a> {
    alg: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    typ: Option<&'a str>,
}

/// The claims in Node's order: extra payload keys, then `iat`, `exp`, `aud`, `iss`, `sub`, `jti`.
#[derive(Serialize)]
struct Claims<'a> {
    #[serde(flatten)]
    extra: &'a Map<String, Value>,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<&'a str>,
    jti: &'a str,
}

/// Sign a token: header `{"alg":…,"typ":…}` (in that order, as Node's jsonwebtoken writes it),
/// then the claims `iat`, `exp`, `aud`, `iss`, `sub`, `jti` after the extra `payload` keys.
pub(crate) fn sign(
    secret: &str,
    options: &JwtOptions,
    payload: Map<String, Value>,
    subject: Option<String>,
    issued_at: u64,
) -> Result<String> {
    let header = Header {
        alg: options.algorithm.as_str(),
        typ: options.typ.as_deref(),
    };
    let mut extra = payload;
    for key in ["iat", "exp", "aud", "iss", "sub", "jti"] {
        extra.remove(key);
    }
    let jti = uuid::Uuid::new_v4().hyphenated().to_string();
    let claims = Claims {
        extra: &extra,
        iat: issued_at,
        exp: issued_at.saturating_add(options.expires_in),
        aud: options.audience.as_deref(),
        iss: options.issuer.as_deref(),
        sub: subject.as_deref(),
        jti: &jti,
    };
    fn encode(v: &impl Serialize) -> Result<String> {
        let bytes = serde_json::to_vec(v).map_err(Error::internal)?;
        Ok(URL_SAFE_NO_PAD.encode(bytes))
    }
    let message = format!("{}.{}", encode(&header)?, encode(&claims)?);
    let signature = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(secret.as_bytes()),
        options.algorithm.to_jsonwebtoken(),
    )
    .map_err(Error::internal)?;
    Ok(format!("{message}.{signature}"))
}

/// Verify a token's signature, algorithm, `exp`, `aud` and `iss`; returns the payload.
///
/// Failures are NotAuthenticated with the message Node's jsonwebtoken gives (`jwt malformed`,
/// `invalid token`, `invalid signature`, `jwt expired`, `jwt audience invalid. expected: …`,
/// `jwt issuer invalid. expected: …`, `invalid algorithm`) and `data.name` set to
/// `JsonWebTokenError` or `TokenExpiredError`.
pub(crate) fn verify(
    secret: &str,
    options: &JwtOptions,
    token: &str,
) -> Result<Map<String, Value>> {
    if token.split('.').count() != 3 {
        return Err(jwt_error("jwt malformed", "JsonWebTokenError"));
    }
    let mut validation = Validation::new(options.algorithm.to_jsonwebtoken());
    validation.leeway = options.leeway;
    validation.required_spec_claims.clear();
    validation.validate_exp = true;
    match &options.audience {
        Some(aud) => {
            validation.set_audience(&[aud]);
            validation.required_spec_claims.insert("aud".into());
        }
        None => validation.validate_aud = false,
    }
    if let Some(iss) = &options.issuer {
        validation.set_issuer(&[iss]);
        validation.required_spec_claims.insert("iss".into());
    }
    let key = DecodingKey::from_secret(secret.as_bytes());
    match jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation) {
        Ok(data) => {
            let claims = data.claims;
            // jsonwebtoken accepts a token without `exp`; Feathers' tokens always have one.
            if !claims.get("exp").is_some_and(Value::is_number) {
                return Err(jwt_error("jwt expiry missing", "JsonWebTokenError"));
            }
            Ok(claims)
        }
        Err(err) => {
            use jsonwebtoken::errors::ErrorKind as K;
            let (message, name) = match err.kind() {
                K::ExpiredSignature => ("jwt expired".to_owned(), "TokenExpiredError"),
                K::InvalidSignature => ("invalid signature".to_owned(), "JsonWebTokenError"),
                K::InvalidAudience => (
                    format!(
                        "jwt audience invalid. expected: {}",
                        options.audience.as_deref().unwrap_or_default()
                    ),
                    "JsonWebTokenError",
                ),
                K::InvalidIssuer => (
                    format!(
                        "jwt issuer invalid. expected: {}",
                        options.issuer.as_deref().unwrap_or_default()
                    ),
                    "JsonWebTokenError",
                ),
                K::MissingRequiredClaim(claim) if claim == "aud" => (
                    format!(
                        "jwt audience invalid. expected: {}",
                        options.audience.as_deref().unwrap_or_default()
                    ),
                    "JsonWebTokenError",
                ),
                K::MissingRequiredClaim(claim) if claim == "iss" => (
                    format!(
                        "jwt issuer invalid. expected: {}",
                        options.issuer.as_deref().unwrap_or_default()
                    ),
                    "JsonWebTokenError",
                ),
                K::InvalidAlgorithm | K::InvalidAlgorithmName | K::MissingAlgorithm => {
                    ("invalid algorithm".to_owned(), "JsonWebTokenError")
                }
                K::ImmatureSignature => ("jwt not active".to_owned(), "NotBeforeError"),
                _ => ("invalid token".to_owned(), "JsonWebTokenError"),
            };
            Err(jwt_error(&message, name))
        }
    }
}

fn jwt_error(message: &str, name: &str) -> Error {
    Error::not_authenticated(message).with_data(json!({ "name": name, "message": message }))
}

/// Decode the header and payload of a token without verifying it (for tests and tools).
pub fn decode_unverified(token: &str) -> Option<(Value, Value)> {
    let mut parts = token.split('.');
    let mut part = || -> Option<Value> {
        let bytes = URL_SAFE_NO_PAD.decode(parts.next()?).ok()?;
        serde_json::from_slice(&bytes).ok()
    };
    let header = part()?;
    let payload = part()?;
    Some((header, payload))
}
