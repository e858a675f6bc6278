//! No acknowledged write is lost.
//!
//! Linearizability implies this, but a failure here names the lost write directly. Every put
//! writes a value no other put writes, so the final value of a key names the write that produced
//! it. An acknowledged write `w` is lost when the final state is explained only by a write that
//! finished before `w` began (so `w` must have come later, yet left no trace).

use std::collections::BTreeMap;

use crate::history::{ClientId, History, KvOp, KvResult, Operation, Outcome};

/// When an operation's effect may have happened at the latest: its completion, or never-ending
/// for an indeterminate one.
fn latest_ms(op: &Operation) -> u64 {
    match op.outcome {
        Outcome::Ok { complete_ms, .. } => complete_ms,
        _ => u64::MAX,
    }
}

/// Check every key's final read (the last successful read by `final_reader`) against the writes.
pub fn check_acknowledged_writes(history: &History, final_reader: ClientId) -> Result<(), String> {
    let mut finals: BTreeMap<&str, Option<&str>> = BTreeMap::new();
    for op in history.ops().iter().filter(|op| op.client == final_reader) {
        if let (KvOp::Get { key }, Outcome::Ok { result: KvResult::GetOk(value), .. }) = (&op.op, &op.outcome) {
            finals.insert(key, value.as_deref());
        }
    }
    for (key, value) in finals {
        let writes: Vec<&Operation> = history
            .ops()
            .iter()
            .filter(|op| op.client != final_reader && op.op.key() == key && op.outcome != Outcome::Failed)
            .filter(|op| !matches!(op.op, KvOp::Get { .. }))
            .collect();
        check_key(key, value, &writes)?;
    }
    Ok(())
}

fn check_key(key: &str, value: Option<&str>, writes: &[&Operation]) -> Result<(), String> {
    // The writes that could have produced the final state.
    let explaining: Vec<&Operation> = writes
        .iter()
        .copied()
        .filter(|w| match (&w.op, value) {
            (KvOp::Put { value: written, .. }, Some(v)) => written == v,
            (KvOp::Delete { .. }, None) => true,
            _ => false,
        })
        .collect();
    if let Some(v) = value {
        if explaining.is_empty() {
            return Err(format!("key {key:?} ends with value {v:?}, which no client wrote"));
        }
    }
    // The final state came from the explaining write that may have happened latest.
    let last_possible = explaining.iter().map(|w| latest_ms(w)).max();
    for w in writes.iter().filter(|w| matches!(w.outcome, Outcome::Ok { .. })) {
        let lost = match last_possible {
            Some(latest) => latest < w.invoke_ms,
            // Absent at the end and never deleted: only "never written" explains it.
            None => true,
        };
        if lost {
            let shown = value.map_or("absent".to_string(), |v| format!("{v:?}"));
            return Err(format!("acknowledged write lost: {w}; key {key:?} ends as {shown}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client: ClientId, op: KvOp, invoke_ms: u64, outcome: Outcome) -> Operation {
        Operation { client, op, invoke_ms, outcome }
    }

    fn put(key: &str, value: &str) -> KvOp {
        KvOp::Put { key: key.into(), value: value.into() }
    }

    fn ok(complete_ms: u64, result: KvResult) -> Outcome {
        Outcome::Ok { complete_ms, result }
    }

    fn final_read(value: Option<&str>, at: u64) -> Operation {
        op(9, KvOp::Get { key: "k".into() }, at, ok(at + 1, KvResult::GetOk(value.map(str::to_string))))
    }

    fn history(ops: Vec<Operation>) -> History {
        let mut h = History::new();
        for o in ops {
            h.push(o);
        }
        h
    }

    /// The last acknowledged write is what the final read sees: nothing lost.
    #[test]
    fn last_write_survives() {
        let h = history(vec![
            op(1, put("k", "a"), 0, ok(5, KvResult::PutOk)),
            op(1, put("k", "b"), 10, ok(15, KvResult::PutOk)),
            final_read(Some("b"), 100),
        ]);
        assert!(check_acknowledged_writes(&h, 9).is_ok());
    }

    /// A final value from a write that finished before an acknowledged write began means that
    /// write was lost.
    #[test]
    fn older_value_at_the_end_is_a_loss() {
        let h = history(vec![
            op(1, put("k", "a"), 0, ok(5, KvResult::PutOk)),
            op(1, put("k", "b"), 10, ok(15, KvResult::PutOk)),
            final_read(Some("a"), 100),
        ]);
        let err = check_acknowledged_writes(&h, 9).unwrap_err();
        assert!(err.contains("\"b\""), "{err}");
    }

    /// An indeterminate write may take effect late, so it may legitimately be the final value.
    #[test]
    fn indeterminate_write_may_win() {
        let h = history(vec![
            op(1, put("k", "a"), 0, Outcome::Indeterminate),
            op(2, put("k", "b"), 10, ok(15, KvResult::PutOk)),
            final_read(Some("a"), 100),
        ]);
        assert!(check_acknowledged_writes(&h, 9).is_ok());
    }

    /// A key absent at the end although a write was acknowledged and nothing deleted it: lost.
    #[test]
    fn vanished_key_is_a_loss() {
        let h = history(vec![op(1, put("k", "a"), 0, ok(5, KvResult::PutOk)), final_read(None, 100)]);
        assert!(check_acknowledged_writes(&h, 9).is_err());
    }

    /// A value nobody wrote is reported as such.
    #[test]
    fn invented_value_is_reported() {
        let h = history(vec![final_read(Some("zzz"), 100)]);
        let err = check_acknowledged_writes(&h, 9).unwrap_err();
        assert!(err.contains("no client wrote"), "{err}");
    }
}
