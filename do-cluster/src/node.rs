//! One node of the cluster: its lease, its place in the member list, the
//! shards it owns, and what it knows of the others'.
//!
//! **Ownership.** A shard is owned through a key bound to the owner's
//! lease, created in a transaction that succeeds only if the key does not
//! exist. The key's create revision is the shard's **epoch**: etcd's
//! revisions only grow, so each new owner has a larger one. The node hands
//! it to its [`Host`], which claims the shard in the replicated log with it
//! (that is the fencing by the server).
//!
//! **Placement.** Every node watches the member list and computes, by
//! rendezvous hashing, which shards it should own. It claims those that are
//! free, drains and releases those it should no longer own (a node
//! joined), and leaves the rest to their owners. A shard whose owner died
//! becomes free when the owner's lease expires.
//!
//! **Self-fencing by time.** The node knows its lease lives at least until
//! the moment it sent its last renewal that was answered, plus the lease's
//! TTL. It stops serving a little before that ([`Node::serves`] says no,
//! and its host is told the shards are lost), so it has stopped before
//! etcd could give the shard to another. A node paused past its lease (a
//! SIGSTOP, a long GC-like stall) finds on waking that its time is up, and
//! anything it still tries to append is refused by the log's fence.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, PutOptions, Txn, TxnOp, WatchOptions,
};

use crate::config::ClusterConfig;
use crate::error::ClusterError;
use crate::keys::{Keys, Named};
use crate::placement;

/// A boxed future, as [`Host`]'s methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What serves the shards a node owns (the runtime).
pub trait Host: Send + Sync + 'static {
    /// The node now owns `shards`, each at its epoch: get ready to serve
    /// them (claim them in the log with their epochs, read their objects).
    /// One outcome per shard, in order; a shard that fails is released and
    /// claimed again later.
    fn acquire(&self, shards: Vec<(u32, u64)>) -> BoxFuture<'_, Vec<Result<(), String>>>;

    /// The node is to give `shards` up: stop taking calls for them, let
    /// those in flight finish or fail (retryably), make their writes
    /// durable. They are released when this returns.
    fn drain(&self, shards: Vec<u32>) -> BoxFuture<'_, ()>;

    /// The node lost `shards` without draining them (its lease lapsed, or
    /// may have): stop serving them at once.
    fn lost(&self, shards: &[u32]);
}

/// A live member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its name.
    pub name: String,
    /// The address it serves on.
    pub address: String,
}

/// Who owns a shard, and since when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The owning node's name.
    pub node: String,
    /// The shard's epoch: the create revision of its owner key.
    pub epoch: u64,
}

/// Where a call to an object of a shard goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// This node serves it, at this epoch.
    Here {
        /// The shard's epoch.
        epoch: u64,
    },
    /// Another node owns it.
    There {
        /// Its name.
        node: String,
        /// Its address.
        address: String,
    },
    /// Nobody serves it now (it is moving, or this node is fenced): try
    /// again shortly.
    Nowhere,
}

/// What the cluster looks like from one node (see [`Node::status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// This node's name.
    pub node: String,
    /// The live members, by name.
    pub members: Vec<Member>,
    /// Each shard's owner, where it has one.
    pub owners: BTreeMap<u32, Owner>,
    /// The shards this node serves.
    pub serving: Vec<u32>,
    /// Shards whose owner is not the member placement gives them to (they
    /// are moving).
    pub misplaced: usize,
}

/// Counts of what a node did, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Shards claimed and made ready.
    pub acquired: u64,
    /// Shards drained and released.
    pub released: u64,
    /// Shards lost without draining (the lease lapsed).
    pub lost: u64,
    /// Lease renewals answered.
    pub renewals: u64,
    /// Times the lease lapsed (this node fenced itself).
    pub lapses: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Acquiring,
    Serving,
    Draining,
}

#[derive(Debug, Clone, Copy)]
struct Held {
    epoch: u64,
    phase: Phase,
}

#[derive(Debug, Default)]
struct View {
    members: BTreeMap<String, String>,
    owners: BTreeMap<u32, Owner>,
    revision: i64,
}

