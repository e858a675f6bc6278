//! The DNS core alone, in one thread: bytes of a query in, bytes of the answer out, over a
//! catalog like the dnsperf benchmark's (100 services x 3 instances) and one service with 5,000
//! instances. No sockets: what a query costs the server besides the two system calls.
//!
//! `cargo bench --bench dns_answer [-- FILTER]` prints nanoseconds per query for each case (or
//! those whose label contains FILTER), working each answer out anew and with the server's memo.

use std::hint::black_box;
use std::time::{Duration, Instant};

use cairn::config::DnsSettings;
use cairn::dns::instances::InstanceMemo;
use cairn::dns::{respond, Context, Shuffle, Transport, Zone};
use cairn::state::{CatalogCommand, CheckDefinition, CheckStatus, Command, Registration, ServiceDefinition, State};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};

/// How long each case runs, after a warm-up of a tenth of it.
const RUN: Duration = Duration::from_secs(2);

fn main() {
    let state = catalog();
    let settings = DnsSettings::default();
    let zone = Zone::new(["consul."], "dc1");
    let memo = InstanceMemo::default();
    let fresh = Context { catalog: state.catalog(), settings: &settings, zone: &zone, memo: None };
    let remembered = Context { memo: Some(&memo), ..fresh };
    let cases = [
        ("A, 3 instances, UDP", query("svc042.service.consul.", RecordType::A, Some(1232)), Transport::Udp),
        ("SRV, 3 instances, UDP", query("svc042.service.consul.", RecordType::SRV, Some(1232)), Transport::Udp),
        ("NXDOMAIN, UDP", query("nothing.service.consul.", RecordType::A, Some(1232)), Transport::Udp),
        ("SRV, 5,000 instances, TCP", query("big.service.consul.", RecordType::SRV, None), Transport::Tcp),
        ("A, 5,000 instances, TCP", query("big.service.consul.", RecordType::A, None), Transport::Tcp),
    ];
    // cargo passes `--bench`; anything else is a filter on the labels.
    let filter = std::env::args().skip(1).find(|arg| !arg.starts_with("--")).unwrap_or_default();
    println!("{:<28} {:>8} {:>16} {:>14}", "case", "bytes", "ns/query fresh", "ns/query memo");
    for (label, bytes, transport) in cases.into_iter().filter(|case| case.0.contains(&filter)) {
        let reply_len = respond(&bytes, transport, fresh, &mut Shuffle::new(1)).map_or(0, |r| r.len());
        let [fresh_ns, memo_ns] = [fresh, remembered].map(|context| time(&bytes, transport, context));
        println!("{label:<28} {reply_len:>8} {fresh_ns:>16.0} {memo_ns:>14.0}");
    }
}

/// Nanoseconds per answer of `bytes`, over [`RUN`].
fn time(bytes: &[u8], transport: Transport, context: Context<'_>) -> f64 {
    let mut shuffle = Shuffle::new(1);
    let warm_up = Instant::now();
    while warm_up.elapsed() < RUN / 10 {
        black_box(respond(black_box(bytes), transport, context, &mut shuffle));
    }
    let start = Instant::now();
    let mut queries = 0u64;
    while start.elapsed() < RUN {
        for _ in 0..16 {
            black_box(respond(black_box(bytes), transport, context, &mut shuffle));
        }
        queries += 16;
    }
    start.elapsed().as_nanos() as f64 / queries as f64
}

fn query(name: &str, rtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut message = Message::new(0x1234, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.queries.push(Query::query(Name::from_ascii(name).expect("a valid name"), rtype));
    if let Some(size) = edns {
        let mut opt = Edns::new();
        opt.set_max_payload(size);
        message.edns = Some(opt);
    }
    message.to_vec().expect("the query encodes")
}

/// 100 services with 3 passing instances each on nodes of their own, and `big` with 5,000.
fn catalog() -> State {
    let mut state = State::default();
    let mut index = 0;
    let mut register = |node: String, address: String, service: &str, port: u16| {
        index += 1;
        let id = format!("{service}-{node}");
        let registration = Registration {
            node,
            address,
            service: Some(ServiceDefinition { id: id.clone(), service: service.into(), port, ..Default::default() }),
            checks: vec![CheckDefinition {
                check_id: format!("check-{id}"),
                name: "alive".into(),
                service_id: id,
                status: CheckStatus::Passing,
                ..Default::default()
            }],
            ..Default::default()
        };
        state.apply(index, &Command::Catalog(CatalogCommand::Register(registration)));
    };
    for s in 0..100 {
        for i in 0..3 {
            register(format!("node-{s:03}-{i}"), format!("10.1.{s}.{}", i + 1), &format!("svc{s:03}"), 8000 + i);
        }
    }
    for i in 0..5000u32 {
        let address = format!("10.2.{}.{}", i / 256, i % 256);
        register(format!("big-{i:05}"), address, "big", 30000 + (i % 1000) as u16);
    }
    state
}
