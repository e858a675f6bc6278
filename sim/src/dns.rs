//! A minimal DNS client for the simulator: one question over the simulated TCP (TCP carries every
//! record; UDP answers are cut to Consul's `udp_answer_limit` of 3), decoded with hickory-proto
//! (the agent encodes its answers itself, so this is an independent reading).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The IPv4 addresses a DNS question for `<service>.service.consul.` answers, asked of the DNS
/// server at `addr`: for `A`, the answer section's addresses; for `SRV`, the address glued to
/// each answer's target in the additional section (an SRV answer without its glue counts for
/// nothing). `None` if it did not answer within `limit` or answered with an error other than
/// "no such name" (an existing name with no healthy instance answers with no records).
pub async fn service_addresses(
    addr: SocketAddr,
    service: &str,
    rtype: RecordType,
    limit: Duration,
) -> Option<Vec<IpAddr>> {
    let name = Name::from_ascii(format!("{service}.service.consul.")).ok()?;
    let mut query = Message::new(0x5157, MessageType::Query, OpCode::Query);
    query.queries.push(Query::query(name, rtype));
    let bytes = query.to_vec().ok()?;
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        stream.write_all(&(bytes.len() as u16).to_be_bytes()).await.ok()?;
        stream.write_all(&bytes).await.ok()?;
        stream.flush().await.ok()?;
        let mut prefix = [0u8; 2];
        stream.read_exact(&mut prefix).await.ok()?;
        let mut body = vec![0u8; u16::from_be_bytes(prefix) as usize];
        stream.read_exact(&mut body).await.ok()?;
        Message::from_vec(&body).ok()
    };
    let reply = tokio::time::timeout(limit, exchange).await.ok()??;
    match reply.metadata.response_code {
        ResponseCode::NoError | ResponseCode::NXDomain => {}
        _ => return None,
    }
    let glue_of = |target: &Name| {
        reply.additionals.iter().find_map(|record| match &record.data {
            RData::A(a) if record.name == *target => Some(IpAddr::V4(a.0)),
            _ => None,
        })
    };
    Some(
        reply
            .answers
            .iter()
            .filter_map(|record| match &record.data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::SRV(srv) => glue_of(&srv.target),
                _ => None,
            })
            .collect(),
    )
}