#[derive(Default)]
struct Counters {
    acquired: AtomicU64,
    released: AtomicU64,
    lost: AtomicU64,
    renewals: AtomicU64,
    lapses: AtomicU64,
}

struct Inner {
    config: ClusterConfig,
    keys: Keys,
    client: Client,
    host: Arc<dyn Host>,
    view: RwLock<View>,
    held: Mutex<BTreeMap<u32, Held>>,
    /// Each shard's epoch while `held` says this node serves it, else 0:
    /// what [`Node::serves`] reads on every call, without the lock.
    serving: Vec<AtomicU64>,
    lease: AtomicI64,
    /// Until when (ns after `base`) this node may serve: see the module's
    /// documentation.
    valid_until: AtomicU64,
    base: Instant,
    changed: tokio::sync::Notify,
    leaving: AtomicBool,
    counters: Counters,
}

/// One node of the cluster, joined (see the module's documentation). Its
/// background tasks run on the tokio runtime it was joined on; dropping it
/// stops them (its lease then expires on its own; [`Node::leave`] is the
/// graceful way out).
pub struct Node {
    inner: Arc<Inner>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("node", &self.inner.config.node)
            .field("shards", &self.inner.config.shards)
            .finish()
    }
}

/// How much earlier than its lease could expire a node stops serving.
fn margin(ttl: Duration) -> Duration {
    ttl / 5
}

async fn within<T>(
    timeout: Duration,
    what: &str,
    request: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, ClusterError> {
    match tokio::time::timeout(timeout, request).await {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(e)) => Err(ClusterError::Unavailable(format!("{what}: {e}"))),
        Err(_) => Err(ClusterError::Unavailable(format!(
            "{what}: no answer in {timeout:?}"
        ))),
    }
}

impl Node {
    /// Joins the cluster: connects to etcd, checks (or sets, for the first
    /// node) the shard count, waits for a previous life of this node to be
    /// gone (its lease to expire, up to twice the TTL), takes a lease and
    /// registers. Then it claims its share of the shards, handing them to
    /// `host`, and keeps doing so as members come and go.
    pub async fn join(config: ClusterConfig, host: Arc<dyn Host>) -> Result<Node, ClusterError> {
        config.check()?;
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(config.timeout)
            .with_timeout(config.timeout)
            .with_keep_alive(Duration::from_secs(1), config.timeout);
        let client = within(
            config.timeout,
            "cannot connect to etcd",
            Client::connect(&config.endpoints, Some(options)),
        )
        .await?;
        let keys = Keys::new(&config.prefix);
        let inner = Arc::new(Inner {
            keys,
            client,
            host,
            view: RwLock::new(View::default()),
            held: Mutex::new(BTreeMap::new()),
            serving: (0..config.shards).map(|_| AtomicU64::new(0)).collect(),
            lease: AtomicI64::new(0),
            valid_until: AtomicU64::new(0),
            base: Instant::now(),
            changed: tokio::sync::Notify::new(),
            leaving: AtomicBool::new(false),
            counters: Counters::default(),
            config,
        });
        inner.agree_shards().await?;
        inner.register().await?;
        inner.reload().await?;
        let tasks = vec![
            tokio::spawn(inner.clone().renew()),
            tokio::spawn(inner.clone().watch()),
            tokio::spawn(inner.clone().place()),
        ];
        inner.changed.notify_one();
        Ok(Node {
            inner,
            tasks: Mutex::new(tasks),
        })
    }

    /// This node's settings.
    pub fn config(&self) -> &ClusterConfig {
        &self.inner.config
    }

    /// The epoch at which this node serves `shard` now, if it does: it owns
    /// it, has made it ready, is not draining it, and its lease cannot have
    /// expired.
    pub fn serves(&self, shard: u32) -> Option<u64> {
        self.inner.serves(shard)
    }

