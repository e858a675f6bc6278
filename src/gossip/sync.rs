//! Push-pull: full-state sync over TCP on the LAN port, memberlist's `pushPull`.
//!
//! SWIM alone teaches a newcomer the cluster a dozen identities per datagram; a push-pull hands
//! over the whole member list at once. The side that starts it connects, writes its member list
//! and reads the other's; the side that accepts reads, answers with its own list, and both apply
//! what they read. A joiner does this with the address it joins through; every member does it
//! periodically with one random live member, which repairs whatever gossip missed.
//!
//! This module only moves bytes: frames are `[u32 length][frame]`, the frame sealed like a
//! datagram when encryption is on ([`PacketCrypto`]), its plaintext a [`StateSync`]
//! ([`wire::decode_sync`]). Decoded lists go to the driver, which alone owns foca, over a bounded
//! channel ([`SyncEvent`]); the driver answers with its own list. Every limit is here: bytes per
//! frame and members per frame (checked before reading or allocating for them), one deadline per
//! exchange, and at most [`MAX_INBOUND_SYNCS`] exchanges served at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use foca::Member;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};

use super::driver::{bump, Counters};
use super::identity::NodeIdentity;
use super::keyring::{Keyring, OpenError, PacketCrypto};
use super::wire::{self, StateSync, WireError, MAX_SYNC_FRAME_BYTES, SEAL_OVERHEAD_BYTES};

/// Push-pulls served at once; further connections wait in the kernel's accept queue.
pub(crate) const MAX_INBOUND_SYNCS: usize = 8;
/// Push-pulls this agent runs at once (joins and periodic syncs together).
pub(crate) const MAX_OUTBOUND_SYNCS: usize = 4;
/// The largest frame on the stream: a full plaintext frame, sealed.
const MAX_SEALED_FRAME_BYTES: usize = MAX_SYNC_FRAME_BYTES + SEAL_OVERHEAD_BYTES;

pub(crate) type Members = Vec<Member<NodeIdentity>>;

/// What the TCP side hands the driver.
pub(crate) enum SyncEvent {
    /// A member pushed its list to us: the driver answers with its own list through `reply`
    /// (dropping `reply` closes the connection unanswered), then applies `members`.
    Pushed { from: SocketAddr, members: Members, reply: oneshot::Sender<Members> },
    /// A push-pull we started with `addr` ended: its list, or why not.
    Pulled { addr: SocketAddr, result: Result<Members, SyncError> },
}

