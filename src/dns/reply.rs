//! Responses written straight to wire bytes as the answer is built.
//!
//! Every record's size is known when it is added (names are laid out once, and the only
//! compression is a pointer to the question's name or to an earlier SRV/NS target), so cutting a
//! response to its transport is arithmetic: an answer that does not fit with its glue is refused
//! and the builder stops. Nothing is encoded twice, and a service with 5,000 instances costs the
//! ~600 answers that fit in 64 KiB, not 5,000 records and a re-encoding loop.
//!
//! The layout is always: header, the question as asked, answers (owner: a pointer to the
//! question's name), authority (the SOA of negative answers), additional (each answer's glue in
//! answer order, then our OPT record when the client sent EDNS).

use std::net::IpAddr;

use hickory_proto::op::ResponseCode;

use super::wire::{Request, UDP_BYTES_MAX};

/// A name's longest wire form (RFC 1035 2.3.4) and a label's.
const NAME_BYTES_MAX: usize = 255;
const LABEL_BYTES_MAX: usize = 63;
/// A TXT character-string holds at most 255 bytes.
const TXT_CHUNK_BYTES: usize = 255;
const HEADER_BYTES: usize = 12;
/// TYPE, CLASS, TTL and RDLENGTH of a resource record.
const RR_FIXED_BYTES: usize = 10;
/// The question's name starts right after the header.
const QUESTION_NAME_POINTER: [u8; 2] = [0xC0, HEADER_BYTES as u8];
/// A compression pointer holds a 14-bit offset: names further in are written out.
const POINTER_OFFSET_MAX: usize = 0x3FFF;
/// Our OPT record: root owner, TYPE, CLASS (payload size), TTL (flags), RDLENGTH 0.
const OPT_BYTES: usize = 1 + RR_FIXED_BYTES;

const CLASS_IN: u16 = 1;
const TYPE_A: u16 = 1;
const TYPE_NS: u16 = 2;
const TYPE_CNAME: u16 = 5;
const TYPE_SOA: u16 = 6;
const TYPE_TXT: u16 = 16;
const TYPE_AAAA: u16 = 28;
const TYPE_SRV: u16 = 33;
const TYPE_OPT: u16 = 41;

/// A domain name in wire form: length-prefixed labels and the root's zero byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireName(Vec<u8>);

impl WireName {
    /// Dotted parts joined into one name: `["web-1", "node", "dc1", "consul."]` is
    /// `web-1.node.dc1.consul.`. `None` when a label is empty or over 63 bytes, or the name is
    /// over 255: such a name cannot be answered.
    pub fn join(parts: &[&str]) -> Option<WireName> {
        let mut bytes = Vec::with_capacity(parts.iter().map(|part| part.len() + 1).sum::<usize>() + 1);
        for part in parts {
            for label in part.strip_suffix('.').unwrap_or(part).split('.') {
                if label.is_empty() || label.len() > LABEL_BYTES_MAX {
                    return None;
                }
                bytes.push(label.len() as u8);
                bytes.extend_from_slice(label.as_bytes());
            }
        }
        bytes.push(0);
        (bytes.len() <= NAME_BYTES_MAX).then_some(WireName(bytes))
    }

    /// A name from its labels as decoded (so within the limits already).
    fn from_labels<'l>(labels: impl Iterator<Item = &'l [u8]>) -> WireName {
        let mut bytes = Vec::with_capacity(64);
        for label in labels {
            bytes.push(label.len() as u8);
            bytes.extend_from_slice(label);
        }
        bytes.push(0);
        WireName(bytes)
    }

    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// The data of an answer, as cairn answers: each record type it ever sends.
