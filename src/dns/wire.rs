//! Untrusted bytes to a [`Request`] (responses are written by [`super::reply`]).
//!
//! hickory-proto decodes; the limits are ours. A packet's 12-byte header is read by hand
//! first, and anything a query cannot be (a response, several questions, answer records, more
//! than a couple of additional records) is refused before hickory allocates for its counts.

use hickory_proto::op::{Edns, Message, Metadata, OpCode, Query, ResponseCode};
use hickory_proto::rr::DNSClass;

/// The largest request accepted, on either transport. A query is one name (at most 255 bytes),
/// an OPT record and perhaps a cookie: a few hundred bytes. Anything longer is not a query.
pub const REQUEST_BYTES_MAX: usize = 1024;
/// The plain-DNS UDP limit (RFC 1035), for clients without EDNS.
pub const UDP_BYTES_CLASSIC: u16 = 512;
/// The most we send over UDP whatever EDNS offers: larger datagrams fragment, and fragments get
/// lost (the 2020 DNS flag day settled on 1232; 4096 is the common EDNS offer).
pub const UDP_BYTES_MAX: u16 = 4096;
/// A DNS message over TCP has a 16-bit length prefix.
pub const TCP_BYTES_MAX: u16 = u16::MAX;
/// Additional records a query may carry: an OPT, and a TSIG or SIG(0) we ignore.
const ADDITIONALS_MAX: u16 = 2;

/// How the request came, which bounds the answer's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// A query that passed every check: one question, class IN (or ANY), opcode QUERY.
#[derive(Debug, Clone)]
pub struct Request {
    pub metadata: Metadata,
    pub query: Query,
    /// The client's EDNS, if it sent one.
    pub edns: Option<Edns>,
    /// The largest response the client takes on this transport.
    pub max_bytes: u16,
    pub transport: Transport,
}

/// Why a packet gets no regular answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Not worth a reply: too short to carry an ID, or itself a response (answering responses
    /// lets two servers loop).
    Drop,
    /// Reply with just this code (FORMERR, NOTIMP, REFUSED, BADVERS) and the request's ID.
    Error { id: u16, opcode: OpCode, code: ResponseCode, edns: bool },
}

/// Check and decode one request.
pub fn decode(bytes: &[u8], transport: Transport) -> Result<Request, Rejection> {
    if bytes.len() < 12 {
        return Err(Rejection::Drop);
    }
    let id = u16::from_be_bytes([bytes[0], bytes[1]]);
    let is_response = bytes[2] & 0x80 != 0;
    if is_response {
        return Err(Rejection::Drop);
    }
    let count = |at: usize| u16::from_be_bytes([bytes[at], bytes[at + 1]]);
    let (questions, answers, authorities, additionals) = (count(4), count(6), count(8), count(10));
    let opcode = OpCode::from_u8((bytes[2] >> 3) & 0x0f);
    let error = |code| Rejection::Error { id, opcode, code, edns: false };
    if opcode != OpCode::Query {
        return Err(error(ResponseCode::NotImp));
    }
    let shaped_like_a_query = questions == 1 && answers == 0 && authorities == 0 && additionals <= ADDITIONALS_MAX;
    if bytes.len() > REQUEST_BYTES_MAX || !shaped_like_a_query {
        return Err(error(ResponseCode::FormErr));
    }
    let message = Message::from_vec(bytes).map_err(|_| error(ResponseCode::FormErr))?;
    let Some(query) = message.queries.first().cloned() else { return Err(error(ResponseCode::FormErr)) };
    let edns = message.edns.clone();
    if let Some(edns) = &edns {
        if edns.version() > 0 {
            return Err(Rejection::Error { id, opcode, code: ResponseCode::BADVERS, edns: true });
        }
    }
    if !matches!(query.query_class(), DNSClass::IN | DNSClass::ANY) {
        return Err(Rejection::Error { id, opcode, code: ResponseCode::Refused, edns: edns.is_some() });
    }
    let max_bytes = match (transport, &edns) {
        (Transport::Tcp, _) => TCP_BYTES_MAX,
        (Transport::Udp, None) => UDP_BYTES_CLASSIC,
        (Transport::Udp, Some(edns)) => edns.max_payload().clamp(UDP_BYTES_CLASSIC, UDP_BYTES_MAX),
    };
    Ok(Request { metadata: message.metadata, query, edns, max_bytes, transport })
}

/// The reply to a rejected packet, if it gets one.
pub fn rejection_bytes(rejection: &Rejection) -> Option<Vec<u8>> {
    let Rejection::Error { id, opcode, code, edns } = rejection else { return None };
    let mut message = Message::error_msg(*id, *opcode, *code);
    if *edns {
        message.edns = Some(response_edns());
    }
    message.to_vec().ok()
}

/// The OPT record of our responses: we take up to [`UDP_BYTES_MAX`] from clients.
pub fn response_edns() -> Edns {
    let mut edns = Edns::new();
    edns.set_max_payload(UDP_BYTES_MAX);
    edns
}
