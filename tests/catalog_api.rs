//! Consul's catalog and health API against `cairn agent -dev`: a real process on 127.0.0.1.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{get, leader_of, put, wait_until, Agent, AgentPorts, TempDir};
use serde_json::{json, Value};

fn dev_agent(dir: &TempDir) -> Agent {
    let agent =
        Agent::start(&["-dev".into(), "-node".into(), "dev1".into()], AgentPorts::free(), dir.path().join("agent.log"));
    wait_until(Duration::from_secs(20), "the dev agent to elect itself", || leader_of(agent.http()).is_some());
    agent
}

/// Register `ext1` (an external node, as a curl user would) with the `web` service and an HTTP
/// check in `status`, and a node-level check that passes.
fn register_web(addr: SocketAddr, status: &str) {
    let body = json!({
        "Node": "ext1",
        "Address": "10.0.0.5",
        "NodeMeta": {"rack": "r1"},
        "Service": {"ID": "web-1", "Service": "web", "Tags": ["v1", "primary"], "Port": 8080},
        "Checks": [
            {"CheckID": "web-http", "Name": "web HTTP", "ServiceID": "web-1", "Status": status,
             "Definition": {"HTTP": "http://10.0.0.5:8080/health", "Interval": "10s"}},
            {"CheckID": "ext1-alive", "Name": "ping", "Status": "passing"}
        ]
    });
    let answer = put(addr, "/v1/catalog/register", body.to_string().as_bytes());
    assert_eq!((answer.status, answer.text().trim()), (200, "true"), "{}", answer.text());
}

fn index_of(response: &common::Response) -> u64 {
    response.header("X-Consul-Index").expect("X-Consul-Index").parse().expect("a number")
}

fn names(list: &Value, field: &str) -> Vec<String> {
    list.as_array().expect("a list").iter().map(|item| item[field].as_str().unwrap().to_owned()).collect()
}

/// The leader registers itself: the dev agent's node carries `serfHealth` and the `consul`
/// service, and the only datacenter is its own.
#[test]
fn the_dev_agent_appears_with_serf_health_and_the_consul_service() {
    let dir = TempDir::new("catalog-self");
    let agent = dev_agent(&dir);
    let addr = agent.http();
    wait_until(Duration::from_secs(20), "the leader to register itself", || {
        get(addr, "/v1/catalog/node/dev1").json()["Services"]["consul"]["Port"] == agent.ports.server
    });
    let checks = get(addr, "/v1/health/node/dev1").json();
    assert_eq!(names(&checks, "CheckID"), ["serfHealth"]);
    assert_eq!((&checks[0]["Status"], &checks[0]["Name"]), (&json!("passing"), &json!("Serf Health Status")));
    let consul = get(addr, "/v1/health/service/consul?passing").json();
    assert_eq!(consul.as_array().unwrap().len(), 1);
    assert_eq!(
        (&consul[0]["Node"]["Node"], &consul[0]["Checks"][0]["CheckID"]),
        (&json!("dev1"), &json!("serfHealth"))
    );
    assert!(get(addr, "/v1/catalog/services").json().get("consul").is_some());
    assert_eq!(get(addr, "/v1/catalog/datacenters").json(), json!(["dc1"]));
    let nodes = get(addr, "/v1/catalog/nodes");
    assert_eq!(nodes.header("X-Consul-KnownLeader"), Some("true"));
    assert_eq!(names(&nodes.json(), "Node"), ["dev1"]);
}

