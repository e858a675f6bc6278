//! Catalog reconciliation: the Raft leader keeps the catalog's nodes in step with the gossip pool.
//!
//! Gossip is the authority on which agents exist and whether they answer; the catalog is what
//! clients query. Consul's leader bridges the two (`agent/consul/leader.go`, `reconcileMember`
//! and `reconcileReaped`), and so does this module, with the same rules:
//! - Every alive (or suspect: suspicion may still be refuted) member of our datacenter is a
//!   catalog node at its gossip IP, under its node ID, with a node check `serfHealth` ("Serf
//!   Health Status") passing with "Agent alive and reachable". The node's tagged addresses and
//!   metadata, which the agent itself syncs, are carried over, not cleared.
//! - Servers also get the `consul` service on their server RPC port, which is how clients and DNS
//!   (`consul.service.consul`) find servers.
//! - A failed member's `serfHealth` turns critical ("Agent not live or unreachable") and the rest
//!   of the node is left alone, so its services drop out of `?passing` answers and DNS but come
//!   back the moment it does. A member that failed before it was ever registered is not added
//!   (Consul ignores such failed events too).
//! - A member that left, or that gossip reaped (gone from the view while the catalog still has
//!   its `serfHealth` check), is deregistered with its services and checks. Only nodes carrying a
//!   `serfHealth` check are reaped: nodes registered through `/v1/catalog/register` for external
//!   services have none and are never touched. The leader never deregisters itself; when it
//!   leaves, the next leader does (Consul: "deregistering self should be done by follower").
//! - A member that came back under its name with a new node ID replaces the old node: the old
//!   identity's node is deregistered first, since the catalog refuses a name held by a live node
//!   under another ID. Two members claiming one node ID resolve to the livelier one, so the two
//!   do not rename the node back and forth.
//!
//! [`plan`] is pure and idempotent: against a catalog that already matches it returns nothing,
//! so reconciling often costs no writes. [`run`] is the leader loop that plans and writes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::gossip::{Member, MemberStatus, Membership, Role};
use crate::rpc::message::WriteReply;
use crate::server::{Consistency, Server};
use crate::state::{
    Catalog, CatalogCommand, CheckDefinition, CheckStatus, Command, Deregistration, HealthCheck, Outcome, Registration,
    ServiceDefinition, ServiceInstance, SERF_HEALTH_CHECK_ID,
};

/// The name of the `serfHealth` check, as Consul shows it.
pub const SERF_HEALTH_CHECK_NAME: &str = "Serf Health Status";
/// `serfHealth`'s output while the member is alive.
pub const SERF_ALIVE_OUTPUT: &str = "Agent alive and reachable";
/// `serfHealth`'s output once the member has failed.
pub const SERF_FAILED_OUTPUT: &str = "Agent not live or unreachable";
/// The service (name and ID) every server carries in the catalog.
pub const CONSUL_SERVICE: &str = "consul";
/// How often the leader reconciles without a gossip change (Consul's `reconcile_interval`). The
/// periodic pass repairs what a lost write or a missed event left behind.
pub const RECONCILE_INTERVAL: Duration = Duration::from_secs(60);
/// Most commands queued in one write call: a batch's worth, so one reconcile of a large pool
/// holds a bounded number of pending replies.
const MAX_COMMANDS_PER_WRITE: usize = 512;

/// The commands that bring `catalog` in line with `gossip` for `datacenter`: deregistrations
/// first, then registrations (a node re-registered under a new identity needs its name free).
/// `local_node` is the leader itself, which is never deregistered.
pub fn plan(gossip: &Membership, catalog: &Catalog, datacenter: &str, local_node: &str) -> Vec<Command> {
    let mut deregister: BTreeSet<String> = BTreeSet::new();
    let mut register: Vec<Registration> = Vec::new();
    for member in owners(gossip, datacenter) {
        let name = member.name.as_str();
        match member.status {
            MemberStatus::Alive | MemberStatus::Suspect => {
                let replaced = held_by_another_identity(member, catalog);
                if replaced {
                    deregister.insert(name.to_owned());
                }
                register.extend(alive_registration(member, catalog, replaced));
            }
            MemberStatus::Failed => register.extend(failed_registration(member, catalog)),
            MemberStatus::Left => {
                if name != local_node && catalog.node(name).is_some() {
                    deregister.insert(name.to_owned());
                }
            }
        }
    }
    let reaped = catalog
        .checks()
        .filter(|check| check.check_id == SERF_HEALTH_CHECK_ID)
        .filter(|check| check.node != local_node && gossip.get(&check.node).is_none());
    deregister.extend(reaped.map(|check| check.node.clone()));

    let deregistrations = deregister.into_iter().map(|node| Deregistration { node, service_id: None, check_id: None });
    deregistrations
        .map(|d| Command::Catalog(CatalogCommand::Deregister(d)))
        .chain(register.into_iter().map(|r| Command::Catalog(CatalogCommand::Register(r))))
        .collect()
}

