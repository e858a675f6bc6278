//! From the merged sources to an [`AgentConfig`]: defaults, then every rule, checked once.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use super::dns::{DnsLayer, DnsSettings};
use super::layer::Layer;
use super::services::{self, ScriptChecks};
use super::{AgentConfig, AutopilotSettings, ConfigError, GossipSettings, LocalServices, Ports, RaftSettings};
use crate::gossip::GossipKey;

/// Consul's default and minimum `reconnect_timeout`.
pub const DEFAULT_RECONNECT_TIMEOUT: Duration = crate::gossip::DEFAULT_RECONNECT_TIMEOUT;
pub const MIN_RECONNECT_TIMEOUT: Duration = Duration::from_secs(8 * 3600);

/// Consul's default datacenter name.
pub const DEFAULT_DATACENTER: &str = "dc1";
/// Consul's default time between join attempts.
pub const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_secs(30);
/// In `-dev` there is nobody to wait for; a short interval keeps a stray `-retry-join` responsive.
pub const DEV_RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// `performance.raft_multiplier` scales Raft timings from 1 (fastest) to this (Consul's limit).
pub const RAFT_MULTIPLIER_MAX: u32 = 10;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// What `-dev` implies, below every file and flag so each can still be overridden: a lone server
/// that bootstraps itself, reachable only from this host.
pub(crate) fn dev_defaults() -> Layer {
    Layer {
        server: Some(true),
        bootstrap: Some(true),
        bind_addr: Some(LOCALHOST),
        client_addr: Some(LOCALHOST),
        retry_interval: Some(DEV_RETRY_INTERVAL),
        ..Layer::default()
    }
}

/// Fills defaults into the merged sources and checks every rule. `bootstrap` is then normalised
/// to `bootstrap_expect = Some(1)`, so later code looks at one field.
pub(crate) fn build(merged: Layer, dev: bool, hostname: &str) -> Result<AgentConfig, ConfigError> {
    let raft = raft_settings(&merged)?;
    let gossip = gossip_settings(&merged)?;
    let autopilot = autopilot_settings(&merged)?;
    let dns = DnsSettings::from_layer(&DnsLayer {
        domain: merged.domain.clone(),
        alt_domain: merged.alt_domain.clone(),
        recursors: merged.recursors.clone(),
        dns_config: merged.dns_config.clone(),
    })?;
    let mut config = resolve(merged, dev, hostname, raft, gossip, autopilot);
    config.dns = dns;
    validate_identity(&config)?;
    validate_roles(&config)?;
    validate_ports(&config.ports)?;
    if config.retry_interval.is_zero() {
        return Err(ConfigError::invalid("retry_interval", "must be longer than zero, such as 30s"));
    }
    config.raft.validate()?;
    services::validate_all(&config.local)?;
    if config.bootstrap {
        config.bootstrap_expect = Some(1);
    }
    Ok(config)
}

