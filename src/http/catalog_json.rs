//! Consul's catalog and health JSON, both ways: the shapes `/v1/catalog/*` and `/v1/health/*`
//! answer with, borrowed from catalog rows, and the bodies of `PUT /v1/catalog/register` and
//! `/deregister`, decoded into typed commands.
//!
//! Field names and order are Consul's (`structs.Node`, `ServiceNode`, `NodeService`,
//! `HealthCheck`, `CheckServiceNode`). Lists and maps are always `[]`/`{}`, never `null`: Consul
//! fills in empty tags and lists itself, and clients in typed languages decode either. Fields of
//! Consul features cairn lacks (Connect, namespaces, peering) are left out, except `Proxy` and
//! `Connect`, which Consul always sends and some clients expect.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use super::ApiError;
use crate::state::{
    CheckDefinition, CheckStatus, Deregistration, HealthCheck, Node, Registration, ServiceDefinition, ServiceInstance,
    Weights,
};

type Map = BTreeMap<String, String>;

/// An always-empty object, for Consul's `Connect`, `MeshGateway` and `Expose`.
#[derive(Serialize)]
pub struct Empty {}

/// Consul's `ConnectProxyConfig` of a service that is no proxy.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProxyJson {
    mesh_gateway: Empty,
    expose: Empty,
}

const NO_PROXY: ProxyJson = ProxyJson { mesh_gateway: Empty {}, expose: Empty {} };

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct WeightsJson {
    passing: u32,
    warning: u32,
}

impl From<Weights> for WeightsJson {
    fn from(weights: Weights) -> Self {
        WeightsJson { passing: weights.passing, warning: weights.warning }
    }
}

/// Consul's `Node`: `/v1/catalog/nodes`, and the node of `/v1/catalog/node/<n>` and health entries.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeJson<'a> {
    #[serde(rename = "ID")]
    id: &'a str,
    node: &'a str,
    address: &'a str,
    datacenter: &'a str,
    tagged_addresses: &'a Map,
    meta: &'a Map,
    create_index: u64,
    modify_index: u64,
}

impl<'a> NodeJson<'a> {
    pub fn new(node: &'a Node, datacenter: &'a str) -> Self {
        NodeJson {
            id: &node.id,
            node: &node.node,
            address: &node.address,
            datacenter,
            tagged_addresses: &node.tagged_addresses,
            meta: &node.meta,
            create_index: node.create_index,
            modify_index: node.modify_index,
        }
    }
}

/// Consul's `ServiceNode`: one instance with its node flattened in (`/v1/catalog/service/<name>`).
/// The indexes are the service row's.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceNodeJson<'a> {
    #[serde(rename = "ID")]
    id: &'a str,
    node: &'a str,
    address: &'a str,
    datacenter: &'a str,
    tagged_addresses: &'a Map,
    node_meta: &'a Map,
    service_kind: &'static str,
    #[serde(rename = "ServiceID")]
    service_id: &'a str,
    service_name: &'a str,
    service_tags: &'a [String],
    service_address: &'a str,
    service_weights: WeightsJson,
    service_meta: &'a Map,
    service_port: u16,
    service_enable_tag_override: bool,
    service_proxy: ProxyJson,
    service_connect: Empty,
    create_index: u64,
    modify_index: u64,
}

impl<'a> ServiceNodeJson<'a> {
    pub fn new(node: &'a Node, service: &'a ServiceInstance, datacenter: &'a str) -> Self {
        ServiceNodeJson {
            id: &node.id,
            node: &node.node,
            address: &node.address,
            datacenter,
            tagged_addresses: &node.tagged_addresses,
            node_meta: &node.meta,
            service_kind: "",
            service_id: &service.id,
            service_name: &service.service,
            service_tags: &service.tags,
            service_address: &service.address,
            service_weights: service.weights.into(),
            service_meta: &service.meta,
            service_port: service.port,
            service_enable_tag_override: service.enable_tag_override,
            service_proxy: NO_PROXY,
            service_connect: Empty {},
            create_index: service.create_index,
            modify_index: service.modify_index,
        }
    }
}

