//! Coordination of several Meridian instances, in pure code: the failover barrier and a
//! proxy's self-fencing.
//!
//! **The barrier.** Before a failover promotes anyone, the leader publishes a paused view and
//! waits until every proxy that was alive when the barrier began has either acknowledged that
//! view (it holds new writes) or lost its lease (it has fenced itself, see below). Only then is
//! it safe to promote: no proxy can still be writing to the old primary. A proxy that registers
//! after the barrier began needs no acknowledgement: it reads the current view — paused —
//! before it routes anything. The barrier always ends within one lease TTL: a proxy either
//! keeps its lease (it is connected to etcd, sees the view within a round trip and
//! acknowledges) or loses it.
//!
//! **Self-fencing.** A proxy's lease expires on the etcd server at the latest one TTL after
//! the last keepalive the server granted, which the proxy cannot know exactly; it knows when it
//! *sent* each keepalive that was answered. So it treats the lease as alive until that send
//! time plus the TTL minus a safety margin (for clock-rate drift between machines), and stops
//! routing writes from then on, until it has a session again and has re-read the current
//! view. One exception: while etcd itself is proven unable to take writes from anyone —
//! every endpoint refuses connections, or answers that it has no leader — no leader can
//! publish a failover either, so the proxy keeps routing to the primary it knows. A timeout
//! proves nothing (this proxy may be the one cut off) and fences it. The leader, for its part, only counts a lease as expired when etcd says so — later
//! than the proxy stopped.
//!
//! **The routed view.** Every instance probes the nodes itself, and its proxy routes reads by
//! those observations; but who takes writes — the primary, the generation, the pause — is
//! the leader's publication, never a local guess ([`routed_view`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::observation::Timestamp;
use crate::topology::{ClusterView, Health, Role};

/// Who takes writes, as the leader published it (node by name: ids are per instance's
/// configuration order, names are what instances share).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    /// Increases with every promotion.
    pub generation: u64,
    /// The primary's name.
    pub primary: Option<Arc<str>>,
    /// A failover is under way: writes wait.
    pub paused: bool,
}

/// The view a proxy routes by: its own monitor's observations (`local`), with the primary,
/// generation and pause of the leader's `publication`. Writes wait (the view is paused) when
/// no publication has been read yet, or when the proxy is fenced; a fenced proxy also stops
/// reads unless `reads_when_fenced`.
pub fn routed_view(
    local: &ClusterView,
    publication: Option<&Publication>,
    routing: Routing,
    reads_when_fenced: bool,
) -> ClusterView {
    let mut view = local.clone();
    let fenced = routing == Routing::Fenced;
    match publication {
        None => view.paused = true,
        Some(published) => {
            view.generation = published.generation;
            view.primary = published
                .primary
                .as_deref()
                .and_then(|name| view.node_named(name))
                .map(|n| n.id);
            view.paused = published.paused || fenced;
            for node in &mut view.nodes {
                if Some(node.id) == view.primary {
                    // The leader saw it writable; this instance's probe may not have yet.
                    node.role = Role::Primary;
                } else if node.role == Role::Primary {
                    // Writable, but not the published primary: never a write, never a read.
                    node.role = Role::Unknown;
                }
            }
        }
    }
    if fenced && !reads_when_fenced {
        for node in &mut view.nodes {
            node.health = Health::Down;
        }
    }
    view
}

/// Where a barrier stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BarrierState {
    /// Waiting for these instances.
    Waiting(Vec<String>),
    /// Every instance acknowledged or lost its lease: safe to promote.
    Passed,
}

/// The failover barrier for one paused view (identified by `view`, e.g. its etcd revision).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Barrier {
    view: u64,
    /// Instances alive when it began, and whether each is settled (acknowledged or gone).
    members: BTreeMap<String, bool>,
}

impl Barrier {
    /// A barrier for paused view `view` over the proxies registered now (their ids).
    pub fn new(view: u64, live: impl IntoIterator<Item = String>) -> Barrier {
        Barrier {
            view,
            members: live.into_iter().map(|id| (id, false)).collect(),
        }
    }

    /// The view it waits for.
    pub fn view(&self) -> u64 {
        self.view
    }

    /// `instance` reports it applied view `applied` (views only grow: a later one counts).
    pub fn acknowledged(&mut self, instance: &str, applied: u64) {
        if applied >= self.view
            && let Some(settled) = self.members.get_mut(instance)
        {
            *settled = true;
        }
    }

    /// `instance`'s lease expired (or it deregistered): it routes nothing any more.
    pub fn gone(&mut self, instance: &str) {
        if let Some(settled) = self.members.get_mut(instance) {
            *settled = true;
        }
    }

    /// Where it stands.
    pub fn state(&self) -> BarrierState {
        let waiting: Vec<String> = self
            .members
            .iter()
            .filter(|(_, settled)| !**settled)
            .map(|(id, _)| id.clone())
            .collect();
        if waiting.is_empty() {
            BarrierState::Passed
        } else {
            BarrierState::Waiting(waiting)
        }
    }
}

