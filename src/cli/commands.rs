//! The commands that talk to a running agent over its HTTP API.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Deserialize;

use super::args::{table, Args, Kind};
use super::http::{request, AgentAddr, HttpError};

/// What a command prints on success, or why it failed.
pub type Outcome = Result<String, String>;

fn agent(args: &Args) -> AgentAddr {
    AgentAddr::resolve(args.value("http-addr"))
}

fn fail(e: HttpError) -> String {
    format!("Error: {e}")
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct MemberJson {
    name: String,
    addr: String,
    port: u16,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    status: u8,
}

/// `cairn members`: Consul's table of the LAN pool.
pub fn members(raw: &[String]) -> Outcome {
    let args = Args::parse(raw, &[("detailed", Kind::Bool), ("wan", Kind::Bool)])?;
    let members: Vec<MemberJson> =
        request(&agent(&args), "GET", "/v1/agent/members", b"").and_then(|a| a.json()).map_err(fail)?;
    let mut rows = vec![["Node", "Address", "Status", "Type", "Build", "Protocol", "DC"].map(String::from).to_vec()];
    if args.flag("detailed") {
        rows = vec![["Node", "Address", "Status", "Tags"].map(String::from).to_vec()];
    }
    for m in members {
        let status = match m.status {
            1 => "alive",
            2 => "leaving",
            3 => "left",
            4 => "failed",
            _ => "none",
        };
        let tag = |name: &str| m.tags.get(name).cloned().unwrap_or_default();
        let address = format!("{}:{}", m.addr, m.port);
        if args.flag("detailed") {
            let tags: Vec<String> = m.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            rows.push(vec![m.name.clone(), address, status.into(), tags.join(",")]);
        } else {
            let kind = if tag("role") == "consul" { "server" } else { "client" };
            rows.push(vec![m.name.clone(), address, status.into(), kind.into(), tag("build"), tag("vsn"), tag("dc")]);
        }
    }
    Ok(table(&rows))
}

/// `cairn join ADDR...`: ask the local agent to join the pool through these agents.
pub fn join(raw: &[String]) -> Outcome {
    let args = Args::parse(raw, &[("wan", Kind::Bool)])?;
    if args.positional.is_empty() {
        return Err("At least one address to join must be specified.".into());
    }
    let mut joined = 0;
    let mut errors = Vec::new();
    for address in &args.positional {
        match request(&agent(&args), "PUT", &format!("/v1/agent/join/{address}"), b"") {
            Ok(_) => joined += 1,
            Err(e) => errors.push(format!("{address}: {e}")),
        }
    }
    if joined == 0 {
        return Err(format!("Error joining address(es): {}", errors.join("; ")));
    }
    Ok(format!("Successfully joined cluster by contacting {joined} nodes.\n"))
}

/// `cairn leave`: the local agent leaves the pool gracefully and shuts down.
pub fn leave(raw: &[String]) -> Outcome {
    let args = Args::parse(raw, &[])?;
    request(&agent(&args), "PUT", "/v1/agent/leave", b"").map_err(|e| format!("Error leaving: {e}"))?;
    Ok("Graceful leave complete\n".into())
}

/// `cairn reload`: the agent re-reads its config files and applies the services and checks they
/// define (as SIGHUP does). A file that does not load is reported and nothing changes.
pub fn reload(raw: &[String]) -> Outcome {
    let args = Args::parse(raw, &[])?;
    request(&agent(&args), "PUT", "/v1/agent/reload", b"").map_err(|e| format!("Error reloading: {e}"))?;
    Ok("Configuration reload triggered\n".into())
}

/// `cairn force-leave NODE`: mark a failed member as left.
pub fn force_leave(raw: &[String]) -> Outcome {
    let args = Args::parse(raw, &[("prune", Kind::Bool)])?;
    let [node] = args.positional.as_slice() else {
        return Err("A single node name must be specified to force leave.".into());
    };
    let prune = if args.flag("prune") { "?prune=1" } else { "" };
    request(&agent(&args), "PUT", &format!("/v1/agent/force-leave/{node}{prune}"), b"")
        .map_err(|e| format!("Error force leaving: {e}"))?;
    Ok(String::new())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RaftServerJson {
    #[serde(rename = "ID")]
    id: String,
    node: String,
    address: String,
    leader: bool,
    voter: bool,
    #[serde(default)]
    protocol_version: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RaftConfigurationJson {
    servers: Vec<RaftServerJson>,
}

/// `cairn operator raft list-peers|remove-peer`.
pub fn operator(raw: &[String]) -> Outcome {
    match (raw.first().map(String::as_str), raw.get(1).map(String::as_str)) {
        (Some("raft"), Some("list-peers")) => list_peers(&raw[2..]),
        (Some("raft"), Some("remove-peer")) => remove_peer(&raw[2..]),
        _ => Err("usage: cairn operator raft list-peers | cairn operator raft remove-peer -id=ID|-address=ADDR".into()),
    }
}

fn list_peers(raw: &[String]) -> Outcome {
    let args = Args::parse(raw, &[("stale", Kind::Bool)])?;
    let path =
        if args.flag("stale") { "/v1/operator/raft/configuration?stale" } else { "/v1/operator/raft/configuration" };
    let config: RaftConfigurationJson = request(&agent(&args), "GET", path, b"")
        .and_then(|a| a.json())
        .map_err(|e| format!("Error getting peers: {e}"))?;
    let mut rows = vec![["Node", "ID", "Address", "State", "Voter", "RaftProtocol"].map(String::from).to_vec()];
    for s in config.servers {
        let state = if s.leader { "leader" } else { "follower" };
        rows.push(vec![s.node, s.id, s.address, state.into(), s.voter.to_string(), s.protocol_version]);
    }
    Ok(table(&rows))
}

fn remove_peer(raw: &[String]) -> Outcome {
    let args = Args::parse(raw, &[("id", Kind::Value), ("address", Kind::Value)])?;
    let (kind, value) = match (args.value("id"), args.value("address")) {
        (Some(id), None) => ("id", id),
        (None, Some(address)) => ("address", address),
        _ => return Err("Exactly one of -id or -address must be given.".into()),
    };
    // The value goes into a query string: encode it, an address has a colon, an ID could be anything.
    let query = serde_urlencoded::to_string([(kind, value)]).map_err(|e| format!("Error: {e}"))?;
    request(&agent(&args), "DELETE", &format!("/v1/operator/raft/peer?{query}"), b"")
        .map_err(|e| format!("Error removing peer: {e}"))?;
    Ok(format!("Removed peer with {kind} {value:?}\n"))
}

/// `cairn validate <dir|file>...`: parses and validates config as `cairn agent` would (same
/// files, same rules, no flags), as `consul validate` does. Warnings are printed either way.
pub fn validate(raw: &[String]) -> Outcome {
    let args = Args::parse(raw, &[("quiet", Kind::Bool)])?;
    if args.positional.is_empty() {
        return Err("Must specify at least one config file or directory".into());
    }
    let paths: Vec<std::path::PathBuf> = args.positional.iter().map(Into::into).collect();
    let config = crate::config::validate_paths(&paths, &crate::io::hostname())
        .map_err(|e| format!("Config validation failed: {e}"))?;
    let mut out = String::new();
    for warning in &config.local.warnings {
        out.push_str(&format!("Warning: {warning}\n"));
    }
    if !args.flag("quiet") {
        out.push_str("Configuration is valid!\n");
    }
    Ok(out)
}

/// `cairn keygen`: a new 32-byte gossip key, base64, from the operating system's randomness.
pub fn keygen(raw: &[String]) -> Outcome {
    Args::parse(raw, &[])?;
    let key: [u8; 32] = rand08::random();
    Ok(format!("{}\n", base64::engine::general_purpose::STANDARD.encode(key)))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KeyringJson {
    #[serde(rename = "WAN", default)]
    wan: bool,
    datacenter: String,
    #[serde(default)]
    segment: String,
    #[serde(default)]
    messages: BTreeMap<String, String>,
    keys: BTreeMap<String, u32>,
    #[serde(default)]
    primary_keys: BTreeMap<String, u32>,
    num_nodes: u32,
}

/// One action of `cairn keyring`, with the line Consul prints before it.
#[derive(Debug, PartialEq, Eq)]
enum KeyringAction<'a> {
    List { primary_only: bool },
    Change { method: &'static str, key: &'a str, banner: &'static str },
}

/// Consul's rules: exactly one action; `-relay-factor` within 0..=5; `-local-only` only to list.
fn keyring_action(args: &Args) -> Result<KeyringAction<'_>, String> {
    let changes = [
        ("install", "POST", "Installing new gossip encryption key..."),
        ("use", "PUT", "Changing primary gossip encryption key..."),
        ("remove", "DELETE", "Removing gossip encryption key..."),
    ];
    let mut actions: Vec<KeyringAction> = changes
        .iter()
        .filter_map(|(flag, method, banner)| {
            args.value(flag).filter(|key| !key.is_empty()).map(|key| KeyringAction::Change { method, key, banner })
        })
        .collect();
    for (flag, primary_only) in [("list", false), ("list-primary", true)] {
        if args.flag(flag) {
            actions.push(KeyringAction::List { primary_only });
        }
    }
    if actions.len() > 1 {
        return Err("Only a single action is allowed".into());
    }
    let action = actions.pop().ok_or_else(|| KEYRING_USAGE.to_string())?;
    if let Some(relay) = args.value("relay-factor") {
        if !relay.parse::<u8>().is_ok_and(|n| n <= 5) {
            return Err("Error parsing relay factor: Relay factor must be in range: [0, 5]".into());
        }
    }
    if args.flag("local-only") && !matches!(action, KeyringAction::List { .. }) {
        return Err("Error validating local-only: local-only can only be set for list requests".into());
    }
    Ok(action)
}

const KEYRING_USAGE: &str = "Usage: cairn keyring [options]

  Manages encryption keys used for gossip messages: lists the keys installed in the cluster,
  installs new ones, changes the primary and removes old ones, for key rotation cluster-wide
  without disrupting the cluster. Exits 0 only if every member answered without error.

  -list                 List all keys currently in use within the cluster.
  -list-primary         List all primary keys currently in use within the cluster.
  -install=<key>        Install a new encryption key on every member.
  -use=<key>            Change the primary encryption key; it must be installed first.
  -remove=<key>         Remove a key from every member; it must not be the primary.
  -relay-factor=<n>     Accepted for compatibility (0 to 5); answers are not relayed.
  -local-only           List this agent's keys only.
  -http-addr=<addr>     The agent to ask (CAIRN_HTTP_ADDR, CONSUL_HTTP_ADDR; 127.0.0.1:8500).";

/// The flags of `cairn keyring`.
const KEYRING_FLAGS: [(&str, Kind); 7] = [
    ("list", Kind::Bool),
    ("list-primary", Kind::Bool),
    ("install", Kind::Value),
    ("use", Kind::Value),
    ("remove", Kind::Value),
    ("relay-factor", Kind::Value),
    ("local-only", Kind::Bool),
];

/// `cairn keyring -list | -list-primary | -install KEY | -use KEY | -remove KEY`, with Consul's
/// output.
pub fn keyring(raw: &[String]) -> Outcome {
    let args = Args::parse(raw, &KEYRING_FLAGS)?;
    let action = keyring_action(&args)?;
    let mut query = Vec::new();
    if let Some(relay) = args.value("relay-factor").filter(|r| *r != "0") {
        query.push(format!("relay-factor={relay}"));
    }
    if args.flag("local-only") {
        query.push("local-only=true".to_string());
    }
    let path = if query.is_empty() {
        "/v1/operator/keyring".to_string()
    } else {
        format!("/v1/operator/keyring?{}", query.join("&"))
    };
    let target = agent(&args);
    let primary_only = match action {
        KeyringAction::Change { method, key, banner } => {
            let body = serde_json::json!({ "Key": key }).to_string().into_bytes();
            request(&target, method, &path, &body).map_err(|e| format!("error: {e}"))?;
            return Ok(format!("==> {banner}\n"));
        }
        KeyringAction::List { primary_only } => primary_only,
    };
    let rings: Vec<KeyringJson> =
        request(&target, "GET", &path, b"").and_then(|a| a.json()).map_err(|e| format!("error: {e}"))?;
    let banner = if primary_only { "primary encryption keys" } else { "encryption keys" };
    let mut out = format!("==> Gathering installed {banner}...\n");
    for ring in rings {
        out.push_str(&keyring_pool(&ring, if primary_only { &ring.primary_keys } else { &ring.keys }));
    }
    Ok(out)
}

/// One pool in Consul's layout: a blank line, its name, members' messages, then each key with the
/// members holding it out of all.
fn keyring_pool(ring: &KeyringJson, keys: &BTreeMap<String, u32>) -> String {
    let mut pool = if ring.wan { "WAN".to_string() } else { format!("{} (LAN)", ring.datacenter) };
    if !ring.segment.is_empty() {
        pool.push_str(&format!(" [{}]", ring.segment));
    }
    let mut out = format!("\n{pool}:\n");
    for (node, message) in &ring.messages {
        out.push_str(&format!("  ===> {node}: {message}\n"));
    }
    for (key, count) in keys {
        out.push_str(&format!("  {key} [{count}/{}]\n", ring.num_nodes));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(raw: &[&str]) -> Result<String, String> {
        let raw: Vec<String> = raw.iter().map(|s| s.to_string()).collect();
        let args = Args::parse(&raw, &KEYRING_FLAGS)?;
        keyring_action(&args).map(|a| format!("{a:?}"))
    }

    /// Exactly one action, as Consul: two are refused, none prints the usage; the flags that only
    /// make sense for some actions are checked before anything is sent.
    #[test]
    fn keyring_takes_one_action() {
        assert_eq!(action(&["-list"]).unwrap(), "List { primary_only: false }");
        assert_eq!(action(&["-list-primary", "-local-only"]).unwrap(), "List { primary_only: true }");
        assert!(action(&["-use=k"]).unwrap().contains(r#"method: "PUT", key: "k""#));
        assert!(action(&["-list=false", "-remove", "k"]).unwrap().contains("DELETE"));
        assert_eq!(action(&["-list", "-install=k"]).unwrap_err(), "Only a single action is allowed");
        assert_eq!(action(&["-use=a", "-remove=b"]).unwrap_err(), "Only a single action is allowed");
        assert!(action(&[]).unwrap_err().starts_with("Usage: cairn keyring"));
        assert!(action(&["-install="]).unwrap_err().starts_with("Usage: cairn keyring"));
        assert!(action(&["-list", "-relay-factor=6"]).unwrap_err().contains("range: [0, 5]"));
        assert!(action(&["-list", "-relay-factor=3"]).is_ok());
        assert!(action(&["-install=k", "-local-only"]).unwrap_err().contains("only be set for list requests"));
    }

    /// A pool prints as Consul's `keyring -list` does, members' messages before the keys.
    #[test]
    fn keyring_pool_layout() {
        let ring = KeyringJson {
            wan: false,
            datacenter: "dc1".into(),
            segment: String::new(),
            messages: BTreeMap::from([("c1".to_string(), "key is not installed".to_string())]),
            keys: BTreeMap::from([("a==".to_string(), 3), ("b==".to_string(), 1)]),
            primary_keys: BTreeMap::from([("a==".to_string(), 3)]),
            num_nodes: 3,
        };
        assert_eq!(
            keyring_pool(&ring, &ring.keys),
            "\ndc1 (LAN):\n  ===> c1: key is not installed\n  a== [3/3]\n  b== [1/3]\n"
        );
        assert_eq!(keyring_pool(&ring, &ring.primary_keys).lines().last(), Some("  a== [3/3]"));
    }
}