/// The members of `datacenter` the catalog should reflect: one per node ID (the livelier, then
/// the later generation, then the first name), plus every member without an ID.
fn owners<'a>(gossip: &'a Membership, datacenter: &'a str) -> Vec<&'a Member> {
    let mut by_id: BTreeMap<&str, &Member> = BTreeMap::new();
    let mut without_id = Vec::new();
    for member in gossip.iter().filter(|m| m.meta.datacenter == datacenter) {
        if member.meta.node_id.is_empty() {
            without_id.push(member);
            continue;
        }
        let rank = |m: &Member| (m.status, std::cmp::Reverse(m.generation));
        let held = by_id.entry(member.meta.node_id.as_str()).or_insert(member);
        if rank(member) < rank(held) {
            *held = member;
        }
    }
    by_id.into_values().chain(without_id).collect()
}

/// The catalog holds the member's name under another node ID: the agent was rebuilt with a new
/// identity, and the old node (with the old identity's services) must go.
fn held_by_another_identity(member: &Member, catalog: &Catalog) -> bool {
    let id = member.meta.node_id.as_str();
    catalog.node(&member.name).is_some_and(|node| !id.is_empty() && !node.id.is_empty() && node.id != id)
}

fn serf_check(status: CheckStatus) -> CheckDefinition {
    let output = if status == CheckStatus::Passing { SERF_ALIVE_OUTPUT } else { SERF_FAILED_OUTPUT };
    CheckDefinition {
        check_id: SERF_HEALTH_CHECK_ID.into(),
        name: SERF_HEALTH_CHECK_NAME.into(),
        status,
        output: output.into(),
        ..CheckDefinition::default()
    }
}

/// The `consul` service of a server member, with the metadata Consul's leader gives it.
fn consul_service(member: &Member) -> Option<ServiceDefinition> {
    let port = member.meta.server_port.filter(|_| member.meta.role == Role::Server)?;
    let meta = BTreeMap::from([
        ("non_voter".to_owned(), "false".to_owned()),
        ("read_replica".to_owned(), "false".to_owned()),
        ("raft_version".to_owned(), "3".to_owned()),
        ("serf_protocol_current".to_owned(), member.meta.protocol.to_string()),
        ("version".to_owned(), member.meta.build.clone()),
    ]);
    Some(ServiceDefinition {
        id: CONSUL_SERVICE.into(),
        service: CONSUL_SERVICE.into(),
        port,
        meta,
        ..ServiceDefinition::default()
    })
}

fn check_matches(row: Option<&HealthCheck>, def: &CheckDefinition) -> bool {
    row.is_some_and(|row| {
        (&row.name, row.status, &row.output, &row.notes, &row.service_id, &row.kind)
            == (&def.name, def.status, &def.output, &def.notes, &def.service_id, &def.kind)
            && (&row.interval, &row.timeout) == (&def.interval, &def.timeout)
    })
}

fn service_matches(row: Option<&ServiceInstance>, def: &ServiceDefinition) -> bool {
    row.is_some_and(|row| {
        (&row.service, &row.tags, &row.address, row.port, &row.meta)
            == (&def.service, &def.tags, &def.address, def.port, &def.meta)
            && (row.enable_tag_override, row.weights) == (def.enable_tag_override, def.weights)
    })
}

/// Register an alive member with a passing `serfHealth` (and `consul` service for a server),
/// unless the catalog already says exactly that. `replaced`: its node is being deregistered first.
fn alive_registration(member: &Member, catalog: &Catalog, replaced: bool) -> Option<Registration> {
    let name = member.name.as_str();
    let address = member.addr.ip().to_string();
    let check = serf_check(CheckStatus::Passing);
    let service = consul_service(member);
    let existing = catalog.node(name).filter(|_| !replaced);
    let id_matches = |id: &str| member.meta.node_id.is_empty() || id == member.meta.node_id;
    let up_to_date = existing.is_some_and(|node| node.address == address && id_matches(&node.id))
        && check_matches(catalog.check(name, SERF_HEALTH_CHECK_ID), &check)
        && service.as_ref().is_none_or(|service| service_matches(catalog.service(name, &service.id), service));
    if up_to_date {
        return None;
    }
    Some(Registration {
        node: name.to_owned(),
        node_id: member.meta.node_id.clone(),
        address,
        tagged_addresses: existing.map(|node| node.tagged_addresses.clone()).unwrap_or_default(),
        node_meta: existing.map(|node| node.meta.clone()).unwrap_or_default(),
        service,
        checks: vec![check],
        skip_node_update: false,
    })
}