/// An external service registered through `/v1/catalog/register` reads back through every
/// catalog and health endpoint, leaves `?passing` answers while its check is critical, and is
/// gone after deregistration.
#[test]
fn an_external_service_through_every_endpoint() {
    let dir = TempDir::new("catalog-external");
    let agent = dev_agent(&dir);
    let addr = agent.http();
    register_web(addr, "passing");

    assert_eq!(get(addr, "/v1/catalog/services").json()["web"], json!(["primary", "v1"]));
    let instances = get(addr, "/v1/catalog/service/web?tag=v1&tag=PRIMARY").json();
    assert_eq!(instances.as_array().unwrap().len(), 1, "{instances}");
    let instance = &instances[0];
    assert_eq!(
        (&instance["Node"], &instance["Address"], &instance["Datacenter"]),
        (&json!("ext1"), &json!("10.0.0.5"), &json!("dc1"))
    );
    assert_eq!((&instance["ServiceID"], &instance["ServicePort"]), (&json!("web-1"), &json!(8080)));
    assert_eq!(instance["NodeMeta"], json!({"rack": "r1"}));
    assert_eq!(get(addr, "/v1/catalog/service/web?tag=v2").json(), json!([]));
    assert_eq!(get(addr, "/v1/catalog/service/web?node-meta=rack:r2").json(), json!([]));
    assert!(names(&get(addr, "/v1/catalog/nodes").json(), "Node").contains(&"ext1".to_owned()));
    assert_eq!(names(&get(addr, "/v1/catalog/nodes?node-meta=rack:r1").json(), "Node"), ["ext1"]);
    assert_eq!(get(addr, "/v1/catalog/services?node-meta=rack:r1").json(), json!({"web": ["primary", "v1"]}));
    let node = get(addr, "/v1/catalog/node/ext1").json();
    assert_eq!(
        (&node["Node"]["Address"], &node["Services"]["web-1"]["Tags"]),
        (&json!("10.0.0.5"), &json!(["v1", "primary"]))
    );
    assert_eq!(get(addr, "/v1/catalog/node/nobody").json(), Value::Null);

    let health = get(addr, "/v1/health/service/web").json();
    assert_eq!(names(&health[0]["Checks"], "CheckID"), ["ext1-alive", "web-http"], "node-level and own checks");
    assert_eq!((&health[0]["Service"]["ID"], &health[0]["Node"]["Node"]), (&json!("web-1"), &json!("ext1")));
    assert_eq!(health[0]["Checks"][1]["Type"], "http");
    assert_eq!(names(&get(addr, "/v1/health/checks/web").json(), "CheckID"), ["web-http"]);
    assert_eq!(names(&get(addr, "/v1/health/node/ext1").json(), "CheckID"), ["ext1-alive", "web-http"]);
    assert_eq!(get(addr, "/v1/health/service/web?passing").json().as_array().unwrap().len(), 1);

    register_web(addr, "critical");
    assert_eq!(get(addr, "/v1/health/service/web?passing").json(), json!([]));
    assert_eq!(get(addr, "/v1/health/service/web?passing=false").json().as_array().unwrap().len(), 1);
    assert_eq!(names(&get(addr, "/v1/health/state/critical").json(), "CheckID"), ["web-http"]);
    assert!(!names(&get(addr, "/v1/health/state/passing").json(), "CheckID").contains(&"web-http".to_owned()));

    let gone = put(addr, "/v1/catalog/deregister", br#"{"Node": "ext1"}"#);
    assert_eq!((gone.status, gone.text().trim()), (200, "true"));
    assert_eq!(get(addr, "/v1/catalog/service/web").json(), json!([]));
    assert!(get(addr, "/v1/catalog/services").json().get("web").is_none());
    assert_eq!(get(addr, "/v1/health/node/ext1").json(), json!([]));
}

/// A blocking query on one service's health returns when that service's check changes, and
/// sleeps through a change to another service.
#[test]
fn blocking_health_query_wakes_on_its_check() {
    let dir = TempDir::new("catalog-blocking");
    let agent = dev_agent(&dir);
    let addr = agent.http();
    register_web(addr, "passing");
    let index = index_of(&get(addr, "/v1/health/service/web"));

    let waiter = std::thread::spawn(move || get(addr, &format!("/v1/health/service/web?index={index}&wait=30s")));
    let other = json!({"Node": "ext2", "Address": "10.0.0.6", "Service": {"Service": "db", "Port": 5432}});
    assert_eq!(put(addr, "/v1/catalog/register", other.to_string().as_bytes()).status, 200);
    register_web(addr, "critical");
    let woken = waiter.join().unwrap();
    assert!(index_of(&woken) > index, "{} should pass {index}", index_of(&woken));
    let checks = woken.json()[0]["Checks"].clone();
    assert_eq!(names(&checks, "Status"), ["passing", "critical"], "woken by web's check, not by db");

    let new_index = index_of(&woken);
    let idle = get(addr, &format!("/v1/health/service/web?index={new_index}&wait=200ms&stale"));
    assert_eq!(index_of(&idle), new_index);
}

/// A client agent answers the catalog and health API through a server: it registers and reads
/// as the server does, and the leader lists the client itself as a node with `serfHealth`.
#[test]
fn a_client_agent_forwards_catalog_requests() {
    let dir = TempDir::new("catalog-client");
    let server = dev_agent(&dir);
    let client = common::start_client(&dir, &server, "c1");
    let addr = client.http();
    wait_until(Duration::from_secs(30), "the leader to register the client", || {
        let checks = common::http(addr, "GET", "/v1/health/node/c1", b"").ok().filter(|r| r.status == 200);
        checks.is_some_and(|r| r.json().get(0).is_some_and(|check| check["CheckID"] == "serfHealth"))
    });
    register_web(addr, "passing");
    let health = get(addr, "/v1/health/service/web?passing");
    assert_eq!(health.status, 200, "{}", health.text());
    assert_eq!(health.json()[0]["Service"]["ID"], "web-1");
    assert!(index_of(&health) > 0);
    assert_eq!(names(&get(server.http(), "/v1/catalog/service/web").json(), "Node"), ["ext1"]);
}

/// Bad requests are refused with a reason: malformed bodies name the field, oversized bodies
/// get 413, an unknown state 400, and what the catalog refuses Consul's status and message.
#[test]
fn bad_requests_are_refused_with_a_reason() {
    let dir = TempDir::new("catalog-bad");
    let agent = dev_agent(&dir);
    let addr = agent.http();

    let port =
        put(addr, "/v1/catalog/register", br#"{"Node": "n", "Address": "a", "Service": {"Service": "s", "Port": -1}}"#);
    assert_eq!(port.status, 400);
    assert!(port.text().contains("Service.Port"), "{}", port.text());
    let garbage = put(addr, "/v1/catalog/register", b"{\"Node\": ");
    assert_eq!(garbage.status, 400);
    assert!(garbage.text().starts_with("Request decode failed"), "{}", garbage.text());

    let mut huge = br#"{"Node": "n", "Address": ""#.to_vec();
    huge.extend(std::iter::repeat_n(b'x', 512 * 1024));
    huge.extend(br#""}"#);
    assert_eq!(put(addr, "/v1/catalog/register", &huge).status, 413);

    let state = get(addr, "/v1/health/state/sick");
    assert_eq!(state.status, 400);
    assert!(state.text().contains("sick"), "{}", state.text());

    let no_node = put(addr, "/v1/catalog/register", br#"{"Address": "10.0.0.1"}"#);
    assert_eq!((no_node.status, no_node.text().trim()), (500, "Must provide node"));
    let unknown = br#"{"Node": "n", "Address": "a", "Check": {"CheckID": "c", "ServiceID": "nope"}}"#;
    let unknown = put(addr, "/v1/catalog/register", unknown);
    assert_eq!(unknown.status, 500);
    assert!(unknown.text().contains("Unknown service ID 'nope'"), "{}", unknown.text());
    assert_eq!(get(addr, "/v1/catalog/node/n").json(), Value::Null, "a refused registration changes nothing");
    assert_eq!(get(addr, "/v1/catalog/service/").status, 400);
}
