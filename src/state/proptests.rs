//! Property tests of the whole state machine over random command sequences.
//!
//! Names are drawn from small pools so that sequences collide on the same keys, nodes, services
//! and checks: that is where the interesting rules (unchanged rewrites, check-and-set, renames,
//! cascading deletes) fire.

use std::collections::BTreeMap;

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

use super::*;

const KEYS: &[&str] = &["", "a", "a/", "a/b", "a/c", "ab", "b/x", "b/x/y"];
const PREFIXES: &[&str] = &["", "a", "a/", "b/", "b/x/", "c"];
const VALUES: &[&[u8]] = &[b"", b"1", b"2"];
/// Node names, the empty one rarer than the others.
const NODES: &[&str] = &["", "n1", "n2", "n3", "n1", "n2", "n3"];

/// How a check-and-set picks its expected index: resolved against the state when applied, since
/// a strategy cannot see the state.
#[derive(Debug, Clone)]
enum Expect {
    Current,
    Stale(u64),
}

#[derive(Debug, Clone)]
enum KvOp {
    Set { key: String, value: Bytes, flags: u64 },
    Cas { key: String, value: Bytes, flags: u64, expect: Expect },
    Delete { key: String },
    DeleteCas { key: String, expect: Expect },
    DeleteTree { prefix: String },
}

#[derive(Debug, Clone)]
enum Step {
    Kv(KvOp),
    Catalog(CatalogCommand),
    /// An entry without a command.
    Advance,
    /// Reap tombstones up to half the current index.
    Reap,
}

fn expect() -> impl Strategy<Value = Expect> {
    prop_oneof![Just(Expect::Current), (0u64..30).prop_map(Expect::Stale)]
}

fn kv_op() -> impl Strategy<Value = KvOp> {
    let key = || select(KEYS).prop_map(str::to_owned);
    let value = || select(VALUES).prop_map(Bytes::from_static);
    prop_oneof![
        3 => (key(), value(), 0u64..2).prop_map(|(key, value, flags)| KvOp::Set { key, value, flags }),
        3 => (key(), value(), 0u64..2, expect())
            .prop_map(|(key, value, flags, expect)| KvOp::Cas { key, value, flags, expect }),
        2 => key().prop_map(|key| KvOp::Delete { key }),
        2 => (key(), expect()).prop_map(|(key, expect)| KvOp::DeleteCas { key, expect }),
        1 => select(PREFIXES).prop_map(|prefix| KvOp::DeleteTree { prefix: prefix.to_owned() }),
    ]
}

fn resolve(op: &KvOp, kv: &Kv) -> KvCommand {
    let expected = |key: &str, expect: &Expect| match expect {
        Expect::Current => kv.get(key).map_or(0, |entry| entry.modify_index),
        Expect::Stale(index) => *index,
    };
    match op.clone() {
        KvOp::Set { key, value, flags } => KvCommand::Set { key, value, flags },
        KvOp::Cas { key, value, flags, expect } => {
            let expected_modify_index = expected(&key, &expect);
            KvCommand::Cas { key, value, flags, expected_modify_index }
        }
        KvOp::Delete { key } => KvCommand::Delete { key },
        KvOp::DeleteCas { key, expect } => {
            let expected_modify_index = expected(&key, &expect);
            KvCommand::DeleteCas { key, expected_modify_index }
        }
        KvOp::DeleteTree { prefix } => KvCommand::DeleteTree { prefix },
    }
}

fn service_definition() -> impl Strategy<Value = ServiceDefinition> {
    let tags = vec(select(&["a", "b"][..]).prop_map(str::to_owned), 0..3);
    (select(&["", "web-1", "db-1"][..]), select(&["", "web", "db", "web", "db"][..]), tags, 0u16..2).prop_map(
        |(id, service, tags, port)| ServiceDefinition {
            id: id.into(),
            service: service.into(),
            tags,
            port,
            ..Default::default()
        },
    )
}

fn check_definition() -> impl Strategy<Value = CheckDefinition> {
    let status = select(&[CheckStatus::Passing, CheckStatus::Warning, CheckStatus::Critical][..]);
    let check_id = select(&["", "c1", "c2", "c1", "c2", SERF_HEALTH_CHECK_ID][..]);
    let service_id = select(&["", "", "web-1", "db-1", "web"][..]);
    (check_id, select(&["", "n"][..]), service_id, status).prop_map(|(check_id, name, service_id, status)| {
        CheckDefinition {
            check_id: check_id.into(),
            name: name.into(),
            service_id: service_id.into(),
            status,
            ..Default::default()
        }
    })
}

fn registration() -> impl Strategy<Value = Registration> {
    let node = select(NODES);
    let node_id = select(&["", "u1", "u2", "u3"][..]);
    let address = select(&["", "10.0.0.1", "10.0.0.2", "10.0.0.1", "10.0.0.2"][..]);
    let skip = prop::bool::weighted(0.3);
    let service = prop::option::weighted(0.6, service_definition());
    (node, node_id, address, skip, service, vec(check_definition(), 0..3)).prop_map(
        |(node, node_id, address, skip_node_update, service, checks)| Registration {
            node: node.into(),
            node_id: node_id.into(),
            address: address.into(),
            skip_node_update,
            service,
            checks,
            ..Default::default()
        },
    )
}

