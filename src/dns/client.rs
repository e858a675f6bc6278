//! A client agent's local view for DNS: client agents hold no replicated state, so each name asked
//! gets a small catalog of its own, filled from a server on the first question and kept current by
//! a blocking query per name, and dropped when nobody has asked for it for [`IDLE_DROP`].
//!
//! One RPC per name per change, not per packet. An entry answers while its refresher has heard
//! from a server within `max_stale` plus one blocking wait; past that the next question fetches
//! anew (and gets SERVFAIL if no server answers in time).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use super::name::Lookup;
use crate::agent::ServerForwarder;
use crate::rpc::message::ForwardedHttp;
use crate::state::{CatalogCommand, CheckDefinition, CheckStatus, Command, Registration, ServiceDefinition, State};

/// Names cached at once; a question for another name beyond this is answered SERVFAIL (bounded
/// memory against a scan of random names).
pub const ENTRIES_MAX: usize = 4096;
/// An entry nobody asked for this long is dropped and its refresher stops.
pub const IDLE_DROP: Duration = Duration::from_secs(60);
/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after a failed refresh.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// What a client caches: one service name's instances, or one node.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    Service(String),
    Node(String),
}

impl Key {
    /// The key a lookup needs, or `None` when it needs no catalog (an address, an unknown name).
    pub fn of(lookup: &Lookup) -> Option<Key> {
        match lookup {
            Lookup::Service { service, .. } => Some(Key::Service(service.clone())),
            Lookup::Node { node } => Some(Key::Node(node.clone())),
            // The zone's name servers are the `consul` service's instances.
            Lookup::Apex => Some(Key::Service("consul".into())),
            Lookup::Addr { .. } | Lookup::Unknown => None,
        }
    }

    fn path(&self) -> String {
        match self {
            Key::Service(name) => format!("/v1/health/service/{}", escape(name)),
            Key::Node(name) => format!("/v1/catalog/node/{}", escape(name)),
        }
    }
}

/// Percent-encode everything but unreserved characters: names come from DNS labels.
fn escape(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

struct Entry {
    state: Arc<State>,
    /// The `X-Consul-Index` of the last answer, for the next blocking query.
    index: u64,
    /// When a server last answered for this name.
    heard_at: Instant,
    last_used: Instant,
}

/// The per-name caches of one client agent.
pub struct ClientView {
    forwarder: ServerForwarder,
    max_stale: Duration,
    entries: Mutex<BTreeMap<Key, Entry>>,
}

impl std::fmt::Debug for ClientView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientView").field("max_stale", &self.max_stale).finish_non_exhaustive()
    }
}

impl ClientView {
    pub fn new(forwarder: ServerForwarder, max_stale: Duration) -> Arc<Self> {
        Arc::new(ClientView { forwarder, max_stale, entries: Mutex::new(BTreeMap::new()) })
    }

    /// How long a blocking refresh waits: the bound on how stale an unchanged entry can look.
    fn wait(&self) -> Duration {
        self.max_stale.max(Duration::from_secs(1))
    }

    /// The cached catalog for `key` if it is fresh, marking it used.
    pub fn cached(&self, key: &Key) -> Option<Arc<State>> {
        let mut entries = self.entries.lock().expect("dns cache lock");
        let entry = entries.get_mut(key)?;
        let bound = self.max_stale + self.wait() + FETCH_TIMEOUT;
        if entry.heard_at.elapsed() > bound {
            return None;
        }
        entry.last_used = Instant::now();
        Some(entry.state.clone())
    }

    /// Fetch `key` from a server now, cache it and start its refresher. `None` when no server
    /// answered in time or the cache is full.
    pub async fn fetch(self: &Arc<Self>, key: Key) -> Option<Arc<State>> {
        let fresh_entry = !self.entries.lock().expect("dns cache lock").contains_key(&key);
        if fresh_entry && self.entries.lock().expect("dns cache lock").len() >= ENTRIES_MAX {
            return None;
        }
        let (state, index) = self.read(&key, None).await?;
        let now = Instant::now();
        let entry = Entry { state: state.clone(), index, heard_at: now, last_used: now };
        let had = self.entries.lock().expect("dns cache lock").insert(key.clone(), entry).is_some();
        if !had {
            tokio::spawn(self.clone().refresh(key));
        }
        Some(state)
    }

    /// Keep `key` current with blocking queries until nobody uses it.
    async fn refresh(self: Arc<Self>, key: Key) {
        loop {
            let index = {
                let entries = self.entries.lock().expect("dns cache lock");
                match entries.get(&key) {
                    Some(entry) if entry.last_used.elapsed() < IDLE_DROP => entry.index,
                    _ => break,
                }
            };
            match self.read(&key, Some(index)).await {
                Some((state, index)) => {
                    let mut entries = self.entries.lock().expect("dns cache lock");
                    if let Some(entry) = entries.get_mut(&key) {
                        entry.state = state;
                        entry.index = index;
                        entry.heard_at = Instant::now();
                    }
                }
                None => tokio::time::sleep(RETRY_PAUSE).await,
            }
        }
        self.entries.lock().expect("dns cache lock").remove(&key);
    }

