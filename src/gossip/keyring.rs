//! Gossip encryption: the keyring, AES-GCM sealing of datagrams, and the rollout flags.
//!
//! A sealed datagram has Consul's (memberlist's) layout:
//!
//! ```text
//! [version: 0x01][nonce: 12 bytes][ciphertext][tag: 16 bytes]
//! ```
//!
//! sealed with the primary key; [`Keyring::open`] tries every installed key, which is what lets a
//! new key be rolled out (install everywhere, then use, then remove the old one) without a moment
//! where two members cannot read each other. Nonces come from a [`NonceSequence`]: a random 64-bit
//! prefix and a 32-bit counter, so one agent never repeats a nonce, and two agents sharing a key
//! collide only if their random prefixes do (one chance in 2^64 per pair).
//!
//! [`PacketCrypto`] applies Consul's rollout flags: with `verify_incoming` off an agent also
//! accepts plaintext, with `verify_outgoing` off it sends plaintext, so encryption can be turned on
//! in a running cluster one agent at a time. A datagram that fails to open is refused whole, before
//! any of it is parsed.
//!
//! The keyring persists as `local.keyring`, a JSON list of base64 keys, primary first (Consul's
//! `serf/local.keyring` shape), written atomically through [`Disk`].

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use aes_gcm::aead::consts::U12;
use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::aes::Aes192;
use aes_gcm::{Aes128Gcm, Aes256Gcm, AesGcm, Nonce};
use base64::Engine as _;

use super::wire::{MAX_PACKET_BYTES, SEAL_OVERHEAD_BYTES, WIRE_VERSION};
use crate::storage::{Disk, DiskError};

/// The file the keyring lives in.
pub const KEYRING_FILE: &str = "local.keyring";
/// First byte of a sealed datagram (memberlist's encryption version 1: no padding).
pub const SEAL_VERSION: u8 = 0x01;
const NONCE_BYTES: usize = 12;
const TAG_BYTES: usize = 16;
/// Keys one keyring holds. Rotation needs two; the bound keeps a hostile or mistaken stream of
/// installs from growing the ring (and the cost of opening every packet) without limit.
pub const MAX_KEYS: usize = 16;

type Aes192Gcm = AesGcm<Aes192, U12>;

const _: () = assert!(SEAL_OVERHEAD_BYTES == 1 + NONCE_BYTES + TAG_BYTES);

/// One AES key: 16, 24 or 32 bytes (AES-128, -192, -256). Its `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GossipKey(Box<[u8]>);

/// Why a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("gossip key is not valid base64: {0}")]
    Base64(String),
    #[error("gossip key is {len} bytes long; it must be 16, 24 or 32 bytes (AES-128, AES-192 or AES-256)")]
    BadLength { len: usize },
}

impl GossipKey {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        match bytes.len() {
            16 | 24 | 32 => Ok(GossipKey(bytes.into())),
            len => Err(KeyError::BadLength { len }),
        }
    }

    /// Parse the base64 form `cairn keygen` prints and `-encrypt` takes.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| KeyError::Base64(e.to_string()))?;
        GossipKey::from_bytes(&bytes)
    }

    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.0)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    fn seal(&self, nonce: &[u8; NONCE_BYTES], plaintext: &[u8]) -> Vec<u8> {
        let nonce = Nonce::<U12>::from_slice(nonce);
        // Encryption fails only for inputs beyond 2^36 bytes; datagrams are far smaller.
        let sealed = match self.0.len() {
            16 => Aes128Gcm::new_from_slice(&self.0).map(|c| c.encrypt(nonce, plaintext)),
            24 => Aes192Gcm::new_from_slice(&self.0).map(|c| c.encrypt(nonce, plaintext)),
            _ => Aes256Gcm::new_from_slice(&self.0).map(|c| c.encrypt(nonce, plaintext)),
        };
        sealed.expect("key length checked at construction").expect("datagram within AES-GCM limits")
    }

    fn open(&self, nonce: &[u8], ciphertext: &[u8]) -> Option<Vec<u8>> {
        let nonce = Nonce::<U12>::from_slice(nonce);
        let opened = match self.0.len() {
            16 => Aes128Gcm::new_from_slice(&self.0).map(|c| c.decrypt(nonce, ciphertext)),
            24 => Aes192Gcm::new_from_slice(&self.0).map(|c| c.decrypt(nonce, ciphertext)),
            _ => Aes256Gcm::new_from_slice(&self.0).map(|c| c.decrypt(nonce, ciphertext)),
        };
        opened.ok()?.ok()
    }
}

