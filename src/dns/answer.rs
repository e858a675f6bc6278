//! DNS answering over a catalog snapshot: the pure core of the DNS interface.
//!
//! [`classify`] turns a packet into what has to happen (answer from the catalog, ask a recursor,
//! reply at once, or nothing); [`answer`] builds the response from a [`Catalog`], the settings and
//! a [`Shuffle`] for answer order. No I/O, no clock: the shell (`dns::server`) decides which
//! catalog is fresh enough and does the sending. Which instances are healthy is the catalog's
//! rule ([`Catalog::healthy_instances`]), the same one `?passing` uses.

use std::collections::BTreeSet;
use std::net::IpAddr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::name::{ip_hex, Lookup, Parsed, Zone};
use super::wire::{self, Rejection, Request, Response, Transport, UDP_BYTES_CLASSIC};
use crate::config::DnsSettings;
use crate::state::{Catalog, HealthBar, Node, ServiceInstance};

/// The service every server registers; its instances are the zone's name servers.
const SERVER_SERVICE: &str = "consul";
/// A TXT character-string holds at most 255 bytes.
const TXT_CHUNK_BYTES: usize = 255;

/// A small seeded generator (splitmix64) for shuffling answers: seeded by the shell from
/// `io::random_seed`, so the simulator's answers follow its seed.
#[derive(Debug, Clone)]
pub struct Shuffle(u64);

impl Shuffle {
    pub fn new(seed: u64) -> Self {
        Shuffle(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Fisher-Yates.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

/// What to do with one packet.
#[derive(Debug)]
pub enum Step {
    /// A name in our domains: answer it from a catalog with [`answer`].
    Answer(Request, Parsed),
    /// A name outside our domains and recursors configured: forward the packet as it came.
    Recurse(Request),
    /// Send these bytes now (an error, or REFUSED for a foreign name without recursors).
    Reply(Vec<u8>),
    /// Send nothing.
    Drop,
}

/// Decode a packet and decide what it needs.
pub fn classify(bytes: &[u8], transport: Transport, zone: &Zone, settings: &DnsSettings) -> Step {
    let request = match wire::decode(bytes, transport) {
        Ok(request) => request,
        Err(rejection @ Rejection::Error { .. }) => {
            return wire::rejection_bytes(&rejection).map_or(Step::Drop, Step::Reply);
        }
        Err(Rejection::Drop) => return Step::Drop,
    };
    let parsed = zone.parse(request.query.name().iter());
    match parsed.domain {
        Some(_) => Step::Answer(request, parsed),
        None if !settings.recursors.is_empty() => Step::Recurse(request),
        None => Step::Reply(error_reply(&request, ResponseCode::Refused, settings)),
    }
}

/// An empty reply with `code` (SERVFAIL when no fresh catalog could be had, REFUSED, ...).
pub fn error_reply(request: &Request, code: ResponseCode, settings: &DnsSettings) -> Vec<u8> {
    let mut response = Response::to(request, code);
    response.metadata.recursion_available = !settings.recursors.is_empty();
    wire::fit(&response, request.max_bytes, false).bytes
}

/// Everything [`answer`] reads besides the request.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub catalog: &'a Catalog,
    pub settings: &'a DnsSettings,
    pub zone: &'a Zone,
}

/// The response to an in-zone request, encoded to fit its transport.
pub fn answer(request: &Request, parsed: &Parsed, context: Context<'_>, shuffle: &mut Shuffle) -> Vec<u8> {
    let domain = parsed.domain.as_deref().unwrap_or(context.settings.domain.as_str());
    let builder = Builder { request, context, domain };
    let mut response = Response::to(request, ResponseCode::NoError);
    response.metadata.recursion_available = !context.settings.recursors.is_empty();
    let found = match &parsed.lookup {
        Lookup::Apex => builder.apex(&mut response),
        Lookup::Service { service, tag } => builder.service(&mut response, service, tag.as_deref(), shuffle),
        Lookup::Node { node } => builder.node(&mut response, node),
        Lookup::Addr { ip } => builder.addr(&mut response, *ip),
        Lookup::Unknown => false,
    };
    if !found {
        response.metadata.response_code = ResponseCode::NXDomain;
    }
    if response.answers.is_empty() {
        // Negative answers (NXDOMAIN, and NOERROR with no data) carry the SOA, whose minimum is
        // how long resolvers may cache them (RFC 2308).
        response.authorities.push(builder.soa());
    }
    let settings = context.settings;
    if request.transport == Transport::Udp && request.max_bytes == UDP_BYTES_CLASSIC {
        // Consul's `udp_answer_limit`: a plain-DNS UDP client gets a random few. This is a
        // deliberate subset, not a cut for size, so it does not set TC.
        response.answers.truncate(settings.udp_answer_limit);
        response.glue.truncate(settings.udp_answer_limit);
    }
    let truncate = request.transport == Transport::Udp && settings.enable_truncate;
    wire::fit(&response, request.max_bytes, truncate).bytes
}

/// Builds the records of one answer.
struct Builder<'a> {
    request: &'a Request,
    context: Context<'a>,
    /// The domain the question was asked in (`consul.` or the alt domain), for names we make.
    domain: &'a str,
}

impl Builder<'_> {
    fn qname(&self) -> Name {
        self.request.query.name().clone()
    }

