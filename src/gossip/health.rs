//! Local health awareness (Lifeguard's "LHA", memberlist's `awareness`).
//!
//! A member that is itself slow (starved of CPU, its network queue backed up) sees its own probes
//! go unanswered and would suspect healthy peers. So each agent keeps a score of how much it
//! distrusts itself, from 0 (healthy) to [`MAX_SCORE`]:
//! - +1 when one of our probes ends without an ack, direct or forwarded;
//! - +1 when we have to refute a suspicion about ourselves (the cluster could not reach us);
//! - +1 when a timer fires late by more than the tolerance (the runtime is starved);
//! - -1 when a probe is acked.
//!
//! The driver multiplies the probe period, the probe timeout and the suspect-to-down timeout it
//! hands to foca's timers by [`LocalHealth::multiplier`] (`1 + score`): a starved agent probes
//! less often and waits longer before declaring anyone down, instead of accusing healthy peers.

use std::time::Duration;

use super::identity::NodeIdentity;

pub const MAX_SCORE: u8 = 8;

#[derive(Debug, Default)]
pub(crate) struct LocalHealth {
    score: u8,
    /// The member under probe and whether it answered.
    probe: Option<(NodeIdentity, bool)>,
}

impl LocalHealth {
    pub(crate) fn score(&self) -> u8 {
        self.score
    }

    pub(crate) fn multiplier(&self) -> u32 {
        1 + u32::from(self.score)
    }

    /// A new probe starts; the previous one's outcome is final.
    pub(crate) fn probe_started(&mut self, target: NodeIdentity) {
        if let Some((_, false)) = self.probe.replace((target, false)) {
            self.worsen();
        }
    }

    /// An ack (direct, or forwarded by an indirect prober) from `from` arrived.
    pub(crate) fn acked_by(&mut self, from: &NodeIdentity) {
        if let Some((target, acked @ false)) = &mut self.probe {
            if target == from {
                *acked = true;
                self.score = self.score.saturating_sub(1);
            }
        }
    }

    /// Someone suspected us and we had to refute it.
    pub(crate) fn refuted(&mut self) {
        self.worsen();
    }

    /// A timer fired `lateness` after its deadline.
    pub(crate) fn timer_fired_late(&mut self, lateness: Duration, tolerance: Duration) {
        if lateness > tolerance {
            self.worsen();
        }
    }

    fn worsen(&mut self) {
        self.score = (self.score + 1).min(MAX_SCORE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::{MemberMeta, Role};

    fn id(name: &str) -> NodeIdentity {
        let meta = MemberMeta {
            role: Role::Client,
            datacenter: "dc1".into(),
            node_id: String::new(),
            server_port: None,
            build: String::new(),
            protocol: 1,
        };
        NodeIdentity::new(name, "127.0.0.1:1".parse().unwrap(), meta, 0)
    }

    /// Unanswered probes raise the score up to its cap; answered ones lower it; only the probed
    /// member's ack counts.
    #[test]
    fn score_follows_probe_outcomes() {
        let mut health = LocalHealth::default();
        for _ in 0..20 {
            health.probe_started(id("a"));
        }
        // 19 probes ended unanswered (the 20th is still running).
        assert_eq!(health.score(), MAX_SCORE);
        assert_eq!(health.multiplier(), 9);
        health.acked_by(&id("b"));
        assert_eq!(health.score(), MAX_SCORE);
        health.acked_by(&id("a"));
        health.acked_by(&id("a"));
        assert_eq!(health.score(), MAX_SCORE - 1, "one probe, one credit");
        health.probe_started(id("b"));
        assert_eq!(health.score(), MAX_SCORE - 1, "an answered probe is not a failure");
    }

    #[test]
    fn refutes_and_late_timers_raise_score() {
        let mut health = LocalHealth::default();
        health.refuted();
        health.timer_fired_late(Duration::from_millis(10), Duration::from_millis(100));
        assert_eq!(health.score(), 1);
        health.timer_fired_late(Duration::from_millis(101), Duration::from_millis(100));
        assert_eq!(health.score(), 2);
    }
}
