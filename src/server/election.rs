//! When a server starts an election: our timer, not openraft's.
//!
//! openraft 0.9 draws one election timeout per node at startup and checks it only on its tick
//! (every 1.5 heartbeats, 75 ms by default). With timeouts in 150-300 ms that leaves two effective
//! values, so two servers whose ticks line up time out together in every round and split the vote
//! forever: the simulator found five servers stuck as candidates for seconds after a partition
//! healed (`partition-heal` seed 14). Raft's liveness argument needs a fresh random timeout per
//! round, measured precisely; this timer gives that and asks openraft to elect
//! (`trigger().elect()`), with openraft's own election switched off (`enable_elect = false`).
//!
//! The timing otherwise matches openraft's: a server that followed a leader waits the leader
//! lease (the maximum election timeout; voters refuse candidates within it) plus the random
//! timeout after it last heard from the leader; a candidate, or a server that granted a vote,
//! waits the random timeout after its vote last changed; and a candidate that a voter refused for
//! having a shorter log waits twice the maximum longer, so a server that can win stands first
//! (without that back-off the simulator saw failovers of 3-4 s, two candidates trading terms).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::Server;
use crate::config::RaftSettings;
use crate::raft::network::PeerFeedback;
use crate::raft::ServerState;

/// When the next election is due.
fn election_deadline(last_activity: Instant, followed_leader: bool, lease: Duration, timeout: Duration) -> Instant {
    let lease = if followed_leader { lease } else { Duration::ZERO };
    last_activity + lease + timeout
}

/// A random timeout in `[min, max)`, drawn per round.
fn draw_timeout(settings: &RaftSettings) -> Duration {
    let min = settings.election_timeout_min.as_micros() as u64;
    let max = settings.election_timeout_max.as_micros() as u64;
    let span = max.saturating_sub(min).max(1);
    Duration::from_micros(min + crate::io::random_seed() % span)
}

/// Run until Raft shuts down.
pub async fn run(server: Arc<Server>, settings: RaftSettings, feedback: Arc<PeerFeedback>) {
    let lease = settings.election_timeout_max;
    let mut metrics = server.raft().metrics();
    let mut last_vote = metrics.borrow().vote;
    let mut vote_changed_at = Instant::now();
    let mut timeout = draw_timeout(&settings);
    loop {
        let (followed_leader, leads) = {
            let m = metrics.borrow();
            (m.vote.is_committed(), m.state == ServerState::Leader)
        };
        let activity = vote_changed_at.max(server.leader_contact_at());
        let deadline = election_deadline(activity, followed_leader, lease, timeout);
        tokio::select! {
            changed = metrics.changed() => {
                if changed.is_err() {
                    return;
                }
                let vote = metrics.borrow_and_update().vote;
                if vote != last_vote {
                    last_vote = vote;
                    vote_changed_at = Instant::now();
                }
                continue;
            }
            _ = tokio::time::sleep_until(deadline) => {}
        }
        // The leader may have been heard while this task slept.
        if Instant::now() < election_deadline(server.leader_contact_at(), followed_leader, lease, timeout) {
            continue;
        }
        // Answers to our last round's vote requests have all arrived (they time out within the
        // minimum election timeout): if one showed a longer log, let its owner stand first.
        if feedback.take_greater_log_seen() {
            timeout += settings.election_timeout_max * 2;
            continue;
        }
        if !leads && server.raft().trigger().elect().await.is_err() {
            return;
        }
        vote_changed_at = Instant::now();
        timeout = draw_timeout(&settings);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_of_a_leader_waits_out_the_lease_first() {
        let now = Instant::now();
        let (lease, timeout) = (Duration::from_millis(300), Duration::from_millis(200));
        assert_eq!(election_deadline(now, true, lease, timeout), now + Duration::from_millis(500));
        assert_eq!(election_deadline(now, false, lease, timeout), now + Duration::from_millis(200));
    }

    #[test]
    fn timeouts_are_drawn_fresh_within_the_range() {
        let settings = RaftSettings::default();
        let draws: std::collections::BTreeSet<Duration> = (0..64).map(|_| draw_timeout(&settings)).collect();
        assert!(draws.iter().all(|d| *d >= settings.election_timeout_min && *d < settings.election_timeout_max));
        // 64 draws at microsecond resolution from a 150 ms range: collisions would mean a broken source.
        assert!(draws.len() > 60, "only {} distinct timeouts in 64 draws", draws.len());
    }
}