fn resolve(
    merged: Layer,
    dev: bool,
    hostname: &str,
    raft: RaftSettings,
    gossip: GossipSettings,
    autopilot: AutopilotSettings,
) -> AgentConfig {
    let defaults = Ports::default();
    let script_checks = script_checks(&merged);
    let mut retry_join = merged.retry_join;
    retry_join.extend(merged.start_join);
    AgentConfig {
        node_name: merged.node_name.unwrap_or_else(|| hostname.to_owned()),
        // Consul lowercases both, so `DC1` and `dc1` are one datacenter and IDs compare as text.
        node_id: merged.node_id.map(|id| id.to_ascii_lowercase()),
        datacenter: merged.datacenter.map_or_else(|| DEFAULT_DATACENTER.to_owned(), |dc| dc.to_ascii_lowercase()),
        server: merged.server.unwrap_or(false),
        dev,
        bootstrap_expect: merged.bootstrap_expect,
        bootstrap: merged.bootstrap.unwrap_or(false),
        data_dir: merged.data_dir,
        bind_addr: merged.bind_addr.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        advertise_addr: merged.advertise_addr,
        client_addr: merged.client_addr.unwrap_or(LOCALHOST),
        retry_join,
        retry_interval: merged.retry_interval.unwrap_or(DEFAULT_RETRY_INTERVAL),
        retry_max: merged.retry_max.unwrap_or(0),
        ports: Ports {
            http: merged.ports.http.unwrap_or(defaults.http),
            dns: merged.ports.dns.unwrap_or(defaults.dns),
            server: merged.ports.server.unwrap_or(defaults.server),
            serf_lan: merged.ports.serf_lan.unwrap_or(defaults.serf_lan),
            serf_wan: merged.ports.serf_wan.unwrap_or(defaults.serf_wan),
        },
        log_level: merged.log_level.unwrap_or_default(),
        raft,
        gossip,
        autopilot,
        local: LocalServices {
            script_checks,
            services: merged.definitions.services,
            checks: merged.definitions.checks,
            warnings: merged.definitions.warnings,
        },
        dns: DnsSettings::default(),
        ignored_keys: merged.ignored_keys,
    }
}

fn script_checks(merged: &Layer) -> ScriptChecks {
    match (merged.enable_script_checks, merged.enable_local_script_checks) {
        (Some(true), _) => ScriptChecks::All,
        (_, Some(true)) => ScriptChecks::LocalOnly,
        _ => ScriptChecks::Disabled,
    }
}

/// The gossip key decoded and checked, and the leave defaults by role.
fn gossip_settings(merged: &Layer) -> Result<GossipSettings, ConfigError> {
    let encrypt_key = match &merged.encrypt {
        None => None,
        Some(text) => Some(
            GossipKey::from_base64(text.trim())
                .map_err(|why| ConfigError::invalid("encrypt", format!("{why}; `cairn keygen` makes a valid key")))?,
        ),
    };
    let reconnect_timeout = merged.reconnect_timeout.unwrap_or(DEFAULT_RECONNECT_TIMEOUT);
    if reconnect_timeout < MIN_RECONNECT_TIMEOUT {
        return Err(ConfigError::invalid("reconnect_timeout", "must be at least 8h (Consul's minimum)"));
    }
    let base = GossipSettings::defaults_for(merged.server.unwrap_or(false));
    Ok(GossipSettings {
        encrypt_key,
        verify_incoming: merged.encrypt_verify_incoming.unwrap_or(base.verify_incoming),
        verify_outgoing: merged.encrypt_verify_outgoing.unwrap_or(base.verify_outgoing),
        disable_keyring_file: merged.disable_keyring_file.unwrap_or(base.disable_keyring_file),
        reconnect_timeout,
        leave_on_terminate: merged.leave_on_terminate.unwrap_or(base.leave_on_terminate),
        skip_leave_on_interrupt: merged.skip_leave_on_interrupt.unwrap_or(base.skip_leave_on_interrupt),
    })
}

fn autopilot_settings(merged: &Layer) -> Result<AutopilotSettings, ConfigError> {
    let base = AutopilotSettings::default();
    let a = &merged.autopilot;
    let settings = AutopilotSettings {
        cleanup_dead_servers: a.cleanup_dead_servers.unwrap_or(base.cleanup_dead_servers),
        last_contact_threshold: a.last_contact_threshold.unwrap_or(base.last_contact_threshold),
        max_trailing_logs: a.max_trailing_logs.unwrap_or(base.max_trailing_logs),
        min_quorum: a.min_quorum.unwrap_or(base.min_quorum),
        server_stabilization_time: a.server_stabilization_time.unwrap_or(base.server_stabilization_time),
        dead_server_cleanup_after: a.dead_server_cleanup_after.unwrap_or(base.dead_server_cleanup_after),
    };
    if settings.last_contact_threshold.is_zero() {
        return Err(ConfigError::invalid("autopilot.last_contact_threshold", "must be longer than zero"));
    }
    Ok(settings)
}

