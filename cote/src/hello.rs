//! cote's hello datagram (node-discover's heartbeat): one UTF-8 JSON object per UDP datagram.
//!
//! ```json
//! {"event":"hello","pid":"<process uuid>","iid":"<component uuid>","hostName":"h",
//!  "data":{"isMaster":false,"isMasterEligible":true,"weight":-0.17,"address":"127.0.0.1",
//!          "advertisement":{"type":"service","name":"…","key":"$$todos","axon_type":"rep",
//!                           "port":10001,"namespace":"todos", …},
//!          "id":"<iid>","processId":"<pid>","processCommand":"…"}}
//! ```
//!
//! `iid` names a component (the node id of cote's discovery). Receivers ignore `data.address`
//! and use the datagram's source address.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The largest datagram accepted (the UDP payload limit).
pub const MAX_DATAGRAM: usize = 65_507;
/// The longest `iid`, `pid` or `key` accepted.
const MAX_ID: usize = 256;

/// Why a datagram is not a usable hello.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HelloError {
    /// Longer than [`MAX_DATAGRAM`].
    #[error("datagram of {0} bytes is too long")]
    TooLong(usize),
    /// Not a JSON object of the hello shape.
    #[error("not a hello: {0}")]
    Malformed(String),
    /// A node-discover message other than `hello` (cote sends no other).
    #[error("unknown discovery event {0:?}")]
    UnknownEvent(String),
    /// An id is empty or too long.
    #[error("bad {0}")]
    BadId(&'static str),
}

/// The axon socket type a component advertises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AxonType {
    /// A Requester.
    #[serde(rename = "req")]
    Req,
    /// A Responder.
    #[serde(rename = "rep")]
    Rep,
    /// A Publisher.
    #[serde(rename = "pub-emitter")]
    PubEmitter,
    /// A Subscriber.
    #[serde(rename = "sub-emitter")]
    SubEmitter,
    /// A Sockend.
    #[serde(rename = "sockend")]
    Sockend,
}

impl AxonType {
    /// The type a component of this type connects to (requester → responder, subscriber →
    /// publisher), as cote's `oppo`.
    pub fn opposite(self) -> Option<AxonType> {
        match self {
            AxonType::Req => Some(AxonType::Rep),
            AxonType::Rep => Some(AxonType::Req),
            AxonType::PubEmitter => Some(AxonType::SubEmitter),
            AxonType::SubEmitter => Some(AxonType::PubEmitter),
            AxonType::Sockend => None,
        }
    }
}

/// A component's advertisement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Advertisement {
    /// `"service"` (or `"monitor"`).
    #[serde(rename = "type", default = "service_type")]
    pub kind: String,
    /// The component's name.
    #[serde(default)]
    pub name: String,
    /// `<environment>:` + `$$` + the user key (see [`cote_key`]).
    pub key: String,
    /// The socket type (absent for a Monitor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub axon_type: Option<AxonType>,
    /// The TCP port (servers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Every other field, copied through (`respondsTo`, `appUuid`, …).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn service_type() -> String {
    "service".into()
}

/// cote's advertised key: `env:` (when an environment is set) + `$$` + the user key.
pub fn cote_key(environment: &str, key: &str) -> String {
    if environment.is_empty() {
        format!("$${key}")
    } else {
        format!("{environment}:$${key}")
    }
}

/// The `data` member of a hello.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HelloData {
    /// Master election (unused by cote).
    #[serde(default)]
    pub is_master: bool,
    /// Master election (unused by cote).
    #[serde(default)]
    pub is_master_eligible: bool,
    /// Master election weight (unused by cote).
    #[serde(default)]
    pub weight: f64,
    /// A placeholder (`"127.0.0.1"`): receivers use the source address.
    #[serde(default)]
    pub address: String,
    /// The component's advertisement.
    pub advertisement: Advertisement,
    /// Copies of `iid` / `pid` cote adds, and the rest.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One hello datagram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hello {
    /// Always `"hello"`.
    pub event: String,
    /// The process uuid.
    pub pid: String,
    /// The component (instance) uuid: the node id.
    pub iid: String,
    /// The sender's host name.
    #[serde(default)]
    pub host_name: String,
    /// What the component advertises.
    pub data: HelloData,
}

