//! The membership view: foca's member states plus what foca does not know, as the rest of the
//! agent reads it. Pure: every change comes in as an argument, time included.
//!
//! Mapping:
//! - foca `Alive` -> [`MemberStatus::Alive`], `Suspect` -> `Suspect`;
//! - foca `Down` -> `Left` if a leave intent was received for that name at that generation or a
//!   later one, else `Failed`;
//! - several foca identities with one name (an agent that moved address): the active one, else the
//!   newest generation;
//! - `Failed` members stay listed until `reconnect_timeout` after they failed, `Left` ones until
//!   the tombstone timeout; then they are reaped (and remembered as reaped for as long as foca still
//!   holds their identity, so they do not come back);
//! - this agent is always listed, `Alive` until it leaves.
//!
//! Cost: the published [`Membership`] is updated in place, one member at a time, so publishing it
//! is O(1); a reconcile can be limited to the names that may have changed (the driver knows them
//! from foca's notifications, timers and the updates a packet carried), which makes it one cheap
//! pass over foca's list instead of a sorted rebuild of the whole view.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use foca::{Member as FocaMember, State};
use tokio::time::Instant;

use super::identity::NodeIdentity;
use super::{Member, MemberStatus, Membership};

/// Leave intents remembered. Each is dropped when its member is reaped; the bound covers intents
/// for members never seen.
const MAX_LEAVE_INTENTS: usize = 4096;

#[derive(Debug, Clone)]
struct Entry {
    id: NodeIdentity,
    status: MemberStatus,
    since: Instant,
}

#[derive(Debug)]
pub(crate) struct View {
    me: Entry,
    others: BTreeMap<String, Entry>,
    /// `me` and `others` as the rest of the agent reads them, kept in step with every change.
    published: Membership,
    /// Highest generation known to have left, by name.
    leave_intents: BTreeMap<String, u64>,
    /// Identities reaped while foca still remembers them as down.
    reaped: BTreeSet<NodeIdentity>,
    /// Something visible changed since [`View::take_changed`] was last called.
    changed: bool,
}

impl View {
    pub(crate) fn new(me: NodeIdentity, now: Instant) -> Self {
        let me = Entry { id: me, status: MemberStatus::Alive, since: now };
        View {
            published: Membership::from_members([member(&me)]),
            me,
            others: BTreeMap::new(),
            leave_intents: BTreeMap::new(),
            reaped: BTreeSet::new(),
            changed: true,
        }
    }

    /// Whether the membership changed since the last call: then it must be published again.
    pub(crate) fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    pub(crate) fn me(&self) -> &NodeIdentity {
        &self.me.id
    }

    /// Our identity changed (foca renewed it after a false verdict).
    pub(crate) fn set_me(&mut self, id: NodeIdentity, now: Instant) {
        if self.me.id != id {
            if self.me.id.name() != id.name() {
                self.published.remove(self.me.id.name());
            }
            self.me = Entry { id, status: self.me.status, since: now };
            self.published.upsert(member(&self.me));
            self.changed = true;
        }
    }

    pub(crate) fn mark_self_left(&mut self, now: Instant) {
        if self.me.status != MemberStatus::Left {
            self.me.status = MemberStatus::Left;
            self.me.since = now;
            self.published.upsert(member(&self.me));
            self.changed = true;
        }
    }

    pub(crate) fn record_leave_intent(&mut self, name: &str, generation: u64) {
        if self.leave_intents.get(name).is_some_and(|seen| *seen >= generation) {
            return;
        }
        if self.leave_intents.len() >= MAX_LEAVE_INTENTS && !self.leave_intents.contains_key(name) {
            self.leave_intents.pop_first();
        }
        self.leave_intents.insert(name.to_owned(), generation);
    }

    /// The member called `name` as listed now (not this agent).
    pub(crate) fn other(&self, name: &str) -> Option<(&NodeIdentity, MemberStatus)> {
        self.others.get(name).map(|e| (&e.id, e.status))
    }