#[derive(Debug, Clone, Copy)]
pub enum Data<'a> {
    Address(IpAddr),
    /// Priority and weight are always 1, as Consul's.
    Srv {
        port: u16,
        target: &'a WireName,
    },
    Cname(&'a WireName),
    Ns(&'a WireName),
    /// One text, cut into character-strings of at most 255 bytes.
    Txt(&'a str),
}

impl Data<'_> {
    fn rtype(&self) -> u16 {
        match self {
            Data::Address(IpAddr::V4(_)) => TYPE_A,
            Data::Address(IpAddr::V6(_)) => TYPE_AAAA,
            Data::Srv { .. } => TYPE_SRV,
            Data::Cname(_) => TYPE_CNAME,
            Data::Ns(_) => TYPE_NS,
            Data::Txt(_) => TYPE_TXT,
        }
    }

    /// The target name glue can point at, and where in the RDATA it starts.
    fn target(&self) -> Option<(&WireName, usize)> {
        match self {
            Data::Srv { target, .. } => Some((target, 6)),
            Data::Ns(target) => Some((target, 0)),
            _ => None,
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        match *self {
            Data::Address(IpAddr::V4(v4)) => out.extend_from_slice(&v4.octets()),
            Data::Address(IpAddr::V6(v6)) => out.extend_from_slice(&v6.octets()),
            Data::Srv { port, target } => {
                out.extend_from_slice(&[0, 1, 0, 1]);
                out.extend_from_slice(&port.to_be_bytes());
                // RFC 2782: the target is never compressed.
                out.extend_from_slice(target.bytes());
            }
            Data::Cname(target) | Data::Ns(target) => out.extend_from_slice(target.bytes()),
            Data::Txt(text) => {
                let mut chunks = text.as_bytes().chunks(TXT_CHUNK_BYTES).peekable();
                if chunks.peek().is_none() {
                    out.push(0);
                }
                for chunk in chunks {
                    out.push(chunk.len() as u8);
                    out.extend_from_slice(chunk);
                }
            }
        }
    }
}

/// The SOA of the zone apex, for negative answers and `SOA` questions.
#[derive(Debug, Clone)]
pub struct Soa {
    pub apex: WireName,
    pub mname: WireName,
    pub rname: WireName,
    pub serial: u32,
    pub refresh: u32,
    pub retry: u32,
    pub expire: u32,
    pub minimum: u32,
}

impl Soa {
    fn write_rdata(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.mname.bytes());
        out.extend_from_slice(self.rname.bytes());
        for value in [self.serial, self.refresh, self.retry, self.expire, self.minimum] {
            out.extend_from_slice(&value.to_be_bytes());
        }
    }
}

/// Why an answer was not added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The answer limit (`udp_answer_limit`, `a_record_limit`) is reached: a deliberate subset.
    Limit,
    /// It does not fit in the transport's size with its glue: the response is cut.
    Full,
}

/// One response under construction, kept within `max_bytes` at every step.
#[derive(Debug)]
pub struct ReplyWriter {
    id: u16,
    /// The request's opcode, RD and CD bits, to echo.
    opcode: u8,
    recursion_desired: bool,
    checking_disabled: bool,
    recursion_available: bool,
    code: ResponseCode,
    /// TC when an answer was cut for size (UDP with `enable_truncate`).
    truncate_on_cut: bool,
    cut: bool,
    edns: bool,
    max_bytes: usize,
    answer_limit: usize,
    /// Name, type and class, as asked.
    question: Vec<u8>,
    answers: Vec<u8>,
    answer_count: u16,
    authority: Vec<u8>,
    authority_count: u16,
    glue: Vec<u8>,
    glue_count: u16,
}

impl ReplyWriter {
    /// An empty authoritative NOERROR response to `request`, within `request.max_bytes`.
    pub fn new(request: &Request) -> ReplyWriter {
        let mut question = WireName::from_labels(request.query.name().iter()).0;
        question.extend_from_slice(&u16::from(request.query.query_type()).to_be_bytes());
        question.extend_from_slice(&u16::from(request.query.query_class()).to_be_bytes());
        ReplyWriter {
            id: request.metadata.id,
            opcode: u8::from(request.metadata.op_code),
            recursion_desired: request.metadata.recursion_desired,
            checking_disabled: request.metadata.checking_disabled,
            recursion_available: false,
            code: ResponseCode::NoError,
            truncate_on_cut: false,
            cut: false,
            edns: request.edns.is_some(),
            max_bytes: usize::from(request.max_bytes),
            answer_limit: usize::MAX,
            question,
            answers: Vec::new(),
            answer_count: 0,
            authority: Vec::new(),
            authority_count: 0,
            glue: Vec::new(),
            glue_count: 0,
        }
    }