    fn qtype(&self) -> RecordType {
        self.request.query.query_type()
    }

    fn wants(&self, rtype: RecordType) -> bool {
        self.qtype() == rtype || self.qtype() == RecordType::ANY
    }

    fn apex_name(&self) -> Name {
        Name::from_ascii(self.domain).unwrap_or_else(|_| Name::root())
    }

    fn child(&self, labels: &str) -> Option<Name> {
        Name::from_ascii(format!("{labels}.{}", self.domain)).ok()
    }

    fn soa(&self) -> Record {
        let s = self.context.settings.soa;
        let catalog = self.context.catalog;
        // The catalog's last change, so the serial moves when the zone's data does.
        let serial = catalog.nodes_index().max(catalog.services_index()).max(catalog.checks_index()) as u32;
        let ns = self.child("ns").unwrap_or_else(|| self.apex_name());
        let hostmaster = self.child("hostmaster").unwrap_or_else(|| self.apex_name());
        let soa = SOA::new(ns, hostmaster, serial, s.refresh as i32, s.retry as i32, s.expire as i32, s.min_ttl);
        Record::from_rdata(self.apex_name(), s.min_ttl, RData::SOA(soa))
    }

    /// SOA and NS for the domain itself; the name servers are the servers' nodes.
    fn apex(&self, response: &mut Response) -> bool {
        if self.wants(RecordType::SOA) {
            push(response, self.soa(), None);
        }
        if self.wants(RecordType::NS) {
            let ttl = self.context.settings.node_ttl.as_secs() as u32;
            let servers = self.context.catalog.passing_instances(SERVER_SERVICE);
            for (node, _) in servers {
                let Some(target) = self.node_name(&node.node) else { continue };
                let glue = address_record(target.clone(), &node.address, ttl);
                push(response, Record::from_rdata(self.apex_name(), ttl, RData::NS(NS(target))), glue);
            }
        }
        true
    }

    fn node_name(&self, node: &str) -> Option<Name> {
        self.child(&format!("{node}.node.{}", self.context.zone.datacenter()))
    }

    /// Healthy instances of a service. Unknown service (or tag): NXDOMAIN; known but none
    /// healthy: NOERROR with no answers.
    fn service(&self, response: &mut Response, service: &str, tag: Option<&str>, shuffle: &mut Shuffle) -> bool {
        let catalog = self.context.catalog;
        let settings = self.context.settings;
        let tagged =
            |instance: &ServiceInstance| tag.is_none_or(|t| instance.tags.iter().any(|x| x.eq_ignore_ascii_case(t)));
        if !catalog.service_instances(service).iter().any(|(_, instance)| tagged(instance)) {
            return false;
        }
        let bar = if settings.only_passing { HealthBar::Passing } else { HealthBar::NotCritical };
        let mut healthy: Vec<(&Node, &ServiceInstance)> =
            catalog.healthy_instances(service, bar).into_iter().filter(|(_, instance)| tagged(instance)).collect();
        shuffle.shuffle(&mut healthy);
        let ttl = settings.service_ttl.ttl_for(service).unwrap_or_default().as_secs() as u32;
        if self.qtype() == RecordType::SRV {
            for (node, instance) in healthy {
                self.push_srv(response, node, instance, ttl);
            }
            return true;
        }
        if self.wants(RecordType::A) || self.wants(RecordType::AAAA) {
            let mut seen = BTreeSet::new();
            let limit = settings.a_record_limit.unwrap_or(usize::MAX);
            for (node, instance) in healthy {
                let address = instance_address(node, instance);
                if response.answers.len() >= limit || !seen.insert(address) {
                    continue;
                }
                if let Some(record) = self.address_answer(address, ttl) {
                    push(response, record, None);
                }
            }
        }
        true
    }

