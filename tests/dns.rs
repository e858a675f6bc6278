//! The DNS interface of a real `cairn agent -dev` process, asked over real UDP and TCP sockets on
//! 127.0.0.1 with hickory-proto messages, as a resolver would ask.

mod common;

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use common::dns::{a_records, ask_tcp, ask_udp};
use common::{leader_of, put, wait_until, Agent, AgentPorts, TempDir};
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use serde_json::json;

fn dev_agent(dir: &TempDir) -> Agent {
    let agent =
        Agent::start(&["-dev".into(), "-node".into(), "dev1".into()], AgentPorts::free(), dir.path().join("agent.log"));
    wait_until(Duration::from_secs(20), "the dev agent to elect itself", || leader_of(agent.http()).is_some());
    agent
}

fn dns_addr(agent: &Agent) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], agent.ports.dns))
}

fn srv_targets(message: &Message) -> Vec<(String, u16)> {
    let mut out: Vec<(String, u16)> = message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(srv) => Some((srv.target.to_ascii(), srv.port)),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

/// Register `node` at `address` with a `web` instance on `port` (tags `tags`) whose check is
/// `status`.
fn register(agent: &Agent, node: &str, address: &str, port: u16, tags: &[&str], status: &str) {
    let id = format!("web-{node}");
    let body = json!({
        "Node": node,
        "Address": address,
        "NodeMeta": {"rack": "r1"},
        "Service": {"ID": id, "Service": "web", "Tags": tags, "Port": port},
        "Checks": [{"CheckID": format!("{id}-http"), "Name": "web HTTP", "ServiceID": id, "Status": status}]
    });
    let answer = put(agent.http(), "/v1/catalog/register", body.to_string().as_bytes());
    assert_eq!((answer.status, answer.text().trim()), (200, "true"), "{}", answer.text());
}

fn ip(text: &str) -> Ipv4Addr {
    text.parse().unwrap()
}

/// A, SRV (with glue), RFC 2782, tag and node names answer the healthy instances; a check going
/// critical takes its instance out of A and SRV answers, and passing brings it back.
#[test]
fn names_answer_healthy_instances_and_follow_checks() {
    let dir = TempDir::new("dns-names");
    let agent = dev_agent(&dir);
    let dns = dns_addr(&agent);
    register(&agent, "ext1", "10.0.0.5", 8080, &["primary"], "passing");
    register(&agent, "ext2", "10.0.0.6", 8081, &[], "passing");
    wait_until(Duration::from_secs(10), "both instances in A answers", || {
        a_records(&ask_udp(dns, "web.service.consul.", RecordType::A, None)) == [ip("10.0.0.5"), ip("10.0.0.6")]
    });
    let srv = ask_udp(dns, "web.service.consul.", RecordType::SRV, None);
    assert_eq!(
        srv_targets(&srv),
        [("ext1.node.dc1.consul.".to_owned(), 8080), ("ext2.node.dc1.consul.".to_owned(), 8081)]
    );
    assert_eq!(srv.additionals.len(), 2, "each target's address is in the additional section");
    let rfc = ask_udp(dns, "_web._tcp.service.consul.", RecordType::SRV, None);
    assert_eq!(srv_targets(&rfc).len(), 2);
    let tagged = ask_udp(dns, "primary.web.service.dc1.consul.", RecordType::SRV, None);
    assert_eq!(srv_targets(&tagged), [("ext1.node.dc1.consul.".to_owned(), 8080)]);
    assert_eq!(a_records(&ask_udp(dns, "ext2.node.consul.", RecordType::A, None)), [ip("10.0.0.6")]);
    let txt = ask_udp(dns, "ext2.node.consul.", RecordType::TXT, None);
    assert!(matches!(&txt.answers[0].data, RData::TXT(t) if t.to_string() == "rack=r1"), "{txt:?}");

    register(&agent, "ext1", "10.0.0.5", 8080, &["primary"], "critical");
    wait_until(Duration::from_secs(5), "the critical instance to leave A and SRV answers", || {
        let a = a_records(&ask_udp(dns, "web.service.consul.", RecordType::A, None));
        let srv = srv_targets(&ask_udp(dns, "web.service.consul.", RecordType::SRV, None));
        a == [ip("10.0.0.6")] && srv == [("ext2.node.dc1.consul.".to_owned(), 8081)]
    });
    let none = ask_udp(dns, "primary.web.service.consul.", RecordType::A, None);
    assert_eq!(none.metadata.response_code, ResponseCode::NoError, "the name exists, nothing healthy");
    assert!(none.answers.is_empty());
    register(&agent, "ext1", "10.0.0.5", 8080, &["primary"], "passing");
    wait_until(Duration::from_secs(5), "the instance to return", || {
        a_records(&ask_udp(dns, "web.service.consul.", RecordType::A, None)).len() == 2
    });
}

/// An unknown name is NXDOMAIN with the domain's SOA in the authority section, and a name
/// outside the domain is REFUSED (no recursors configured).
#[test]
fn unknown_names_get_nxdomain_with_soa() {
    let dir = TempDir::new("dns-nxdomain");
    let agent = dev_agent(&dir);
    let dns = dns_addr(&agent);
    let missing = ask_udp(dns, "nothing.service.consul.", RecordType::A, None);
    assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);
    let soa = &missing.authorities[0];
    assert!(matches!(&soa.data, RData::SOA(s) if s.minimum > 0), "{soa:?}");
    assert_eq!(soa.name.to_ascii(), "consul.");
    let foreign = ask_udp(dns, "example.com.", RecordType::A, None);
    assert_eq!(foreign.metadata.response_code, ResponseCode::Refused);
    let apex = ask_tcp(dns, "consul.", RecordType::NS);
    assert!(matches!(&apex.answers[0].data, RData::NS(ns) if ns.0.to_ascii() == "dev1.node.dc1.consul."), "{apex:?}");
}