    /// One read through a server: a blocking one when `index` is given.
    async fn read(&self, key: &Key, index: Option<u64>) -> Option<(Arc<State>, u64)> {
        let path = match index {
            Some(index) => format!("{}?index={index}&wait={}ms", key.path(), self.wait().as_millis()),
            None => key.path(),
        };
        let request = ForwardedHttp { head: "GET".into(), path, headers: Vec::new(), body: Vec::new() };
        let limit = FETCH_TIMEOUT + if index.is_some() { self.wait() } else { Duration::ZERO };
        let response = self.forwarder.forward(request, true, limit).await.ok()?;
        if response.head != "200" {
            return None;
        }
        let index = response
            .headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("x-consul-index"))
            .and_then(|(_, value)| value.parse().ok())
            .unwrap_or(0);
        let body: Value = serde_json::from_slice(&response.body).ok()?;
        Some((Arc::new(state_from(key, &body)), index))
    }
}

/// A catalog holding what a server's answer showed, so the DNS core answers from it exactly as
/// it answers from a server's state (the same health rule).
fn state_from(key: &Key, body: &Value) -> State {
    let registrations: Vec<Registration> = match key {
        Key::Service(_) => body.as_array().map(|entries| entries.iter().map(instance_registration).collect()),
        Key::Node(_) => body.get("Node").filter(|n| n.is_object()).map(|node| vec![node_registration(node)]),
    }
    .unwrap_or_default();
    let mut state = State::default();
    for (i, registration) in registrations.into_iter().enumerate() {
        state.apply(i as u64 + 1, &Command::Catalog(CatalogCommand::Register(registration)));
    }
    state
}

fn text(value: &Value, field: &str) -> String {
    value.get(field).and_then(Value::as_str).unwrap_or_default().to_owned()
}

fn strings(value: &Value, field: &str) -> Vec<String> {
    value
        .get(field)
        .and_then(Value::as_array)
        .map_or_else(Vec::new, |items| items.iter().filter_map(Value::as_str).map(str::to_owned).collect())
}

fn string_map(value: &Value, field: &str) -> BTreeMap<String, String> {
    value.get(field).and_then(Value::as_object).map_or_else(BTreeMap::new, |map| {
        map.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned()))).collect()
    })
}

fn node_registration(node: &Value) -> Registration {
    Registration {
        node: text(node, "Node"),
        node_id: text(node, "ID"),
        address: text(node, "Address"),
        node_meta: string_map(node, "Meta"),
        ..Registration::default()
    }
}

/// One `/v1/health/service` entry: node, instance and every check that counts against it.
fn instance_registration(entry: &Value) -> Registration {
    let null = Value::Null;
    let service = entry.get("Service").unwrap_or(&null);
    let checks = entry.get("Checks").and_then(Value::as_array).map_or_else(Vec::new, |checks| {
        checks
            .iter()
            .map(|check| CheckDefinition {
                check_id: text(check, "CheckID"),
                name: text(check, "Name"),
                status: status(&text(check, "Status")),
                service_id: text(check, "ServiceID"),
                ..CheckDefinition::default()
            })
            .collect()
    });
    Registration {
        service: Some(ServiceDefinition {
            id: text(service, "ID"),
            service: text(service, "Service"),
            tags: strings(service, "Tags"),
            address: text(service, "Address"),
            port: service.get("Port").and_then(Value::as_u64).unwrap_or(0) as u16,
            ..ServiceDefinition::default()
        }),
        checks,
        ..node_registration(entry.get("Node").unwrap_or(&null))
    }
}

/// A status word back to its status; anything unknown counts as critical, so it is not answered.
fn status(word: &str) -> CheckStatus {
    [CheckStatus::Passing, CheckStatus::Warning, CheckStatus::Critical, CheckStatus::Maintenance]
        .into_iter()
        .find(|status| status.as_str() == word)
        .unwrap_or(CheckStatus::Critical)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `/v1/health/service` answer becomes a catalog with the same instances and health.
    #[test]
    fn health_answer_becomes_a_catalog() {
        let body = serde_json::json!([
            {"Node": {"Node": "n1", "Address": "10.0.0.1", "Meta": {"rack": "r1"}},
             "Service": {"ID": "web-1", "Service": "web", "Tags": ["primary"], "Port": 80, "Address": ""},
             "Checks": [{"CheckID": "serfHealth", "Name": "serf", "Status": "passing", "ServiceID": ""},
                        {"CheckID": "web-1", "Name": "http", "Status": "critical", "ServiceID": "web-1"}]},
            {"Node": {"Node": "n2", "Address": "10.0.0.2", "Meta": {}},
             "Service": {"ID": "web-2", "Service": "web", "Tags": [], "Port": 81, "Address": ""},
             "Checks": [{"CheckID": "web-2", "Name": "http", "Status": "warning", "ServiceID": "web-2"}]}
        ]);
        let state = state_from(&Key::Service("web".into()), &body);
        let catalog = state.catalog();
        assert_eq!(catalog.service_instances("web").len(), 2);
        let healthy = catalog.healthy_instances("web", crate::state::HealthBar::NotCritical);
        assert_eq!(healthy.iter().map(|(n, _)| n.node.as_str()).collect::<Vec<_>>(), ["n2"]);
        assert_eq!(catalog.node("n1").unwrap().meta["rack"], "r1");
        let node = serde_json::json!({"Node": {"Node": "n1", "Address": "10.0.0.1", "Meta": {}}, "Services": {}});
        assert!(state_from(&Key::Node("n1".into()), &node).catalog().node("n1").is_some());
        assert!(state_from(&Key::Node("x".into()), &Value::Null).catalog().node("x").is_none());
        assert_eq!(escape("a b/ü"), "a%20b%2F%C3%BC");
    }
}
