//! The shape both gossip-driven leader duties share (the Raft configuration in
//! [`super::membership`], the catalog in [`crate::reconcile`]): while this server leads, run a
//! round right after it becomes leader (its predecessor may have died mid-way), on every change
//! of the gossip view, and every `interval` (for what gossip does not announce: time passing,
//! replication progress).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Server;
use crate::gossip::Membership;
use crate::raft::ServerState;

/// Run `round` against the gossip view as described above, until Raft or the view shuts down.
/// `duty` names the work in logs.
pub async fn while_leading<F, Fut>(
    server: Arc<Server>,
    mut membership: watch::Receiver<Membership>,
    interval: Duration,
    duty: &'static str,
    mut round: F,
) where
    F: FnMut(Arc<Server>, Membership) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut metrics = server.raft().metrics();
    loop {
        let term = match metrics.wait_for(|m| m.state == ServerState::Leader).await {
            Ok(m) => m.current_term,
            Err(_) => return,
        };
        tracing::info!(term, duty, "leading: following gossip");
        loop {
            let gossip = membership.borrow_and_update().clone();
            round(server.clone(), gossip).await;
            let lost_leadership = metrics.wait_for(|m| m.state != ServerState::Leader || m.current_term != term);
            tokio::select! {
                biased;
                lost = lost_leadership => {
                    if lost.is_err() {
                        return;
                    }
                    break;
                }
                changed = membership.changed() => {
                    if changed.is_err() {
                        tracing::info!(duty, "gossip view closed; stopping");
                        return;
                    }
                }
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}