    pub fn set_code(&mut self, code: ResponseCode) {
        self.code = code;
    }

    pub fn set_recursion_available(&mut self, available: bool) {
        self.recursion_available = available;
    }

    /// Set TC when an answer is cut for size.
    pub fn set_truncate_on_cut(&mut self, truncate: bool) {
        self.truncate_on_cut = truncate;
    }

    /// At most `limit` answers; the ones past it are left out without TC.
    pub fn limit_answers(&mut self, limit: usize) {
        self.answer_limit = self.answer_limit.min(limit);
    }

    pub fn answer_count(&self) -> usize {
        usize::from(self.answer_count)
    }

    /// Answers left out for size so far.
    pub fn was_cut(&self) -> bool {
        self.cut
    }

    fn used(&self) -> usize {
        HEADER_BYTES
            + self.question.len()
            + self.answers.len()
            + self.authority.len()
            + self.glue.len()
            + if self.edns { OPT_BYTES } else { 0 }
    }

    /// Add an answer owned by the question's name, with `glue` (its target's address) in the
    /// additional section, both or neither: an SRV answer without its target's address costs the
    /// client another query.
    pub fn answer(&mut self, ttl: u32, data: Data<'_>, glue: Option<IpAddr>) -> Result<(), Refused> {
        if self.answer_count() >= self.answer_limit {
            return Err(Refused::Limit);
        }
        let start = self.answers.len();
        let used = self.used();
        let rdata_at = start + QUESTION_NAME_POINTER.len() + RR_FIXED_BYTES;
        write_record(&mut self.answers, &QUESTION_NAME_POINTER, data.rtype(), ttl, |out| data.write(out));
        let mut glue_bytes = 0;
        if let (Some(ip), Some((target, at))) = (glue, data.target()) {
            let target_offset = HEADER_BYTES + self.question.len() + rdata_at + at;
            let glue_start = self.glue.len();
            let pointer;
            let owner: &[u8] = if target_offset <= POINTER_OFFSET_MAX {
                pointer = [0xC0 | (target_offset >> 8) as u8, target_offset as u8];
                &pointer
            } else {
                target.bytes()
            };
            let rtype = Data::Address(ip).rtype();
            write_record(&mut self.glue, owner, rtype, ttl, |out| Data::Address(ip).write(out));
            glue_bytes = self.glue.len() - glue_start;
        }
        let added = self.answers.len() - start + glue_bytes;
        if used + added > self.max_bytes {
            self.answers.truncate(start);
            self.glue.truncate(self.glue.len() - glue_bytes);
            self.cut = true;
            return Err(Refused::Full);
        }
        self.answer_count += 1;
        if glue_bytes > 0 {
            self.glue_count += 1;
        }
        Ok(())
    }

    /// The zone's SOA in the authority section (negative answers: its minimum is how long they
    /// may be cached, RFC 2308). Left out, as a cut, if it does not fit.
    pub fn authority_soa(&mut self, soa: &Soa, ttl: u32) {
        let start = self.authority.len();
        let used = self.used();
        write_record(&mut self.authority, soa.apex.bytes(), TYPE_SOA, ttl, |out| soa.write_rdata(out));
        if used + self.authority.len() - start > self.max_bytes {
            self.authority.truncate(start);
            self.cut = true;
            return;
        }
        self.authority_count += 1;
    }

