//! Anti-entropy: keeps the catalog's entries for this agent's node equal to the agent's own
//! services and checks ([`Registry`]), as Consul's agent does.
//!
//! - A change is written at once: the registry wakes this loop, which writes what is owed.
//! - A full sync reads what the catalog holds for the node and repairs drift both ways (entries
//!   lost or changed in the catalog are written again, entries the agent does not have are
//!   removed). It runs at start and then every [`FULL_SYNC_INTERVAL`], scaled with the size of the
//!   cluster as Consul scales it (so 10,000 agents do not read the catalog 10,000 times a
//!   minute), plus a random stagger.
//! - A failed attempt is retried with exponential backoff and jitter, from
//!   [`RETRY_BACKOFF_MIN`] up to [`RETRY_BACKOFF_MAX`]; the failure and its count show in
//!   `/v1/agent/self`.

use std::sync::Arc;
use std::time::Duration;

use rand08::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Backend, CatalogCallError, Registry};
use crate::gossip::Membership;
use crate::state::Outcome;

/// Consul's anti-entropy interval for clusters of up to [`SCALE_THRESHOLD`] nodes.
pub const FULL_SYNC_INTERVAL: Duration = Duration::from_secs(60);
/// Above this many nodes the full-sync interval grows with log2 of the cluster size.
pub const SCALE_THRESHOLD: usize = 128;
pub const RETRY_BACKOFF_MIN: Duration = Duration::from_secs(1);
pub const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Consul's `aeScale`: the interval, times one more for each doubling of the cluster beyond 128
/// nodes (256 nodes: 2x, 512: 3x, 8,192: 7x).
pub fn scaled_interval(interval: Duration, nodes: usize) -> Duration {
    if nodes <= SCALE_THRESHOLD {
        return interval;
    }
    let doublings = ((nodes as f64).log2() - (SCALE_THRESHOLD as f64).log2()).ceil() as u32;
    interval * (doublings + 1)
}

/// The wait after `failures` consecutive failures: doubling from the minimum, capped, and then
/// drawn uniformly from its upper half so agents that failed together retry apart.
pub fn backoff(failures: u32, rng: &mut impl Rng) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    let full = RETRY_BACKOFF_MIN.saturating_mul(1 << exponent).min(RETRY_BACKOFF_MAX);
    full / 2 + full.mul_f64(rng.gen_range(0.0..0.5))
}

/// Why one sync attempt stopped.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Call(#[from] CatalogCallError),
    /// The catalog refused a write (an invalid registration): nothing was applied.
    #[error("the catalog refused {what}: {why}")]
    Rejected { what: String, why: String },
}

/// Run anti-entropy for `registry` until the task is dropped.
pub async fn run(registry: Arc<Registry>, backend: Backend, membership: watch::Receiver<Membership>) {
    let mut rng = rand08::rngs::StdRng::seed_from_u64(crate::io::random_seed());
    let mut next_full = Instant::now();
    let mut retry_at: Option<Instant> = None;
    loop {
        // While backing off, only the retry time counts: an overdue full sync must not wake the
        // loop over and over before it.
        let wake = match retry_at {
            Some(at) => at,
            None => registry.next_output_due().map_or(next_full, |due| due.min(next_full)),
        };
        tokio::select! {
            biased;
            _ = registry.changed() => {}
            _ = tokio::time::sleep_until(wake) => {}
        }
        let now = Instant::now();
        if retry_at.is_some_and(|at| now < at) {
            continue;
        }
        let full = now >= next_full;
        match sync_once(&registry, &backend, full).await {
            Ok(()) => {
                retry_at = None;
                if full {
                    let nodes = membership.borrow().len();
                    let interval = scaled_interval(FULL_SYNC_INTERVAL, nodes);
                    next_full = now + interval + interval.mul_f64(rng.gen_range(0.0..0.25));
                }
                registry.update_status(|status| {
                    status.last_success = Some(now);
                    if full {
                        status.last_full_sync = Some(now);
                    }
                    status.last_error = None;
                    status.failures = 0;
                });
            }
            Err(e) => {
                let mut failures = 0;
                registry.update_status(|status| {
                    status.failures += 1;
                    status.last_error = Some(e.to_string());
                    failures = status.failures;
                });
                let wait = backoff(failures, &mut rng);
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, full, "anti-entropy sync failed");
                retry_at = Some(now + wait);
            }
        }
    }
}

/// One attempt: read the catalog first if `full`, then write everything owed.
async fn sync_once(registry: &Registry, backend: &Backend, full: bool) -> Result<(), SyncError> {
    if full {
        let node = registry.node();
        let remote = backend.node_entries(&node.name).await?;
        registry.compare_with(&remote);
    }
    let mut rejected = None;
    for op in registry.pending(Instant::now()) {
        let Some((command, covers)) = registry.command(&op) else { continue };
        let reply = backend.catalog_write(command).await?;
        match reply.outcome {
            Outcome::Rejected(why) => {
                tracing::warn!(?op, %why, "the catalog refused a sync write");
                rejected = Some(SyncError::Rejected { what: format!("{op:?}"), why });
            }
            _ => registry.synced(&covers),
        }
    }
    rejected.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_scales_with_log2_of_the_cluster_beyond_128_nodes() {
        let minute = Duration::from_secs(60);
        assert_eq!(scaled_interval(minute, 1), minute);
        assert_eq!(scaled_interval(minute, 128), minute);
        assert_eq!(scaled_interval(minute, 129), minute * 2);
        assert_eq!(scaled_interval(minute, 256), minute * 2);
        assert_eq!(scaled_interval(minute, 512), minute * 3);
        assert_eq!(scaled_interval(minute, 8192), minute * 7);
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let mut rng = rand08::rngs::StdRng::seed_from_u64(7);
        for failures in 1..40 {
            let full = RETRY_BACKOFF_MIN.saturating_mul(1 << (failures - 1).min(16)).min(RETRY_BACKOFF_MAX);
            let wait = backoff(failures, &mut rng);
            assert!(
                wait >= full / 2 && wait <= full,
                "failures {failures}: {wait:?} outside {:?}..={full:?}",
                full / 2
            );
        }
        assert!(backoff(100, &mut rng) <= RETRY_BACKOFF_MAX);
    }
}
