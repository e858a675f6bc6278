//! Frames: `[u32 big-endian length][bincode body]`, bounded in size and in what decoding allocates.

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest frame accepted or sent. Raft batches are capped (256 entries, 1 MiB snapshot chunks) and
/// a KV value at 512 KiB, so legitimate frames stay far below this.
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;

/// What decoding one frame may claim. bincode charges each decoded integer its in-memory width
/// (eight bytes for a one-byte varint), so an honest frame claims several times its size; a lying
/// length field can claim no more than this.
const DECODE_LIMIT_BYTES: usize = 4 * MAX_FRAME_BYTES;

const CODEC: bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<DECODE_LIMIT_BYTES>,
> = bincode::config::standard().with_limit::<DECODE_LIMIT_BYTES>();

/// The first bytes of every connection: which protocol, which version. A peer speaking something
/// else is disconnected before anything it sends is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preamble(pub [u8; 4]);

impl Preamble {
    /// Server RPC (Raft, forwarding), version 1.
    pub const SERVER: Preamble = Preamble(*b"CRS1");
}

/// What went wrong on an RPC connection. `Connect` is the only error after which a request is known
/// not to have been delivered.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    #[error("connect failed: {0}")]
    Connect(#[source] std::io::Error),
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    #[error("peer closed the connection")]
    Closed,
    #[error("timed out")]
    Timeout,
    #[error("frame of {len} bytes exceeds the {MAX_FRAME_BYTES}-byte limit")]
    FrameTooLarge { len: usize },
    #[error("peer spoke protocol {got:?}, expected {expected:?}")]
    WrongProtocol { got: [u8; 4], expected: [u8; 4] },
    #[error("malformed frame: {0}")]
    Decode(String),
    #[error("could not encode frame: {0}")]
    Encode(String),
    #[error("unexpected response to {request}")]
    UnexpectedResponse { request: &'static str },
}

impl RpcError {
    /// True when the request certainly never reached the peer, so retrying cannot apply it twice.
    pub fn not_delivered(&self) -> bool {
        matches!(self, RpcError::Connect(_) | RpcError::FrameTooLarge { .. } | RpcError::Encode(_))
    }
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, RpcError> {
    let body = bincode::serde::encode_to_vec(value, CODEC).map_err(|e| RpcError::Encode(e.to_string()))?;
    if body.len() > MAX_FRAME_BYTES {
        return Err(RpcError::FrameTooLarge { len: body.len() });
    }
    Ok(body)
}

pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, RpcError> {
    let (value, used) = bincode::serde::decode_from_slice(body, CODEC).map_err(|e| RpcError::Decode(e.to_string()))?;
    if used != body.len() {
        return Err(RpcError::Decode(format!("{} trailing bytes", body.len() - used)));
    }
    Ok(value)
}

pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(w: &mut W, value: &T) -> Result<(), RpcError> {
    let body = encode(value)?;
    // One buffer, one write: header and body in separate writes would meet Nagle's algorithm.
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    w.write_all(&frame).await?;
    w.flush().await?;
    Ok(())
}

pub async fn read_frame<R: AsyncRead + Unpin, T: DeserializeOwned>(r: &mut R) -> Result<T, RpcError> {
    let mut len = [0u8; 4];
    if let Err(e) = r.read_exact(&mut len).await {
        return Err(if e.kind() == std::io::ErrorKind::UnexpectedEof { RpcError::Closed } else { e.into() });
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(RpcError::FrameTooLarge { len });
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    decode(&body)
}

pub async fn send_preamble<W: AsyncWrite + Unpin>(w: &mut W, preamble: Preamble) -> Result<(), RpcError> {
    w.write_all(&preamble.0).await?;
    Ok(())
}

pub async fn expect_preamble<R: AsyncRead + Unpin>(r: &mut R, expected: Preamble) -> Result<(), RpcError> {
    let mut got = [0u8; 4];
    r.read_exact(&mut got).await?;
    if got != expected.0 {
        return Err(RpcError::WrongProtocol { got, expected: expected.0 });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::message::{Request, Response};
    use proptest::prelude::*;

    /// A frame whose declared length exceeds the limit is refused before any allocation.
    #[tokio::test]
    async fn oversized_length_is_refused() {
        let mut bytes: &[u8] = &[0xff, 0xff, 0xff, 0xff, 0, 0];
        let err = read_frame::<_, Request>(&mut bytes).await.unwrap_err();
        assert!(matches!(err, RpcError::FrameTooLarge { .. }), "{err}");
    }

    /// A stream that ends between frames is a clean close, not an error.
    #[tokio::test]
    async fn eof_between_frames_is_closed() {
        let mut bytes: &[u8] = &[];
        assert!(matches!(read_frame::<_, Request>(&mut bytes).await, Err(RpcError::Closed)));
    }

    /// The wrong preamble is refused by name.
    #[tokio::test]
    async fn wrong_preamble_is_refused() {
        let mut bytes: &[u8] = b"GET ";
        let err = expect_preamble(&mut bytes, Preamble::SERVER).await.unwrap_err();
        assert!(matches!(err, RpcError::WrongProtocol { .. }));
    }

    /// A frame of 200,000 small commands round-trips: the decoder's accounting, which charges
    /// decoded sizes rather than encoded ones, leaves room for honest frames.
    #[test]
    fn many_small_entries_decode() {
        use crate::state::{Command, KvCommand};
        let commands: Vec<Command> =
            (0..200_000).map(|i| Command::Kv(KvCommand::Delete { key: format!("{i}") })).collect();
        let body = encode(&commands).unwrap();
        let decoded: Vec<Command> = decode(&body).unwrap();
        assert_eq!(decoded.len(), commands.len());
    }

    proptest! {
        /// Decoding arbitrary bytes as any message never panics.
        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<Request>(&bytes);
            let _ = decode::<Response>(&bytes);
        }
    }
}
