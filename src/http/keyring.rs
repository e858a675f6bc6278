//! `/v1/operator/keyring`: Consul's gossip keyring API, which `cairn keyring` (and
//! `consul keyring`) call. `GET` lists, `POST` installs, `PUT` makes a key the primary, `DELETE`
//! removes; the three changes take `{"Key": "<base64>"}`.
//!
//! The keyring belongs to the gossip pool, not to the replicated state, so every agent, server or
//! client, answers these itself: the operation is applied here and carried to every member by a
//! gossip query ([`crate::gossip::Gossip::keyring_op`]), and the answers are counted into Consul's
//! `KeyringResponse`. cairn has one pool per datacenter (no WAN pool yet), so a list has one entry,
//! `WAN: false`.
//!
//! As in Consul, an operation that failed on some member, or that some member did not answer in
//! time, is a 500 whose text gives Serf's verdict (`2/3 nodes reported failure`) and each member's
//! error, in go-multierror's layout, which Consul's CLI prints as it is.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State as AxumState};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};

use super::query::Params;
use super::{json_body, ApiError};
use crate::agent::Agent;
use crate::gossip::{GossipError, GossipKey, KeyringOp, KeyringReport};

/// Largest request body: `{"Key": "<base64 of 32 bytes>"}` is about 60 bytes.
const MAX_BODY_BYTES: usize = 4 * 1024;
/// Serf's bound on `relay-factor`.
const MAX_RELAY_FACTOR: u64 = 5;
/// What Serf answers on a member without a keyring, and Consul passes on.
const NOT_ENABLED: &str = "Keyring is empty (encryption not enabled)";

pub fn routes() -> Router<Arc<Agent>> {
    Router::new().route("/v1/operator/keyring", get(keyring).post(keyring).put(keyring).delete(keyring))
}

/// One keyring request, checked.
#[derive(Debug, PartialEq, Eq)]
struct KeyringRequest {
    op: KeyringOp,
    /// `?local-only=true` on a list: this agent's keyring alone, without asking the pool. (In
    /// Consul it keeps the list off the WAN pool; cairn has none, so it narrows to this agent,
    /// which answers even when the pool is partitioned.)
    local_only: bool,
}

#[derive(Deserialize)]
struct KeyBody {
    // Go's JSON decoding, which Consul uses, matches field names case-insensitively.
    #[serde(rename = "Key", alias = "key")]
    key: String,
}

impl KeyringRequest {
    /// `?relay-factor` is checked against Serf's bound and otherwise ignored: answers come straight
    /// back to this agent, they are not relayed through others.
    fn parse(method: &Method, params: &Params, body: &[u8]) -> Result<Self, ApiError> {
        let op = match method.as_str() {
            "GET" => KeyringOp::List,
            "POST" => KeyringOp::Install(parse_key(body)?),
            "PUT" => KeyringOp::Use(parse_key(body)?),
            "DELETE" => KeyringOp::Remove(parse_key(body)?),
            other => unreachable!("the router sends only GET, POST, PUT and DELETE here, not {other}"),
        };
        match params.text("relay-factor").filter(|v| !v.is_empty()).map(str::parse::<u64>) {
            None => {}
            Some(Err(e)) => return Err(ApiError::bad_request(format!("Error parsing relay factor: {e}"))),
            Some(Ok(n)) if n > MAX_RELAY_FACTOR => {
                return Err(ApiError::bad_request(format!(
                    "Invalid relay-factor: Relay factor must be in range: [0, {MAX_RELAY_FACTOR}]"
                )))
            }
            Some(Ok(_)) => {}
        }
        let local_only = match params.text("local-only").filter(|v| !v.is_empty()) {
            None => false,
            Some(text) => go_bool(text)
                .ok_or_else(|| ApiError::bad_request(format!("Error parsing local-only: invalid value {text:?}")))?,
        };
        if local_only && op != KeyringOp::List {
            return Err(ApiError::bad_request(
                "Invalid use of local-only: local-only can only be set for list requests",
            ));
        }
        Ok(KeyringRequest { op, local_only })
    }
}

/// The key a change names. The key itself never appears in an error: it is a secret.
fn parse_key(body: &[u8]) -> Result<GossipKey, ApiError> {
    let body: KeyBody =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("Request decode failed: {e}")))?;
    GossipKey::from_base64(&body.key).map_err(|e| ApiError::bad_request(format!("Invalid Key: {e}")))
}

/// Go's `strconv.ParseBool`, which Consul parses `?local-only` with.
fn go_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

