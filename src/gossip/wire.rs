//! The gossip wire format, written by hand: versioned, length-bounded, and total on any input.
//!
//! A datagram (after decryption, see `keyring`) is
//!
//! ```text
//! [version: 0xC1][kind][body...]
//! ```
//!
//! The version byte's high nibble is a magic (`0xC`, "cairn") and its low nibble the format
//! version, so a future version is told apart from noise and refused with
//! [`WireError::UnsupportedVersion`]. Kinds:
//! - `0x01` SWIM: the body is foca's datagram, whose parts are encoded by [`WireCodec`]:
//!   a header, then (for messages that piggyback) a `u16` count of member updates and the
//!   updates, then custom broadcasts, each framed by foca as `[u16 length][item]`; an item is
//!   a [`Broadcast`], `[tag][fields]`.
//! - `0x02` reply: a [`Reply`] sent straight back to the origin of a query broadcast
//!   (Serf-query style), `[tag][fields]`.
//! - `0x03` state sync: never a datagram. A [`StateSync`], one side's whole member list, sent
//!   over TCP on the LAN port by push-pull (see `sync`): `[u32 count][member...]`, each member
//!   encoded as in a SWIM update. On the stream a frame is `[u32 length][frame]`, the frame
//!   sealed like a datagram when encryption is on; at most [`MAX_SYNC_FRAME_BYTES`] and
//!   [`MAX_SYNC_MEMBERS`] members, both checked before anything is allocated for them.
//!
//! Every integer is big-endian. Every string is `[u8 length][UTF-8 bytes]` with its own bound
//! ([`MAX_NAME_BYTES`] and friends), every count is bounded ([`MAX_UPDATES_PER_PACKET`],
//! [`MAX_BROADCASTS_PER_PACKET`]) and a datagram is at most [`MAX_PACKET_BYTES`], checked before
//! anything is read: decoding allocates at most a few kilobytes per packet, never panics, and
//! rejects what it does not understand with a typed [`WireError`]. Broadcast tags this version
//! does not know are kept as [`Broadcast::Unknown`] so newer agents can add kinds without older
//! ones dropping whole packets.
//!
//! [`decode_packet`] and [`encode_packet`] are the pure entry points for datagrams,
//! [`decode_sync`] and [`encode_sync`] for state-sync frames (the fuzz target drives both);
//! `decode_packet(&encode_packet(p)?)? == p` for every packet `decode_packet` returns, and the same
//! for frames.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use bytes::{Buf, BufMut};
use foca::{Codec, Header, Member, Message, State};

use super::identity::NodeIdentity;
use super::keyring::{GossipKey, MAX_KEYS};
use super::{KeyringOp, MemberMeta, Role};

/// The largest datagram sent or accepted, sealed or not: below a 1500-byte Ethernet MTU with room
/// for IP and UDP headers (and IPv6's larger one).
pub const MAX_PACKET_BYTES: usize = 1400;
/// What sealing adds to a plaintext: `[version][12-byte nonce]...[16-byte tag]` (see `keyring`).
pub const SEAL_OVERHEAD_BYTES: usize = 1 + 12 + 16;
/// The envelope before every body: version and kind.
pub const ENVELOPE_BYTES: usize = 2;
/// The largest SWIM body foca may produce or consume (its `max_packet_size`), so that a body in
/// its envelope, sealed, still fits in [`MAX_PACKET_BYTES`].
pub const MAX_SWIM_BODY_BYTES: usize = MAX_PACKET_BYTES - SEAL_OVERHEAD_BYTES - ENVELOPE_BYTES;

/// Node names: Consul allows 128 characters (DNS labels are shorter; the catalog checks that).
pub const MAX_NAME_BYTES: usize = 128;
pub const MAX_DATACENTER_BYTES: usize = 64;
/// Node IDs are UUIDs (36 characters); a little slack for other formats.
pub const MAX_NODE_ID_BYTES: usize = 64;
pub const MAX_BUILD_BYTES: usize = 32;
/// Member updates in one datagram. The smallest encoded member is about 25 bytes, so a full
/// datagram holds fewer than this; a count above it is a lie.
pub const MAX_UPDATES_PER_PACKET: usize = 64;
/// Custom broadcasts in one datagram (each at least three bytes with its length prefix).
pub const MAX_BROADCASTS_PER_PACKET: usize = 64;
/// An error message in a reply.
pub const MAX_ERROR_BYTES: usize = 200;
/// Members in one state-sync frame: a whole cluster, with room to spare (memberlist's push-pull
/// has no cap; Serf pools of tens of thousands exist, 64 Ki is past any we know of).
pub const MAX_SYNC_MEMBERS: usize = 64 * 1024;
/// The largest state-sync frame in plaintext, envelope included. 64 Ki members of typical size
/// (about 100 bytes) fit; maximal names and metadata for all of them would not, and such a state
/// is refused by the encoder rather than sent in part.
pub const MAX_SYNC_FRAME_BYTES: usize = 16 * 1024 * 1024;
/// The smallest member encoding: empty name and metadata strings, an IPv4 address. Counts that
/// claim more members than the bytes left could hold are refused before allocating for them.
const MIN_MEMBER_BYTES: usize = 1 + 7 + 6 + 8 + 2 + 1;

/// Format version 1, with the `0xC` magic in the high nibble.
pub const WIRE_VERSION: u8 = 0xC1;
const MAGIC_NIBBLE: u8 = 0xC0;

/// What a datagram carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A foca datagram.
    Swim = 0x01,
    /// An answer to a query broadcast.
    Reply = 0x02,
    /// A push-pull state sync; TCP only.
    Sync = 0x03,
}

impl Kind {
    fn from_byte(byte: u8) -> Result<Kind, WireError> {
        match byte {
            0x01 => Ok(Kind::Swim),
            0x02 => Ok(Kind::Reply),
            0x03 => Ok(Kind::Sync),
            other => Err(WireError::UnknownKind(other)),
        }
    }
}

