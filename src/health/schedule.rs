//! The check scheduler's pure core: one step function for every kind of check. Inputs (a check
//! added, replaced or removed, a TTL update, a probe finished, time passing) go in with the
//! current time; actions (a check's status or output changed, start this probe) come out. No
//! clock, no I/O, no global randomness: time is a `Duration` since the runner started and the one
//! random choice, where in its interval a check first runs, comes from a seed given at creation.
//! So every rule here is tested against a fake clock, and the simulator replays it exactly.
//!
//! Consul's rules, followed here (read from its `agent/checks/check.go`):
//! - A check first runs at a random point of its first interval (`lib.RandomStagger`), then one
//!   interval after each run *finishes*, so a slow probe never overlaps itself.
//! - `success_before_passing` / `failures_before_critical` (its `StatusHandler`): passing and
//!   warning results count as successes, critical ones as failures; each resets the other count.
//!   The status follows a result only once its count reaches the threshold, and a result that
//!   does not reach it changes nothing, output included. Both counts start *at* their
//!   thresholds, so the first result after a check is added applies at once.
//! - TTL checks (`CheckTTL`): an update sets status and output at once (no thresholds) and
//!   restarts the timer; when the timer runs out the check turns critical with output
//!   `TTL expired`, followed by the last output if there was one, and stays so until updated.
//!   An update's output is cut to 4 KiB with `... (captured N of M bytes)`.
//!
//! Unlike Consul, probes are limited: at most `probes_running_max` run at once; checks that come
//! due while all slots are taken wait in a queue, in the order they came due.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use crate::config::{CheckDefinition, CheckKind, CheckStatus};

use super::prober::{Probe, ProbeResult};

/// Consul's `DefaultBufSize`: the most output kept from one probe or TTL update.
pub const OUTPUT_LEN_MAX: usize = 4096;

/// A change of a check's status or output, for the agent's local state to record and sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckUpdate {
    pub check_id: String,
    pub status: CheckStatus,
    pub output: String,
}

/// What the scheduler needs of a check definition. Alias checks have none: the agent's local
/// state runs them, because they read other checks.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckSpec {
    pub timer: SpecTimer,
    pub initial_status: CheckStatus,
    pub success_before_passing: u32,
    pub failures_before_critical: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SpecTimer {
    /// Script, HTTP and TCP checks: probed every `interval`.
    Interval { probe: Probe, interval: Duration },
    /// Critical unless updated within `ttl`.
    Ttl { ttl: Duration },
}

impl CheckSpec {
    /// The spec of a definition; `None` for alias checks.
    pub fn of_definition(definition: &CheckDefinition) -> Option<CheckSpec> {
        let timer = match &definition.kind {
            CheckKind::Ttl { ttl } => SpecTimer::Ttl { ttl: *ttl },
            CheckKind::Alias { .. } => return None,
            kind => {
                let (probe, interval) = Probe::of_kind(kind)?;
                SpecTimer::Interval { probe, interval }
            }
        };
        Some(CheckSpec {
            timer,
            initial_status: definition.initial_status,
            success_before_passing: definition.success_before_passing,
            failures_before_critical: definition.failures_before_critical,
        })
    }
}

/// One probe run. Its token tells a result for the current run of a check from a late result of
/// a run started before the check was replaced or removed, which is dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunId {
    pub check_id: String,
    pub token: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Add a check, or replace one with the same ID. Replacing keeps its status and output;
    /// replacing with an identical spec (a config reload that changed nothing) changes nothing.
    Upsert {
        check_id: String,
        spec: CheckSpec,
    },
    Remove {
        check_id: String,
    },
    /// A TTL check's new status. Ignored for unknown and non-TTL checks (the runner's handle
    /// refuses those before they get here).
    TtlUpdate {
        check_id: String,
        status: CheckStatus,
        output: String,
    },
    ProbeDone {
        run: RunId,
        result: ProbeResult,
    },
    /// Time passed; nothing else happened.
    Tick,
}

/// What the shell must do. Within one step's actions, updates come first, in the order they
/// happened; then the probes to start.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Update(CheckUpdate),
    StartProbe { run: RunId, probe: Probe },
}

/// The scheduler's state. See the module documentation for its rules.
#[derive(Debug)]
pub struct Schedule {
    checks: BTreeMap<String, Entry>,
    /// Due checks waiting for a probe slot, oldest first. Each is `Queued` in `checks`.
    queue: VecDeque<String>,
    /// Tokens of probes started and not yet reported, stale ones included: a slot is held until
    /// the probe really finishes, whatever happened to its check meanwhile.
    in_flight: BTreeSet<u64>,
    probes_running_max: usize,
    next_token: u64,
    rng: SplitMix64,
}

#[derive(Debug)]
struct Entry {
    spec: CheckSpec,
    status: CheckStatus,
    output: String,
    thresholds: Thresholds,
    timer: Timer,
}

