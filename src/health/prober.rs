//! The seam between the check scheduler and the world: a [`Prober`] runs one probe (a script, an
//! HTTP request, a TCP connect) and says how it went. Production uses [`super::RealProber`]; the
//! simulator and tests use [`ScriptedProber`], whose outcomes a scenario sets per check at run
//! time, so "the web check fails at t=30s" is data rather than a fault in a real process.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::{CheckKind, CheckStatus, ScriptCommand};

/// What one probe run produced. `output` is what the catalog shows as the check's `Output`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeResult {
    pub status: CheckStatus,
    pub output: String,
}

impl ProbeResult {
    pub fn new(status: CheckStatus, output: impl Into<String>) -> Self {
        ProbeResult { status, output: output.into() }
    }

    pub fn critical(output: impl Into<String>) -> Self {
        ProbeResult::new(CheckStatus::Critical, output)
    }
}

/// One probe to run: the part of a [`CheckKind`] that says what to do, without its schedule.
#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    /// Exit 0 passing, 1 warning, anything else critical.
    Script { command: ScriptCommand, timeout: Duration },
    /// 2xx passing, 429 warning, anything else critical.
    Http {
        url: String,
        method: String,
        header: BTreeMap<String, Vec<String>>,
        body: Option<String>,
        tls_skip_verify: bool,
        follow_redirects: bool,
        timeout: Duration,
    },
    /// Passing if a connection opens within the timeout.
    Tcp { address: String, timeout: Duration },
}

impl Probe {
    /// The probe of an interval check and its interval; `None` for TTL and alias checks, which
    /// nothing probes.
    pub fn of_kind(kind: &CheckKind) -> Option<(Probe, Duration)> {
        match kind.clone() {
            CheckKind::Script { command, interval, timeout } => Some((Probe::Script { command, timeout }, interval)),
            CheckKind::Http { url, method, header, body, tls_skip_verify, follow_redirects, interval, timeout } => {
                let probe = Probe::Http { url, method, header, body, tls_skip_verify, follow_redirects, timeout };
                Some((probe, interval))
            }
            CheckKind::Tcp { address, interval, timeout } => Some((Probe::Tcp { address, timeout }, interval)),
            CheckKind::Ttl { .. } | CheckKind::Alias { .. } => None,
        }
    }

    /// How long the probe may take; a prober reports critical after it.
    pub fn timeout(&self) -> Duration {
        match self {
            Probe::Script { timeout, .. } | Probe::Http { timeout, .. } | Probe::Tcp { timeout, .. } => *timeout,
        }
    }
}

/// A boxed probe future (object safety: the runner holds an `Arc<dyn Prober>`).
pub type ProbeFuture<'a> = Pin<Box<dyn Future<Output = ProbeResult> + Send + 'a>>;

/// Runs probes. Implementations must finish within about `probe.timeout()` (the runner holds a
/// concurrency slot until they do) and never panic on bad input: a probe that cannot run is a
/// critical result whose output says why.
pub trait Prober: Send + Sync + std::fmt::Debug + 'static {
    /// Run `probe` for the check `check_id` (the ID lets a scripted prober answer per check).
    fn probe<'a>(&'a self, check_id: &'a str, probe: &'a Probe) -> ProbeFuture<'a>;
}

/// A prober whose answers are set per check ID at run time, for the simulator and tests. It
/// answers at once, touches nothing outside itself, and is deterministic: the same settings give
/// the same answers. Clones share their settings, so one clone can be handed to the runner and
/// another kept as the handle that changes outcomes.
#[derive(Debug, Clone)]
pub struct ScriptedProber {
    inner: Arc<Mutex<Scripted>>,
}

#[derive(Debug)]
struct Scripted {
    default: ProbeResult,
    outcomes: BTreeMap<String, ProbeResult>,
    /// Probes run per check, so tests can wait for "probed again" without sleeping.
    runs: BTreeMap<String, u64>,
}

impl ScriptedProber {
    /// A prober answering `default` for every check not given an outcome with [`Self::set`].
    pub fn new(default: ProbeResult) -> Self {
        let scripted = Scripted { default, outcomes: BTreeMap::new(), runs: BTreeMap::new() };
        ScriptedProber { inner: Arc::new(Mutex::new(scripted)) }
    }

    /// From now on, probes of `check_id` answer `status` with `output`.
    pub fn set(&self, check_id: &str, status: CheckStatus, output: impl Into<String>) {
        let mut scripted = self.lock();
        scripted.outcomes.insert(check_id.to_owned(), ProbeResult::new(status, output));
    }

    /// Probes of `check_id` answer the default again.
    pub fn clear(&self, check_id: &str) {
        self.lock().outcomes.remove(check_id);
    }

    /// How many times `check_id` has been probed.
    pub fn runs(&self, check_id: &str) -> u64 {
        self.lock().runs.get(check_id).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Scripted> {
        // Nothing panics while holding the lock, so poisoning cannot happen; recover anyway.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Prober for ScriptedProber {
    fn probe<'a>(&'a self, check_id: &'a str, _probe: &'a Probe) -> ProbeFuture<'a> {
        let mut scripted = self.lock();
        *scripted.runs.entry(check_id.to_owned()).or_insert(0) += 1;
        let result = scripted.outcomes.get(check_id).unwrap_or(&scripted.default).clone();
        Box::pin(std::future::ready(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp() -> Probe {
        Probe::Tcp { address: "127.0.0.1:1".into(), timeout: Duration::from_secs(1) }
    }

    /// The scripted prober answers per check, falls back to its default, and counts runs.
    #[tokio::test]
    async fn scripted_outcomes_per_check() {
        let prober = ScriptedProber::new(ProbeResult::new(CheckStatus::Passing, "ok"));
        let handle = prober.clone();
        handle.set("db", CheckStatus::Critical, "down");
        assert_eq!(prober.probe("web", &tcp()).await, ProbeResult::new(CheckStatus::Passing, "ok"));
        assert_eq!(prober.probe("db", &tcp()).await, ProbeResult::critical("down"));
        handle.clear("db");
        assert_eq!(prober.probe("db", &tcp()).await.status, CheckStatus::Passing);
        assert_eq!((handle.runs("db"), handle.runs("web"), handle.runs("x")), (2, 1, 0));
    }

    /// TTL and alias checks have no probe; the others carry their settings and interval over.
    #[test]
    fn probes_of_kinds() {
        assert_eq!(Probe::of_kind(&CheckKind::Ttl { ttl: Duration::from_secs(5) }), None);
        assert_eq!(Probe::of_kind(&CheckKind::Alias { service: Some("a".into()), node: None }), None);
        let kind =
            CheckKind::Tcp { address: "h:1".into(), interval: Duration::from_secs(7), timeout: Duration::from_secs(2) };
        let (probe, interval) = Probe::of_kind(&kind).unwrap();
        assert_eq!(interval, Duration::from_secs(7));
        assert_eq!(probe.timeout(), Duration::from_secs(2));
    }
}
