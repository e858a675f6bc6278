//! The DNS interface as a real resolver sees it: `dig` from Debian's dnsutils against a running
//! `cairn agent -dev` on 127.0.0.1, every case asserted on dig's own reading of the answer.
//! `scripts/test-all` installs dig when it is missing; without it these tests fail and say how to
//! get it, since a skipped resolver test would look like a passing one.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{leader_of, put, wait_until, Agent, AgentPorts, TempDir};
use serde_json::json;

/// Generous for a shared 2-core machine: registrations reach DNS answers in milliseconds.
const DEADLINE: Duration = Duration::from_secs(10);

/// One record line of dig's output (class IN left out, it is always IN here).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Rr {
    name: String,
    ttl: u32,
    rtype: String,
    data: String,
}

/// What dig printed for one query, by section.
#[derive(Debug, Default)]
struct Dig {
    /// `NOERROR`, `NXDOMAIN`, ... from the `->>HEADER<<-` line.
    status: String,
    /// Header flags (`qr`, `aa`, `tc`, ...).
    flags: Vec<String>,
    answer: Vec<Rr>,
    authority: Vec<Rr>,
    additional: Vec<Rr>,
    /// Everything dig printed, for failure messages and dig's own remarks.
    raw: String,
}

impl Dig {
    fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// The answer records of type `rtype`, as `(owner, data)`, sorted.
    fn answers(&self, rtype: &str) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> =
            self.answer.iter().filter(|r| r.rtype == rtype).map(|r| (r.name.clone(), r.data.clone())).collect();
        out.sort();
        out
    }
}

/// The dig binary, or a failure that says how to install it.
fn dig_command() -> Command {
    match Command::new("dig").arg("-v").output() {
        Ok(_) => Command::new("dig"),
        Err(e) => panic!(
            "`dig` is needed for the resolver tests and could not be run ({e}): install Debian's dnsutils \
             (`apt-get install -y dnsutils`, as root; scripts/test-all does this)"
        ),
    }
}

/// Ask the agent's DNS port with dig, bounded in time (2 s per try, 2 tries), and parse the
/// answer, authority and additional sections and the header comments.
fn dig(agent: &Agent, name: &str, rtype: &str, options: &[&str]) -> Dig {
    let port = agent.ports.dns.to_string();
    let output = dig_command()
        .args(["-p", &port, "@127.0.0.1", "+time=2", "+tries=2"])
        .args(["+noall", "+answer", "+additional", "+authority", "+comments"])
        .args(options)
        .args([name, rtype])
        .output()
        .expect("run dig");
    let raw = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "dig {name} {rtype} {options:?} failed ({}):\n{raw}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    parse_dig(raw)
}

/// `dig +short`: the data of the answer records, sorted.
fn dig_short(agent: &Agent, name: &str, rtype: &str) -> Vec<String> {
    let port = agent.ports.dns.to_string();
    let output = dig_command()
        .args(["-p", &port, "@127.0.0.1", "+time=2", "+tries=2", "+short", name, rtype])
        .output()
        .expect("run dig");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "dig +short {name} {rtype} failed ({}):\n{text}", output.status);
    let mut lines: Vec<String> = text.lines().map(str::to_owned).filter(|l| !l.is_empty()).collect();
    lines.sort();
    lines
}

