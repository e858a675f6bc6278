//! `cairn agent -dev` as a user runs it: a real process on 127.0.0.1, the KV API over real HTTP.

mod common;

use std::time::Duration;

use common::{delete, get, http, leader_of, put, wait_until, Agent, AgentPorts, TempDir};

fn dev_agent(dir: &TempDir) -> Agent {
    let agent =
        Agent::start(&["-dev".into(), "-node".into(), "dev1".into()], AgentPorts::free(), dir.path().join("agent.log"));
    wait_until(Duration::from_secs(20), "the dev agent to elect itself", || leader_of(agent.http()).is_some());
    agent
}

/// A value written with PUT reads back in Consul's JSON shape, raw, and through ?recurse and ?keys.
#[test]
fn put_then_get_in_consul_shapes() {
    let dir = TempDir::new("kv-shapes");
    let agent = dev_agent(&dir);
    let addr = agent.http();

    let written = put(addr, "/v1/kv/app/config?flags=42", b"hello");
    assert_eq!((written.status, written.text().trim()), (200, "true"));

    let read = get(addr, "/v1/kv/app/config");
    assert_eq!(read.status, 200);
    let entries = read.json();
    let entry = &entries[0];
    assert_eq!(entry["Key"], "app/config");
    assert_eq!(entry["Value"], "aGVsbG8="); // base64("hello")
    assert_eq!(entry["Flags"], 42);
    assert_eq!(entry["LockIndex"], 0);
    let modify_index = entry["ModifyIndex"].as_u64().expect("ModifyIndex is a number");
    assert!(modify_index > 0 && entry["CreateIndex"] == entry["ModifyIndex"]);
    assert_eq!(read.header("X-Consul-Index"), Some(modify_index.to_string().as_str()));
    assert_eq!(read.header("X-Consul-KnownLeader"), Some("true"));
    assert!(read.header("Content-Type").is_some_and(|t| t.starts_with("application/json")));

    assert_eq!(get(addr, "/v1/kv/app/config?raw").body, b"hello");

    put(addr, "/v1/kv/app/db/url", b"postgres://");
    let listed = get(addr, "/v1/kv/app?recurse").json();
    let keys: Vec<&str> = listed.as_array().unwrap().iter().map(|e| e["Key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["app/config", "app/db/url"]);
    let rolled_up = get(addr, "/v1/kv/app/?keys&separator=/").json();
    assert_eq!(rolled_up, serde_json::json!(["app/config", "app/db/"]));
}

/// Check-and-set succeeds only against the current ModifyIndex; cas=0 only creates.
#[test]
fn cas_writes_and_deletes() {
    let dir = TempDir::new("kv-cas");
    let agent = dev_agent(&dir);
    let addr = agent.http();

    assert_eq!(put(addr, "/v1/kv/lock?cas=0", b"a").text().trim(), "true");
    assert_eq!(put(addr, "/v1/kv/lock?cas=0", b"b").text().trim(), "false");
    let index = get(addr, "/v1/kv/lock").json()[0]["ModifyIndex"].as_u64().unwrap();
    assert_eq!(put(addr, &format!("/v1/kv/lock?cas={}", index + 1000), b"c").text().trim(), "false");
    assert_eq!(put(addr, &format!("/v1/kv/lock?cas={index}"), b"d").text().trim(), "true");
    assert_eq!(get(addr, "/v1/kv/lock?raw").body, b"d");

    let index = get(addr, "/v1/kv/lock").json()[0]["ModifyIndex"].as_u64().unwrap();
    assert_eq!(delete(addr, &format!("/v1/kv/lock?cas={}", index - 1)).text().trim(), "false");
    assert_eq!(delete(addr, &format!("/v1/kv/lock?cas={index}")).text().trim(), "true");
    assert_eq!(get(addr, "/v1/kv/lock").status, 404);
}

/// DELETE removes one key, or a whole prefix with ?recurse; a missing key answers 404 with an index.
#[test]
fn deletes_and_missing_keys() {
    let dir = TempDir::new("kv-delete");
    let agent = dev_agent(&dir);
    let addr = agent.http();
    for key in ["a/1", "a/2", "b/1"] {
        put(addr, &format!("/v1/kv/{key}"), b"x");
    }
    assert_eq!(delete(addr, "/v1/kv/a/1").text().trim(), "true");
    assert_eq!(get(addr, "/v1/kv/a/1").status, 404);
    assert_eq!(delete(addr, "/v1/kv/a?recurse").text().trim(), "true");
    let missing = get(addr, "/v1/kv/a?recurse");
    assert_eq!(missing.status, 404);
    assert!(missing.header("X-Consul-Index").is_some_and(|i| i.parse::<u64>().unwrap() > 0));
    assert_eq!(get(addr, "/v1/kv/b/1?raw").body, b"x");
}

/// Bad requests get a 4xx with a message that says what was wrong, and change nothing.
#[test]
fn bad_requests_are_refused_with_a_reason() {
    let dir = TempDir::new("kv-bad");
    let agent = dev_agent(&dir);
    let addr = agent.http();

    let too_big = put(addr, "/v1/kv/big", &vec![b'x'; 512 * 1024 + 1]);
    assert_eq!(too_big.status, 413, "{}", too_big.text());
    assert!(too_big.text().contains("524288"), "{}", too_big.text());
    assert_eq!(get(addr, "/v1/kv/big").status, 404);
    assert_eq!(put(addr, "/v1/kv/max", &vec![b'x'; 512 * 1024]).status, 200);

    let control = put(addr, "/v1/kv/bad%01key", b"x");
    assert_eq!(control.status, 400);
    assert!(control.text().contains("control character"), "{}", control.text());

    let no_key = put(addr, "/v1/kv/", b"x");
    assert_eq!((no_key.status, no_key.text().trim()), (400, "Missing key name"));

    let flags = put(addr, "/v1/kv/k?flags=minus-one", b"x");
    assert_eq!(flags.status, 400);
    assert!(flags.text().contains("flags"), "{}", flags.text());

    let both = get(addr, "/v1/kv/k?stale&consistent");
    assert_eq!(both.status, 400);

    let malformed = http(addr, "PUT", "/v1/kv/k", b"").unwrap();
    assert_eq!(malformed.status, 200, "an empty value is a valid value");
    assert_eq!(get(addr, "/v1/kv/k").json()[0]["Value"], serde_json::Value::Null);
}

/// A blocking query (?index=) returns once the key changes, with the new index.
#[test]
fn blocking_query_wakes_on_change() {
    let dir = TempDir::new("kv-blocking");
    let agent = dev_agent(&dir);
    let addr = agent.http();
    put(addr, "/v1/kv/watched", b"v1");
    let index: u64 = get(addr, "/v1/kv/watched").header("X-Consul-Index").unwrap().parse().unwrap();

    let waiter = std::thread::spawn(move || get(addr, &format!("/v1/kv/watched?index={index}&wait=30s")));
    put(addr, "/v1/kv/watched", b"v2");
    let woken = waiter.join().unwrap();
    let new_index: u64 = woken.header("X-Consul-Index").unwrap().parse().unwrap();
    assert!(new_index > index, "index {new_index} should pass {index}");
    assert_eq!(woken.json()[0]["Value"], "djI="); // base64("v2")

    // Without a change, the wait runs out and the same index comes back.
    let idle = get(addr, &format!("/v1/kv/watched?index={new_index}&wait=200ms"));
    assert_eq!(idle.header("X-Consul-Index"), Some(new_index.to_string().as_str()));
}

/// The status endpoints name the dev agent itself as leader and only peer.
#[test]
fn status_leader_and_peers() {
    let dir = TempDir::new("kv-status");
    let agent = dev_agent(&dir);
    let leader = leader_of(agent.http()).unwrap();
    assert_eq!(leader, format!("127.0.0.1:{}", agent.ports.server));
    assert_eq!(get(agent.http(), "/v1/status/peers").json(), serde_json::json!([leader]));
}

/// Unknown flags and missing required settings stop the agent with a message naming them.
#[test]
fn bad_flags_are_named() {
    let dir = TempDir::new("kv-flags");
    let mut agent = Agent::start(&["-bogus".into()], AgentPorts::free(), dir.path().join("bogus.log"));
    wait_until(Duration::from_secs(10), "the agent to exit", || agent.try_exit().is_some());
    assert!(!agent.try_exit().unwrap().success());
    assert!(agent.log_text().contains("-bogus"), "{}", agent.log_text());

    let mut agent = Agent::start(&["-server".into()], AgentPorts::free(), dir.path().join("nodata.log"));
    wait_until(Duration::from_secs(10), "the agent to exit", || agent.try_exit().is_some());
    assert!(agent.log_text().contains("data_dir"), "{}", agent.log_text());
}