/// A proxy's judgement of its own lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    ttl: Duration,
    margin: Duration,
    /// When the last answered keepalive (or the grant) was sent.
    last_renewal_sent: Option<Timestamp>,
    /// The current view has been read since the last renewal after a loss.
    view_current: bool,
    /// A view was read at some point: there is a primary to keep routing to.
    view_known: bool,
    /// etcd is proven unable to take anyone's writes (see the module notes).
    etcd_down: bool,
}

/// What a proxy may route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    /// Everything.
    All,
    /// Reads only (or nothing, if configured): the lease may have expired, or the view is not
    /// known to be current.
    Fenced,
}

impl Fence {
    /// A proxy with no session yet: fenced until it has a lease and has read the view.
    /// `margin` is taken off the TTL to cover clock-rate drift (a few percent of the TTL).
    pub fn new(ttl: Duration, margin: Duration) -> Fence {
        Fence {
            ttl,
            margin,
            last_renewal_sent: None,
            view_current: false,
            view_known: false,
            etcd_down: false,
        }
    }

    /// A lease grant or keepalive sent at `sent` was answered: the lease lives at least until
    /// `sent + ttl` on the server.
    pub fn renewed(&mut self, sent: Timestamp) {
        if self.last_renewal_sent.is_none_or(|last| sent > last) {
            self.last_renewal_sent = Some(sent);
        }
    }

    /// The session was lost (or a new lease replaces the old one): the view must be read again
    /// before writes resume.
    pub fn session_lost(&mut self) {
        self.view_current = false;
    }

    /// The current view was read (after the session was (re)established).
    pub fn view_read(&mut self) {
        self.view_current = true;
        self.view_known = true;
    }

    /// Whether etcd is proven unable to take writes from anyone (every endpoint refused the
    /// connection, or etcd answered that it has no leader); `false` as soon as it answers.
    pub fn etcd_down(&mut self, down: bool) {
        self.etcd_down = down;
    }

    /// The moment writes stop if no renewal is answered before it.
    pub fn deadline(&self) -> Option<Timestamp> {
        self.last_renewal_sent
            .map(|sent| sent.plus(self.ttl.saturating_sub(self.margin)))
    }

