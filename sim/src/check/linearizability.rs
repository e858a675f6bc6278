//! Is the recorded KV history linearizable?
//!
//! The search is Wing & Gong's, with Lowe's memoization, as in Porcupine and Knossos: walk the
//! operations in real-time order, tentatively let a pending one take effect, and backtrack when an
//! operation's completion arrives before it could take effect. A cache of (set of operations that
//! took effect, register value) cuts every path that reaches an already explored configuration.
//!
//! The KV store is a map of independent registers, and linearizability is compositional over
//! independent objects, so each key is checked on its own: the search is exponential in concurrency
//! at worst, and splitting by key keeps each search small.
//!
//! Operations whose client never heard back are the subtle part. An indeterminate write may have
//! taken effect at any time after its invocation, or never; the search treats it as never completing
//! and stops as soon as every acknowledged operation has taken effect, so leftover indeterminate
//! writes are simply the ones that never happened. An indeterminate read tells nothing and is
//! dropped, as is anything the server refused. Left at that, every timed-out write multiplies the
//! configurations the search must rule out before it can call a history non-linearizable, so the
//! search places such writes only where a read can see them (see `OptionalWrites`). For the same
//! reason it never branches on when a read takes effect (a pending read of the current value is
//! placed at once) nor on the order of writes no remaining read observes (see `Survey`).
//! Each of these reductions keeps a linearization whenever one exists; the tests check the search
//! against brute-force enumeration.
//!
//! Workloads help the checker by writing unique values: a read then names the write it saw, and
//! timed-out writes of values nobody read are discarded before the search starts.
//!
//! Intervals are closed: an operation invoked in the same millisecond another completed counts as
//! concurrent with it, because millisecond timestamps cannot order the two.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use crate::history::{History, KvOp, KvResult, OpId, Operation, Outcome, SimMillis};

/// How much search a key may cost before the checker gives up with [`Verdict::Unknown`].
///
/// One step visits one entry of the pending-event list. Memory grows with steps too: at most one
/// cached configuration per step, each about as big as the window of concurrent operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    pub max_steps_per_key: u64,
}

impl Budget {
    /// Far above what a simulator-shaped history needs (tens of steps per operation); a key that
    /// exhausts it has cost about a second and a few hundred MB in a release build (ten times the
    /// time in a debug build), rather than hanging the run.
    pub const DEFAULT_STEPS_PER_KEY: u64 = 50_000_000;

    pub fn steps_per_key(max_steps_per_key: u64) -> Self {
        Self { max_steps_per_key }
    }
}

impl Default for Budget {
    fn default() -> Self {
        Self::steps_per_key(Self::DEFAULT_STEPS_PER_KEY)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// Some key has no linearization. When several keys fail, the first in key order is reported.
    NotLinearizable {
        key: String,
        explanation: Explanation,
    },
    /// No key was found non-linearizable, but this one (the first in key order) was not decided.
    Unknown {
        key: String,
        reason: UnknownReason,
    },
}

impl Verdict {
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnknownReason {
    BudgetExhausted { steps: u64 },
}

/// Where the search got furthest before every path failed: what a human needs to see the violation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    /// How many operations the longest linearizable prefix found holds.
    pub prefix_len: usize,
    /// Its last few operations, in linearization order.
    pub prefix_tail: Vec<(OpId, Operation)>,
    /// The key's value after that prefix (`None`: absent).
    pub value_after_prefix: Option<String>,
    /// The operation whose completion came first among those outside the prefix: by then one of
    /// `unplaceable` had to take effect.
    pub deadline: Option<(OpId, Operation)>,
    /// Every operation that real-time order allowed next; none is consistent with the value.
    pub unplaceable: Vec<(OpId, Operation)>,
}

/// How many operations of the longest prefix an explanation shows; the ones just before the failure
/// are the ones that set the value it contradicts.
const EXPLANATION_TAIL_OPS: usize = 8;

/// Decides whether `history` is linearizable as a map of registers that all start absent.
pub fn check_kv(history: &History, budget: Budget) -> Verdict {
    check_kv_with(history, budget, Memo::Dominance)
}

fn check_kv_with(history: &History, budget: Budget, memo: Memo) -> Verdict {
    let mut first_unknown = None;
    for (key, register) in partition(history) {
        match Search::new(&register.ops, memo).run(budget.max_steps_per_key) {
            SearchEnd::Linearizable => {}
            SearchEnd::Stuck { longest_prefix } => {
                let explanation = explain(&register, history, &longest_prefix);
                return Verdict::NotLinearizable { key: key.to_owned(), explanation };
            }
            SearchEnd::OutOfBudget { steps } => {
                let reason = UnknownReason::BudgetExhausted { steps };
                first_unknown.get_or_insert(Verdict::Unknown { key: key.to_owned(), reason });
            }
        }
    }
    first_unknown.unwrap_or(Verdict::Linearizable)
}

/// Register values are interned per key so that configurations are cheap to hash and compare.
type ValueId = u32;
const ABSENT: ValueId = 0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access<V> {
    Read(V),
    Write(V),
}

/// One operation on one key as the search sees it.
#[derive(Clone, Copy, Debug)]
struct RegisterOp {
    id: OpId,
    access: Access<ValueId>,
    invoke_ms: SimMillis,
    /// `None`: indeterminate, so it may take effect at any time after invocation, or never.
    complete_ms: Option<SimMillis>,
}

/// The sub-history of one key.
#[derive(Default)]
struct Register<'h> {
    ops: Vec<RegisterOp>,
    /// `values[i]` is the text of `ValueId` `i + 1`.
    values: Vec<&'h str>,
    value_ids: HashMap<&'h str, ValueId>,
}

impl<'h> Register<'h> {
    fn intern(&mut self, value: Option<&'h str>) -> ValueId {
        let Some(text) = value else { return ABSENT };
        let next_id = ValueId::try_from(self.values.len() + 1).unwrap_or(ValueId::MAX);
        *self.value_ids.entry(text).or_insert_with(|| {
            self.values.push(text);
            next_id
        })
    }

    fn text(&self, value: ValueId) -> Option<String> {
        let index = usize::try_from(value).ok()?.checked_sub(1)?;
        self.values.get(index).map(|text| (*text).to_owned())
    }

    /// Drops indeterminate writes no read could have observed: a read sees a write only if it
    /// completes after the write was invoked. Leaving such a write out of a linearization never
    /// changes what a read returns, so dropping it keeps the verdict and spares the search from
    /// trying it at every point after its invocation.
    fn drop_unobservable_writes(&mut self) {
        let mut last_read_ms = vec![None; self.values.len() + 1];
        for op in &self.ops {
            if let (Access::Read(value), Some(complete_ms)) = (op.access, op.complete_ms) {
                let slot: &mut Option<SimMillis> = &mut last_read_ms[value as usize];
                *slot = (*slot).max(Some(complete_ms));
            }
        }
        self.ops.retain(|op| match (op.access, op.complete_ms) {
            (Access::Write(value), None) => last_read_ms[value as usize].is_some_and(|ms| ms >= op.invoke_ms),
            _ => true,
        });
    }
}