    /// The SOA as an answer (a `SOA` question at the apex).
    pub fn answer_soa(&mut self, soa: &Soa, ttl: u32) -> Result<(), Refused> {
        let start = self.answers.len();
        let used = self.used();
        write_record(&mut self.answers, &QUESTION_NAME_POINTER, TYPE_SOA, ttl, |out| soa.write_rdata(out));
        if used + self.answers.len() - start > self.max_bytes {
            self.answers.truncate(start);
            self.cut = true;
            return Err(Refused::Full);
        }
        self.answer_count += 1;
        Ok(())
    }

    /// The message's bytes.
    pub fn finish(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.used());
        out.extend_from_slice(&self.id.to_be_bytes());
        let truncated = self.cut && self.truncate_on_cut;
        let flags_high = 0x80 // QR: a response
            | (self.opcode & 0x0f) << 3
            | 0x04 // AA: we are the authority for our zone
            | u8::from(truncated) << 1
            | u8::from(self.recursion_desired);
        let flags_low = u8::from(self.recursion_available) << 7
            | u8::from(self.checking_disabled) << 4
            | (u16::from(self.code) & 0x0f) as u8;
        out.extend_from_slice(&[flags_high, flags_low]);
        let additional = self.glue_count + u16::from(self.edns);
        for count in [1, self.answer_count, self.authority_count, additional] {
            out.extend_from_slice(&count.to_be_bytes());
        }
        out.extend_from_slice(&self.question);
        out.extend_from_slice(&self.answers);
        out.extend_from_slice(&self.authority);
        out.extend_from_slice(&self.glue);
        if self.edns {
            // We take up to UDP_BYTES_MAX; extended RCODE 0, version 0, no flags.
            out.push(0);
            out.extend_from_slice(&TYPE_OPT.to_be_bytes());
            out.extend_from_slice(&UDP_BYTES_MAX.to_be_bytes());
            out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        }
        out
    }
}

/// Owner, TYPE, CLASS IN, TTL, RDLENGTH and the RDATA `rdata` writes.
fn write_record(out: &mut Vec<u8>, owner: &[u8], rtype: u16, ttl: u32, rdata: impl FnOnce(&mut Vec<u8>)) {
    out.extend_from_slice(owner);
    out.extend_from_slice(&rtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out.extend_from_slice(&ttl.to_be_bytes());
    let length_at = out.len();
    out.extend_from_slice(&[0, 0]);
    rdata(out);
    // A longer RDATA (a huge TXT) is also longer than any message: the caller's size check
    // removes the record, so the saturated length is never sent.
    let length = u16::try_from(out.len() - length_at - 2).unwrap_or(u16::MAX);
    out[length_at..length_at + 2].copy_from_slice(&length.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names are joined from dotted parts; what cannot be a name is refused.
    #[test]
    fn names_join_and_refuse() {
        let name = WireName::join(&["web-1", "node", "dc1", "consul."]).unwrap();
        assert_eq!(name.bytes(), b"\x05web-1\x04node\x03dc1\x06consul\x00");
        assert_eq!(WireName::join(&["a.b"]).unwrap().bytes(), b"\x01a\x01b\x00");
        assert_eq!(WireName::join(&["", "consul."]), None, "an empty label");
        assert_eq!(WireName::join(&["a..b"]), None, "an empty label inside");
        assert_eq!(WireName::join(&[&"x".repeat(64)]), None, "a label over 63 bytes");
        assert!(WireName::join(&[&"x".repeat(63)]).is_some());
        let long = vec!["x".repeat(63); 4].join(".");
        assert_eq!(WireName::join(&[&long]), None, "a name over 255 bytes");
    }

    /// A TXT text over 255 bytes is cut into character-strings; an empty one is one empty string.
    #[test]
    fn txt_texts_are_chunked() {
        let mut out = Vec::new();
        Data::Txt(&"a".repeat(300)).write(&mut out);
        assert_eq!((out[0], out[256]), (255, 45));
        assert_eq!(out.len(), 2 + 300);
        out.clear();
        Data::Txt("").write(&mut out);
        assert_eq!(out, [0]);
    }
}
