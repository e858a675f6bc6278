//! Group commit for writes: concurrent writes to the leader become one Raft entry.
//!
//! openraft 0.9 appends (and fsyncs) each proposed entry on its own, so without batching every
//! write costs one fsync on the leader and one on each follower. The batcher takes every write
//! queued while earlier batches are in flight and proposes them together; the state machine applies
//! them in order at the entry's index (`State::apply_batch`). Under no load a batch is one write,
//! so latency does not grow; under load, batches grow and fsyncs per write fall.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::raft::Raft;
use crate::rpc::message::{LeaderError, WriteReply};
use crate::state::{Command, KvCommand};

/// Most commands in one entry.
pub const MAX_BATCH_COMMANDS: usize = 512;
/// Most value bytes in one entry (a few large values fill it; the RPC frame limit is far above).
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Batches proposed but not yet committed. More than one keeps the pipeline busy while a batch
/// waits on replication; few enough that batches still grow under load.
const MAX_BATCHES_IN_FLIGHT: usize = 2;
/// Writes waiting for a batch; beyond this, submitters wait (backpressure, bounded memory).
const QUEUE_CAPACITY: usize = 8192;

type Reply = oneshot::Sender<Result<WriteReply, LeaderError>>;

/// The submitting side, held by the server.
#[derive(Debug, Clone)]
pub struct Batcher {
    queue: mpsc::Sender<(Command, Reply)>,
}

impl Batcher {
    /// Start the batching task for `raft`; each batch may take `commit_timeout` to commit.
    pub fn start(raft: Raft, commit_timeout: Duration) -> Batcher {
        let (queue, pending) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(run(raft, pending, commit_timeout));
        Batcher { queue }
    }

    /// Propose `command` in the next batch and wait for its outcome.
    pub async fn submit(&self, command: Command) -> Result<WriteReply, LeaderError> {
        let (reply, outcome) = oneshot::channel();
        if self.queue.send((command, reply)).await.is_err() {
            return Err(LeaderError::Stopped("the write batcher stopped".into()));
        }
        outcome.await.unwrap_or_else(|_| Err(LeaderError::Stopped("the write batcher dropped a write".into())))
    }

    /// Queue `commands` in order, then wait for all their outcomes (in the same order). Queued
    /// together, they share batches: consecutive commands land in one entry, in order, up to the
    /// batch limits, without a task per write.
    pub async fn submit_all(&self, commands: Vec<Command>) -> Vec<Result<WriteReply, LeaderError>> {
        let mut pending = Vec::with_capacity(commands.len());
        for command in commands {
            let (reply, outcome) = oneshot::channel();
            let queued = self.queue.send((command, reply)).await.is_ok();
            pending.push(queued.then_some(outcome));
        }
        let mut outcomes = Vec::with_capacity(pending.len());
        for outcome in pending {
            outcomes.push(match outcome {
                None => Err(LeaderError::Stopped("the write batcher stopped".into())),
                Some(outcome) => outcome
                    .await
                    .unwrap_or_else(|_| Err(LeaderError::Stopped("the write batcher dropped a write".into()))),
            });
        }
        outcomes
    }
}

async fn run(raft: Raft, mut pending: mpsc::Receiver<(Command, Reply)>, commit_timeout: Duration) {
    let in_flight = Arc::new(Semaphore::new(MAX_BATCHES_IN_FLIGHT));
    while let Some(first) = pending.recv().await {
        let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
        // Everything that queued while we waited for a slot joins this batch.
        let mut batch = vec![first];
        let mut bytes = command_bytes(&batch[0].0);
        while batch.len() < MAX_BATCH_COMMANDS && bytes < MAX_BATCH_BYTES {
            match pending.try_recv() {
                Ok(next) => {
                    bytes += command_bytes(&next.0);
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            propose(&raft, batch, commit_timeout).await;
            drop(permit);
        });
    }
}

async fn propose(raft: &Raft, batch: Vec<(Command, Reply)>, commit_timeout: Duration) {
    let (commands, replies): (Vec<Command>, Vec<Reply>) = batch.into_iter().unzip();
    let result = match crate::io::timeout(commit_timeout, raft.client_write(commands)).await {
        Err(_) => Err(LeaderError::Timeout),
        Ok(Ok(response)) => Ok((response.data, response.log_id.index)),
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
            Err(LeaderError::NotLeader { leader: f.leader_node })
        }
        Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e)))) => {
            unreachable!("a batch of commands cannot fail with a membership error: {e}")
        }
        Ok(Err(RaftError::Fatal(fatal))) => Err(LeaderError::Stopped(fatal.to_string())),
    };
    match result {
        Ok((outcomes, index)) => {
            debug_assert_eq!(outcomes.len(), replies.len(), "one outcome per command");
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(Ok(WriteReply { outcome, index }));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

/// The bytes a command adds to an entry, roughly: enough to bound batches by size.
fn command_bytes(command: &Command) -> usize {
    match command {
        Command::Kv(KvCommand::Set { key, value, .. } | KvCommand::Cas { key, value, .. }) => key.len() + value.len(),
        Command::Kv(_) => 64,
        Command::Catalog(_) => 512,
    }
}