/// Why bytes were refused. Decoding errors leave nothing behind: the packet is dropped whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("packet of {len} bytes exceeds the {max}-byte limit")]
    Oversize { len: usize, max: usize },
    #[error("packet ends early")]
    Truncated,
    #[error("not a cairn gossip packet (first byte {0:#04x})")]
    BadMagic(u8),
    #[error("gossip format version {0:#04x} is not supported (this agent speaks {WIRE_VERSION:#04x})")]
    UnsupportedVersion(u8),
    #[error("unknown packet kind {0:#04x}")]
    UnknownKind(u8),
    /// A kind that exists but not where it was found (a state sync in a datagram, or the reverse).
    #[error("a {found:?} body where a {expected} was expected")]
    WrongKind { found: Kind, expected: &'static str },
    #[error("unknown {what} tag {tag:#04x}")]
    UnknownTag { what: &'static str, tag: u8 },
    #[error("{field} is {len} bytes, more than the {max} allowed")]
    TooLong { field: &'static str, len: usize, max: usize },
    #[error("{field} is not UTF-8")]
    InvalidUtf8 { field: &'static str },
    #[error("{count} {what} in one packet, more than the {max} allowed")]
    TooMany { what: &'static str, count: usize, max: usize },
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    #[error("gossip key of {len} bytes")]
    BadKey { len: usize },
    /// Encoding only: the item does not fit in the space foca left for it.
    #[error("no room in the packet for this item")]
    NoRoom,
}

/// A decoded datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Swim(SwimPacket),
    Reply(Reply),
}

/// A foca datagram, decoded the way foca reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwimPacket {
    pub header: Header<NodeIdentity>,
    /// Piggybacked member updates (the active roster for a `Feed`).
    pub updates: Vec<Member<NodeIdentity>>,
    pub broadcasts: Vec<Broadcast>,
}

/// Our application messages, disseminated through foca's custom broadcasts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Broadcast {
    /// `name` at `generation` is leaving (or was force-left): when the cluster declares that
    /// identity down it is `Left`, not `Failed`.
    LeaveIntent { name: String, generation: u64 },
    /// Apply a keyring operation and answer the origin (`cairn keyring`).
    KeyringQuery(KeyringQuery),
    /// A broadcast a newer agent understands and this one does not; ignored, not relayed.
    Unknown { tag: u8, body: Vec<u8> },
}

/// A keyring operation for every member; each applies it and replies to `reply_to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyringQuery {
    /// Random; with `origin` it identifies the query.
    pub id: u64,
    /// The node name of the agent that asked.
    pub origin: String,
    pub reply_to: SocketAddr,
    pub op: KeyringOp,
}

/// One side's whole member list in a push-pull exchange (itself included).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StateSync {
    pub members: Vec<Member<NodeIdentity>>,
}

/// A direct answer to a query broadcast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Keyring(KeyringResponse),
}

/// One member's answer to a [`KeyringQuery`]: its keys afterwards (primary first), or why the
/// operation failed there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyringResponse {
    pub id: u64,
    pub node: String,
    pub result: Result<Vec<GossipKey>, String>,
}

const TAG_LEAVE_INTENT: u8 = 0x01;
const TAG_KEYRING_QUERY: u8 = 0x02;
const KNOWN_BROADCAST_TAGS: [u8; 2] = [TAG_LEAVE_INTENT, TAG_KEYRING_QUERY];
const TAG_REPLY_KEYRING: u8 = 0x01;

// ---------------------------------------------------------------------------------------------
// Entry points

/// Decode one plaintext datagram.
pub fn decode_packet(bytes: &[u8]) -> Result<Packet, WireError> {
    let (kind, body) = split_envelope(bytes)?;
    match kind {
        Kind::Swim => decode_swim_body(body).map(Packet::Swim),
        Kind::Reply => decode_reply(body).map(Packet::Reply),
        found @ Kind::Sync => Err(WireError::WrongKind { found, expected: "datagram" }),
    }
}

/// Encode one plaintext datagram; fails if it would exceed [`MAX_PACKET_BYTES`] or break a bound.
pub fn encode_packet(packet: &Packet) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::with_capacity(MAX_PACKET_BYTES);
    match packet {
        Packet::Swim(swim) => {
            put_envelope(&mut out, Kind::Swim);
            encode_swim_body(swim, &mut out)?;
        }
        Packet::Reply(reply) => {
            put_envelope(&mut out, Kind::Reply);
            write_reply(&mut out, reply)?;
        }
    }
    if out.len() > MAX_PACKET_BYTES {
        return Err(WireError::Oversize { len: out.len(), max: MAX_PACKET_BYTES });
    }
    Ok(out)
}

/// Decode one plaintext state-sync frame (without its stream length prefix).
pub fn decode_sync(bytes: &[u8]) -> Result<StateSync, WireError> {
    let (kind, body) = split_envelope_within(bytes, MAX_SYNC_FRAME_BYTES)?;
    if kind != Kind::Sync {
        return Err(WireError::WrongKind { found: kind, expected: "state sync" });
    }
    let mut r = Reader::new(body);
    let count = usize::try_from(r.u32()?).unwrap_or(usize::MAX);
    if count > MAX_SYNC_MEMBERS {
        return Err(WireError::TooMany { what: "members", count, max: MAX_SYNC_MEMBERS });
    }
    if count.saturating_mul(MIN_MEMBER_BYTES) > r.remaining() {
        return Err(WireError::Truncated);
    }
    let mut members = Vec::with_capacity(count);
    for _ in 0..count {
        members.push(read_member(&mut r)?);
    }
    r.finish()?;
    Ok(StateSync { members })
}

/// Encode one plaintext state-sync frame; fails, sending nothing, over either bound.
pub fn encode_sync(sync: &StateSync) -> Result<Vec<u8>, WireError> {
    let count = sync.members.len();
    if count > MAX_SYNC_MEMBERS {
        return Err(WireError::TooMany { what: "members", count, max: MAX_SYNC_MEMBERS });
    }
    let mut out = Vec::new();
    put_envelope(&mut out, Kind::Sync);
    out.put_u32(count as u32);
    for member in &sync.members {
        write_member(&mut out, member)?;
        if out.len() > MAX_SYNC_FRAME_BYTES {
            return Err(WireError::Oversize { len: out.len(), max: MAX_SYNC_FRAME_BYTES });
        }
    }
    Ok(out)
}

/// Check the size and envelope of a datagram and return its kind and body.
pub fn split_envelope(bytes: &[u8]) -> Result<(Kind, &[u8]), WireError> {
    split_envelope_within(bytes, MAX_PACKET_BYTES)
}

