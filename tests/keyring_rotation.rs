//! Gossip key rotation on real processes on 127.0.0.1: one server and two client agents,
//! encrypted, rotate to a new key through `/v1/operator/keyring` (asking servers and clients
//! alike) and stay in one pool throughout; the API's refusals and `cairn keyring`'s output.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{cli, get, http, Agent, AgentPorts, Response, TempDir};
use serde_json::{json, Value};

/// Generous: the agents share the machine's two cores with other builds and tests.
const DEADLINE: Duration = Duration::from_secs(30);
const KEY1: &str = "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s=";
const KEY2: &str = "HD5Y61iE+neTxd1n6TnXhCPViPIUq5QpWq8WW8012XA=";
const NAMES: [&str; 3] = ["s1", "c1", "c2"];

/// How many times agents are started afresh when one finds a port taken.
const START_ATTEMPTS: usize = 3;

/// `s1`, a server that bootstraps alone, and the clients `c1` and `c2` joining through it, all
/// gossiping with `KEY1`, once every one sees all three alive.
fn encrypted_pool(dir: &TempDir) -> Vec<Agent> {
    start_until(dir, "every agent to see all three alive", launch_pool, |agents| agents.iter().all(all_alive))
}

fn launch_pool(dir: &Path) -> Vec<Agent> {
    let ports: Vec<AgentPorts> = NAMES.iter().map(|_| AgentPorts::free()).collect();
    let launch = |(name, own): (&&str, &AgentPorts)| {
        let mut args: Vec<String> = ["-node", name, "-bind", "127.0.0.1", "-encrypt", KEY1, "-retry-interval", "200ms"]
            .map(String::from)
            .to_vec();
        args.extend(["-data-dir".into(), dir.join(name).display().to_string()]);
        if *name == "s1" {
            args.extend(["-server", "-bootstrap-expect", "1"].map(String::from));
        } else {
            args.extend(["-retry-join".into(), format!("127.0.0.1:{}", ports[0].serf_lan)]);
        }
        Agent::start(&args, *own, dir.join(format!("{name}.log")))
    };
    NAMES.iter().zip(&ports).map(launch).collect()
}

