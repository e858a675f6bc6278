//! Typed commands: every change to the replicated state is one of these, applied with its Raft index.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// One replicated change. Applied by [`crate::state::State::apply`] with the index of its log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Kv(KvCommand),
    Catalog(CatalogCommand),
}

/// KV store changes, with Consul's semantics (`PUT`/`DELETE /v1/kv/<key>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvCommand {
    /// Create or replace `key`. An existing entry keeps its `CreateIndex`, `LockIndex` and `Session`.
    Set { key: String, value: Bytes, flags: u64 },
    /// Like `Set`, only if the entry's `ModifyIndex` equals `expected_modify_index`; 0 means
    /// "only if the key does not exist". Outcome `CasFailed` when it does not match.
    Cas { key: String, value: Bytes, flags: u64, expected_modify_index: u64 },
    /// Remove `key` if present (removing an absent key succeeds and changes nothing).
    Delete { key: String },
    /// Remove `key` only if its `ModifyIndex` equals `expected_modify_index`; an absent key
    /// succeeds. Outcome `CasFailed` when it does not match.
    DeleteCas { key: String, expected_modify_index: u64 },
    /// Remove every key that starts with `prefix`.
    DeleteTree { prefix: String },
}

/// Catalog changes (`PUT /v1/catalog/register|deregister`, and what agents sync).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CatalogCommand {
    Register(Registration),
    Deregister(Deregistration),
}

/// Consul's `RegisterRequest`: a node, optionally one service on it, and checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Registration {
    /// Node name (required).
    pub node: String,
    /// Node ID (a UUID), empty if the registrant did not give one.
    pub node_id: String,
    pub address: String,
    pub tagged_addresses: BTreeMap<String, String>,
    pub node_meta: BTreeMap<String, String>,
    pub service: Option<ServiceDefinition>,
    pub checks: Vec<CheckDefinition>,
    /// Leave the node's address and meta as they are (only services/checks change).
    pub skip_node_update: bool,
}

/// A service instance on a node. `id` defaults to `service` when empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ServiceDefinition {
    pub id: String,
    pub service: String,
    pub tags: Vec<String>,
    pub address: String,
    pub port: u16,
    pub meta: BTreeMap<String, String>,
    pub enable_tag_override: bool,
    pub weights: Weights,
}

/// DNS SRV weights by health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Weights {
    pub passing: u32,
    pub warning: u32,
}

impl Default for Weights {
    fn default() -> Self {
        Weights { passing: 1, warning: 1 }
    }
}

/// A health check's replicated state. `service_id` empty means a node-level check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CheckDefinition {
    pub check_id: String,
    pub name: String,
    pub status: CheckStatus,
    pub notes: String,
    pub output: String,
    pub service_id: String,
    /// Check type as Consul reports it: "script", "http", "tcp", "ttl", "alias", "serf" or "".
    pub kind: String,
    /// The check's interval and timeout as given, for display (`Definition` in Consul's JSON).
    pub interval: String,
    pub timeout: String,
}

/// Health of a check. Order matters: a worse status compares greater.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub enum CheckStatus {
    Passing,
    Warning,
    #[default]
    Critical,
    /// Consul's "maintenance" status is critical for routing purposes.
    Maintenance,
}

impl CheckStatus {
    /// The lower-case word Consul uses in JSON and URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Passing => "passing",
            CheckStatus::Warning => "warning",
            CheckStatus::Critical => "critical",
            CheckStatus::Maintenance => "maintenance",
        }
    }
}

/// Consul's `DeregisterRequest`: the whole node, or one service (and its checks), or one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Deregistration {
    pub node: String,
    pub service_id: Option<String>,
    pub check_id: Option<String>,
}

/// What applying a command did. Deterministic: every replica computes the same outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Outcome {
    /// The command took effect (or was a no-op that succeeds, such as deleting an absent key).
    #[default]
    Done,
    /// A check-and-set did not match; nothing changed.
    CasFailed,
    /// The command is invalid against the current state; nothing changed. The text says why, in
    /// words fit for an API error body.
    Rejected(String),
}
