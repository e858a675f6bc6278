//! `/v1/agent/service*`, `/v1/agent/check*`, `/v1/agent/maintenance` and `/v1/agent/reload`: the
//! agent's own services and checks ([`crate::agent::Registry`]), in Consul's shapes. These are
//! answered by the agent itself, server or client; anti-entropy carries the changes to the
//! catalog.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State as AxumState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Router;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::query::Params;
use super::{json_body, read_body, ApiError};
use crate::agent::local::{LocalCheck, LocalService};
use crate::agent::registry::RegistryError;
use crate::agent::Agent;
use crate::config::{self, CheckStatus};
use crate::state::Weights;

/// The largest registration body: a service with many checks is a few KiB; an HTTP check's body
/// may be up to 64 KiB.
pub const MAX_REGISTRATION_BYTES: usize = 512 * 1024;

type AgentState = AxumState<Arc<Agent>>;

pub fn routes() -> Router<Arc<Agent>> {
    Router::new()
        .route("/v1/agent/services", get(services))
        .route("/v1/agent/service/{id}", get(service))
        .route("/v1/agent/service/register", put(register_service))
        .route("/v1/agent/service/deregister/{id}", put(deregister_service))
        .route("/v1/agent/service/maintenance/{id}", put(service_maintenance))
        .route("/v1/agent/maintenance", put(node_maintenance))
        .route("/v1/agent/checks", get(checks))
        .route("/v1/agent/check/register", put(register_check))
        .route("/v1/agent/check/deregister/{id}", put(deregister_check))
        .route("/v1/agent/check/pass/{id}", put(check_pass))
        .route("/v1/agent/check/warn/{id}", put(check_warn))
        .route("/v1/agent/check/fail/{id}", put(check_fail))
        .route("/v1/agent/check/update/{id}", put(check_update))
        .route("/v1/agent/reload", put(reload))
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        let status = if e.is_not_found() {
            StatusCode::NOT_FOUND
        } else if e.is_internal() {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError { status, message: e.to_string() }
    }
}

/// Consul's `AgentService`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ServiceJson {
    #[serde(rename = "ID")]
    id: String,
    service: String,
    tags: Vec<String>,
    meta: BTreeMap<String, String>,
    port: u16,
    address: String,
    weights: WeightsJson,
    enable_tag_override: bool,
    datacenter: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct WeightsJson {
    passing: u32,
    warning: u32,
}

fn service_json(service: &LocalService, datacenter: &str) -> ServiceJson {
    let d = &service.definition;
    let Weights { passing, warning } = d.weights;
    ServiceJson {
        id: d.id.clone(),
        service: d.name.clone(),
        tags: d.tags.clone(),
        meta: d.meta.clone(),
        port: d.port.unwrap_or(0),
        address: d.address.clone().unwrap_or_default(),
        weights: WeightsJson { passing, warning },
        enable_tag_override: d.enable_tag_override,
        datacenter: datacenter.to_string(),
    }
}

/// Consul's `HealthCheck` as `/v1/agent/checks` shows it.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct CheckJson {
    node: String,
    #[serde(rename = "CheckID")]
    check_id: String,
    name: String,
    status: &'static str,
    notes: String,
    output: String,
    #[serde(rename = "ServiceID")]
    service_id: String,
    service_name: String,
    service_tags: Vec<String>,
    #[serde(rename = "Type")]
    kind: &'static str,
    interval: String,
    timeout: String,
    exposed_port: u16,
    create_index: u64,
    modify_index: u64,
}

fn check_json(agent: &Agent, check: &LocalCheck) -> CheckJson {
    let row = check.row();
    let service = check.service_id.as_deref().and_then(|id| agent.registry.service(id));
    CheckJson {
        node: agent.node_name.clone(),
        check_id: row.check_id,
        name: row.name,
        status: row.status.as_str(),
        notes: row.notes,
        output: row.output,
        service_id: row.service_id,
        service_name: service.as_ref().map(|s| s.definition.name.clone()).unwrap_or_default(),
        service_tags: service.map(|s| s.definition.tags).unwrap_or_default(),
        kind: check.kind_name(),
        interval: row.interval,
        timeout: row.timeout,
        exposed_port: 0,
        create_index: 0,
        modify_index: 0,
    }
}

/// `GET /v1/agent/services`: this agent's services, by ID.
async fn services(AxumState(agent): AgentState) -> Response {
    let body: BTreeMap<String, ServiceJson> = agent
        .registry
        .services()
        .iter()
        .map(|(s, _)| (s.definition.id.clone(), service_json(s, &agent.datacenter)))
        .collect();
    json_body(&body)
}

/// `GET /v1/agent/service/<id>`.
async fn service(AxumState(agent): AgentState, Path(id): Path<String>) -> Result<Response, ApiError> {
    match agent.registry.service(&id) {
        Some(service) => Ok(json_body(&service_json(&service, &agent.datacenter))),
        None => Err(ApiError { status: StatusCode::NOT_FOUND, message: format!("unknown service ID: {id}") }),
    }
}

/// `GET /v1/agent/checks`: this agent's checks, by ID.
async fn checks(AxumState(agent): AgentState) -> Response {
    let body: BTreeMap<String, CheckJson> =
        agent.registry.checks().iter().map(|(c, _)| (c.id.clone(), check_json(&agent, c))).collect();
    json_body(&body)
}