    /// `1 1 <port> <node>.node.<dc>.<domain>.` with the node's address as glue; an instance with
    /// an address of its own points at `<hex>.addr.<dc>.<domain>.` instead (Consul's rule).
    fn push_srv(&self, response: &mut Response, node: &Node, instance: &ServiceInstance, ttl: u32) {
        let address = instance_address(node, instance);
        let target = match address.parse::<IpAddr>() {
            Ok(ip) if address != node.address => {
                self.child(&format!("{}.addr.{}", ip_hex(ip), self.context.zone.datacenter()))
            }
            Ok(_) => self.node_name(&node.node),
            // A host name: point at it; resolving it is the client's business.
            Err(_) => Name::from_ascii(format!("{}.", address.trim_end_matches('.'))).ok(),
        };
        let Some(target) = target else { return };
        let glue = address_record(target.clone(), address, ttl);
        let srv = SRV::new(1, 1, instance.port, target);
        push(response, Record::from_rdata(self.qname(), ttl, RData::SRV(srv)), glue);
    }

    /// An A or AAAA record for `address` as asked, a CNAME for a host name, or nothing when the
    /// address is of the other family.
    fn address_answer(&self, address: &str, ttl: u32) -> Option<Record> {
        match address.parse::<IpAddr>() {
            Ok(IpAddr::V4(v4)) if self.wants(RecordType::A) => {
                Some(Record::from_rdata(self.qname(), ttl, RData::A(A(v4))))
            }
            Ok(IpAddr::V6(v6)) if self.wants(RecordType::AAAA) => {
                Some(Record::from_rdata(self.qname(), ttl, RData::AAAA(AAAA(v6))))
            }
            Ok(_) => None,
            Err(_) => {
                let target = Name::from_ascii(format!("{}.", address.trim_end_matches('.'))).ok()?;
                Some(Record::from_rdata(self.qname(), ttl, RData::CNAME(CNAME(target))))
            }
        }
    }

    /// A node's address (A/AAAA) and metadata (TXT, one record per `key=value`). Nodes are
    /// answered whatever their health, as Consul does.
    fn node(&self, response: &mut Response, name: &str) -> bool {
        let catalog = self.context.catalog;
        let Some(node) = catalog.node(name).or_else(|| catalog.nodes().find(|n| n.node.eq_ignore_ascii_case(name)))
        else {
            return false;
        };
        let ttl = self.context.settings.node_ttl.as_secs() as u32;
        if let Some(record) = self.address_answer(&node.address, ttl) {
            push(response, record, None);
        }
        if self.wants(RecordType::TXT) {
            for (key, value) in &node.meta {
                let text = format!("{key}={value}");
                push(response, Record::from_rdata(self.qname(), ttl, RData::TXT(TXT::new(txt_chunks(&text)))), None);
            }
        }
        true
    }

    /// `<hex>.addr`: the address itself, for the family asked.
    fn addr(&self, response: &mut Response, ip: IpAddr) -> bool {
        let ttl = self.context.settings.node_ttl.as_secs() as u32;
        if let Some(record) = self.address_answer(&ip.to_string(), ttl) {
            push(response, record, None);
        }
        true
    }
}

fn push(response: &mut Response, answer: Record, glue: Option<Record>) {
    response.answers.push(answer);
    response.glue.push(glue);
}

/// The instance's own address, else its node's.
fn instance_address<'a>(node: &'a Node, instance: &'a ServiceInstance) -> &'a str {
    if instance.address.is_empty() {
        &node.address
    } else {
        &instance.address
    }
}

/// An A or AAAA record naming `name`, if `address` is an IP.
fn address_record(name: Name, address: &str, ttl: u32) -> Option<Record> {
    match address.parse::<IpAddr>().ok()? {
        IpAddr::V4(v4) => Some(Record::from_rdata(name, ttl, RData::A(A(v4)))),
        IpAddr::V6(v6) => Some(Record::from_rdata(name, ttl, RData::AAAA(AAAA(v6)))),
    }
}

/// `text` cut into TXT character-strings of at most 255 bytes, on character boundaries.
fn txt_chunks(text: &str) -> Vec<String> {
    let mut chunks = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = rest.len().min(TXT_CHUNK_BYTES);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        chunks.push(rest[..end].to_owned());
        rest = &rest[end..];
    }
    if chunks.is_empty() {
        chunks.push(String::new());
    }
    chunks
}

/// The whole core in one call, for the fuzzer and tests: bytes in, bytes out (or nothing). A
/// name outside the domains gets REFUSED here, since forwarding is the shell's.
pub fn respond(bytes: &[u8], transport: Transport, context: Context<'_>, shuffle: &mut Shuffle) -> Option<Vec<u8>> {
    match classify(bytes, transport, context.zone, context.settings) {
        Step::Answer(request, parsed) => Some(answer(&request, &parsed, context, shuffle)),
        Step::Recurse(request) => Some(error_reply(&request, ResponseCode::Refused, context.settings)),
        Step::Reply(bytes) => Some(bytes),
        Step::Drop => None,
    }
}
