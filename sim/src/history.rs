//! The KV history as the simulator's workload clients saw it.
//!
//! A history records what clients observed, not what the cluster did: each operation has the time
//! its client sent it, and either the time and result of its reply, or the admission that the client
//! does not know (the request timed out or the connection dropped). Checkers judge the cluster from
//! this record alone, so it must never claim more than a client could have known.
//!
//! Recording is two-phase because clients overlap in simulated time: a client calls
//! [`History::invoke`] when it sends a request and resolves the returned [`OpId`] later with
//! [`History::complete`], [`History::indeterminate`] or [`History::failed`]. An operation still
//! unresolved when the run ends is indeterminate, which is exactly what its client knows about it.
//! Several simulated clients share one history behind `Arc<Mutex<History>>`.

use std::fmt;

/// Which workload client issued an operation.
pub type ClientId = u32;

/// Simulated time in milliseconds since the start of the run.
pub type SimMillis = u64;

/// A request to the cluster's KV API.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvOp {
    Put { key: String, value: String },
    Get { key: String },
    Delete { key: String },
}

impl KvOp {
    /// The key this operation reads or writes; keys are independent registers.
    pub fn key(&self) -> &str {
        match self {
            KvOp::Put { key, .. } | KvOp::Get { key } | KvOp::Delete { key } => key,
        }
    }
}

/// A reply the cluster acknowledged. `GetOk(None)` means the key was absent.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KvResult {
    PutOk,
    GetOk(Option<String>),
    DeleteOk,
}

/// What the client learned about an operation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The cluster replied at `complete_ms`; the operation took effect somewhere in
    /// `[invoke_ms, complete_ms]`.
    Ok { complete_ms: SimMillis, result: KvResult },
    /// No reply (timeout, connection lost, or still in flight when the run ended): the operation may
    /// or may not have taken effect, at any time after it was invoked.
    Indeterminate,
    /// The server said it did not happen (e.g. "no leader" before the write was submitted).
    Failed,
}

/// One operation as its client recorded it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Operation {
    pub client: ClientId,
    pub op: KvOp,
    pub invoke_ms: SimMillis,
    pub outcome: Outcome,
}

/// Names an operation in a [`History`]; handed out by [`History::invoke`] and [`History::push`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(usize);

impl OpId {
    /// Position of the operation in [`History::ops`], in invocation-recording order.
    pub fn index(self) -> usize {
        self.0
    }
}

impl fmt::Display for OpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// All operations of a run, in the order they were invoked (recorded).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    ops: Vec<Operation>,
}

impl History {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `client` sent `op` at `invoke_ms`. Until resolved, the operation is
    /// indeterminate, so a client that never hears back need not do anything more.
    pub fn invoke(&mut self, client: ClientId, op: KvOp, invoke_ms: SimMillis) -> OpId {
        self.push(Operation { client, op, invoke_ms, outcome: Outcome::Indeterminate })
    }

    /// Records the cluster's reply to `id`, received at `complete_ms`.
    pub fn complete(&mut self, id: OpId, complete_ms: SimMillis, result: KvResult) {
        let Some(operation) = self.unresolved_mut(id) else { return };
        debug_assert!(complete_ms >= operation.invoke_ms, "{id} completed at {complete_ms} before it was invoked");
        debug_assert!(result_fits(&operation.op, &result), "{id} is {:?} but got reply {result:?}", operation.op);
        operation.outcome = Outcome::Ok { complete_ms, result };
    }

    /// Records that the client gave up on `id` without knowing whether it took effect.
    pub fn indeterminate(&mut self, id: OpId) {
        if let Some(operation) = self.unresolved_mut(id) {
            operation.outcome = Outcome::Indeterminate;
        }
    }

    /// Records that the cluster refused `id` before it could take effect.
    pub fn failed(&mut self, id: OpId) {
        if let Some(operation) = self.unresolved_mut(id) {
            operation.outcome = Outcome::Failed;
        }
    }

    /// Appends a fully recorded operation as is, without the recording checks: for histories
    /// loaded from elsewhere or written by hand. Checkers tolerate malformed entries.
    pub fn push(&mut self, operation: Operation) -> OpId {
        self.ops.push(operation);
        OpId(self.ops.len() - 1)
    }

    pub fn get(&self, id: OpId) -> Option<&Operation> {
        self.ops.get(id.0)
    }

    pub fn ops(&self) -> &[Operation] {
        &self.ops
    }

