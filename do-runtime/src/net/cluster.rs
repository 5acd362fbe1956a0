//! Many runtimes as one (feature `cluster`): each is a node of a cluster
//! on etcd (`do-cluster`), serves the shards the cluster gives it, and
//! reaches the others' objects over TCP.
//!
//! - **Serving.** The runtime serves its objects on the address it
//!   registers with (a TCP server of its own), so that every other node,
//!   and every client of any node, reaches them.
//! - **Taking a shard** (`Host::acquire`): it is claimed in the replicated
//!   log at its epoch (the owner key's revision in etcd: every append of
//!   the owner before is refused by the server from then on), what the
//!   store held of its objects is dropped, and they are read back from the
//!   log. Only then does the node serve it.
//! - **Giving one up** (`drain`, or `lost` when the lease lapsed): its live
//!   instances are reset (their running calls fail `Moved`, retryably; the
//!   stubs bound to them break) and the log takes no more appends of it.
//!   Writes already appended are read by the next owner, which claims the
//!   shard in the log before it reads it; later ones are refused.
//! - **Routing** (`engine::placement`): a stub for an object another node
//!   serves gets a remote end on a connection to that node; a call a
//!   client of this node makes to such an object is forwarded. A call to
//!   an object of a shard that is moving fails `Moved` (retryable).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use do_cluster::{BoxFuture, ClusterConfig, Host, Node, Status};

use crate::base::error::{DisconnectReason, Error, Result};
use crate::base::id::DurableObjectId;
use crate::base::wire::{MethodInfo, WireEntry};
use crate::engine::placement::{Placement, Route};
use crate::engine::remote::RemotePort;
use crate::engine::shared::Shared;
use crate::net::transport::client::Client;
use crate::net::transport::server::Server;
use crate::service::membership::Member;
use crate::service::replication::LogReplica;
use crate::service::runtime::{Runtime, RuntimeBuilder};

impl RuntimeBuilder {
    /// Makes this runtime a node of a cluster on etcd (feature `cluster`):
    /// objects map to the cluster's shards, each served by one live node;
    /// a stub made on any node reaches its object's node. Needs
    /// [`replicate`](RuntimeBuilder::replicate): a shard moves to another
    /// node with every acknowledged write, through the log.
    ///
    /// The runtime serves its objects over TCP on `config.address` (port 0:
    /// a free one, which it registers). [`Runtime::shutdown`] hands its
    /// shards over before it stops; a node that dies has its shards taken
    /// over once its lease expires.
    pub fn cluster(mut self, config: ClusterConfig) -> Self {
        self.node = Some(config.node.clone());
        self.join = Some(Arc::new(move |runtime: &Runtime, replica| {
            join(runtime, replica, config.clone())
        }));
        self
    }
}