/// Consul's `NodeService`: an instance without its node (health entries, `/v1/catalog/node/<n>`).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeServiceJson<'a> {
    #[serde(rename = "ID")]
    id: &'a str,
    service: &'a str,
    tags: &'a [String],
    address: &'a str,
    meta: &'a Map,
    port: u16,
    weights: WeightsJson,
    enable_tag_override: bool,
    proxy: ProxyJson,
    connect: Empty,
    create_index: u64,
    modify_index: u64,
}

impl<'a> From<&'a ServiceInstance> for NodeServiceJson<'a> {
    fn from(service: &'a ServiceInstance) -> Self {
        NodeServiceJson {
            id: &service.id,
            service: &service.service,
            tags: &service.tags,
            address: &service.address,
            meta: &service.meta,
            port: service.port,
            weights: service.weights.into(),
            enable_tag_override: service.enable_tag_override,
            proxy: NO_PROXY,
            connect: Empty {},
            create_index: service.create_index,
            modify_index: service.modify_index,
        }
    }
}

/// The interval and timeout a check was registered with; each left out when not given.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DefinitionJson<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    interval: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    timeout: &'a str,
}

/// Consul's `HealthCheck`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthCheckJson<'a> {
    node: &'a str,
    #[serde(rename = "CheckID")]
    check_id: &'a str,
    name: &'a str,
    status: &'static str,
    notes: &'a str,
    output: &'a str,
    #[serde(rename = "ServiceID")]
    service_id: &'a str,
    service_name: &'a str,
    service_tags: &'a [String],
    #[serde(rename = "Type")]
    kind: &'a str,
    interval: &'a str,
    timeout: &'a str,
    exposed_port: u16,
    definition: DefinitionJson<'a>,
    create_index: u64,
    modify_index: u64,
}

impl<'a> From<&'a HealthCheck> for HealthCheckJson<'a> {
    fn from(check: &'a HealthCheck) -> Self {
        HealthCheckJson {
            node: &check.node,
            check_id: &check.check_id,
            name: &check.name,
            status: check.status.as_str(),
            notes: &check.notes,
            output: &check.output,
            service_id: &check.service_id,
            service_name: &check.service_name,
            service_tags: &check.service_tags,
            kind: &check.kind,
            interval: &check.interval,
            timeout: &check.timeout,
            exposed_port: 0,
            definition: DefinitionJson { interval: &check.interval, timeout: &check.timeout },
            create_index: check.create_index,
            modify_index: check.modify_index,
        }
    }
}

/// Consul's `NodeServices`: `/v1/catalog/node/<n>`, services by id.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeServicesJson<'a> {
    pub node: NodeJson<'a>,
    pub services: BTreeMap<&'a str, NodeServiceJson<'a>>,
}

/// Consul's `CheckServiceNode`: one entry of `/v1/health/service/<name>`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthEntryJson<'a> {
    pub node: NodeJson<'a>,
    pub service: NodeServiceJson<'a>,
    pub checks: Vec<HealthCheckJson<'a>>,
}

/// Decode a JSON request body; the error names the field that was wrong, by its path
/// (`Service.Port`), as a user needs to fix it.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match path.as_str() {
            "." => ApiError::bad_request(format!("Request decode failed: {inner}")),
            _ => ApiError::bad_request(format!("Request decode failed: {path}: {inner}")),
        }
    })?;
    deserializer.end().map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))?;
    Ok(value)
}

/// Go clients send `null` for an unset map, list or struct; read it as the empty value.
fn nullable<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(deserializer: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Consul's `RegisterRequest`. Unknown fields (`Namespace`, `Partition`, `Kind`, ...) are
/// ignored, as Consul's decoder does.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RegisterBody {
    pub datacenter: String,
    #[serde(rename = "ID")]
    pub id: String,
    pub node: String,
    pub address: String,
    #[serde(deserialize_with = "nullable")]
    pub tagged_addresses: Map,
    #[serde(deserialize_with = "nullable")]
    pub node_meta: Map,
    pub service: Option<ServiceBody>,
    pub check: Option<CheckBody>,
    #[serde(deserialize_with = "nullable")]
    pub checks: Vec<CheckBody>,
    pub skip_node_update: bool,
}