/// Splits the history by key, keeping only operations that constrain the search.
fn partition(history: &History) -> BTreeMap<&str, Register<'_>> {
    let mut registers: BTreeMap<&str, Register<'_>> = BTreeMap::new();
    for (id, operation) in history.iter() {
        let Some((access, complete_ms)) = observation(operation) else { continue };
        let register = registers.entry(operation.op.key()).or_default();
        let access = match access {
            Access::Read(value) => Access::Read(register.intern(value)),
            Access::Write(value) => Access::Write(register.intern(value)),
        };
        // A completion recorded before its invocation is a workload bug; clamping keeps the
        // interval well formed so the search still terminates with a meaningful answer.
        let complete_ms = complete_ms.map(|ms| ms.max(operation.invoke_ms));
        register.ops.push(RegisterOp { id, access, invoke_ms: operation.invoke_ms, complete_ms });
    }
    for register in registers.values_mut() {
        register.drop_unobservable_writes();
        // In call order, the operations a configuration has placed are nearly a prefix, which
        // keeps the memo's copies of them short (see `Bitset::trimmed`).
        register.ops.sort_by_key(|op| (op.invoke_ms, op.id));
    }
    registers
}

/// What an operation tells the checker: its effect on the register and when it completed, or
/// `None` if it cannot constrain anything.
fn observation(operation: &Operation) -> Option<(Access<Option<&str>>, Option<SimMillis>)> {
    let complete_ms = match &operation.outcome {
        Outcome::Ok { complete_ms, .. } => Some(*complete_ms),
        Outcome::Indeterminate => None,
        Outcome::Failed => return None,
    };
    match (&operation.op, &operation.outcome) {
        (KvOp::Get { .. }, Outcome::Ok { result: KvResult::GetOk(value), .. }) => {
            Some((Access::Read(value.as_deref()), complete_ms))
        }
        // An unanswered read observed nothing; a read answered with a write's reply is malformed.
        (KvOp::Get { .. }, _) => None,
        (KvOp::Put { value, .. }, _) => Some((Access::Write(Some(value.as_str())), complete_ms)),
        (KvOp::Delete { .. }, _) => Some((Access::Write(None), complete_ms)),
    }
}

/// The register's sequential specification: the value after `access`, or `None` if a read
/// returned something other than the current value.
fn apply(value: ValueId, access: Access<ValueId>) -> Option<ValueId> {
    match access {
        Access::Read(seen) => (seen == value).then_some(value),
        Access::Write(written) => Some(written),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum EventKind {
    // Declared first so that, at equal times, invocations sort before completions: closed intervals.
    Call,
    Return,
}

/// The key's invocations and completions in real-time order; indeterminate operations have no
/// completion, which lets the search leave them out.
fn events(ops: &[RegisterOp]) -> Vec<(SimMillis, EventKind, usize)> {
    let mut events = Vec::with_capacity(2 * ops.len());
    for (index, op) in ops.iter().enumerate() {
        events.push((op.invoke_ms, EventKind::Call, index));
        if let Some(complete_ms) = op.complete_ms {
            events.push((complete_ms, EventKind::Return, index));
        }
    }
    // The op index breaks remaining ties, so the order (and so the explanation) is deterministic.
    events.sort_unstable();
    events
}

const HEAD: usize = 0;
const NIL: usize = usize::MAX;

/// An entry of the doubly linked event list. Lifting an operation unlinks its entries but keeps
/// their own links, so undoing in reverse order relinks them exactly (dancing links).
#[derive(Clone, Copy, Debug)]
struct Node {
    op: usize,
    kind: EventKind,
    /// For a call, its completion's node, or `NIL` for an indeterminate operation.
    partner: usize,
    prev: usize,
    next: usize,
}

/// The event list, and each operation's call node.
fn linked_events(ops: &[RegisterOp]) -> (Vec<Node>, Vec<usize>) {
    let events = events(ops);
    let head = Node { op: NIL, kind: EventKind::Return, partner: NIL, prev: NIL, next: NIL };
    let mut nodes = Vec::with_capacity(events.len() + 1);
    nodes.push(head);
    let mut call_node = vec![NIL; ops.len()];
    for &(_, kind, op) in &events {
        let index = nodes.len();
        nodes[index - 1].next = index;
        nodes.push(Node { op, kind, partner: NIL, prev: index - 1, next: NIL });
        match kind {
            EventKind::Call => call_node[op] = index,
            // Sorting put the call first (complete >= invoke after clamping).
            EventKind::Return => {
                if let Some(call) = nodes.get_mut(call_node[op]) {
                    call.partner = index;
                }
            }
        }
    }
    (nodes, call_node)
}

enum SearchEnd {
    Linearizable,
    /// Every path failed; the operation indices of the longest linearizable prefix found.
    Stuck {
        longest_prefix: Vec<usize>,
    },
    OutOfBudget {
        steps: u64,
    },
}

/// A tentative linearization step, kept so it can be undone.
#[derive(Clone, Copy, Debug)]
struct Frame {
    call_node: usize,
    /// The only move worth making from its configuration, so when it fails, so does that
    /// configuration and backtracking goes on past it.
    forced: bool,
    /// The pass of the scan that chose it, where the scan resumes if it fails.
    pass: Pass,
    value_before: ValueId,
    awaiting_read_before: bool,
    survey_before: Survey,
}

/// Which candidates a scan of the window offers. Indeterminate writes come last, so that the search
/// explores configurations that used fewer of them first: those dominate the ones that used more
/// (see `Explored`), which are then cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    Required,
    Optional,
}

/// What a configuration's window holds, found once on arriving there.
#[derive(Clone, Copy, Debug, Default)]
struct Survey {
    /// Of the pending writes no remaining read can observe, the one that must complete first: the
    /// only one of them the search offers.
    ///
    /// Such invisible writes can only be followed by another write, so their order among
    /// themselves is unobservable; any linearization that places a later-completing one first can
    /// swap it with this one without breaking real-time order. Without this, k long-running
    /// writes nobody reads (common with unique values) make 2^k configurations.
    first_invisible: Option<usize>,
    /// An indeterminate write is pending, so a scan needs its optional pass.
    optional_pending: bool,
}

/// Indeterminate writes are where the search explodes: each may take effect at any point after its
/// invocation, or never, and every choice is a different linearized set the memo cannot merge. With
/// 10% of writes timed out, a single stale read in a few thousand operations exhausted millions of
/// steps. Three reductions cut the choices; each keeps some linearization whenever there is one:
/// - normal form: an indeterminate write of `v` is placed only directly before a read of `v`, and
///   never while the value already is `v`; any other placement is invisible, so dropping it from a
///   linearization leaves a linearization;
/// - symmetry: once invoked, indeterminate writes of one value are interchangeable, so only the
///   earliest unplaced one is offered (any use of a later one can be moved to it); the placed ones
///   are then always a prefix of `writers`;
/// - retirement: once the last read of `v` is placed, the remaining writes of `v` could only be
///   placed invisibly, so they are unlinked from the event list and scans stop visiting them;
/// - dominance: of two configurations that differ only in how many writes of a value's pool they
///   used, the one that used fewer has every choice the other has (see `Explored::insert`). Timed
///   out deletes make such pools: all write "absent", which reads keep observing.
struct OptionalWrites {
    /// Per value, its indeterminate writes in event-list order.
    writers: Vec<Vec<usize>>,
    /// Per value, how many of `writers` are placed.
    placed: Vec<usize>,
    /// Per value, the reads of it not yet placed.
    unread: Vec<u32>,
    /// Values with writes placed and reads still to come: the pools whose use still matters.
    live: BTreeSet<ValueId>,
}

impl OptionalWrites {
    fn new(ops: &[RegisterOp], nodes: &[Node]) -> Self {
        let value_count = ops.iter().map(|op| value_of(op.access) as usize + 1).max().unwrap_or(1);
        let mut this = Self {
            writers: vec![Vec::new(); value_count],
            placed: vec![0; value_count],
            unread: vec![0; value_count],
            live: BTreeSet::new(),
        };
        let mut cursor = nodes[HEAD].next;
        while let Some(node) = nodes.get(cursor) {
            let op = ops[node.op];
            match (node.kind, op.access, op.complete_ms) {
                (EventKind::Call, Access::Write(value), None) => this.writers[value as usize].push(node.op),
                (EventKind::Call, Access::Read(value), _) => this.unread[value as usize] += 1,
                _ => {}
            }
            cursor = node.next;
        }
        this
    }

    fn next_writer(&self, value: ValueId) -> Option<usize> {
        let value = value as usize;
        self.writers[value].get(self.placed[value]).copied()
    }

    /// How many writes of each live pool are used, in value order.
    fn used(&self) -> Box<[(ValueId, u32)]> {
        self.live.iter().map(|&value| (value, self.placed[value as usize] as u32)).collect()
    }

    fn update_live(&mut self, value: ValueId) {
        let index = value as usize;
        if self.placed[index] > 0 && self.unread[index] > 0 {
            self.live.insert(value);
        } else {
            self.live.remove(&value);
        }
    }

    /// The writes of `value` still unplaced, which retirement unlinks.
    fn unplaced_writers(&self, value: ValueId) -> &[usize] {
        let value = value as usize;
        self.writers[value].get(self.placed[value]..).unwrap_or_default()
    }
}

fn value_of(access: Access<ValueId>) -> ValueId {
    match access {
        Access::Read(value) | Access::Write(value) => value,
    }
}

fn is_optional_write(op: RegisterOp) -> bool {
    matches!((op.access, op.complete_ms), (Access::Write(_), None))
}

struct Search<'r> {
    ops: &'r [RegisterOp],
    nodes: Vec<Node>,
    call_node: Vec<usize>,
    linearized: Bitset,
    /// Zobrist hash of `linearized`, kept incrementally so a cache probe does not rehash the set.
    linearized_hash: u64,
    value: ValueId,
    /// The last operation placed is an indeterminate write, so the next must read its value.
    awaiting_read: bool,
    survey: Survey,
    optional: OptionalWrites,
    stack: Vec<Frame>,
    explored: Explored,
    determinate_left: usize,
    longest_prefix: Vec<usize>,
    steps: u64,
}

