//! Scenario files: what cluster to build, what load to run, which faults to inject and when.
//!
//! A scenario is data (`scenarios/<name>.toml`); the runner reads it and the seed decides every
//! random choice within it. Times are simulated seconds from the start of the run.

use std::path::Path;

use serde::Deserialize;

/// One scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    /// What the scenario shows, in a sentence or two (printed with failures).
    pub description: String,
    /// Number of server agents (Raft voters).
    pub servers: u32,
    /// Seeds the test suite runs: `1..=seeds`.
    #[serde(default = "default_seed_count")]
    pub seeds: u64,
    /// Seeds that once failed, kept as regression cases and run by the suite too.
    #[serde(default)]
    pub regression_seeds: Vec<u64>,
    #[serde(default)]
    pub raft: RaftOverrides,
    #[serde(default)]
    pub autopilot: AutopilotOverrides,
    /// Client agents carrying services, whose health the catalog must follow.
    pub agents: Option<Agents>,
    pub workload: Workload,
    #[serde(default)]
    pub network: Network,
    pub phases: Phases,
    #[serde(default, rename = "fault")]
    pub faults: Vec<Fault>,
    /// Scripted check outcomes (needs `[agents.check]`).
    #[serde(default, rename = "check_flap")]
    pub check_flaps: Vec<CheckFlap>,
}

fn default_seed_count() -> u64 {
    10
}

/// Raft settings a scenario may change from the agent defaults, e.g. to snapshot often.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaftOverrides {
    pub snapshot_threshold: Option<u64>,
    pub trailing_logs: Option<u64>,
    pub heartbeat_ms: Option<u64>,
    /// Election timeout range [min, max] in milliseconds.
    pub election_timeout_ms: Option<[u64; 2]>,
}

/// Autopilot settings a scenario may shorten from Consul's defaults, so that a replaced server is
/// promoted and a dead one cleaned up within a scenario's length.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutopilotOverrides {
    pub server_stabilization_time_s: Option<f64>,
    pub dead_server_cleanup_after_s: Option<f64>,
}

/// Client agents (`agent-0`, `agent-1`, ...): gossip members without Raft, each carrying one
/// instance of every service in `services`, registered in the catalog at the start as the agent's
/// anti-entropy would.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agents {
    pub count: u32,
    pub services: Vec<String>,
    /// Once an agent has been down (crashed, or cut off) this long, its instances are absent
    /// from every server's `?passing` answer; once it has been back this long, they are present
    /// again; and an agent that is up is never absent for longer than this. With a scripted
    /// check, the same bound holds from the moment the check's outcome changes for long enough to
    /// pass its thresholds.
    pub catalog_within_s: f64,
    /// Give every service instance a health check whose outcome the scenario scripts
    /// (`[[check_flap]]`). Without it, instances have no checks and follow only their agent.
    pub check: Option<AgentCheck>,
}

/// The check on every service instance: an HTTP check probed through the simulator's scripted
/// prober, passing until a `[[check_flap]]` says otherwise.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentCheck {
    pub interval_s: f64,
    /// Consecutive failures before the check turns critical (Consul's `failures_before_critical`;
    /// 0 and 1 both mean the first).
    #[serde(default)]
    pub failures_before_critical: u32,
    /// Consecutive successes before it turns passing again.
    #[serde(default)]
    pub success_before_passing: u32,
}

impl AgentCheck {
    /// Probes needed in a row to turn critical, and to turn passing.
    pub fn thresholds(&self) -> (u32, u32) {
        (self.failures_before_critical.max(1), self.success_before_passing.max(1))
    }
}

/// From `at_s`, agent `agent`'s checks (of every service) fail (`status = "critical"`) or pass
/// again (`"passing"`), for `for_s` seconds; `repeat` more times every `every_s` seconds, which
/// makes a flapping check.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckFlap {
    pub at_s: f64,
    pub agent: u32,
    pub status: FlapStatus,
    pub for_s: f64,
    #[serde(default)]
    pub repeat: u32,
    #[serde(default)]
    pub every_s: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlapStatus {
    Passing,
    Critical,
}