    /// Where a call to an object of `shard` goes now.
    pub fn route(&self, shard: u32) -> Route {
        if let Some(epoch) = self.inner.serves(shard) {
            return Route::Here { epoch };
        }
        let view = self.inner.view.read().unwrap_or_else(|p| p.into_inner());
        match view.owners.get(&shard) {
            Some(owner) if owner.node != self.inner.config.node => {
                match view.members.get(&owner.node) {
                    Some(address) => Route::There {
                        node: owner.node.clone(),
                        address: address.clone(),
                    },
                    None => Route::Nowhere,
                }
            }
            _ => Route::Nowhere,
        }
    }

    /// The live members, by name.
    pub fn members(&self) -> Vec<Member> {
        let view = self.inner.view.read().unwrap_or_else(|p| p.into_inner());
        view.members
            .iter()
            .map(|(name, address)| Member {
                name: name.clone(),
                address: address.clone(),
            })
            .collect()
    }

    /// What the cluster looks like from this node.
    pub fn status(&self) -> Status {
        let view = self.inner.view.read().unwrap_or_else(|p| p.into_inner());
        let names: Vec<&str> = view.members.keys().map(String::as_str).collect();
        let misplaced = (0..self.inner.config.shards)
            .filter(|shard| {
                view.owners.get(shard).map(|o| o.node.as_str())
                    != placement::owner(*shard, names.iter().copied())
            })
            .count();
        let members = view
            .members
            .iter()
            .map(|(name, address)| Member {
                name: name.clone(),
                address: address.clone(),
            })
            .collect();
        let owners = view.owners.clone();
        drop(view);
        let serving = (0..self.inner.config.shards)
            .filter(|&shard| self.inner.serves(shard).is_some())
            .collect();
        Status {
            node: self.inner.config.node.clone(),
            members,
            owners,
            serving,
            misplaced,
        }
    }

    /// The cluster as this node knows it (from its watch of etcd): what
    /// [`inspect`](crate::inspect) reads from etcd itself.
    pub fn view(&self) -> crate::ClusterView {
        let view = self.inner.view.read().unwrap_or_else(|p| p.into_inner());
        crate::inspect::view_of(
            Some(self.inner.config.shards),
            &view.members,
            view.owners.clone(),
        )
    }

    /// Counts of what this node did.
    pub fn counts(&self) -> Counts {
        let c = &self.inner.counters;
        Counts {
            acquired: c.acquired.load(Ordering::Relaxed),
            released: c.released.load(Ordering::Relaxed),
            lost: c.lost.load(Ordering::Relaxed),
            renewals: c.renewals.load(Ordering::Relaxed),
            lapses: c.lapses.load(Ordering::Relaxed),
        }
    }

    /// Leaves the cluster gracefully: drains and releases every shard (the
    /// others claim them at once, without waiting for a lease to expire),
    /// then deregisters and revokes the lease.
    pub async fn leave(&self) -> Result<(), ClusterError> {
        self.inner.leaving.store(true, Ordering::Release);
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            task.abort();
        }
        let shards: Vec<(u32, u64)> = {
            let mut held = self.inner.held.lock().unwrap_or_else(|p| p.into_inner());
            for (shard, h) in held.iter_mut() {
                h.phase = Phase::Draining;
                self.inner.stop_serving(*shard);
            }
            held.iter().map(|(s, h)| (*s, h.epoch)).collect()
        };
        self.inner
            .host
            .drain(shards.iter().map(|(s, _)| *s).collect())
            .await;
        let mut client = self.inner.client.clone();
        let lease = self.inner.lease.load(Ordering::Acquire);
        // Revoking the lease deletes every key bound to it: the member and
        // the owner keys, in one step.
        within(
            self.inner.config.timeout,
            "cannot revoke the lease",
            client.lease_revoke(lease),
        )
        .await?;
        self.inner
            .counters
            .released
            .fetch_add(shards.len() as u64, Ordering::Relaxed);
        self.inner
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        Ok(())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        for task in self
            .tasks
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            task.abort();
        }
    }
}

