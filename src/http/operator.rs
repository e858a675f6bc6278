//! `/v1/operator/raft/configuration` and `/v1/operator/raft/peer`: Consul's Raft operator API,
//! which `cairn operator raft list-peers|remove-peer` (and `consul operator raft ...`) call.
//!
//! The configuration is replicated with the log, so any server answers it from its own Raft
//! state, after the read barrier its consistency mode asks for (`?stale` answers at once). A
//! removal changes the configuration, which only the leader can do: followers forward it.

use std::sync::Arc;

use axum::extract::{RawQuery, State as AxumState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::Router;
use serde::Serialize;

use super::query::{Params, QueryOptions};
use super::{json_body, read_headers, ApiError};
use crate::rpc::message::PeerRef;
use crate::server::membership::RemovePeerError;
use crate::server::Server;

/// Longest `?id=` or `?address=` accepted: a UUID or `host:port` is far shorter; this only keeps
/// a hostile value out of logs and RPC frames.
const MAX_PEER_REF_BYTES: usize = 256;

pub fn routes() -> Router<Arc<Server>> {
    Router::new()
        .route("/v1/operator/raft/configuration", get(configuration))
        .route("/v1/operator/raft/peer", delete(remove_peer))
}

/// Consul's `RaftServer`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RaftServerJson {
    /// The server's node ID: Consul's Raft server ID is the node ID.
    #[serde(rename = "ID")]
    id: String,
    node: String,
    /// The server RPC address, as Raft reaches it.
    address: String,
    leader: bool,
    /// Consul's Raft protocol version; cairn speaks the semantics of version 3 (servers by ID,
    /// non-voters promoted by autopilot).
    protocol_version: &'static str,
    voter: bool,
}

/// Consul's `RaftConfigurationResponse`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RaftConfigurationJson {
    servers: Vec<RaftServerJson>,
    /// The log index of the configuration entry.
    index: u64,
}

async fn configuration(
    AxumState(server): AxumState<Arc<Server>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(query.as_deref())?;
    let options = QueryOptions::from_params(&params, &server)?;
    let meta = server.read_barrier(options.consistency).await?;
    let configuration = server.raft_configuration();
    let servers = configuration
        .servers
        .into_iter()
        .map(|peer| RaftServerJson {
            id: peer.info.node_id,
            node: peer.info.name,
            address: peer.info.rpc_addr,
            leader: peer.leader,
            protocol_version: "3",
            voter: peer.voter,
        })
        .collect();
    let body = RaftConfigurationJson { servers, index: configuration.index };
    Ok((read_headers(configuration.index, meta), json_body(&body)).into_response())
}

/// `DELETE /v1/operator/raft/peer?id=<node id>` or `?address=<ip:port>`: exactly one of them.
async fn remove_peer(
    AxumState(server): AxumState<Arc<Server>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(query.as_deref())?;
    let peer = peer_ref(&params)?;
    if let Some(dc) = params.text("dc").filter(|dc| !dc.is_empty() && *dc != server.datacenter()) {
        return Err(ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: format!("No path to datacenter {dc:?}"),
        });
    }
    match server.remove_peer(&peer).await {
        Ok(()) => Ok(StatusCode::OK.into_response()),
        Err(e @ RemovePeerError::NotFound(_)) => Err(ApiError::bad_request(e.to_string())),
        Err(RemovePeerError::Server(e)) => Err(e.into()),
        Err(e @ RemovePeerError::Refused(_)) => {
            Err(ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, message: e.to_string() })
        }
    }
}

/// The server a removal names, with Consul's messages for a missing or doubled reference.
fn peer_ref(params: &Params) -> Result<PeerRef, ApiError> {
    let peer = match (params.text("id"), params.text("address")) {
        (Some(id), None) => PeerRef::Id(id.to_owned()),
        (None, Some(address)) => PeerRef::Address(address.to_owned()),
        (None, None) => {
            return Err(ApiError::bad_request(
                "Must specify either ?id with the server's ID or ?address with IP:port of peer to remove",
            ))
        }
        (Some(_), Some(_)) => return Err(ApiError::bad_request("Must specify only one of ?id or ?address")),
    };
    let (PeerRef::Id(text) | PeerRef::Address(text)) = &peer;
    if text.is_empty() || text.len() > MAX_PEER_REF_BYTES {
        return Err(ApiError::bad_request(format!("invalid {peer}: expected 1 to {MAX_PEER_REF_BYTES} bytes")));
    }
    Ok(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(query: &str) -> Result<PeerRef, ApiError> {
        peer_ref(&Params::parse(Some(query)).unwrap())
    }

    /// Exactly one of ?id and ?address names the server; anything else is a 400 saying so.
    #[test]
    fn a_removal_names_exactly_one_server() {
        assert_eq!(parse("id=abc").unwrap(), PeerRef::Id("abc".into()));
        assert_eq!(parse("address=10.0.0.1%3A8300").unwrap(), PeerRef::Address("10.0.0.1:8300".into()));
        let neither = parse("").unwrap_err();
        assert_eq!(neither.status, StatusCode::BAD_REQUEST);
        assert!(neither.message.contains("Must specify either ?id"), "{}", neither.message);
        let both = parse("id=a&address=b").unwrap_err();
        assert!(both.message.contains("only one of"), "{}", both.message);
        assert_eq!(parse("id=").unwrap_err().status, StatusCode::BAD_REQUEST);
        assert_eq!(
            parse(&format!("id={}", "x".repeat(MAX_PEER_REF_BYTES + 1))).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
    }
}