/// The client load: each client loops over random operations on a small key space.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    pub clients: u32,
    pub keys: u32,
    /// Fraction of operations that are reads (the rest are writes and deletes).
    pub read_ratio: f64,
    /// Fraction of operations that are deletes.
    #[serde(default)]
    pub delete_ratio: f64,
    /// Fraction of reads sent with `?consistent` (the others use the default mode, which cairn
    /// also serves linearizably).
    #[serde(default = "half")]
    pub consistent_read_ratio: f64,
    /// Pause between a client's operations, a random value in [min, max] milliseconds.
    pub pause_ms: [u64; 2],
    /// A request without an answer after this long counts as indeterminate.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
}

fn half() -> f64 {
    0.5
}

fn default_request_timeout_ms() -> u64 {
    3000
}

/// Network conditions outside fault windows.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// One-way message latency, a random value in [min, max] milliseconds (this also reorders).
    pub latency_ms: [u64; 2],
}

impl Default for Network {
    fn default() -> Self {
        Network { latency_ms: [1, 5] }
    }
}

/// The two phases of a run and the bound the liveness phase must meet.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phases {
    /// Faults happen in this phase.
    pub safety_s: f64,
    /// Fault-free: everything healed and restarted at its start.
    pub liveness_s: f64,
    /// After healing, a leader must exist and a write must succeed within this many seconds.
    pub recover_within_s: f64,
}

/// One fault at a time in the safety phase. (Unknown keys are refused by [`FaultKind`]: serde's
/// `flatten` cannot be combined with `deny_unknown_fields` on this struct.)
#[derive(Debug, Clone, Deserialize)]
pub struct Fault {
    pub at_s: f64,
    #[serde(flatten)]
    pub kind: FaultKind,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum FaultKind {
    /// Kill a server (its unsynced writes may be lost and its last write torn, unless
    /// `lose_unsynced = false`), and restart it after `restart_after_s` if given.
    Crash {
        target: Target,
        restart_after_s: Option<f64>,
        #[serde(default = "yes")]
        lose_unsynced: bool,
    },
    /// Cut a server off: `both` directions, only `inbound`, or only `outbound` traffic.
    Isolate {
        target: Target,
        #[serde(default)]
        direction: Direction,
        heal_after_s: f64,
    },
    /// Split the servers in two groups at random, the smaller of `minority` servers (the leader
    /// among them when `with_leader`), and cut every link between the groups.
    Split {
        minority: u32,
        #[serde(default)]
        with_leader: bool,
        heal_after_s: f64,
    },
    /// Drop this fraction of messages for a while (for TCP: connection attempts fail, segments are
    /// retransmitted late).
    PacketLoss { rate: f64, duration_s: f64 },
    /// Raise latency to [min, max] ms for a while.
    Delay { latency_ms: [u64; 2], duration_s: f64 },
    /// Random faults drawn from the above, one every `every_s` (a random time in [min, max]) until
    /// `until_s`, each healed before the next.
    Chaos { until_s: f64, every_s: [f64; 2] },
    /// Retire a server for good and start a new one (a new host, name and identity) that joins
    /// through gossip. The old one leaves gracefully first (`leave = true`) or is killed.
    Replace {
        target: Target,
        #[serde(default)]
        leave: bool,
    },
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    #[default]
    Both,
    Inbound,
    Outbound,
}

/// Which host a fault hits: `"leader"`, `"follower"` (a random one), `"random"` (any server),
/// `"server-N"`, or `"agent-N"` (a client agent; 0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Leader,
    Follower,
    Random,
    Server(u32),
    Agent(u32),
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.as_str() {
            "leader" => Ok(Target::Leader),
            "follower" => Ok(Target::Follower),
            "random" => Ok(Target::Random),
            other => {
                let numbered = |prefix: &str| other.strip_prefix(prefix).and_then(|n| n.parse::<u32>().ok());
                numbered("server-").map(Target::Server).or_else(|| numbered("agent-").map(Target::Agent)).ok_or_else(
                    || {
                        serde::de::Error::custom(format!(
                            "unknown target {other:?}: expected leader, follower, random, server-N or agent-N"
                        ))
                    },
                )
            }
        }
    }
}