impl Inner {
    fn now(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    fn valid(&self) -> bool {
        self.now() < self.valid_until.load(Ordering::Acquire)
    }

    fn serves(&self, shard: u32) -> Option<u64> {
        if !self.valid() {
            return None;
        }
        let epoch = self.serving.get(shard as usize)?.load(Ordering::Acquire);
        (epoch != 0).then_some(epoch)
    }

    /// `shard` is no longer served (kept with `held`, under its lock).
    fn stop_serving(&self, shard: u32) {
        if let Some(serving) = self.serving.get(shard as usize) {
            serving.store(0, Ordering::Release);
        }
    }

    /// Moves the time this node may serve until on, to `sent` (when the
    /// renewal just answered was sent) plus `ttl`, less the margin.
    fn extend(&self, sent: Instant, ttl: Duration) {
        let until = sent.saturating_duration_since(self.base) + ttl - margin(ttl);
        self.valid_until
            .fetch_max(until.as_nanos() as u64, Ordering::AcqRel);
    }

    /// Sets the shard count when the cluster is new; refuses this node when
    /// the cluster has another.
    async fn agree_shards(&self) -> Result<(), ClusterError> {
        let key = self.keys.shards();
        let wanted = self.config.shards.to_string();
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), wanted.clone(), None)])
            .or_else([TxnOp::get(key, None)]);
        let mut client = self.client.clone();
        let response = within(
            self.config.timeout,
            "cannot read the cluster's shard count",
            client.txn(txn),
        )
        .await?;
        if response.succeeded() {
            return Ok(());
        }
        let found = response
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                etcd_client::TxnOpResponse::Get(get) => get
                    .kvs()
                    .first()
                    .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
                _ => None,
            })
            .unwrap_or_default();
        if found == wanted {
            Ok(())
        } else {
            Err(ClusterError::Refused(format!(
                "the cluster has {found} shards; this node has {wanted}"
            )))
        }
    }

    /// Takes a lease and registers this node under it. A member of this
    /// name still there (a previous life of this node, killed less than a
    /// lease ago) is waited out first, up to twice the lease's TTL.
    async fn register(&self) -> Result<(), ClusterError> {
        let key = self.keys.member(&self.config.node);
        let ttl = self.config.lease_ttl;
        let deadline = Instant::now() + 2 * ttl + self.config.timeout;
        let mut client = self.client.clone();
        loop {
            let found = within(
                self.config.timeout,
                "cannot read the members",
                client.get(key.clone(), None),
            )
            .await?;
            if found.kvs().is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                return Err(ClusterError::Refused(format!(
                    "a live node is named {:?}",
                    self.config.node
                )));
            }
            tracing::info!(target: "do_cluster", node = %self.config.node, "waiting for this node's previous life to leave the cluster");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let sent = Instant::now();
        let lease = within(
            self.config.timeout,
            "cannot take a lease",
            client.lease_grant(ttl.as_secs().max(2) as i64, None),
        )
        .await?;
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key,
                self.config.address.clone(),
                Some(PutOptions::new().with_lease(lease.id())),
            )]);
        let registered = within(self.config.timeout, "cannot register", client.txn(txn)).await;
        if !registered.as_ref().is_ok_and(|r| r.succeeded()) {
            let _ = client.lease_revoke(lease.id()).await;
            registered?;
            return Err(ClusterError::Refused(format!(
                "another node registered as {:?} meanwhile",
                self.config.node
            )));
        }
        self.lease.store(lease.id(), Ordering::Release);
        self.extend(
            sent,
            Duration::from_secs(lease.ttl().max(0) as u64).min(ttl),
        );
        Ok(())
    }

    /// Reads the members and owners afresh.
    async fn reload(&self) -> Result<(), ClusterError> {
        let mut client = self.client.clone();
        let response = within(
            self.config.timeout,
            "cannot read the cluster",
            client.get(self.keys.all(), Some(GetOptions::new().with_prefix())),
        )
        .await?;
        let mut view = View {
            revision: response.header().map_or(0, |h| h.revision()),
            ..View::default()
        };
        for kv in response.kvs() {
            match self.keys.parse(kv.key()) {
                Named::Member(name) => {
                    view.members
                        .insert(name, String::from_utf8_lossy(kv.value()).into_owned());
                }
                Named::Owner(shard) => {
                    view.owners.insert(
                        shard,
                        Owner {
                            node: String::from_utf8_lossy(kv.value()).into_owned(),
                            epoch: kv.create_revision() as u64,
                        },
                    );
                }
                Named::Other => {}
            }
        }
        *self.view.write().unwrap_or_else(|p| p.into_inner()) = view;
        self.changed.notify_one();
        Ok(())
    }

    /// Renews the lease every third of its TTL, moving the time this node
    /// may serve until on with each answer; fences the node when that time
    /// comes without one, then joins again under a new lease.
    async fn renew(self: Arc<Self>) {
        let ttl = self.config.lease_ttl;
        let mut keeper = None;
        loop {
            let until = self.valid_until.load(Ordering::Acquire);
            let next = (self.now() + (ttl / 3).as_nanos() as u64).min(until);
            tokio::time::sleep_until(tokio::time::Instant::from_std(
                self.base + Duration::from_nanos(next),
            ))
            .await;
            if !self.valid() {
                self.lapse().await;
                keeper = None;
                continue;
            }
            let lease = self.lease.load(Ordering::Acquire);
            if keeper.is_none() {
                let mut client = self.client.clone();
                keeper = within(
                    self.config.timeout,
                    "cannot renew the lease",
                    client.lease_keep_alive(lease),
                )
                .await
                .ok();
            }
            let Some((renewer, answers)) = keeper.as_mut() else {
                continue;
            };
            let sent = Instant::now();
            let answer = tokio::time::timeout(self.config.timeout, async {
                renewer.keep_alive().await?;
                answers.message().await
            })
            .await;
            match answer {
                Ok(Ok(Some(answer))) if answer.ttl() > 0 => {
                    self.extend(sent, Duration::from_secs(answer.ttl() as u64).min(ttl));
                    self.counters.renewals.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Ok(Some(_))) => {
                    // etcd says the lease is gone: fenced now.
                    self.valid_until.store(0, Ordering::Release);
                }
                Ok(Ok(None)) | Ok(Err(_)) | Err(_) => {
                    tracing::debug!(target: "do_cluster", "a lease renewal went unanswered");
                    keeper = None;
                }
            }
        }
    }

    /// This node's time is up: every shard it held is lost (its host stops
    /// serving them), the old lease is revoked if etcd can be reached (its
    /// shards are free at once), and the node registers again under a new
    /// lease, trying until it can.
    async fn lapse(&self) {
        let shards: Vec<u32> = {
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            let shards: Vec<u32> = held.keys().copied().collect();
            for &shard in &shards {
                self.stop_serving(shard);
            }
            held.clear();
            shards
        };
        self.counters.lapses.fetch_add(1, Ordering::Relaxed);
        self.counters
            .lost
            .fetch_add(shards.len() as u64, Ordering::Relaxed);
        tracing::warn!(target: "do_cluster", node = %self.config.node, shards = shards.len(), "the lease lapsed: this node stops serving its shards");
        self.host.lost(&shards);
        if self.leaving.load(Ordering::Acquire) {
            return;
        }
        let mut client = self.client.clone();
        let old = self.lease.load(Ordering::Acquire);
        let _ = within(self.config.timeout, "revoke", client.lease_revoke(old)).await;
        loop {
            match self.register().await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(target: "do_cluster", error = %e, "cannot join the cluster again yet");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        self.changed.notify_one();
    }

    /// Follows the cluster's keys, keeping the view current; reads it all
    /// again when the watch breaks.
    async fn watch(self: Arc<Self>) {
        loop {
            let start = self.view.read().unwrap_or_else(|p| p.into_inner()).revision + 1;
            let mut client = self.client.clone();
            let options = WatchOptions::new().with_prefix().with_start_revision(start);
            if let Ok(mut stream) = client.watch(self.keys.all(), Some(options)).await {
                while let Ok(Some(response)) = stream.message().await {
                    if response.canceled() || response.compact_revision() > 0 {
                        break;
                    }
                    self.apply(&response);
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            let _ = self.reload().await;
        }
    }

    fn apply(&self, response: &etcd_client::WatchResponse) {
        let mut view = self.view.write().unwrap_or_else(|p| p.into_inner());
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let put = event.event_type() == EventType::Put;
            match self.keys.parse(kv.key()) {
                Named::Member(name) if put => {
                    view.members
                        .insert(name, String::from_utf8_lossy(kv.value()).into_owned());
                }
                Named::Member(name) => {
                    view.members.remove(&name);
                }
                Named::Owner(shard) if put => {
                    view.owners.insert(
                        shard,
                        Owner {
                            node: String::from_utf8_lossy(kv.value()).into_owned(),
                            epoch: kv.create_revision() as u64,
                        },
                    );
                }
                Named::Owner(shard) => {
                    view.owners.remove(&shard);
                }
                Named::Other => {}
            }
        }
        // How far the view goes: its last event's revision. (The response's
        // header may name a later one, whose events come in the next.)
        if let Some(kv) = response.events().last().and_then(|e| e.kv()) {
            view.revision = view.revision.max(kv.mod_revision());
        }
        drop(view);
        self.changed.notify_one();
    }

    /// Places shards whenever the view changes, and every second: see the
    /// module's documentation.
    async fn place(self: Arc<Self>) {
        loop {
            let _ = tokio::time::timeout(Duration::from_secs(1), self.changed.notified()).await;
            if !self.valid() || self.leaving.load(Ordering::Acquire) {
                continue;
            }
            if let Err(e) = self.clone().place_once().await {
                tracing::debug!(target: "do_cluster", error = %e, "placing shards failed; trying again");
            }
        }
    }

    async fn place_once(self: Arc<Self>) -> Result<(), ClusterError> {
        let me = self.config.node.as_str();
        let (to_claim, to_drain, gone, stale) = {
            let view = self.view.read().unwrap_or_else(|p| p.into_inner());
            if !view.members.contains_key(me) {
                // Not registered in this view yet.
                return Ok(());
            }
            let names: Vec<&str> = view.members.keys().map(String::as_str).collect();
            let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            let mut to_claim = Vec::new();
            let mut to_drain = Vec::new();
            let mut gone = Vec::new();
            let mut stale = Vec::new();
            for shard in 0..self.config.shards {
                let wanted = placement::owner(shard, names.iter().copied()) == Some(me);
                let owner = view.owners.get(&shard);
                match held.get(&shard) {
                    None if wanted && owner.is_none() => to_claim.push(shard),
                    // A key of this node it does not hold (a release that
                    // failed): gone, so that the shard can be claimed anew.
                    None => {
                        if let Some(o) = owner.filter(|o| o.node == me) {
                            stale.push((shard, o.epoch));
                        }
                    }
                    Some(h) => {
                        let ours = owner.is_some_and(|o| o.node == me && o.epoch == h.epoch);
                        // (A shard being drained goes by its release.)
                        if !ours && h.phase != Phase::Draining && view.revision >= h.epoch as i64 {
                            // The view has seen our claim, and since lost
                            // it: the key went (our lease expired).
                            gone.push(shard);
                        } else if !wanted && h.phase == Phase::Serving {
                            to_drain.push(shard);
                        }
                    }
                }
            }
            (to_claim, to_drain, gone, stale)
        };
        if !stale.is_empty() {
            self.release(&stale).await;
        }
        if !gone.is_empty() {
            {
                let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
                for &shard in &gone {
                    held.remove(&shard);
                    self.stop_serving(shard);
                }
            }
            self.counters
                .lost
                .fetch_add(gone.len() as u64, Ordering::Relaxed);
            self.host.lost(&gone);
        }
        if !to_drain.is_empty() {
            let epochs: Vec<(u32, u64)> = {
                let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
                to_drain
                    .iter()
                    .filter_map(|shard| {
                        let h = held.get_mut(shard)?;
                        h.phase = Phase::Draining;
                        self.stop_serving(*shard);
                        Some((*shard, h.epoch))
                    })
                    .collect()
            };
            let this = self.clone();
            tokio::spawn(async move {
                this.host.drain(to_drain).await;
                this.release(&epochs).await;
            });
        }
        if !to_claim.is_empty() {
            let claimed = self.claim(&to_claim).await;
            if !claimed.is_empty() {
                let this = self.clone();
                tokio::spawn(async move { this.acquire(claimed).await });
            }
        }
        Ok(())
    }

    /// Claims each of `shards` that is free, under this node's lease: the
    /// shards claimed, with their epochs.
    async fn claim(&self, shards: &[u32]) -> Vec<(u32, u64)> {
        let lease = self.lease.load(Ordering::Acquire);
        let mut claimed = Vec::new();
        for chunk in shards.chunks(64) {
            let claims = chunk.iter().map(|&shard| {
                let key = self.keys.owner(shard);
                let txn = Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(
                        key,
                        self.config.node.clone(),
                        Some(PutOptions::new().with_lease(lease)),
                    )]);
                let mut client = self.client.clone();
                async move {
                    let response = within(self.config.timeout, "claim", client.txn(txn)).await;
                    match response {
                        Ok(r) if r.succeeded() => r.header().map(|h| (shard, h.revision() as u64)),
                        _ => None,
                    }
                }
            });
            let done = futures_util::future::join_all(claims).await;
            let done: Vec<(u32, u64)> = done.into_iter().flatten().collect();
            {
                let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
                for &(shard, epoch) in &done {
                    held.insert(
                        shard,
                        Held {
                            epoch,
                            phase: Phase::Acquiring,
                        },
                    );
                }
            }
            claimed.extend(done);
        }
        claimed
    }

    /// Hands claimed shards to the host; those it could not take are
    /// released, to be claimed again later.
    async fn acquire(&self, claimed: Vec<(u32, u64)>) {
        let outcomes = self.host.acquire(claimed.clone()).await;
        let mut failed = Vec::new();
        {
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            for (i, &(shard, epoch)) in claimed.iter().enumerate() {
                match outcomes.get(i) {
                    Some(Ok(())) => {
                        if let Some(h) = held.get_mut(&shard)
                            && h.epoch == epoch
                            && h.phase == Phase::Acquiring
                        {
                            h.phase = Phase::Serving;
                            if let Some(serving) = self.serving.get(shard as usize) {
                                serving.store(epoch, Ordering::Release);
                            }
                            self.counters.acquired.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    other => {
                        let why = match other {
                            Some(Err(why)) => why.as_str(),
                            _ => "no outcome",
                        };
                        tracing::warn!(target: "do_cluster", shard, why, "a shard could not be taken: it is released");
                        failed.push((shard, epoch));
                    }
                }
            }
        }
        if !failed.is_empty() {
            tokio::time::sleep(Duration::from_millis(500)).await;
            self.release(&failed).await;
        }
        self.changed.notify_one();
    }

    /// Deletes the owner keys of `shards`, each only if it is still the one
    /// this node created (its epoch).
    async fn release(&self, shards: &[(u32, u64)]) {
        let mut released = 0;
        for &(shard, epoch) in shards {
            let key = self.keys.owner(shard);
            let txn = Txn::new()
                .when([Compare::create_revision(
                    key.clone(),
                    CompareOp::Equal,
                    epoch as i64,
                )])
                .and_then([TxnOp::delete(key, None)]);
            let mut client = self.client.clone();
            if within(self.config.timeout, "release", client.txn(txn))
                .await
                .is_ok_and(|r| r.succeeded())
            {
                released += 1;
            }
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            if held.get(&shard).is_some_and(|h| h.epoch == epoch) {
                held.remove(&shard);
                self.stop_serving(shard);
            }
        }
        self.counters
            .released
            .fetch_add(released, Ordering::Relaxed);
        self.changed.notify_one();
    }
}

/// The shards `node` should own among `members` (for tests and tools).
pub fn placed(shards: u32, members: &[&str], node: &str) -> BTreeSet<u32> {
    (0..shards)
        .filter(|&s| placement::owner(s, members.iter().copied()) == Some(node))
        .collect()
}
