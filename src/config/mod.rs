//! The agent's configuration: typed, validated once.
//!
//! Sources, later ones winning: built-in defaults, then `-dev` defaults, then config files (each
//! `-config-file`, then each `-config-dir`'s `*.json` and `*.hcl` files in lexical order), then
//! command-line flags. Scalars are replaced by later sources; lists (`retry_join`, `start_join`,
//! services and checks) are appended, as Consul merges them. [`AgentConfig`] is the only thing the
//! rest of the agent reads; it never parses a string.
//!
//! - `flags`: the `cairn agent` flag table, its parser and the usage text.
//! - `file`: finding, reading and parsing JSON and HCL config files (HCL through its JSON form, so
//!   both get the same keys and rules); the known-but-ignored Consul keys.
//! - `services`: service and check definitions (`service`, `checks`, ...): Consul's schema and
//!   key spellings, one `CheckKind` per check, Consul's default IDs, limits, and the rules across
//!   files (unique IDs, script checks enabled).
//! - `dns`: the DNS interface's settings (`domain`, `recursors`, `dns_config`), Consul's keys.
//! - `layer`: one source's settings, all optional, and how sources merge.
//! - `validate`: defaults and every rule, applied once to the merged result.
//! - `duration`, `values`: parsers for Go durations, join addresses, log levels, booleans.

mod dns;
mod duration;
mod error;
mod file;
mod flags;
mod layer;
mod services;
mod validate;
mod values;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use dns::{DnsSettings, Recursor, ServiceTtls, SoaSettings, DEFAULT_DNS_DOMAIN, IGNORED_DNS_CONFIG_KEYS};
pub use duration::{format_duration, parse_duration};
pub use error::ConfigError;
pub use file::{
    CONFIG_FILE_BYTES_MAX, IGNORED_AUTOPILOT_KEYS, IGNORED_PERFORMANCE_KEYS, IGNORED_PORTS_KEYS, IGNORED_TOP_LEVEL_KEYS,
};
pub use services::{
    check_from_api, service_from_api, CheckDefinition, CheckKind, CheckStatus, ConfigWarning, DefinitionProblem,
    Origin, ScriptChecks, ScriptCommand, ServiceDefinition, Weights, API_BODY, CHECKS_MAX, CHECK_INTERVAL_MIN,
    SERVICES_MAX,
};
pub use validate::{
    DEFAULT_DATACENTER, DEFAULT_RECONNECT_TIMEOUT, DEFAULT_RETRY_INTERVAL, DEV_RETRY_INTERVAL, MIN_RECONNECT_TIMEOUT,
    RAFT_MULTIPLIER_MAX,
};
pub use values::DEFAULT_JOIN_PORT;

use layer::Layer;

/// Parses `cairn agent` arguments (everything after the word `agent`) and the config files they
/// name, merges them and validates the result. `hostname` is the default node name, passed in so
/// tests are deterministic. `-h` returns [`ConfigError::Help`] with the usage text.
pub fn load_agent_config(args: &[String], hostname: &str) -> Result<AgentConfig, ConfigError> {
    let invocation = flags::parse_args(args)?;
    let mut merged = if invocation.dev { validate::dev_defaults() } else { Layer::default() };
    let mut files = Vec::new();
    for path in &invocation.config_files {
        files.extend(file::expand(path)?);
    }
    for dir in &invocation.config_dirs {
        files.extend(file::config_files_in(dir)?);
    }
    merge_files(&mut merged, &files)?;
    merged.merge(invocation.layer);
    validate::build(merged, invocation.dev, hostname)
}

/// Checks config files and directories without starting anything (`cairn validate`): the same
/// parsing, merging and rules as [`load_agent_config`] with no flags, so the same errors.
pub fn validate_paths(paths: &[PathBuf], hostname: &str) -> Result<AgentConfig, ConfigError> {
    let mut files = Vec::new();
    for path in paths {
        files.extend(file::expand(path)?);
    }
    let mut merged = Layer::default();
    merge_files(&mut merged, &files)?;
    validate::build(merged, false, hostname)
}

/// The usage text for `cairn agent -h`.
pub fn agent_usage() -> String {
    flags::usage()
}

/// Loads each file and merges it over what came before.
fn merge_files(merged: &mut Layer, files: &[PathBuf]) -> Result<(), ConfigError> {
    for file in files {
        merged.merge(file::load(file)?);
    }
    Ok(())
}