    pub fn iter(&self) -> impl Iterator<Item = (OpId, &Operation)> {
        self.ops.iter().enumerate().map(|(index, operation)| (OpId(index), operation))
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The operation `id`, if it may still be resolved. Resolving an unknown id or resolving twice
    /// is a bug in the workload, not something a run can cause.
    fn unresolved_mut(&mut self, id: OpId) -> Option<&mut Operation> {
        let operation = self.ops.get_mut(id.0);
        debug_assert!(operation.is_some(), "{id} was never invoked");
        let operation = operation?;
        debug_assert!(
            operation.outcome == Outcome::Indeterminate,
            "{id} resolved twice: already {:?}",
            operation.outcome
        );
        Some(operation)
    }
}

fn result_fits(op: &KvOp, result: &KvResult) -> bool {
    matches!(
        (op, result),
        (KvOp::Put { .. }, KvResult::PutOk)
            | (KvOp::Get { .. }, KvResult::GetOk(_))
            | (KvOp::Delete { .. }, KvResult::DeleteOk)
    )
}

impl fmt::Display for KvOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvOp::Put { key, value } => write!(f, "put({key:?}, {value:?})"),
            KvOp::Get { key } => write!(f, "get({key:?})"),
            KvOp::Delete { key } => write!(f, "delete({key:?})"),
        }
    }
}

impl fmt::Display for KvResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvResult::PutOk | KvResult::DeleteOk => f.write_str("ok"),
            KvResult::GetOk(Some(value)) => write!(f, "{value:?}"),
            KvResult::GetOk(None) => f.write_str("absent"),
        }
    }
}

/// One line a human can read in a checker's report, e.g. `client 3 get("k") [10, 15] -> "v"`.
impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client {} {} ", self.client, self.op)?;
        match &self.outcome {
            Outcome::Ok { complete_ms, result } => write!(f, "[{}, {complete_ms}] -> {result}", self.invoke_ms),
            Outcome::Indeterminate => write!(f, "[{}, ?) indeterminate", self.invoke_ms),
            Outcome::Failed => write!(f, "[{}] failed", self.invoke_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn get(key: &str) -> KvOp {
        KvOp::Get { key: key.to_owned() }
    }

    /// Each way of resolving an invocation lands in the outcome the client reported.
    #[test]
    fn invoke_then_resolve_records_each_outcome() {
        let mut history = History::new();
        let done = history.invoke(1, get("a"), 10);
        let lost = history.invoke(2, get("a"), 11);
        let refused = history.invoke(3, get("a"), 12);
        history.complete(done, 15, KvResult::GetOk(Some("x".into())));
        history.indeterminate(lost);
        history.failed(refused);
        let outcomes: Vec<_> = history.ops().iter().map(|operation| operation.outcome.clone()).collect();
        let expected = [
            Outcome::Ok { complete_ms: 15, result: KvResult::GetOk(Some("x".into())) },
            Outcome::Indeterminate,
            Outcome::Failed,
        ];
        assert_eq!(outcomes, expected);
    }

    /// An operation whose client never heard back stays indeterminate without further calls.
    #[test]
    fn never_completed_is_indeterminate() {
        let mut history = History::new();
        let id = history.invoke(7, KvOp::Delete { key: "k".into() }, 3);
        assert_eq!(history.get(id).map(|operation| &operation.outcome), Some(&Outcome::Indeterminate));
    }

    /// Clients on different simulated tasks can share one history and clone it for checking.
    #[test]
    fn shareable_behind_arc_mutex() {
        fn assert_send_sync_clone<T: Send + Sync + Clone>() {}
        assert_send_sync_clone::<History>();
        let shared = Arc::new(Mutex::new(History::new()));
        let id = shared.lock().unwrap().invoke(1, get("k"), 0);
        shared.lock().unwrap().complete(id, 1, KvResult::GetOk(None));
        let snapshot = shared.lock().unwrap().clone();
        assert_eq!(snapshot.len(), 1);
    }

    /// Reports print operations in a form a human can scan: who, what, when, what came back.
    #[test]
    fn operations_display_readably() {
        let mut history = History::new();
        let id = history.invoke(3, get("k"), 10);
        history.complete(id, 15, KvResult::GetOk(Some("v".into())));
        let put = history.invoke(4, KvOp::Put { key: "k".into(), value: "w".into() }, 12);
        let text = |id| history.get(id).map(ToString::to_string).unwrap_or_default();
        assert_eq!(text(id), r#"client 3 get("k") [10, 15] -> "v""#);
        assert_eq!(text(put), r#"client 4 put("k", "w") [12, ?) indeterminate"#);
    }
}
