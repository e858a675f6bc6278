//! One source of settings (a config file, the `-dev` defaults, the command line) before merging:
//! every setting optional, so a later source overrides only what it names.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::dns::{DnsConfigLayer, Recursor};
use super::services::FileDefinitions;
use super::{duration, JoinAddress, LogLevel};

/// The settings of one source, in Consul's config-file schema. Its serde field names are the keys
/// cairn implements; `file.rs` derives the list of known keys from them, so adding a field here is
/// all it takes to accept a new key.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub(crate) struct Layer {
    pub node_name: Option<String>,
    pub node_id: Option<String>,
    pub datacenter: Option<String>,
    pub server: Option<bool>,
    pub bootstrap: Option<bool>,
    pub bootstrap_expect: Option<u32>,
    pub data_dir: Option<PathBuf>,
    pub bind_addr: Option<IpAddr>,
    pub advertise_addr: Option<IpAddr>,
    pub client_addr: Option<IpAddr>,
    /// Appended to, not replaced, by later sources (Consul merges lists this way).
    pub retry_join: Vec<JoinAddress>,
    /// Consul's join-once list; cairn retries these like `retry_join`. Appended across sources.
    pub start_join: Vec<JoinAddress>,
    #[serde(deserialize_with = "duration::deserialize_optional")]
    pub retry_interval: Option<Duration>,
    pub retry_max: Option<u32>,
    pub log_level: Option<LogLevel>,
    #[serde(deserialize_with = "object_only")]
    pub ports: PortsLayer,
    pub raft_snapshot_threshold: Option<u64>,
    pub raft_trailing_logs: Option<u64>,
    #[serde(deserialize_with = "object_only")]
    pub performance: PerformanceLayer,
    /// Base64 gossip key; decoded and checked in `validate`.
    pub encrypt: Option<String>,
    pub encrypt_verify_incoming: Option<bool>,
    pub encrypt_verify_outgoing: Option<bool>,
    pub disable_keyring_file: Option<bool>,
    #[serde(deserialize_with = "duration::deserialize_optional")]
    pub reconnect_timeout: Option<Duration>,
    pub leave_on_terminate: Option<bool>,
    pub skip_leave_on_interrupt: Option<bool>,
    #[serde(deserialize_with = "object_only")]
    pub autopilot: AutopilotLayer,
    pub enable_script_checks: Option<bool>,
    pub enable_local_script_checks: Option<bool>,
    /// The DNS interface (`dns.rs`): `domain`, `alt_domain`, `recursors` (appended across
    /// sources) and `dns_config { ... }`.
    pub domain: Option<String>,
    pub alt_domain: Option<String>,
    pub recursors: Vec<Recursor>,
    #[serde(deserialize_with = "object_only")]
    pub dns_config: DnsConfigLayer,
    /// `service`, `services`, `check`, `checks`: typed by `services.rs` from the file's document
    /// (they need key spellings serde's derive cannot express), appended across sources.
    #[serde(skip)]
    pub definitions: FileDefinitions,
    /// Known-but-unimplemented Consul keys this source set, as `"<file>: <key>"`.
    #[serde(skip)]
    pub ignored_keys: Vec<String>,
}

/// `ports { ... }`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub(crate) struct PortsLayer {
    pub http: Option<u16>,
    pub dns: Option<u16>,
    pub server: Option<u16>,
    pub serf_lan: Option<u16>,
    pub serf_wan: Option<u16>,
}

/// `performance { ... }`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub(crate) struct PerformanceLayer {
    pub raft_multiplier: Option<u32>,
}

/// `autopilot { ... }`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub(crate) struct AutopilotLayer {
    pub cleanup_dead_servers: Option<bool>,
    #[serde(deserialize_with = "duration::deserialize_optional")]
    pub last_contact_threshold: Option<Duration>,
    pub max_trailing_logs: Option<u64>,
    pub min_quorum: Option<u32>,
    #[serde(deserialize_with = "duration::deserialize_optional")]
    pub server_stabilization_time: Option<Duration>,
    #[serde(deserialize_with = "duration::deserialize_optional")]
    pub dead_server_cleanup_after: Option<Duration>,
}