/// A gossip scenario (`[gossip]` instead of `servers`/`workload`): client agents only, no Raft.
/// The first `seeds` agents start at once and join each other; the rest start at random times in
/// the first `start_spread_s` seconds and join through the seeds, as `-retry-join` would have them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GossipScenario {
    pub name: String,
    pub description: String,
    #[serde(default = "default_seed_count")]
    pub seeds: u64,
    #[serde(default)]
    pub regression_seeds: Vec<u64>,
    #[serde(default)]
    pub network: Network,
    pub gossip: GossipSpec,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GossipSpec {
    /// Agents in the pool.
    pub agents: u32,
    /// Agents every other agent joins through.
    pub join_through: u32,
    /// The non-seed agents start at random times within this window.
    pub start_spread_s: f64,
    /// Every agent sees every agent alive within this many seconds of the last one starting.
    pub converge_within_s: f64,
    /// Fraction of packets dropped for the whole run.
    #[serde(default)]
    pub packet_loss: f64,
    /// Agents killed (without leaving) at `kill_at_s` (the seeds are spared).
    #[serde(default)]
    pub kill: u32,
    pub kill_at_s: Option<f64>,
    /// Every survivor sees every killed agent as failed within this many seconds of the kill.
    pub detect_within_s: Option<f64>,
    /// No survivor sees a live agent as failed for longer than this many seconds in one stretch.
    pub false_failure_max_s: Option<f64>,
    /// One more agent (the last) starts this late, into a converged pool, to time how fast a
    /// join spreads.
    pub late_join_at_s: Option<f64>,
    /// Length of the run.
    pub duration_s: f64,
}

/// Any scenario file.
#[derive(Debug, Clone)]
pub enum AnyScenario {
    Raft(Scenario),
    Gossip(GossipScenario),
}

impl AnyScenario {
    /// Loads a Raft scenario, or a gossip scenario if the file has a `[gossip]` table.
    pub fn load(path: &Path) -> Result<AnyScenario, ScenarioError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| ScenarioError::Read { path: shown.clone(), error })?;
        let table: toml::Table =
            toml::from_str(&text).map_err(|e| ScenarioError::Parse { path: shown.clone(), error: e.to_string() })?;
        if !table.contains_key("gossip") {
            return Scenario::load(path).map(AnyScenario::Raft);
        }
        let scenario: GossipScenario =
            toml::from_str(&text).map_err(|e| ScenarioError::Parse { path: shown.clone(), error: e.to_string() })?;
        scenario.validate().map_err(|reason| ScenarioError::Invalid { path: shown, reason })?;
        Ok(AnyScenario::Gossip(scenario))
    }

    pub fn name(&self) -> &str {
        match self {
            AnyScenario::Raft(s) => &s.name,
            AnyScenario::Gossip(s) => &s.name,
        }
    }

    pub fn description(&self) -> &str {
        match self {
            AnyScenario::Raft(s) => &s.description,
            AnyScenario::Gossip(s) => &s.description,
        }
    }

    /// The suite's seeds: `1..=seeds`, then the regression seeds beyond them.
    pub fn suite_seeds(&self) -> Vec<u64> {
        let (count, regression) = match self {
            AnyScenario::Raft(s) => (s.seeds, &s.regression_seeds),
            AnyScenario::Gossip(s) => (s.seeds, &s.regression_seeds),
        };
        let mut seeds: Vec<u64> = (1..=count).collect();
        seeds.extend(regression.iter().copied().filter(|s| *s > count));
        seeds
    }
}

