//! The DNS core over a real catalog: names, record types, health, limits, sizes, hostile bytes.

use std::net::{IpAddr, Ipv4Addr};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use proptest::prelude::*;

use super::instances::InstanceMemo;
use super::*;
use crate::config::DnsSettings;
use crate::state::{
    CatalogCommand, CheckDefinition, CheckStatus, Command, Deregistration, Registration, ServiceDefinition, State,
};

/// A catalog built by applying registrations, as a server's state is.
struct Fixture {
    state: State,
    index: u64,
    settings: DnsSettings,
    zone: Zone,
}

impl Fixture {
    fn new() -> Self {
        let settings = DnsSettings::default();
        let zone = Zone::new(["consul.", "alt.example."], "dc1");
        Fixture { state: State::default(), index: 0, settings, zone }
    }

    fn register(&mut self, registration: Registration) {
        self.index += 1;
        self.state.apply(self.index, &Command::Catalog(CatalogCommand::Register(registration)));
    }

    /// `node` at `address` with an instance of `service` on `port`, its check in `status`.
    fn instance(&mut self, node: &str, address: &str, service: &str, tags: &[&str], port: u16, status: CheckStatus) {
        let id = format!("{service}-{node}");
        self.register(Registration {
            node: node.into(),
            address: address.into(),
            service: Some(ServiceDefinition {
                id: id.clone(),
                service: service.into(),
                tags: tags.iter().map(|t| t.to_string()).collect(),
                port,
                ..Default::default()
            }),
            checks: vec![CheckDefinition {
                check_id: format!("check-{id}"),
                name: "alive".into(),
                service_id: id,
                status,
                ..Default::default()
            }],
            ..Default::default()
        });
    }

    fn node_check(&mut self, node: &str, status: CheckStatus) {
        self.register(Registration {
            node: node.into(),
            skip_node_update: true,
            checks: vec![CheckDefinition {
                check_id: "serfHealth".into(),
                name: "serf".into(),
                status,
                ..Default::default()
            }],
            ..Default::default()
        });
    }

    fn raw(&self, bytes: &[u8], transport: Transport) -> Option<Vec<u8>> {
        let context = Context { catalog: self.state.catalog(), settings: &self.settings, zone: &self.zone, memo: None };
        respond(bytes, transport, context, &mut Shuffle::new(7))
    }

    fn ask_with(&self, name: &str, rtype: RecordType, transport: Transport, edns: Option<u16>) -> Message {
        let bytes = query_bytes(name, rtype, edns);
        let reply = self.raw(&bytes, transport).expect("a reply");
        Message::from_vec(&reply).expect("the reply decodes")
    }

    fn ask(&self, name: &str, rtype: RecordType) -> Message {
        self.ask_with(name, rtype, Transport::Udp, None)
    }
}

