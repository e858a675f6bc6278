//! openraft's state machine over [`crate::state::State`], with snapshots on the node's disk.
//!
//! The state itself lives in memory and is rebuilt at start from the newest snapshot; openraft then
//! re-applies the committed log entries after it. Readers (the HTTP API) see the state through a
//! [`StateHandle`], which also announces every applied index so reads can wait for one.

use std::io::Cursor;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageIOError, StoredMembership};
use tokio::sync::watch;

use super::snapshot_store::SnapshotStore;
use super::{Entry, LogId, NodeId, ServerInfo, StorageError, TypeConfig};
use crate::state::{Outcome, State};

/// Shared, read-mostly access to the applied state, and a signal for each applied index.
#[derive(Debug, Clone)]
pub struct StateHandle {
    state: Arc<RwLock<State>>,
    applied: Arc<watch::Sender<u64>>,
}

impl StateHandle {
    fn new(state: State) -> Self {
        let index = state.last_index();
        StateHandle { state: Arc::new(RwLock::new(state)), applied: Arc::new(watch::channel(index).0) }
    }

    /// The applied state. Hold the guard briefly and never across an `.await`.
    pub fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().expect("state lock poisoned: a panic while applying is a bug")
    }

    /// The index of the last applied entry.
    pub fn applied_index(&self) -> u64 {
        *self.applied.borrow()
    }

    /// A receiver that sees every change of the applied index.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    fn replace(&self, state: State) {
        let index = state.last_index();
        *self.state.write().expect("state lock poisoned") = state;
        self.applied.send_replace(index);
    }
}

/// The state machine openraft drives.
#[derive(Debug, Clone)]
pub struct StateMachine {
    handle: StateHandle,
    snapshots: Arc<SnapshotStore>,
    last_applied: Option<LogId>,
    membership: StoredMembership<NodeId, ServerInfo>,
}

impl StateMachine {
    /// Restore from the newest snapshot on `snapshots`' disk, or start empty.
    pub fn open(snapshots: SnapshotStore) -> Result<Self, crate::storage::DiskError> {
        let (state, last_applied, membership) = match snapshots.load_latest()? {
            Some((meta, data)) => {
                let state = State::from_snapshot(&data).map_err(|e| crate::storage::DiskError::Corrupt {
                    name: format!("snapshot {}", meta.snapshot_id),
                    offset: 0,
                    reason: e.to_string(),
                })?;
                (state, meta.last_log_id, meta.last_membership)
            }
            None => (State::default(), None, StoredMembership::default()),
        };
        Ok(StateMachine { handle: StateHandle::new(state), snapshots: Arc::new(snapshots), last_applied, membership })
    }

    pub fn handle(&self) -> StateHandle {
        self.handle.clone()
    }
}

fn read_error(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_snapshot(None, &e).into()
}

fn write_error(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write_snapshot(None, &e).into()
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let data = self.handle.read().to_snapshot();
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id: snapshot_id(self.last_applied),
        };
        self.snapshots.save(&meta, &data).map_err(write_error)?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

fn snapshot_id(last: Option<LogId>) -> String {
    match last {
        Some(id) => format!("{}-{}", id.leader_id.term, id.index),
        None => "0-0".into(),
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership<NodeId, ServerInfo>), StorageError> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<Outcome>>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut outcomes = Vec::new();
        {
            let mut state = self.handle.state.write().expect("state lock poisoned");
            for entry in entries {
                let index = entry.log_id.index;
                self.last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Normal(commands) => outcomes.push(state.apply_batch(index, &commands)),
                    EntryPayload::Blank | EntryPayload::Membership(_) => {
                        if let EntryPayload::Membership(membership) = entry.payload {
                            self.membership = StoredMembership::new(Some(entry.log_id), membership);
                        }
                        // openraft's first entry (the initial membership) has index 0, which the
                        // state's index, starting at 0, already covers.
                        if index > state.last_index() {
                            state.advance(index);
                        }
                        outcomes.push(Vec::new());
                    }
                }
            }
        }
        if let Some(last) = self.last_applied {
            self.handle.applied.send_replace(last.index);
        }
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, ServerInfo>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let state = State::from_snapshot(&data).map_err(read_error)?;
        // Persist before replacing: if we crash in between, we restart from this snapshot.
        self.snapshots.save(meta, &data).map_err(write_error)?;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.handle.replace(state);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let latest = self.snapshots.load_latest().map_err(read_error)?;
        Ok(latest.map(|(meta, data)| Snapshot { meta, snapshot: Box::new(Cursor::new(data)) }))
    }
}
