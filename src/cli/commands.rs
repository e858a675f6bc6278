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
    keys: BTreeMap<String, u32>,
    #[serde(default)]
    primary_keys: BTreeMap<String, u32>,
    num_nodes: u32,
}

/// `cairn keyring -list | -install KEY | -use KEY | -remove KEY`.
pub fn keyring(raw: &[String]) -> Outcome {
    let known = [
        ("list", Kind::Bool),
        ("list-primary", Kind::Bool),
        ("install", Kind::Value),
        ("use", Kind::Value),
        ("remove", Kind::Value),
    ];
    let args = Args::parse(raw, &known)?;
    let body = |key: &str| serde_json::json!({ "Key": key }).to_string().into_bytes();
    let target = agent(&args);
    if let Some(key) = args.value("install") {
        request(&target, "POST", "/v1/operator/keyring", &body(key)).map_err(|e| format!("Error: {e}"))?;
        return Ok("==> Installing new gossip encryption key...\n".into());
    }
    if let Some(key) = args.value("use") {
        request(&target, "PUT", "/v1/operator/keyring", &body(key)).map_err(|e| format!("Error: {e}"))?;
        return Ok("==> Changing primary gossip encryption key...\n".into());
    }
    if let Some(key) = args.value("remove") {
        request(&target, "DELETE", "/v1/operator/keyring", &body(key)).map_err(|e| format!("Error: {e}"))?;
        return Ok("==> Removing gossip encryption key...\n".into());
    }
    if !(args.flag("list") || args.flag("list-primary")) {
        return Err("Exactly one of -list, -list-primary, -install, -use or -remove must be given.".into());
    }
    let rings: Vec<KeyringJson> = request(&target, "GET", "/v1/operator/keyring", b"")
        .and_then(|a| a.json())
        .map_err(|e| format!("Error: {e}"))?;
    let mut out = String::from("==> Gathering installed encryption keys...\n");
    for ring in rings {
        let pool = if ring.wan { "WAN".to_string() } else { format!("{} (LAN)", ring.datacenter) };
        out.push_str(&format!("\n{pool}:\n"));
        let keys = if args.flag("list-primary") { &ring.primary_keys } else { &ring.keys };
        for (key, count) in keys {
            out.push_str(&format!("  {key} [{count}/{}]\n", ring.num_nodes));
        }
    }
    Ok(out)
}
