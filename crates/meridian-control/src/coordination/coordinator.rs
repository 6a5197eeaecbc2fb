//! The coordinator: this instance's etcd session (lease, registration, keepalives), the
//! election, the published view, acknowledgements, the barrier, and the routed view its proxy
//! follows. See the module notes of [`crate::coordination`] for the keys.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity,
    PutOptions, TlsOptions, Txn, TxnOp, WatchOptions,
};
use meridian_core::coordination::{
    Barrier, BarrierState, Fence, Publication, Routing, routed_view,
};
use meridian_core::observation::Timestamp;
use meridian_core::topology::{ClusterView, NodeId};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

use crate::coordination::GateKeeper;
use crate::monitor::MonitorHandle;

/// How often instances share their sightings of the nodes: a few times per probe interval
/// of a fast configuration, so the leader's view of them is never a probe round old.
const SIGHTINGS_EVERY: Duration = Duration::from_millis(250);

/// What the coordinator needs.
#[derive(Clone)]
pub struct CoordinationSettings {
    /// etcd client endpoints.
    pub endpoints: Vec<String>,
    /// This cluster's key prefix, without a trailing `/`.
    pub prefix: String,
    /// This instance's id.
    pub instance: String,
    /// TTL of this instance's lease.
    pub lease_ttl: Duration,
    /// etcd user and password.
    pub credentials: Option<(String, String)>,
    /// CA certificate for `https://` endpoints.
    pub ca_cert: Option<PathBuf>,
    /// Client certificate and key (PEM files), for an etcd that requires one.
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// A fenced proxy keeps routing reads.
    pub reads_when_fenced: bool,
    /// It campaigns for leadership (the `control` role).
    pub candidate: bool,
    /// What the registration says of this instance (its listeners).
    pub registration: Registration,
}

impl fmt::Debug for CoordinationSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CoordinationSettings")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("instance", &self.instance)
            .field("lease_ttl", &self.lease_ttl)
            .field("user", &self.credentials.as_ref().map(|(user, _)| user))
            .field("ca_cert", &self.ca_cert)
            .field(
                "client_cert",
                &self.client_cert.as_ref().map(|(cert, _)| cert),
            )
            .field("reads_when_fenced", &self.reads_when_fenced)
            .finish_non_exhaustive()
    }
}

/// `P/instances/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// The instance's id.
    pub id: String,
    /// Its proxy listener, if it serves clients.
    pub proxy: Option<String>,
    /// Its admin listener.
    pub admin: String,
    /// Its region (`routing.local_region`), if configured.
    pub region: Option<String>,
    /// What it does: `proxy` and `control` (every instance is both for now: it routes, and it
    /// may be elected to fail over).
    pub roles: Vec<String>,
}

/// `P/view`: who takes writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ViewDoc {
    generation: u64,
    primary: Option<String>,
    paused: bool,
    /// The instance that published it.
    leader: String,
}

impl ViewDoc {
    fn publication(&self) -> Publication {
        Publication {
            generation: self.generation,
            primary: self.primary.as_deref().map(Arc::from),
            paused: self.paused,
        }
    }
}

/// What the coordinator knows, for the operator interface.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct CoordinationState {
    /// This instance.
    pub instance: String,
    /// It has an etcd session (a live lease).
    pub session: bool,
    /// It leads.
    pub leading: bool,
    /// The leader, as etcd last said.
    pub leader: Option<String>,
    /// Its proxy routes no writes (session lost, view not current).
    pub fenced: bool,
    /// etcd is proven unable to take anyone's writes (every endpoint refuses): no failover
    /// can happen, the known primary keeps taking writes.
    pub etcd_down: bool,
    /// The generation last published.
    pub generation: Option<u64>,
    /// The last etcd error.
    pub last_error: Option<String>,
}

/// The coordinator's outputs.
#[derive(Debug, Clone)]
pub struct Coordination {
    /// The view the proxy routes by.
    pub routed: watch::Receiver<Arc<ClusterView>>,
    /// For the operator interface.
    pub state: watch::Receiver<Arc<CoordinationState>>,
}

/// Shared by the coordinator's tasks.
struct Shared {
    settings: CoordinationSettings,
    monitor: MonitorHandle,
    started: Instant,
    fence: Mutex<Fence>,
    /// The fence or the publication changed: recompute the routed view.
    changed: Notify,
    publication: watch::Sender<Option<Publication>>,
    state: watch::Sender<Arc<CoordinationState>>,
}