/// Why a push-pull failed. Nothing was applied: a frame is used whole or not at all.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SyncError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
    #[error("frame of {len} bytes announced, over the {max}-byte limit")]
    FrameTooLarge { len: usize, max: usize },
    #[error("frame not opened: {0}")]
    Open(#[from] OpenError),
    #[error("frame not decoded: {0}")]
    Decode(#[from] WireError),
    #[error("the gossip driver is busy or gone")]
    Unanswered,
}

/// What every exchange needs besides its socket: how to seal and open, how long to wait, and the
/// counters. Cheap to clone: one per connection.
#[derive(Clone)]
pub(crate) struct SyncContext {
    /// The driver's current keyring (it changes with `cairn keyring`).
    pub keyring: watch::Receiver<Option<Keyring>>,
    pub verify_incoming: bool,
    pub verify_outgoing: bool,
    pub timeout: Duration,
    pub counters: Arc<Counters>,
}

impl SyncContext {
    /// Sealing for one exchange: the keyring as it is now, and a nonce sequence of its own (a
    /// fresh random prefix, so it never repeats another sequence's nonces).
    fn crypto(&self) -> PacketCrypto {
        let keyring = self.keyring.borrow().clone();
        PacketCrypto::new(keyring, self.verify_incoming, self.verify_outgoing, crate::io::random_seed())
    }
}

/// Serve push-pulls on `listener` until the driver goes away.
pub(crate) async fn serve(listener: TcpListener, context: SyncContext, events: mpsc::Sender<SyncEvent>) {
    crate::io::accept_loop(listener, MAX_INBOUND_SYNCS, "gossip push-pull", move |stream, peer| {
        let (context, events) = (context.clone(), events.clone());
        async move {
            let limit = context.timeout;
            let outcome = match crate::io::timeout(limit, answer(stream, peer, &context, &events)).await {
                Ok(outcome) => outcome,
                Err(_) => Err(SyncError::TimedOut(limit)),
            };
            match outcome {
                Ok(()) => bump(&context.counters.syncs_in, 1),
                Err(e) => {
                    count_failure(&context.counters, &e);
                    tracing::debug!(%peer, error = %e, "gossip push-pull from a member failed");
                }
            }
        }
    })
    .await;
}

/// One inbound push-pull: read their list, hand it to the driver, write ours.
async fn answer(
    mut stream: TcpStream,
    peer: SocketAddr,
    context: &SyncContext,
    events: &mpsc::Sender<SyncEvent>,
) -> Result<(), SyncError> {
    let mut crypto = context.crypto();
    let members = read_sync(&mut stream, &crypto, &context.counters).await?;
    let (reply, ours) = oneshot::channel();
    if let Err(e) = events.try_send(SyncEvent::Pushed { from: peer, members, reply }) {
        if matches!(e, mpsc::error::TrySendError::Full(_)) {
            bump(&context.counters.dropped_overload, 1);
        }
        return Err(SyncError::Unanswered);
    }
    let ours = ours.await.map_err(|_| SyncError::Unanswered)?;
    write_sync(&mut stream, &mut crypto, ours, &context.counters).await?;
    stream.shutdown().await?;
    Ok(())
}

/// Start a push-pull with `addr` in its own task; the outcome comes back as
/// [`SyncEvent::Pulled`].
pub(crate) fn spawn_push_pull(addr: SocketAddr, ours: Members, context: SyncContext, events: mpsc::Sender<SyncEvent>) {
    tokio::spawn(async move {
        let limit = context.timeout;
        let result = match crate::io::timeout(limit, push_pull(addr, ours, &context)).await {
            Ok(result) => result,
            Err(_) => Err(SyncError::TimedOut(limit)),
        };
        match &result {
            Ok(_) => bump(&context.counters.syncs_out, 1),
            Err(e) => count_failure(&context.counters, e),
        }
        // The driver holds a sender itself, so this fails only once it has stopped.
        let _ = events.send(SyncEvent::Pulled { addr, result }).await;
    });
}

async fn push_pull(addr: SocketAddr, ours: Members, context: &SyncContext) -> Result<Members, SyncError> {
    let mut stream = TcpStream::connect(addr).await?;
    let _ = stream.set_nodelay(true);
    let mut crypto = context.crypto();
    write_sync(&mut stream, &mut crypto, ours, &context.counters).await?;
    read_sync(&mut stream, &crypto, &context.counters).await
}

fn count_failure(counters: &Counters, error: &SyncError) {
    match error {
        SyncError::Open(_) => bump(&counters.dropped_decrypt, 1),
        SyncError::Decode(_) => bump(&counters.dropped_decode, 1),
        SyncError::FrameTooLarge { .. } => bump(&counters.dropped_oversize, 1),
        _ => {}
    }
    bump(&counters.sync_errors, 1);
}

/// Read one frame, open it and decode it. Bytes that do not open are never parsed.
async fn read_sync(
    stream: &mut (impl AsyncRead + Unpin),
    crypto: &PacketCrypto,
    counters: &Counters,
) -> Result<Members, SyncError> {
    let frame = read_frame(stream, counters).await?;
    let plain = crypto.incoming_within(&frame, MAX_SEALED_FRAME_BYTES)?;
    Ok(wire::decode_sync(&plain)?.members)
}

async fn write_sync(
    stream: &mut (impl AsyncWrite + Unpin),
    crypto: &mut PacketCrypto,
    members: Members,
    counters: &Counters,
) -> Result<(), SyncError> {
    let plain = wire::encode_sync(&StateSync { members })?;
    let frame = crypto.outgoing(&plain);
    let len = u32::try_from(frame.len())
        .map_err(|_| SyncError::FrameTooLarge { len: frame.len(), max: MAX_SEALED_FRAME_BYTES })?;
    stream.write_all(&len.to_be_bytes()).await?;
    stream.write_all(&frame).await?;
    stream.flush().await?;
    bump(&counters.sync_bytes_out, 4 + frame.len());
    Ok(())
}

/// Read `[u32 length][frame]`. The length is checked before anything is read for it, and the
/// buffer grows with the bytes that actually arrive, so a peer that announces a large frame and
/// sends little costs little.
pub(crate) async fn read_frame(
    stream: &mut (impl AsyncRead + Unpin),
    counters: &Counters,
) -> Result<Vec<u8>, SyncError> {
    let len = stream.read_u32().await? as usize;
    if len > MAX_SEALED_FRAME_BYTES {
        return Err(SyncError::FrameTooLarge { len, max: MAX_SEALED_FRAME_BYTES });
    }
    let mut frame = Vec::new();
    stream.take(len as u64).read_to_end(&mut frame).await?;
    bump(&counters.sync_bytes_in, 4 + frame.len());
    if frame.len() < len {
        return Err(SyncError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::keyring::GossipKey;
    use crate::gossip::wire::strategies;
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::TestRunner;

    fn sample_members() -> Members {
        let mut runner = TestRunner::deterministic();
        proptest::collection::vec(strategies::member(), 1..8).new_tree(&mut runner).unwrap().current()
    }

    /// A list written to a stream reads back equal, sealed or not, and a reader without the key
    /// refuses it unread.
    #[tokio::test]
    async fn frames_round_trip_sealed_and_plain() {
        let counters = Counters::default();
        let members = sample_members();
        let ring = Keyring::new(GossipKey::from_bytes(&[3; 16]).unwrap(), []);
        for keyring in [None, Some(ring)] {
            let mut crypto = PacketCrypto::new(keyring.clone(), true, true, 7);
            let mut buf = Vec::new();
            write_sync(&mut buf, &mut crypto, members.clone(), &counters).await.unwrap();
            assert_eq!(read_sync(&mut &buf[..], &crypto, &counters).await.unwrap(), members);
            if keyring.is_some() {
                let stranger = PacketCrypto::new(None, false, false, 1);
                let refused = read_sync(&mut &buf[..], &stranger, &counters).await;
                assert!(matches!(refused, Err(SyncError::Open(OpenError::NoKeyring))), "{refused:?}");
            }
        }
    }

    /// An announced length over the limit is refused before anything is read for it, and a frame
    /// cut short is an error, not a shorter list.
    #[tokio::test]
    async fn frame_length_bounded() {
        let counters = Counters::default();
        let huge = (MAX_SEALED_FRAME_BYTES as u32 + 1).to_be_bytes();
        let refused = read_frame(&mut &huge[..], &counters).await;
        assert!(matches!(refused, Err(SyncError::FrameTooLarge { .. })), "{refused:?}");
        let mut short = 100u32.to_be_bytes().to_vec();
        short.extend_from_slice(&[0; 10]);
        let refused = read_frame(&mut &short[..], &counters).await;
        assert!(matches!(refused, Err(SyncError::Io(_))), "{refused:?}");
    }
}
