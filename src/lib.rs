//! cairn: service discovery and configuration, proven by deterministic simulation.
//!
//! # Module map
//!
//! A cairn agent is a handful of parts wired together by [`node`], the composition root. Data flows
//! in one direction through them:
//!
//! ```text
//!   DNS client ──> dns ──(snapshot)──> state (server) | per-name view (client, via agent forward)
//!   HTTP client ──> http ──> server ──(write: Command)──> raft ──> log_store ──> storage (Disk)
//!                    │          │                          │
//!                    │          │ (forward to leader) rpc <┘ (AppendEntries, Vote, snapshots)
//!                    │          │
//!                    └──(read)──┴─> read barrier ──> state (the replicated state machine)
//!
//!   other agents <──UDP──> gossip ──(Membership view)──> agent (client: forward to a server)
//!                                                   ├──> server::bootstrap (start Raft)
//!                                                   └──> leader only: server::membership (Raft
//!                                                        configuration), reconcile (catalog) ──> write
//!
//!   config files, /v1/agent/* ──> agent::Registry (local state) ──(owed writes)──> anti_entropy ──> write
//!                                     │      ^                                        (client: AgentWrite RPC)
//!                        check defs   v      │ CheckUpdate
//!                              health::CheckRunner (schedule + prober)
//! ```
//!
//! - [`config`]: the typed agent configuration. Flags (Consul's single-dash spellings) and JSON or
//!   HCL config files are parsed and validated once, into [`config::AgentConfig`]; nothing
//!   downstream sees a string it has to parse again. That includes the services and health checks
//!   defined in config files ([`config::ServiceDefinition`], one [`config::CheckKind`] per check),
//!   which anti-entropy will register and the check scheduler run.
//! - [`state`]: the replicated state machine, a pure value. `State::apply(index, &Command)` is the only
//!   way it changes; it holds the catalog (nodes, services, checks) and the KV store with Consul's
//!   indexes. No I/O, no clock, no randomness: every replica that applies the same log is identical.
//! - [`storage`]: the [`storage::Disk`] trait, the one door to durable media, with a file
//!   implementation that fsyncs before it acknowledges and a simulated one that loses unsynced writes
//!   and tears the last one when its node crashes. Records are checksummed.
//! - [`raft`]: openraft glue. The segmented, checksummed Raft log and vote over a `Disk`
//!   ([`raft::log_store`]), the state machine adapter that applies committed entries to [`state`] and
//!   keeps snapshots ([`raft::state_machine`]), and the network adapter over [`rpc`].
//! - [`rpc`]: the server-to-server protocol on the server port (8300): length-bounded binary frames
//!   carrying Raft messages, forwarded writes, read-index requests and client agents' forwarded HTTP.
//! - [`server`]: the server role. Submits writes (forwarding them to the leader, which batches
//!   concurrent writes into one Raft entry), serves reads at the requested consistency (`default`
//!   and `consistent` go through a read-index barrier confirmed by a quorum, shared by concurrent
//!   reads; `stale` reads locally and reports the last leader contact), bootstraps the cluster once
//!   gossip shows `bootstrap_expect` servers, and starts elections on its own timer.
//! - [`gossip`]: SWIM membership among every agent (foca over UDP on the LAN port), with typed member
//!   metadata, a versioned bounded wire format, AES-GCM encryption and a keyring. It publishes the
//!   [`gossip::Membership`] view that the agent, the server's bootstrap and client forwarding read.
//! - [`health`]: runs the agent's script, HTTP, TCP and TTL checks. One pure scheduler
//!   ([`health::schedule`]) for every kind: first runs spread over the interval, Consul's
//!   `success_before_passing` / `failures_before_critical`, TTL expiry, a cap on probes running
//!   at once; time and a seed are arguments. Probes go through the [`health::Prober`] trait: the
//!   real one runs processes (through [`io`]) and opens sockets, the scripted one answers what a
//!   test or scenario set per check. [`health::CheckRunner`] is the task around them, sending a
//!   [`health::CheckUpdate`] whenever a check's status or output changes. Alias checks are not
//!   here: they read the agent's local state, so they run there.
//! - [`agent`]: the local agent, server or client: its name, its place in gossip, and its backend
//!   (a server answers from its own state, a client forwards to a server gossip shows); `-join`.
//!   It owns its services and checks: [`agent::local`] is the pure local state (each entry with
//!   an in-sync flag and a version, and the catalog writes still owed), [`agent::Registry`] the
//!   shell every change goes through (config files at start and on reload, the `/v1/agent/*`
//!   API, check results; API registrations persisted by [`agent::persist`]), and
//!   [`agent::anti_entropy`] the loop that writes what is owed at once and repairs drift in a
//!   periodic full sync, with backoff.
//! - [`reconcile`]: the leader keeps the catalog in step with the gossip pool (each member a node
//!   with a `serfHealth` check, servers with the `consul` service; members that leave are
//!   deregistered), as Consul's leader does. The Raft configuration follows gossip the same way,
//!   through [`server::membership`] (autopilot): new servers join as learners and are promoted,
//!   servers that leave or stay failed are removed. [`node`] starts both on every server; they
//!   act only while it leads.
//! - [`http`]: the `/v1/...` API, an axum router over [`agent`]: `/v1/agent/*` and the gossip
//!   keyring (`/v1/operator/keyring`, applied pool-wide by a gossip query) from the agent itself,
//!   the rest from [`server`] (or forwarded by a client): KV, the catalog (`/v1/catalog/*`:
//!   register and deregister, nodes, services) and health (`/v1/health/*`: instances with their
//!   checks, `?passing`), blocking queries on each. Consul's JSON shapes and headers.
//! - [`dns`]: the DNS interface (UDP and TCP on the DNS port): Consul's names
//!   (`web.service.consul`, `_web._tcp.service.consul`, `n1.node.consul`, `<hex>.addr.consul`)
//!   answered by a pure core from a catalog snapshot, with the catalog's own health rule
//!   ([`state::HealthBar`], shared with `?passing`). The shell picks the catalog: a server's own
//!   state within `max_stale` of its leader or its quorum's acknowledgement (else after a read
//!   barrier), with a memo of service answers per catalog index; on a client agent, a small
//!   catalog per name kept current by blocking queries through [`agent::ServerForwarder`].
//!   Untrusted bytes are checked before they are decoded; answers are written straight to wire
//!   bytes, each refused once EDNS, UDP or TCP's size is reached.
//! - [`cli`]: the `cairn` commands that talk to a running agent over HTTP (`members`, `join`,
//!   `leave`, `operator raft`, `keygen`, `keyring`), and `validate`, which checks config files.
//! - [`io`]: the thin shell over the runtime: the openraft runtime adapter, the seeded randomness
//!   source, socket shims, and the one place processes start (check scripts, [`io::process`]). `cfg(madsim)` appears only here (and in `sim/`), so the same agent code runs
//!   on real sockets and inside the simulator.
//! - [`node`]: the composition root. Builds the parts from an `AgentConfig` and a `Disk`, starts their
//!   tasks, and hands back a [`node::NodeHandle`]. Production (`main.rs`) and the simulator (`sim/`)
//!   both start agents through it.
//!
//! See `ARCHITECTURE.md` for the reasoning behind these boundaries.

pub mod agent;
pub mod cli;
pub mod config;
pub mod dns;
pub mod gossip;
pub mod health;
pub mod http;
pub mod io;
pub mod node;
pub mod raft;
pub mod reconcile;
pub mod rpc;
pub mod server;
pub mod state;
pub mod storage;
