//! The `/v1/...` HTTP API: an axum router over [`crate::server::Server`].
//!
//! The router is a plain tower service. [`serve`] runs it with hyper's connection driver on our
//! own listener, because `axum::serve` spawns on the real tokio and would escape the simulator.
//! Responses follow Consul: JSON in PascalCase, errors as plain text with Consul's status codes,
//! `X-Consul-Index`, `X-Consul-KnownLeader` and `X-Consul-LastContact` on reads.
//!
//! State-backed routes, answered by servers: `/v1/kv/*` (`kv.rs`), `/v1/catalog/*` (`catalog.rs`:
//! register, deregister, nodes, services, datacenters), `/v1/health/*` (`health.rs`: a service's
//! instances with their checks, `?passing`, checks by service, node or state; the JSON shapes of
//! both in `catalog_json.rs`), `/v1/status/*` and `/v1/operator/raft/*`. Every state read takes
//! `?stale`/`?consistent` and blocks with `?index=&wait=` (`query::blocking_read`).

mod agent;
mod agent_services;
mod catalog;
mod catalog_json;
pub mod forward;
mod health;
mod keyring;
mod kv;
mod operator;
mod query;
mod status;

pub use query::QueryOptions;

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::agent::{Agent, Backend};
use crate::server::{ReadMeta, Server, ServerError};
use std::time::Duration;

/// Most HTTP connections served at once; further clients wait in the accept queue.
pub const MAX_CONNECTIONS: usize = 4096;

/// The API of `agent`: `/v1/agent/*` and `/v1/operator/keyring` (a gossip matter) answered by the
/// agent itself; everything else answered from the local Raft state on a server, or forwarded to a
/// server by a client.
pub fn router(agent: Arc<Agent>) -> Router {
    let local = agent::routes().with_state(agent.clone());
    match &agent.backend {
        Backend::Server(server) => local.merge(server_routes(server.clone())),
        Backend::Client(_) => local.merge(Router::new().fallback(forward_to_server).with_state(agent)),
    }
}

/// The state-backed routes, over one server.
fn server_routes(server: Arc<Server>) -> Router {
    Router::new()
        .merge(kv::routes())
        .merge(catalog::routes())
        .merge(health::routes())
        .merge(status::routes())
        .merge(operator::routes())
        .with_state(server)
}

/// A client agent's answer to every state-backed request: the answer of a server.
async fn forward_to_server(
    axum::extract::State(agent): axum::extract::State<Arc<Agent>>,
    request: axum::extract::Request,
) -> Response {
    let Backend::Client(forwarder) = &agent.backend else { unreachable!("only client agents route here") };
    let idempotent = request.method() == axum::http::Method::GET;
    // A blocking query may wait up to its 10-minute maximum; everything else is quick.
    let blocking = request.uri().query().is_some_and(|q| q.split('&').any(|p| p.starts_with("index=")));
    let limit = if blocking { Duration::from_secs(11 * 60) } else { Duration::from_secs(30) };
    let captured = match forward::capture(request).await {
        Ok(captured) => captured,
        Err(e) => return e.into_response(),
    };
    match forwarder.forward(captured, idempotent, limit).await {
        Ok(response) => forward::restore(response),
        Err(e) => ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, message: e.to_string() }.into_response(),
    }
}

/// Serve `app` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, app: Router) {
    crate::io::accept_loop(listener, MAX_CONNECTIONS, "http", |stream, _| {
        let service = TowerToHyperService::new(app.clone());
        async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
    })
    .await
}

/// An error answered to the client: a status code and a plain-text reason, as Consul does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::BAD_REQUEST, message: message.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = self.message;
        body.push('\n');
        (self.status, [("content-type", "text/plain; charset=utf-8")], body).into_response()
    }
}

impl From<ServerError> for ApiError {
    fn from(e: ServerError) -> Self {
        // Consul answers 500 for all of these; clients (consul-template, the Go API) retry on 500.
        ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, message: e.to_string() }
    }
}

/// Consul's read headers.
fn read_headers(index: u64, meta: ReadMeta) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("x-consul-index", HeaderValue::from(index.max(1)));
    headers.insert("x-consul-knownleader", HeaderValue::from_static(if meta.known_leader { "true" } else { "false" }));
    headers.insert("x-consul-lastcontact", HeaderValue::from(meta.last_contact_ms));
    headers
}

/// Read a request body of at most `limit` bytes, answering 413 beyond it: every body is
/// untrusted and buffered whole, so none may be unbounded.
async fn read_body(body: axum::body::Body, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    use http_body_util::BodyExt;
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!("Request body too large: the limit is {limit} bytes"),
        }),
        Err(e) => Err(ApiError::bad_request(format!("could not read request body: {e}"))),
    }
}

/// Encode a response shape. Shapes are plain data (strings, numbers, string-keyed maps), which
/// always encode: a failure is a bug in a shape.
fn encode<T: serde::Serialize + ?Sized>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("response shapes are plain data and always encode")
}

/// Answer a blocking read (see [`query::blocking_read`]) as JSON with Consul's read headers.
/// `read` returns the index and the encoded body: encoding under the state lock lets the shapes
/// borrow rows instead of cloning them.
async fn json_read(
    server: &Server,
    options: QueryOptions,
    read: impl Fn(&crate::state::State) -> (u64, Vec<u8>),
) -> Result<Response, ApiError> {
    let (index, json, meta) = query::blocking_read(server, options, read).await?;
    Ok((read_headers(index, meta), [("content-type", "application/json")], json).into_response())
}

/// A JSON body with Consul's content type.
fn json_body<T: serde::Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(bytes) => ([("content-type", "application/json")], bytes).into_response(),
        Err(e) => ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, message: format!("encoding response: {e}") }
            .into_response(),
    }
}
