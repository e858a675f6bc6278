//! Checkers: each judges one property of a finished run from what the run recorded, separately from
//! the workloads that produced the record, so a checker can be trusted (and tested) on its own.

pub mod catalog;
pub mod durability;
pub mod leadership;
pub mod linearizability;