fn query_bytes(name: &str, rtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut message = Message::new(0x1234, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.queries.push(Query::query(Name::from_ascii(name).unwrap(), rtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        message.edns = Some(e);
    }
    message.to_vec().unwrap()
}

fn a_addresses(message: &Message) -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

fn srv_ports(message: &Message) -> Vec<u16> {
    let mut out: Vec<u16> = message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(srv) => Some(srv.port),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

fn web_fixture() -> Fixture {
    let mut f = Fixture::new();
    f.instance("n1", "10.0.0.1", "web", &["primary"], 8080, CheckStatus::Passing);
    f.instance("n2", "10.0.0.2", "web", &[], 8081, CheckStatus::Warning);
    f.instance("n3", "10.0.0.3", "web", &[], 8082, CheckStatus::Critical);
    f
}

/// A service's A answer holds its instances with no critical check, warnings included.
#[test]
fn a_answers_skip_critical_instances() {
    let f = web_fixture();
    let reply = f.ask("web.service.consul.", RecordType::A);
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.metadata.authoritative);
    assert_eq!(a_addresses(&reply), ["10.0.0.1".parse::<Ipv4Addr>().unwrap(), "10.0.0.2".parse().unwrap()]);
}

/// `only_passing` drops the warning instance too.
#[test]
fn only_passing_drops_warnings() {
    let mut f = web_fixture();
    f.settings.only_passing = true;
    assert_eq!(a_addresses(&f.ask("web.service.consul.", RecordType::A)), ["10.0.0.1".parse::<Ipv4Addr>().unwrap()]);
}

/// A failing node-level check (serfHealth) removes every instance on the node.
#[test]
fn node_check_counts_against_its_instances() {
    let mut f = web_fixture();
    f.node_check("n1", CheckStatus::Critical);
    assert_eq!(a_addresses(&f.ask("web.service.consul.", RecordType::A)), ["10.0.0.2".parse::<Ipv4Addr>().unwrap()]);
}

/// SRV answers are `1 1 <port> <node>.node.<dc>.<domain>.` with the node's A record as glue.
#[test]
fn srv_answers_carry_glue() {
    let f = web_fixture();
    let reply = f.ask("web.service.consul.", RecordType::SRV);
    assert_eq!(srv_ports(&reply), [8080, 8081]);
    for record in &reply.answers {
        let RData::SRV(srv) = &record.data else { panic!("{record:?}") };
        assert_eq!((srv.priority, srv.weight), (1, 1));
        let target = srv.target.to_ascii();
        assert!(target == "n1.node.dc1.consul." || target == "n2.node.dc1.consul.", "{target}");
        let glue = reply.additionals.iter().find(|g| g.name == srv.target).expect("glue for every target");
        assert!(matches!(glue.data, RData::A(_)));
    }
}

/// RFC 2782 names and tags select the same instances as Consul's forms.
#[test]
fn rfc2782_and_tags() {
    let f = web_fixture();
    assert_eq!(srv_ports(&f.ask("_web._tcp.service.consul.", RecordType::SRV)), [8080, 8081]);
    assert_eq!(srv_ports(&f.ask("_web._primary.service.consul.", RecordType::SRV)), [8080]);
    assert_eq!(srv_ports(&f.ask("primary.web.service.dc1.consul.", RecordType::SRV)), [8080]);
    assert_eq!(srv_ports(&f.ask("PRIMARY.Web.service.alt.example.", RecordType::SRV)), [8080]);
    let untagged = f.ask("canary.web.service.consul.", RecordType::SRV);
    assert_eq!(untagged.metadata.response_code, ResponseCode::NXDomain);
}

/// An unknown name is NXDOMAIN with the SOA (a non-zero minimum) in the authority section; a
/// known service with no healthy instance is NOERROR with no answers.
#[test]
fn negative_answers() {
    let mut f = web_fixture();
    let missing = f.ask("nope.service.consul.", RecordType::A);
    assert_eq!(missing.metadata.response_code, ResponseCode::NXDomain);
    assert!(missing.answers.is_empty());
    let RData::SOA(soa) = &missing.authorities[0].data else { panic!("{:?}", missing.authorities) };
    assert!(soa.minimum > 0);
    assert_eq!(missing.authorities[0].ttl, soa.minimum);
    f.instance("n4", "10.0.0.4", "db", &[], 5432, CheckStatus::Critical);
    let empty = f.ask("db.service.consul.", RecordType::A);
    assert_eq!(empty.metadata.response_code, ResponseCode::NoError);
    assert!(empty.answers.is_empty());
    assert!(matches!(empty.authorities[0].data, RData::SOA(_)));
    for unknown in ["web.consul.", "x.service.dc9.consul.", "q.query.consul."] {
        assert_eq!(f.ask(unknown, RecordType::A).metadata.response_code, ResponseCode::NXDomain, "{unknown}");
    }
}

/// Nodes answer A and TXT (metadata); addresses in hex answer A.
#[test]
fn node_and_addr_lookups() {
    let mut f = web_fixture();
    f.register(Registration {
        node: "meta".into(),
        address: "10.0.0.9".into(),
        node_meta: [("rack".to_string(), "r1".to_string())].into(),
        ..Default::default()
    });
    assert_eq!(a_addresses(&f.ask("meta.node.consul.", RecordType::A)), ["10.0.0.9".parse::<Ipv4Addr>().unwrap()]);
    let txt = f.ask("meta.node.dc1.consul.", RecordType::TXT);
    let RData::TXT(text) = &txt.answers[0].data else { panic!("{txt:?}") };
    assert_eq!(text.to_string(), "rack=r1");
    assert_eq!(f.ask("ghost.node.consul.", RecordType::A).metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(a_addresses(&f.ask("0a000005.addr.consul.", RecordType::A)), ["10.0.0.5".parse::<Ipv4Addr>().unwrap()]);
}

/// The apex answers SOA, and NS naming the servers (instances of `consul`) with glue.
#[test]
fn apex_soa_and_ns() {
    let mut f = Fixture::new();
    f.instance("s1", "10.0.0.10", "consul", &[], 8300, CheckStatus::Passing);
    let soa = f.ask("consul.", RecordType::SOA);
    assert!(matches!(soa.answers[0].data, RData::SOA(_)));
    let ns = f.ask("consul.", RecordType::NS);
    let RData::NS(target) = &ns.answers[0].data else { panic!("{ns:?}") };
    assert_eq!(target.0.to_ascii(), "s1.node.dc1.consul.");
    assert_eq!(ns.additionals.len(), 1);
}

/// Names outside the domain are REFUSED when there are no recursors.
#[test]
fn foreign_names_are_refused() {
    let f = web_fixture();
    assert_eq!(f.ask("example.com.", RecordType::A).metadata.response_code, ResponseCode::Refused);
}

/// TTLs come from `service_ttl` patterns and `node_ttl`.
#[test]
fn ttls_follow_settings() {
    let mut f = web_fixture();
    let patterns = [("w*".to_string(), std::time::Duration::from_secs(7))].into();
    f.settings.service_ttl = crate::config::ServiceTtls::new(&patterns);
    f.settings.node_ttl = std::time::Duration::from_secs(3);
    assert!(f.ask("web.service.consul.", RecordType::A).answers.iter().all(|r| r.ttl == 7));
    assert!(f.ask("n1.node.consul.", RecordType::A).answers.iter().all(|r| r.ttl == 3));
}

fn many(count: usize) -> Fixture {
    let mut f = Fixture::new();
    for i in 0..count {
        let ip = Ipv4Addr::from(0x0a00_0000 + i as u32 + 1);
        f.instance(&format!("node-{i:04}"), &ip.to_string(), "big", &[], 1000 + i as u16, CheckStatus::Passing);
    }
    f
}

/// Plain UDP gets `udp_answer_limit` answers without TC; EDNS lifts that limit, and what does not
/// fit in the client's size is cut with TC; TCP carries everything that fits in 64 KiB.
#[test]
fn sizes_and_truncation() {
    let f = many(200);
    let plain = f.ask("big.service.consul.", RecordType::SRV);
    assert_eq!(plain.answers.len(), 3);
    assert!(!plain.metadata.truncation);
    let edns = f.ask_with("big.service.consul.", RecordType::SRV, Transport::Udp, Some(1232));
    assert!(edns.metadata.truncation, "200 SRV records do not fit 1232 bytes");
    assert!(!edns.answers.is_empty() && edns.answers.len() < 200);
    assert!(edns.edns.is_some(), "EDNS is answered with EDNS");
    let bytes = f.raw(&query_bytes("big.service.consul.", RecordType::SRV, Some(1232)), Transport::Udp).unwrap();
    assert!(bytes.len() <= 1232);
    let tcp = f.ask_with("big.service.consul.", RecordType::SRV, Transport::Tcp, None);
    assert_eq!(tcp.answers.len(), 200);
    assert_eq!(tcp.additionals.len(), 200);
    assert!(!tcp.metadata.truncation);
}

/// With 5,000 instances a TCP SRV answer is cut to what fits in 64 KiB with glue, and decodes.
/// Glue past the 14-bit reach of a compression pointer spells its name out, and still names its
/// answer's target.
#[test]
fn tcp_answers_stop_at_64k() {
    let f = many(5000);
    let bytes = f.raw(&query_bytes("big.service.consul.", RecordType::SRV, None), Transport::Tcp).unwrap();
    assert!(bytes.len() <= 65535 && bytes.len() > 65535 - 100, "{} bytes: full, not over", bytes.len());
    let reply = Message::from_vec(&bytes).unwrap();
    assert!(reply.answers.len() > 600, "{}", reply.answers.len());
    assert_eq!(reply.additionals.len(), reply.answers.len(), "each answer keeps its glue");
    for (answer, glue) in reply.answers.iter().zip(&reply.additionals) {
        let RData::SRV(srv) = &answer.data else { panic!("{answer:?}") };
        assert_eq!(glue.name, srv.target, "glue follows its answer");
        assert_eq!(&answer.name, reply.queries[0].name());
    }
    assert!(!reply.metadata.truncation, "TCP has nothing better to retry with");
}

/// Sorted SRV ports with each target's glue address, and the response code.
fn srv_view(message: &Message) -> (ResponseCode, Vec<(u16, String)>) {
    let mut out: Vec<(u16, String)> = message
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(srv) => {
                let glue = message.additionals.iter().find(|g| g.name == srv.target)?;
                Some((srv.port, glue.data.to_string()))
            }
            _ => None,
        })
        .collect();
    out.sort();
    (message.metadata.response_code, out)
}

/// The server's memo answers what a fresh reading of the catalog would, through every kind of
/// change to what an answer shows: checks, instances, node addresses, node checks, mixed-case
/// names, tags, deregistration.
#[test]
fn memo_answers_what_a_fresh_reading_would() {
    let mut f = web_fixture();
    let memo = InstanceMemo::default();
    let ask = |f: &Fixture, name: &str| {
        let bytes = query_bytes(name, RecordType::SRV, Some(4096));
        let fresh = Context { catalog: f.state.catalog(), settings: &f.settings, zone: &f.zone, memo: None };
        let remembered = Context { memo: Some(&memo), ..fresh };
        let decode = |context| {
            let reply = respond(&bytes, Transport::Udp, context, &mut Shuffle::new(3)).unwrap();
            srv_view(&Message::from_vec(&reply).unwrap())
        };
        let (expected, got) = (decode(fresh), decode(remembered));
        assert_eq!(got, expected, "{name}");
        got.1.iter().map(|(port, _)| *port).collect::<Vec<u16>>()
    };
    assert_eq!(ask(&f, "web.service.consul."), [8080, 8081]);
    assert_eq!(ask(&f, "primary.web.service.consul."), [8080]);
    f.instance("n2", "10.0.0.2", "web", &[], 8081, CheckStatus::Critical);
    assert_eq!(ask(&f, "web.service.consul."), [8080]);
    f.instance("n5", "10.0.0.5", "web", &["primary"], 8085, CheckStatus::Passing);
    assert_eq!(ask(&f, "web.service.consul."), [8080, 8085]);
    assert_eq!(ask(&f, "primary.web.service.consul."), [8080, 8085]);
    f.instance("n1", "10.9.9.9", "web", &["primary"], 8080, CheckStatus::Passing);
    ask(&f, "web.service.consul.");
    f.node_check("n1", CheckStatus::Critical);
    assert_eq!(ask(&f, "web.service.consul."), [8085]);
    f.instance("m1", "10.0.1.1", "Api", &[], 9000, CheckStatus::Passing);
    assert_eq!(ask(&f, "api.service.consul."), [9000], "names match without case");
    f.instance("m1", "10.0.1.1", "Api", &[], 9000, CheckStatus::Critical);
    assert_eq!(ask(&f, "api.service.consul."), Vec::<u16>::new());
    f.index += 1;
    let deregister = Deregistration { node: "n5".into(), service_id: Some("web-n5".into()), check_id: None };
    f.state.apply(f.index, &Command::Catalog(CatalogCommand::Deregister(deregister)));
    assert_eq!(ask(&f, "web.service.consul."), Vec::<u16>::new());
}

/// `a_record_limit` caps A answers on every transport; answer order is shuffled per query.
#[test]
fn a_record_limit_and_shuffle() {
    let mut f = many(20);
    f.settings.a_record_limit = Some(4);
    let reply = f.ask_with("big.service.consul.", RecordType::A, Transport::Tcp, None);
    assert_eq!(reply.answers.len(), 4);
    f.settings.a_record_limit = None;
    let bytes = query_bytes("big.service.consul.", RecordType::A, None);
    let context = Context { catalog: f.state.catalog(), settings: &f.settings, zone: &f.zone, memo: None };
    let mut shuffle = Shuffle::new(1);
    let first = respond(&bytes, Transport::Tcp, context, &mut shuffle).unwrap();
    let orders: std::collections::BTreeSet<Vec<u8>> =
        (0..5).map(|_| respond(&bytes, Transport::Tcp, context, &mut shuffle).unwrap()).collect();
    assert!(orders.len() > 1 || !orders.contains(&first), "answers are shuffled per query");
}

/// Packets that are not queries get FORMERR/NOTIMP or nothing; responses are never answered.
#[test]
fn hostile_packets() {
    let f = web_fixture();
    assert_eq!(f.raw(&[], Transport::Udp), None);
    assert_eq!(f.raw(&[0; 11], Transport::Udp), None);
    let mut response = query_bytes("web.service.consul.", RecordType::A, None);
    response[2] |= 0x80;
    assert_eq!(f.raw(&response, Transport::Udp), None, "a response is dropped");
    let code = |bytes: &[u8]| Message::from_vec(&f.raw(bytes, Transport::Udp).unwrap()).unwrap().metadata.response_code;
    let mut two_questions = query_bytes("web.service.consul.", RecordType::A, None);
    two_questions[5] = 2;
    assert_eq!(code(&two_questions), ResponseCode::FormErr);
    let mut garbage = query_bytes("web.service.consul.", RecordType::A, None);
    garbage.truncate(20);
    assert_eq!(code(&garbage), ResponseCode::FormErr);
    let mut update = query_bytes("web.service.consul.", RecordType::A, None);
    update[2] = 5 << 3;
    assert_eq!(code(&update), ResponseCode::NotImp);
    let mut chaos = Message::new(1, MessageType::Query, OpCode::Query);
    let mut q = Query::query(Name::from_ascii("version.bind.").unwrap(), RecordType::TXT);
    q.set_query_class(DNSClass::CH);
    chaos.queries.push(q);
    assert_eq!(code(&chaos.to_vec().unwrap()), ResponseCode::Refused);
    let mut big = query_bytes("web.service.consul.", RecordType::A, None);
    big.resize(wire::REQUEST_BYTES_MAX + 1, 0);
    assert_eq!(code(&big), ResponseCode::FormErr);
}

/// The catalog's health rule is the one DNS uses: warnings pass the DNS bar, not `?passing`'s.
#[test]
fn health_bar_is_the_catalogs() {
    let f = web_fixture();
    let catalog = f.state.catalog();
    assert_eq!(catalog.passing_instances("web").len(), 1);
    assert_eq!(catalog.healthy_instances("web", crate::state::HealthBar::NotCritical).len(), 2);
    let _ = IpAddr::V4(Ipv4Addr::LOCALHOST);
}

proptest! {
    /// Any bytes: the core never panics, a reply is a response with the request's ID that
    /// decodes and fits in 64 KiB.
    #[test]
    fn arbitrary_bytes_never_break_the_core(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let f = web_fixture();
        for transport in [Transport::Udp, Transport::Tcp] {
            if let Some(reply) = f.raw(&bytes, transport) {
                prop_assert!(reply.len() <= 65535);
                prop_assert_eq!(&reply[..2], &bytes[..2]);
                let decoded = Message::from_vec(&reply);
                prop_assert!(decoded.is_ok());
                prop_assert_eq!(decoded.unwrap().metadata.message_type, MessageType::Response);
            }
        }
    }

    /// Mutated valid queries behave the same way.
    #[test]
    fn mutated_queries_never_break_the_core(flips in proptest::collection::vec((0usize..64, any::<u8>()), 1..6)) {
        let f = web_fixture();
        let mut bytes = query_bytes("web.service.consul.", RecordType::SRV, Some(4096));
        for (at, value) in flips {
            let at = at % bytes.len();
            bytes[at] = value;
        }
        if let Some(reply) = f.raw(&bytes, Transport::Udp) {
            prop_assert!(reply.len() <= 4096);
            prop_assert!(Message::from_vec(&reply).is_ok());
        }
    }
}