impl<'r> Search<'r> {
    fn new(ops: &'r [RegisterOp], memo: Memo) -> Self {
        let (nodes, call_node) = linked_events(ops);
        // Indeterminate writes are tracked by `optional`; their bits stay set so they do not
        // break the runs of ones that `Bitset::trimmed` drops.
        let mut linearized = Bitset::new(ops.len());
        for (index, _) in ops.iter().enumerate().filter(|(_, op)| is_optional_write(**op)) {
            linearized.set(index);
        }
        Self {
            ops,
            optional: OptionalWrites::new(ops, &nodes),
            nodes,
            call_node,
            linearized,
            linearized_hash: 0,
            value: ABSENT,
            awaiting_read: false,
            survey: Survey::default(),
            stack: Vec::new(),
            explored: Explored { memo, buckets: HashMap::default() },
            determinate_left: ops.iter().filter(|op| op.complete_ms.is_some()).count(),
            longest_prefix: Vec::new(),
            steps: 0,
        }
    }

    fn run(mut self, max_steps: u64) -> SearchEnd {
        // Where the scan of the current configuration's candidates stands; `None` once it failed.
        let mut scan = self.enter().map(|cursor| (cursor, Pass::Required));
        while self.determinate_left > 0 {
            if self.steps >= max_steps {
                return SearchEnd::OutOfBudget { steps: self.steps };
            }
            self.steps += 1;
            scan = match scan {
                Some((cursor, pass)) => self.scan_step(cursor, pass),
                None => match self.backtrack_choice() {
                    Some(frame) => Some((self.nodes[frame.call_node].next, frame.pass)),
                    None => return SearchEnd::Stuck { longest_prefix: self.longest_prefix },
                },
            };
        }
        // Indeterminate writes not yet placed are the ones that never took effect.
        SearchEnd::Linearizable
    }

    /// Tries the candidate at `cursor`. Returns where the scan goes on (in the configuration the
    /// candidate led to, if it was placed), or `None` if the current configuration has failed.
    fn scan_step(&mut self, cursor: usize, pass: Pass) -> Option<(usize, Pass)> {
        let at_call = self.nodes.get(cursor).is_some_and(|node| node.kind == EventKind::Call);
        if at_call && self.try_linearize(cursor, false, pass) {
            return self.enter().map(|next| (next, Pass::Required));
        }
        if at_call {
            return Some((self.nodes[cursor].next, pass));
        }
        // A completion whose operation has not taken effect: every candidate of this pass failed.
        let another_pass = pass == Pass::Required && self.survey.optional_pending;
        another_pass.then(|| (self.nodes[HEAD].next, Pass::Optional))
    }

    /// Arrives at a new configuration and makes its forced moves. Returns where the scan of its
    /// choices starts, or `None` if it has failed already.
    ///
    /// A pending read of the current value is forced: reads do not change the value, so any
    /// linearization that places it later can place it now instead.
    fn enter(&mut self) -> Option<usize> {
        while self.determinate_left > 0 {
            let (matching_read, survey) = self.survey_window();
            self.survey = survey;
            match matching_read {
                Some(call_node) if self.try_linearize(call_node, true, Pass::Required) => {}
                Some(_) => return None,
                // After an indeterminate write only a read of its value may come.
                None if self.awaiting_read => return None,
                None => return Some(self.nodes[HEAD].next),
            }
        }
        // Done: `run` sees that nothing acknowledged is left.
        Some(NIL)
    }

    /// One pass over the pending calls: a read of the current value, if any, and otherwise what the
    /// scans of this configuration need to know (see `Survey`).
    fn survey_window(&mut self) -> (Option<usize>, Survey) {
        let mut first_invisible: Option<(usize, usize)> = None;
        let mut optional_pending = false;
        let mut cursor = self.nodes[HEAD].next;
        while let Some(node) = self.nodes.get(cursor).filter(|node| node.kind == EventKind::Call) {
            self.steps += 1;
            let op = self.ops[node.op];
            match (op.access, op.complete_ms) {
                (Access::Read(value), _) if value == self.value => return (Some(cursor), Survey::default()),
                (Access::Write(value), Some(_))
                    if self.optional.unread[value as usize] == 0
                        && first_invisible.is_none_or(|(deadline, _)| node.partner < deadline) =>
                {
                    first_invisible = Some((node.partner, node.op));
                }
                (Access::Write(_), None) => optional_pending = true,
                _ => {}
            }
            cursor = node.next;
        }
        (None, Survey { first_invisible: first_invisible.map(|(_, op)| op), optional_pending })
    }

    /// Lets the operation at `call_node` take effect now, unless the register or the reductions
    /// forbid it, or the resulting configuration was already explored.
    fn try_linearize(&mut self, call_node: usize, forced: bool, pass: Pass) -> bool {
        let index = self.nodes[call_node].op;
        let op = self.ops[index];
        if !self.offered(index, op, pass) {
            return false;
        }
        let Some(value_after) = apply(self.value, op.access) else { return false };
        self.place(call_node, forced, pass, value_after);
        let tag = (u64::from(self.value) << 1) | u64::from(self.awaiting_read);
        if self.explored.insert(self.linearized_hash, &self.linearized, tag, self.optional.used()) {
            return true;
        }
        self.unplace();
        false
    }

    fn offered(&self, index: usize, op: RegisterOp, pass: Pass) -> bool {
        match (op.access, op.complete_ms) {
            (Access::Write(_), _) if self.awaiting_read => false,
            (Access::Write(value), None) => {
                pass == Pass::Optional && value != self.value && self.optional.next_writer(value) == Some(index)
            }
            _ if pass == Pass::Optional => false,
            (Access::Write(value), Some(_)) if self.optional.unread[value as usize] == 0 => {
                self.survey.first_invisible == Some(index)
            }
            _ => true,
        }
    }

