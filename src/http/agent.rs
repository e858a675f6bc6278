//! `/v1/agent/*`: what the local agent answers itself, on servers and clients alike.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State as AxumState;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde::Serialize;

use super::json_body;
use crate::agent::Agent;
use crate::gossip::{Member, MemberStatus, Role};

pub fn routes() -> Router<Arc<Agent>> {
    Router::new().route("/v1/agent/members", get(members))
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
