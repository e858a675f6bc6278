//! Untrusted bytes to a [`Request`], and a response [`Message`] to bytes that fit the transport.
//!
//! hickory-proto is the codec; the limits are ours. A packet's 12-byte header is read by hand
//! first, and anything a query cannot be (a response, several questions, answer records, more
//! than a couple of additional records) is refused before hickory allocates for its counts.

use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Record};
use hickory_proto::serialize::binary::BinEncoder;

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

/// A response before it is fitted to the transport: answers, each with the additional record
/// that goes with it (an SRV target's address), so cutting an answer cuts its glue too.
#[derive(Debug, Clone)]
pub struct Response {
    pub metadata: Metadata,
    pub query: Query,
    pub answers: Vec<Record>,
    /// `glue[i]` goes with `answers[i]` (same length, or empty).
    pub glue: Vec<Option<Record>>,
    pub authorities: Vec<Record>,
    pub edns: Option<Edns>,
}

/// Encoded bytes and what had to be left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fitted {
    pub bytes: Vec<u8>,
    /// Answers left out because they did not fit (the TC bit is set if `truncate` allowed it).
    pub answers_cut: usize,
}

/// Encode `response` in at most `max_bytes`: whole when it fits; otherwise the most answers that
/// fit together with their glue (an SRV answer without its target's address costs the client
/// another query). TC is set when answers were cut and `truncate` is true.
pub fn fit(response: &Response, max_bytes: u16, truncate: bool) -> Fitted {
    let total = response.answers.len();
    if let Some(bytes) = encode_complete(response, total, max_bytes, false) {
        return Fitted { bytes, answers_cut: 0 };
    }
    // Answer and glue pairs are nearly the same size, so estimate how many fit from a sample of
    // them and check; trying every count would re-encode up to 64 KiB a dozen times.
    let unlimited = u16::MAX;
    let base = encode(response, 0, None, unlimited, false).len();
    let sample = total.min(16);
    let sampled = encode(response, sample, None, unlimited, false).len();
    let per_answer = (sampled.saturating_sub(base) / sample.max(1)).max(1);
    let mut kept = (usize::from(max_bytes).saturating_sub(base) / per_answer).min(total.saturating_sub(1));
    loop {
        let tc = truncate && kept < total;
        if let Some(bytes) = encode_complete(response, kept, max_bytes, tc) {
            return Fitted { bytes, answers_cut: total - kept };
        }
        if kept == 0 {
            break;
        }
        kept -= (kept / 50).max(1);
    }
    // Not even the question and authority fit (a huge name in a tiny budget): header and
    // question only, truncated.
    let mut bare = Message::new(response.metadata.id, MessageType::Response, response.metadata.op_code);
    bare.metadata = response.metadata;
    bare.metadata.truncation = true;
    bare.queries.push(response.query.clone());
    Fitted { bytes: bare.to_vec().unwrap_or_default(), answers_cut: total }
}

/// The first `answers` answers with their glue, if all of it (and the OPT record) fits in
/// `max_bytes`.
fn encode_complete(response: &Response, answers: usize, max_bytes: u16, truncation: bool) -> Option<Vec<u8>> {
    let glue = response.glue.iter().take(answers).flatten().count();
    let bytes = encode(response, answers, response.edns.as_ref(), max_bytes, truncation);
    let additionals = glue + usize::from(response.edns.is_some());
    let complete = header_count(&bytes, 6) == answers && header_count(&bytes, 10) == additionals;
    // hickory sets TC itself when it leaves records out; a complete encoding carries ours.
    complete.then_some(bytes)
}

fn header_count(bytes: &[u8], at: usize) -> usize {
    bytes.get(at..at + 2).map_or(0, |b| usize::from(u16::from_be_bytes([b[0], b[1]])))
}

/// Encode the first `answers` answers with their glue and the authorities in at most `limit`
/// bytes; records past it are left out (hickory counts what it wrote in the header). An encoding
/// failure other than size gives a SERVFAIL carrying the question.
fn encode(response: &Response, answers: usize, edns: Option<&Edns>, limit: u16, truncation: bool) -> Vec<u8> {
    let mut metadata = response.metadata;
    metadata.truncation = truncation;
    let glue: Vec<&Record> = response.glue.iter().take(answers).flatten().collect();
    let mut buffer = Vec::with_capacity(512);
    let mut encoder = BinEncoder::new(&mut buffer);
    encoder.set_max_size(limit);
    let emitted = hickory_proto::op::emit_message_parts(
        &metadata,
        &mut std::iter::once(&response.query),
        &mut response.answers[..answers].iter(),
        &mut response.authorities.iter(),
        &mut glue.into_iter(),
        edns,
        None,
        &mut encoder,
    );
    match emitted {
        Ok(_) => buffer,
        Err(_) => {
            let mut failed =
                Message::error_msg(response.metadata.id, response.metadata.op_code, ResponseCode::ServFail);
            failed.queries.push(response.query.clone());
            failed.to_vec().unwrap_or_default()
        }
    }
}

impl Response {
    /// An empty response to `request` with `code`: authoritative, the question echoed, EDNS
    /// answered with EDNS.
    pub fn to(request: &Request, code: ResponseCode) -> Response {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        metadata.response_code = code;
        Response {
            metadata,
            query: request.query.clone(),
            answers: Vec::new(),
            glue: Vec::new(),
            authorities: Vec::new(),
            edns: request.edns.as_ref().map(|_| response_edns()),
        }
    }
}