/// An answer too big for the client's UDP size comes back truncated with TC, and the same
/// question over TCP gets every instance.
#[test]
fn truncated_udp_answers_set_tc_and_tcp_has_everything() {
    let dir = TempDir::new("dns-truncation");
    let agent = dev_agent(&dir);
    let dns = dns_addr(&agent);
    for i in 0..60u16 {
        register(&agent, &format!("node-{i:02}"), &format!("10.1.0.{}", i + 1), 9000 + i, &[], "passing");
    }
    wait_until(Duration::from_secs(10), "all 60 instances over TCP", || {
        srv_targets(&ask_tcp(dns, "web.service.consul.", RecordType::SRV)).len() == 60
    });
    let plain = ask_udp(dns, "web.service.consul.", RecordType::SRV, None);
    assert_eq!(plain.answers.len(), 3, "udp_answer_limit for plain DNS over UDP");
    let cut = ask_udp(dns, "web.service.consul.", RecordType::SRV, Some(1232));
    assert!(cut.metadata.truncation, "60 SRV records and glue do not fit 1232 bytes");
    assert!(cut.answers.len() < 60);
    let full = ask_tcp(dns, "web.service.consul.", RecordType::SRV);
    assert!(!full.metadata.truncation);
    assert_eq!(full.additionals.len(), 60);
}

/// Garbage on UDP and TCP gets FORMERR or nothing, and the server keeps answering.
#[test]
fn hostile_packets_do_not_stop_the_server() {
    let dir = TempDir::new("dns-hostile");
    let agent = dev_agent(&dir);
    let dns = dns_addr(&agent);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    for garbage in
        [&b""[..], b"\x00", &[0xff; 12], &[0x12, 0x34, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 0x0c], &[0u8; 4000]]
    {
        socket.send_to(garbage, dns).unwrap();
    }
    socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buffer = [0u8; 512];
    // The compression loop (a pointer to itself) is a FORMERR with the packet's ID.
    let mut formerr_seen = false;
    while let Ok((len, _)) = socket.recv_from(&mut buffer) {
        let reply = Message::from_vec(&buffer[..len]).unwrap();
        formerr_seen |= reply.metadata.id == 0x1234 && reply.metadata.response_code == ResponseCode::FormErr;
    }
    assert!(formerr_seen);
    let mut stream = TcpStream::connect(dns).unwrap();
    stream.write_all(&[0xff, 0xff]).unwrap();
    stream.write_all(&[0u8; 1000]).unwrap();
    drop(stream);
    let answer = ask_udp(dns, "dev1.node.consul.", RecordType::A, None);
    assert_eq!(a_records(&answer), [ip("127.0.0.1")]);
    assert!(agent.log_text().lines().all(|line| !line.contains("panicked")));
}

/// A client agent answers DNS from its own view, kept current from the servers: an instance
/// whose check goes critical leaves the client's answers too, and comes back.
#[test]
fn a_client_agent_answers_from_its_view_of_the_servers() {
    let dir = TempDir::new("dns-client");
    let server = dev_agent(&dir);
    let client = common::start_client(&dir, &server, "c1");
    let dns = dns_addr(&client);
    register(&server, "ext1", "10.0.0.5", 8080, &[], "passing");
    register(&server, "ext2", "10.0.0.6", 8081, &[], "passing");
    wait_until(Duration::from_secs(30), "the client to answer both instances", || {
        a_records(&ask_udp(dns, "web.service.consul.", RecordType::A, None)) == [ip("10.0.0.5"), ip("10.0.0.6")]
    });
    register(&server, "ext1", "10.0.0.5", 8080, &[], "critical");
    wait_until(Duration::from_secs(5), "the critical instance to leave the client's answers", || {
        a_records(&ask_udp(dns, "web.service.consul.", RecordType::A, None)) == [ip("10.0.0.6")]
    });
    register(&server, "ext1", "10.0.0.5", 8080, &[], "passing");
    wait_until(Duration::from_secs(5), "the instance to return on the client", || {
        a_records(&ask_udp(dns, "web.service.consul.", RecordType::A, None)).len() == 2
    });
    assert_eq!(
        ask_udp(dns, "nothing.service.consul.", RecordType::A, None).metadata.response_code,
        ResponseCode::NXDomain
    );
}

/// Names outside the domain go to the configured recursor, and its answer comes back as it was.
#[test]
fn foreign_names_are_forwarded_to_recursors() {
    let upstream = UdpSocket::bind("127.0.0.1:0").unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    let responder = std::thread::spawn(move || {
        let mut buffer = [0u8; 512];
        let (len, from) = upstream.recv_from(&mut buffer).unwrap();
        let mut reply = Message::from_vec(&buffer[..len]).unwrap();
        reply.metadata.message_type = MessageType::Response;
        let name = reply.queries[0].name().clone();
        reply.answers.push(hickory_proto::rr::Record::from_rdata(
            name,
            60,
            RData::A(hickory_proto::rr::rdata::A(ip("93.184.216.34"))),
        ));
        upstream.send_to(&reply.to_vec().unwrap(), from).unwrap();
    });
    let dir = TempDir::new("dns-recursor");
    let args = ["-dev", "-node", "dev1", "-recursor", &upstream_addr.to_string()];
    let agent = Agent::start(&args.map(String::from), AgentPorts::free(), dir.path().join("agent.log"));
    wait_until(Duration::from_secs(20), "the dev agent to elect itself", || leader_of(agent.http()).is_some());
    let answer = ask_udp(dns_addr(&agent), "example.com.", RecordType::A, None);
    assert_eq!(a_records(&answer), [ip("93.184.216.34")]);
    responder.join().unwrap();
}