fn deregistration() -> impl Strategy<Value = Deregistration> {
    let id = |pool: &'static [&'static str]| prop::option::of(select(pool).prop_map(str::to_owned));
    (select(NODES), id(&["", "web-1", "db-1", "web"]), id(&["", "c1", "c2"]))
        .prop_map(|(node, service_id, check_id)| Deregistration { node: node.into(), service_id, check_id })
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => kv_op().prop_map(Step::Kv),
        5 => registration().prop_map(|r| Step::Catalog(CatalogCommand::Register(r))),
        2 => deregistration().prop_map(|d| Step::Catalog(CatalogCommand::Deregister(d))),
        1 => Just(Step::Advance),
        1 => Just(Step::Reap),
    ]
}

/// Steps with the gap to the previous log index (Raft indexes increase, not always by one).
fn steps() -> impl Strategy<Value = Vec<(Step, u64)>> {
    vec((step(), 1u64..3), 0..40)
}

/// Run one step at the next index and return its outcome (`Done` for non-commands).
fn run(state: &mut State, step: &Step, gap: u64) -> Outcome {
    let index = state.last_index() + gap;
    match step {
        Step::Kv(op) => {
            let command = Command::Kv(resolve(op, state.kv()));
            state.apply(index, &command)
        }
        Step::Catalog(command) => state.apply(index, &Command::Catalog(command.clone())),
        Step::Advance => {
            state.advance(index);
            Outcome::Done
        }
        Step::Reap => {
            state.reap_tombstones(state.last_index() / 2);
            Outcome::Done
        }
    }
}

fn run_all(steps: &[(Step, u64)]) -> State {
    let mut state = State::default();
    for (step, gap) in steps {
        run(&mut state, step, *gap);
    }
    state
}

/// Every index a blocking query or checker may watch, in one comparable tuple.
fn watched_indexes(state: &State) -> [u64; 5] {
    let catalog = state.catalog();
    [
        state.last_index(),
        state.kv().table_index(),
        catalog.nodes_index(),
        catalog.services_index(),
        catalog.checks_index(),
    ]
}

/// Every row's (create, modify) index pair.
fn row_indexes(state: &State) -> Vec<(u64, u64)> {
    let catalog = state.catalog();
    let kv = state.kv().list("").map(|e| (e.create_index, e.modify_index));
    let nodes = catalog.nodes().map(|n| (n.create_index, n.modify_index));
    let services =
        catalog.nodes().flat_map(|n| catalog.services_of_node(&n.node)).map(|s| (s.create_index, s.modify_index));
    let checks = catalog.checks().map(|c| (c.create_index, c.modify_index));
    kv.chain(nodes).chain(services).chain(checks).collect()
}