fn parse_dig(raw: String) -> Dig {
    #[derive(Clone, Copy)]
    enum Section {
        Other,
        Answer,
        Authority,
        Additional,
    }
    let mut dig = Dig::default();
    let mut section = Section::Other;
    for line in raw.lines() {
        if let Some(rest) = line.split_once("status: ").map(|(_, rest)| rest) {
            dig.status = rest.split(',').next().unwrap_or_default().trim().to_owned();
        } else if let Some(rest) = line.strip_prefix(";; flags: ") {
            dig.flags = rest.split(';').next().unwrap_or_default().split_whitespace().map(str::to_owned).collect();
        } else if line.starts_with(";; ") && line.ends_with("SECTION:") {
            section = match line {
                ";; ANSWER SECTION:" => Section::Answer,
                ";; AUTHORITY SECTION:" => Section::Authority,
                ";; ADDITIONAL SECTION:" => Section::Additional,
                _ => Section::Other,
            };
        } else if !line.starts_with(';') && !line.trim().is_empty() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert!(fields.len() >= 4, "not a record line: {line:?}\n{raw}");
            let rr = Rr {
                name: fields[0].to_owned(),
                ttl: fields[1].parse().unwrap_or_else(|_| panic!("TTL in {line:?}")),
                rtype: fields[3].to_owned(),
                data: fields[4..].join(" "),
            };
            match section {
                Section::Answer => dig.answer.push(rr),
                Section::Authority => dig.authority.push(rr),
                Section::Additional => dig.additional.push(rr),
                Section::Other => panic!("a record outside the answer sections: {line:?}\n{raw}"),
            }
        }
    }
    dig.raw = raw;
    dig
}

fn dev_agent(dir: &TempDir) -> Agent {
    let args = ["-dev", "-node", "dev1"].map(String::from);
    let agent = Agent::start(&args, AgentPorts::free(), dir.path().join("agent.log"));
    wait_until(Duration::from_secs(20), "the dev agent to elect itself", || leader_of(agent.http()).is_some());
    agent
}

/// Register external node `node` at `address` (node meta `meta`) with a `web` instance on
/// `port` tagged `tags`, whose check is `status`.
fn register_node(agent: &Agent, node: &str, address: &str, meta: serde_json::Value, port: u16, tags: &[&str]) {
    let id = format!("web-{node}");
    let body = json!({
        "Node": node,
        "Address": address,
        "NodeMeta": meta,
        "Service": {"ID": id, "Service": "web", "Tags": tags, "Port": port},
        "Checks": [{"CheckID": format!("{id}-http"), "Name": "web HTTP", "ServiceID": id, "Status": "passing"}]
    });
    let answer = put(agent.http(), "/v1/catalog/register", body.to_string().as_bytes());
    assert_eq!((answer.status, answer.text().trim()), (200, "true"), "{}", answer.text());
}

fn a_record(name: &str, address: &str) -> (String, String) {
    (name.to_owned(), address.to_owned())
}

/// A for a service answers the addresses of its healthy instances: an instance whose TTL check
/// the application fails leaves the answer, and comes back once it reports passing again.
#[test]
fn a_answers_follow_the_agents_ttl_checks() {
    let dir = TempDir::new("dig-ttl");
    let agent = dev_agent(&dir);
    for (id, address, port) in [("web-a", "127.0.0.21", 8001), ("web-b", "127.0.0.22", 8002)] {
        let body = json!({
            "Name": "web", "ID": id, "Address": address, "Port": port,
            "Check": {"CheckID": format!("{id}-ttl"), "TTL": "60s"}
        });
        let answer = put(agent.http(), "/v1/agent/service/register", body.to_string().as_bytes());
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(put(agent.http(), &format!("/v1/agent/check/pass/{id}-ttl"), b"").status, 200);
    }
    wait_until(DEADLINE, "both instances in the A answer", || {
        dig_short(&agent, "web.service.consul", "A") == ["127.0.0.21", "127.0.0.22"]
    });

    assert_eq!(put(agent.http(), "/v1/agent/check/fail/web-a-ttl", b"").status, 200);
    wait_until(DEADLINE, "the failing instance to leave the A answer", || {
        dig_short(&agent, "web.service.consul", "A") == ["127.0.0.22"]
    });
    let answer = dig(&agent, "web.service.consul", "A", &[]);
    assert_eq!(
        (answer.status.as_str(), answer.answers("A")),
        ("NOERROR", vec![a_record("web.service.consul.", "127.0.0.22")])
    );

    assert_eq!(put(agent.http(), "/v1/agent/check/pass/web-a-ttl", b"").status, 200);
    wait_until(DEADLINE, "the instance to come back once it passes", || {
        dig_short(&agent, "web.service.consul", "A") == ["127.0.0.21", "127.0.0.22"]
    });
}