impl Shared {
    fn now(&self) -> Timestamp {
        Timestamp(u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    fn fence(&self, change: impl FnOnce(&mut Fence)) {
        change(&mut self.fence.lock().expect("not poisoned"));
        self.changed.notify_one();
    }

    fn state(&self, change: impl FnOnce(&mut CoordinationState)) {
        self.state.send_modify(|state| change(Arc::make_mut(state)));
    }

    fn key(&self, rest: &str) -> String {
        format!("{}/{rest}", self.settings.prefix)
    }
}

/// Starts coordinating: the session loop and the routed view. The monitor must have been
/// spawned with the gate whose `keeper` this is.
pub fn spawn(
    settings: CoordinationSettings,
    monitor: MonitorHandle,
    keeper: GateKeeper,
) -> Coordination {
    // A margin of a tenth of the TTL (at least 250 ms) covers clock-rate drift between this
    // machine and etcd's, and the time a keepalive takes to be sent.
    let margin = (settings.lease_ttl / 10).max(Duration::from_millis(250));
    let local = monitor.view();
    let initial = routed_view(
        &local.borrow(),
        None,
        Routing::Fenced,
        settings.reads_when_fenced,
    );
    let (routed_tx, routed_rx) = watch::channel(Arc::new(initial));
    let (state_tx, state_rx) = watch::channel(Arc::new(CoordinationState {
        instance: settings.instance.clone(),
        fenced: true,
        ..CoordinationState::default()
    }));
    let shared = Arc::new(Shared {
        fence: Mutex::new(Fence::new(settings.lease_ttl, margin)),
        settings,
        monitor,
        started: Instant::now(),
        changed: Notify::new(),
        publication: watch::channel(None).0,
        state: state_tx,
    });
    tokio::spawn(route(shared.clone(), local, routed_tx));
    tokio::spawn(sessions(shared, keeper));
    Coordination {
        routed: routed_rx,
        state: state_rx,
    }
}

/// Keeps the routed view current: the local monitor's view, the publication, the fence.
async fn route(
    shared: Arc<Shared>,
    mut local: watch::Receiver<Arc<ClusterView>>,
    routed: watch::Sender<Arc<ClusterView>>,
) {
    let mut publication = shared.publication.subscribe();
    loop {
        let now = shared.now();
        let (routing, deadline) = {
            let fence = shared.fence.lock().expect("not poisoned");
            (fence.routing(now), fence.deadline())
        };
        let view = routed_view(
            &local.borrow_and_update(),
            publication.borrow_and_update().as_ref(),
            routing,
            shared.settings.reads_when_fenced,
        );
        routed.send_if_modified(|current| {
            if **current == view {
                false
            } else {
                *current = Arc::new(view);
                true
            }
        });
        let fenced = routing == Routing::Fenced;
        if shared.state.borrow().fenced != fenced {
            if fenced {
                tracing::warn!("writes fenced: no current view from etcd");
            } else {
                tracing::info!("writes routed by the published view");
            }
            shared.state(|s| s.fenced = fenced);
        }
        // Wake at the fence's deadline, whatever else happens, to stop writes on time. (Past
        // it, writes may still be routed while etcd is down for everyone: every change that
        // can end that is notified.)
        let sleep = match deadline {
            Some(deadline) if routing == Routing::All && deadline > now => {
                Duration::from_millis(deadline.0 - now.0)
            }
            _ => Duration::from_secs(3600),
        };
        tokio::select! {
            changed = local.changed() => if changed.is_err() { return },
            _ = publication.changed() => {}
            () = shared.changed.notified() => {}
            () = tokio::time::sleep(sleep) => {}
        }
    }
}

/// One etcd session after another, for as long as the process runs.
async fn sessions(shared: Arc<Shared>, keeper: GateKeeper) {
    let keeper = Arc::new(keeper);
    let mut pause = Duration::from_millis(100);
    loop {
        let error = match connect(&shared.settings).await {
            Ok(client) => {
                pause = Duration::from_millis(100);
                session(&shared, client, &keeper).await
            }
            Err(e) => e,
        };
        keeper.set_leading(false);
        shared.monitor.set_leadership(false);
        shared.fence(Fence::session_lost);
        let down = etcd_refuses(&shared.settings.endpoints).await;
        shared.fence(|f| f.etcd_down(down));
        if down && !shared.state.borrow().etcd_down {
            tracing::error!(
                "etcd refuses every connection: no failover can happen; writes go on to the known primary"
            );
        }
        tracing::warn!(%error, "etcd session ended");
        shared.monitor.coordination_lost(Some(if down {
            format!(
                "etcd refuses every connection ({error}): no failover can happen; writes go on to the known primary"
            )
        } else {
            format!(
                "no etcd session ({error}): this instance cannot fail over, and its proxy stops writes once its lease may have expired"
            )
        }));
        shared.state(|s| {
            s.session = false;
            s.leading = false;
            s.etcd_down = down;
            s.last_error = Some(error);
        });
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

async fn connect(settings: &CoordinationSettings) -> Result<Client, String> {
    // No request timeout here: a campaign waits as long as another instance leads. Unary
    // requests are bounded one by one (`within`).
    let mut options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_keep_alive(Duration::from_secs(1), settings.lease_ttl / 3);
    if let Some((user, password)) = &settings.credentials {
        options = options.with_user(user, password);
    }
    if let Some(path) = &settings.ca_cert {
        let read = |path: &PathBuf, what: &str| {
            std::fs::read(path)
                .map_err(|e| format!("cannot read the etcd {what} {}: {e}", path.display()))
        };
        let mut tls =
            TlsOptions::new().ca_certificate(Certificate::from_pem(read(path, "CA certificate")?));
        if let Some((cert, key)) = &settings.client_cert {
            tls = tls.identity(Identity::from_pem(
                read(cert, "client certificate")?,
                read(key, "client key")?,
            ));
        }
        options = options.with_tls(tls);
    }
    Client::connect(&settings.endpoints, Some(options))
        .await
        .map_err(|e| format!("cannot connect to etcd: {e}"))
}

/// `request`, or an error once half the lease TTL passed without an answer: a request that
/// hangs must end the session (and fence the proxy) rather than outlive the lease.
async fn within<T>(
    ttl: Duration,
    what: &str,
    request: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(ttl / 2, request).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {:?}", ttl / 2)),
    }
}

/// Whether every endpoint actively refuses connections (nothing listens): etcd is down for
/// everyone, not merely cut off from this instance (a timeout proves nothing).
async fn etcd_refuses(endpoints: &[String]) -> bool {
    let mut refused = 0;
    for endpoint in endpoints {
        let address = endpoint
            .split_once("://")
            .map_or(endpoint.as_str(), |(_, rest)| rest);
        let attempt = tokio::time::timeout(
            Duration::from_millis(500),
            tokio::net::TcpStream::connect(address),
        )
        .await;
        if matches!(attempt, Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused) {
            refused += 1;
        }
    }
    !endpoints.is_empty() && refused == endpoints.len()
}

/// One session: a lease, the registration, then keepalives, the view, and the campaign,
/// until one of them fails. Returns why it ended.
async fn session(shared: &Arc<Shared>, mut client: Client, keeper: &Arc<GateKeeper>) -> String {
    let ttl = shared.settings.lease_ttl;
    let sent = shared.now();
    let lease = match within(
        ttl,
        "cannot get a lease",
        client.lease_grant(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX), None),
    )
    .await
    {
        Ok(granted) => granted.id(),
        Err(e) => return e,
    };
    shared.fence(|f| {
        f.etcd_down(false);
        f.session_lost();
        f.renewed(sent);
    });
    let registration = serde_json::to_string(&shared.settings.registration).expect("serializable");
    let instance_key = shared.key(&format!("instances/{}", shared.settings.instance));
    if let Err(e) = within(
        ttl,
        "cannot register",
        client.put(
            instance_key,
            registration,
            Some(PutOptions::new().with_lease(lease)),
        ),
    )
    .await
    {
        return e;
    }
    tracing::info!(lease, instance = %shared.settings.instance, "etcd session started");
    shared.monitor.coordination_lost(None);
    shared.state(|s| {
        s.session = true;
        s.etcd_down = false;
        s.last_error = None;
    });
    let result = tokio::select! {
        e = keep_alive(shared, client.clone(), lease) => e,
        e = exchange_sightings(shared, client.clone(), lease) => e,
        e = follow_view(shared, client.clone(), lease) => e,
        e = campaign(shared, client.clone(), lease, keeper), if shared.settings.candidate => e,
    };
    // Best effort: let the others see this instance gone at once rather than at the TTL.
    let _ = tokio::time::timeout(Duration::from_millis(500), client.lease_revoke(lease)).await;
    result
}

/// Renews the lease every third of its TTL; each answered renewal extends the fence.
async fn keep_alive(shared: &Shared, mut client: Client, lease: i64) -> String {
    let every = shared.settings.lease_ttl / 3;
    let (mut keeper, mut answers) = match client.lease_keep_alive(lease).await {
        Ok(pair) => pair,
        Err(e) => return format!("cannot keep the lease alive: {e}"),
    };
    loop {
        tokio::time::sleep(every).await;
        let sent = shared.now();
        if let Err(e) = keeper.keep_alive().await {
            return format!("lease keepalive failed: {e}");
        }
        match tokio::time::timeout(every, answers.message()).await {
            Ok(Ok(Some(answer))) if answer.ttl() > 0 => shared.fence(|f| f.renewed(sent)),
            Ok(Ok(Some(_))) => return "the lease expired".to_owned(),
            Ok(Ok(None)) => return "etcd closed the keepalive stream".to_owned(),
            Ok(Err(e)) => return format!("lease keepalive failed: {e}"),
            Err(_) => return "no answer to a lease keepalive".to_owned(),
        }
    }
}

/// Shares which nodes this instance reached and when (`P/observations/<id>`, on the lease),
/// and hands the other instances' sightings to the monitor: the leader fails over only a
/// primary that no observer reaches.
async fn exchange_sightings(shared: &Shared, mut client: Client, lease: i64) -> String {
    let ttl = shared.settings.lease_ttl;
    let own = shared.key(&format!("observations/{}", shared.settings.instance));
    let prefix = shared.key("observations/");
    // The latest sighting handed to the monitor per node: only newer ones are sent again.
    let mut forwarded: BTreeMap<NodeId, u64> = BTreeMap::new();
    loop {
        let status = shared.monitor.status();
        let sightings: BTreeMap<String, u64> = status
            .nodes
            .iter()
            .filter(|n| n.consecutive_failures == 0)
            .filter_map(|n| Some((n.name.to_string(), n.last_probe_at?.0)))
            .collect();
        let value = serde_json::to_string(&sightings).expect("serializable");
        if let Err(e) = within(
            ttl,
            "cannot share observations",
            client.put(
                own.clone(),
                value,
                Some(PutOptions::new().with_lease(lease)),
            ),
        )
        .await
        {
            return e;
        }
        let others = match ids_under(&mut client, ttl, &prefix).await {
            Ok(others) => others,
            Err(e) => return e,
        };
        for (instance, doc) in others {
            if instance == shared.settings.instance {
                continue;
            }
            let Ok(theirs) = serde_json::from_str::<BTreeMap<String, u64>>(&doc) else {
                continue;
            };
            for (name, at) in theirs {
                let Some(node) = status.nodes.iter().find(|n| *n.name == *name) else {
                    continue;
                };
                let latest = forwarded.entry(node.id).or_default();
                if at > *latest {
                    *latest = at;
                    shared.monitor.peer_sighting(node.id, Timestamp(at));
                }
            }
        }
        tokio::time::sleep(SIGHTINGS_EVERY).await;
    }
}

/// Reads the published view, then follows it; acknowledges each one the proxy applies.
async fn follow_view(shared: &Shared, mut client: Client, lease: i64) -> String {
    let view_key = shared.key("view");
    let ack_key = shared.key(&format!("acks/{}", shared.settings.instance));
    let ttl = shared.settings.lease_ttl;
    let got = match within(
        ttl,
        "cannot read the view",
        client.get(view_key.clone(), None),
    )
    .await
    {
        Ok(got) => got,
        Err(e) => return e,
    };
    let revision = got.header().map_or(0, |h| h.revision());
    let mut applied = 0;
    if let Some(kv) = got.kvs().first() {
        match serde_json::from_slice::<ViewDoc>(kv.value()) {
            Ok(doc) => {
                shared.publication.send_replace(Some(doc.publication()));
                shared.state(|s| {
                    s.generation = Some(doc.generation);
                    s.leader = Some(doc.leader.clone());
                });
            }
            Err(e) => return format!("unreadable view in etcd: {e}"),
        }
        applied = kv.mod_revision();
    }
    // With no view published yet there is nothing to route writes by; the proxy waits.
    shared.fence(Fence::view_read);
    if let Err(e) = acknowledge(&mut client, ttl, &ack_key, applied, lease).await {
        return e;
    }
    let mut stream = match client
        .watch(
            view_key,
            Some(WatchOptions::new().with_start_revision(revision + 1)),
        )
        .await
    {
        Ok(stream) => stream,
        Err(e) => return format!("cannot watch the view: {e}"),
    };
    loop {
        let message = match stream.message().await {
            Ok(Some(message)) => message,
            Ok(None) => return "etcd closed the view watch".to_owned(),
            Err(e) => return format!("the view watch failed: {e}"),
        };
        if message.canceled() {
            return format!("etcd cancelled the view watch: {}", message.cancel_reason());
        }
        for event in message.events() {
            let Some(kv) = event.kv() else { continue };
            if event.event_type() != EventType::Put {
                continue;
            }
            match serde_json::from_slice::<ViewDoc>(kv.value()) {
                Ok(doc) => {
                    tracing::info!(
                        generation = doc.generation,
                        primary = doc.primary.as_deref().unwrap_or("none"),
                        paused = doc.paused,
                        leader = %doc.leader,
                        "published view applied"
                    );
                    shared.publication.send_replace(Some(doc.publication()));
                    shared.state(|s| {
                        s.generation = Some(doc.generation);
                        s.leader = Some(doc.leader.clone());
                    });
                    applied = kv.mod_revision();
                }
                Err(e) => tracing::error!(%e, "unreadable view in etcd: ignored"),
            }
        }
        // Applied: the routed view is recomputed from the publication before this returns
        // to the loop, so the acknowledgement never runs ahead of the proxy.
        shared.changed.notify_one();
        tokio::task::yield_now().await;
        if let Err(e) = acknowledge(&mut client, ttl, &ack_key, applied, lease).await {
            return e;
        }
    }
}

async fn acknowledge(
    client: &mut Client,
    ttl: Duration,
    key: &str,
    revision: i64,
    lease: i64,
) -> Result<(), String> {
    within(
        ttl,
        "cannot acknowledge the view",
        client.put(
            key,
            revision.to_string(),
            Some(PutOptions::new().with_lease(lease)),
        ),
    )
    .await
    .map(|_| ())
}

/// Campaigns; once elected, leads until the session ends.
async fn campaign(shared: &Shared, mut client: Client, lease: i64, keeper: &GateKeeper) -> String {
    let election = shared.key("election");
    let elected = match client
        .campaign(election, shared.settings.instance.clone(), lease)
        .await
    {
        Ok(elected) => elected,
        Err(e) => return format!("the election failed: {e}"),
    };
    let Some(leader) = elected.leader() else {
        return "etcd elected no leader key".to_owned();
    };
    let (leader_key, leader_rev) = (leader.key().to_vec(), leader.rev());
    tracing::info!(instance = %shared.settings.instance, "elected leader");
    shared.state(|s| {
        s.leading = true;
        s.leader = Some(shared.settings.instance.clone());
    });
    lead(shared, client, keeper, &leader_key, leader_rev).await
}

/// The leader's duties: continue from the published view, then publish every view the
/// monitor decides (conditioned on still leading) and run the barrier before failover steps.
async fn lead(
    shared: &Shared,
    mut client: Client,
    keeper: &GateKeeper,
    leader_key: &[u8],
    leader_rev: i64,
) -> String {
    let view_key = shared.key("view");
    let mut local = shared.monitor.view();
    if let Some(published) = shared.publication.borrow().clone() {
        let view = local.borrow().clone();
        let primary = published
            .primary
            .as_deref()
            .and_then(|name| view.node_named(name))
            .map(|n| n.id);
        shared.monitor.continue_from(published.generation, primary);
    }
    shared.monitor.set_leadership(true);
    keeper.set_leading(true);
    let mut requested = keeper.requested.clone();
    let mut passed = 0;
    let mut written: Option<ViewDoc> = None;
    loop {
        let view = local.borrow_and_update().clone();
        let doc = ViewDoc {
            generation: view.generation,
            primary: view
                .primary
                .and_then(|id| view.node(id))
                .map(|n| n.name.to_string()),
            paused: view.paused,
            leader: shared.settings.instance.clone(),
        };
        // Nothing to publish before the monitor has chosen a primary at its start.
        let worth = doc.primary.is_some() || doc.paused || written.is_some();
        let mut revision = None;
        if worth && written.as_ref() != Some(&doc) {
            match publish(
                &mut client,
                shared.settings.lease_ttl,
                &view_key,
                &doc,
                leader_key,
                leader_rev,
            )
            .await
            {
                Ok(r) => {
                    tracing::info!(
                        generation = doc.generation,
                        primary = doc.primary.as_deref().unwrap_or("none"),
                        paused = doc.paused,
                        revision = r,
                        "view published to etcd"
                    );
                    revision = Some(r);
                    written = Some(doc.clone());
                }
                Err(e) => return e,
            }
        }
        let wanted = *requested.borrow_and_update();
        if wanted > passed && doc.paused {
            let paused_at = match revision {
                Some(r) => r,
                None => match current_revision(&mut client, shared.settings.lease_ttl, &view_key)
                    .await
                {
                    Ok(r) => r,
                    Err(e) => return e,
                },
            };
            if let Err(e) = barrier(shared, &mut client, paused_at).await {
                return e;
            }
            keeper.pass(wanted);
            passed = wanted;
        }
        tokio::select! {
            changed = local.changed() => if changed.is_err() { return "the monitor stopped".to_owned() },
            _ = requested.changed() => {}
        }
    }
}

/// Writes the view if this instance still leads; its revision.
async fn publish(
    client: &mut Client,
    ttl: Duration,
    view_key: &str,
    doc: &ViewDoc,
    leader_key: &[u8],
    leader_rev: i64,
) -> Result<i64, String> {
    let value = serde_json::to_string(doc).expect("serializable");
    let txn = Txn::new()
        .when([Compare::create_revision(
            leader_key.to_vec(),
            CompareOp::Equal,
            leader_rev,
        )])
        .and_then([TxnOp::put(view_key, value, None)]);
    let answer = within(ttl, "cannot publish the view", client.txn(txn)).await?;
    if !answer.succeeded() {
        return Err("lost the leadership (the election key is gone): not publishing".to_owned());
    }
    Ok(answer.header().map_or(0, |h| h.revision()))
}

async fn current_revision(
    client: &mut Client,
    ttl: Duration,
    view_key: &str,
) -> Result<i64, String> {
    let got = within(ttl, "cannot read the view", client.get(view_key, None)).await?;
    Ok(got.kvs().first().map_or(0, |kv| kv.mod_revision()))
}

/// Waits until every instance registered now acknowledged view revision `paused_at` or lost
/// its lease.
async fn barrier(shared: &Shared, client: &mut Client, paused_at: i64) -> Result<(), String> {
    let instances_prefix = shared.key("instances/");
    let acks_prefix = shared.key("acks/");
    let ttl = shared.settings.lease_ttl;
    let registered = ids_under(client, ttl, &instances_prefix).await?;
    let mut barrier = Barrier::new(
        u64::try_from(paused_at).unwrap_or(0),
        registered.iter().map(|(id, _)| id.clone()),
    );
    let started = Instant::now();
    loop {
        let live: BTreeSet<String> = ids_under(client, ttl, &instances_prefix)
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        for (id, _) in &registered {
            if !live.contains(id) {
                barrier.gone(id);
            }
        }
        for (id, value) in ids_under(client, ttl, &acks_prefix).await? {
            if let Ok(applied) = value.parse::<u64>() {
                barrier.acknowledged(&id, applied);
            }
        }
        match barrier.state() {
            BarrierState::Passed => {
                tracing::info!(
                    instances = registered.len(),
                    waited = ?started.elapsed(),
                    "failover barrier passed: no proxy writes by an older view"
                );
                return Ok(());
            }
            BarrierState::Waiting(waiting) => {
                if started.elapsed() > shared.settings.lease_ttl * 3 {
                    // Cannot happen while etcd works (a proxy acknowledges or its lease
                    // expires): say so rather than wait silently.
                    tracing::warn!(?waiting, "the failover barrier still waits");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `(id, value)` of every key under `prefix`.
async fn ids_under(
    client: &mut Client,
    ttl: Duration,
    prefix: &str,
) -> Result<Vec<(String, String)>, String> {
    let got = within(
        ttl,
        &format!("cannot list {prefix}"),
        client.get(prefix, Some(GetOptions::new().with_prefix())),
    )
    .await?;
    Ok(got
        .kvs()
        .iter()
        .filter_map(|kv| {
            let key = kv.key_str().ok()?;
            let id = key.strip_prefix(prefix)?.to_owned();
            Some((id, String::from_utf8_lossy(kv.value()).into_owned()))
        })
        .collect())
}
