//! Health checks: running script, HTTP, TCP and TTL checks and reporting their status.
//!
//! Why it is shaped this way:
//! - One scheduler for every kind ([`schedule`]), a pure step function over time passed in, so
//!   Consul's rules (staggered first runs, thresholds, TTL expiry) are tested against a fake
//!   clock and replay exactly in the simulator, instead of one timer loop per check type.
//! - Every effect on the world goes through the [`Prober`] trait: [`RealProber`] runs processes
//!   and opens sockets, [`ScriptedProber`] answers what a test or scenario set, per check.
//! - [`CheckRunner`] is the thin shell: a task that feeds the schedule tokio's time (madsim's in
//!   the simulator), runs probes on tasks, and sends [`CheckUpdate`]s to the agent's local state,
//!   which owns what the catalog sees. Alias checks and `deregister_critical_service_after`
//!   read that local state, so they live there, not here.

pub mod prober;
pub mod real;
pub mod runner;
pub mod schedule;

pub use prober::{Probe, ProbeFuture, ProbeResult, Prober, ScriptedProber};
pub use real::RealProber;
pub use runner::{CheckRunner, CheckSource, RunnerConfig, RunnerStats, TtlError, UpsertError};
pub use schedule::{CheckUpdate, OUTPUT_LEN_MAX};
