//! Structural rules of a reachable [`super::State`], as a typed report of the first one broken.
//!
//! `apply` keeps these by construction. They are checked where a state arrives from outside
//! (a snapshot from disk or another server), and the property tests check them after every step.

use thiserror::Error;

/// A table of the state, for naming where a rule broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Kv,
    Tombstones,
    Nodes,
    Services,
    Checks,
    /// The per-service-name index (instances and index of each live service name).
    ServiceNames,
}

/// The first structural rule a state breaks. Keys of two-part tables read `node/id`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Inconsistency {
    #[error("{table:?} index is ahead of the last applied index")]
    TableIndexAhead { table: Table },
    #[error("{table:?} row stored under {key:?} names a different key")]
    KeyMismatch { table: Table, key: String },
    #[error("{table:?} row {key:?} has indexes out of order (0, create > modify, or past its table index)")]
    RowIndexes { table: Table, key: String },
    #[error("{table:?} row {key:?} refers to a node or service that does not exist")]
    Orphan { table: Table, key: String },
    #[error("{table:?} row {key:?} disagrees with the row it was derived from")]
    StaleDerived { table: Table, key: String },
}