impl Hello {
    /// A hello for a component.
    pub fn new(pid: &str, iid: &str, host_name: &str, advertisement: Advertisement) -> Self {
        let mut extra = Map::new();
        extra.insert("id".into(), Value::String(iid.into()));
        extra.insert("processId".into(), Value::String(pid.into()));
        extra.insert("processCommand".into(), Value::String("plume".into()));
        Hello {
            event: "hello".into(),
            pid: pid.into(),
            iid: iid.into(),
            host_name: host_name.into(),
            data: HelloData {
                is_master: false,
                is_master_eligible: true,
                weight: 0.0,
                address: "127.0.0.1".into(),
                advertisement,
                extra,
            },
        }
    }

    /// The datagram bytes.
    pub fn encode(&self) -> Vec<u8> {
        // invariant: this type serializes to a JSON object (string keys, finite weight).
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parse a datagram. The cost is bounded by [`MAX_DATAGRAM`].
    pub fn decode(bytes: &[u8]) -> Result<Hello, HelloError> {
        if bytes.len() > MAX_DATAGRAM {
            return Err(HelloError::TooLong(bytes.len()));
        }
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| HelloError::Malformed(e.to_string()))?;
        match value.get("event") {
            Some(Value::String(e)) if e == "hello" => {}
            Some(Value::String(e)) => {
                return Err(HelloError::UnknownEvent(e.chars().take(64).collect()));
            }
            _ => return Err(HelloError::Malformed("no event".into())),
        }
        let hello: Hello =
            serde_json::from_value(value).map_err(|e| HelloError::Malformed(e.to_string()))?;
        for (name, id) in [
            ("iid", &hello.iid),
            ("pid", &hello.pid),
            ("key", &hello.data.advertisement.key),
        ] {
            if (name != "key" && id.is_empty()) || id.len() > MAX_ID {
                return Err(HelloError::BadId(name));
            }
        }
        Ok(hello)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_captured_cote_hello() {
        let raw = br#"{"event":"hello","pid":"6b1c9a4e-0c5e-4a8f-9d55-2a1f0f4d1a11","iid":"0f8e2e4a-6b7d-4b1c-8f0a-3c2d1e0f9a88","hostName":"box","data":{"isMaster":true,"isMasterEligible":true,"weight":-0.17953765,"address":"127.0.0.1","advertisement":{"name":"feathers services responder","namespace":"todos","key":"$$todos","requests":["find","get","create","update","patch","remove","healthcheck"],"appUuid":"a-b","appDistributionKey":"todos","axon_type":"rep","port":10002,"type":"service"},"id":"0f8e2e4a-6b7d-4b1c-8f0a-3c2d1e0f9a88","processId":"6b1c9a4e-0c5e-4a8f-9d55-2a1f0f4d1a11","processCommand":["service/src/index.js"]}}"#;
        let hello = Hello::decode(raw).unwrap();
        let ad = &hello.data.advertisement;
        assert_eq!(ad.axon_type, Some(AxonType::Rep));
        assert_eq!(ad.port, Some(10002));
        assert_eq!(ad.key, cote_key("", "todos"));
        assert_eq!(ad.extra["appDistributionKey"], "todos");
        let again = Hello::decode(&hello.encode()).unwrap();
        assert_eq!(again, hello);
    }

    #[test]
    fn refuses_what_is_not_a_hello() {
        assert!(matches!(
            Hello::decode(b"{nope"),
            Err(HelloError::Malformed(_))
        ));
        assert!(matches!(
            Hello::decode(br#"{"event":"promotion"}"#),
            Err(HelloError::UnknownEvent(_))
        ));
        assert!(matches!(
            Hello::decode(&vec![b' '; MAX_DATAGRAM + 1]),
            Err(HelloError::TooLong(_))
        ));
        let no_iid =
            br#"{"event":"hello","pid":"p","iid":"","data":{"advertisement":{"key":"$$"}}}"#;
        assert_eq!(Hello::decode(no_iid), Err(HelloError::BadId("iid")));
        assert_eq!(cote_key("prod", "conversion"), "prod:$$conversion");
    }
}