fn split_envelope_within(bytes: &[u8], max: usize) -> Result<(Kind, &[u8]), WireError> {
    if bytes.len() > max {
        return Err(WireError::Oversize { len: bytes.len(), max });
    }
    let [version, kind, body @ ..] = bytes else { return Err(WireError::Truncated) };
    if *version != WIRE_VERSION {
        return Err(if version & 0xF0 == MAGIC_NIBBLE {
            WireError::UnsupportedVersion(*version)
        } else {
            WireError::BadMagic(*version)
        });
    }
    Ok((Kind::from_byte(*kind)?, body))
}

/// Write the envelope for a body of `kind`.
pub fn put_envelope(out: &mut Vec<u8>, kind: Kind) {
    out.push(WIRE_VERSION);
    out.push(kind as u8);
}

/// Decode one custom broadcast item (the bytes inside foca's length prefix).
pub fn decode_broadcast(bytes: &[u8]) -> Result<Broadcast, WireError> {
    let mut r = Reader::new(bytes);
    let tag = r.u8()?;
    let broadcast = match tag {
        TAG_LEAVE_INTENT => {
            Broadcast::LeaveIntent { name: r.string("node name", MAX_NAME_BYTES)?, generation: r.u64()? }
        }
        TAG_KEYRING_QUERY => Broadcast::KeyringQuery(KeyringQuery {
            id: r.u64()?,
            origin: r.string("node name", MAX_NAME_BYTES)?,
            reply_to: read_addr(&mut r)?,
            op: read_keyring_op(&mut r)?,
        }),
        // Bounded by the item, itself bounded by the datagram.
        tag => Broadcast::Unknown { tag, body: r.rest().to_vec() },
    };
    r.finish()?;
    Ok(broadcast)
}