/// Everything an agent needs to start.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// `-node`, `node_name`. Defaults to the host name.
    pub node_name: String,
    /// `-node-id`, `node_id`: a UUID. When absent the agent generates one and keeps it in
    /// `data_dir/node-id` so it survives restarts.
    pub node_id: Option<String>,
    /// `-datacenter`, `datacenter`. Default `dc1`. Lower-case letters, digits, `-` and `_`.
    pub datacenter: String,
    /// `-server`, `server`.
    pub server: bool,
    /// `-dev`: one node, server and client, data in memory.
    pub dev: bool,
    /// `-bootstrap-expect`, `bootstrap_expect`: bootstrap Raft once this many servers know each
    /// other. Servers only.
    pub bootstrap_expect: Option<u32>,
    /// `-bootstrap`, `bootstrap`: bootstrap alone (same as `bootstrap_expect = 1`).
    pub bootstrap: bool,
    /// `-data-dir`, `data_dir`. Required unless `dev`.
    pub data_dir: Option<PathBuf>,
    /// `-bind`, `bind_addr`: the address cluster traffic (server RPC, LAN join/gossip) binds.
    pub bind_addr: IpAddr,
    /// `-advertise`, `advertise_addr`: the address other agents use to reach this one. Defaults to
    /// `bind_addr`, or to this host's first private IPv4 address when `bind_addr` is unspecified.
    pub advertise_addr: Option<IpAddr>,
    /// `-client`, `client_addr`: the address the HTTP and DNS interfaces bind. Default 127.0.0.1.
    pub client_addr: IpAddr,
    /// `-retry-join`, `retry_join` (and `-join`, `start_join`): other agents' LAN addresses.
    pub retry_join: Vec<JoinAddress>,
    /// `-retry-interval`, `retry_interval`. Default 30 s (Consul's), 1 s in `-dev`.
    pub retry_interval: Duration,
    /// `-retry-max`, `retry_max`: attempts before giving up; 0 means forever.
    pub retry_max: u32,
    pub ports: Ports,
    /// `-log-level`, `log_level`: trace, debug, info, warn, error.
    pub log_level: LogLevel,
    pub raft: RaftSettings,
    pub gossip: GossipSettings,
    pub autopilot: AutopilotSettings,
    /// Services and checks from config files, and which script checks may run.
    pub local: LocalServices,
    /// The DNS interface: domains, recursors, `dns_config`.
    pub dns: DnsSettings,
    /// Config keys that Consul knows and cairn does not implement yet: accepted and ignored, each
    /// with the file it came from, so the agent can warn about them at start.
    pub ignored_keys: Vec<String>,
}

/// The services and checks this agent registers from its config files (`service`, `services`,
/// `check`, `checks`), validated across files (unique IDs, limits, script checks enabled). One
/// field of [`AgentConfig`] so a config built in code adds them with `Default`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LocalServices {
    /// `enable_script_checks`, `enable_local_script_checks`: which script checks may run.
    pub script_checks: ScriptChecks,
    /// In load order. Registered with the catalog by anti-entropy (a later step).
    pub services: Vec<ServiceDefinition>,
    /// Top-level checks: node checks, or checks naming a `service_id`. A service's own checks are
    /// in its [`ServiceDefinition::checks`].
    pub checks: Vec<CheckDefinition>,
    /// Accepted settings that are probably mistakes (a check interval under 1 s, say).
    pub warnings: Vec<ConfigWarning>,
}

impl LocalServices {
    /// Every check: each service's, then the top-level ones.
    pub fn all_checks(&self) -> impl Iterator<Item = &CheckDefinition> {
        self.services.iter().flat_map(|s| &s.checks).chain(&self.checks)
    }
}

/// LAN gossip: encryption and how long departed members are remembered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GossipSettings {
    /// `-encrypt`, `encrypt`: the gossip encryption key (16, 24 or 32 bytes; base64 in files and
    /// flags). It seeds the keyring on first start; afterwards the keyring file in the data
    /// directory (changed by `cairn keyring`) is what counts, as in Consul.
    pub encrypt_key: Option<crate::gossip::GossipKey>,
    /// `encrypt_verify_incoming`: drop unencrypted packets. Default true; false only while rolling
    /// encryption out to a running cluster.
    pub verify_incoming: bool,
    /// `encrypt_verify_outgoing`: encrypt what is sent. Default true; as above.
    pub verify_outgoing: bool,
    /// `disable_keyring_file`: keep the keyring in memory only.
    pub disable_keyring_file: bool,
    /// `reconnect_timeout`: a failed member is forgotten after this long. Default 72 h, at least
    /// 8 h (Consul's limits).
    pub reconnect_timeout: Duration,
    /// `leave_on_terminate`: leave gracefully on SIGTERM. Default false for servers (a server that
    /// leaves is removed from Raft), true for clients, as Consul.
    pub leave_on_terminate: bool,
    /// `skip_leave_on_interrupt`: exit without leaving on SIGINT. Default true for servers, false
    /// for clients, as Consul.
    pub skip_leave_on_interrupt: bool,
}