proptest! {
    /// Two replicas applying the same log agree, also when one of them restarts from a snapshot
    /// halfway: a snapshot carries everything that decides later outcomes.
    #[test]
    fn replicas_agree(steps in steps(), cut in 0usize..40) {
        let mut straight = State::default();
        let mut restarted = State::default();
        let cut = cut.min(steps.len());
        for (i, (step, gap)) in steps.iter().enumerate() {
            if i == cut {
                restarted = State::from_snapshot(&restarted.to_snapshot()).unwrap();
            }
            let expected = run(&mut straight, step, *gap);
            prop_assert_eq!(run(&mut restarted, step, *gap), expected);
        }
        prop_assert_eq!(straight.digest(), restarted.digest());
        prop_assert_eq!(straight, restarted);
    }

    /// Any reachable state survives a snapshot round trip, byte for byte.
    #[test]
    fn snapshot_round_trips(steps in steps()) {
        let state = run_all(&steps);
        let bytes = state.to_snapshot();
        let decoded = State::from_snapshot(&bytes).unwrap();
        prop_assert_eq!(decoded.to_snapshot(), bytes);
        prop_assert_eq!(decoded, state);
    }

    /// Indexes never move back; every row sits between 1 and the last index with create <= modify;
    /// the structural check holds after every step; and a command that did not succeed changed
    /// nothing but the global index.
    #[test]
    fn indexes_only_grow_and_failures_change_nothing(steps in steps()) {
        let mut state = State::default();
        for (step, gap) in &steps {
            let before = state.clone();
            let outcome = run(&mut state, step, *gap);
            let grew = watched_indexes(&before).iter().zip(watched_indexes(&state)).all(|(old, new)| *old <= new);
            prop_assert!(grew, "an index went back after {:?}", step);
            for (create, modify) in row_indexes(&state) {
                prop_assert!(1 <= create && create <= modify && modify <= state.last_index());
            }
            prop_assert_eq!(state.check_consistency(), Ok(()));
            if outcome != Outcome::Done {
                prop_assert_eq!((state.kv(), state.catalog()), (before.kv(), before.catalog()));
            }
        }
    }

    /// The KV store behaves like a plain map of (value, flags) with modify indexes, and a blocking
    /// query on any key or prefix whose contents changed sees exactly the index of the change.
    #[test]
    fn kv_matches_model(ops in vec((kv_op(), 1u64..3), 0..60)) {
        let mut state = State::default();
        let mut model = KvModel::default();
        for (op, gap) in &ops {
            let index = state.last_index() + gap;
            let command = resolve(op, state.kv());
            let before = model.clone();
            let expected = model.apply(index, &command);
            prop_assert_eq!(state.apply(index, &Command::Kv(command.clone())), expected);
            prop_assert_eq!(KvModel::of(state.kv()), model.clone());
            for prefix in PREFIXES.iter().chain(KEYS) {
                if before.under(prefix) != model.under(prefix) {
                    prop_assert_eq!(state.kv().index_for_prefix(prefix), index.max(1), "prefix {:?}", prefix);
                }
            }
            for key in KEYS {
                if before.0.get(*key) != model.0.get(*key) {
                    prop_assert_eq!(state.kv().index_for_key(key), index.max(1), "key {:?}", key);
                }
            }
        }
    }

    /// A batch applies like its commands one after another, all at the batch's index: the same
    /// outcomes, the same contents as the model, and a consistent state.
    #[test]
    fn kv_batches_match_model(batches in vec((vec(kv_op(), 1..8), 1u64..3), 0..20)) {
        let mut state = State::default();
        let mut model = KvModel::default();
        for (ops, gap) in &batches {
            let index = state.last_index() + gap;
            let commands: Vec<KvCommand> = ops.iter().map(|op| resolve(op, state.kv())).collect();
            let expected: Vec<Outcome> = commands.iter().map(|c| model.apply(index, c)).collect();
            let batch: Vec<Command> = commands.into_iter().map(Command::Kv).collect();
            prop_assert_eq!(state.apply_batch(index, &batch), expected);
            prop_assert_eq!(KvModel::of(state.kv()), model.clone());
            prop_assert_eq!(state.last_index(), index);
            prop_assert!(state.check_consistency().is_ok());
        }
    }

    /// Decoding arbitrary bytes returns an error or a consistent state, and never panics.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..300)) {
        if let Ok(state) = State::from_snapshot(&bytes) {
            prop_assert_eq!(state.check_consistency(), Ok(()));
        }
        let mut versioned = vec![SNAPSHOT_VERSION];
        versioned.extend_from_slice(&bytes);
        if let Ok(state) = State::from_snapshot(&versioned) {
            prop_assert_eq!(state.check_consistency(), Ok(()));
        }
    }

    /// Corrupting a real snapshot (overwriting bytes, truncating) never panics the decoder, and
    /// whatever still decodes is a consistent state.
    #[test]
    fn corrupted_snapshots_never_panic(
        steps in steps(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut bytes = run_all(&steps).to_snapshot();
        for (at, byte) in edits {
            let at = at.index(bytes.len());
            bytes[at] = byte;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len()));
        }
        if let Ok(state) = State::from_snapshot(&bytes) {
            prop_assert_eq!(state.check_consistency(), Ok(()));
        }
    }
}

/// The reference KV: key → (value, flags, modify index), with Consul's rules written plainly.
#[derive(Debug, Clone, Default, PartialEq)]
struct KvModel(BTreeMap<String, (Bytes, u64, u64)>);

impl KvModel {
    fn of(kv: &Kv) -> KvModel {
        KvModel(kv.list("").map(|e| (e.key.clone(), (e.value.clone(), e.flags, e.modify_index))).collect())
    }

    fn under(&self, prefix: &str) -> Vec<(&String, &(Bytes, u64, u64))> {
        self.0.iter().filter(|(key, _)| key.starts_with(prefix)).collect()
    }

    fn modify_index(&self, key: &str) -> u64 {
        self.0.get(key).map_or(0, |(_, _, modify)| *modify)
    }

    fn apply(&mut self, index: u64, command: &KvCommand) -> Outcome {
        match command {
            KvCommand::Set { key, value, flags } => self.set(index, key, value, *flags),
            KvCommand::Cas { key, value, flags, expected_modify_index } => {
                if self.modify_index(key) != *expected_modify_index {
                    return Outcome::CasFailed;
                }
                self.set(index, key, value, *flags)
            }
            KvCommand::Delete { key } => {
                self.0.remove(key);
                Outcome::Done
            }
            KvCommand::DeleteCas { key, expected_modify_index } => {
                if self.0.contains_key(key) && self.modify_index(key) != *expected_modify_index {
                    return Outcome::CasFailed;
                }
                self.0.remove(key);
                Outcome::Done
            }
            KvCommand::DeleteTree { prefix } => {
                self.0.retain(|key, _| !key.starts_with(prefix.as_str()));
                Outcome::Done
            }
        }
    }

    fn set(&mut self, index: u64, key: &str, value: &Bytes, flags: u64) -> Outcome {
        let unchanged = self.0.get(key).is_some_and(|(v, f, _)| v == value && *f == flags);
        if !unchanged {
            self.0.insert(key.to_owned(), (value.clone(), flags, index));
        }
        Outcome::Done
    }
}