/// Consul's `NodeService` as a registration gives it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ServiceBody {
    #[serde(rename = "ID")]
    pub id: String,
    pub service: String,
    #[serde(deserialize_with = "nullable")]
    pub tags: Vec<String>,
    pub address: String,
    #[serde(deserialize_with = "nullable")]
    pub meta: Map,
    pub port: u16,
    pub weights: Option<WeightsBody>,
    pub enable_tag_override: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct WeightsBody {
    pub passing: u32,
    pub warning: u32,
}

/// Consul's `HealthCheck` as a registration gives it. `ServiceName` and `ServiceTags` are the
/// service's, so any given here are ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CheckBody {
    pub node: String,
    #[serde(rename = "CheckID")]
    pub check_id: String,
    pub name: String,
    pub status: String,
    pub notes: String,
    pub output: String,
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(deserialize_with = "nullable")]
    pub definition: DefinitionBody,
}

/// The part of Consul's `HealthCheckDefinition` the catalog keeps: what kind of check it is and
/// its timing, for display. Durations come as Go strings ("10s") or nanoseconds.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DefinitionBody {
    #[serde(rename = "HTTP")]
    pub http: String,
    #[serde(rename = "TCP")]
    pub tcp: String,
    #[serde(rename = "GRPC")]
    pub grpc: String,
    pub interval: Option<GoDuration>,
    pub timeout: Option<GoDuration>,
}

/// A duration as Go's JSON carries it: a string, or an integer of nanoseconds.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum GoDuration {
    Text(String),
    Nanos(u64),
}

impl GoDuration {
    /// The duration as Consul shows it; zero, Go's unset value, shows as nothing.
    fn display(self) -> String {
        let text = match self {
            GoDuration::Text(text) => text,
            GoDuration::Nanos(0) => String::new(),
            GoDuration::Nanos(n) if n % 1_000_000_000 == 0 => format!("{}s", n / 1_000_000_000),
            GoDuration::Nanos(n) if n % 1_000_000 == 0 => format!("{}ms", n / 1_000_000),
            GoDuration::Nanos(n) => format!("{n}ns"),
        };
        if text == "0s" {
            String::new()
        } else {
            text
        }
    }
}

impl RegisterBody {
    /// The registration to replicate. The catalog itself checks what depends on its contents
    /// (required fields, known service IDs, node name ownership); this refuses only what is wrong
    /// on its face.
    pub fn into_registration(self) -> Result<Registration, ApiError> {
        let node = self.node;
        // Consul's older single `Check` joins the list.
        let listed = self.checks.into_iter().enumerate().map(|(i, check)| (format!("Checks[{i}]"), check));
        let single = self.check.map(|check| ("Check".to_owned(), check));
        let checks = listed
            .chain(single)
            .map(|(field, check)| check.into_definition(&node, &field))
            .collect::<Result<_, _>>()?;
        Ok(Registration {
            node_id: self.id,
            address: self.address,
            tagged_addresses: self.tagged_addresses,
            node_meta: self.node_meta,
            service: self.service.map(ServiceBody::into_definition),
            checks,
            skip_node_update: self.skip_node_update,
            node,
        })
    }
}

impl ServiceBody {
    fn into_definition(self) -> ServiceDefinition {
        // Consul keeps weights only if passing is at least 1 (`ValidateWeights`): Go clients
        // send zeroes for weights they never set.
        let weights = match self.weights {
            Some(WeightsBody { passing, warning }) if passing >= 1 => Weights { passing, warning },
            _ => Weights::default(),
        };
        ServiceDefinition {
            id: self.id,
            service: self.service,
            tags: self.tags,
            address: self.address,
            port: self.port,
            meta: self.meta,
            enable_tag_override: self.enable_tag_override,
            weights,
        }
    }
}