impl GossipScenario {
    fn validate(&self) -> Result<(), String> {
        let g = &self.gossip;
        if g.agents < 2 || g.agents > 20_000 {
            return Err(format!("gossip.agents = {}: expected 2 to 20000", g.agents));
        }
        if g.join_through == 0 || g.join_through > g.agents {
            return Err("gossip.join_through must be from 1 to the number of agents".into());
        }
        if g.kill > 0 && (g.kill_at_s.is_none() || g.detect_within_s.is_none()) {
            return Err("gossip.kill needs kill_at_s and detect_within_s".into());
        }
        if g.kill + g.join_through > g.agents {
            return Err("gossip.kill spares the join_through seeds: kill + join_through must not exceed agents".into());
        }
        if !(0.0..1.0).contains(&g.packet_loss) {
            return Err(format!("gossip.packet_loss = {}: expected 0 to below 1", g.packet_loss));
        }
        if g.kill_at_s.is_some_and(|at| at >= g.duration_s) {
            return Err("gossip.kill_at_s must be within duration_s".into());
        }
        Ok(())
    }
}

/// Why a scenario file could not be used.
#[derive(Debug)]
pub enum ScenarioError {
    Read { path: String, error: std::io::Error },
    Parse { path: String, error: String },
    Invalid { path: String, reason: String },
}

impl std::fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScenarioError::Read { path, error } => write!(f, "{path}: {error}"),
            ScenarioError::Parse { path, error } => write!(f, "{path}: {error}"),
            ScenarioError::Invalid { path, reason } => write!(f, "{path}: {reason}"),
        }
    }
}

impl std::error::Error for ScenarioError {}