/// Encode one custom broadcast item.
pub fn encode_broadcast(broadcast: &Broadcast) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::new();
    match broadcast {
        Broadcast::LeaveIntent { name, generation } => {
            out.push(TAG_LEAVE_INTENT);
            put_string(&mut out, "node name", name, MAX_NAME_BYTES)?;
            out.extend_from_slice(&generation.to_be_bytes());
        }
        Broadcast::KeyringQuery(query) => {
            out.push(TAG_KEYRING_QUERY);
            out.put_u64(query.id);
            put_string(&mut out, "node name", &query.origin, MAX_NAME_BYTES)?;
            write_addr(&mut out, query.reply_to);
            write_keyring_op(&mut out, &query.op);
        }
        Broadcast::Unknown { tag, body } => {
            if KNOWN_BROADCAST_TAGS.contains(tag) {
                return Err(WireError::Malformed("unknown broadcast with a known tag"));
            }
            out.push(*tag);
            out.extend_from_slice(body);
        }
    }
    if out.len() > MAX_SWIM_BODY_BYTES {
        return Err(WireError::Oversize { len: out.len(), max: MAX_SWIM_BODY_BYTES });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// SWIM bodies, read exactly as foca reads them (`Foca::handle_data`), so that what this decoder
// accepts is what foca would act on.

fn decode_swim_body(body: &[u8]) -> Result<SwimPacket, WireError> {
    let mut r = Reader::new(body);
    let header = read_header(&mut r)?;
    let remaining = r.remaining();
    if remaining == 1 {
        return Err(WireError::Malformed("single trailing byte"));
    }
    if header.message == Message::Announce && remaining > 0 {
        return Err(WireError::Malformed("announce with a payload"));
    }
    let mut updates = Vec::new();
    if remaining >= 2 && header.message != Message::Broadcast {
        let count = usize::from(r.u16()?);
        if count > MAX_UPDATES_PER_PACKET {
            return Err(WireError::TooMany { what: "member updates", count, max: MAX_UPDATES_PER_PACKET });
        }
        updates.reserve_exact(count);
        for _ in 0..count {
            updates.push(read_member(&mut r)?);
        }
    }
    let mut broadcasts = Vec::new();
    if r.remaining() > 0 && r.remaining() < 3 {
        return Err(WireError::Malformed("truncated broadcast"));
    }
    while r.remaining() > 2 {
        let len = usize::from(r.u16()?);
        if len == 0 {
            return Err(WireError::Malformed("empty broadcast"));
        }
        if broadcasts.len() == MAX_BROADCASTS_PER_PACKET {
            let count = broadcasts.len() + 1;
            return Err(WireError::TooMany { what: "broadcasts", count, max: MAX_BROADCASTS_PER_PACKET });
        }
        broadcasts.push(decode_broadcast(r.bytes(len)?)?);
    }
    if r.remaining() > 0 {
        return Err(WireError::Malformed("trailing bytes"));
    }
    Ok(SwimPacket { header, updates, broadcasts })
}

fn encode_swim_body(packet: &SwimPacket, out: &mut Vec<u8>) -> Result<(), WireError> {
    let message = &packet.header.message;
    write_header(out, &packet.header)?;
    match message {
        Message::Announce if !packet.updates.is_empty() || !packet.broadcasts.is_empty() => {
            return Err(WireError::Malformed("announce with a payload"));
        }
        Message::Announce => return Ok(()),
        Message::Broadcast if !packet.updates.is_empty() => {
            return Err(WireError::Malformed("broadcast message with member updates"));
        }
        Message::Broadcast => {}
        _ => {
            let count = packet.updates.len();
            if count > MAX_UPDATES_PER_PACKET {
                return Err(WireError::TooMany { what: "member updates", count, max: MAX_UPDATES_PER_PACKET });
            }
            out.put_u16(count as u16);
            for update in &packet.updates {
                write_member(out, update)?;
            }
        }
    }
    if packet.broadcasts.len() > MAX_BROADCASTS_PER_PACKET {
        let count = packet.broadcasts.len();
        return Err(WireError::TooMany { what: "broadcasts", count, max: MAX_BROADCASTS_PER_PACKET });
    }
    for broadcast in &packet.broadcasts {
        let item = encode_broadcast(broadcast)?;
        out.put_u16(item.len() as u16);
        out.extend_from_slice(&item);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Replies and keyring operations

fn decode_reply(body: &[u8]) -> Result<Reply, WireError> {
    let mut r = Reader::new(body);
    let reply = match r.u8()? {
        TAG_REPLY_KEYRING => {
            let id = r.u64()?;
            let node = r.string("node name", MAX_NAME_BYTES)?;
            let result = match r.u8()? {
                0 => {
                    let count = usize::from(r.u8()?);
                    if count == 0 || count > MAX_KEYS {
                        return Err(WireError::TooMany { what: "keys", count, max: MAX_KEYS });
                    }
                    let mut keys = Vec::with_capacity(count);
                    for _ in 0..count {
                        keys.push(read_key(&mut r)?);
                    }
                    Ok(keys)
                }
                1 => Err(r.string("error", MAX_ERROR_BYTES)?),
                tag => return Err(WireError::UnknownTag { what: "keyring result", tag }),
            };
            Reply::Keyring(KeyringResponse { id, node, result })
        }
        tag => return Err(WireError::UnknownTag { what: "reply", tag }),
    };
    r.finish()?;
    Ok(reply)
}

fn write_reply(out: &mut Vec<u8>, reply: &Reply) -> Result<(), WireError> {
    match reply {
        Reply::Keyring(response) => {
            out.push(TAG_REPLY_KEYRING);
            out.put_u64(response.id);
            put_string(out, "node name", &response.node, MAX_NAME_BYTES)?;
            match &response.result {
                Ok(keys) => {
                    if keys.is_empty() || keys.len() > MAX_KEYS {
                        return Err(WireError::TooMany { what: "keys", count: keys.len(), max: MAX_KEYS });
                    }
                    out.push(0);
                    out.push(keys.len() as u8);
                    for key in keys {
                        write_key(out, key);
                    }
                }
                Err(message) => {
                    out.push(1);
                    put_string(out, "error", message, MAX_ERROR_BYTES)?;
                }
            }
        }
    }
    Ok(())
}

fn write_keyring_op(out: &mut Vec<u8>, op: &KeyringOp) {
    match op {
        KeyringOp::List => out.push(0),
        KeyringOp::Install(key) => {
            out.push(1);
            write_key(out, key);
        }
        KeyringOp::Use(key) => {
            out.push(2);
            write_key(out, key);
        }
        KeyringOp::Remove(key) => {
            out.push(3);
            write_key(out, key);
        }
    }
}

fn read_keyring_op(r: &mut Reader<'_>) -> Result<KeyringOp, WireError> {
    Ok(match r.u8()? {
        0 => KeyringOp::List,
        1 => KeyringOp::Install(read_key(r)?),
        2 => KeyringOp::Use(read_key(r)?),
        3 => KeyringOp::Remove(read_key(r)?),
        tag => return Err(WireError::UnknownTag { what: "keyring operation", tag }),
    })
}

fn write_key(out: &mut Vec<u8>, key: &GossipKey) {
    out.push(key.as_bytes().len() as u8);
    out.extend_from_slice(key.as_bytes());
}

fn read_key(r: &mut Reader<'_>) -> Result<GossipKey, WireError> {
    let len = usize::from(r.u8()?);
    // Checked before reading: at most 32 bytes are copied.
    if !matches!(len, 16 | 24 | 32) {
        return Err(WireError::BadKey { len });
    }
    GossipKey::from_bytes(r.bytes(len)?).map_err(|_| WireError::BadKey { len })
}

// ---------------------------------------------------------------------------------------------
// foca's codec: the same encodings, one item at a time.

/// The [`Codec`] foca encodes headers and member updates with.
#[derive(Debug, Clone, Copy, Default)]
pub struct WireCodec;

impl Codec<NodeIdentity> for WireCodec {
    type Error = WireError;

    fn encode_header(&mut self, header: &Header<NodeIdentity>, buf: impl BufMut) -> Result<(), WireError> {
        let mut item = Vec::new();
        write_header(&mut item, header)?;
        put_all_or_nothing(buf, &item)
    }

    fn decode_header(&mut self, mut buf: impl Buf) -> Result<Header<NodeIdentity>, WireError> {
        let mut r = Reader::new(buf.chunk());
        let header = read_header(&mut r)?;
        let used = r.position();
        buf.advance(used);
        Ok(header)
    }

    fn encode_member(&mut self, member: &Member<NodeIdentity>, buf: impl BufMut) -> Result<(), WireError> {
        let mut item = Vec::new();
        write_member(&mut item, member)?;
        put_all_or_nothing(buf, &item)
    }

    fn decode_member(&mut self, mut buf: impl Buf) -> Result<Member<NodeIdentity>, WireError> {
        let mut r = Reader::new(buf.chunk());
        let member = read_member(&mut r)?;
        let used = r.position();
        buf.advance(used);
        Ok(member)
    }
}

/// foca requires that an item that does not fit leaves the buffer untouched.
fn put_all_or_nothing(mut buf: impl BufMut, item: &[u8]) -> Result<(), WireError> {
    if buf.remaining_mut() < item.len() {
        return Err(WireError::NoRoom);
    }
    buf.put_slice(item);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Items

const MSG_PING: u8 = 1;
const MSG_ACK: u8 = 2;
const MSG_PING_REQ: u8 = 3;
const MSG_INDIRECT_PING: u8 = 4;
const MSG_INDIRECT_ACK: u8 = 5;
const MSG_FORWARDED_ACK: u8 = 6;
const MSG_ANNOUNCE: u8 = 7;
const MSG_FEED: u8 = 8;
const MSG_GOSSIP: u8 = 9;
const MSG_BROADCAST: u8 = 10;
const MSG_TURN_UNDEAD: u8 = 11;

fn write_header(out: &mut Vec<u8>, header: &Header<NodeIdentity>) -> Result<(), WireError> {
    write_identity(out, &header.src)?;
    out.put_u16(header.src_incarnation);
    write_identity(out, &header.dst)?;
    match &header.message {
        Message::Ping(n) => out.extend_from_slice(&[MSG_PING, *n]),
        Message::Ack(n) => out.extend_from_slice(&[MSG_ACK, *n]),
        Message::PingReq { target, probe_number } => write_probe(out, MSG_PING_REQ, target, *probe_number)?,
        Message::IndirectPing { origin, probe_number } => write_probe(out, MSG_INDIRECT_PING, origin, *probe_number)?,
        Message::IndirectAck { target, probe_number } => write_probe(out, MSG_INDIRECT_ACK, target, *probe_number)?,
        Message::ForwardedAck { origin, probe_number } => write_probe(out, MSG_FORWARDED_ACK, origin, *probe_number)?,
        Message::Announce => out.push(MSG_ANNOUNCE),
        Message::Feed => out.push(MSG_FEED),
        Message::Gossip => out.push(MSG_GOSSIP),
        Message::Broadcast => out.push(MSG_BROADCAST),
        Message::TurnUndead => out.push(MSG_TURN_UNDEAD),
    }
    Ok(())
}

fn write_probe(out: &mut Vec<u8>, tag: u8, who: &NodeIdentity, probe_number: u8) -> Result<(), WireError> {
    out.push(tag);
    write_identity(out, who)?;
    out.push(probe_number);
    Ok(())
}

fn read_header(r: &mut Reader<'_>) -> Result<Header<NodeIdentity>, WireError> {
    let src = read_identity(r)?;
    let src_incarnation = r.u16()?;
    let dst = read_identity(r)?;
    let message = match r.u8()? {
        MSG_PING => Message::Ping(r.u8()?),
        MSG_ACK => Message::Ack(r.u8()?),
        MSG_PING_REQ => Message::PingReq { target: read_identity(r)?, probe_number: r.u8()? },
        MSG_INDIRECT_PING => Message::IndirectPing { origin: read_identity(r)?, probe_number: r.u8()? },
        MSG_INDIRECT_ACK => Message::IndirectAck { target: read_identity(r)?, probe_number: r.u8()? },
        MSG_FORWARDED_ACK => Message::ForwardedAck { origin: read_identity(r)?, probe_number: r.u8()? },
        MSG_ANNOUNCE => Message::Announce,
        MSG_FEED => Message::Feed,
        MSG_GOSSIP => Message::Gossip,
        MSG_BROADCAST => Message::Broadcast,
        MSG_TURN_UNDEAD => Message::TurnUndead,
        tag => return Err(WireError::UnknownTag { what: "message", tag }),
    };
    Ok(Header { src, src_incarnation, dst, message })
}

fn write_member(out: &mut Vec<u8>, member: &Member<NodeIdentity>) -> Result<(), WireError> {
    write_identity(out, member.id())?;
    out.put_u16(member.incarnation());
    out.push(match member.state() {
        State::Alive => 0,
        State::Suspect => 1,
        State::Down => 2,
    });
    Ok(())
}

fn read_member(r: &mut Reader<'_>) -> Result<Member<NodeIdentity>, WireError> {
    let id = read_identity(r)?;
    let incarnation = r.u16()?;
    let state = match r.u8()? {
        0 => State::Alive,
        1 => State::Suspect,
        2 => State::Down,
        tag => return Err(WireError::UnknownTag { what: "member state", tag }),
    };
    Ok(Member::new(id, incarnation, state))
}

fn write_identity(out: &mut Vec<u8>, id: &NodeIdentity) -> Result<(), WireError> {
    put_string(out, "node name", id.name(), MAX_NAME_BYTES)?;
    write_addr(out, id.addr());
    write_meta(out, id.meta())?;
    out.put_u64(id.generation());
    Ok(())
}

fn read_identity(r: &mut Reader<'_>) -> Result<NodeIdentity, WireError> {
    let name = r.string("node name", MAX_NAME_BYTES)?;
    let addr = read_addr(r)?;
    let meta = read_meta(r)?;
    let generation = r.u64()?;
    Ok(NodeIdentity::new(name, addr, meta, generation))
}

/// Only the IP and port travel: an IPv6 scope or flow label means nothing to the receiver.
fn write_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.put_u16(addr.port());
}

fn read_addr(r: &mut Reader<'_>) -> Result<SocketAddr, WireError> {
    let ip = match r.u8()? {
        4 => IpAddr::V4(Ipv4Addr::from(r.array::<4>()?)),
        6 => IpAddr::V6(Ipv6Addr::from(r.array::<16>()?)),
        tag => return Err(WireError::UnknownTag { what: "address family", tag }),
    };
    Ok(SocketAddr::new(ip, r.u16()?))
}

fn write_meta(out: &mut Vec<u8>, meta: &MemberMeta) -> Result<(), WireError> {
    out.push(match meta.role {
        Role::Server => 0,
        Role::Client => 1,
    });
    put_string(out, "datacenter", &meta.datacenter, MAX_DATACENTER_BYTES)?;
    put_string(out, "node id", &meta.node_id, MAX_NODE_ID_BYTES)?;
    match meta.server_port {
        None => out.push(0),
        Some(port) => {
            out.push(1);
            out.put_u16(port);
        }
    }
    put_string(out, "build", &meta.build, MAX_BUILD_BYTES)?;
    out.push(meta.protocol);
    Ok(())
}

fn read_meta(r: &mut Reader<'_>) -> Result<MemberMeta, WireError> {
    let role = match r.u8()? {
        0 => Role::Server,
        1 => Role::Client,
        tag => return Err(WireError::UnknownTag { what: "role", tag }),
    };
    let datacenter = r.string("datacenter", MAX_DATACENTER_BYTES)?;
    let node_id = r.string("node id", MAX_NODE_ID_BYTES)?;
    let server_port = match r.u8()? {
        0 => None,
        1 => Some(r.u16()?),
        tag => return Err(WireError::UnknownTag { what: "server port flag", tag }),
    };
    let build = r.string("build", MAX_BUILD_BYTES)?;
    let protocol = r.u8()?;
    Ok(MemberMeta { role, datacenter, node_id, server_port, build, protocol })
}

/// Check that `value` fits the bound of `field`.
pub fn check_len(field: &'static str, value: &str, max: usize) -> Result<(), WireError> {
    if value.len() > max {
        return Err(WireError::TooLong { field, len: value.len(), max });
    }
    Ok(())
}

fn put_string(out: &mut Vec<u8>, field: &'static str, value: &str, max: usize) -> Result<(), WireError> {
    check_len(field, value, max)?;
    debug_assert!(max <= usize::from(u8::MAX));
    out.push(value.len() as u8);
    out.extend_from_slice(value.as_bytes());
    Ok(())
}

/// A cursor over untrusted bytes: every read checks what is left.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, pos: 0 }
    }

    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    pub(crate) fn bytes(&mut self, len: usize) -> Result<&'a [u8], WireError> {
        if len > self.remaining() {
            return Err(WireError::Truncated);
        }
        let slice = &self.bytes[self.pos..self.pos + len];
        self.pos += len;
        Ok(slice)
    }

    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let slice = &self.bytes[self.pos..];
        self.pos = self.bytes.len();
        slice
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// A `[u8 length][UTF-8]` string of at most `max` bytes; the bound is checked before copying.
    pub(crate) fn string(&mut self, field: &'static str, max: usize) -> Result<String, WireError> {
        let len = usize::from(self.u8()?);
        if len > max {
            return Err(WireError::TooLong { field, len, max });
        }
        let bytes = self.bytes(len)?;
        let s = std::str::from_utf8(bytes).map_err(|_| WireError::InvalidUtf8 { field })?;
        Ok(s.to_owned())
    }

    /// Succeeds only if every byte was read.
    pub(crate) fn finish(&self) -> Result<(), WireError> {
        if self.remaining() > 0 {
            return Err(WireError::Malformed("trailing bytes"));
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod strategies {
    //! proptest generators for the wire types, shared with other modules' tests.

    use super::*;
    use proptest::prelude::*;

    pub fn meta() -> impl Strategy<Value = MemberMeta> {
        (any::<bool>(), "[a-z0-9-]{0,10}", "[a-f0-9-]{0,36}", any::<Option<u16>>(), "[0-9.a-z-]{0,12}", any::<u8>())
            .prop_map(|(server, datacenter, node_id, server_port, build, protocol)| MemberMeta {
                role: if server { Role::Server } else { Role::Client },
                datacenter,
                node_id,
                server_port,
                build,
                protocol,
            })
    }

    pub fn addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
            (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((Ipv6Addr::from(ip), port))),
        ]
    }

    /// Names include multi-byte characters, so byte bounds (not character counts) are exercised.
    pub fn identity() -> impl Strategy<Value = NodeIdentity> {
        ("[a-zA-Z0-9.é-]{1,24}", addr(), meta(), any::<u64>())
            .prop_map(|(name, addr, meta, generation)| NodeIdentity::new(name, addr, meta, generation))
    }

    pub fn member() -> impl Strategy<Value = Member<NodeIdentity>> {
        (identity(), any::<u16>(), prop_oneof![Just(State::Alive), Just(State::Suspect), Just(State::Down)])
            .prop_map(|(id, incarnation, state)| Member::new(id, incarnation, state))
    }

    pub fn message() -> impl Strategy<Value = Message<NodeIdentity>> {
        prop_oneof![
            any::<u8>().prop_map(Message::Ping),
            any::<u8>().prop_map(Message::Ack),
            (identity(), any::<u8>()).prop_map(|(target, probe_number)| Message::PingReq { target, probe_number }),
            (identity(), any::<u8>()).prop_map(|(origin, probe_number)| Message::IndirectPing { origin, probe_number }),
            (identity(), any::<u8>()).prop_map(|(target, probe_number)| Message::IndirectAck { target, probe_number }),
            (identity(), any::<u8>()).prop_map(|(origin, probe_number)| Message::ForwardedAck { origin, probe_number }),
            Just(Message::Announce),
            Just(Message::Feed),
            Just(Message::Gossip),
            Just(Message::Broadcast),
            Just(Message::TurnUndead),
        ]
    }

    pub fn header() -> impl Strategy<Value = Header<NodeIdentity>> {
        (identity(), any::<u16>(), identity(), message()).prop_map(|(src, src_incarnation, dst, message)| Header {
            src,
            src_incarnation,
            dst,
            message,
        })
    }

    pub fn key() -> impl Strategy<Value = GossipKey> {
        (prop_oneof![Just(16usize), Just(24), Just(32)], any::<[u8; 32]>())
            .prop_map(|(len, bytes)| GossipKey::from_bytes(&bytes[..len]).unwrap())
    }

    pub fn keyring_op() -> impl Strategy<Value = KeyringOp> {
        prop_oneof![
            Just(KeyringOp::List),
            key().prop_map(KeyringOp::Install),
            key().prop_map(KeyringOp::Use),
            key().prop_map(KeyringOp::Remove),
        ]
    }

    pub fn reply() -> impl Strategy<Value = Reply> {
        let result =
            prop_oneof![proptest::collection::vec(key(), 1..=MAX_KEYS).prop_map(Ok), "[a-z é]{0,60}".prop_map(Err),];
        (any::<u64>(), "[a-z0-9-]{1,40}", result)
            .prop_map(|(id, node, result)| Reply::Keyring(KeyringResponse { id, node, result }))
    }

    pub fn state_sync() -> impl Strategy<Value = StateSync> {
        proptest::collection::vec(member(), 0..20).prop_map(|members| StateSync { members })
    }

    pub fn packet() -> impl Strategy<Value = Packet> {
        prop_oneof![swim_packet().prop_map(Packet::Swim), reply().prop_map(Packet::Reply)]
    }

    pub fn broadcast() -> impl Strategy<Value = Broadcast> {
        prop_oneof![
            ("[a-z0-9é-]{1,40}", any::<u64>())
                .prop_map(|(name, generation)| Broadcast::LeaveIntent { name, generation }),
            (any::<u64>(), "[a-z0-9-]{1,30}", addr(), keyring_op()).prop_map(|(id, origin, reply_to, op)| {
                Broadcast::KeyringQuery(KeyringQuery { id, origin, reply_to, op })
            }),
            (0x40u8.., proptest::collection::vec(any::<u8>(), 0..40))
                .prop_map(|(tag, body)| Broadcast::Unknown { tag, body }),
        ]
    }

    /// Well-formed packets: announces carry nothing, broadcast messages no updates.
    pub fn swim_packet() -> impl Strategy<Value = SwimPacket> {
        (header(), proptest::collection::vec(member(), 0..5), proptest::collection::vec(broadcast(), 0..4)).prop_map(
            |(header, mut updates, mut broadcasts)| {
                match header.message {
                    Message::Announce => {
                        updates.clear();
                        broadcasts.clear();
                    }
                    Message::Broadcast => updates.clear(),
                    _ => {}
                }
                SwimPacket { header, updates, broadcasts }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::strategies::*;
    use super::*;
    use proptest::prelude::*;

    /// An identity with every field at its longest (and an IPv6 address): the largest one the
    /// wire format carries.
    fn maximal_identity() -> NodeIdentity {
        let meta = MemberMeta {
            role: Role::Server,
            datacenter: "d".repeat(MAX_DATACENTER_BYTES),
            node_id: "i".repeat(MAX_NODE_ID_BYTES),
            server_port: Some(1),
            build: "b".repeat(MAX_BUILD_BYTES),
            protocol: 1,
        };
        NodeIdentity::new("n".repeat(MAX_NAME_BYTES), SocketAddr::from((Ipv6Addr::LOCALHOST, 1)), meta, 1)
    }

    fn sample_identity(name: &str) -> NodeIdentity {
        NodeIdentity::new(
            name,
            SocketAddr::from(([10, 0, 0, 7], 8301)),
            MemberMeta {
                role: Role::Server,
                datacenter: "dc1".into(),
                node_id: "6a3c4b52-54f4-4bd0-9a9a-000000000001".into(),
                server_port: Some(8300),
                build: "0.1.0".into(),
                protocol: 1,
            },
            7,
        )
    }

    fn ping(src: &str, dst: &str) -> SwimPacket {
        SwimPacket {
            header: Header {
                src: sample_identity(src),
                src_incarnation: 1,
                dst: sample_identity(dst),
                message: Message::Ping(3),
            },
            updates: vec![Member::alive(sample_identity("c"))],
            broadcasts: vec![Broadcast::LeaveIntent { name: "d".into(), generation: 2 }],
        }
    }

    /// Versions are recognised: another version of our format is refused as such, and bytes that
    /// are not ours at all are told apart from it.
    #[test]
    fn envelope_versions() {
        let mut bytes = encode_packet(&Packet::Swim(ping("a", "b"))).unwrap();
        assert_eq!(bytes[0], WIRE_VERSION);
        bytes[0] = 0xC2;
        assert_eq!(decode_packet(&bytes), Err(WireError::UnsupportedVersion(0xC2)));
        bytes[0] = 0x01;
        assert_eq!(decode_packet(&bytes), Err(WireError::BadMagic(0x01)));
        bytes[0] = WIRE_VERSION;
        bytes[1] = 0x7F;
        assert_eq!(decode_packet(&bytes), Err(WireError::UnknownKind(0x7F)));
        assert_eq!(decode_packet(&[WIRE_VERSION]), Err(WireError::Truncated));
    }

    /// Datagrams over the limit are refused before any field is read.
    #[test]
    fn oversize_refused_up_front() {
        let mut bytes = encode_packet(&Packet::Swim(ping("a", "b"))).unwrap();
        bytes.resize(MAX_PACKET_BYTES + 1, 0);
        assert_eq!(
            decode_packet(&bytes),
            Err(WireError::Oversize { len: MAX_PACKET_BYTES + 1, max: MAX_PACKET_BYTES })
        );
    }

    /// Every string bound holds at its limit and refuses one byte more, on both sides.
    #[test]
    fn string_bounds() {
        let long = "n".repeat(MAX_NAME_BYTES);
        let mut packet = ping(&long, "b");
        let bytes = encode_packet(&Packet::Swim(packet.clone())).unwrap();
        assert_eq!(decode_packet(&bytes).unwrap(), Packet::Swim(packet.clone()));

        packet.header.src = sample_identity(&format!("{long}x"));
        assert_eq!(
            encode_packet(&Packet::Swim(packet)),
            Err(WireError::TooLong { field: "node name", len: MAX_NAME_BYTES + 1, max: MAX_NAME_BYTES })
        );

        // A lying length on the wire: the name length byte of the source says 200.
        let mut bytes = bytes;
        bytes[2] = 200;
        assert_eq!(
            decode_packet(&bytes),
            Err(WireError::TooLong { field: "node name", len: 200, max: MAX_NAME_BYTES })
        );
    }

    /// A count of updates above the bound is refused before anything is allocated for it.
    #[test]
    fn update_count_bounded() {
        let mut packet = ping("a", "b");
        packet.updates.clear();
        packet.broadcasts.clear();
        let mut bytes = encode_packet(&Packet::Swim(packet)).unwrap();
        let at = bytes.len() - 2;
        bytes[at..].copy_from_slice(&65_535u16.to_be_bytes());
        assert_eq!(
            decode_packet(&bytes),
            Err(WireError::TooMany { what: "member updates", count: 65_535, max: MAX_UPDATES_PER_PACKET })
        );
    }

    /// The worst case foca can produce, three maximal identities in one header plus a maximal
    /// update, still fits in a SWIM body.
    #[test]
    fn maximal_identities_fit() {
        let id = maximal_identity();
        let header = Header {
            src: id.clone(),
            src_incarnation: 0,
            dst: id.clone(),
            message: Message::PingReq { target: id.clone(), probe_number: 0 },
        };
        let mut body = Vec::new();
        WireCodec.encode_header(&header, &mut body).unwrap();
        WireCodec.encode_member(&Member::alive(id), &mut body).unwrap();
        assert!(body.len() + 2 <= MAX_SWIM_BODY_BYTES, "{} bytes", body.len());
    }

    /// foca's contract: an item that does not fit leaves the buffer as it was.
    #[test]
    fn codec_leaves_full_buffer_clean() {
        let packet = ping("a", "b");
        let mut buf = Vec::new();
        let mut limited = (&mut buf).limit(10);
        assert_eq!(WireCodec.encode_header(&packet.header, &mut limited), Err(WireError::NoRoom));
        assert!(buf.is_empty());
    }

    /// Key lists in replies are bounded and keys must have an AES length.
    #[test]
    fn reply_bounds() {
        let key = GossipKey::from_bytes(&[7; 16]).unwrap();
        let reply = |result| Packet::Reply(Reply::Keyring(KeyringResponse { id: 9, node: "a".into(), result }));
        assert!(matches!(encode_packet(&reply(Ok(vec![]))), Err(WireError::TooMany { what: "keys", .. })));
        assert!(matches!(encode_packet(&reply(Ok(vec![key.clone(); MAX_KEYS + 1]))), Err(WireError::TooMany { .. })));

        let mut bytes = encode_packet(&reply(Ok(vec![key]))).unwrap();
        // envelope 2, tag 1, id 8, name 2, result tag 1: then the count, then the key length.
        let count_at = 2 + 1 + 8 + 2 + 1;
        bytes[count_at] = MAX_KEYS as u8 + 1;
        assert_eq!(decode_packet(&bytes), Err(WireError::TooMany { what: "keys", count: MAX_KEYS + 1, max: MAX_KEYS }));
        bytes[count_at] = 1;
        bytes[count_at + 1] = 20;
        assert_eq!(decode_packet(&bytes), Err(WireError::BadKey { len: 20 }));
    }

    /// A state sync is refused as a datagram and a datagram as a state sync: each kind has one
    /// transport.
    #[test]
    fn sync_kind_has_its_own_transport() {
        let sync = encode_sync(&StateSync { members: vec![Member::alive(sample_identity("a"))] }).unwrap();
        assert_eq!(decode_packet(&sync), Err(WireError::WrongKind { found: Kind::Sync, expected: "datagram" }));
        let datagram = encode_packet(&Packet::Swim(ping("a", "b"))).unwrap();
        assert_eq!(decode_sync(&datagram), Err(WireError::WrongKind { found: Kind::Swim, expected: "state sync" }));
    }

    /// Member counts are bounded twice before anything is allocated: by the cap, and by what the
    /// bytes left could hold.
    #[test]
    fn sync_counts_bounded() {
        let mut bytes = encode_sync(&StateSync::default()).unwrap();
        assert_eq!(decode_sync(&bytes).unwrap(), StateSync::default());
        bytes[2..6].copy_from_slice(&(MAX_SYNC_MEMBERS as u32 + 1).to_be_bytes());
        assert_eq!(
            decode_sync(&bytes),
            Err(WireError::TooMany { what: "members", count: MAX_SYNC_MEMBERS + 1, max: MAX_SYNC_MEMBERS })
        );
        bytes[2..6].copy_from_slice(&1000u32.to_be_bytes());
        assert_eq!(decode_sync(&bytes), Err(WireError::Truncated));

        let too_many = StateSync { members: vec![Member::alive(sample_identity("a")); MAX_SYNC_MEMBERS + 1] };
        assert!(matches!(encode_sync(&too_many), Err(WireError::TooMany { what: "members", .. })));
    }

    /// Frames over the byte cap are refused whole, on both sides.
    #[test]
    fn sync_frame_size_bounded() {
        let mut bytes = vec![0u8; MAX_SYNC_FRAME_BYTES + 1];
        bytes[..2].copy_from_slice(&[WIRE_VERSION, Kind::Sync as u8]);
        assert_eq!(
            decode_sync(&bytes),
            Err(WireError::Oversize { len: MAX_SYNC_FRAME_BYTES + 1, max: MAX_SYNC_FRAME_BYTES })
        );
        // Maximal names and metadata: about 330 bytes a member, so a full list of members is over.
        let members = vec![Member::alive(maximal_identity()); MAX_SYNC_MEMBERS];
        assert!(matches!(encode_sync(&StateSync { members }), Err(WireError::Oversize { .. })));
    }

    proptest! {
        #[test]
        fn sync_round_trips(sync in state_sync()) {
            prop_assert_eq!(decode_sync(&encode_sync(&sync).unwrap()).unwrap(), sync);
        }

        /// Hostile frames never panic, and whatever decodes re-encodes to the same list.
        #[test]
        fn mutated_syncs_never_panic(
            sync in state_sync(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            cut in any::<prop::sample::Index>(),
            noise in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut bytes = encode_sync(&sync).unwrap();
            for (at, value) in flips {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            check_sync_total(&bytes)?;
            let len = cut.index(bytes.len() + 1);
            check_sync_total(&bytes[..len])?;
            check_sync_total(&noise)?;
        }

        #[test]
        fn identity_round_trips(id in identity()) {
            let mut buf = Vec::new();
            write_identity(&mut buf, &id).unwrap();
            let mut r = Reader::new(&buf);
            prop_assert_eq!(read_identity(&mut r).unwrap(), id);
            prop_assert!(r.finish().is_ok());
        }

        #[test]
        fn member_round_trips_through_codec(member in member()) {
            let mut buf = Vec::new();
            WireCodec.encode_member(&member, &mut buf).unwrap();
            let mut slice = &buf[..];
            prop_assert_eq!(WireCodec.decode_member(&mut slice).unwrap(), member);
            prop_assert!(slice.is_empty());
        }

        #[test]
        fn header_round_trips_through_codec(header in header()) {
            let mut buf = Vec::new();
            WireCodec.encode_header(&header, &mut buf).unwrap();
            buf.extend_from_slice(b"tail");
            let mut slice = &buf[..];
            prop_assert_eq!(WireCodec.decode_header(&mut slice).unwrap(), header);
            prop_assert_eq!(slice, &b"tail"[..]);
        }

        #[test]
        fn broadcast_round_trips(b in broadcast()) {
            prop_assert_eq!(decode_broadcast(&encode_broadcast(&b).unwrap()).unwrap(), b);
        }

        #[test]
        fn packet_round_trips(packet in packet()) {
            match encode_packet(&packet) {
                Ok(bytes) => prop_assert_eq!(decode_packet(&bytes).unwrap(), packet),
                Err(WireError::Oversize { .. }) => {}
                Err(e) => return Err(TestCaseError::fail(format!("encode failed: {e}"))),
            }
        }

        /// Random bytes never panic, and whatever decodes re-encodes to the same packet.
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1600)) {
            check_total(&bytes)?;
        }

        /// The same with bytes behind a valid envelope and mutated valid packets, which reach
        /// deeper than uniform noise.
        #[test]
        fn mutated_packets_never_panic(
            p in packet(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            cut in any::<prop::sample::Index>(),
        ) {
            let Ok(mut bytes) = encode_packet(&p) else { return Ok(()) };
            for (at, value) in flips {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            check_total(&bytes)?;
            let len = cut.index(bytes.len() + 1);
            check_total(&bytes[..len])?;
        }
    }

    fn check_sync_total(bytes: &[u8]) -> Result<(), TestCaseError> {
        if let Ok(sync) = decode_sync(bytes) {
            let again = encode_sync(&sync).map_err(|e| TestCaseError::fail(format!("re-encode: {e}")))?;
            prop_assert_eq!(decode_sync(&again).unwrap(), sync);
        }
        Ok(())
    }

    fn check_total(bytes: &[u8]) -> Result<(), TestCaseError> {
        if let Ok(packet) = decode_packet(bytes) {
            let again = encode_packet(&packet).map_err(|e| TestCaseError::fail(format!("re-encode: {e}")))?;
            prop_assert_eq!(decode_packet(&again).unwrap(), packet);
        }
        Ok(())
    }
}
