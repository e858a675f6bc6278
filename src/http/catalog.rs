//! `/v1/catalog/*`: Consul's catalog endpoints, the raw rows without health filtering.
//!
//! Reads block on the index of what they show: one service name's index for
//! `/v1/catalog/service/<name>` (so a watcher of one service sleeps through changes to others),
//! the nodes or services table otherwise, as Consul's state store does.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State as AxumState};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, put};
use axum::Router;

use super::catalog_json::{decode, DeregisterBody, NodeJson, NodeServicesJson, RegisterBody, ServiceNodeJson};
use super::query::{check_datacenter, read_request, InstanceFilter, NodeMetaFilter, Params};
use super::{encode, json_body, json_read, read_body, ApiError};
use crate::server::Server;
use crate::state::{Catalog, CatalogCommand, Command, Outcome};

/// Largest registration body accepted. A registration holds one node, one service and its
/// checks; Consul's 512 KiB KV value limit is generous for that and keeps one request bounded.
pub const MAX_BODY_BYTES: usize = 512 * 1024;

type ServerState = AxumState<Arc<Server>>;

pub fn routes() -> Router<Arc<Server>> {
    Router::new()
        .route("/v1/catalog/register", put(register))
        .route("/v1/catalog/deregister", put(deregister))
        .route("/v1/catalog/datacenters", get(datacenters))
        .route("/v1/catalog/nodes", get(nodes))
        .route("/v1/catalog/services", get(services))
        .route("/v1/catalog/service/{name}", get(service))
        .route("/v1/catalog/service/", get(|| async { missing("service name") }))
        .route("/v1/catalog/node/{node}", get(node))
        .route("/v1/catalog/node/", get(|| async { missing("node name") }))
}

/// Consul's answer to a path that lacks its name.
pub fn missing(what: &str) -> ApiError {
    ApiError::bad_request(format!("Missing {what}"))
}

async fn register(AxumState(server): ServerState, RawQuery(query): RawQuery, body: Body) -> Result<Response, ApiError> {
    let params = Params::parse(query.as_deref())?;
    check_datacenter(params.text("dc").unwrap_or(""), &server)?;
    let body: RegisterBody = decode(&read_body(body, MAX_BODY_BYTES).await?)?;
    check_datacenter(&body.datacenter, &server)?;
    submit(&server, CatalogCommand::Register(body.into_registration()?)).await
}

async fn deregister(
    AxumState(server): ServerState,
    RawQuery(query): RawQuery,
    body: Body,
) -> Result<Response, ApiError> {
    let params = Params::parse(query.as_deref())?;
    check_datacenter(params.text("dc").unwrap_or(""), &server)?;
    let body: DeregisterBody = decode(&read_body(body, MAX_BODY_BYTES).await?)?;
    check_datacenter(&body.datacenter, &server)?;
    submit(&server, CatalogCommand::Deregister(body.into_deregistration())).await
}

/// Apply a catalog command and answer `true`, as Consul does.
async fn submit(server: &Server, command: CatalogCommand) -> Result<Response, ApiError> {
    let reply = server.write(Command::Catalog(command)).await?;
    match reply.outcome {
        Outcome::Done => Ok(json_body(&true)),
        // Consul's catalog RPC errors reach the client as 500s with the error's text.
        Outcome::Rejected(why) => Err(ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, message: why }),
        Outcome::CasFailed => unreachable!("catalog commands have no check-and-set"),
    }
}

/// Only our own datacenter: cairn does not federate over the WAN. Not a state read, so it has
/// no index and does not block.
async fn datacenters(AxumState(server): ServerState) -> Response {
    json_body(&[server.datacenter()])
}

async fn nodes(AxumState(server): ServerState, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    let (params, options) = read_request(query.as_deref(), &server)?;
    let meta = NodeMetaFilter::from_params(&params);
    let dc = server.datacenter();
    json_read(&server, options, |state| {
        let catalog = state.catalog();
        let nodes: Vec<NodeJson> = catalog.nodes().filter(|n| meta.matches(n)).map(|n| NodeJson::new(n, dc)).collect();
        (catalog.nodes_index(), encode(&nodes))
    })
    .await
}

/// Every service name with the union of its instances' tags.
async fn services(AxumState(server): ServerState, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    let (params, options) = read_request(query.as_deref(), &server)?;
    let meta = NodeMetaFilter::from_params(&params);
    json_read(&server, options, |state| {
        let catalog = state.catalog();
        let names =
            if meta == NodeMetaFilter::default() { catalog.service_names() } else { service_names_on(catalog, &meta) };
        (catalog.services_index(), encode(&names))
    })
    .await
}

/// `/v1/catalog/services?node-meta=`: only instances on matching nodes count, and a name with
/// none there is left out.
fn service_names_on(catalog: &Catalog, meta: &NodeMetaFilter) -> BTreeMap<String, BTreeSet<String>> {
    let tags_on_matching_nodes = |name: String| {
        let instances = catalog.service_instances(&name);
        let mut kept = instances.into_iter().filter(|(node, _)| meta.matches(node)).peekable();
        kept.peek()?;
        Some((name, kept.flat_map(|(_, instance)| instance.tags.iter().cloned()).collect()))
    };
    catalog.service_names().into_keys().filter_map(tags_on_matching_nodes).collect()
}

async fn service(
    AxumState(server): ServerState,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let (params, options) = read_request(query.as_deref(), &server)?;
    let filter = InstanceFilter::from_params(&params);
    let dc = server.datacenter();
    json_read(&server, options, |state| {
        let catalog = state.catalog();
        let instances: Vec<ServiceNodeJson> = catalog
            .service_instances(&name)
            .into_iter()
            .filter(|(node, instance)| filter.matches(node, instance))
            .map(|(node, instance)| ServiceNodeJson::new(node, instance, dc))
            .collect();
        (catalog.index_for_service(&name), encode(&instances))
    })
    .await
}

/// A node and its services by id; `null` for an unknown node, as Consul answers.
async fn node(
    AxumState(server): ServerState,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let (_, options) = read_request(query.as_deref(), &server)?;
    let dc = server.datacenter();
    json_read(&server, options, |state| {
        let catalog = state.catalog();
        let body = catalog.node(&name).map(|node| NodeServicesJson {
            node: NodeJson::new(node, dc),
            services: catalog.services_of_node(&name).map(|s| (s.id.as_str(), s.into())).collect(),
        });
        (catalog.nodes_index().max(catalog.services_index()), encode(&body))
    })
    .await
}