impl CheckBody {
    /// `field` names the check in the request (`Checks[1]`), for errors.
    fn into_definition(self, node: &str, field: &str) -> Result<CheckDefinition, ApiError> {
        if !self.node.is_empty() && self.node != node {
            return Err(ApiError::bad_request(format!(
                "{field}.Node: check node {:?} does not match registration node {node:?}",
                self.node
            )));
        }
        let status = parse_status(&self.status).ok_or_else(|| {
            ApiError::bad_request(format!(
                "{field}.Status: {:?} is not a check status (passing, warning, critical or maintenance)",
                self.status
            ))
        })?;
        let definition = self.definition;
        let kind = match self.kind {
            kind if !kind.is_empty() => kind,
            _ if !definition.http.is_empty() => "http".to_owned(),
            _ if !definition.tcp.is_empty() => "tcp".to_owned(),
            _ if !definition.grpc.is_empty() => "grpc".to_owned(),
            _ => String::new(),
        };
        Ok(CheckDefinition {
            check_id: self.check_id,
            name: self.name,
            status,
            notes: self.notes,
            output: self.output,
            service_id: self.service_id,
            kind,
            interval: definition.interval.map(GoDuration::display).unwrap_or_default(),
            timeout: definition.timeout.map(GoDuration::display).unwrap_or_default(),
        })
    }
}

/// A check status as Consul spells it; empty means critical, Consul's default for a new check.
pub fn parse_status(text: &str) -> Option<CheckStatus> {
    match text {
        "" | "critical" => Some(CheckStatus::Critical),
        "passing" => Some(CheckStatus::Passing),
        "warning" => Some(CheckStatus::Warning),
        "maintenance" => Some(CheckStatus::Maintenance),
        _ => None,
    }
}

/// Consul's `DeregisterRequest`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DeregisterBody {
    pub datacenter: String,
    pub node: String,
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    #[serde(rename = "CheckID")]
    pub check_id: String,
}