#[derive(Debug)]
enum Timer {
    Interval {
        interval: Duration,
        run: RunState,
    },
    /// `expires_at` is `None` once expired, until the next update.
    Ttl {
        ttl: Duration,
        expires_at: Option<Duration>,
        last_output: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RunState {
    Idle { next_due: Duration },
    Queued,
    Running { token: u64 },
}

impl Schedule {
    /// An empty schedule running at most `probes_running_max` probes at once (at least one),
    /// drawing first-run offsets from `seed`.
    pub fn new(probes_running_max: usize, seed: u64) -> Self {
        Schedule {
            checks: BTreeMap::new(),
            queue: VecDeque::new(),
            in_flight: BTreeSet::new(),
            probes_running_max: probes_running_max.max(1),
            next_token: 0,
            rng: SplitMix64(seed),
        }
    }

    /// Apply `input` at time `now` (never earlier than the previous step's), then expire TTLs,
    /// queue the checks that came due and start probes while slots are free.
    pub fn step(&mut self, input: Input, now: Duration) -> Vec<Action> {
        let mut actions = Vec::new();
        match input {
            Input::Upsert { check_id, spec } => self.upsert(check_id, spec, now),
            Input::Remove { check_id } => self.remove(&check_id),
            Input::TtlUpdate { check_id, status, output } => {
                self.ttl_update(&check_id, status, output, now, &mut actions)
            }
            Input::ProbeDone { run, result } => self.probe_done(run, result, now, &mut actions),
            Input::Tick => {}
        }
        self.expire_ttls(now, &mut actions);
        self.queue_due(now);
        self.start_probes(&mut actions);
        actions
    }

    /// When the next step is needed if no input arrives: the earliest due check or TTL expiry.
    /// Queued checks have none; they start when a probe finishes.
    pub fn next_deadline(&self) -> Option<Duration> {
        self.checks
            .values()
            .filter_map(|entry| match entry.timer {
                Timer::Interval { run: RunState::Idle { next_due }, .. } => Some(next_due),
                Timer::Ttl { expires_at, .. } => expires_at,
                Timer::Interval { .. } => None,
            })
            .min()
    }

    /// Checks held.
    pub fn len(&self) -> usize {
        self.checks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.checks.is_empty()
    }

    /// Probes started and not finished.
    pub fn running(&self) -> usize {
        self.in_flight.len()
    }

    /// Due checks waiting for a free probe slot.
    pub fn waiting(&self) -> usize {
        self.queue.len()
    }

    /// A check's current status and output.
    pub fn status(&self, check_id: &str) -> Option<(CheckStatus, &str)> {
        self.checks.get(check_id).map(|entry| (entry.status, entry.output.as_str()))
    }

    fn upsert(&mut self, check_id: String, spec: CheckSpec, now: Duration) {
        let (status, output) = match self.checks.get(&check_id) {
            Some(existing) if existing.spec == spec => return,
            Some(existing) => (existing.status, existing.output.clone()),
            None => (spec.initial_status, String::new()),
        };
        self.queue.retain(|queued| *queued != check_id);
        let timer = match &spec.timer {
            SpecTimer::Interval { interval, .. } => {
                let next_due = now + self.rng.stagger(*interval);
                Timer::Interval { interval: *interval, run: RunState::Idle { next_due } }
            }
            SpecTimer::Ttl { ttl } => {
                Timer::Ttl { ttl: *ttl, expires_at: Some(now + *ttl), last_output: String::new() }
            }
        };
        let thresholds = Thresholds::new(spec.success_before_passing, spec.failures_before_critical);
        self.checks.insert(check_id, Entry { spec, status, output, thresholds, timer });
    }

    fn remove(&mut self, check_id: &str) {
        if self.checks.remove(check_id).is_some() {
            self.queue.retain(|queued| queued != check_id);
        }
    }

    fn ttl_update(
        &mut self,
        check_id: &str,
        status: CheckStatus,
        output: String,
        now: Duration,
        actions: &mut Vec<Action>,
    ) {
        let Some(entry) = self.checks.get_mut(check_id) else { return };
        let Timer::Ttl { ttl, expires_at, last_output } = &mut entry.timer else { return };
        let output = truncate_ttl_output(output);
        *expires_at = Some(now + *ttl);
        last_output.clone_from(&output);
        entry.set(check_id, status, output, actions);
    }

    fn probe_done(&mut self, run: RunId, result: ProbeResult, now: Duration, actions: &mut Vec<Action>) {
        let was_in_flight = self.in_flight.remove(&run.token);
        debug_assert!(was_in_flight, "probe {run:?} reported twice or never started");
        let Some(entry) = self.checks.get_mut(&run.check_id) else { return };
        let Timer::Interval { interval, run: state } = &mut entry.timer else { return };
        if *state != (RunState::Running { token: run.token }) {
            return; // a run of the check as it was before it was replaced
        }
        *state = RunState::Idle { next_due: now + *interval };
        if let Some(status) = entry.thresholds.observe(result.status) {
            entry.set(&run.check_id, status, result.output, actions);
        }
    }

    fn expire_ttls(&mut self, now: Duration, actions: &mut Vec<Action>) {
        for (check_id, entry) in &mut self.checks {
            let Timer::Ttl { expires_at, last_output, .. } = &mut entry.timer else { continue };
            if expires_at.is_none_or(|at| at > now) {
                continue;
            }
            *expires_at = None;
            let output = if last_output.is_empty() {
                "TTL expired".to_owned()
            } else {
                format!("TTL expired (last output before timeout follows): {last_output}")
            };
            entry.set(check_id, CheckStatus::Critical, output, actions);
        }
    }

    /// Moves checks that are due to the queue, earliest first (ties in ID order).
    fn queue_due(&mut self, now: Duration) {
        let mut due: Vec<(Duration, &String)> = self
            .checks
            .iter()
            .filter_map(|(check_id, entry)| match entry.timer {
                Timer::Interval { run: RunState::Idle { next_due }, .. } if next_due <= now => {
                    Some((next_due, check_id))
                }
                _ => None,
            })
            .collect();
        due.sort();
        let due: Vec<String> = due.into_iter().map(|(_, check_id)| check_id.clone()).collect();
        for check_id in due {
            if let Some(Entry { timer: Timer::Interval { run, .. }, .. }) = self.checks.get_mut(&check_id) {
                *run = RunState::Queued;
                self.queue.push_back(check_id);
            }
        }
    }

    fn start_probes(&mut self, actions: &mut Vec<Action>) {
        while self.in_flight.len() < self.probes_running_max {
            let Some(check_id) = self.queue.pop_front() else { return };
            let Some(entry) = self.checks.get_mut(&check_id) else { continue };
            let (Timer::Interval { run, .. }, SpecTimer::Interval { probe, .. }) =
                (&mut entry.timer, &entry.spec.timer)
            else {
                continue;
            };
            debug_assert_eq!(*run, RunState::Queued, "{check_id} in the queue but not queued");
            let token = self.next_token;
            self.next_token += 1;
            *run = RunState::Running { token };
            self.in_flight.insert(token);
            actions.push(Action::StartProbe { run: RunId { check_id, token }, probe: probe.clone() });
        }
    }
}

impl Entry {
    /// Sets status and output, reporting an update if either changed.
    fn set(&mut self, check_id: &str, status: CheckStatus, output: String, actions: &mut Vec<Action>) {
        if self.status == status && self.output == output {
            return;
        }
        self.status = status;
        self.output.clone_from(&output);
        actions.push(Action::Update(CheckUpdate { check_id: check_id.to_owned(), status, output }));
    }
}

/// Consul's `StatusHandler`: consecutive successes (passing or warning) and failures (critical),
/// each count reset by the other, starting at the thresholds so the first result applies.
/// Consul also has `failures_before_warning`; cairn's config does not, and Consul's default
/// (equal to `failures_before_critical`) makes it never apply, so it is left out.
#[derive(Debug, Clone)]
struct Thresholds {
    success_before_passing: u32,
    failures_before_critical: u32,
    successes: u32,
    failures: u32,
}

impl Thresholds {
    fn new(success_before_passing: u32, failures_before_critical: u32) -> Self {
        Thresholds {
            success_before_passing,
            failures_before_critical,
            successes: success_before_passing,
            failures: failures_before_critical,
        }
    }

    /// The status to show after a result with `status`, or `None` to leave it as it is.
    fn observe(&mut self, status: CheckStatus) -> Option<CheckStatus> {
        if status == CheckStatus::Critical {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
            (self.failures >= self.failures_before_critical).then_some(status)
        } else {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
            (self.successes >= self.success_before_passing).then_some(status)
        }
    }
}

/// A TTL update's output cut to [`OUTPUT_LEN_MAX`] bytes as Consul's `CheckTTL.SetStatus` cuts it
/// (the start kept), at a character boundary.
fn truncate_ttl_output(output: String) -> String {
    if output.len() <= OUTPUT_LEN_MAX {
        return output;
    }
    let mut cut = OUTPUT_LEN_MAX;
    while !output.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{} ... (captured {cut} of {} bytes)", &output[..cut], output.len())
}

/// SplitMix64: tiny, seedable, and good enough to spread start times.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform offset in `[0, interval)` (zero for a zero interval).
    fn stagger(&mut self, interval: Duration) -> Duration {
        let nanos = u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX);
        let offset = (u128::from(self.next()) * u128::from(nanos)) >> 64;
        Duration::from_nanos(offset as u64)
    }
}

#[cfg(test)]
mod tests;