impl fmt::Debug for GossipKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GossipKey(<{} bytes>)", self.0.len())
    }
}

impl FromStr for GossipKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        GossipKey::from_base64(s)
    }
}

/// Why a keyring change or load was refused. Every refusal leaves the keyring as it was.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("removing the primary key is not allowed; use another key first")]
    RemovePrimary,
    #[error("key is not installed")]
    NotInstalled,
    #[error("the keyring already holds {MAX_KEYS} keys")]
    Full,
    #[error("{KEYRING_FILE} is unreadable: {0}")]
    Corrupt(String),
    #[error("{KEYRING_FILE}: {0}")]
    Key(#[from] KeyError),
    #[error(transparent)]
    Disk(#[from] DiskError),
}

/// The installed keys; the first is the primary, the one new datagrams are sealed with.
/// Never empty, never holds one key twice, at most [`MAX_KEYS`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyring {
    keys: Vec<GossipKey>,
}

impl Keyring {
    /// A keyring whose primary is `primary`, plus `others` (duplicates dropped, at most
    /// [`MAX_KEYS`] in all).
    pub fn new(primary: GossipKey, others: impl IntoIterator<Item = GossipKey>) -> Self {
        let mut ring = Keyring { keys: vec![primary] };
        for key in others {
            if ring.keys.len() == MAX_KEYS {
                break;
            }
            ring.install(key).ok();
        }
        ring
    }

    pub fn primary(&self) -> &GossipKey {
        &self.keys[0]
    }

    /// Every installed key, primary first.
    pub fn keys(&self) -> &[GossipKey] {
        &self.keys
    }

    pub fn contains(&self, key: &GossipKey) -> bool {
        self.keys.contains(key)
    }

    /// Install `key` beside the others. Installing a key already there changes nothing.
    pub fn install(&mut self, key: GossipKey) -> Result<(), KeyringError> {
        if self.contains(&key) {
            return Ok(());
        }
        if self.keys.len() >= MAX_KEYS {
            return Err(KeyringError::Full);
        }
        self.keys.push(key);
        Ok(())
    }

    /// Make the installed `key` the primary.
    pub fn use_key(&mut self, key: &GossipKey) -> Result<(), KeyringError> {
        let at = self.keys.iter().position(|k| k == key).ok_or(KeyringError::NotInstalled)?;
        let key = self.keys.remove(at);
        self.keys.insert(0, key);
        Ok(())
    }

    /// Remove `key`, which must not be the primary. Removing a key that is not installed changes
    /// nothing (as memberlist).
    pub fn remove(&mut self, key: &GossipKey) -> Result<(), KeyringError> {
        if self.primary() == key {
            return Err(KeyringError::RemovePrimary);
        }
        self.keys.retain(|k| k != key);
        Ok(())
    }