/// Joins `runtime` to the cluster `config` names.
fn join(
    runtime: &Runtime,
    replica: Arc<LogReplica>,
    mut config: ClusterConfig,
) -> Result<Arc<dyn Member>> {
    let setup =
        |what: &str, e: &dyn std::fmt::Display| Error::Setup(format!("cluster: {what}: {e}"));
    if config.shards != replica.shards() {
        return Err(Error::Setup(format!(
            "cluster: it has {} shards and the replicated log {}: they must be the same",
            config.shards,
            replica.shards()
        )));
    }
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(NODE_THREADS)
        .enable_all()
        .build()
        .map_err(|e| setup("cannot start its threads", &e))?;
    let addr: SocketAddr = config
        .address
        .parse()
        .map_err(|e| setup(&format!("the address {:?}", config.address), &e))?;
    let shared = runtime.shared();
    let glue = Arc::new(Glue {
        node: OnceLock::new(),
        replica: replica.clone(),
        peers: Peers {
            node: config.node.as_str().into(),
            token: config.token.clone(),
            tokio: tokio.handle().clone(),
            clients: Arc::new(Mutex::new(HashMap::new())),
        },
    });
    // Set before the node claims anything: until it serves a shard, its
    // objects are served nowhere here.
    let placement: Arc<dyn Placement> = glue.clone();
    let _ = shared.placement.set(placement);
    let _ = shared.node.set(config.node.as_str().into());
    let host = Arc::new(ShardHost {
        shared: Arc::downgrade(&shared),
        replica,
    });
    let joined = aside(|| {
        tokio.block_on(async {
            let mut server = runtime.server().addr(addr);
            if let Some(token) = &config.token {
                server = server.token(token.expose());
            }
            let server = server
                .start()
                .await
                .map_err(|e| setup("cannot serve", &e))?;
            // Port 0: the port it got is the one the others must reach.
            if addr.port() == 0 {
                config.address = server.local_addr().to_string();
            }
            let node = Node::join(config, host)
                .await
                .map_err(|e| setup("cannot join", &e))?;
            Ok::<_, Error>((server, node))
        })
    });
    let (server, node) = match joined {
        Ok(joined) => joined,
        Err(e) => {
            tokio.shutdown_background();
            return Err(e);
        }
    };
    let _ = glue.node.set(node);
    // Connections to the other nodes are made as they join, not on the
    // first call that needs one (which would fail retryably meanwhile).
    let peers = glue.clone();
    tokio.spawn(async move {
        loop {
            if let Some(node) = peers.node.get() {
                let me = node.config().node.clone();
                for member in node.members() {
                    if member.name != me {
                        peers.peers.connect(&member.address);
                    }
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    });
    // The node's counts, as metrics, every second.
    let (metrics, counted) = (Arc::downgrade(&shared), glue.clone());
    tokio.spawn(async move {
        let mut last = do_cluster::Counts::default();
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let (Some(shared), Some(node)) = (metrics.upgrade(), counted.node.get()) else {
                return;
            };
            let now = node.counts();
            let m = &shared.metrics.cluster;
            m.shards_acquired
                .increment(now.acquired.saturating_sub(last.acquired));
            m.shards_released
                .increment(now.released.saturating_sub(last.released));
            m.shards_lost.increment(now.lost.saturating_sub(last.lost));
            m.lease_renewals
                .increment(now.renewals.saturating_sub(last.renewals));
            m.shards_served.set(node.status().serving.len() as f64);
            last = now;
        }
    });
    Ok(Arc::new(Membership {
        glue,
        server: Mutex::new(Some(server)),
        tokio: Mutex::new(Some(tokio)),
    }))
}

/// Runs `f` on a thread of its own and waits for it: the builder may be
/// called from async code, where blocking on another runtime is refused.
fn aside<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| match scope.spawn(f).join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// What the engine asks of the cluster: where objects are served.
struct Glue {
    node: OnceLock<Node>,
    replica: Arc<LogReplica>,
    peers: Peers,
}

impl Placement for Glue {
    fn serves_base(&self, base: &[u8; 16]) -> bool {
        let Some(node) = self.node.get() else {
            return false;
        };
        node.serves(self.replica.shard_of(base)).is_some()
    }

    fn list_elsewhere(
        &self,
        class: &str,
        after: Option<[u8; 16]>,
        limit: usize,
    ) -> futures_util::future::BoxFuture<'static, Result<Vec<WireEntry>>> {
        let unreachable =
            |what: String| Error::disconnected(DisconnectReason::ConnectionLost, what);
        let clients: Result<Vec<Client>> = match self.node.get() {
            None => Err(unreachable("this runtime has not joined its cluster yet".into())),
            Some(node) => node
                .members()
                .into_iter()
                .filter(|member| member.name != node.config().node)
                .map(|member| {
                    self.peers.connect(&member.address).ok_or_else(|| {
                        unreachable(format!(
                            "cluster member {:?} is not reachable yet: listing again shortly lists its objects",
                            member.name
                        ))
                    })
                })
                .collect(),
        };
        let class = class.to_owned();
        Box::pin(async move {
            let lists = futures_util::future::join_all(
                clients?
                    .iter()
                    .map(|client| client.list_served(&class, after, limit)),
            )
            .await;
            let mut all = Vec::new();
            for list in lists {
                all.extend(list?);
            }
            Ok(all)
        })
    }

    fn route(&self, class: &str, id: &DurableObjectId, methods: &'static [MethodInfo]) -> Route {
        let Some(node) = self.node.get() else {
            return Route::Nowhere;
        };
        match node.route(self.replica.shard_of(&id.base())) {
            do_cluster::Route::Here { .. } => Route::Here,
            do_cluster::Route::There { address, .. } => {
                match self.peers.port(&address, class, id, methods) {
                    Some(port) => Route::There(port),
                    None => Route::Nowhere,
                }
            }
            do_cluster::Route::Nowhere => Route::Nowhere,
        }
    }
}

/// Connections to the other nodes, one client each, made on first need.
struct Peers {
    /// This node's name (the spans of the calls it forwards carry it).
    node: Arc<str>,
    /// The cluster's shared secret, which the other nodes ask for.
    token: Option<do_cluster::Secret>,
    tokio: tokio::runtime::Handle,
    /// By the thread they serve (`None`: the node's own, shared by
    /// everything off a tokio runtime) and the address; `None` while
    /// connecting.
    clients: Arc<Mutex<HashMap<PeerKey, Option<Client>>>>,
}

/// Which client of another node: the thread it serves (`None`: the node's
/// own, shared) and the node's address.
type PeerKey = (Option<std::thread::ThreadId>, String);

/// The name of the node's own threads (its tokio runtime: its server, the
/// calls it forwards, its etcd session).
const NODE_THREADS: &str = "do-cluster";

impl Peers {
    /// A remote end for object `id` on the node at `address`; `None` while
    /// the connection to it is being made (the call fails retryably).
    fn port(
        &self,
        address: &str,
        class: &str,
        id: &DurableObjectId,
        methods: &'static [MethodInfo],
    ) -> Option<Arc<dyn RemotePort>> {
        let client = self.local(address).or_else(|| self.connect(address))?;
        client.port(class, id.clone(), methods)
    }

    /// The client of the node at `address` shared by this node, if
    /// connected; otherwise starts connecting (once at a time), and `None`.
    fn connect(&self, address: &str) -> Option<Client> {
        self.client_on((None, address.to_owned()), &self.tokio)
    }

    /// A client of the node at `address` whose connection runs on the
    /// calling thread's tokio runtime, one per calling thread: a call made
    /// there then crosses no thread to the node's own runtime and back
    /// (which doubled a forwarded call's latency). `None` off a tokio
    /// runtime, on the node's own threads, and while it connects (the
    /// shared client serves meanwhile).
    fn local(&self, address: &str) -> Option<Client> {
        let here = tokio::runtime::Handle::try_current().ok()?;
        let thread = std::thread::current();
        if thread.name() == Some(NODE_THREADS) {
            return None;
        }
        self.client_on((Some(thread.id()), address.to_owned()), &here)
    }

    /// The client under `key`, if connected; otherwise starts connecting it
    /// on `runtime` (once at a time), and `None`.
    fn client_on(&self, key: PeerKey, runtime: &tokio::runtime::Handle) -> Option<Client> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = clients.get(&key) {
            return client.clone();
        }
        clients.insert(key.clone(), None);
        let all = self.clients.clone();
        let mut builder = Client::builder().for_node(self.node.clone());
        if let Some(token) = &self.token {
            builder = builder.token(token.expose());
        }
        runtime.spawn(async move {
            let client = builder.connect(key.1.as_str()).await;
            let mut clients = all.lock().unwrap_or_else(|p| p.into_inner());
            match client {
                Ok(client) => {
                    clients.insert(key, Some(client));
                }
                Err(e) => {
                    tracing::debug!(target: "do_runtime::cluster", address = %key.1, error = %e, "cannot reach a node yet");
                    clients.remove(&key);
                }
            }
        });
        None
    }
}