    fn place(&mut self, call_node: usize, forced: bool, pass: Pass, value_after: ValueId) {
        let index = self.nodes[call_node].op;
        let op = self.ops[index];
        self.stack.push(Frame {
            call_node,
            forced,
            pass,
            value_before: self.value,
            awaiting_read_before: self.awaiting_read,
            survey_before: self.survey,
        });
        // Which indeterminate writes are used is in `optional`; the set holds acknowledged ones.
        if op.complete_ms.is_some() {
            self.linearized.set(index);
            self.linearized_hash ^= zobrist(index);
        }
        self.value = value_after;
        self.awaiting_read = is_optional_write(op);
        self.lift(call_node);
        self.count_placed(op);
    }

    fn unplace(&mut self) -> Option<Frame> {
        let frame = self.stack.pop()?;
        let index = self.nodes[frame.call_node].op;
        let op = self.ops[index];
        // Undo in the reverse order of `place`: retirement happened after the lift.
        self.count_unplaced(op);
        self.unlift(frame.call_node);
        if op.complete_ms.is_some() {
            self.linearized.clear(index);
            self.linearized_hash ^= zobrist(index);
        }
        self.value = frame.value_before;
        self.awaiting_read = frame.awaiting_read_before;
        self.survey = frame.survey_before;
        Some(frame)
    }

    /// Undoes moves up to and including the last choice; forced moves on the way failed with it.
    fn backtrack_choice(&mut self) -> Option<Frame> {
        loop {
            let frame = self.backtrack()?;
            if !frame.forced {
                return Some(frame);
            }
        }
    }

    fn backtrack(&mut self) -> Option<Frame> {
        // The stack only shrinks here, so each local maximum is seen just before it is lost.
        if self.stack.len() > self.longest_prefix.len() {
            self.longest_prefix = self.stack.iter().map(|frame| self.nodes[frame.call_node].op).collect();
        }
        self.unplace()
    }

    fn count_placed(&mut self, op: RegisterOp) {
        if op.complete_ms.is_some() {
            self.determinate_left -= 1;
        }
        match (op.access, op.complete_ms) {
            (Access::Read(value), _) => {
                self.optional.unread[value as usize] -= 1;
                if self.optional.unread[value as usize] == 0 {
                    self.retire(value);
                }
                self.optional.update_live(value);
            }
            (Access::Write(value), None) => {
                self.optional.placed[value as usize] += 1;
                self.optional.update_live(value);
            }
            (Access::Write(_), Some(_)) => {}
        }
    }

    fn count_unplaced(&mut self, op: RegisterOp) {
        if op.complete_ms.is_some() {
            self.determinate_left += 1;
        }
        match (op.access, op.complete_ms) {
            (Access::Read(value), _) => {
                if self.optional.unread[value as usize] == 0 {
                    self.unretire(value);
                }
                self.optional.unread[value as usize] += 1;
                self.optional.update_live(value);
            }
            (Access::Write(value), None) => {
                self.optional.placed[value as usize] -= 1;
                self.optional.update_live(value);
            }
            (Access::Write(_), Some(_)) => {}
        }
    }

    fn retire(&mut self, value: ValueId) {
        for position in 0..self.optional.unplaced_writers(value).len() {
            let op = self.optional.unplaced_writers(value)[position];
            self.unlink(self.call_node[op]);
        }
    }

    fn unretire(&mut self, value: ValueId) {
        for position in (0..self.optional.unplaced_writers(value).len()).rev() {
            let op = self.optional.unplaced_writers(value)[position];
            self.relink(self.call_node[op]);
        }
    }

    fn lift(&mut self, call_node: usize) {
        self.unlink(call_node);
        let partner = self.nodes[call_node].partner;
        if partner != NIL {
            self.unlink(partner);
        }
    }

    fn unlift(&mut self, call_node: usize) {
        let partner = self.nodes[call_node].partner;
        if partner != NIL {
            self.relink(partner);
        }
        self.relink(call_node);
    }

    fn unlink(&mut self, node: usize) {
        let Node { prev, next, .. } = self.nodes[node];
        self.nodes[prev].next = next;
        if next != NIL {
            self.nodes[next].prev = prev;
        }
    }

    fn relink(&mut self, node: usize) {
        let Node { prev, next, .. } = self.nodes[node];
        self.nodes[prev].next = node;
        if next != NIL {
            self.nodes[next].prev = node;
        }
    }
}

/// A fixed pseudo-random word per operation; XOR of these over a set is the set's hash.
fn zobrist(index: usize) -> u64 {
    splitmix64(index as u64)
}

fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[derive(Clone, Debug)]
struct Bitset {
    words: Vec<u64>,
}

impl Bitset {
    fn new(bits: usize) -> Self {
        Self { words: vec![0; bits.div_ceil(64)] }
    }

    fn set(&mut self, bit: usize) {
        self.words[bit / 64] |= 1 << (bit % 64);
    }

    fn clear(&mut self, bit: usize) {
        self.words[bit / 64] &= !(1 << (bit % 64));
    }

    /// The set without its leading all-ones and trailing all-zeros words, and how many words were
    /// skipped at the front: a canonical form as long as the window of undecided operations.
    fn trimmed(&self) -> (usize, &[u64]) {
        let skipped = self.words.iter().take_while(|word| **word == u64::MAX).count();
        let rest = &self.words[skipped..];
        let zeros = rest.iter().rev().take_while(|word| **word == 0).count();
        (skipped, &rest[..rest.len() - zeros])
    }
}

/// Configurations already explored. Buckets are keyed by a hash that is already well mixed, so the
/// map does not hash it again; equal hashes are told apart by comparing the configurations.
struct Explored {
    memo: Memo,
    buckets: HashMap<u64, Vec<Configuration>, BuildHasherDefault<PremixedHasher>>,
}

/// How explored configurations cut the search. Only tests ask for `Exact`, to check `Dominance`
/// against it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Memo {
    /// Cut configurations dominated by an explored one (see `Explored::insert`).
    Dominance,
    /// Cut only configurations explored before.
    #[cfg_attr(not(test), allow(dead_code))]
    Exact,
}

/// The acknowledged operations placed (trimmed), the value with the awaiting-read flag, and how
/// many writes of each live pool of indeterminate writes are used.
type Configuration = ((usize, Box<[u64]>), u64, Box<[(ValueId, u32)]>);

impl Explored {
    /// Records the configuration; `false` if it, or one that dominates it, was explored already.
    ///
    /// One configuration dominates another with the same acknowledged set, value and flag if it
    /// used no more of any pool: it has every choice the other has. Explored configurations have
    /// all failed (an ancestor on the current path never shares the acknowledged set), so a
    /// dominated one fails too.
    fn insert(&mut self, linearized_hash: u64, linearized: &Bitset, tag: u64, used: Box<[(ValueId, u32)]>) -> bool {
        let key = linearized_hash ^ splitmix64(tag ^ 0x5851_F42D_4C95_7F2D);
        let bucket = self.buckets.entry(key).or_default();
        let memo = self.memo;
        let (skipped, words) = linearized.trimmed();
        let dominated = bucket.iter().any(|((seen_skipped, seen_words), seen_tag, seen_used)| {
            let covers = match memo {
                Memo::Dominance => uses_no_more(seen_used, &used),
                Memo::Exact => *seen_used == used,
            };
            *seen_tag == tag && *seen_skipped == skipped && **seen_words == *words && covers
        });
        if dominated {
            return false;
        }
        bucket.push(((skipped, words.into()), tag, used));
        true
    }
}