/// SRV answers `1 1 <port> <node>.node.dc1.consul.` with each target's A record in the
/// additional section, under Consul's name and RFC 2782's; a tag narrows the answer; a node name
/// answers its address and its metadata as TXT.
#[test]
fn srv_rfc2782_tag_and_node_names() {
    let dir = TempDir::new("dig-names");
    let agent = dev_agent(&dir);
    register_node(&agent, "ext1", "10.0.0.5", json!({"rack": "r1", "zone": "z2"}), 8080, &["primary"]);
    register_node(&agent, "ext2", "10.0.0.6", json!({}), 8081, &[]);
    wait_until(DEADLINE, "both instances in the A answer", || {
        dig_short(&agent, "web.service.consul", "A") == ["10.0.0.5", "10.0.0.6"]
    });
    let glue = vec![
        Rr { name: "ext1.node.dc1.consul.".into(), ttl: 0, rtype: "A".into(), data: "10.0.0.5".into() },
        Rr { name: "ext2.node.dc1.consul.".into(), ttl: 0, rtype: "A".into(), data: "10.0.0.6".into() },
    ];

    for owner in ["web.service.consul.", "_web._tcp.service.consul."] {
        let srv = dig(&agent, owner, "SRV", &[]);
        assert_eq!(srv.status, "NOERROR", "{}", srv.raw);
        assert!(srv.has_flag("aa"), "the server is authoritative for its domain:\n{}", srv.raw);
        assert_eq!(
            srv.answers("SRV"),
            [
                (owner.to_owned(), "1 1 8080 ext1.node.dc1.consul.".to_owned()),
                (owner.to_owned(), "1 1 8081 ext2.node.dc1.consul.".to_owned())
            ],
            "{}",
            srv.raw
        );
        let mut additional = srv.additional.clone();
        additional.sort();
        assert_eq!(additional, glue, "each target's address rides along:\n{}", srv.raw);
    }

    let tagged = dig(&agent, "primary.web.service.consul", "SRV", &[]);
    assert_eq!(
        tagged.answers("SRV"),
        [a_record("primary.web.service.consul.", "1 1 8080 ext1.node.dc1.consul.")],
        "{}",
        tagged.raw
    );
    assert_eq!(dig_short(&agent, "primary.web.service.consul", "A"), ["10.0.0.5"]);

    let node = dig(&agent, "ext1.node.consul", "A", &[]);
    assert_eq!((node.status.as_str(), node.answers("A")), ("NOERROR", vec![a_record("ext1.node.consul.", "10.0.0.5")]));
    let meta = dig(&agent, "ext1.node.consul", "TXT", &[]);
    assert_eq!(
        meta.answers("TXT"),
        [a_record("ext1.node.consul.", "\"rack=r1\""), a_record("ext1.node.consul.", "\"zone=z2\"")],
        "{}",
        meta.raw
    );
}

/// An unknown service is NXDOMAIN with the zone's SOA in the authority section (its minimum is
/// how long resolvers cache the miss); a known service with nothing healthy is NOERROR, no
/// answers, and the same SOA.
#[test]
fn unknown_names_are_nxdomain_with_the_soa() {
    let dir = TempDir::new("dig-nxdomain");
    let agent = dev_agent(&dir);
    let missing = dig(&agent, "nothing.service.consul", "A", &[]);
    assert_eq!(missing.status, "NXDOMAIN", "{}", missing.raw);
    assert!(missing.answer.is_empty(), "{}", missing.raw);
    let soa = missing.authority.first().unwrap_or_else(|| panic!("no SOA in the authority section:\n{}", missing.raw));
    assert_eq!((soa.name.as_str(), soa.rtype.as_str(), soa.ttl), ("consul.", "SOA", 5), "{}", missing.raw);
    let fields: Vec<&str> = soa.data.split_whitespace().collect();
    assert_eq!(
        (fields[0], fields[1], &fields[3..]),
        ("ns.consul.", "hostmaster.consul.", &["3600", "600", "86400", "5"][..]),
        "{}",
        missing.raw
    );

    let body = json!({
        "Node": "ext9", "Address": "10.0.0.9",
        "Service": {"ID": "db-1", "Service": "db", "Port": 5432},
        "Checks": [{"CheckID": "db-1-tcp", "Name": "db TCP", "ServiceID": "db-1", "Status": "critical"}]
    });
    assert_eq!(put(agent.http(), "/v1/catalog/register", body.to_string().as_bytes()).status, 200);
    wait_until(DEADLINE, "the critical service to be known", || {
        dig(&agent, "db.service.consul", "A", &[]).status == "NOERROR"
    });
    let nodata = dig(&agent, "db.service.consul", "A", &[]);
    assert!(nodata.answer.is_empty(), "{}", nodata.raw);
    assert_eq!(nodata.authority.iter().map(|r| r.rtype.as_str()).collect::<Vec<_>>(), ["SOA"], "{}", nodata.raw);
}