/// Turn a failed member's `serfHealth` critical, leaving the rest of its node as it is.
fn failed_registration(member: &Member, catalog: &Catalog) -> Option<Registration> {
    let name = member.name.as_str();
    catalog.node(name)?;
    let check = serf_check(CheckStatus::Critical);
    if check_matches(catalog.check(name, SERF_HEALTH_CHECK_ID), &check) {
        return None;
    }
    Some(Registration {
        node: name.to_owned(),
        node_id: member.meta.node_id.clone(),
        address: member.addr.ip().to_string(),
        checks: vec![check],
        skip_node_update: true,
        ..Registration::default()
    })
}

/// Reconcile the catalog with `membership` while this server leads: right after it becomes
/// leader (a new leader reconciles everything: its predecessor may have died mid-way), on every
/// gossip change, and every [`RECONCILE_INTERVAL`]. Returns when Raft or the gossip view shuts
/// down.
pub async fn run(server: Arc<Server>, membership: watch::Receiver<Membership>) {
    crate::server::leading::while_leading(
        server,
        membership,
        RECONCILE_INTERVAL,
        "catalog",
        |server, gossip| async move { reconcile_once(&server, &gossip).await },
    )
    .await
}

/// One pass: wait until the local state holds everything committed (Consul's leader barrier),
/// plan, and write. Failures are logged; the next pass starts over from the state.
async fn reconcile_once(server: &Server, gossip: &Membership) {
    let local_node = server.info().name.as_str();
    // A view without this agent means gossip has not started: planning against it would reap
    // every node in the catalog.
    if gossip.get(local_node).is_none() {
        tracing::debug!("the gossip view does not include this agent yet; not reconciling");
        return;
    }
    if let Err(e) = server.read_barrier(Consistency::Consistent).await {
        tracing::warn!(error = %e, "cannot reconcile the catalog: the state is not known to be current");
        return;
    }
    let commands = {
        let state = server.state().read();
        plan(gossip, state.catalog(), server.datacenter(), local_node)
    };
    // Deregistrations first, on their own: commands in different log entries may commit in either
    // order, and a re-registration under a new identity needs the old node gone.
    let (deregistrations, registrations): (Vec<Command>, Vec<Command>) =
        commands.into_iter().partition(|c| matches!(c, Command::Catalog(CatalogCommand::Deregister(_))));
    for phase in [deregistrations, registrations] {
        for chunk in phase.chunks(MAX_COMMANDS_PER_WRITE) {
            chunk.iter().for_each(log_command);
            let outcomes = server.write_all_as_leader(chunk.to_vec()).await;
            if !report(chunk, outcomes) {
                return;
            }
        }
    }
}

fn log_command(command: &Command) {
    let Command::Catalog(command) = command else { return };
    match command {
        CatalogCommand::Deregister(d) => tracing::info!(member = %d.node, "member gone; deregistering it"),
        CatalogCommand::Register(r) if r.checks.iter().any(|c| c.status == CheckStatus::Passing) => {
            tracing::info!(member = %r.node, "member alive; marking its health passing")
        }
        CatalogCommand::Register(r) => tracing::info!(member = %r.node, "member failed; marking its health critical"),
    }
}

/// Log what did not go through; false if the pass should stop (a write failed, so later ones
/// would too: lost leadership, or Raft stopped).
fn report(commands: &[Command], outcomes: Vec<Result<WriteReply, crate::rpc::message::LeaderError>>) -> bool {
    let mut all_written = true;
    for (command, outcome) in commands.iter().zip(outcomes) {
        match outcome {
            Ok(WriteReply { outcome: Outcome::Rejected(why), .. }) => {
                tracing::warn!(?command, reason = %why, "the catalog refused a reconciliation write")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(?command, error = %e, "reconciliation write failed; will retry");
                all_written = false;
            }
        }
    }
    all_written
}

#[cfg(test)]
mod tests;