/// Whether every pool count in `fewer` is at most the same pool's count in `more`; both sorted.
fn uses_no_more(fewer: &[(ValueId, u32)], more: &[(ValueId, u32)]) -> bool {
    fewer.iter().all(|(value, count)| {
        more.binary_search_by_key(value, |(other, _)| *other).is_ok_and(|position| more[position].1 >= *count)
    })
}

#[derive(Default)]
struct PremixedHasher(u64);

impl Hasher for PremixedHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = word;
    }
}

/// Rebuilds, from the longest prefix, the value it leaves and the operations that could not follow.
fn explain(register: &Register<'_>, history: &History, longest_prefix: &[usize]) -> Explanation {
    let record = |index: usize| {
        let id = register.ops.get(index)?.id;
        Some((id, history.get(id)?.clone()))
    };
    let mut in_prefix = vec![false; register.ops.len()];
    for &index in longest_prefix {
        in_prefix[index] = true;
    }
    let value = longest_prefix
        .iter()
        .rev()
        .find_map(|&index| match register.ops[index].access {
            Access::Write(value) => Some(value),
            Access::Read(_) => None,
        })
        .unwrap_or(ABSENT);
    let (unplaceable, deadline) = stuck_window(&register.ops, &in_prefix);
    let tail_start = longest_prefix.len().saturating_sub(EXPLANATION_TAIL_OPS);
    Explanation {
        prefix_len: longest_prefix.len(),
        prefix_tail: longest_prefix[tail_start..].iter().filter_map(|&index| record(index)).collect(),
        value_after_prefix: register.text(value),
        deadline: deadline.and_then(record),
        unplaceable: unplaceable.into_iter().filter_map(record).collect(),
    }
}

