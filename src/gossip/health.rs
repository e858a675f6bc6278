//! Local health awareness (Lifeguard's "LHA", memberlist's `awareness`).
//!
//! A member that is itself slow (starved of CPU, its network queue backed up) sees its own probes
//! go unanswered and would suspect healthy peers. So each agent keeps a score of how much it
//! distrusts itself, from 0 (healthy) to [`MAX_SCORE`]:
//! - +1 when one of our probes ended without an ack, direct or forwarded, and the member turned
//!   out to be alive after all (once the cluster had time to declare it down, it is not);
//! - +1 when we have to refute a suspicion about ourselves (the cluster could not reach us);
//! - +1 when a timer fires late by more than the tolerance (the runtime is starved);
//! - -1 when a probe is acked.
//!
//! A probe that misses a member that really died is not our fault and costs nothing: memberlist
//! tells the two apart by the nacks of the indirect probers, which foca's protocol does not have,
//! so the verdict waits for the cluster's. Counting every miss would make every agent distrust
//! itself whenever a few peers die, and stretch the very timers that should declare them down
//! (the `node-failure-catalog` scenario saw a crashed agent stay alive for 20 s that way).
//!
//! The driver multiplies the probe period, the probe timeout and the suspect-to-down timeout it
//! hands to foca's timers by [`LocalHealth::multiplier`] (`1 + score`): a starved agent probes
//! less often and waits longer before declaring anyone down, instead of accusing healthy peers.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::identity::NodeIdentity;
use super::MemberStatus;

pub const MAX_SCORE: u8 = 8;
/// Most unanswered probes awaiting a verdict; older ones are forgotten (a probe starts at most
/// once per probe period, so this covers far more than one suspicion timeout).
const MAX_PENDING_MISSES: usize = 32;

#[derive(Debug, Default)]
pub(crate) struct LocalHealth {
    score: u8,
    /// The member under probe and whether it answered.
    probe: Option<(NodeIdentity, bool)>,
    /// Members our probes missed, and when: judged once the cluster has had time to decide.
    missed: VecDeque<(NodeIdentity, Instant)>,
}

impl LocalHealth {
    pub(crate) fn score(&self) -> u8 {
        self.score
    }

    pub(crate) fn multiplier(&self) -> u32 {
        1 + u32::from(self.score)
    }

    /// A new probe starts; the previous one's outcome is final.
    pub(crate) fn probe_started(&mut self, target: NodeIdentity, now: Instant) {
        if let Some((missed, false)) = self.probe.replace((target, false)) {
            if self.missed.len() == MAX_PENDING_MISSES {
                self.missed.pop_front();
            }
            self.missed.push_back((missed, now));
        }
    }

    /// Judge the misses older than `decided_within` (the time the cluster needs to declare a
    /// member down): one whose member is still alive was our fault. `status` gives a member's
    /// status now, by identity (`None`: gone from the view). Undecided ones (suspect) wait, up to
    /// twice as long.
    pub(crate) fn judge_misses(
        &mut self,
        now: Instant,
        decided_within: Duration,
        status: impl Fn(&NodeIdentity) -> Option<MemberStatus>,
    ) {
        let mut ours = 0;
        self.missed.retain(|(member, at)| {
            let age = now.saturating_duration_since(*at);
            if age < decided_within {
                return true;
            }
            match status(member) {
                Some(MemberStatus::Alive) => {
                    ours += 1;
                    false
                }
                Some(MemberStatus::Suspect) => age < decided_within * 2,
                _ => false,
            }
        });
        for _ in 0..ours {
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

    const DECIDED_WITHIN: Duration = Duration::from_secs(5);

    /// Missing a member that turns out alive raises the score (up to its cap); answered probes
    /// lower it; only the probed member's ack counts.
    #[tokio::test]
    async fn misses_of_live_members_raise_the_score() {
        let mut health = LocalHealth::default();
        let start = Instant::now();
        for _ in 0..20 {
            health.probe_started(id("a"), start);
        }
        assert_eq!(health.score(), 0, "no verdict before the cluster had time to decide");
        health.judge_misses(start + DECIDED_WITHIN, DECIDED_WITHIN, |_| Some(MemberStatus::Alive));
        // 19 probes ended unanswered (the 20th is still running), all of a live member.
        assert_eq!(health.score(), MAX_SCORE);
        assert_eq!(health.multiplier(), 9);
        health.acked_by(&id("b"));
        assert_eq!(health.score(), MAX_SCORE);
        health.acked_by(&id("a"));
        health.acked_by(&id("a"));
        assert_eq!(health.score(), MAX_SCORE - 1, "one probe, one credit");
        health.probe_started(id("b"), start);
        health.judge_misses(start + DECIDED_WITHIN, DECIDED_WITHIN, |_| Some(MemberStatus::Alive));
        assert_eq!(health.score(), MAX_SCORE - 1, "an answered probe is not a failure");
    }

    /// Missing members that the cluster then declares failed (or that leave, or vanish) costs
    /// nothing: they were dead, not us slow. A suspect one is judged later.
    #[tokio::test]
    async fn misses_of_dead_members_cost_nothing() {
        let mut health = LocalHealth::default();
        let start = Instant::now();
        for name in ["dead", "left", "gone", "suspect", "next"] {
            health.probe_started(id(name), start);
        }
        let status = |suspect_becomes: MemberStatus| {
            move |member: &NodeIdentity| match member.name() {
                "dead" => Some(MemberStatus::Failed),
                "left" => Some(MemberStatus::Left),
                "suspect" => Some(suspect_becomes),
                _ => None,
            }
        };
        health.judge_misses(start + DECIDED_WITHIN, DECIDED_WITHIN, status(MemberStatus::Suspect));
        assert_eq!(health.score(), 0);
        health.judge_misses(
            start + DECIDED_WITHIN + Duration::from_secs(1),
            DECIDED_WITHIN,
            status(MemberStatus::Alive),
        );
        assert_eq!(health.score(), 1, "the suspect refuted: that miss was ours");
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
