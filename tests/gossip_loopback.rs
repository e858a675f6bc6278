//! Gossip agents on real UDP sockets on 127.0.0.1, with the fast timing profile: joining,
//! failure detection, leaving, force-leave, encryption and key rotation.

use std::net::SocketAddr;
use std::time::Duration;

use cairn::gossip::{
    self, Gossip, GossipConfig, GossipKey, GossipTiming, Keyring, KeyringOp, MemberMeta, MemberStatus, Membership, Role,
};
use tokio::time::Instant;

/// Generous: agents share the test machine's cores with other builds and tests.
const DEADLINE: Duration = Duration::from_secs(30);

fn config(name: &str, keyring: Option<Keyring>) -> GossipConfig {
    let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
    GossipConfig {
        node_name: name.to_owned(),
        bind: loopback,
        advertise: loopback,
        meta: MemberMeta {
            role: if name.starts_with('s') { Role::Server } else { Role::Client },
            datacenter: "dc1".into(),
            node_id: format!("00000000-0000-0000-0000-{:0>12}", name.len()),
            server_port: name.starts_with('s').then_some(8300),
            build: "0.1.0".into(),
            protocol: 1,
        },
        keyring,
        keyring_file: true,
        verify_incoming: true,
        verify_outgoing: true,
        reconnect_timeout: gossip::DEFAULT_RECONNECT_TIMEOUT,
        timing: GossipTiming::fast(),
        disk: None,
    }
}

async fn start(name: &str, keyring: Option<Keyring>) -> Gossip {
    gossip::start(config(name, keyring)).await.expect("gossip starts")
}

/// Start `names`, all joining through the first.
async fn cluster(names: &[&str], keyring: Option<Keyring>) -> Vec<Gossip> {
    let mut agents = Vec::new();
    for name in names {
        agents.push(start(name, keyring.clone()).await);
    }
    let seed = agents[0].advertise_addr();
    for agent in &agents[1..] {
        assert_eq!(agent.join(&[seed]).await.expect("join through the seed"), 1);
    }
    agents
}

fn key(byte: u8) -> GossipKey {
    GossipKey::from_bytes(&[byte; 32]).unwrap()
}

fn status(membership: &Membership, name: &str) -> Option<MemberStatus> {
    membership.get(name).map(|m| m.status)
}

/// Wait until `check` holds for `agent`'s membership, re-checking on every published change.
async fn wait_membership(agent: &Gossip, what: &str, check: impl Fn(&Membership) -> bool) {
    let mut rx = agent.membership();
    let deadline = Instant::now() + DEADLINE;
    loop {
        if check(&rx.borrow_and_update()) {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => panic!("gossip stopped while waiting for {what}"),
            Err(_) => panic!("timed out waiting for {what}; last view: {:?}", summary(&rx.borrow())),
        }
    }
}

/// Poll a condition that is not published through a channel (counters), with a deadline.
async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn summary(membership: &Membership) -> Vec<(String, &'static str)> {
    membership.iter().map(|m| (m.name.clone(), m.status.as_str())).collect()
}