/// The operations real-time order allows right after the prefix `in_prefix`, and the first of them
/// to complete. Timed-out writes of values no remaining read returns are left out: they can never
/// matter, and a long run accumulates many.
fn stuck_window(ops: &[RegisterOp], in_prefix: &[bool]) -> (Vec<usize>, Option<usize>) {
    let still_read: HashSet<ValueId> = (0..ops.len())
        .filter(|&index| !in_prefix[index])
        .filter_map(|index| match ops[index].access {
            Access::Read(value) => Some(value),
            Access::Write(_) => None,
        })
        .collect();
    let mut window = Vec::new();
    for (_, kind, index) in events(ops).into_iter().filter(|&(_, _, index)| !in_prefix[index]) {
        match kind {
            EventKind::Return => return (window, Some(index)),
            EventKind::Call if is_optional_write(ops[index]) && !still_read.contains(&value_of(ops[index].access)) => {}
            EventKind::Call => window.push(index),
        }
    }
    (window, None)
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "longest linearizable prefix: {} ops, ending with:", self.prefix_len)?;
        for (id, operation) in &self.prefix_tail {
            writeln!(f, "  {id} {operation}")?;
        }
        match &self.value_after_prefix {
            Some(value) => writeln!(f, "value after it: {value:?}")?,
            None => writeln!(f, "value after it: absent")?,
        }
        match &self.deadline {
            Some((id, _)) => writeln!(f, "none of these fits next, yet one must take effect before {id} completes:")?,
            None => writeln!(f, "none of these fits next:")?,
        }
        for (id, operation) in &self.unplaceable {
            writeln!(f, "  {id} {operation}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Linearizable => f.write_str("linearizable"),
            Verdict::NotLinearizable { key, explanation } => {
                write!(f, "key {key:?} is not linearizable\n{explanation}")
            }
            Verdict::Unknown { key, reason: UnknownReason::BudgetExhausted { steps } } => {
                write!(f, "key {key:?} undecided: search budget exhausted after {steps} steps")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Instant;

    fn put(key: &str, value: &str) -> KvOp {
        KvOp::Put { key: key.to_owned(), value: value.to_owned() }
    }

    fn get(key: &str) -> KvOp {
        KvOp::Get { key: key.to_owned() }
    }

    fn delete(key: &str) -> KvOp {
        KvOp::Delete { key: key.to_owned() }
    }

    /// An acknowledged operation; the reply is the one its kind gets, `read` for a get.
    fn ok(op: KvOp, invoke_ms: SimMillis, complete_ms: SimMillis, read: Option<&str>) -> Operation {
        let result = match op {
            KvOp::Get { .. } => KvResult::GetOk(read.map(str::to_owned)),
            _ => placeholder_reply(&op),
        };
        Operation { client: 0, op, invoke_ms, outcome: Outcome::Ok { complete_ms, result } }
    }

    fn lost(op: KvOp, invoke_ms: SimMillis) -> Operation {
        Operation { client: 0, op, invoke_ms, outcome: Outcome::Indeterminate }
    }

    /// Each operation gets its own client, as if every one came from a different process.
    fn history(ops: impl IntoIterator<Item = Operation>) -> History {
        let mut history = History::new();
        for (client, operation) in ops.into_iter().enumerate() {
            history.push(Operation { client: client as u32, ..operation });
        }
        history
    }

    fn verdict(ops: impl IntoIterator<Item = Operation>) -> Verdict {
        check_kv(&history(ops), Budget::default())
    }

    fn assert_linearizable(ops: impl IntoIterator<Item = Operation>) {
        let verdict = verdict(ops);
        assert!(verdict.is_linearizable(), "{verdict}");
    }

    fn assert_violation(ops: impl IntoIterator<Item = Operation>) -> Explanation {
        match verdict(ops) {
            Verdict::NotLinearizable { explanation, .. } => explanation,
            other => panic!("expected a violation, got {other}"),
        }
    }

    /// With nothing recorded there is nothing to contradict.
    #[test]
    fn empty_history_is_linearizable() {
        assert_eq!(check_kv(&History::new(), Budget::default()), Verdict::Linearizable);
    }

    /// One client doing put, get, put, get in turn sees its own writes.
    #[test]
    fn sequential_history_is_linearizable() {
        assert_linearizable([
            ok(get("k"), 0, 1, None),
            ok(put("k", "a"), 2, 3, None),
            ok(get("k"), 4, 5, Some("a")),
            ok(put("k", "b"), 6, 7, None),
            ok(get("k"), 8, 9, Some("b")),
        ]);
    }

    /// A read that starts after a write was acknowledged must not return the value it replaced.
    #[test]
    fn stale_read_after_completed_write_is_not_linearizable() {
        let explanation = assert_violation([
            ok(put("k", "a"), 0, 1, None),
            ok(put("k", "b"), 2, 3, None),
            ok(get("k"), 4, 5, Some("a")),
        ]);
        assert_eq!(explanation.prefix_len, 2);
        assert_eq!(explanation.value_after_prefix.as_deref(), Some("b"));
        let stuck: Vec<_> = explanation.unplaceable.iter().map(|(id, _)| id.index()).collect();
        assert_eq!(stuck, [2]);
        assert_eq!(explanation.deadline.map(|(id, _)| id.index()), Some(2));
    }

    /// A read overlapping a write may return the old value or the new one.
    #[test]
    fn concurrent_write_and_read_may_see_either_value() {
        for seen in [None, Some("a")] {
            assert_linearizable([ok(put("k", "a"), 0, 10, None), ok(get("k"), 2, 8, seen)]);
        }
    }

    /// Once a read has returned the new value, a later read may not go back to the old one, even
    /// while the write is still in flight.
    #[test]
    fn reads_during_a_write_cannot_flip_back() {
        assert_violation([
            ok(put("k", "a"), 0, 100, None),
            ok(get("k"), 10, 20, Some("a")),
            ok(get("k"), 30, 40, None),
        ]);
    }

    /// A value nobody wrote cannot be read.
    #[test]
    fn read_of_value_never_written_is_not_linearizable() {
        assert_violation([ok(put("k", "a"), 0, 1, None), ok(get("k"), 2, 3, Some("z"))]);
    }

    /// A write refused by the server never happened, so reading its value is a violation.
    #[test]
    fn failed_write_never_takes_effect() {
        let refused = Operation { client: 0, op: put("k", "a"), invoke_ms: 0, outcome: Outcome::Failed };
        assert_violation([refused, ok(get("k"), 5, 6, Some("a"))]);
    }

    /// A timed-out write that a later read observes took effect in between.
    #[test]
    fn indeterminate_write_observed_later_is_linearizable() {
        assert_linearizable([
            ok(put("k", "a"), 0, 1, None),
            lost(put("k", "b"), 2),
            ok(get("k"), 50, 51, Some("b")),
            ok(get("k"), 60, 61, Some("b")),
        ]);
    }

    /// A timed-out write nobody observes may simply never have happened.
    #[test]
    fn indeterminate_write_never_observed_is_linearizable() {
        assert_linearizable([
            ok(put("k", "a"), 0, 1, None),
            lost(put("k", "b"), 2),
            ok(get("k"), 50, 51, Some("a")),
            ok(get("k"), 60, 61, Some("a")),
        ]);
    }

    /// Once observed, a timed-out write has happened: the value it replaced cannot come back.
    #[test]
    fn indeterminate_write_observed_then_unobserved_is_not_linearizable() {
        let explanation = assert_violation([
            ok(put("k", "a"), 0, 1, None),
            lost(put("k", "b"), 2),
            ok(get("k"), 50, 51, Some("b")),
            ok(get("k"), 60, 61, Some("a")),
        ]);
        assert_eq!(explanation.value_after_prefix.as_deref(), Some("b"));
        assert_eq!(explanation.deadline.map(|(id, _)| id.index()), Some(3));
    }

    /// A read cannot observe a timed-out write that its client had not even sent yet.
    #[test]
    fn indeterminate_write_cannot_explain_an_earlier_read() {
        assert_violation([ok(get("k"), 0, 1, Some("b")), lost(put("k", "b"), 2)]);
    }

    /// Two timed-out writes may both take effect, in either order, to explain what reads saw.
    #[test]
    fn indeterminate_writes_take_effect_in_any_order() {
        assert_linearizable([
            lost(put("k", "a"), 0),
            lost(put("k", "b"), 1),
            ok(get("k"), 10, 11, Some("b")),
            ok(get("k"), 20, 21, Some("a")),
        ]);
    }

    /// A timed-out read says nothing, whatever it would have returned.
    #[test]
    fn indeterminate_read_is_ignored() {
        assert_linearizable([ok(put("k", "a"), 0, 1, None), lost(get("k"), 2), ok(get("k"), 3, 4, Some("a"))]);
    }

    /// Delete makes the key absent, and an absent key cannot later read a deleted value.
    #[test]
    fn delete_semantics() {
        assert_linearizable([
            ok(put("k", "a"), 0, 1, None),
            ok(delete("k"), 2, 3, None),
            ok(get("k"), 4, 5, None),
            ok(delete("k"), 6, 7, None),
            ok(get("k"), 8, 9, None),
        ]);
        assert_violation([ok(put("k", "a"), 0, 1, None), ok(delete("k"), 2, 3, None), ok(get("k"), 4, 5, Some("a"))]);
        assert_violation([ok(put("k", "a"), 0, 1, None), ok(get("k"), 2, 3, None)]);
    }

    /// A timed-out delete that a read observes as absence took effect.
    #[test]
    fn indeterminate_delete_can_explain_absence() {
        assert_linearizable([ok(put("k", "a"), 0, 1, None), lost(delete("k"), 2), ok(get("k"), 5, 6, None)]);
    }

    /// Invoked in the millisecond the write completed, a read may still have come first.
    #[test]
    fn touching_intervals_are_concurrent() {
        assert_linearizable([ok(put("k", "a"), 0, 5, None), ok(get("k"), 5, 9, None)]);
        assert_violation([ok(put("k", "a"), 0, 5, None), ok(get("k"), 6, 9, None)]);
    }

    /// Keys are separate registers: a violation is pinned on its own key, and other keys' writes
    /// cannot explain it.
    #[test]
    fn violation_names_its_key() {
        let verdict =
            verdict([ok(put("a", "1"), 0, 1, None), ok(get("b"), 2, 3, Some("1")), ok(get("a"), 4, 5, Some("1"))]);
        assert!(matches!(&verdict, Verdict::NotLinearizable { key, .. } if key == "b"), "{verdict}");
    }

    /// A search that needs more steps than allowed answers Unknown instead of running on.
    #[test]
    fn exhausted_budget_is_unknown() {
        let ops = [ok(put("k", "a"), 0, 1, None), ok(get("k"), 2, 3, Some("a")), ok(get("k"), 4, 5, Some("a"))];
        let verdict = check_kv(&history(ops.clone()), Budget::steps_per_key(1));
        assert!(
            matches!(&verdict, Verdict::Unknown { key, reason: UnknownReason::BudgetExhausted { steps } } if key == "k" && *steps >= 1),
            "{verdict}"
        );
        assert!(check_kv(&history(ops), Budget::default()).is_linearizable());
    }

    /// A definite violation on one key outweighs an undecided one on another.
    #[test]
    fn violation_outweighs_unknown() {
        // Key "a" needs a step per write and more; the lone bad read on "b" fails within three.
        let writes_and_reads = (0..10u64).flat_map(|step| {
            let value = step.to_string();
            [ok(put("a", &value), 4 * step, 4 * step + 1, None), ok(get("a"), 4 * step + 2, 4 * step + 3, Some(&value))]
        });
        let ops: Vec<_> = writes_and_reads.chain([ok(get("b"), 0, 1, Some("x"))]).collect();
        let only_a = check_kv(&history(ops[..20].to_vec()), Budget::steps_per_key(4));
        assert!(matches!(only_a, Verdict::Unknown { .. }), "{only_a}");
        let verdict = check_kv(&history(ops), Budget::steps_per_key(4));
        assert!(matches!(&verdict, Verdict::NotLinearizable { key, .. } if key == "b"), "{verdict}");
    }

    /// Malformed records (completion before invocation, a get answered like a put) are tolerated.
    #[test]
    fn malformed_history_does_not_panic() {
        let backwards = ok(put("k", "a"), 10, 5, None);
        let mismatched = Operation {
            client: 0,
            op: get("k"),
            invoke_ms: 0,
            outcome: Outcome::Ok { complete_ms: 1, result: KvResult::PutOk },
        };
        assert_linearizable([backwards, mismatched, ok(get("k"), 11, 12, Some("a"))]);
    }

    /// A timed-out write that no remaining read could use is not listed among the suspects.
    #[test]
    fn explanation_omits_irrelevant_timed_out_writes() {
        let explanation = assert_violation([
            ok(put("k", "b"), 0, 1, None),
            lost(put("k", "b"), 0),
            ok(get("k"), 2, 3, Some("b")),
            ok(put("k", "c"), 4, 5, None),
            ok(get("k"), 6, 7, Some("z")),
        ]);
        let stuck: Vec<_> = explanation.unplaceable.iter().map(|(id, _)| id.index()).collect();
        assert_eq!(stuck, [4]);
    }

    /// The report shows the prefix, the value it leaves and the operation that cannot follow.
    #[test]
    fn explanation_reads_well() {
        let verdict = verdict([ok(put("k", "a"), 0, 1, None), ok(get("k"), 2, 3, Some("z"))]);
        let expected = "key \"k\" is not linearizable\n\
            longest linearizable prefix: 1 ops, ending with:\n  \
            #0 client 0 put(\"k\", \"a\") [0, 1] -> ok\n\
            value after it: \"a\"\n\
            none of these fits next, yet one must take effect before #1 completes:\n  \
            #1 client 1 get(\"k\") [2, 3] -> \"z\"\n";
        assert_eq!(verdict.to_string(), expected);
    }

    /// What one planned operation does in the register simulation below.
    #[derive(Clone, Copy, Debug)]
    enum Fate {
        /// Acknowledged; took effect between invocation and reply.
        Ok,
        /// The client gave up, but the operation took effect, possibly much later.
        LostAfterEffect,
        /// The client gave up and the operation never took effect.
        LostBeforeEffect,
        Refused,
    }

    #[derive(Clone, Debug)]
    struct Plan {
        client: usize,
        key: usize,
        kind: u8,
        value: u32,
        think_ms: u64,
        effect_ms: u64,
        reply_ms: u64,
        fate: Fate,
    }

    impl Plan {
        fn op(&self) -> KvOp {
            let key = format!("k{}", self.key);
            match self.kind {
                0 => KvOp::Put { key, value: format!("v{}", self.value) },
                1 => KvOp::Get { key },
                _ => KvOp::Delete { key },
            }
        }
    }

    fn fate(roll: u8) -> Fate {
        match roll {
            0 => Fate::LostAfterEffect,
            1 => Fate::LostBeforeEffect,
            2 => Fate::Refused,
            _ => Fate::Ok,
        }
    }

    /// Runs the plans against a real map whose operations take effect at chosen instants within
    /// their intervals, so the recorded history is linearizable by construction.
    fn simulate(plans: &[Plan], clients: usize) -> History {
        let (mut ops, mut effects) = schedule(plans, clients);
        // Operations taking effect in the same millisecond may do so in any order; plan order is one.
        effects.sort_unstable();
        let mut store = BTreeMap::new();
        for (_, index) in effects {
            let operation: &mut Operation = &mut ops[index];
            match &operation.op {
                KvOp::Put { key, value } => {
                    store.insert(key.clone(), value.clone());
                }
                KvOp::Delete { key } => {
                    store.remove(key);
                }
                KvOp::Get { key } => {
                    if let Outcome::Ok { result, .. } = &mut operation.outcome {
                        *result = KvResult::GetOk(store.get(key).cloned());
                    }
                }
            }
        }
        let mut history = History::new();
        for operation in ops {
            history.push(operation);
        }
        history
    }

    /// Gives each planned operation its client's next free time, its outcome, and when (if ever)
    /// it takes effect, as `(effect_ms, op index)`. Reads are answered later, by `simulate`.
    fn schedule(plans: &[Plan], clients: usize) -> (Vec<Operation>, Vec<(SimMillis, usize)>) {
        let mut free_ms = vec![0; clients];
        let mut ops = Vec::new();
        let mut effects = Vec::new();
        for plan in plans {
            let client = plan.client % clients;
            let invoke_ms = free_ms[client] + plan.think_ms;
            let op = plan.op();
            let gave_up_ms = invoke_ms + plan.reply_ms;
            let (outcome, effect_ms, next_free_ms) = match plan.fate {
                Fate::Ok => {
                    let effect_ms = invoke_ms + plan.effect_ms;
                    let complete_ms = effect_ms + plan.reply_ms;
                    (Outcome::Ok { complete_ms, result: placeholder_reply(&op) }, Some(effect_ms), complete_ms)
                }
                // Takes effect possibly long after its client gave up and moved on.
                Fate::LostAfterEffect => (Outcome::Indeterminate, Some(invoke_ms + 7 * plan.effect_ms), gave_up_ms),
                Fate::LostBeforeEffect => (Outcome::Indeterminate, None, gave_up_ms),
                Fate::Refused => (Outcome::Failed, None, gave_up_ms),
            };
            free_ms[client] = next_free_ms;
            effects.extend(effect_ms.map(|effect_ms| (effect_ms, ops.len())));
            ops.push(Operation { client: client as u32, op, invoke_ms, outcome });
        }
        (ops, effects)
    }

    fn placeholder_reply(op: &KvOp) -> KvResult {
        match op {
            KvOp::Put { .. } => KvResult::PutOk,
            KvOp::Get { .. } => KvResult::GetOk(None),
            KvOp::Delete { .. } => KvResult::DeleteOk,
        }
    }

    fn plan(clients: usize, keys: usize, values: u32) -> impl Strategy<Value = Plan> {
        (0..clients, 0..keys, 0u8..3, 0..values, 0u64..3, 0u64..4, 0u64..4, 0u8..12).prop_map(
            |(client, key, kind, value, think_ms, effect_ms, reply_ms, roll)| Plan {
                client,
                key,
                kind,
                value,
                think_ms,
                effect_ms,
                reply_ms,
                fate: fate(roll),
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever the concurrency, timeouts and tied timestamps, a real register's history passes.
        #[test]
        fn simulated_register_histories_are_linearizable(
            clients in 1usize..8,
            plans in proptest::collection::vec(plan(8, 3, 4), 0..80),
        ) {
            let history = simulate(&plans, clients);
            let verdict = check_kv(&history, Budget::default());
            prop_assert!(verdict.is_linearizable(), "{}\n{:#?}", verdict, history.ops());
        }

        /// In a sequential history every read has exactly one right answer; any other is caught.
        #[test]
        fn mutated_read_in_sequential_history_is_caught(
            plans in proptest::collection::vec(plan(1, 2, 4), 1..60),
            pick in any::<prop::sample::Index>(),
            to_absent in any::<bool>(),
        ) {
            let sequential: Vec<Plan> =
                plans.into_iter().map(|plan| Plan { think_ms: plan.think_ms + 1, fate: Fate::Ok, ..plan }).collect();
            let mut ops = simulate(&sequential, 1).ops().to_vec();
            let reads: Vec<usize> =
                (0..ops.len()).filter(|&index| matches!(ops[index].op, KvOp::Get { .. })).collect();
            prop_assume!(!reads.is_empty());
            if let Outcome::Ok { result: KvResult::GetOk(seen), .. } = &mut ops[*pick.get(&reads)].outcome {
                *seen = match seen.take() {
                    Some(_) if to_absent => None,
                    Some(value) => Some(format!("{value}'")),
                    None => Some("never written".to_owned()),
                };
            }
            let verdict = check_kv(&history(ops), Budget::default());
            prop_assert!(matches!(verdict, Verdict::NotLinearizable { .. }), "{}", verdict);
        }
    }

    /// Every ordering of the operations that real time allows, tried one by one: the definition
    /// of linearizability, with no cleverness to get wrong.
    fn brute_force(ops: &[Operation]) -> bool {
        let relevant: Vec<&Operation> = ops.iter().filter(|operation| observation(operation).is_some()).collect();
        let mut placed = vec![false; relevant.len()];
        brute_force_from(&relevant, &mut placed, None)
    }

    fn brute_force_from(ops: &[&Operation], placed: &mut [bool], value: Option<&str>) -> bool {
        let completion = |operation: &Operation| match operation.outcome {
            Outcome::Ok { complete_ms, .. } => Some(complete_ms),
            _ => None,
        };
        let unplaced: Vec<usize> = (0..ops.len()).filter(|&index| !placed[index]).collect();
        if unplaced.iter().all(|&index| completion(ops[index]).is_none()) {
            return true;
        }
        for &next in &unplaced {
            let blocked =
                unplaced.iter().any(|&other| completion(ops[other]).is_some_and(|ms| ms < ops[next].invoke_ms));
            let value_after = match (&ops[next].op, &ops[next].outcome) {
                (KvOp::Put { value, .. }, _) => Some(Some(value.as_str())),
                (KvOp::Delete { .. }, _) => Some(None),
                (KvOp::Get { .. }, Outcome::Ok { result: KvResult::GetOk(seen), .. }) => {
                    (seen.as_deref() == value).then_some(value)
                }
                (KvOp::Get { .. }, _) => None,
            };
            let Some(value_after) = value_after.filter(|_| !blocked) else { continue };
            placed[next] = true;
            let found = brute_force_from(ops, placed, value_after);
            placed[next] = false;
            if found {
                return true;
            }
        }
        false
    }

    /// Any small single-key operation: random interval, random reply, random outcome.
    fn arbitrary_op() -> impl Strategy<Value = Operation> {
        (0u8..3, 0u32..3, any::<bool>(), 0u64..8, 0u64..4, 0u8..6).prop_map(
            |(kind, value, absent, invoke_ms, length_ms, roll)| {
                let op =
                    Plan { client: 0, key: 0, kind, value, think_ms: 0, effect_ms: 0, reply_ms: 0, fate: Fate::Ok }
                        .op();
                let result = match op {
                    KvOp::Get { .. } => KvResult::GetOk((!absent).then(|| format!("v{value}"))),
                    _ => placeholder_reply(&op),
                };
                // Indeterminate ops are a third of the mix: the reductions for them need the scrutiny.
                let outcome = match roll {
                    0 | 1 => Outcome::Indeterminate,
                    2 => Outcome::Failed,
                    _ => Outcome::Ok { complete_ms: invoke_ms + length_ms, result },
                };
                Operation { client: 0, op, invoke_ms, outcome }
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// On small arbitrary histories, linearizable or not, the search agrees with brute force.
        #[test]
        fn agrees_with_brute_force(ops in proptest::collection::vec(arbitrary_op(), 0..8)) {
            let expected = brute_force(&ops);
            let verdict = check_kv(&history(ops), Budget::default());
            let undecided = matches!(verdict, Verdict::Unknown { .. });
            prop_assert!(!undecided);
            prop_assert_eq!(verdict.is_linearizable(), expected, "{}", verdict);
        }
    }

    /// Dominance in the memo cuts exactly what the plain memo would fail on: on single-key
    /// histories with repeated values, many timeouts and one corrupted read, both agree. (Small
    /// brute-force cases rarely build pools of same-valued timed-out writes big enough to tell.)
    #[test]
    fn dominance_agrees_with_exact_memo() {
        let mut rng = SplitMix(99);
        for _ in 0..3_000 {
            let plans: Vec<Plan> = (0..20 + rng.below(40))
                .map(|_| Plan {
                    client: rng.below(4) as usize,
                    key: 0,
                    kind: rng.below(3) as u8,
                    value: rng.below(3) as u32,
                    think_ms: rng.below(3),
                    effect_ms: rng.below(6),
                    reply_ms: rng.below(6),
                    fate: fate(rng.below(8) as u8),
                })
                .collect();
            let mut ops = simulate(&plans, 4).ops().to_vec();
            let read = rng.below(ops.len() as u64) as usize;
            if let Outcome::Ok { result: result @ KvResult::GetOk(_), .. } = &mut ops[read].outcome {
                *result = KvResult::GetOk((rng.below(3) > 0).then(|| format!("v{}", rng.below(3))));
            }
            let history = history(ops);
            let budget = Budget::steps_per_key(u64::MAX);
            let exact = check_kv_with(&history, budget, Memo::Exact);
            let dominance = check_kv_with(&history, budget, Memo::Dominance);
            assert_eq!(exact.is_linearizable(), dominance.is_linearizable(), "{exact}\n{dominance}\n{history:#?}");
        }
    }

    /// Deterministic stand-in for proptest where a fixed large input is wanted.
    struct SplitMix(u64);

    impl SplitMix {
        fn below(&mut self, bound: u64) -> u64 {
            self.0 = self.0.wrapping_add(1);
            splitmix64(self.0) % bound
        }
    }

    /// Plans shaped like a faulty simulator run: mostly quick operations with unique values, some
    /// that hang for up to two seconds, and `lost_percent` whose client times out.
    fn faulty_run_plans(seed: u64, ops: usize, clients: usize, keys: u64, lost_percent: u64) -> Vec<Plan> {
        let mut rng = SplitMix(seed);
        (0..ops)
            .map(|_| {
                let slow = rng.below(10) == 0;
                let roll = rng.below(100);
                let fate = match roll {
                    _ if roll < lost_percent / 2 => Fate::LostAfterEffect,
                    _ if roll < lost_percent => Fate::LostBeforeEffect,
                    _ if roll < lost_percent + 2 => Fate::Refused,
                    _ => Fate::Ok,
                };
                Plan {
                    client: rng.below(clients as u64) as usize,
                    key: rng.below(keys) as usize,
                    kind: rng.below(3) as u8,
                    value: rng.below(u64::from(u32::MAX)) as u32,
                    think_ms: rng.below(20),
                    effect_ms: rng.below(if slow { 1_000 } else { 5 }),
                    reply_ms: rng.below(if slow { 1_000 } else { 5 }),
                    fate,
                }
            })
            .collect()
    }

    /// A stale read buried in a long history full of timeouts is reported as a violation, not given
    /// up on: without the reductions for indeterminate writes this search ran out of budget.
    #[test]
    fn stale_read_among_timeouts_is_found() {
        let mut ops = simulate(&faulty_run_plans(11, 4_000, 10, 4, 10), 10).ops().to_vec();
        let stale = (ops.len() / 2..ops.len()).find_map(|read| {
            let KvOp::Get { key } = &ops[read].op else { return None };
            let is_ok = matches!(ops[read].outcome, Outcome::Ok { result: KvResult::GetOk(Some(_)), .. });
            // A value acknowledged long (2 s) before the read was invoked, and overwritten since.
            let old = ops[..read].iter().rev().find_map(|earlier| match (&earlier.op, &earlier.outcome) {
                (KvOp::Put { key: put_key, value }, Outcome::Ok { complete_ms, .. })
                    if put_key == key && complete_ms + 2_000 < ops[read].invoke_ms =>
                {
                    Some(value.clone())
                }
                _ => None,
            })?;
            is_ok.then_some((read, old))
        });
        let Some((read, old)) = stale else { panic!("the generated history has no read to corrupt") };
        if let Outcome::Ok { result, .. } = &mut ops[read].outcome {
            *result = KvResult::GetOk(Some(old));
        }
        let verdict = check_kv(&history(ops), Budget::default());
        assert!(matches!(verdict, Verdict::NotLinearizable { .. }), "{verdict}");
    }

    /// A simulator-sized history (5k ops, 8 clients, 10 keys, some timeouts) checks quickly. The
    /// one-second bound is asserted in release builds only: `cargo test -p cairn-sim --release`.
    #[test]
    fn benchmark_5k_ops_8_clients_10_keys() {
        let mut rng = SplitMix(7);
        let plans: Vec<Plan> = (0..5_000)
            .map(|_| Plan {
                client: rng.below(8) as usize,
                key: rng.below(10) as usize,
                kind: rng.below(3) as u8,
                value: rng.below(1_000) as u32,
                think_ms: rng.below(5),
                effect_ms: rng.below(10),
                reply_ms: rng.below(10),
                fate: fate(rng.below(40) as u8),
            })
            .collect();
        let history = simulate(&plans, 8);
        let started = Instant::now();
        let verdict = check_kv(&history, Budget::default());
        let elapsed = started.elapsed();
        println!("checked {} ops in {elapsed:?}", history.len());
        assert!(verdict.is_linearizable(), "{verdict}");
        if !cfg!(debug_assertions) {
            assert!(elapsed.as_millis() < 1_000, "took {elapsed:?}");
        }
    }
}