/// The base timings scaled by `performance.raft_multiplier`, and the log retention settings.
fn raft_settings(merged: &Layer) -> Result<RaftSettings, ConfigError> {
    let multiplier = merged.performance.raft_multiplier.unwrap_or(1);
    if !(1..=RAFT_MULTIPLIER_MAX).contains(&multiplier) {
        let message = format!("must be from 1 to {RAFT_MULTIPLIER_MAX}, not {multiplier}");
        return Err(ConfigError::invalid("performance.raft_multiplier", message));
    }
    let base = RaftSettings::default();
    Ok(RaftSettings {
        heartbeat_interval: base.heartbeat_interval * multiplier,
        election_timeout_min: base.election_timeout_min * multiplier,
        election_timeout_max: base.election_timeout_max * multiplier,
        snapshot_threshold: merged.raft_snapshot_threshold.unwrap_or(base.snapshot_threshold),
        trailing_logs: merged.raft_trailing_logs.unwrap_or(base.trailing_logs),
    })
}

impl RaftSettings {
    /// Checks the relations Raft needs: a follower must hear several heartbeats before it gives up
    /// on the leader, and the election window must be a range so that candidates spread out.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.election_timeout_min <= self.heartbeat_interval {
            return Err(ConfigError::invalid(
                "raft.election_timeout_min",
                "must be longer than the heartbeat interval",
            ));
        }
        if self.election_timeout_max <= self.election_timeout_min {
            return Err(ConfigError::invalid("raft.election_timeout_max", "must be longer than election_timeout_min"));
        }
        if self.snapshot_threshold == 0 {
            return Err(ConfigError::invalid("raft_snapshot_threshold", "must be at least 1"));
        }
        Ok(())
    }
}

fn validate_identity(config: &AgentConfig) -> Result<(), ConfigError> {
    let name = &config.node_name;
    if name.is_empty() {
        return Err(ConfigError::invalid("node_name", "must not be empty: pass -node or set node_name"));
    }
    // The name appears in URLs (`/v1/catalog/node/<name>`) and DNS names; a slash or a space
    // would make it unreachable there.
    if name.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(ConfigError::invalid("node_name", format!("{name:?} must not contain spaces or '/'")));
    }
    if let Some(id) = &config.node_id {
        if !is_uuid(id) {
            return Err(ConfigError::invalid("node_id", format!("{id:?} is not a UUID (8-4-4-4-12 hex digits)")));
        }
    }
    let dc = &config.datacenter;
    if dc.is_empty() || !dc.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_') {
        return Err(ConfigError::invalid("datacenter", format!("{dc:?} may hold only letters, digits, '-' and '_'")));
    }
    Ok(())
}

fn is_uuid(id: &str) -> bool {
    let groups: Vec<&str> = id.split('-').collect();
    let lengths: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    lengths == [8, 4, 4, 4, 12] && groups.iter().all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
}

fn validate_roles(config: &AgentConfig) -> Result<(), ConfigError> {
    match &config.data_dir {
        None if !config.dev => {
            return Err(ConfigError::invalid("data_dir", "required: pass -data-dir or set data_dir (or use -dev)"));
        }
        Some(dir) if dir.as_os_str().is_empty() => {
            return Err(ConfigError::invalid("data_dir", "must not be empty"));
        }
        _ => {}
    }
    const SERVERS_ONLY: &str = "only servers bootstrap the cluster: add -server or set server to true";
    if config.bootstrap && !config.server {
        return Err(ConfigError::invalid("bootstrap", SERVERS_ONLY));
    }
    let Some(expect) = config.bootstrap_expect else { return Ok(()) };
    if !config.server {
        return Err(ConfigError::invalid("bootstrap_expect", SERVERS_ONLY));
    }
    if expect == 0 {
        return Err(ConfigError::invalid(
            "bootstrap_expect",
            "must be at least 1 (unset it to join a running cluster)",
        ));
    }
    if config.bootstrap {
        let message = if config.dev {
            "cannot be combined with -dev, which bootstraps a single server"
        } else {
            "cannot be combined with bootstrap, which means bootstrap_expect = 1"
        };
        return Err(ConfigError::invalid("bootstrap_expect", message));
    }
    Ok(())
}

