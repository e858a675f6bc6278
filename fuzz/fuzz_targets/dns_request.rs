//! The DNS server's request handler on arbitrary bytes, over UDP and TCP, against a small catalog:
//! it must never panic, every reply must be a response with the request's ID that decodes and
//! fits its transport, the server's memo must answer byte for byte what a fresh reading does, and
//! every message the codec decodes must survive a round trip (decode, encode, decode again: equal).
#![no_main]

use std::sync::OnceLock;

use cairn::config::DnsSettings;
use cairn::dns::instances::InstanceMemo;
use cairn::dns::{respond, Context, Shuffle, Transport, Zone};
use cairn::state::{
    CatalogCommand, CheckDefinition, CheckStatus, Command, Registration, ServiceDefinition, State,
};
use hickory_proto::op::{Message, MessageType};
use libfuzzer_sys::fuzz_target;

/// Three `web` instances (passing, warning, critical) and a node with metadata.
fn catalog() -> &'static State {
    static STATE: OnceLock<State> = OnceLock::new();
    STATE.get_or_init(|| {
        let mut state = State::default();
        let statuses = [CheckStatus::Passing, CheckStatus::Warning, CheckStatus::Critical];
        for (i, status) in statuses.into_iter().enumerate() {
            let id = format!("web-{i}");
            let registration = Registration {
                node: format!("n{i}"),
                address: format!("10.0.0.{}", i + 1),
                node_meta: [("rack".to_string(), "r1".to_string())].into(),
                service: Some(ServiceDefinition {
                    id: id.clone(),
                    service: "web".into(),
                    tags: vec!["primary".into()],
                    port: 8080,
                    ..Default::default()
                }),
                checks: vec![CheckDefinition { check_id: id.clone(), name: id.clone(), service_id: id, status, ..Default::default() }],
                ..Default::default()
            };
            state.apply(i as u64 + 1, &Command::Catalog(CatalogCommand::Register(registration)));
        }
        state
    })
}

fuzz_target!(|data: &[u8]| {
    let settings = DnsSettings::default();
    let zone = Zone::new(["consul."], "dc1");
    let context = Context { catalog: catalog().catalog(), settings: &settings, zone: &zone, memo: None };
    static MEMO: OnceLock<InstanceMemo> = OnceLock::new();
    let remembered = Context { memo: Some(MEMO.get_or_init(InstanceMemo::default)), ..context };
    for (transport, limit) in [(Transport::Udp, 4096), (Transport::Tcp, 65535)] {
        let reply = respond(data, transport, context, &mut Shuffle::new(1));
        let from_memo = respond(data, transport, remembered, &mut Shuffle::new(1));
        assert_eq!(from_memo, reply, "the server's memo answers as a fresh reading does");
        if let Some(reply) = reply {
            assert!(reply.len() <= limit, "{} bytes over {transport:?}", reply.len());
            assert_eq!(reply[..2], data[..2], "the reply carries the request's ID");
            let decoded = Message::from_vec(&reply).expect("our replies decode");
            assert_eq!(decoded.metadata.message_type, MessageType::Response);
        }
    }
    if let Ok(message) = Message::from_vec(data) {
        if let Ok(bytes) = message.to_vec() {
            let again = Message::from_vec(&bytes).expect("a re-encoded message decodes");
            assert_eq!(again, message);
        }
    }
});
