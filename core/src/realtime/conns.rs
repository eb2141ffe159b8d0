//! The live real-time connections of an App: what [`App::connection`](crate::App::connection)
//! answers, kept small since a gateway holds one per connected socket (issue 22: ≤ 16 KiB of
//! gateway memory per socket; the profile is in docs/benchmarks.md, "Where a socket's bytes
//! are").
//!
//! - The handshake headers are not copied: they are read from socketioxide's copy of the
//!   handshake request when asked.
//! - A login's authentication and user are kept as compact JSON text. As `serde_json::Value`s
//!   (an `IndexMap` per object with `preserve_order`: an entries vector and a hash index) the
//!   two cost about 700 bytes more per socket than their text. Each call gets them as shared
//!   values read from the text when it first looks at them; a call whose `authenticate` hook
//!   replaces the user never parses the stored one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use serde_json::Value;
use socketioxide::extract::SocketRef;

use super::ConnectionInfo;
use crate::app::App;
use crate::params::ConnectionId;
use crate::shared::SharedValue;

/// One connection.
pub(super) struct Conn {
    login: Option<Login>,
    remote_addr: Option<SocketAddr>,
    pub(super) socket: Option<SocketRef>,
}

/// A logged-in connection's authentication and user, as JSON text.
struct Login {
    authentication: Box<str>,
    user: Box<str>,
}

impl Conn {
    /// A connection from its socket and what its handshake found.
    pub(super) fn new(socket: SocketRef, info: &ConnectionInfo) -> Self {
        let mut conn = Conn {
            login: None,
            remote_addr: info.remote_addr,
            socket: Some(socket),
        };
        if let (Some(authentication), Some(user)) = (&info.authentication, &info.user) {
            conn.log_in(authentication, user);
        }
        conn
    }

    pub(super) fn log_in(&mut self, authentication: &Value, user: &Value) {
        self.login = Some(Login {
            authentication: pack(authentication),
            user: pack(user),
        });
    }

    pub(super) fn log_out(&mut self) {
        self.login = None;
    }

    /// What [`App::connection`] answers.
    pub(super) fn info(&self) -> ConnectionInfo {
        let call = self.call_info();
        ConnectionInfo {
            authentication: call.authentication.map(SharedValue::into_value),
            user: call.user.map(SharedValue::into_value),
            headers: call.headers,
            remote_addr: call.remote_addr,
        }
    }

    /// What a call on this connection passes on, with the login's values read from their
    /// text when the call first looks at them: a call whose `authenticate` hook replaces the
    /// user never parses the stored one.
    pub(super) fn call_info(&self) -> CallInfo {
        let lazy = |text: &str| SharedValue::from_json_text(text.into());
        CallInfo {
            authentication: self.login.as_ref().map(|l| lazy(&l.authentication)),
            user: self.login.as_ref().map(|l| lazy(&l.user)),
            headers: self
                .socket
                .as_ref()
                .map(|s| s.req_parts().headers.clone())
                .unwrap_or_default(),
            remote_addr: self.remote_addr,
        }
    }
}

/// [`ConnectionInfo`] with the login as shared values, read when first used.
#[derive(Default)]
pub(super) struct CallInfo {
    pub(super) authentication: Option<SharedValue>,
    pub(super) user: Option<SharedValue>,
    pub(super) headers: http::HeaderMap,
    pub(super) remote_addr: Option<SocketAddr>,
}

/// A value as compact JSON text, in an allocation of its own size (read back by
/// [`SharedValue::from_json_text`]).
fn pack(value: &Value) -> Box<str> {
    value.to_string().into_boxed_str()
}

/// The live connections of an App (an App extension).
#[derive(Default)]
pub(super) struct Connections {
    pub(super) map: RwLock<HashMap<ConnectionId, Conn>>,
}

impl Connections {
    pub(super) fn of(app: &App) -> Arc<Connections> {
        app.extension::<Connections>()
            .unwrap_or_else(|| app.extension_or_insert_with(Connections::default))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_values_read_back_the_same() {
        let value = serde_json::json!({
            "strategy": "jwt", "accessToken": "eyJ.x.y", "n": 1.5, "big": u64::MAX,
            "neg": -3, "nested": {"z": [1, null, true, "é\"\\"], "a": {}}
        });
        let text = pack(&value);
        assert_eq!(&*text, value.to_string());
        let unpack = |text: &str| SharedValue::from_json_text(text.into()).into_value();
        assert_eq!(unpack(&text), value);
        // Key order is kept (preserve_order).
        let keys: Vec<_> = unpack(&text)
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        assert_eq!(
            keys,
            ["strategy", "accessToken", "n", "big", "neg", "nested"]
        );
    }
}