    /// Bring the view in line with foca's member states: all of them, or with `only`, just the
    /// members with those names (the rest are left as they are, reaped ones included).
    pub(crate) fn reconcile<'a>(
        &mut self,
        foca: impl Iterator<Item = &'a FocaMember<NodeIdentity>>,
        only: Option<&BTreeSet<String>>,
        now: Instant,
    ) {
        let mut best: BTreeMap<&str, (&NodeIdentity, MemberStatus)> = BTreeMap::new();
        let mut still_down = BTreeSet::new();
        for member in foca {
            let id = member.id();
            if only.is_some_and(|names| !names.contains(id.name())) {
                continue;
            }
            if member.state() == State::Down && self.reaped.contains(id) {
                still_down.insert(id.clone());
                continue;
            }
            let status = self.status_of(id, member.state());
            let better = match best.get(id.name()) {
                None => true,
                Some((held, held_status)) => rank(id, status) > rank(held, *held_status),
            };
            if better {
                best.insert(id.name(), (id, status));
            }
        }
        match only {
            None => self.reaped = still_down,
            Some(names) => self.reaped.retain(|id| !names.contains(id.name()) || still_down.contains(id)),
        }

        for (name, (id, status)) in best {
            match self.others.get(name) {
                Some(entry) if entry.id == *id && entry.status == status => {}
                _ => self.set_other(name, Entry { id: id.clone(), status, since: now }),
            }
        }
    }

    /// Whether the view already shows foca's `state` for `id`: if so, an update saying so cannot
    /// change it.
    pub(crate) fn shows(&self, id: &NodeIdentity, state: State) -> bool {
        self.others.get(id.name()).is_some_and(|e| e.id == *id && e.status == self.status_of(id, state))
    }

    fn set_other(&mut self, name: &str, entry: Entry) {
        // An older identity of ours that foca still lists never hides this agent.
        if name != self.me.id.name() {
            self.published.upsert(member(&entry));
        }
        self.others.insert(name.to_owned(), entry);
        self.changed = true;
    }

    fn status_of(&self, id: &NodeIdentity, state: State) -> MemberStatus {
        match state {
            State::Alive => MemberStatus::Alive,
            State::Suspect => MemberStatus::Suspect,
            State::Down if self.leave_intents.get(id.name()).is_some_and(|g| *g >= id.generation()) => {
                MemberStatus::Left
            }
            State::Down => MemberStatus::Failed,
        }
    }

    /// Forget members failed for longer than `reconnect_timeout` or left for longer than
    /// `tombstone`.
    pub(crate) fn reap(&mut self, now: Instant, reconnect_timeout: Duration, tombstone: Duration) {
        let expired: Vec<String> = self
            .others
            .iter()
            .filter(|(_, e)| match e.status {
                MemberStatus::Failed => now.saturating_duration_since(e.since) >= reconnect_timeout,
                MemberStatus::Left => now.saturating_duration_since(e.since) >= tombstone,
                MemberStatus::Alive | MemberStatus::Suspect => false,
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in &expired {
            if name != self.me.id.name() {
                self.published.remove(name);
            }
            if let Some(entry) = self.others.remove(name) {
                if self.leave_intents.get(name).is_some_and(|g| *g <= entry.id.generation()) {
                    self.leave_intents.remove(name);
                }
                self.reaped.insert(entry.id);
            }
        }
        self.changed |= !expired.is_empty();
    }

    /// The view to publish: O(1), it shares its storage with the view.
    pub(crate) fn membership(&self) -> Membership {
        self.published.clone()
    }

    /// Members (this agent included) answering or under suspicion: the cluster size for scaling.
    /// O(1): counted as members change.
    pub(crate) fn active_count(&self) -> usize {
        let active = self.published.count(MemberStatus::Alive) + self.published.count(MemberStatus::Suspect);
        let me_active = usize::from(matches!(self.me.status, MemberStatus::Alive | MemberStatus::Suspect));
        1 + active - me_active
    }
}

fn member(entry: &Entry) -> Member {
    Member {
        name: entry.id.name().to_owned(),
        addr: entry.id.addr(),
        meta: entry.id.meta().clone(),
        status: entry.status,
        generation: entry.id.generation(),
        status_since: entry.since,
    }
}

/// Which of two identities with one name to show: an active one, then the newest.
fn rank(id: &NodeIdentity, status: MemberStatus) -> (bool, u64) {
    (matches!(status, MemberStatus::Alive | MemberStatus::Suspect), id.generation())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::{MemberMeta, Role};
    use std::net::SocketAddr;

    fn id(name: &str, port: u16, generation: u64) -> NodeIdentity {
        let meta = MemberMeta {
            role: Role::Client,
            datacenter: "dc1".into(),
            node_id: format!("id-{name}"),
            server_port: None,
            build: "0.1.0".into(),
            protocol: 1,
        };
        NodeIdentity::new(name, SocketAddr::from(([127, 0, 0, 1], port)), meta, generation)
    }

    fn status(view: &View, name: &str) -> Option<MemberStatus> {
        view.membership().get(name).map(|m| m.status)
    }

    /// foca's states map onto ours, with a leave intent turning down into left.
    #[tokio::test]
    async fn states_map_and_leave_intents_apply() {
        let now = Instant::now();
        let mut view = View::new(id("me", 1, 0), now);
        let foca = [
            FocaMember::new(id("a", 2, 0), 0, State::Alive),
            FocaMember::new(id("b", 3, 0), 0, State::Suspect),
            FocaMember::new(id("c", 4, 5), 0, State::Down),
            FocaMember::new(id("d", 5, 5), 0, State::Down),
        ];
        view.record_leave_intent("d", 5);
        view.record_leave_intent("c", 4);
        assert!(view.take_changed(), "a new view is published once");
        view.reconcile(foca.iter(), None, now);
        assert!(view.take_changed());
        assert_eq!(status(&view, "me"), Some(MemberStatus::Alive));
        assert_eq!(status(&view, "a"), Some(MemberStatus::Alive));
        assert_eq!(status(&view, "b"), Some(MemberStatus::Suspect));
        assert_eq!(status(&view, "c"), Some(MemberStatus::Failed), "intent for an older generation");
        assert_eq!(status(&view, "d"), Some(MemberStatus::Left));
        assert_eq!(view.active_count(), 3);
        view.reconcile(foca.iter(), None, now);
        assert!(!view.take_changed(), "no change the second time");

        // The intent for c's generation arrives late: failed becomes left.
        view.record_leave_intent("c", 5);
        view.reconcile(foca.iter(), None, now);
        assert!(view.take_changed());
        assert_eq!(status(&view, "c"), Some(MemberStatus::Left));
    }

    /// Failed and left members are reaped after their timeouts and do not come back while foca
    /// still remembers them; a new generation of the same name does.
    #[tokio::test]
    async fn reaping() {
        let t0 = Instant::now();
        let mut view = View::new(id("me", 1, 0), t0);
        let mut foca =
            vec![FocaMember::new(id("f", 2, 0), 0, State::Down), FocaMember::new(id("l", 3, 0), 0, State::Down)];
        view.record_leave_intent("l", 0);
        view.reconcile(foca.iter(), None, t0);
        view.take_changed();
        let (reconnect, tombstone) = (Duration::from_secs(10), Duration::from_secs(20));
        view.reap(t0 + Duration::from_secs(9), reconnect, tombstone);
        assert!(!view.take_changed());
        view.reap(t0 + Duration::from_secs(10), reconnect, tombstone);
        assert!(view.take_changed());
        assert_eq!(status(&view, "f"), None);
        assert_eq!(status(&view, "l"), Some(MemberStatus::Left));
        view.reap(t0 + Duration::from_secs(20), reconnect, tombstone);
        assert!(view.take_changed());
        assert_eq!(status(&view, "l"), None);

        view.reconcile(foca.iter(), None, t0 + Duration::from_secs(21));
        assert!(!view.take_changed(), "reaped stay reaped");
        foca.push(FocaMember::new(id("f", 2, 1), 0, State::Alive));
        view.reconcile(foca.iter(), None, t0 + Duration::from_secs(22));
        assert!(view.take_changed());
        assert_eq!(status(&view, "f"), Some(MemberStatus::Alive));

        view.mark_self_left(t0 + Duration::from_secs(23));
        assert!(view.take_changed());
        assert_eq!(status(&view, "me"), Some(MemberStatus::Left));
    }

    /// With two identities for one name, the active one is shown, else the newest.
    #[tokio::test]
    async fn one_entry_per_name() {
        let now = Instant::now();
        let mut view = View::new(id("me", 1, 0), now);
        let foca = [FocaMember::new(id("a", 2, 7), 0, State::Down), FocaMember::new(id("a", 9, 1), 0, State::Alive)];
        view.reconcile(foca.iter(), None, now);
        let a = view.membership().get("a").cloned().unwrap();
        assert_eq!((a.status, a.addr.port(), a.generation), (MemberStatus::Alive, 9, 1));
    }

    /// A reconcile limited to some names leaves the other members as they were, and a full one
    /// catches up; the active count follows both.
    #[tokio::test]
    async fn reconcile_by_name() {
        let now = Instant::now();
        let mut view = View::new(id("me", 1, 0), now);
        let mut foca =
            [FocaMember::new(id("a", 2, 0), 0, State::Alive), FocaMember::new(id("b", 3, 0), 0, State::Alive)];
        view.reconcile(foca.iter(), None, now);
        assert_eq!(view.active_count(), 3);
        view.take_changed();
        foca[0] = FocaMember::new(id("a", 2, 0), 1, State::Suspect);
        foca[1] = FocaMember::new(id("b", 3, 0), 0, State::Down);
        view.reconcile(foca.iter(), Some(&BTreeSet::from(["a".to_owned()])), now);
        assert!(view.take_changed());
        assert_eq!(status(&view, "a"), Some(MemberStatus::Suspect));
        assert_eq!(status(&view, "b"), Some(MemberStatus::Alive), "not named: not read");
        assert_eq!(view.active_count(), 3);
        assert!(!view.shows(&id("b", 3, 0), State::Down));
        view.reconcile(foca.iter(), None, now);
        assert_eq!(status(&view, "b"), Some(MemberStatus::Failed));
        assert_eq!(view.active_count(), 2);
        assert!(view.shows(&id("b", 3, 0), State::Down));
        assert_eq!(view.membership().count(MemberStatus::Failed), 1);
        view.mark_self_left(now);
        assert_eq!(view.active_count(), 2, "this agent counts as active until it is gone");
    }
}