    /// What it may route at `now`.
    pub fn routing(&self, now: Timestamp) -> Routing {
        if self.etcd_down && self.view_known {
            return Routing::All;
        }
        match self.deadline() {
            Some(deadline) if self.view_current && now < deadline => Routing::All,
            _ => Routing::Fenced,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ids(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn a_barrier_passes_once_every_live_proxy_acknowledged_or_left() {
        let mut b = Barrier::new(7, ids(&["a", "b", "c"]));
        assert_eq!(b.state(), BarrierState::Waiting(ids(&["a", "b", "c"])));
        b.acknowledged("a", 6); // an older view does not count
        b.acknowledged("a", 7);
        b.acknowledged("b", 9); // a later one does
        assert_eq!(b.state(), BarrierState::Waiting(ids(&["c"])));
        b.acknowledged("late-joiner", 7); // not a member: changes nothing
        b.gone("c");
        assert_eq!(b.state(), BarrierState::Passed);
    }

    fn local_view() -> ClusterView {
        use crate::topology::{NodeId, NodeView};
        let node = |id: u16, name: &str, role: Role| NodeView {
            id: NodeId(id),
            name: name.into(),
            region: "r".into(),
            host: "h".into(),
            port: 5432 + id,
            role,
            health: Health::Healthy,
            lag: None,
            replayed: None,
            latency: None,
        };
        ClusterView {
            generation: 1,
            primary: Some(crate::topology::NodeId(0)),
            paused: false,
            nodes: vec![
                node(0, "a", Role::Primary),
                node(1, "b", Role::Replica),
                node(2, "c", Role::Replica),
            ],
        }
    }

    #[test]
    fn the_routed_view_takes_writes_from_the_publication_and_reads_from_local_probes() {
        use crate::topology::NodeId;
        let local = local_view();
        // Nothing read yet: writes wait.
        let v = routed_view(&local, None, Routing::All, true);
        assert!(v.paused);
        // The leader promoted b (generation 3); this instance has not probed b since.
        let published = Publication {
            generation: 3,
            primary: Some("b".into()),
            paused: false,
        };
        let v = routed_view(&local, Some(&published), Routing::All, true);
        assert_eq!(
            (v.generation, v.primary, v.paused),
            (3, Some(NodeId(1)), false)
        );
        assert_eq!(v.nodes[1].role, Role::Primary);
        assert_eq!(
            v.nodes[0].role,
            Role::Unknown,
            "the old primary gets nothing"
        );
        assert_eq!(v.nodes[2].role, Role::Replica);
        // Fenced: writes wait, reads go on, or stop when so configured.
        let v = routed_view(&local, Some(&published), Routing::Fenced, true);
        assert!(v.paused);
        assert_eq!(v.nodes[2].health, Health::Healthy);
        let v = routed_view(&local, Some(&published), Routing::Fenced, false);
        assert!(v.nodes.iter().all(|n| n.health == Health::Down));
        // A paused publication pauses.
        let paused = Publication {
            paused: true,
            ..published
        };
        assert!(routed_view(&local, Some(&paused), Routing::All, true).paused);
    }

    #[test]
    fn with_no_proxy_the_barrier_is_open() {
        assert_eq!(Barrier::new(1, Vec::new()).state(), BarrierState::Passed);
    }

    #[test]
    fn a_proxy_stops_writes_before_its_lease_can_have_expired_and_resumes_after_reading_the_view() {
        let ttl = Duration::from_secs(5);
        let mut f = Fence::new(ttl, Duration::from_millis(250));
        assert_eq!(f.routing(Timestamp(0)), Routing::Fenced, "no lease yet");
        f.renewed(Timestamp(1000));
        assert_eq!(
            f.routing(Timestamp(1001)),
            Routing::Fenced,
            "view not read yet"
        );
        f.view_read();
        assert_eq!(f.routing(Timestamp(1001)), Routing::All);
        // Renewals keep it going; an older answer arriving late changes nothing.
        f.renewed(Timestamp(3000));
        f.renewed(Timestamp(2000));
        assert_eq!(f.deadline(), Some(Timestamp(7750)));
        assert_eq!(f.routing(Timestamp(7749)), Routing::All);
        assert_eq!(f.routing(Timestamp(7750)), Routing::Fenced);
        // The session comes back with a new lease: writes wait for the view.
        f.session_lost();
        f.renewed(Timestamp(9000));
        assert_eq!(f.routing(Timestamp(9001)), Routing::Fenced);
        f.view_read();
        assert_eq!(f.routing(Timestamp(9001)), Routing::All);

        // etcd down for everyone: no failover can happen, the known primary keeps writes.
        f.session_lost();
        f.etcd_down(true);
        assert_eq!(f.routing(Timestamp(60_000)), Routing::All);
        // It answers again: fenced until the session and the view are back.
        f.etcd_down(false);
        assert_eq!(f.routing(Timestamp(60_001)), Routing::Fenced);
        // Never having read a view, a down etcd does not open writes.
        let mut fresh = Fence::new(ttl, Duration::from_millis(250));
        fresh.etcd_down(true);
        assert_eq!(fresh.routing(Timestamp(1)), Routing::Fenced);
    }

    #[derive(Debug, Clone)]
    enum Event {
        Ack(usize, u64),
        Gone(usize),
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            (0usize..6, 0u64..4).prop_map(|(i, v)| Event::Ack(i, v)),
            (0usize..6).prop_map(Event::Gone),
        ]
    }

    proptest! {
        /// Whatever the order of acknowledgements and expiries, the barrier passes exactly when
        /// every proxy alive at its start acknowledged the paused view (or a later one) or
        /// left: never while one of them may still route writes by an older view.
        #[test]
        fn the_barrier_passes_exactly_when_no_member_may_still_write(
            members in 0usize..5,
            events in proptest::collection::vec(event(), 0..30),
        ) {
            let view = 2;
            let names: Vec<String> = (0..members).map(|i| format!("p{i}")).collect();
            let mut barrier = Barrier::new(view, names.clone());
            let mut settled = vec![false; members];
            for e in events {
                match e {
                    Event::Ack(i, applied) => {
                        barrier.acknowledged(&format!("p{i}"), applied);
                        if i < members && applied >= view {
                            settled[i] = true;
                        }
                    }
                    Event::Gone(i) => {
                        barrier.gone(&format!("p{i}"));
                        if i < members {
                            settled[i] = true;
                        }
                    }
                }
                let expected_waiting: Vec<String> = names
                    .iter()
                    .zip(&settled)
                    .filter(|(_, s)| !**s)
                    .map(|(n, _)| n.clone())
                    .collect();
                if expected_waiting.is_empty() {
                    prop_assert_eq!(barrier.state(), BarrierState::Passed);
                } else {
                    prop_assert_eq!(barrier.state(), BarrierState::Waiting(expected_waiting));
                }
            }
        }

        /// A proxy never routes writes at or after the moment its lease could have expired on
        /// the server (last answered renewal's send time + TTL), whatever the renewals.
        #[test]
        fn a_fenced_proxy_never_writes_past_its_possible_expiry(
            renewals in proptest::collection::vec(0u64..20_000, 0..10),
            now in 0u64..30_000,
        ) {
            let ttl = Duration::from_secs(5);
            let mut f = Fence::new(ttl, Duration::from_millis(100));
            for sent in &renewals {
                f.renewed(Timestamp(*sent));
            }
            f.view_read();
            f.session_lost();
            f.view_read();
            let latest = renewals.iter().max().copied();
            if f.routing(Timestamp(now)) == Routing::All {
                let latest = latest.expect("writes only with a lease");
                prop_assert!(now < latest + 5_000);
            }
        }
    }
}
