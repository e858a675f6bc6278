//! `/v1/health/*`: Consul's health endpoints, the catalog seen through its checks.
//!
//! `/v1/health/service/<name>` is what load balancers and consul-template watch, so it blocks on
//! the service name's own index, which moves with anything its answer shows (instances, their
//! nodes, their checks and their nodes' checks). The check lists block on the checks table.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State as AxumState};
use axum::response::Response;
use axum::routing::get;
use axum::Router;

use super::catalog::missing;
use super::catalog_json::{parse_status, HealthCheckJson, HealthEntryJson, NodeJson};
use super::query::{read_request, InstanceFilter, NodeMetaFilter};
use super::{encode, json_read, ApiError};
use crate::server::Server;
use crate::state::{Catalog, CheckStatus, HealthCheck};

type ServerState = AxumState<Arc<Server>>;

pub fn routes() -> Router<Arc<Server>> {
    Router::new()
        .route("/v1/health/service/{name}", get(service))
        .route("/v1/health/service/", get(|| async { missing("service name") }))
        .route("/v1/health/checks/{service}", get(service_checks))
        .route("/v1/health/checks/", get(|| async { missing("service name") }))
        .route("/v1/health/node/{node}", get(node_checks))
        .route("/v1/health/node/", get(|| async { missing("node name") }))
        .route("/v1/health/state/{state}", get(checks_in_state))
        .route("/v1/health/state/", get(|| async { missing("check state") }))
}

/// Each instance of a service with its node and the checks that count against it; with
/// `?passing`, only instances whose every such check passes.
async fn service(
    AxumState(server): ServerState,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let (params, options) = read_request(query.as_deref(), &server)?;
    let passing = params.bool_flag("passing")?;
    let filter = InstanceFilter::from_params(&params);
    let dc = server.datacenter();
    json_read(&server, options, |state| {
        let catalog = state.catalog();
        let instances = if passing { catalog.passing_instances(&name) } else { catalog.service_instances(&name) };
        let entries: Vec<HealthEntryJson> = instances
            .into_iter()
            .filter(|(node, instance)| filter.matches(node, instance))
            .map(|(node, instance)| HealthEntryJson {
                node: NodeJson::new(node, dc),
                service: instance.into(),
                checks: catalog.checks_of_instance(&node.node, &instance.id).map(HealthCheckJson::from).collect(),
            })
            .collect();
        (catalog.index_for_service(&name), encode(&entries))
    })
    .await
}

/// The checks bound to instances of a service (not their nodes' checks), as Consul's
/// `ServiceChecks`.
async fn service_checks(
    AxumState(server): ServerState,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let (params, options) = read_request(query.as_deref(), &server)?;
    let meta = NodeMetaFilter::from_params(&params);
    json_read(&server, options, |state| {
        let catalog = state.catalog();
        let checks: Vec<HealthCheckJson> = catalog
            .service_instances(&name)
            .into_iter()
            .filter(|(node, _)| meta.matches(node))
            .flat_map(|(node, instance)| catalog.checks_of_service(&node.node, &instance.id))
            .map(HealthCheckJson::from)
            .collect();
        (catalog.checks_index(), encode(&checks))
    })
    .await
}

/// Every check on a node, node-level and service checks alike; `[]` for an unknown node.
async fn node_checks(
    AxumState(server): ServerState,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let (_, options) = read_request(query.as_deref(), &server)?;
    json_read(&server, options, |state| {
        let catalog = state.catalog();
        let checks: Vec<HealthCheckJson> = catalog.checks_of_node(&name).map(HealthCheckJson::from).collect();
        (catalog.checks_index(), encode(&checks))
    })
    .await
}

/// Which checks `/v1/health/state/<state>` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StateFilter {
    Any,
    Only(CheckStatus),
}

impl StateFilter {
    /// `any` or a status word; anything else (including the empty word, which as a check's
    /// status would default to critical) is refused.
    fn parse(text: &str) -> Result<Self, ApiError> {
        match text {
            "any" => Ok(StateFilter::Any),
            "" => Err(missing("check state")),
            _ => parse_status(text).map(StateFilter::Only).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "Invalid check state {text:?}: expected any, passing, warning, critical or maintenance"
                ))
            }),
        }
    }

    fn matches(self, check: &HealthCheck) -> bool {
        self == StateFilter::Any || self == StateFilter::Only(check.status)
    }
}

async fn checks_in_state(
    AxumState(server): ServerState,
    Path(state_word): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let filter = StateFilter::parse(&state_word)?;
    let (params, options) = read_request(query.as_deref(), &server)?;
    let meta = NodeMetaFilter::from_params(&params);
    json_read(&server, options, |state| {
        let catalog = state.catalog();
        let on_matching_node = |check: &&HealthCheck| node_matches(catalog, &meta, &check.node);
        let checks: Vec<HealthCheckJson> = catalog
            .checks()
            .filter(|check| filter.matches(check))
            .filter(on_matching_node)
            .map(HealthCheckJson::from)
            .collect();
        (catalog.checks_index(), encode(&checks))
    })
    .await
}

fn node_matches(catalog: &Catalog, meta: &NodeMetaFilter, node: &str) -> bool {
    catalog.node(node).is_some_and(|node| meta.matches(node))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `any` and Consul's status words parse; anything else is a 400 naming the word.
    #[test]
    fn check_states_parse() {
        assert_eq!(StateFilter::parse("any"), Ok(StateFilter::Any));
        assert_eq!(StateFilter::parse("passing"), Ok(StateFilter::Only(CheckStatus::Passing)));
        assert_eq!(StateFilter::parse("critical"), Ok(StateFilter::Only(CheckStatus::Critical)));
        let refused = StateFilter::parse("sick").unwrap_err();
        assert_eq!(refused.status, axum::http::StatusCode::BAD_REQUEST);
        assert!(refused.message.contains("\"sick\""), "{}", refused.message);
        assert_eq!(StateFilter::parse("").unwrap_err().message, "Missing check state");
    }
}