async fn keyring(
    AxumState(agent): AxumState<Arc<Agent>>,
    method: Method,
    RawQuery(query): RawQuery,
    body: Body,
) -> Result<Response, ApiError> {
    let params = Params::parse(query.as_deref())?;
    let body = read_body(body).await?;
    let request = KeyringRequest::parse(&method, &params, &body)?;
    let gossip = agent.gossip();
    let report = if request.local_only {
        let keys = gossip.keyring_local(KeyringOp::List).await;
        keys.map(|keys| KeyringReport::new(1, BTreeMap::from([(agent.node_name.clone(), Ok(keys))])))
    } else {
        gossip.keyring_op(request.op.clone(), gossip.query_timeout()).await
    };
    let pool = KeyringResponseJson::lan(&agent.datacenter, &report.map_err(|e| refusal(&agent.datacenter, e))?);
    if let Some(error) = pool.failure_text() {
        return Err(ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, message: error });
    }
    match request.op {
        KeyringOp::List => Ok(json_body(&[pool])),
        _ => Ok(StatusCode::OK.into_response()),
    }
}

/// Read a body of at most [`MAX_BODY_BYTES`], answering 413 beyond it.
async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    match http_body_util::Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!("Request body too large: the limit is {MAX_BODY_BYTES} bytes"),
        }),
        Err(e) => Err(ApiError::bad_request(format!("could not read request body: {e}"))),
    }
}

