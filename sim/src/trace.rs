//! The event trace of a run: every fault, leader change and client operation, in order, with its
//! simulated time. Its digest identifies the run: the same seed must give the same digest.

use std::sync::{Arc, Mutex};

/// A shared, append-only list of events.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    events: Arc<Mutex<Vec<String>>>,
}

impl Trace {
    /// Append `event`, stamped with the simulated time in milliseconds.
    pub fn record(&self, sim_ms: u64, event: impl std::fmt::Display) {
        self.events.lock().expect("trace lock").push(format!("{sim_ms:>9} {event}"));
    }

    pub fn len(&self) -> usize {
        self.events.lock().expect("trace lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// FNV-1a over every event line: stable across runs, builds and platforms.
    pub fn digest(&self) -> u64 {
        let events = self.events.lock().expect("trace lock");
        let mut hash = 0xcbf2_9ce4_8422_2325_u64;
        for line in events.iter() {
            hash = cairn::raft::fnv1a64_continue(hash, line.as_bytes());
            hash = cairn::raft::fnv1a64_continue(hash, b"\n");
        }
        hash
    }

    /// The last `n` events, for failure reports.
    pub fn tail(&self, n: usize) -> Vec<String> {
        let events = self.events.lock().expect("trace lock");
        events[events.len().saturating_sub(n)..].to_vec()
    }

    /// All events (for `--trace` output).
    pub fn lines(&self) -> Vec<String> {
        self.events.lock().expect("trace lock").clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The digest depends on the events and their order, nothing else.
    #[test]
    fn digest_is_a_function_of_the_events() {
        let (a, b, c) = (Trace::default(), Trace::default(), Trace::default());
        for t in [&a, &b] {
            t.record(1, "x");
            t.record(2, "y");
        }
        c.record(2, "y");
        c.record(1, "x");
        assert_eq!(a.digest(), b.digest());
        assert_ne!(a.digest(), c.digest());
    }
}