    /// Seal `plaintext` with the primary key under `nonce`, which must never have been used with
    /// that key before (take it from a [`NonceSequence`]).
    pub fn seal(&self, nonce: [u8; NONCE_BYTES], plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD_BYTES);
        out.push(SEAL_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&self.primary().seal(&nonce, plaintext));
        out
    }

    /// Open a sealed datagram with whichever installed key sealed it.
    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        self.open_within(sealed, MAX_PACKET_BYTES)
    }

    /// Open a sealed message of at most `max` bytes (a push-pull frame is larger than a datagram).
    pub fn open_within(&self, sealed: &[u8], max: usize) -> Result<Vec<u8>, OpenError> {
        if sealed.len() > max {
            return Err(OpenError::Oversize { len: sealed.len() });
        }
        if sealed.len() < SEAL_OVERHEAD_BYTES {
            return Err(OpenError::Truncated);
        }
        if sealed[0] != SEAL_VERSION {
            return Err(OpenError::UnknownVersion(sealed[0]));
        }
        let (nonce, ciphertext) = sealed[1..].split_at(NONCE_BYTES);
        self.keys.iter().find_map(|key| key.open(nonce, ciphertext)).ok_or(OpenError::NoKey)
    }

    /// The `local.keyring` content: a JSON list of base64 keys, primary first.
    pub fn to_json(&self) -> Vec<u8> {
        let list: Vec<String> = self.keys.iter().map(GossipKey::to_base64).collect();
        serde_json::to_vec(&list).expect("a list of strings serialises")
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, KeyringError> {
        let list: Vec<String> = serde_json::from_slice(bytes).map_err(|e| KeyringError::Corrupt(e.to_string()))?;
        if list.len() > MAX_KEYS {
            return Err(KeyringError::Corrupt(format!("{} keys, more than {MAX_KEYS}", list.len())));
        }
        let mut keys = list.iter().map(|text| GossipKey::from_base64(text));
        let primary = keys.next().ok_or_else(|| KeyringError::Corrupt("no keys".into()))??;
        Ok(Keyring::new(primary, keys.collect::<Result<Vec<_>, _>>()?))
    }

    /// The keyring saved on `disk`, if there is one.
    pub fn load(disk: &dyn Disk) -> Result<Option<Self>, KeyringError> {
        match disk.read(KEYRING_FILE) {
            Ok(bytes) => Keyring::from_json(&bytes).map(Some),
            Err(DiskError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Save to `disk`, atomically and durably.
    pub fn persist(&self, disk: &dyn Disk) -> Result<(), KeyringError> {
        disk.write_atomic(KEYRING_FILE, &self.to_json())?;
        Ok(())
    }
}

/// Why a datagram was not opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("sealed packet of {len} bytes is over the limit")]
    Oversize { len: usize },
    #[error("sealed packet too short")]
    Truncated,
    #[error("unknown encryption version {0:#04x}")]
    UnknownVersion(u8),
    #[error("no installed key opens the packet")]
    NoKey,
    #[error("plaintext packet refused: encryption is verified on incoming packets")]
    PlaintextRefused,
    #[error("encrypted packet received but no keyring is configured")]
    NoKeyring,
}

/// Nonces that never repeat within one sequence: a random prefix and a counter. When the counter
/// runs out (after 2^32 datagrams) a fresh prefix is drawn.
#[derive(Debug, Clone)]
pub struct NonceSequence {
    prefix: u64,
    counter: u32,
}

impl NonceSequence {
    pub fn new(seed: u64) -> Self {
        NonceSequence { prefix: seed, counter: 0 }
    }

    pub fn next_nonce(&mut self) -> [u8; NONCE_BYTES] {
        let mut nonce = [0u8; NONCE_BYTES];
        nonce[..8].copy_from_slice(&self.prefix.to_be_bytes());
        nonce[8..].copy_from_slice(&self.counter.to_be_bytes());
        match self.counter.checked_add(1) {
            Some(next) => self.counter = next,
            None => {
                self.prefix = crate::io::random_seed();
                self.counter = 0;
            }
        }
        nonce
    }
}

/// What an agent does to datagrams on their way out and in, given its keyring and Consul's
/// `encrypt_verify_incoming` / `encrypt_verify_outgoing` flags.
#[derive(Debug, Clone)]
pub struct PacketCrypto {
    keyring: Option<Keyring>,
    verify_incoming: bool,
    verify_outgoing: bool,
    nonces: NonceSequence,
}

impl PacketCrypto {
    pub fn new(keyring: Option<Keyring>, verify_incoming: bool, verify_outgoing: bool, nonce_seed: u64) -> Self {
        PacketCrypto { keyring, verify_incoming, verify_outgoing, nonces: NonceSequence::new(nonce_seed) }
    }

    pub fn keyring(&self) -> Option<&Keyring> {
        self.keyring.as_ref()
    }

    pub fn keyring_mut(&mut self) -> Option<&mut Keyring> {
        self.keyring.as_mut()
    }

    /// The datagram to send for `plaintext`: sealed with the primary key when there is a keyring
    /// and outgoing encryption is on, else the plaintext itself.
    pub fn outgoing(&mut self, plaintext: &[u8]) -> Vec<u8> {
        match &self.keyring {
            Some(ring) if self.verify_outgoing => ring.seal(self.nonces.next_nonce(), plaintext),
            _ => plaintext.to_vec(),
        }
    }

    /// The plaintext of a received datagram, or why it must be dropped unread.
    ///
    /// With a keyring, a datagram is opened with the installed keys; one that looks like our
    /// plaintext is accepted only while `verify_incoming` is off (a rollout in progress). Without
    /// one, a sealed datagram is refused rather than parsed as garbage.
    pub fn incoming<'a>(&self, datagram: &'a [u8]) -> Result<Cow<'a, [u8]>, OpenError> {
        self.incoming_within(datagram, MAX_PACKET_BYTES)
    }

    /// [`PacketCrypto::incoming`] for a message of at most `max` bytes sealed (a push-pull frame).
    pub fn incoming_within<'a>(&self, datagram: &'a [u8], max: usize) -> Result<Cow<'a, [u8]>, OpenError> {
        let looks_plain = datagram.first() == Some(&WIRE_VERSION);
        match &self.keyring {
            None if datagram.first() == Some(&SEAL_VERSION) => Err(OpenError::NoKeyring),
            None => Ok(Cow::Borrowed(datagram)),
            Some(_) if looks_plain && !self.verify_incoming => Ok(Cow::Borrowed(datagram)),
            Some(_) if looks_plain => Err(OpenError::PlaintextRefused),
            Some(ring) => ring.open_within(datagram, max).map(Cow::Owned),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemDisk;
    use proptest::prelude::*;

    fn key(byte: u8, len: usize) -> GossipKey {
        GossipKey::from_bytes(&vec![byte; len]).unwrap()
    }

    /// The error names the length problem, the way an operator pasting a wrong key needs it.
    #[test]
    fn key_parsing_explains_length() {
        let short = base64::engine::general_purpose::STANDARD.encode([1u8; 10]);
        let err = GossipKey::from_base64(&short).unwrap_err();
        assert_eq!(err, KeyError::BadLength { len: 10 });
        assert!(err.to_string().contains("10 bytes long; it must be 16, 24 or 32 bytes"), "{err}");
        assert!(matches!(GossipKey::from_base64("not base64!"), Err(KeyError::Base64(_))));
        for len in [16, 24, 32] {
            let text = base64::engine::general_purpose::STANDARD.encode(vec![7u8; len]);
            assert_eq!(GossipKey::from_base64(&text).unwrap().as_bytes().len(), len);
        }
        assert_eq!(format!("{:?}", key(9, 16)), "GossipKey(<16 bytes>)");
    }

    /// Install, use, remove: the primary moves, cannot be removed, and unknown keys cannot be used.
    #[test]
    fn keyring_operations() {
        let (a, b) = (key(1, 16), key(2, 32));
        let mut ring = Keyring::new(a.clone(), []);
        assert!(matches!(ring.use_key(&b), Err(KeyringError::NotInstalled)));
        ring.install(b.clone()).unwrap();
        ring.install(b.clone()).unwrap();
        assert_eq!(ring.keys(), &[a.clone(), b.clone()]);
        assert!(matches!(ring.remove(&a), Err(KeyringError::RemovePrimary)));
        ring.use_key(&b).unwrap();
        assert_eq!(ring.primary(), &b);
        ring.remove(&a).unwrap();
        assert_eq!(ring.keys(), std::slice::from_ref(&b));
        for i in 0..MAX_KEYS as u8 - 1 {
            ring.install(key(100 + i, 16)).unwrap();
        }
        assert!(matches!(ring.install(key(3, 16)), Err(KeyringError::Full)));
    }

    /// Every key size seals and opens; any installed key opens; a wrong key or a flipped bit
    /// does not.
    #[test]
    fn seal_and_open() {
        let mut nonces = NonceSequence::new(42);
        for len in [16, 24, 32] {
            let old = key(1, len);
            let new = key(2, len);
            let mut ring = Keyring::new(old.clone(), []);
            let sealed = ring.seal(nonces.next_nonce(), b"hello");
            assert_eq!(sealed.len(), 5 + SEAL_OVERHEAD_BYTES);
            assert_eq!(ring.open(&sealed).unwrap(), b"hello");

            let stranger = Keyring::new(new.clone(), []);
            assert_eq!(stranger.open(&sealed), Err(OpenError::NoKey));

            ring.install(new.clone()).unwrap();
            ring.use_key(&new).unwrap();
            let sealed_new = ring.seal(nonces.next_nonce(), b"world");
            assert_eq!(stranger.open(&sealed_new).unwrap(), b"world");
            assert_eq!(ring.open(&sealed).unwrap(), b"hello", "old key still opens");

            let mut tampered = sealed_new.clone();
            *tampered.last_mut().unwrap() ^= 1;
            assert_eq!(ring.open(&tampered), Err(OpenError::NoKey));
        }
        let ring = Keyring::new(key(1, 16), []);
        assert_eq!(ring.open(&[SEAL_VERSION; 10]), Err(OpenError::Truncated));
        assert_eq!(ring.open(&[9; 40]), Err(OpenError::UnknownVersion(9)));
    }

    /// Nonces do not repeat, including across the counter running out.
    #[test]
    fn nonces_do_not_repeat() {
        let mut seq = NonceSequence::new(7);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..1000 {
            assert!(seen.insert(seq.next_nonce()));
        }
        let mut seq = NonceSequence { prefix: 7, counter: u32::MAX };
        let last = seq.next_nonce();
        let after = seq.next_nonce();
        assert_ne!(last, after);
        assert_eq!(&after[8..], &[0, 0, 0, 0]);
    }

    /// The rollout flags decide what is sent and accepted, as Consul's do.
    #[test]
    fn rollout_flags() {
        let ring = Keyring::new(key(1, 32), []);
        let plain = [WIRE_VERSION, 1, 2, 3];

        let mut strict = PacketCrypto::new(Some(ring.clone()), true, true, 1);
        let sealed = strict.outgoing(&plain);
        assert_eq!(sealed[0], SEAL_VERSION);
        assert_eq!(strict.incoming(&sealed).unwrap().as_ref(), &plain);
        assert_eq!(strict.incoming(&plain), Err(OpenError::PlaintextRefused));

        let mut lenient = PacketCrypto::new(Some(ring), false, false, 2);
        assert_eq!(lenient.outgoing(&plain), plain);
        assert_eq!(lenient.incoming(&plain).unwrap().as_ref(), &plain);
        assert_eq!(lenient.incoming(&sealed).unwrap().as_ref(), &plain);

        let mut none = PacketCrypto::new(None, true, true, 3);
        assert_eq!(none.outgoing(&plain), plain);
        assert_eq!(none.incoming(&sealed), Err(OpenError::NoKeyring));
        assert_eq!(none.incoming(&plain).unwrap().as_ref(), &plain);
    }

    /// The keyring survives a save and load through the disk, primary first.
    #[test]
    fn persists_as_json_list() {
        let disk = MemDisk::new();
        assert!(Keyring::load(&disk).unwrap().is_none());
        let ring = Keyring::new(key(2, 32), [key(1, 16)]);
        ring.persist(&disk).unwrap();
        let text = String::from_utf8(disk.read(KEYRING_FILE).unwrap()).unwrap();
        assert_eq!(text, format!(r#"["{}","{}"]"#, key(2, 32).to_base64(), key(1, 16).to_base64()));
        assert_eq!(Keyring::load(&disk).unwrap(), Some(ring));

        disk.write_atomic(KEYRING_FILE, b"[]").unwrap();
        assert!(matches!(Keyring::load(&disk), Err(KeyringError::Corrupt(_))));
        disk.write_atomic(KEYRING_FILE, br#"["AAAA"]"#).unwrap();
        assert!(matches!(Keyring::load(&disk), Err(KeyringError::Key(KeyError::BadLength { len: 3 }))));
    }

    proptest! {
        /// Opening never panics on arbitrary bytes and never accepts what no key sealed.
        #[test]
        fn open_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..1500)) {
            let ring = Keyring::new(key(1, 16), [key(2, 24), key(3, 32)]);
            prop_assert!(ring.open(&bytes).is_err());
        }

        #[test]
        fn seal_round_trips(plaintext in proptest::collection::vec(any::<u8>(), 0..1371), seed in any::<u64>()) {
            let ring = Keyring::new(key(5, 24), []);
            let sealed = ring.seal(NonceSequence::new(seed).next_nonce(), &plaintext);
            prop_assert_eq!(ring.open(&sealed).unwrap(), plaintext);
        }
    }
}
