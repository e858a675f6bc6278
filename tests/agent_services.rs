//! The agent's own services and checks on real processes: the `/v1/agent/*` API, anti-entropy
//! carrying them into the catalog, persistence across a restart, config files and `cairn reload`,
//! and the seed's story (a script check against a service that goes away and comes back).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{cli, get, leader_of, put, wait_until, Agent, AgentPorts, TempDir};
use serde_json::{json, Value};

const DEADLINE: Duration = Duration::from_secs(30);

/// A one-server cluster keeping its data in `dir`, with `extra` flags.
fn server(dir: &TempDir, ports: AgentPorts, extra: &[&str]) -> Agent {
    let mut args: Vec<String> =
        ["-server", "-bootstrap-expect", "1", "-node", "s1", "-bind", "127.0.0.1"].map(String::from).to_vec();
    args.extend(["-data-dir".to_string(), dir.path().join("data").display().to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let agent = Agent::start(&args, ports, dir.path().join(format!("agent-{}.log", ports.http)));
    wait_until(DEADLINE, "the server to elect itself", || leader_of(agent.http()).is_some());
    agent
}

fn passing_ids(addr: SocketAddr, service: &str) -> Vec<String> {
    let answer = get(addr, &format!("/v1/health/service/{service}?passing"));
    answer.json().as_array().map_or(Vec::new(), |list| {
        list.iter().map(|entry| entry["Service"]["ID"].as_str().unwrap_or_default().to_string()).collect()
    })
}

fn catalog_ids(addr: SocketAddr, service: &str) -> Vec<String> {
    let answer = get(addr, &format!("/v1/catalog/service/{service}"));
    answer.json().as_array().map_or(Vec::new(), |list| {
        list.iter().map(|entry| entry["ServiceID"].as_str().unwrap_or_default().to_string()).collect()
    })
}

fn put_json(addr: SocketAddr, path: &str, body: &Value) -> common::Response {
    put(addr, path, body.to_string().as_bytes())
}

#[test]
fn a_service_registered_through_the_agent_follows_its_ttl_check_and_survives_a_restart() {
    let dir = TempDir::new("agent-services");
    let ports = AgentPorts::free();
    let mut agent = server(&dir, ports, &[]);
    let addr = agent.http();

    let body = json!({
        "Name": "web", "ID": "web-1", "Tags": ["v1"], "Port": 8080, "Meta": {"team": "a"},
        "Check": {"CheckID": "web-ttl", "TTL": "30s", "Notes": "the app reports in"}
    });
    let answer = put_json(addr, "/v1/agent/service/register", &body);
    assert_eq!(answer.status, 200, "{}", answer.text());

    let services = get(addr, "/v1/agent/services").json();
    assert_eq!(services["web-1"]["Service"], "web");
    assert_eq!(services["web-1"]["Port"], 8080);
    let checks = get(addr, "/v1/agent/checks").json();
    assert_eq!((&checks["web-ttl"]["Status"], &checks["web-ttl"]["Type"]), (&json!("critical"), &json!("ttl")));

    // Anti-entropy writes it to the catalog; its check is critical, so it is not passing.
    wait_until(DEADLINE, "the service in the catalog", || catalog_ids(addr, "web") == ["web-1"]);
    assert!(passing_ids(addr, "web").is_empty());

    assert_eq!(put(addr, "/v1/agent/check/pass/web-ttl?note=all+good", b"").status, 200);
    wait_until(DEADLINE, "the instance to pass", || passing_ids(addr, "web") == ["web-1"]);
    let check = &get(addr, "/v1/health/checks/web").json()[0];
    assert_eq!(check["Output"], "all good");

    assert_eq!(put(addr, "/v1/agent/check/fail/web-ttl", b"").status, 200);
    wait_until(DEADLINE, "the failed instance to leave ?passing", || passing_ids(addr, "web").is_empty());
    let update = json!({"Status": "passing", "Output": "recovered"});
    assert_eq!(put_json(addr, "/v1/agent/check/update/web-ttl", &update).status, 200);
    wait_until(DEADLINE, "the instance to pass again", || passing_ids(addr, "web") == ["web-1"]);

    // Maintenance takes it out of ?passing with the reason, and back.
    assert_eq!(put(addr, "/v1/agent/service/maintenance/web-1?enable=true&reason=deploy", b"").status, 200);
    wait_until(DEADLINE, "maintenance to take it out", || passing_ids(addr, "web").is_empty());
    let maintenance = &get(addr, "/v1/agent/checks").json()["_service_maintenance:web-1"];
    assert_eq!(maintenance["Notes"], "deploy");

    // A crash and restart: the API registration (and its maintenance) come back from disk.
    agent.kill();
    let agent = server(&dir, ports, &[]);
    let addr = agent.http();
    assert_eq!(get(addr, "/v1/agent/services").json()["web-1"]["Port"], 8080);
    assert!(get(addr, "/v1/agent/checks").json()["_service_maintenance:web-1"].is_object());
    assert_eq!(put(addr, "/v1/agent/service/maintenance/web-1?enable=false", b"").status, 200);
    assert_eq!(put(addr, "/v1/agent/check/pass/web-ttl", b"").status, 200);
    wait_until(DEADLINE, "the restored instance to pass", || passing_ids(addr, "web") == ["web-1"]);

    // Deregistering removes it from the agent and the catalog, and it stays gone after a restart.
    assert_eq!(put(addr, "/v1/agent/service/deregister/web-1", b"").status, 200);
    wait_until(DEADLINE, "the service to leave the catalog", || catalog_ids(addr, "web").is_empty());
    assert!(get(addr, "/v1/health/checks/web").json().as_array().is_some_and(|c| c.is_empty()));
    let self_ = get(addr, "/v1/agent/self").json();
    assert_eq!(self_["Stats"]["anti_entropy"]["in_sync"], "true", "{self_}");
}

#[test]
fn bad_requests_name_what_is_wrong_and_change_nothing() {
    let dir = TempDir::new("agent-services-bad");
    let agent = server(&dir, AgentPorts::free(), &[]);
    let addr = agent.http();

    let answer = put(addr, "/v1/agent/service/register", b"{\"Name\": ");
    assert_eq!(answer.status, 400);
    assert!(answer.text().contains("Request decode failed"), "{}", answer.text());

    let answer = put_json(addr, "/v1/agent/service/register", &json!({"Name": "web", "Port": "eighty"}));
    assert_eq!(answer.status, 400);
    assert!(answer.text().contains("service.port"), "{}", answer.text());

    let answer = put_json(addr, "/v1/agent/service/register", &json!({"Name": "web", "Colour": "blue"}));
    assert_eq!(answer.status, 400);
    assert!(answer.text().contains("Colour") && answer.text().contains("unknown field"), "{}", answer.text());

    // Script checks from the API need enable_script_checks.
    let script = json!({"Name": "web", "Check": {"Args": ["/bin/true"], "Interval": "10s"}});
    let answer = put_json(addr, "/v1/agent/service/register", &script);
    assert_eq!(answer.status, 400);
    assert!(answer.text().contains("enable_script_checks"), "{}", answer.text());

    let answer = put_json(addr, "/v1/agent/check/register", &json!({"Name": "c", "ServiceID": "nope", "TTL": "5s"}));
    assert_eq!(answer.status, 400);
    assert!(answer.text().contains("nope"), "{}", answer.text());

    assert_eq!(put(addr, "/v1/agent/service/deregister/nope", b"").status, 404);
    assert_eq!(put(addr, "/v1/agent/check/pass/nope", b"").status, 404);
    assert_eq!(get(addr, "/v1/agent/service/nope").status, 404);
    assert_eq!(put(addr, "/v1/agent/maintenance?enable=maybe", b"").status, 400);

    // A TTL update of a check that is not a TTL check is refused.
    let tcp = json!({"Name": "db", "Check": {"TCP": "127.0.0.1:1", "Interval": "10s"}});
    assert_eq!(put_json(addr, "/v1/agent/service/register", &tcp).status, 200);
    let answer = put(addr, "/v1/agent/check/pass/service:db", b"");
    assert_eq!(answer.status, 400, "{}", answer.text());

    let services = get(addr, "/v1/agent/services").json();
    assert_eq!(services.as_object().unwrap().keys().collect::<Vec<_>>(), ["db"]);
}

/// A tiny HTTP server the seed's check can curl: answers 200 while running.
struct TinyServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TinyServer {
    fn start(addr: SocketAddr) -> TinyServer {
        let listener = TcpListener::bind(addr).expect("bind the tiny server");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                        let mut buf = [0u8; 1024];
                        let _ = stream.read(&mut buf);
                        let body = r#"{"cluster_name":"elasticsearch","status":"green"}"#;
                        let head =
                            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                        let _ = stream.write_all(head.as_bytes());
                        let _ = stream.write_all(body.as_bytes());
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        TinyServer { addr, stop, thread: Some(thread) }
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for TinyServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The seed's story: a config dir holds the seed's JSON, its script check curls a service; while
/// the service answers the instance passes, when it stops the instance leaves `?passing`, and
/// when it starts again the instance returns.
#[test]
fn the_seeds_elasticsearch_check_follows_the_service() {
    let dir = TempDir::new("agent-seed-story");
    let es_port = common::free_port();
    let config_dir = dir.path().join("consul.d");
    std::fs::create_dir_all(&config_dir).unwrap();
    // The seed's file, pointed at the test's server; the interval is 2s rather than 10s only to
    // keep the test short.
    let seed = format!(
        r#"{{"service": {{"name": "elasticsearch", "port": {es_port}, "check": {{"script": "curl -sf http://127.0.0.1:{es_port}", "interval": "2s"}}}}}}"#
    );
    std::fs::write(config_dir.join("elasticsearch.json"), seed).unwrap();
    std::fs::write(config_dir.join("agent.json"), r#"{"enable_local_script_checks": true}"#).unwrap();

    let mut es = TinyServer::start(SocketAddr::from(([127, 0, 0, 1], es_port)));
    let agent = server(&dir, AgentPorts::free(), &["-config-dir", config_dir.to_str().unwrap()]);
    let addr = agent.http();
    wait_until(DEADLINE, "elasticsearch to pass", || passing_ids(addr, "elasticsearch") == ["elasticsearch"]);
    let check = &get(addr, "/v1/agent/checks").json()["service:elasticsearch"];
    assert!(check["Output"].as_str().unwrap_or_default().contains("green"), "{check}");

    es.stop();
    wait_until(DEADLINE, "elasticsearch to leave ?passing", || passing_ids(addr, "elasticsearch").is_empty());
    assert_eq!(catalog_ids(addr, "elasticsearch"), ["elasticsearch"], "still registered, only not passing");

    let _es = TinyServer::start(es.addr);
    wait_until(DEADLINE, "elasticsearch to return", || passing_ids(addr, "elasticsearch") == ["elasticsearch"]);
}

#[test]
fn reload_applies_the_files_difference_and_refuses_a_broken_file() {
    let dir = TempDir::new("agent-reload");
    let config_dir = dir.path().join("consul.d");
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::write(config_dir.join("web.json"), r#"{"service": {"name": "web", "port": 80}}"#).unwrap();
    let agent = server(&dir, AgentPorts::free(), &["-config-dir", config_dir.to_str().unwrap()]);
    let addr = agent.http();
    wait_until(DEADLINE, "web from the config file", || catalog_ids(addr, "web") == ["web"]);
    // An API registration is not the files' business: reload leaves it.
    assert_eq!(put_json(addr, "/v1/agent/service/register", &json!({"Name": "api-made"})).status, 200);

    std::fs::remove_file(config_dir.join("web.json")).unwrap();
    std::fs::write(config_dir.join("db.hcl"), "service {\n  name = \"db\"\n  port = 5432\n}\n").unwrap();
    let (ok, stdout, stderr) = cli(&agent, &["reload"]);
    assert!(ok, "{stdout}{stderr}");
    wait_until(DEADLINE, "db in and web out", || {
        catalog_ids(addr, "db") == ["db"] && catalog_ids(addr, "web").is_empty()
    });
    assert_eq!(catalog_ids(addr, "api-made"), ["api-made"]);

    std::fs::write(config_dir.join("broken.json"), r#"{"service": {"name": "x", "port": -1}}"#).unwrap();
    let (ok, _, stderr) = cli(&agent, &["reload"]);
    assert!(!ok);
    assert!(stderr.contains("broken.json") && stderr.contains("service.port"), "{stderr}");
    let services = get(addr, "/v1/agent/services").json();
    let mut ids: Vec<&String> = services.as_object().unwrap().keys().collect();
    ids.sort();
    assert_eq!(ids, ["api-made", "db"], "a refused reload changes nothing");
}

#[test]
fn a_client_agent_syncs_its_services_through_a_server() {
    let dir = TempDir::new("agent-client-sync");
    let server_ports = AgentPorts::free();
    let server = server(&dir, server_ports, &[]);
    let client = common::start_client(&dir, &server, "c1");
    let (saddr, caddr) = (server.http(), client.http());
    wait_until(DEADLINE, "the client to answer", || {
        common::http(caddr, "GET", "/v1/agent/self", b"").is_ok_and(|answer| answer.status == 200)
    });
    let body = json!({"Name": "cache", "Port": 6379, "Check": {"TTL": "30s", "Status": "passing"}});
    assert_eq!(put_json(caddr, "/v1/agent/service/register", &body).status, 200);
    wait_until(DEADLINE, "the client's service to pass, as the server sees it", || {
        get(saddr, "/v1/health/service/cache?passing").json()[0]["Node"]["Node"] == "c1"
    });
    assert_eq!(put(caddr, "/v1/agent/check/fail/service:cache", b"").status, 200);
    wait_until(DEADLINE, "the failure to reach the catalog", || passing_ids(saddr, "cache").is_empty());
}