/// 40 instances' SRV records with their glue (about 1.8 KB) do not fit the 1232 bytes a
/// resolver offers over UDP: the UDP answer is cut, whole SRV-and-glue pairs, with TC set, and dig
/// retries over TCP on its own and gets every instance. TCP asked directly has them all, as has
/// UDP with a 4096-byte offer. A client without EDNS gets `udp_answer_limit` (3) instances as a
/// deliberate subset, without TC, as Consul does.
#[test]
fn truncated_udp_answers_set_tc_and_dig_retries_over_tcp() {
    let dir = TempDir::new("dig-truncation");
    let agent = dev_agent(&dir);
    for i in 0..40u16 {
        register_node(&agent, &format!("node-{i:02}"), &format!("10.1.0.{}", i + 1), json!({}), 9000 + i, &[]);
    }
    wait_until(DEADLINE, "all 40 instances over TCP", || {
        dig(&agent, "web.service.consul", "SRV", &["+tcp"]).answers("SRV").len() == 40
    });

    let cut = dig(&agent, "web.service.consul", "SRV", &["+bufsize=1232", "+ignore"]);
    assert!(cut.has_flag("tc"), "40 SRV records with glue do not fit 1232 bytes:\n{}", cut.raw);
    assert!((1..40).contains(&cut.answer.len()), "{}", cut.raw);
    let targets: Vec<String> = cut.answer.iter().map(|r| r.data.rsplit(' ').next().unwrap().to_owned()).collect();
    let glued: Vec<String> = cut.additional.iter().filter(|r| r.rtype == "A").map(|r| r.name.clone()).collect();
    assert_eq!(targets.len(), glued.len(), "every SRV answer kept keeps its glue:\n{}", cut.raw);
    assert!(targets.iter().all(|t| glued.contains(t)), "{}", cut.raw);

    let retried = dig(&agent, "web.service.consul", "SRV", &["+bufsize=1232"]);
    assert!(retried.raw.contains("Truncated, retrying in TCP mode"), "{}", retried.raw);
    assert!(!retried.has_flag("tc"), "{}", retried.raw);
    assert_eq!(retried.answers("SRV").len(), 40, "{}", retried.raw);
    assert_eq!(retried.additional.iter().filter(|r| r.rtype == "A").count(), 40, "{}", retried.raw);

    let tcp = dig(&agent, "web.service.consul", "SRV", &["+tcp"]);
    assert!(!tcp.has_flag("tc"), "{}", tcp.raw);
    assert_eq!((tcp.answers("SRV").len(), tcp.additional.iter().filter(|r| r.rtype == "A").count()), (40, 40));

    let large = dig(&agent, "web.service.consul", "SRV", &["+bufsize=4096", "+ignore"]);
    assert!(!large.has_flag("tc"), "{}", large.raw);
    assert_eq!(large.answers("SRV").len(), 40, "{}", large.raw);

    let plain = dig(&agent, "web.service.consul", "SRV", &["+noedns", "+ignore"]);
    assert!(!plain.has_flag("tc"), "a deliberate subset, not a cut for size:\n{}", plain.raw);
    assert_eq!(plain.answers("SRV").len(), 3, "{}", plain.raw);
}