impl Scenario {
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| ScenarioError::Read { path: shown.clone(), error })?;
        let scenario: Scenario =
            toml::from_str(&text).map_err(|e| ScenarioError::Parse { path: shown.clone(), error: e.to_string() })?;
        scenario.validate().map_err(|reason| ScenarioError::Invalid { path: shown, reason })?;
        Ok(scenario)
    }

    fn validate(&self) -> Result<(), String> {
        if !(1..=9).contains(&self.servers) {
            return Err(format!("servers = {}: expected 1 to 9", self.servers));
        }
        let w = &self.workload;
        if w.keys == 0 || w.clients == 0 {
            return Err("workload needs at least one client and one key".into());
        }
        for (name, ratio) in [
            ("read_ratio", w.read_ratio),
            ("delete_ratio", w.delete_ratio),
            ("consistent_read_ratio", w.consistent_read_ratio),
        ] {
            if !(0.0..=1.0).contains(&ratio) {
                return Err(format!("workload.{name} = {ratio}: expected 0 to 1"));
            }
        }
        if w.read_ratio + w.delete_ratio > 1.0 {
            return Err("workload.read_ratio + delete_ratio exceed 1".into());
        }
        if w.pause_ms[0] > w.pause_ms[1] || self.network.latency_ms[0] > self.network.latency_ms[1] {
            return Err("ranges are written [min, max]".into());
        }
        for fault in &self.faults {
            if fault.at_s < 0.0 || fault.at_s >= self.phases.safety_s {
                return Err(format!(
                    "a fault at {} s is outside the safety phase (0 to {} s)",
                    fault.at_s, self.phases.safety_s
                ));
            }
            if let FaultKind::Split { minority, .. } = fault.kind {
                if minority == 0 || 2 * minority >= self.servers {
                    return Err(format!(
                        "split minority = {minority}: must be at least 1 and less than half of {}",
                        self.servers
                    ));
                }
            }
            self.validate_target(fault)?;
        }
        if let Some(agents) = &self.agents {
            if agents.count == 0 || agents.count > 200 || agents.services.is_empty() {
                return Err("agents: expected a count of 1 to 200 and at least one service".into());
            }
            if self.phases.liveness_s <= agents.catalog_within_s {
                return Err("agents.catalog_within_s must be shorter than the liveness phase, which must see every \
                            agent back"
                    .into());
            }
        }
        if !self.check_flaps.is_empty() {
            let Some(Agents { count, check: Some(check), .. }) = &self.agents else {
                return Err("check_flap needs [agents] with [agents.check]".into());
            };
            if check.interval_s < 1.0 {
                return Err("agents.check.interval_s: Consul's minimum is 1 s".into());
            }
            for flap in &self.check_flaps {
                let end = flap.at_s + flap.every_s * flap.repeat as f64 + flap.for_s;
                if flap.agent >= *count || flap.at_s < 0.0 || end > self.phases.safety_s || flap.for_s <= 0.0 {
                    return Err(format!(
                        "check_flap at {} s: needs an agent below {count}, a positive for_s, and to end within the \
                         safety phase",
                        flap.at_s
                    ));
                }
                if flap.repeat > 0 && flap.every_s <= flap.for_s {
                    return Err(format!("check_flap at {} s: every_s must be longer than for_s", flap.at_s));
                }
            }
        }
        Ok(())
    }

    /// Agents can be crashed or cut off, and only if they exist; only servers can be replaced.
    fn validate_target(&self, fault: &Fault) -> Result<(), String> {
        let agents = self.agents.as_ref().map_or(0, |a| a.count);
        match fault.kind {
            FaultKind::Crash { target: Target::Agent(n), .. } | FaultKind::Isolate { target: Target::Agent(n), .. }
                if n >= agents =>
            {
                Err(format!("target agent-{n} at {} s: the scenario has {agents} agents", fault.at_s))
            }
            FaultKind::Replace { target: Target::Agent(_), .. } => {
                Err(format!("replace at {} s: only servers can be replaced", fault.at_s))
            }
            FaultKind::Crash { target: Target::Server(n), .. }
            | FaultKind::Isolate { target: Target::Server(n), .. }
            | FaultKind::Replace { target: Target::Server(n), .. }
                if n >= self.servers =>
            {
                Err(format!("target server-{n} at {} s: the scenario starts {} servers", fault.at_s, self.servers))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every scenario shipped in `scenarios/` parses and validates.
    #[test]
    fn shipped_scenarios_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        let mut count = 0;
        for entry in std::fs::read_dir(&dir).expect("scenarios/ exists") {
            let path = entry.expect("readable entry").path();
            if path.extension().is_some_and(|e| e == "toml") {
                AnyScenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
                count += 1;
            }
        }
        assert!(count >= 3, "expected the three Raft scenarios, found {count}");
    }

    /// An unknown key in a scenario is an error naming it, not silently ignored.
    #[test]
    fn unknown_keys_are_refused() {
        let text = r#"
            name = "x"
            description = "x"
            servers = 3
            typo = 1
            [workload]
            clients = 1
            keys = 1
            read_ratio = 0.5
            pause_ms = [1, 2]
            [phases]
            safety_s = 1
            liveness_s = 1
            recover_within_s = 1
        "#;
        let err = toml::from_str::<Scenario>(text).unwrap_err().to_string();
        assert!(err.contains("typo"), "{err}");
    }

    /// A misspelt key inside a fault is refused too, not silently ignored.
    #[test]
    fn unknown_fault_keys_are_refused() {
        let fault = |body: &str| format!("at_s = 1\n{body}");
        let good: Fault = toml::from_str(&fault("kind = \"crash\"\ntarget = \"leader\"")).unwrap();
        assert!(matches!(good.kind, FaultKind::Crash { target: Target::Leader, lose_unsynced: true, .. }));
        let err = toml::from_str::<Fault>(&fault("kind = \"crash\"\ntarget = \"leader\"\nrestart_afer_s = 2"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("restart_afer_s"), "{err}");
    }
}