/// The gossip layer refused the operation before asking anyone.
fn refusal(datacenter: &str, error: GossipError) -> ApiError {
    let (status, message) = match error {
        GossipError::EncryptionDisabled => {
            (StatusCode::INTERNAL_SERVER_ERROR, multierror(&[format!("{} error: {NOT_ENABLED}", lan_pool(datacenter))]))
        }
        e @ GossipError::Busy => (StatusCode::TOO_MANY_REQUESTS, e.to_string()),
        e => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    ApiError { status, message }
}

fn lan_pool(datacenter: &str) -> String {
    format!("{datacenter} (LAN)")
}

/// Consul's `KeyringResponse`: one gossip pool's keys, and how many members hold each.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
struct KeyringResponseJson {
    #[serde(rename = "WAN")]
    wan: bool,
    datacenter: String,
    segment: String,
    /// Members where the operation failed, with their error.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    messages: BTreeMap<String, String>,
    keys: BTreeMap<String, usize>,
    primary_keys: BTreeMap<String, usize>,
    num_nodes: usize,
    /// Serf's verdict when some member failed or did not answer; `None` when all went well.
    #[serde(skip)]
    failure: Option<String>,
}

impl KeyringResponseJson {
    fn lan(datacenter: &str, report: &KeyringReport) -> Self {
        let messages = report
            .responses
            .iter()
            .filter_map(|(node, result)| result.as_ref().err().map(|e| (node.clone(), e.clone())))
            .collect();
        // Serf's rule: failures first; then too few answers, counting failed ones as answers.
        let failure = if report.num_errors() > 0 {
            Some(format!("{}/{} nodes reported failure", report.num_errors(), report.num_nodes))
        } else if report.num_missing() > 0 {
            Some(format!("{}/{} nodes reported success", report.responses.len(), report.num_nodes))
        } else {
            None
        };
        KeyringResponseJson {
            wan: false,
            datacenter: datacenter.to_owned(),
            segment: String::new(),
            messages,
            keys: report.keys.clone(),
            primary_keys: report.primary_keys.clone(),
            num_nodes: report.num_nodes,
            failure,
        }
    }

    /// Consul's error text for a failed operation: the pool's verdict, then each member's error.
    fn failure_text(&self) -> Option<String> {
        let verdict = self.failure.as_ref()?;
        let mut errors = vec![format!("{} error: {verdict}", lan_pool(&self.datacenter))];
        errors.extend(self.messages.iter().map(|(node, message)| format!("{node}: {message}")));
        Some(multierror(&errors))
    }
}

/// go-multierror's list layout, in which Consul answers keyring failures.
fn multierror(errors: &[String]) -> String {
    let head = match errors.len() {
        1 => "1 error occurred:".to_string(),
        n => format!("{n} errors occurred:"),
    };
    let points: Vec<String> = errors.iter().map(|e| format!("\t* {e}")).collect();
    format!("{head}\n{}\n", points.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::KeyInfo;

    const KEY: &str = "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s=";

    fn parse(method: Method, query: &str, body: &str) -> Result<KeyringRequest, ApiError> {
        KeyringRequest::parse(&method, &Params::parse(Some(query)).unwrap(), body.as_bytes())
    }

    fn key_body() -> String {
        format!(r#"{{"Key": "{KEY}"}}"#)
    }

    /// Each method is its operation; the changes carry the key from the body.
    #[test]
    fn methods_are_operations() {
        let key = GossipKey::from_base64(KEY).unwrap();
        assert_eq!(parse(Method::GET, "", "").unwrap().op, KeyringOp::List);
        assert_eq!(parse(Method::POST, "", &key_body()).unwrap().op, KeyringOp::Install(key.clone()));
        assert_eq!(parse(Method::PUT, "relay-factor=2", &key_body()).unwrap().op, KeyringOp::Use(key.clone()));
        assert_eq!(parse(Method::DELETE, "", &format!(r#"{{"key":"{KEY}"}}"#)).unwrap().op, KeyringOp::Remove(key));
        assert!(parse(Method::GET, "local-only=true", "").unwrap().local_only);
        assert!(!parse(Method::GET, "local-only=false", "").unwrap().local_only);
    }

    /// A malformed body, a bad key, a bad relay factor or local-only on a change is a 400 saying
    /// which; the key is never echoed.
    #[test]
    fn bad_requests_say_what_is_wrong() {
        let cases = [
            (Method::POST, "", "not json".to_string(), "Request decode failed"),
            (Method::POST, "", "{}".to_string(), "Request decode failed"),
            (Method::PUT, "", r#"{"Key": "bm90IGEga2V5"}"#.to_string(), "Invalid Key: gossip key is 9 bytes long"),
            (Method::DELETE, "", r#"{"Key": "%%%"}"#.to_string(), "Invalid Key: gossip key is not valid base64"),
            (Method::GET, "relay-factor=x", String::new(), "Error parsing relay factor"),
            (Method::GET, "relay-factor=6", String::new(), "Relay factor must be in range: [0, 5]"),
            (Method::GET, "local-only=maybe", String::new(), "Error parsing local-only"),
            (Method::POST, "local-only=true", key_body(), "local-only can only be set for list requests"),
        ];
        for (method, query, body, expected) in cases {
            let error = parse(method.clone(), query, &body).unwrap_err();
            assert_eq!(error.status, StatusCode::BAD_REQUEST, "{method} ?{query} {body}");
            assert!(error.message.contains(expected), "{method} ?{query}: {}", error.message);
            assert!(!error.message.contains(KEY));
        }
    }

    fn report(num_nodes: usize, answers: &[(&str, Result<&[&str], &str>)]) -> KeyringReport {
        let responses = answers
            .iter()
            .map(|(node, result)| {
                let result = result
                    .map(|keys| {
                        keys.iter().enumerate().map(|(i, k)| KeyInfo { key: k.to_string(), primary: i == 0 }).collect()
                    })
                    .map_err(str::to_owned);
                (node.to_string(), result)
            })
            .collect();
        KeyringReport::new(num_nodes, responses)
    }

    /// Every member answering: Consul's shape, counts per key and per primary, no error.
    #[test]
    fn a_full_report_is_consuls_keyring_response() {
        let both: &[&str] = &["new", "old"];
        let pool = KeyringResponseJson::lan("dc1", &report(2, &[("a", Ok(both)), ("b", Ok(&["old", "new"]))]));
        assert_eq!(pool.failure_text(), None);
        let json = serde_json::to_value([&pool]).unwrap();
        let expected = serde_json::json!([{
            "WAN": false, "Datacenter": "dc1", "Segment": "",
            "Keys": {"new": 2, "old": 2}, "PrimaryKeys": {"new": 1, "old": 1}, "NumNodes": 2,
        }]);
        assert_eq!(json, expected);
    }

    /// Failures and silences are Serf's verdicts, followed by each member's error.
    #[test]
    fn failures_and_missing_answers_are_errors() {
        let keys: &[&str] = &["k"];
        let failed =
            KeyringResponseJson::lan("dc1", &report(3, &[("a", Err("no")), ("b", Err("nope")), ("c", Ok(keys))]));
        assert_eq!(serde_json::to_value(&failed).unwrap()["Messages"], serde_json::json!({"a": "no", "b": "nope"}));
        assert_eq!(
            failed.failure_text().unwrap(),
            "3 errors occurred:\n\t* dc1 (LAN) error: 2/3 nodes reported failure\n\t* a: no\n\t* b: nope\n"
        );
        let silent = KeyringResponseJson::lan("dc1", &report(3, &[("a", Ok(keys))]));
        assert_eq!(
            silent.failure_text().unwrap(),
            "1 error occurred:\n\t* dc1 (LAN) error: 1/3 nodes reported success\n"
        );
    }

    /// Without encryption the answer is Consul's, naming the pool.
    #[test]
    fn disabled_encryption_is_consuls_error() {
        let error = refusal("dc1", GossipError::EncryptionDisabled);
        assert_eq!(error.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            error.message,
            "1 error occurred:\n\t* dc1 (LAN) error: Keyring is empty (encryption not enabled)\n"
        );
    }
}