fn validate_ports(ports: &Ports) -> Result<(), ConfigError> {
    let named = [
        ("ports.http", ports.http),
        ("ports.dns", ports.dns),
        ("ports.server", ports.server),
        ("ports.serf_lan", ports.serf_lan),
        ("ports.serf_wan", ports.serf_wan),
    ];
    for (i, &(field, port)) in named.iter().enumerate() {
        if port == 0 {
            return Err(ConfigError::invalid(field, "must be a port from 1 to 65535"));
        }
        if let Some((other, _)) = named[..i].iter().find(|(_, earlier)| *earlier == port) {
            return Err(ConfigError::invalid(field, format!("{port} is already {other}; each listener needs its own")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::config::{load_agent_config, LogLevel};

    fn load(args: &[&str]) -> Result<AgentConfig, ConfigError> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        load_agent_config(&args, "host-1")
    }

    /// Asserts that `result` is `Invalid` about `field`.
    #[track_caller]
    fn assert_invalid<T: std::fmt::Debug>(result: Result<T, ConfigError>, expected_field: &str) {
        match result {
            Err(ConfigError::Invalid { field, .. }) if field == expected_field => {}
            other => panic!("expected Invalid {{ field: {expected_field:?} }}, got {other:?}"),
        }
    }

    /// With only a data directory, every setting has Consul's default.
    #[test]
    fn defaults_match_consul() {
        let config = load(&["-data-dir=/var/lib/cairn"]).unwrap();
        assert_eq!(config.node_name, "host-1");
        assert_eq!(config.node_id, None);
        assert_eq!(config.datacenter, "dc1");
        assert!(!config.server && !config.dev && !config.bootstrap);
        assert_eq!(config.bootstrap_expect, None);
        assert_eq!(config.data_dir, Some(PathBuf::from("/var/lib/cairn")));
        assert_eq!(config.bind_addr, "0.0.0.0".parse::<IpAddr>().unwrap());
        assert_eq!(config.advertise_addr, None);
        assert_eq!(config.client_addr, LOCALHOST);
        assert!(config.retry_join.is_empty());
        assert_eq!(config.retry_interval, Duration::from_secs(30));
        assert_eq!(config.retry_max, 0);
        assert_eq!(config.ports, Ports::default());
        assert_eq!(config.log_level, LogLevel::Info);
        assert_eq!(config.raft, RaftSettings::default());
        assert!(config.ignored_keys.is_empty());
    }

    /// `-dev` makes a lone bootstrapping server on 127.0.0.1 with no data directory.
    #[test]
    fn dev_implies_a_lone_local_server() {
        let config = load(&["-dev"]).unwrap();
        assert!(config.dev && config.server && config.bootstrap);
        assert_eq!(config.bootstrap_expect, Some(1));
        assert_eq!(config.data_dir, None);
        assert_eq!((config.bind_addr, config.client_addr), (LOCALHOST, LOCALHOST));
        assert_eq!(config.retry_interval, Duration::from_secs(1));
        assert_eq!(config.node_name, "host-1");
    }

    /// Flags still override what `-dev` implies.
    #[test]
    fn dev_defaults_yield_to_flags() {
        let config = load(&["-dev", "-client", "0.0.0.0", "-bind=10.0.0.5", "-retry-interval=5s"]).unwrap();
        assert_eq!(config.client_addr, "0.0.0.0".parse::<IpAddr>().unwrap());
        assert_eq!(config.bind_addr, "10.0.0.5".parse::<IpAddr>().unwrap());
        assert_eq!(config.retry_interval, Duration::from_secs(5));
    }

    /// Outside `-dev` a data directory is required.
    #[test]
    fn data_dir_required_unless_dev() {
        assert_invalid(load(&["-server"]), "data_dir");
        assert_invalid(load(&["-data-dir="]), "data_dir");
    }

    /// Only servers may bootstrap, by either setting.
    #[test]
    fn bootstrap_settings_need_server() {
        assert_invalid(load(&["-data-dir=/d", "-bootstrap-expect=3"]), "bootstrap_expect");
        assert_invalid(load(&["-data-dir=/d", "-bootstrap"]), "bootstrap");
    }

    /// `bootstrap` and `bootstrap_expect` together are refused, also when `-dev` supplies the first.
    #[test]
    fn bootstrap_and_expect_conflict() {
        assert_invalid(load(&["-data-dir=/d", "-server", "-bootstrap", "-bootstrap-expect=3"]), "bootstrap_expect");
        assert_invalid(load(&["-dev", "-bootstrap-expect=3"]), "bootstrap_expect");
    }

    /// Expecting zero servers is refused.
    #[test]
    fn bootstrap_expect_zero_is_invalid() {
        assert_invalid(load(&["-data-dir=/d", "-server", "-bootstrap-expect=0"]), "bootstrap_expect");
    }

    /// `bootstrap` is normalised to `bootstrap_expect = 1`; `bootstrap_expect` is kept as given.
    #[test]
    fn bootstrap_normalises_to_expect_one() {
        let alone = load(&["-data-dir=/d", "-server", "-bootstrap"]).unwrap();
        assert!(alone.bootstrap);
        assert_eq!(alone.bootstrap_expect, Some(1));
        let three = load(&["-data-dir=/d", "-server", "-bootstrap-expect=3"]).unwrap();
        assert!(!three.bootstrap);
        assert_eq!(three.bootstrap_expect, Some(3));
    }

    /// A server with neither bootstrap setting joins an existing cluster, and that is allowed.
    #[test]
    fn server_without_bootstrap_is_allowed() {
        let config = load(&["-data-dir=/d", "-server", "-retry-join=10.0.0.2"]).unwrap();
        assert!(config.server);
        assert_eq!(config.bootstrap_expect, None);
    }

    /// Two listeners on one port are refused, naming the later one.
    #[test]
    fn ports_must_be_distinct() {
        assert_invalid(load(&["-data-dir=/d", "-dns-port=8500"]), "ports.dns");
        assert_invalid(load(&["-data-dir=/d", "-serf-wan-port=8301"]), "ports.serf_wan");
    }

    /// Port zero is refused.
    #[test]
    fn ports_must_be_nonzero() {
        assert_invalid(load(&["-data-dir=/d", "-http-port=0"]), "ports.http");
    }

    /// Node names must be non-empty and free of whitespace and slashes.
    #[test]
    fn node_name_rules() {
        assert_invalid(load(&["-data-dir=/d", "-node="]), "node_name");
        assert_invalid(load(&["-data-dir=/d", "-node=web 1"]), "node_name");
        assert_invalid(load(&["-data-dir=/d", "-node=web/1"]), "node_name");
        let args: Vec<String> = vec!["-data-dir=/d".into()];
        assert!(
            matches!(load_agent_config(&args, ""), Err(ConfigError::Invalid { field, .. }) if field == "node_name"),
            "an empty host name with no -node is refused"
        );
        assert_eq!(load(&["-data-dir=/d", "-node=web-1.example"]).unwrap().node_name, "web-1.example");
    }

    /// A node ID must be a UUID; it is lowercased, as Consul does.
    #[test]
    fn node_id_must_be_a_uuid() {
        assert_invalid(load(&["-data-dir=/d", "-node-id=not-a-uuid"]), "node_id");
        assert_invalid(load(&["-data-dir=/d", "-node-id=adb5fe3e-8a36-4f4e-8e4e-0b5c1a2b3c4"]), "node_id");
        assert_invalid(load(&["-data-dir=/d", "-node-id=gdb5fe3e-8a36-4f4e-8e4e-0b5c1a2b3c4d"]), "node_id");
        let config = load(&["-data-dir=/d", "-node-id=ADB5FE3E-8A36-4F4E-8E4E-0B5C1A2B3C4D"]).unwrap();
        assert_eq!(config.node_id.as_deref(), Some("adb5fe3e-8a36-4f4e-8e4e-0b5c1a2b3c4d"));
    }

    /// Datacenter names are lowercased, then must be letters, digits, '-' and '_'.
    #[test]
    fn datacenter_rules() {
        assert_invalid(load(&["-data-dir=/d", "-datacenter=us east"]), "datacenter");
        assert_invalid(load(&["-data-dir=/d", "-datacenter=us.east"]), "datacenter");
        assert_invalid(load(&["-data-dir=/d", "-datacenter="]), "datacenter");
        assert_eq!(load(&["-data-dir=/d", "-datacenter=US_East-1"]).unwrap().datacenter, "us_east-1");
    }

    /// A zero retry interval would spin; it is refused.
    #[test]
    fn retry_interval_must_be_positive() {
        assert_invalid(load(&["-data-dir=/d", "-retry-interval=0s"]), "retry_interval");
    }

    /// The Raft multiplier scales all three timings and must be from 1 to 10.
    #[test]
    fn raft_multiplier_scales_timings() {
        let mut merged = Layer { data_dir: Some("/d".into()), ..Layer::default() };
        merged.performance.raft_multiplier = Some(5);
        let config = build(merged.clone(), false, "h").unwrap();
        let base = RaftSettings::default();
        assert_eq!(config.raft.heartbeat_interval, base.heartbeat_interval * 5);
        assert_eq!(config.raft.election_timeout_min, base.election_timeout_min * 5);
        assert_eq!(config.raft.election_timeout_max, base.election_timeout_max * 5);
        for bad in [0, 11] {
            merged.performance.raft_multiplier = Some(bad);
            assert_invalid(build(merged.clone(), false, "h"), "performance.raft_multiplier");
        }
    }

    /// A snapshot threshold of zero is refused; trailing logs may be anything.
    #[test]
    fn snapshot_threshold_at_least_one() {
        let mut merged = Layer { data_dir: Some("/d".into()), raft_trailing_logs: Some(0), ..Layer::default() };
        assert_eq!(build(merged.clone(), false, "h").unwrap().raft.trailing_logs, 0);
        merged.raft_snapshot_threshold = Some(0);
        assert_invalid(build(merged, false, "h"), "raft_snapshot_threshold");
    }

    /// Raft timings that would let followers time out between heartbeats are refused.
    #[test]
    fn raft_timing_relations() {
        let base = RaftSettings::default();
        assert!(base.validate().is_ok());
        let slow_heartbeat = RaftSettings { heartbeat_interval: base.election_timeout_min, ..base.clone() };
        assert_invalid(slow_heartbeat.validate(), "raft.election_timeout_min");
        let empty_window = RaftSettings { election_timeout_max: base.election_timeout_min, ..base };
        assert_invalid(empty_window.validate(), "raft.election_timeout_max");
    }

    /// `start_join` entries are retried like `retry_join` ones and come after them.
    #[test]
    fn join_and_retry_join_are_one_list() {
        let config =
            load(&["-data-dir=/d", "-join=10.0.0.9", "-retry-join", "10.0.0.2:9000", "-retry-join=[::1]"]).unwrap();
        let hosts: Vec<String> = config.retry_join.iter().map(|j| j.to_string()).collect();
        assert_eq!(hosts, ["10.0.0.2:9000", "[::1]:8301", "10.0.0.9:8301"]);
    }
}
