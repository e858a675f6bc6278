//! Answers peers' requests on the server port.

use std::sync::Arc;

use super::{Consistency, Server, ServerError};
use crate::rpc::message::{RemoteError, Request, Response, ServerStatus};
use crate::rpc::Handler;
use crate::state::NodeEntries;

/// What listens on the server port: Raft traffic and forwarded writes go to the [`Server`];
/// HTTP API requests forwarded by client agents go through the same router as local ones.
#[derive(Clone)]
pub struct ServerRpc {
    pub server: Arc<Server>,
    pub api: axum::Router,
}

impl std::fmt::Debug for ServerRpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerRpc").field("server", &self.server).finish_non_exhaustive()
    }
}

impl Handler<Request, Response> for ServerRpc {
    async fn handle(&self, request: Request) -> Response {
        let server = &self.server;
        match request {
            Request::AppendEntries(rpc) => {
                let result = server.raft.append_entries(rpc).await;
                if matches!(&result, Ok(response) if response.is_success()) {
                    server.note_leader_contact();
                }
                Response::AppendEntries(result)
            }
            Request::Vote(rpc) => Response::Vote(server.raft.vote(rpc).await),
            Request::InstallSnapshot(rpc) => {
                let result = server.raft.install_snapshot(rpc).await;
                if result.is_ok() {
                    server.note_leader_contact();
                }
                Response::InstallSnapshot(result)
            }
            Request::Write(command) => Response::Write(server.write_as_leader(command).await),
            Request::ReadIndex => Response::ReadIndex(server.read_index_for_peer().await),
            Request::Status => Response::Status(server.status().await),
            Request::Http(request) => Response::Http(crate::http::forward::serve(&self.api, request).await),
            Request::RemovePeer(peer) => Response::RemovePeer(server.remove_peer_as_leader(&peer).await),
            Request::AgentWrite(command) => Response::AgentWrite(server.write(command).await.map_err(remote)),
            Request::NodeEntries(node) => Response::NodeEntries(server.node_entries(&node).await.map_err(remote)),
        }
    }
}

/// A server's error as a client agent receives it.
fn remote(error: ServerError) -> RemoteError {
    match error {
        ServerError::NoLeader => RemoteError::NoLeader,
        ServerError::Indeterminate | ServerError::Forward(_) => RemoteError::Indeterminate(error.to_string()),
        ServerError::Stopped(why) => RemoteError::Stopped(why),
    }
}

impl Server {
    /// What the catalog holds for `node`, read at default consistency (linearizable).
    pub async fn node_entries(&self, node: &str) -> Result<NodeEntries, ServerError> {
        self.read_barrier(Consistency::Default).await?;
        Ok(self.state().read().catalog().node_entries(node))
    }

    /// This server's view, for a peer deciding whether to bootstrap.
    pub async fn status(&self) -> ServerStatus {
        // A stopped Raft cannot be bootstrapped either: report it as initialized so nobody
        // bootstraps around it.
        let initialized = self.raft.is_initialized().await.unwrap_or(true);
        ServerStatus { server: self.info.clone(), initialized, leader: self.leader() }
    }
}