impl GossipSettings {
    /// The defaults for a server or a client agent (they differ only in leaving on signals).
    pub fn defaults_for(server: bool) -> Self {
        GossipSettings {
            encrypt_key: None,
            verify_incoming: true,
            verify_outgoing: true,
            disable_keyring_file: false,
            reconnect_timeout: DEFAULT_RECONNECT_TIMEOUT,
            leave_on_terminate: !server,
            skip_leave_on_interrupt: server,
        }
    }
}

/// `autopilot { ... }`: how the Raft configuration follows gossip on the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutopilotSettings {
    /// `cleanup_dead_servers`: remove failed servers from Raft (keeping quorum). Default true.
    pub cleanup_dead_servers: bool,
    /// `last_contact_threshold`: a server not heard from by the leader for longer is unhealthy
    /// and is not promoted. Default 200 ms.
    pub last_contact_threshold: Duration,
    /// `max_trailing_logs`: a learner this many entries behind or fewer counts as caught up.
    /// Default 250.
    pub max_trailing_logs: u64,
    /// `min_quorum`: never remove dead servers below this many voters. Default 0 (no floor
    /// beyond keeping quorum).
    pub min_quorum: u32,
    /// `server_stabilization_time`: a new server must stay healthy this long before it votes.
    /// Default 10 s.
    pub server_stabilization_time: Duration,
    /// `dead_server_cleanup_after` (cairn's): how long a server must have been failed in gossip
    /// before it is removed from Raft. Default 30 s, so a restart does not cost a membership change.
    pub dead_server_cleanup_after: Duration,
}

impl Default for AutopilotSettings {
    fn default() -> Self {
        AutopilotSettings {
            cleanup_dead_servers: true,
            last_contact_threshold: Duration::from_millis(200),
            max_trailing_logs: 250,
            min_quorum: 0,
            server_stabilization_time: Duration::from_secs(10),
            dead_server_cleanup_after: Duration::from_secs(30),
        }
    }
}

/// Where each listener binds. Consul's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    /// `-http-port`, `ports.http`. Default 8500.
    pub http: u16,
    /// `-dns-port`, `ports.dns`. Default 8600.
    pub dns: u16,
    /// `-server-port`, `ports.server`. Default 8300.
    pub server: u16,
    /// `-serf-lan-port`, `ports.serf_lan`. Default 8301.
    pub serf_lan: u16,
    /// `-serf-wan-port`, `ports.serf_wan`. Default 8302.
    pub serf_wan: u16,
}

impl Default for Ports {
    fn default() -> Self {
        Ports { http: 8500, dns: 8600, server: 8300, serf_lan: 8301, serf_wan: 8302 }
    }
}

/// Another agent's LAN address as the user wrote it: a host name or IP, and a port (8301 when
/// omitted). Host names are resolved when joining, not when parsing, as Consul does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinAddress {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for JoinAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogLevel {
    Trace,
    Debug,
    #[default]
    Info,
    Warn,
    Error,
}

/// Raft timings and log retention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftSettings {
    /// Leader heartbeat period. Default 50 ms.
    pub heartbeat_interval: Duration,
    /// A follower that hears no leader for a random time in [min, max] starts an election.
    /// Defaults 150 ms and 300 ms (Consul's production timing is 1 s). openraft also uses the
    /// maximum as the leader lease: a follower that heard a leader that recently refuses to vote.
    /// Measured in `bench/sim/failover.toml`: median 0.67 s from a leader crash to the next
    /// acknowledged write (300-600 ms: 1.3 s). Scale with `performance.raft_multiplier` on slow
    /// networks.
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    /// `raft_snapshot_threshold`: entries since the last snapshot that trigger a new one. Default
    /// 16384, as Consul.
    pub snapshot_threshold: u64,
    /// `raft_trailing_logs`: entries kept in the log behind a snapshot, so a slightly lagging
    /// follower catches up from the log instead of a snapshot. Default 10240, as Consul.
    pub trailing_logs: u64,
}

impl Default for RaftSettings {
    fn default() -> Self {
        RaftSettings {
            heartbeat_interval: Duration::from_millis(50),
            election_timeout_min: Duration::from_millis(150),
            election_timeout_max: Duration::from_millis(300),
            snapshot_threshold: 16384,
            trailing_logs: 10240,
        }
    }
}