impl Layer {
    /// Applies `later` on top of `self`: what `later` sets wins, lists are appended.
    pub fn merge(&mut self, later: Layer) {
        set(&mut self.node_name, later.node_name);
        set(&mut self.node_id, later.node_id);
        set(&mut self.datacenter, later.datacenter);
        set(&mut self.server, later.server);
        set(&mut self.bootstrap, later.bootstrap);
        set(&mut self.bootstrap_expect, later.bootstrap_expect);
        set(&mut self.data_dir, later.data_dir);
        set(&mut self.bind_addr, later.bind_addr);
        set(&mut self.advertise_addr, later.advertise_addr);
        set(&mut self.client_addr, later.client_addr);
        self.retry_join.extend(later.retry_join);
        self.start_join.extend(later.start_join);
        set(&mut self.retry_interval, later.retry_interval);
        set(&mut self.retry_max, later.retry_max);
        set(&mut self.log_level, later.log_level);
        self.ports.merge(later.ports);
        set(&mut self.raft_snapshot_threshold, later.raft_snapshot_threshold);
        set(&mut self.raft_trailing_logs, later.raft_trailing_logs);
        set(&mut self.performance.raft_multiplier, later.performance.raft_multiplier);
        set(&mut self.encrypt, later.encrypt);
        set(&mut self.encrypt_verify_incoming, later.encrypt_verify_incoming);
        set(&mut self.encrypt_verify_outgoing, later.encrypt_verify_outgoing);
        set(&mut self.disable_keyring_file, later.disable_keyring_file);
        set(&mut self.reconnect_timeout, later.reconnect_timeout);
        set(&mut self.leave_on_terminate, later.leave_on_terminate);
        set(&mut self.skip_leave_on_interrupt, later.skip_leave_on_interrupt);
        self.autopilot.merge(later.autopilot);
        set(&mut self.enable_script_checks, later.enable_script_checks);
        set(&mut self.enable_local_script_checks, later.enable_local_script_checks);
        set(&mut self.domain, later.domain);
        set(&mut self.alt_domain, later.alt_domain);
        self.recursors.extend(later.recursors);
        self.dns_config.merge(later.dns_config);
        self.definitions.services.extend(later.definitions.services);
        self.definitions.checks.extend(later.definitions.checks);
        self.definitions.warnings.extend(later.definitions.warnings);
        self.ignored_keys.extend(later.ignored_keys);
    }
}

impl AutopilotLayer {
    fn merge(&mut self, later: AutopilotLayer) {
        set(&mut self.cleanup_dead_servers, later.cleanup_dead_servers);
        set(&mut self.last_contact_threshold, later.last_contact_threshold);
        set(&mut self.max_trailing_logs, later.max_trailing_logs);
        set(&mut self.min_quorum, later.min_quorum);
        set(&mut self.server_stabilization_time, later.server_stabilization_time);
        set(&mut self.dead_server_cleanup_after, later.dead_server_cleanup_after);
    }
}

impl PortsLayer {
    fn merge(&mut self, later: PortsLayer) {
        set(&mut self.http, later.http);
        set(&mut self.dns, later.dns);
        set(&mut self.server, later.server);
        set(&mut self.serf_lan, later.serf_lan);
        set(&mut self.serf_wan, later.serf_wan);
    }
}

fn set<T>(slot: &mut Option<T>, later: Option<T>) {
    if later.is_some() {
        *slot = later;
    }
}

/// Deserializes a struct from a JSON object only. serde_json also fills a struct from an array,
/// by position, which would make `"ports": [8500]` silently set the HTTP port; going through
/// `deserialize_map` refuses that with a type error that has a line and column.
pub(crate) fn object_only<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct ObjectVisitor<T>(std::marker::PhantomData<T>);

    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for ObjectVisitor<T> {
        type Value = T;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
        }
    }

    deserializer.deserialize_map(ObjectVisitor(std::marker::PhantomData))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A later layer overrides only the settings it names and appends to the lists.
    #[test]
    fn merge_overrides_scalars_and_appends_lists() {
        let mut base = Layer {
            node_name: Some("a".into()),
            datacenter: Some("dc1".into()),
            retry_join: vec!["10.0.0.1".parse().unwrap()],
            ports: PortsLayer { http: Some(1), dns: Some(2), ..PortsLayer::default() },
            ..Layer::default()
        };
        base.merge(Layer {
            node_name: Some("b".into()),
            retry_join: vec!["10.0.0.2".parse().unwrap()],
            ports: PortsLayer { dns: Some(3), ..PortsLayer::default() },
            ..Layer::default()
        });
        assert_eq!(base.node_name.as_deref(), Some("b"));
        assert_eq!(base.datacenter.as_deref(), Some("dc1"));
        assert_eq!(base.retry_join, vec!["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()]);
        assert_eq!(base.ports, PortsLayer { http: Some(1), dns: Some(3), ..PortsLayer::default() });
    }
}