fn all_alive<'a>(names: &'a [&'a str]) -> impl Fn(&Membership) -> bool + 'a {
    move |m| m.len() == names.len() && names.iter().all(|n| status(m, n) == Some(MemberStatus::Alive))
}

async fn shutdown_all(agents: Vec<Gossip>) {
    for agent in agents {
        agent.shutdown().await;
    }
}

/// Five agents joining through one seed all come to see all five alive, with their metadata.
#[tokio::test]
async fn five_agents_converge_through_one_seed() {
    let names = ["s1", "s2", "c3", "c4", "c5"];
    let agents = cluster(&names, None).await;
    for agent in &agents {
        wait_membership(agent, "all five alive", all_alive(&names)).await;
    }
    let view = agents[3].membership().borrow().clone();
    let s2 = view.get("s2").unwrap();
    assert_eq!(s2.server_rpc_addr(), Some(SocketAddr::new(s2.addr.ip(), 8300)));
    assert_eq!(view.get("c5").unwrap().server_rpc_addr(), None);
    assert_eq!(view.servers("dc1").count(), 2);
    let stats = agents[0].stats();
    assert_eq!(stats.members_alive, 5);
    assert!(stats.packets_in > 0 && stats.packets_out > 0);
    assert_eq!(stats.dropped_decode + stats.dropped_decrypt, 0);
    shutdown_all(agents).await;
}

/// Joining also runs a push-pull with the seed over TCP on the same port: both sides count a
/// completed exchange, and nothing is refused.
#[tokio::test]
async fn join_pushes_and_pulls_the_member_list() {
    let names = ["s1", "c2", "c3"];
    let agents = cluster(&names, Some(Keyring::new(key(1), []))).await;
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (seed, joiner) = (agents[0].stats(), agents[2].stats());
        if seed.syncs_in >= 2 && joiner.syncs_out >= 1 {
            assert!(seed.sync_bytes_in > 0 && joiner.sync_bytes_in > 0);
            assert_eq!(seed.dropped_decrypt + seed.dropped_decode + seed.sync_errors, 0);
            break;
        }
        assert!(Instant::now() < deadline, "push-pulls not counted: seed {seed:?}, joiner {joiner:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for agent in &agents {
        wait_membership(agent, "all three alive", all_alive(&names)).await;
    }
    shutdown_all(agents).await;
}

/// Consul's `disable_keyring_file` stops only the keyring file: the generation still persists, so
/// a restart still comes back as a newer identity.
#[tokio::test]
async fn generation_persists_without_a_keyring_file() {
    use cairn::storage::{Disk, MemDisk};
    let disk = std::sync::Arc::new(MemDisk::new());
    for expected in 1..=2u64 {
        let mut config = config("c1", Some(Keyring::new(key(1), [])));
        config.disk = Some(disk.clone());
        config.keyring_file = false;
        let agent = gossip::start(config).await.expect("gossip starts");
        assert_eq!(agent.membership().borrow().get("c1").unwrap().generation, expected);
        agent.shutdown().await;
    }
    assert_eq!(disk.read("gossip.generation").unwrap(), b"2");
    assert!(disk.read(gossip::keyring::KEYRING_FILE).is_err(), "no keyring file when it is disabled");
}

/// An agent that stops without leaving is declared failed by the others; force-leaving it then
/// turns it into left everywhere.
#[tokio::test]
async fn crash_is_failed_and_force_leave_makes_it_left() {
    let names = ["s1", "s2", "s3", "c4", "c5"];
    let mut agents = cluster(&names, None).await;
    for agent in &agents {
        wait_membership(agent, "all five alive", all_alive(&names)).await;
    }
    agents.pop().unwrap().shutdown().await;
    for agent in &agents {
        wait_membership(agent, "c5 failed", |m| status(m, "c5") == Some(MemberStatus::Failed)).await;
    }
    assert!(matches!(agents[0].force_leave("c4"), Err(gossip::GossipError::NotFailed { .. })));
    assert!(matches!(agents[0].force_leave("nobody"), Err(gossip::GossipError::UnknownMember(_))));
    agents[1].force_leave("c5").expect("c5 is failed");
    for agent in &agents {
        wait_membership(agent, "c5 left", |m| status(m, "c5") == Some(MemberStatus::Left)).await;
    }
    assert_eq!(agents[2].stats().members_left, 1);
    shutdown_all(agents).await;
}

/// An agent that leaves gracefully is shown as left, never failed, by the others.
#[tokio::test]
async fn graceful_leave_is_left() {
    let names = ["s1", "s2", "s3", "c4", "c5"];
    let mut agents = cluster(&names, None).await;
    for agent in &agents {
        wait_membership(agent, "all five alive", all_alive(&names)).await;
    }
    let leaver = agents.remove(2);
    leaver.leave(Duration::from_secs(2)).await.expect("leave");
    assert_eq!(status(&leaver.membership().borrow(), "s3"), Some(MemberStatus::Left));
    leaver.shutdown().await;
    for agent in &agents {
        wait_membership(agent, "s3 left", |m| status(m, "s3") == Some(MemberStatus::Left)).await;
    }
    // Gossip about the departure is done; still left, not failed.
    for agent in &agents {
        assert_eq!(status(&agent.membership().borrow(), "s3"), Some(MemberStatus::Left));
    }
    shutdown_all(agents).await;
}

/// A cluster sharing a key converges; an agent with another key cannot join, is never listed,
/// and what it sends is counted as dropped.
#[tokio::test]
async fn encryption_admits_only_key_holders() {
    let names = ["s1", "s2", "c3", "c4"];
    let ring = Keyring::new(key(1), []);
    let agents = cluster(&names, Some(ring)).await;
    for agent in &agents {
        wait_membership(agent, "all four alive", all_alive(&names)).await;
    }
    assert_eq!(agents[0].keyring().unwrap().primary(), &key(1));

    let stranger = start("x9", Some(Keyring::new(key(2), []))).await;
    let before = agents[0].stats().dropped_decrypt;
    let joined = stranger.join(&[agents[0].advertise_addr()]).await;
    assert!(matches!(joined, Err(gossip::GossipError::JoinFailed { tried: 1 })), "{joined:?}");
    assert!(agents[0].stats().dropped_decrypt > before);

    // A plaintext agent is refused too (verify_incoming).
    let plain = start("x8", None).await;
    assert!(plain.join(&[agents[1].advertise_addr()]).await.is_err());
    assert!(agents[1].stats().dropped_decrypt > 0);

    for agent in &agents {
        let view = agent.membership().borrow().clone();
        assert!(view.get("x9").is_none() && view.get("x8").is_none(), "{:?}", summary(&view));
    }
    assert_eq!(status(&stranger.membership().borrow(), "s1"), None);
    stranger.shutdown().await;
    plain.shutdown().await;
    shutdown_all(agents).await;
}

/// Rotating the key (install everywhere, use everywhere, remove the old one everywhere) keeps the
/// cluster together; afterwards only the new key admits newcomers.
#[tokio::test]
async fn key_rotation_keeps_cluster_converged() {
    let names = ["s1", "s2", "c3", "c4"];
    let agents = cluster(&names, Some(Keyring::new(key(1), []))).await;
    for agent in &agents {
        wait_membership(agent, "all four alive", all_alive(&names)).await;
    }
    for agent in &agents {
        agent.keyring_local(KeyringOp::Install(key(2))).await.unwrap();
    }
    for agent in &agents {
        let keys = agent.keyring_local(KeyringOp::Use(key(2))).await.unwrap();
        assert_eq!(keys.iter().filter(|k| k.primary).map(|k| k.key.clone()).collect::<Vec<_>>(), [key(2).to_base64()]);
    }
    assert!(matches!(
        agents[0].keyring_local(KeyringOp::Remove(key(2))).await,
        Err(gossip::GossipError::Keyring(gossip::KeyringError::RemovePrimary))
    ));
    for agent in &agents {
        agent.keyring_local(KeyringOp::Remove(key(1))).await.unwrap();
    }
    assert_eq!(agents[3].keyring().unwrap().keys(), std::slice::from_ref(&key(2)));

    // Still one cluster: a newcomer holding only the new key joins and everyone sees it...
    let newcomer = start("c5", Some(Keyring::new(key(2), []))).await;
    newcomer.join(&[agents[2].advertise_addr()]).await.expect("new key admits");
    let five = ["s1", "s2", "c3", "c4", "c5"];
    for agent in agents.iter().chain([&newcomer]) {
        wait_membership(agent, "all five alive after rotation", all_alive(&five)).await;
    }
    // ...and one holding only the old key is refused.
    let stale = start("x9", Some(Keyring::new(key(1), []))).await;
    assert!(stale.join(&[agents[0].advertise_addr()]).await.is_err());
    stale.shutdown().await;
    newcomer.shutdown().await;
    shutdown_all(agents).await;
}

/// A key operation on an agent without encryption is refused, as Consul's.
#[tokio::test]
async fn keyring_needs_encryption() {
    let agent = start("c1", None).await;
    assert!(agent.keyring().is_none());
    assert!(matches!(agent.keyring_local(KeyringOp::List).await, Err(gossip::GossipError::EncryptionDisabled)));
    let stats = agent.stats();
    assert_eq!((stats.members_alive, stats.local_health), (1, 0));
    wait_until("self listed", || status(&agent.membership().borrow(), "c1") == Some(MemberStatus::Alive)).await;
    agent.shutdown().await;
}

/// Lifeguard: probes that go unanswered count against our own health (so our timeouts stretch);
/// the score is visible in the stats.
#[tokio::test]
async fn unanswered_probes_lower_local_health() {
    let names = ["s1", "s2"];
    let mut agents = cluster(&names, None).await;
    wait_membership(&agents[0], "both alive", all_alive(&names)).await;
    assert_eq!(agents[0].stats().local_health, 0);
    agents.pop().unwrap().shutdown().await;
    wait_membership(&agents[0], "s2 failed", |m| status(m, "s2") == Some(MemberStatus::Failed)).await;
    // s2 stayed suspect for several probe periods, probed and silent each time.
    assert!(agents[0].stats().local_health >= 1, "{:?}", agents[0].stats());
    shutdown_all(agents).await;
}

/// Keyring operations reach every member through one query and are reported per member:
/// list, install, use, remove, a refused removal of the primary, and a member that stopped
/// answering.
#[tokio::test]
async fn keyring_operations_cluster_wide() {
    let names = ["s1", "s2", "c3", "c4"];
    let mut agents = cluster(&names, Some(Keyring::new(key(1), []))).await;
    for agent in &agents {
        wait_membership(agent, "all four alive", all_alive(&names)).await;
    }
    let limit = Duration::from_secs(10);
    let (k1, k2) = (key(1).to_base64(), key(2).to_base64());
    let counts = |pairs: &[(&String, usize)]| pairs.iter().map(|(k, n)| ((*k).clone(), *n)).collect();

    let listed = agents[0].keyring_op(KeyringOp::List, limit).await.unwrap();
    assert_eq!((listed.num_nodes, listed.responses.len(), listed.num_errors()), (4, 4, 0));
    assert_eq!(listed.keys, counts(&[(&k1, 4)]));
    assert_eq!(listed.primary_keys, counts(&[(&k1, 4)]));

    let installed = agents[1].keyring_op(KeyringOp::Install(key(2)), limit).await.unwrap();
    assert_eq!(installed.keys, counts(&[(&k1, 4), (&k2, 4)]));
    let used = agents[2].keyring_op(KeyringOp::Use(key(2)), limit).await.unwrap();
    assert_eq!(used.primary_keys, counts(&[(&k2, 4)]));
    let refused = agents[3].keyring_op(KeyringOp::Remove(key(2)), limit).await.unwrap();
    assert_eq!((refused.responses.len(), refused.num_errors()), (4, 4), "{refused:?}");
    let removed = agents[0].keyring_op(KeyringOp::Remove(key(1)), limit).await.unwrap();
    assert_eq!(removed.keys, counts(&[(&k2, 4)]));
    for agent in &agents {
        assert_eq!(agent.keyring().unwrap().keys(), std::slice::from_ref(&key(2)));
        wait_membership(agent, "still four alive", all_alive(&names)).await;
    }

    // A member that stopped is still listed alive for a moment: it is expected and missing.
    agents.pop().unwrap().shutdown().await;
    let partial = agents[0].keyring_op(KeyringOp::List, Duration::from_millis(500)).await.unwrap();
    assert!(!partial.responses.contains_key("c4"));
    assert_eq!(partial.responses.len(), 3);
    assert_eq!(partial.num_missing(), partial.num_nodes - 3);

    let plain = start("x8", None).await;
    assert!(matches!(plain.keyring_op(KeyringOp::List, limit).await, Err(gossip::GossipError::EncryptionDisabled)));
    plain.shutdown().await;
    shutdown_all(agents).await;
}