/// Launch agents in a fresh directory under `dir` and wait until `ready` holds. Free ports are
/// found by probing, so another test process can take one before the agent binds it: an agent
/// that exits on a taken port is started over, with all its peers, on new ports. Any other exit,
/// or the deadline, fails with what every agent says about the pool and the end of its log.
fn start_until(
    dir: &TempDir,
    what: &str,
    launch: impl Fn(&Path) -> Vec<Agent>,
    ready: impl Fn(&[Agent]) -> bool,
) -> Vec<Agent> {
    for attempt in 0..START_ATTEMPTS {
        let attempt_dir = dir.path().join(format!("attempt{attempt}"));
        std::fs::create_dir_all(&attempt_dir).expect("create the attempt's directory");
        let mut agents = launch(&attempt_dir);
        let deadline = Instant::now() + DEADLINE;
        while !ready(&agents) {
            let exited = agents.iter_mut().any(|a| a.try_exit().is_some());
            if exited && agents.iter().any(|a| a.log_text().contains("Address already in use")) {
                break;
            }
            if exited || Instant::now() > deadline {
                panic!("waiting for {what} (an agent exited: {exited}):\n{}", describe(&mut agents));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if ready(&agents) {
            return agents;
        }
    }
    panic!("{START_ATTEMPTS} attempts to start agents all found a port taken");
}

fn describe(agents: &mut [Agent]) -> String {
    let each = agents.iter_mut().map(|a| {
        let members = http(a.http(), "GET", "/v1/agent/members", b"").map(|r| r.text());
        let log = a.log_text();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        format!("exit {:?}, members {members:?}, log (last line first):\n{}", a.try_exit(), tail.join("\n"))
    });
    each.collect::<Vec<_>>().join("\n\n")
}

/// Whether `agent` lists exactly the three agents, all alive (Serf status 1).
fn all_alive(agent: &Agent) -> bool {
    let Ok(response) = http(agent.http(), "GET", "/v1/agent/members", b"") else { return false };
    let Ok(Value::Array(members)) = serde_json::from_slice::<Value>(&response.body) else { return false };
    let mut alive: Vec<&str> = members.iter().filter(|m| m["Status"] == 1).filter_map(|m| m["Name"].as_str()).collect();
    alive.sort_unstable();
    members.len() == NAMES.len() && alive == ["c1", "c2", "s1"]
}

fn keyring(agent: &Agent, method: &str, key: &str) -> Response {
    let body = json!({ "Key": key }).to_string();
    http(agent.http(), method, "/v1/operator/keyring", body.as_bytes())
        .unwrap_or_else(|e| panic!("{method} /v1/operator/keyring: {e}"))
}

/// The one LAN pool's entry in a successful list from `agent`.
fn list(agent: &Agent) -> Value {
    let response = get(agent.http(), "/v1/operator/keyring");
    assert_eq!(response.status, 200, "{}", response.text());
    let pools = response.json();
    assert_eq!(pools.as_array().map(Vec::len), Some(1), "{pools}");
    assert_eq!((&pools[0]["WAN"], &pools[0]["Datacenter"]), (&json!(false), &json!("dc1")), "{pools}");
    pools[0].clone()
}

fn assert_ok(response: Response, what: &str) {
    assert_eq!(response.status, 200, "{what}: {}", response.text());
}

/// Install, use, remove: each step asked of a different agent, clients included, reaches all
/// three, and no member is ever lost; the primary key cannot be removed, and a bad key is a 400.
#[test]
fn a_new_key_rolls_out_without_losing_a_member() {
    let dir = TempDir::new("keyring-rotation");
    let agents = encrypted_pool(&dir);
    let (s1, c1, c2) = (&agents[0], &agents[1], &agents[2]);
    let pool = list(c1);
    assert_eq!((&pool["Keys"], &pool["PrimaryKeys"]), (&json!({ KEY1: 3 }), &json!({ KEY1: 3 })), "{pool}");
    assert_eq!(pool["NumNodes"], 3);

    assert_ok(keyring(c2, "POST", KEY2), "install through a client");
    let pool = list(s1);
    assert_eq!((&pool["Keys"], &pool["PrimaryKeys"]), (&json!({ KEY1: 3, KEY2: 3 }), &json!({ KEY1: 3 })), "{pool}");

    assert_ok(keyring(s1, "PUT", KEY2), "use through the server");
    assert_eq!(list(c2)["PrimaryKeys"], json!({ KEY2: 3 }));

    assert_ok(keyring(c1, "DELETE", KEY1), "remove through a client");
    let pool = list(c2);
    assert_eq!(
        (&pool["Keys"], &pool["PrimaryKeys"], &pool["NumNodes"]),
        (&json!({ KEY2: 3 }), &json!({ KEY2: 3 }), &json!(3))
    );
    let local = get(c1.http(), "/v1/operator/keyring?local-only=true").json();
    assert_eq!((&local[0]["Keys"], &local[0]["NumNodes"]), (&json!({ KEY2: 1 }), &json!(1)), "{local}");

    let primary = keyring(s1, "DELETE", KEY2);
    assert_eq!(primary.status, 500, "{}", primary.text());
    assert!(primary.text().contains("dc1 (LAN) error: 3/3 nodes reported failure"), "{}", primary.text());
    for name in NAMES {
        let line = primary.text().lines().find(|l| l.contains(&format!("* {name}: "))).map(str::to_owned);
        assert!(line.is_some_and(|l| l.contains("removing the primary key is not allowed")), "{}", primary.text());
    }
    let bad = keyring(c1, "POST", "not base64!");
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert!(bad.text().contains("Invalid Key: gossip key is not valid base64"), "{}", bad.text());
    let malformed = http(c1.http(), "PUT", "/v1/operator/keyring", b"{\"Key\":").unwrap();
    assert_eq!(malformed.status, 400, "{}", malformed.text());
    assert!(malformed.text().contains("Request decode failed"), "{}", malformed.text());
    assert_eq!(list(s1)["Keys"], json!({ KEY2: 3 }), "refused changes changed nothing");

    for agent in &agents {
        assert!(all_alive(agent), "all three still alive on {:?}", agent.ports);
    }
}

fn dev_agent(dir: &TempDir, extra: &[&str]) -> Agent {
    let launch = |dir: &Path| {
        let mut args: Vec<String> = ["-dev", "-node", "dev1"].map(String::from).to_vec();
        args.extend(extra.iter().map(|s| s.to_string()));
        vec![Agent::start(&args, AgentPorts::free(), dir.join("agent.log"))]
    };
    let up = |agents: &[Agent]| http(agents[0].http(), "GET", "/v1/agent/members", b"").is_ok_and(|r| r.status == 200);
    start_until(dir, "the dev agent to answer", launch, up).remove(0)
}

/// `cairn keyring` prints Consul's output for each action, and fails with the agent's message.
#[test]
fn the_cli_prints_consuls_keyring_output() {
    let dir = TempDir::new("keyring-cli");
    let agent = dev_agent(&dir, &["-encrypt", KEY1]);
    let (ok, out, err) = cli(&agent, &["keyring", "-list"]);
    assert!(ok, "{err}");
    assert_eq!(out, format!("==> Gathering installed encryption keys...\n\ndc1 (LAN):\n  {KEY1} [1/1]\n"));

    let (ok, out, err) = cli(&agent, &["keyring", "-install", KEY2]);
    assert!(ok, "{err}");
    assert_eq!(out, "==> Installing new gossip encryption key...\n");
    let (ok, out, _) = cli(&agent, &["keyring", "-use", KEY2]);
    assert!(ok && out == "==> Changing primary gossip encryption key...\n", "{out}");
    let (ok, out, _) = cli(&agent, &["keyring", "-list-primary"]);
    assert!(ok && out.ends_with(&format!("dc1 (LAN):\n  {KEY2} [1/1]\n")), "{out}");

    let (ok, _, err) = cli(&agent, &["keyring", "-remove", KEY2]);
    assert!(!ok);
    assert!(err.starts_with("error: Unexpected response code: 500 (2 errors occurred:"), "{err}");
    assert!(err.contains("1/1 nodes reported failure") && err.contains("primary key"), "{err}");
    let (ok, _, err) = cli(&agent, &["keyring", "-list", "-remove", KEY1]);
    assert!(!ok && err.contains("Only a single action is allowed"), "{err}");
}

/// Without `-encrypt` there is no keyring: listing it is Consul's error, through the API and
/// the CLI alike.
#[test]
fn without_encryption_the_keyring_is_an_error() {
    let dir = TempDir::new("keyring-plain");
    let agent = dev_agent(&dir, &[]);
    let response = get(agent.http(), "/v1/operator/keyring");
    assert_eq!(response.status, 500);
    assert_eq!(
        response.text(),
        "1 error occurred:\n\t* dc1 (LAN) error: Keyring is empty (encryption not enabled)\n\n"
    );
    let install = keyring(&agent, "POST", KEY1);
    assert!(install.status == 500 && install.text().contains("encryption not enabled"), "{}", install.text());
    let (ok, _, err) = cli(&agent, &["keyring", "-list"]);
    assert!(!ok);
    assert!(err.contains("Unexpected response code: 500") && err.contains("encryption not enabled"), "{err}");
}