/// What the cluster's node asks of the runtime: to take shards, and to
/// give them up.
struct ShardHost {
    /// Weak: the runtime's state holds the cluster, not the other way.
    shared: Weak<Shared>,
    replica: Arc<LogReplica>,
}

impl ShardHost {
    /// Resets and lets go of the live instances of `shards`.
    async fn release(&self, shards: &[u32]) {
        self.replica.release(shards);
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        shared.release_objects(self.replica.leaves(shards)).await;
    }
}

impl Host for ShardHost {
    fn acquire(
        &self,
        shards: Vec<(u32, u64)>,
    ) -> BoxFuture<'_, Vec<std::result::Result<(), String>>> {
        Box::pin(async move {
            let store = self.shared.upgrade().and_then(|shared| shared.store());
            let Some(store) = store else {
                return shards
                    .iter()
                    .map(|_| Err("the runtime has stopped".into()))
                    .collect();
            };
            let replica = self.replica.clone();
            let taken = shards.clone();
            let leave = crate::service::replication::leave_on(self.shared.clone());
            let outcome =
                tokio::task::spawn_blocking(move || replica.acquire(&store, &taken, &*leave)).await;
            let outcome = match outcome {
                Ok(Ok(read)) => {
                    tracing::info!(target: "do_runtime::cluster", shards = shards.len(), entries = read, "took shards over");
                    Ok(())
                }
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) => Err(format!("taking shards over panicked: {e}")),
            };
            shards.iter().map(|_| outcome.clone()).collect()
        })
    }

    fn drain(&self, shards: Vec<u32>) -> BoxFuture<'_, ()> {
        Box::pin(async move { self.release(&shards).await })
    }

    fn lost(&self, shards: &[u32]) {
        // No more appends at once; the instances go in the background.
        self.replica.release(shards);
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        // Sent now, ahead of any later call; the answers are not waited for.
        drop(shared.release_objects(self.replica.leaves(shards)));
    }
}

/// A runtime's membership, as the runtime holds it: leaving drains its
/// shards; dropping it without leaving stops its threads (its lease then
/// expires, and the others take its shards).
struct Membership {
    glue: Arc<Glue>,
    server: Mutex<Option<Server>>,
    tokio: Mutex<Option<tokio::runtime::Runtime>>,
}

impl Member for Membership {
    fn leave(&self) -> futures_util::future::BoxFuture<'_, ()> {
        let glue = self.glue.clone();
        let tokio = self.tokio.lock().unwrap_or_else(|p| p.into_inner());
        let left = tokio.as_ref().map(|tokio| {
            tokio.spawn(async move {
                if let Some(node) = glue.node.get()
                    && let Err(e) = node.leave().await
                {
                    tracing::warn!(target: "do_runtime::cluster", error = %e, "leaving the cluster failed: its shards move once its lease expires");
                }
            })
        });
        Box::pin(async move {
            if let Some(left) = left {
                let _ = left.await;
            }
        })
    }

    fn status(&self) -> Status {
        match self.glue.node.get() {
            Some(node) => node.status(),
            None => Status {
                node: String::new(),
                members: Vec::new(),
                owners: Default::default(),
                serving: Vec::new(),
                misplaced: 0,
            },
        }
    }

    fn view(&self) -> Option<do_cluster::ClusterView> {
        self.glue.node.get().map(Node::view)
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.server.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(tokio) = self.tokio.lock().unwrap_or_else(|p| p.into_inner()).take() {
            tokio.shutdown_background();
        }
    }
}
