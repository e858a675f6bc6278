//! The cairn simulator: clusters of real cairn agents inside madsim's seeded world.
//!
//! A run ([`runner`]) reads a [`scenario`], builds the servers on simulated hosts with simulated
//! disks ([`cluster`]), drives them with workload clients over HTTP ([`workload`]) while injecting
//! the scenario's faults ([`faults`]), then heals everything and checks the invariants ([`check`])
//! against what the clients observed ([`history`]). Every random choice comes from the seed, so a
//! run is replayed exactly by its seed; its event [`trace`] digest proves it.
//!
//! Scenarios with client agents also register services on them and sample every server's
//! `?passing` answers ([`catalog_watch`]) while agents crash and return; scenarios that replace
//! servers check that the Raft configuration ends up holding exactly the servers in service.
//!
//! Gossip scenarios ([`scenario::GossipScenario`]) run a pool of client agents instead
//! ([`gossip_run`]) and check convergence, failure detection and false failures from the agents'
//! membership views.
//!
//! The pure parts (scenarios, histories, checkers, traces) build in both configurations and are
//! unit-tested normally; the parts that drive madsim build only with `--cfg madsim`.

pub mod check;
pub mod check_flaps;
pub mod history;
pub mod scenario;
pub mod trace;

#[cfg(madsim)]
pub mod catalog_watch;
#[cfg(madsim)]
pub mod cli;
#[cfg(madsim)]
pub mod cluster;
#[cfg(madsim)]
pub mod dns;
#[cfg(madsim)]
pub mod faults;
#[cfg(madsim)]
pub mod gossip_run;
#[cfg(madsim)]
pub mod http;
#[cfg(madsim)]
pub mod runner;
#[cfg(madsim)]
pub mod workload;
