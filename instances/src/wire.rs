//! What members say to each other: votes for the leader lease, and each node's poll of the
//! leader (what it holds; the answer: what it may run, with fencing tokens, and for how long).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::vote::Ballot;

/// A request from one member to another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Message {
    /// Vote for the sender in `term` (or renew that vote).
    Vote {
        /// The term.
        term: u64,
    },
    /// The sender did not win `term`: its vote is free again.
    Release {
        /// The term.
        term: u64,
    },
    /// The sender's poll of the leader: the configurations whose instances it runs now.
    Poll {
        /// Grows with every poll of the sender.
        seq: u64,
        /// The ids it holds (running, not yet stopped).
        held: Vec<String>,
        /// The ids it ran until its lease lapsed (a new leader keeps them here when it can).
        #[serde(default)]
        had: Vec<String>,
        /// The ids it gave up after repeated `create_instance` failures (the leader grants
        /// them elsewhere while they are listed).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        refused: Vec<String>,
    },
}

/// The answer to a [`Message`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Answer {
    /// The answer to a vote.
    Ballot(Ballot),
    /// The answer to a release.
    Released,
    /// The leader's answer to a poll.
    Grants(Grants),
    /// The node asked is not the leader (now).
    NotLeader,
}

/// What a node may run, from the leader.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grants {
    /// The leader's term.
    pub term: u64,
    /// How long the grants hold, counted from when the poll left the node.
    pub valid_for_ms: u64,
    /// The configurations this node may run now.
    pub grants: Vec<Grant>,
    /// The set's members as the leader counts them (node ids, hex).
    pub members: Vec<String>,
}

/// One configuration granted to a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grant {
    /// The configuration.
    pub config: InstanceConfig,
    /// Its fencing token: larger than every token granted for any configuration before.
    pub fencing: u64,
}

/// One configuration of an instance set: a stable id and whatever the instance needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceConfig {
    /// The stable identity: one instance per id in the whole set.
    pub id: String,
    /// The configuration itself (a URL, a queue name…).
    #[serde(default)]
    pub data: Value,
}

impl InstanceConfig {
    /// A configuration with this id and data.
    pub fn new(id: impl Into<String>, data: Value) -> InstanceConfig {
        InstanceConfig {
            id: id.into(),
            data,
        }
    }
}
