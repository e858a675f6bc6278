//! Asking a DNS interface as a resolver would: one question over UDP or TCP on 127.0.0.1, built
//! and decoded with hickory-proto (independent of the agent's own encoder).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, RecordType};

/// How long one try waits for its answer: longer than a server's read barrier (2 s), after
/// which it answers SERVFAIL at the latest.
const ANSWER_WAIT: Duration = Duration::from_secs(5);
/// UDP may drop: a question is sent this many times before the test gives up.
const UDP_TRIES: usize = 3;

/// A recursion-desired question, with an EDNS record offering `edns` bytes if given.
pub fn query(name: &str, rtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut message = Message::new(0x4242, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.queries.push(Query::query(Name::from_ascii(name).unwrap(), rtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        message.edns = Some(e);
    }
    message.to_vec().unwrap()
}

/// One question over UDP, asked again if its answer does not come.
pub fn ask_udp(addr: SocketAddr, name: &str, rtype: RecordType, edns: Option<u16>) -> Message {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(ANSWER_WAIT)).unwrap();
    let mut buffer = vec![0u8; 65535];
    for _ in 0..UDP_TRIES {
        socket.send_to(&query(name, rtype, edns), addr).unwrap();
        if let Ok((len, _)) = socket.recv_from(&mut buffer) {
            return Message::from_vec(&buffer[..len]).expect("the answer decodes");
        }
    }
    panic!("no UDP answer for {name} {rtype} from {addr}");
}

/// One question over a new TCP connection.
pub fn ask_tcp(addr: SocketAddr, name: &str, rtype: RecordType) -> Message {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(ANSWER_WAIT)).unwrap();
    let bytes = query(name, rtype, None);
    stream.write_all(&(bytes.len() as u16).to_be_bytes()).unwrap();
    stream.write_all(&bytes).unwrap();
    let mut prefix = [0u8; 2];
    stream.read_exact(&mut prefix).unwrap();
    let mut body = vec![0u8; u16::from_be_bytes(prefix) as usize];
    stream.read_exact(&mut body).unwrap();
    Message::from_vec(&body).expect("the answer decodes")
}

/// The answer section's IPv4 addresses, sorted.
pub fn a_records(message: &Message) -> Vec<Ipv4Addr> {
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