impl DeregisterBody {
    pub fn into_deregistration(self) -> Deregistration {
        let given = |id: String| (!id.is_empty()).then_some(id);
        Deregistration { node: self.node, service_id: given(self.service_id), check_id: given(self.check_id) }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn web_node() -> Node {
        Node {
            id: "40e4a748-2192-161a-0510-9bf59fe950b5".into(),
            node: "ext1".into(),
            address: "10.0.0.5".into(),
            create_index: 7,
            modify_index: 8,
            ..Node::default()
        }
    }

    fn web_instance() -> ServiceInstance {
        ServiceInstance {
            node: "ext1".into(),
            id: "web-1".into(),
            service: "web".into(),
            port: 80,
            create_index: 9,
            modify_index: 9,
            ..ServiceInstance::default()
        }
    }

    /// A `ServiceNode` has Consul's field names, its node's fields flattened in, the service's
    /// indexes, and `{}`/`[]` rather than `null` for what is empty.
    #[test]
    fn service_node_has_consul_fields() {
        let (node, instance) = (web_node(), web_instance());
        let value = serde_json::to_value(ServiceNodeJson::new(&node, &instance, "dc1")).unwrap();
        assert_eq!(value["ID"], "40e4a748-2192-161a-0510-9bf59fe950b5");
        assert_eq!(
            (&value["Node"], &value["Address"], &value["Datacenter"]),
            (&json!("ext1"), &json!("10.0.0.5"), &json!("dc1"))
        );
        assert_eq!(
            (&value["ServiceID"], &value["ServiceName"], &value["ServicePort"]),
            (&json!("web-1"), &json!("web"), &json!(80))
        );
        assert_eq!(
            (&value["ServiceTags"], &value["ServiceMeta"], &value["NodeMeta"]),
            (&json!([]), &json!({}), &json!({}))
        );
        assert_eq!(value["TaggedAddresses"], json!({}));
        assert_eq!(value["ServiceWeights"], json!({"Passing": 1, "Warning": 1}));
        assert_eq!((&value["CreateIndex"], &value["ModifyIndex"]), (&json!(9), &json!(9)));
        assert_eq!(value["ServiceProxy"], json!({"MeshGateway": {}, "Expose": {}}));
    }

    /// A health check shows its status word, its `Type`, and its timing only in `Definition` when
    /// given.
    #[test]
    fn health_check_has_consul_fields() {
        let mut check = HealthCheck {
            node: "ext1".into(),
            check_id: "web-http".into(),
            status: CheckStatus::Warning,
            service_id: "web-1".into(),
            kind: "http".into(),
            ..HealthCheck::default()
        };
        let value = serde_json::to_value(HealthCheckJson::from(&check)).unwrap();
        assert_eq!(
            (&value["CheckID"], &value["Status"], &value["Type"]),
            (&json!("web-http"), &json!("warning"), &json!("http"))
        );
        assert_eq!((&value["ServiceID"], &value["ServiceTags"]), (&json!("web-1"), &json!([])));
        assert_eq!(value["Definition"], json!({}));
        check.interval = "10s".into();
        let value = serde_json::to_value(HealthCheckJson::from(&check)).unwrap();
        assert_eq!(value["Definition"], json!({"Interval": "10s"}));
    }

    /// A registration in Consul's shape becomes the command: the single `Check` joins `Checks`,
    /// a missing status is critical, Go's nulls and zero weights mean "not given".
    #[test]
    fn register_body_becomes_a_registration() {
        let body = json!({
            "Node": "ext1", "Address": "10.0.0.5", "TaggedAddresses": null, "NodeMeta": {"rack": "r1"},
            "Service": {"ID": "web-1", "Service": "web", "Tags": ["v1"], "Port": 80, "Meta": null,
                        "Weights": {"Passing": 0, "Warning": 0}, "Namespace": "default"},
            "Checks": [{"CheckID": "node-ok", "Status": "passing"}],
            "Check": {"CheckID": "web-http", "ServiceID": "web-1", "Definition": {"HTTP": "http://x", "Interval": "10s"}}
        });
        let body: RegisterBody = decode(body.to_string().as_bytes()).unwrap();
        let registration = body.into_registration().unwrap();
        assert_eq!((registration.node.as_str(), registration.address.as_str()), ("ext1", "10.0.0.5"));
        assert_eq!(registration.node_meta.get("rack").map(String::as_str), Some("r1"));
        let service = registration.service.unwrap();
        assert_eq!((service.id.as_str(), service.port, service.tags.as_slice()), ("web-1", 80, &["v1".to_owned()][..]));
        assert_eq!(service.weights, Weights::default());
        let checks = &registration.checks;
        assert_eq!(checks.len(), 2);
        assert_eq!((checks[0].check_id.as_str(), checks[0].status), ("node-ok", CheckStatus::Passing));
        assert_eq!(
            (checks[1].status, checks[1].kind.as_str(), checks[1].interval.as_str()),
            (CheckStatus::Critical, "http", "10s")
        );
    }

    /// Malformed bodies are refused with a message that names the field at fault.
    #[test]
    fn bad_bodies_name_the_field() {
        let error = |body: &str| match decode::<RegisterBody>(body.as_bytes()) {
            Ok(body) => body.into_registration().unwrap_err().message,
            Err(e) => e.message,
        };
        assert!(error(r#"{"Node": "n", "Service": {"Port": 70000}}"#).contains("Service.Port"));
        assert!(error(r#"{"Node": "n", "Checks": [{}, {"Status": "sick"}]}"#).contains("Checks[1].Status"));
        assert!(error(r#"{"Node": "n", "Check": {"Node": "other"}}"#).contains("Check.Node"));
        assert!(error(r#"{"Node": 5}"#).contains("Node"));
        assert!(error("{").starts_with("Request decode failed"));
        assert!(error(r#"{} {}"#).contains("trailing"));
    }

    /// Go durations arrive as text or nanoseconds; zero means unset.
    #[test]
    fn durations_display_as_go_text() {
        let shown = |json: serde_json::Value| serde_json::from_value::<GoDuration>(json).unwrap().display();
        assert_eq!(shown(json!("15s")), "15s");
        assert_eq!(shown(json!(10_000_000_000u64)), "10s");
        assert_eq!(shown(json!(250_000_000u64)), "250ms");
        assert_eq!(shown(json!(0)), "");
        assert_eq!(shown(json!("0s")), "");
    }

    /// A deregistration names a service, a check, or neither (the whole node).
    #[test]
    fn deregister_body_ignores_empty_ids() {
        let body: DeregisterBody = decode(br#"{"Node": "ext1", "ServiceID": "", "CheckID": "c1"}"#).unwrap();
        let deregistration = body.into_deregistration();
        assert_eq!(deregistration.service_id, None);
        assert_eq!(deregistration.check_id.as_deref(), Some("c1"));
    }
}