async fn json_request(body: Body) -> Result<Value, ApiError> {
    let bytes = read_body(body, MAX_REGISTRATION_BYTES).await?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))
}

/// Log what Consul accepts and cairn ignores, so the operator sees it.
fn log_warnings(warnings: &[config::ConfigWarning]) {
    for warning in warnings {
        tracing::warn!("{warning}");
    }
}

/// `PUT /v1/agent/service/register` (`?replace-existing-checks` is accepted: cairn always drops
/// the checks a re-registered service no longer has).
async fn register_service(AxumState(agent): AgentState, body: Body) -> Result<Response, ApiError> {
    let body = json_request(body).await?;
    log_warnings(&agent.registry.register_service(&body)?);
    Ok(StatusCode::OK.into_response())
}

/// `PUT /v1/agent/service/deregister/<id>`.
async fn deregister_service(AxumState(agent): AgentState, Path(id): Path<String>) -> Result<Response, ApiError> {
    agent.registry.deregister_service(&id)?;
    Ok(StatusCode::OK.into_response())
}

/// `PUT /v1/agent/check/register`.
async fn register_check(AxumState(agent): AgentState, body: Body) -> Result<Response, ApiError> {
    let body = json_request(body).await?;
    log_warnings(&agent.registry.register_check(&body)?);
    Ok(StatusCode::OK.into_response())
}

/// `PUT /v1/agent/check/deregister/<id>`.
async fn deregister_check(AxumState(agent): AgentState, Path(id): Path<String>) -> Result<Response, ApiError> {
    agent.registry.deregister_check(&id)?;
    Ok(StatusCode::OK.into_response())
}

/// A TTL check's new status, with `?note=` as its output.
async fn ttl(agent: &Agent, id: &str, status: CheckStatus, query: Option<&str>) -> Result<Response, ApiError> {
    let params = Params::parse(query)?;
    let note = params.text("note").unwrap_or("").to_string();
    agent.registry.ttl_update(id, status, note)?;
    Ok(StatusCode::OK.into_response())
}

async fn check_pass(
    AxumState(agent): AgentState,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    ttl(&agent, &id, CheckStatus::Passing, q.as_deref()).await
}

async fn check_warn(
    AxumState(agent): AgentState,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    ttl(&agent, &id, CheckStatus::Warning, q.as_deref()).await
}

async fn check_fail(
    AxumState(agent): AgentState,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    ttl(&agent, &id, CheckStatus::Critical, q.as_deref()).await
}

/// The body of `PUT /v1/agent/check/update/<id>`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct UpdateBody {
    #[serde(default)]
    status: String,
    #[serde(default)]
    output: String,
}

/// `PUT /v1/agent/check/update/<id>`: a TTL check's status and output in the body.
async fn check_update(AxumState(agent): AgentState, Path(id): Path<String>, body: Body) -> Result<Response, ApiError> {
    let bytes = read_body(body, MAX_REGISTRATION_BYTES).await?;
    let update: UpdateBody =
        serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))?;
    let status = match update.status.as_str() {
        "passing" => CheckStatus::Passing,
        "warning" => CheckStatus::Warning,
        "critical" => CheckStatus::Critical,
        other => return Err(ApiError::bad_request(format!("Invalid check status: {other:?}"))),
    };
    agent.registry.ttl_update(&id, status, update.output)?;
    Ok(StatusCode::OK.into_response())
}

/// `?enable=true|false&reason=...`, both required as in Consul.
fn maintenance_params(query: Option<&str>) -> Result<(bool, String), ApiError> {
    let params = Params::parse(query)?;
    let enable = match params.text("enable") {
        Some("true") => true,
        Some("false") => false,
        Some(other) => return Err(ApiError::bad_request(format!("Invalid value for \"enable\": {other:?}"))),
        None => return Err(ApiError::bad_request("Missing value for enable")),
    };
    Ok((enable, params.text("reason").unwrap_or("").to_string()))
}

/// `PUT /v1/agent/service/maintenance/<id>?enable=&reason=`.
async fn service_maintenance(
    AxumState(agent): AgentState,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let (enable, reason) = maintenance_params(query.as_deref())?;
    agent.registry.set_maintenance(Some(&id), enable, &reason)?;
    Ok(StatusCode::OK.into_response())
}

/// `PUT /v1/agent/maintenance?enable=&reason=`: the whole node.
async fn node_maintenance(AxumState(agent): AgentState, RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    let (enable, reason) = maintenance_params(query.as_deref())?;
    agent.registry.set_maintenance(None, enable, &reason)?;
    Ok(StatusCode::OK.into_response())
}

/// `PUT /v1/agent/reload`: re-read the config files and apply the services and checks they
/// define. A file that does not load is refused with its error and nothing changes.
async fn reload(AxumState(agent): AgentState) -> Result<Response, ApiError> {
    match agent.reload() {
        Ok(()) => Ok(StatusCode::OK.into_response()),
        Err(e) => Err(ApiError { status: StatusCode::BAD_REQUEST, message: e.to_string() }),
    }
}
