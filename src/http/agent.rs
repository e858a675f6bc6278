//! `/v1/agent/*`: what the local agent answers itself, on servers and clients alike (with the
//! gossip keyring API of [`super::keyring`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State as AxumState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Router;
use serde::{Deserialize, Serialize};

use super::{json_body, ApiError};
use crate::agent::{Agent, Backend};
use crate::config::JoinAddress;
use crate::gossip::{Member, MemberStatus, Role};

pub fn routes() -> Router<Arc<Agent>> {
    Router::new()
        .route("/v1/agent/members", get(members))
        .route("/v1/agent/self", get(agent_self))
        .route("/v1/agent/join/{address}", put(join))
        .route("/v1/agent/leave", put(leave))
        .route("/v1/agent/force-leave/{node}", put(force_leave))
        .merge(super::keyring::routes())
        .merge(super::agent_services::routes())
}

/// One member in Consul's `/v1/agent/members` shape (Serf's member with string tags).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct MemberJson {
    name: String,
    addr: String,
    port: u16,
    tags: BTreeMap<&'static str, String>,
    status: u8,
    protocol_min: u8,
    protocol_max: u8,
    protocol_cur: u8,
    delegate_min: u8,
    delegate_max: u8,
    delegate_cur: u8,
}

/// Serf's status numbers, which Consul's API and CLI use.
fn serf_status(status: MemberStatus) -> u8 {
    match status {
        // Suspicion is internal to memberlist; Serf still reports the member alive.
        MemberStatus::Alive | MemberStatus::Suspect => 1,
        MemberStatus::Left => 3,
        MemberStatus::Failed => 4,
    }
}

/// Consul's tags, built from the typed metadata at the edge for compatibility.
fn tags(member: &Member) -> BTreeMap<&'static str, String> {
    let meta = &member.meta;
    let mut tags = BTreeMap::from([
        ("role", if meta.role == Role::Server { "consul" } else { "node" }.to_string()),
        ("dc", meta.datacenter.clone()),
        ("id", meta.node_id.clone()),
        ("build", meta.build.clone()),
        ("vsn", meta.protocol.to_string()),
        ("vsn_min", "2".to_string()),
        ("vsn_max", "3".to_string()),
    ]);
    if let Some(port) = meta.server_port {
        tags.insert("port", port.to_string());
        tags.insert("raft_vsn", "3".to_string());
    }
    tags
}

fn member_json(member: &Member) -> MemberJson {
    MemberJson {
        name: member.name.clone(),
        addr: member.addr.ip().to_string(),
        port: member.addr.port(),
        tags: tags(member),
        status: serf_status(member.status),
        protocol_min: 1,
        protocol_max: 5,
        protocol_cur: 2,
        delegate_min: 2,
        delegate_max: 5,
        delegate_cur: 4,
    }
}

/// The LAN members this agent knows (`?wan` and `?segment` are accepted and ignored: cairn has one
/// pool per datacenter).
async fn members(AxumState(agent): AxumState<Arc<Agent>>) -> Response {
    let members: Vec<MemberJson> = agent.membership().iter().map(member_json).collect();
    json_body(&members)
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JoinQuery {
    wan: Option<String>,
}

/// `PUT /v1/agent/join/<address>`: join the LAN pool through the agent at `address`.
async fn join(
    AxumState(agent): AxumState<Arc<Agent>>,
    Path(address): Path<String>,
    Query(query): Query<JoinQuery>,
) -> Response {
    if query.wan.is_some_and(|wan| wan != "0" && wan != "false") {
        return ApiError::bad_request("cairn has no WAN pool yet: datacenters are not federated").into_response();
    }
    let address: JoinAddress = match address.parse() {
        Ok(address) => address,
        Err(e) => return ApiError::bad_request(format!("bad join address {address:?}: {e}")).into_response(),
    };
    let addrs = crate::agent::join::resolve(std::slice::from_ref(&address)).await;
    if addrs.is_empty() {
        return ApiError::bad_request(format!("cannot resolve join address {address}")).into_response();
    }
    match agent.join(&addrs).await {
        Ok(_) => StatusCode::OK.into_response(),
        Err(e) => ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, message: format!("joining {address}: {e}") }
            .into_response(),
    }
}

/// `PUT /v1/agent/leave`: leave the pool gracefully; the agent then stops.
async fn leave(AxumState(agent): AxumState<Arc<Agent>>) -> Response {
    match agent.leave().await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => {
            ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, message: format!("leaving: {e}") }.into_response()
        }
    }
}

/// `PUT /v1/agent/force-leave/<node>`: mark a failed member as left (`?prune` accepted: a left
/// member is reaped from the view after the tombstone time either way).
async fn force_leave(AxumState(agent): AxumState<Arc<Agent>>, Path(node): Path<String>) -> Response {
    match agent.force_leave(&node) {
        Ok(()) => StatusCode::OK.into_response(),
        Err(e) => ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, message: e.to_string() }.into_response(),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SelfJson {
    config: SelfConfig,
    member: Option<MemberJson>,
    stats: BTreeMap<&'static str, BTreeMap<&'static str, String>>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SelfConfig {
    datacenter: String,
    node_name: String,
    #[serde(rename = "NodeID")]
    node_id: String,
    server: bool,
    version: &'static str,
}

/// `GET /v1/agent/self`: this agent's configuration, its own member entry and gossip counters.
async fn agent_self(AxumState(agent): AxumState<Arc<Agent>>) -> Response {
    let membership = agent.membership();
    let stats = agent.gossip().stats();
    let serf_lan = BTreeMap::from([
        ("members", membership.len().to_string()),
        ("packets_received", stats.packets_in.to_string()),
        ("packets_sent", stats.packets_out.to_string()),
        ("bytes_received", stats.bytes_in.to_string()),
        ("bytes_sent", stats.bytes_out.to_string()),
        ("dropped_undecryptable", stats.dropped_decrypt.to_string()),
        ("dropped_malformed", stats.dropped_decode.to_string()),
        ("local_health", stats.local_health.to_string()),
        ("encrypted", agent.gossip().keyring().is_some().to_string()),
    ]);
    let sync = agent.registry.sync_status();
    let ago = |at: Option<tokio::time::Instant>| at.map(|at| at.elapsed().as_millis().to_string()).unwrap_or_default();
    let checks = agent.registry.checks();
    let anti_entropy = BTreeMap::from([
        ("in_sync", agent.registry.in_sync().to_string()),
        ("services", agent.registry.services().len().to_string()),
        ("checks", checks.len().to_string()),
        ("last_sync_ms_ago", ago(sync.last_success)),
        ("last_full_sync_ms_ago", ago(sync.last_full_sync)),
        ("failures", sync.failures.to_string()),
        ("last_error", sync.last_error.unwrap_or_default()),
    ]);
    let body = SelfJson {
        config: SelfConfig {
            datacenter: agent.datacenter.clone(),
            node_name: agent.node_name.clone(),
            node_id: agent.node_id.clone(),
            server: matches!(agent.backend, Backend::Server(_)),
            version: env!("CARGO_PKG_VERSION"),
        },
        member: membership.get(&agent.node_name).map(member_json),
        stats: BTreeMap::from([("serf_lan", serf_lan), ("anti_entropy", anti_entropy)]),
    };
    json_body(&body)
}
