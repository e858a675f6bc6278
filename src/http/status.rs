//! `/v1/status/leader` and `/v1/status/peers`.

use std::sync::Arc;

use axum::extract::State as AxumState;
use axum::response::Response;
use axum::routing::get;
use axum::Router;

use super::json_body;
use crate::server::Server;

pub fn routes() -> Router<Arc<Server>> {
    Router::new().route("/v1/status/leader", get(leader)).route("/v1/status/peers", get(peers))
}

/// The leader's RPC address as a JSON string, `""` when there is none (Consul's shape).
async fn leader(AxumState(server): AxumState<Arc<Server>>) -> Response {
    let address = server.leader().map(|leader| leader.rpc_addr).unwrap_or_default();
    json_body(&address)
}

/// The RPC addresses of the voting servers.
async fn peers(AxumState(server): AxumState<Arc<Server>>) -> Response {
    let addresses: Vec<String> = server.voters().into_iter().map(|s| s.rpc_addr).collect();
    json_body(&addresses)
}
