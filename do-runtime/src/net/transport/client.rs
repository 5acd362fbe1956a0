//! The client side: one connection to a remote runtime, shared by many stubs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::task::Poll;

use futures_util::future::BoxFuture;
use futures_util::task::AtomicWaker;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::api::listing::WireEntry;
use crate::api::namespace::Namespace;
use crate::api::object::DurableObject;
use crate::api::remote::{RemoteNamespace, RemotePort};
use crate::api::stub::RawStub;
use crate::base::error::{DisconnectReason, Error, Result};
use crate::base::id::{DurableObjectId, NamespaceKey};
use crate::base::passing::Home;
use crate::base::wire::MethodInfo;
use crate::engine::reply::Reply;
use crate::net::transport::frame::{
    self, CallRef, ClientFrame, FrameReader, NamespaceInfo, PROTOCOL_VERSION, ServerFrame,
};

/// A connection to a runtime served over TCP (see
/// [`Runtime::serve`](crate::Runtime::serve)). Its namespaces have the same
/// API as in process; many stubs share one connection, and each keeps its
/// calls in order across the network.
///
/// When the connection breaks, every call in flight and every later call on
/// the stubs that used it fails with [`Error::Disconnected`]; a stub taken
/// afterwards opens a new connection.
///
/// ```no_run
/// # async fn f() -> Result<(), do_runtime::Error> {
/// # use do_runtime::{durable_object, Ctx, Error};
/// # pub struct Counter { ctx: Ctx }
/// # #[durable_object] impl Counter { pub fn new(ctx: Ctx) -> Self { Self { ctx } }
/// #   pub async fn increment(&self, n: i64) -> Result<i64, Error> { Ok(n) } }
/// use do_runtime::Client;
///
/// let client = Client::builder().token("s3cret").connect("127.0.0.1:7878").await?;
/// let counters = client.namespace::<Counter>()?;
/// let n = counters.get_by_name("hits").increment(1).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    shared: Arc<ClientShared>,
}

/// Configures a [`Client`].
#[derive(Clone, Debug)]
#[must_use]
pub struct ClientBuilder {
    token: Option<Vec<u8>>,
    max_frame_bytes: usize,
    connect_timeout: Duration,
    /// The cluster node this client forwards calls for (its spans say so).
    node: Option<Arc<str>>,
}

/// What every connection of one client needs.
#[derive(Clone, Debug)]
struct Settings {
    addr: SocketAddr,
    token: Option<Vec<u8>>,
    max_frame_bytes: usize,
    connect_timeout: Duration,
}

pub(crate) struct ClientShared {
    settings: Settings,
    /// The namespaces the server described at the first connection; later
    /// connections must describe the same.
    welcome: Vec<NamespaceInfo>,
    classes: Vec<Arc<RemoteClass>>,
    current: Mutex<Connection>,
    runtime: tokio::runtime::Handle,
    /// Where ids and stubs in results come to life (see `base::passing`).
    home: std::sync::OnceLock<Arc<dyn Home>>,
}

/// One connection of a client as the home of what its results carry: the
/// client's, the streamed bodies arriving on this connection, and the
/// WebSockets its fetch replies hand over.
struct ConnHome {
    client: Arc<dyn Home>,
    conn: Connection,
}

impl Home for ConnHome {
    fn key(&self, tag: u64) -> Option<&NamespaceKey> {
        self.client.key(tag)
    }

    fn stub(
        &self,
        class: &str,
        methods: &'static [MethodInfo],
        id: DurableObjectId,
    ) -> Result<Box<dyn std::any::Any + Send>> {
        self.client.stub(class, methods, id)
    }

    fn claim_stream(&self, number: u64) -> Result<crate::base::streaming::BodyStream> {
        self.conn
            .state
            .incoming
            .claim(number, self.conn.state.clone())
    }

    fn socket_relay(&self) -> Option<Arc<dyn crate::base::fetch::SocketRelay>> {
        Some(Arc::new(SocketThrough {
            conn: self.conn.clone(),
        }))
    }
}

/// A WebSocket accepted by an object of the server, completed by a
/// gateway of this process: the connection carries its bytes both ways
/// as two streamed bodies (see `streams`), and holds the connection open
/// while it lasts.
#[cfg_attr(not(feature = "gateway"), allow(dead_code))]
struct SocketThrough {
    conn: Connection,
}

impl crate::base::fetch::SocketRelay for SocketThrough {
    fn claim(
        &self,
        socket: u64,
        token: u128,
        inbound: crate::base::streaming::BodyStream,
    ) -> BoxFuture<'static, Result<crate::base::streaming::BodyStream>> {
        let conn = self.conn.clone();
        Box::pin(async move {
            let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
                Error::Unsupported("a WebSocket is relayed from a tokio runtime only".into())
            })?;
            let state = conn.state.clone();
            let stream = state.next_stream.fetch_add(1, Ordering::Relaxed);
            let (reply, rx) = oneshot::channel();
            let call = state.queue(
                |call| ClientFrame::ClaimSocket {
                    call,
                    socket,
                    token,
                    stream,
                },
                reply,
            )?;
            // Given up before the answer: the server is told to let both
            // ways go.
            let mut waiting = Abandon {
                state: Some(state.clone()),
                call,
            };
            let answer = rx.await.map_err(|_| {
                Error::disconnected(
                    DisconnectReason::ConnectionLost,
                    "the connection has closed",
                )
            })?;
            waiting.state = None;
            answer?;
            let outbound = state.incoming.claim(call, state.clone())?;
            state
                .forwards
                .start(&runtime, stream, inbound, state.clone());
            // The connection stays open as long as the socket's bytes flow.
            Ok(outbound.holding(Box::new(conn)))
        })
    }
}

/// A claim of a WebSocket given up before its answer: the bytes for the
/// client, if the claim succeeds, are let go, so the other runtime's pump
/// finds its client gone (at its next write, a ping at the latest) and
/// tells the object.
struct Abandon {
    state: Option<Arc<ConnState>>,
    call: u64,
}

impl Drop for Abandon {
    fn drop(&mut self) {
        if let Some(state) = self.state.take() {
            state.incoming.abandon(self.call, &*state);
        }
    }
}

/// A client as the home of what its results carry: ids checked under the
/// server's namespace keys, stubs through the client's connection.
struct ClientHome {
    keys: Vec<NamespaceKey>,
    /// Weak: the client holds its home.
    client: std::sync::Weak<ClientShared>,
}

impl Home for ClientHome {
    fn key(&self, tag: u64) -> Option<&NamespaceKey> {
        self.keys.iter().find(|k| k.tag() == tag)
    }

    fn stub(
        &self,
        class: &str,
        methods: &'static [MethodInfo],
        id: DurableObjectId,
    ) -> Result<Box<dyn std::any::Any + Send>> {
        let client = self.client.upgrade().ok_or_else(|| {
            Error::disconnected(DisconnectReason::ConnectionLost, "the client is gone")
        })?;
        let found = client.classes.iter().find(|c| c.name == class).cloned();
        let class = found.ok_or_else(|| Error::NotRegistered(class.to_owned()))?;
        crate::base::passing::check_namespace(&id, &class.name, &class.key)?;
        let port: Arc<dyn RemotePort> = Arc::new(client.stub(&class, id, methods));
        Ok(Box::new(RawStub::remote(port)))
    }
}

/// A namespace of the server.
pub(crate) struct RemoteClass {
    pub index: u32,
    pub name: String,
    pub schema: String,
    pub key: NamespaceKey,
    /// The cluster node the client forwards for (see `ClientBuilder::for_node`).
    pub node: Option<Arc<str>>,
}

/// One connection, as a stub or the client holds it. When the last holder
/// lets go, the connection ends.
#[derive(Clone)]
struct Connection {
    state: Arc<ConnState>,
    _held: Arc<Held>,
}

/// Ends the connection when dropped (by its last holder).
struct Held(Arc<ConnState>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.lock().dropped = true;
        self.0.writer.wake();
    }
}

impl Connection {
    fn new(state: Arc<ConnState>) -> Self {
        Connection {
            _held: Arc::new(Held(state.clone())),
            state,
        }
    }
}

/// What the stubs, the writer and the reader of one connection share.
struct ConnState {
    calls: Mutex<Calls>,
    next_stub: AtomicU64,
    /// The writer's task, woken when the first frame of a batch is queued.
    writer: AtomicWaker,
    /// The streamed bodies arriving on this connection.
    incoming: Arc<crate::net::transport::streams::Incoming>,
    /// The streamed request bodies it sends, numbered by `next_stream`.
    forwards: Arc<crate::net::transport::streams::Forwards>,
    next_stream: AtomicU64,
}

/// Keyed by call numbers, which the client picks: no need for a hasher
/// that resists chosen keys.
type Waiting = HashMap<u64, oneshot::Sender<Reply>, foldhash::fast::FixedState>;

struct Calls {
    /// Why the connection ended, once it has.
    closed: Option<String>,
    /// Every holder of the connection has let go.
    dropped: bool,
    next_call: u64,
    waiting: Waiting,
    /// Frames queued for the writer, encoded back to back: each call is
    /// encoded here, under the lock it takes anyway, with no buffer or
    /// channel message of its own.
    out: Vec<u8>,
}

impl Calls {
    /// Encodes `frame` for the writer; whether it is the first since the
    /// writer last took them (and the writer needs waking).
    fn append<F: serde::Serialize>(&mut self, frame: &F) -> Result<bool> {
        let first = self.out.is_empty();
        frame::encode(frame, &mut self.out)?;
        Ok(first)
    }
}

impl ConnState {
    fn new() -> Arc<Self> {
        Arc::new(ConnState {
            calls: Mutex::new(Calls {
                closed: None,
                dropped: false,
                next_call: 0,
                waiting: Waiting::default(),
                out: Vec::new(),
            }),
            next_stub: AtomicU64::new(0),
            writer: AtomicWaker::new(),
            incoming: Arc::default(),
            forwards: Arc::default(),
            next_stream: AtomicU64::new(1),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Calls> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_closed(&self) -> bool {
        self.lock().closed.is_some()
    }

    /// Queues one request: numbers it, encodes it with `frame(call)` and
    /// keeps `reply` for its answer; returns its number. Fails when the
    /// connection has ended.
    fn queue<F: serde::Serialize>(
        &self,
        frame: impl FnOnce(u64) -> F,
        reply: oneshot::Sender<Reply>,
    ) -> Result<u64> {
        let mut calls = self.lock();
        if let Some(reason) = &calls.closed {
            return Err(Error::disconnected(
                DisconnectReason::ConnectionLost,
                reason.clone(),
            ));
        }
        let call = calls.next_call;
        let first = calls.append(&frame(call))?;
        calls.next_call += 1;
        calls.waiting.insert(call, reply);
        drop(calls);
        if first {
            self.writer.wake();
        }
        Ok(call)
    }

    /// Queues a frame that expects no reply (if the connection is open).
    fn tell<F: serde::Serialize>(&self, frame: &F) {
        let mut calls = self.lock();
        if calls.closed.is_none() && calls.append(frame).unwrap_or(false) {
            drop(calls);
            self.writer.wake();
        }
    }

    /// Ends the connection: every call still waiting fails now.
    fn close(&self, reason: String) {
        self.incoming.lost(&reason);
        self.forwards.cancel_all();
        let waiting = {
            let mut calls = self.lock();
            calls.closed.get_or_insert(reason.clone());
            calls.out = Vec::new();
            std::mem::take(&mut calls.waiting)
        };
        for (_, reply) in waiting {
            let _ = reply.send(Err(Error::disconnected(
                DisconnectReason::ConnectionLost,
                reason.clone(),
            )));
        }
    }
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            token: None,
            max_frame_bytes: 16 * 1024 * 1024,
            connect_timeout: Duration::from_secs(10),
            node: None,
        }
    }
}

impl ClientBuilder {
    /// The shared secret the server asks for.
    pub fn token(mut self, token: impl AsRef<[u8]>) -> Self {
        self.token = Some(token.as_ref().to_vec());
        self
    }

    /// The largest frame accepted from the server. Default: 16 MiB.
    pub fn max_frame_bytes(mut self, bytes: usize) -> Self {
        self.max_frame_bytes = bytes;
        self
    }

    /// How long connecting and the handshake may take. Default: 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The cluster node whose calls to other nodes this client carries:
    /// the spans of its calls carry the node's name.
    #[cfg(feature = "cluster")]
    pub(crate) fn for_node(mut self, node: Arc<str>) -> Self {
        self.node = Some(node);
        self
    }

    /// Connects, shakes hands, and learns the server's namespaces. Must run
    /// inside a tokio runtime, which then drives the connection.
    pub async fn connect(self, addr: impl tokio::net::ToSocketAddrs) -> Result<Client> {
        let addr = tokio::net::lookup_host(addr)
            .await
            .map_err(|e| {
                Error::disconnected(
                    DisconnectReason::ConnectionLost,
                    format!("cannot resolve the server address: {e}"),
                )
            })?
            .next()
            .ok_or_else(|| {
                Error::disconnected(
                    DisconnectReason::ConnectionLost,
                    "the server address resolves to nothing",
                )
            })?;
        let settings = Settings {
            addr,
            token: self.token,
            max_frame_bytes: self.max_frame_bytes,
            connect_timeout: self.connect_timeout,
        };
        let (stream, reader, welcome) = handshake(&settings).await?;
        let classes = welcome
            .iter()
            .map(|ns| {
                Ok(Arc::new(RemoteClass {
                    index: ns.index,
                    name: ns.class.clone(),
                    schema: ns.schema.clone(),
                    key: NamespaceKey::from_key(&ns.class, &ns.key)?,
                    node: self.node.clone(),
                }))
            })
            .collect::<Result<Vec<_>>>()?;
        let state = ConnState::new();
        let runtime = tokio::runtime::Handle::current();
        runtime.spawn(run_connection(
            state.clone(),
            stream,
            reader,
            settings.max_frame_bytes,
        ));
        let shared = Arc::new(ClientShared {
            settings,
            welcome,
            classes,
            current: Mutex::new(Connection::new(state)),
            runtime,
            home: std::sync::OnceLock::new(),
        });
        let home = ClientHome {
            keys: shared.classes.iter().map(|c| c.key.clone()).collect(),
            client: Arc::downgrade(&shared),
        };
        let _ = shared.home.set(Arc::new(home));
        Ok(Client { shared })
    }
}

impl Client {
    /// Starts configuring a client.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Connects with the default settings (no token).
    pub async fn connect(addr: impl tokio::net::ToSocketAddrs) -> Result<Client> {
        ClientBuilder::default().connect(addr).await
    }

    /// The namespace of class `T` on the server. Fails with
    /// [`Error::SchemaMismatch`], naming the class, when the server does not
    /// serve `T` or serves a different definition of it.
    pub fn namespace<T: DurableObject>(&self) -> Result<Namespace<T>> {
        let class = self.shared.classes.iter().find(|c| c.name == T::CLASS);
        match class {
            Some(class) if class.schema == T::SCHEMA => {
                Ok(Namespace::remote(Arc::new(ClientNamespace {
                    client: self.shared.clone(),
                    class: class.clone(),
                })))
            }
            Some(class) => Err(Error::SchemaMismatch {
                class: T::CLASS.to_owned(),
                client: T::SCHEMA.to_owned(),
                server: class.schema.clone(),
            }),
            None => Err(Error::SchemaMismatch {
                class: T::CLASS.to_owned(),
                client: T::SCHEMA.to_owned(),
                server: "(not served)".to_owned(),
            }),
        }
    }

    /// A remote end for object `id` of the class named `class`, on this
    /// client's connection (a cluster's forwarding); `None` when the server
    /// does not serve the class.
    #[cfg(feature = "cluster")]
    pub(crate) fn port(
        &self,
        class: &str,
        id: DurableObjectId,
        methods: &'static [MethodInfo],
    ) -> Option<Arc<dyn RemotePort>> {
        let class = self.shared.classes.iter().find(|c| c.name == class)?;
        Some(Arc::new(self.shared.stub(class, id, methods)))
    }

    /// What the server serves itself of class `class`: a page after
    /// `after` of at most `limit` objects (a cluster member asks the
    /// others this to list the whole cluster).
    #[cfg(feature = "cluster")]
    pub(crate) async fn list_served(
        &self,
        class: &str,
        after: Option<[u8; 16]>,
        limit: usize,
    ) -> Result<Vec<WireEntry>> {
        let index = self
            .shared
            .classes
            .iter()
            .find(|c| c.name == class)
            .map(|c| c.index)
            .ok_or_else(|| Error::NotRegistered(class.to_owned()))?;
        self.shared.list_ids(index, after, limit, true).await
    }

    /// The class names the server serves.
    pub fn namespaces(&self) -> Vec<String> {
        self.shared.classes.iter().map(|c| c.name.clone()).collect()
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.shared.settings.addr
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.shared.settings.addr)
            .field("namespaces", &self.namespaces())
            .finish()
    }
}

impl ClientShared {
    /// The live connection, or a new one (connecting in the background: calls
    /// made meanwhile queue up in order) when the last one ended.
    fn connection(&self) -> Connection {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.state.is_closed() {
            let state = ConnState::new();
            let settings = self.settings.clone();
            let welcome = self.welcome.clone();
            let task_state = state.clone();
            self.runtime.spawn(async move {
                match handshake(&settings).await {
                    Ok((_, _, again)) if again != welcome => task_state.close(
                        "the server restarted with different namespaces; reconnect with a client built for them".into(),
                    ),
                    Ok((stream, reader, _)) => {
                        run_connection(task_state, stream, reader, settings.max_frame_bytes).await;
                    }
                    Err(e) => task_state.close(e.to_string()),
                }
            });
            *current = Connection::new(state);
        }
        current.clone()
    }

    /// Asks the server for a page of the objects of namespace `class`: in
    /// a cluster, of the whole cluster, or with `here` of the objects it
    /// serves alone.
    pub(crate) async fn list_ids(
        &self,
        class: u32,
        after: Option<[u8; 16]>,
        limit: usize,
        here: bool,
    ) -> Result<Vec<WireEntry>> {
        let conn = self.connection();
        let (reply, rx) = oneshot::channel();
        let after = after.map(|a| a.to_vec());
        let limit = u32::try_from(limit).unwrap_or(u32::MAX);
        conn.state.queue(
            |call| ClientFrame::ListIds {
                call,
                class,
                after,
                limit,
                here,
            },
            reply,
        )?;
        let bytes = rx.await.map_err(|_| {
            Error::disconnected(
                DisconnectReason::ConnectionLost,
                "the connection has closed",
            )
        })??;
        postcard::from_bytes(&bytes)
            .map_err(|e| Error::Codec(format!("cannot decode a listing: {e}")))
    }

    /// A stub for `id` of `class`, on the current connection.
    pub(crate) fn stub(
        &self,
        class: &Arc<RemoteClass>,
        id: DurableObjectId,
        methods: &'static [MethodInfo],
    ) -> RemoteStub {
        let conn = self.connection();
        let number = conn.state.next_stub.fetch_add(1, Ordering::Relaxed);
        // The stub's results decode under its connection's home (their
        // streamed bodies arrive on that connection).
        let home = self.home.get().map(|client| {
            Arc::new(ConnHome {
                client: client.clone(),
                conn: conn.clone(),
            }) as Arc<dyn Home>
        });
        RemoteStub {
            conn,
            number,
            class: class.index,
            info: class.clone(),
            methods,
            wrong_namespace: (id.namespace_tag() != class.key.tag()).then(|| class.name.clone()),
            id,
            broken: AtomicBool::new(false),
            aborted: AtomicBool::new(false),
            home,
            named: AtomicBool::new(false),
        }
    }
}

/// A namespace of the server, as the client's [`Namespace`]s hold it.
struct ClientNamespace {
    client: Arc<ClientShared>,
    class: Arc<RemoteClass>,
}

impl RemoteNamespace for ClientNamespace {
    fn key(&self) -> &NamespaceKey {
        &self.class.key
    }

    fn class_name(&self) -> &str {
        &self.class.name
    }

    fn port(&self, id: DurableObjectId, methods: &'static [MethodInfo]) -> Arc<dyn RemotePort> {
        Arc::new(self.client.stub(&self.class, id, methods))
    }

    fn list_ids(
        &self,
        after: Option<[u8; 16]>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<WireEntry>>> {
        Box::pin(self.client.list_ids(self.class.index, after, limit, false))
    }
}

/// A stub whose object lives in a remote runtime.
pub(crate) struct RemoteStub {
    conn: Connection,
    number: u64,
    class: u32,
    info: Arc<RemoteClass>,
    /// The methods of the class, as the client's code knows them.
    methods: &'static [MethodInfo],
    id: DurableObjectId,
    /// Set when the id belongs to another namespace: every call fails.
    wrong_namespace: Option<String>,
    broken: AtomicBool,
    /// Broken by its object's abort: later calls say `Aborted`.
    aborted: AtomicBool,
    /// The client's home, for the ids and stubs in results.
    home: Option<Arc<dyn Home>>,
    /// Whether a call carrying the object's name was queued (see
    /// `ClientFrame::Call`).
    named: AtomicBool,
}

impl RemotePort for RemoteStub {
    fn id(&self) -> &DurableObjectId {
        &self.id
    }

    fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire) || self.conn.state.is_closed()
    }

    fn home(&self) -> Option<Arc<dyn Home>> {
        self.home.clone()
    }

    fn mark_broken(&self, aborted: bool) {
        if aborted {
            self.aborted.store(true, Ordering::Release);
        }
        self.broken.store(true, Ordering::Release);
    }

    fn class_name(&self) -> &str {
        &self.info.name
    }

    fn node(&self) -> Option<&str> {
        self.info.node.as_deref()
    }

    fn method(&self, method: u32) -> Option<&'static MethodInfo> {
        self.methods.iter().find(|m| m.id == method)
    }

    /// Puts one call on the connection now (so calls keep their order) and
    /// returns where its reply will arrive.
    fn send(&self, method: u32, args: Vec<u8>, trace: u128) -> Result<oneshot::Receiver<Reply>> {
        const FETCH: u32 = crate::base::wire::method_id(crate::base::wire::FETCH);
        // A streamed request body: taken out of this process's table and
        // sent on the connection as stream `number` (see `streams`).
        let mut streamed = None;
        let args = if method == FETCH && crate::base::fetch::WireRequest::names_stream(&args) {
            let number = self.conn.state.next_stream.fetch_add(1, Ordering::Relaxed);
            let mut body = None;
            let restated = crate::base::fetch::WireRequest::restate_stream(&args, |n| {
                body = crate::base::streaming::claim(n);
                body.as_ref().map(|_| number)
            });
            let (Some(restated), Some(body), Ok(runtime)) =
                (restated, body, tokio::runtime::Handle::try_current())
            else {
                return Err(Error::Unsupported(
                    "a streamed request body is sent from a tokio runtime only".into(),
                ));
            };
            streamed = Some((number, body, runtime));
            restated
        } else {
            args
        };
        if let Some(class) = &self.wrong_namespace {
            return Err(Error::WrongNamespace {
                class: class.clone(),
            });
        }
        if self.broken.load(Ordering::Acquire) {
            return Err(crate::base::error::broken_stub(
                self.aborted.load(Ordering::Acquire),
            ));
        }
        let (reply, rx) = oneshot::channel();
        let queued = self.conn.state.queue(
            |call| CallRef {
                call,
                stub: self.number,
                class: self.class,
                id: self.id.as_bytes(),
                method,
                args: &args,
                trace,
                // The name goes with the stub's first call (and with any
                // sent before that one was queued): the server keeps it.
                name: if self.named.load(Ordering::Relaxed) {
                    None
                } else {
                    self.id.name()
                },
            },
            reply,
        );
        if queued.is_ok() && !self.named.load(Ordering::Relaxed) {
            self.named.store(true, Ordering::Relaxed);
        }
        if let Err(e) = queued {
            if matches!(e, Error::Disconnected(_)) {
                self.mark_broken(false);
            }
            return Err(e);
        }
        if let Some((number, body, runtime)) = streamed {
            let state = self.conn.state.clone();
            state.forwards.start(&runtime, number, body, state.clone());
        }
        Ok(rx)
    }
}

impl crate::net::transport::streams::StreamOut for ConnState {
    fn chunk(&self, stream: u64, bytes: Vec<u8>) -> bool {
        if self.is_closed() {
            return false;
        }
        self.tell(&ClientFrame::Chunk { stream, bytes });
        true
    }

    fn end(&self, stream: u64, error: Option<Error>) -> bool {
        self.tell(&ClientFrame::StreamEnd { stream, error });
        !self.is_closed()
    }

    fn unwritten(&self) -> usize {
        self.lock().out.len()
    }
}

/// A response body the connection receives is paced from here.
impl crate::net::transport::streams::Back for ConnState {
    fn credit(&self, stream: u64, chunks: u32) {
        self.tell(&ClientFrame::Credit { stream, chunks });
    }

    fn cancel(&self, stream: u64) {
        self.tell(&ClientFrame::CancelStream { stream });
    }
}

impl Drop for RemoteStub {
    fn drop(&mut self) {
        let dropped = ClientFrame::DropStub { stub: self.number };
        self.conn.state.tell(&dropped);
    }
}

/// Connects and shakes hands; returns the stream, what was read past the
/// handshake, and the namespaces the server described.
async fn handshake(settings: &Settings) -> Result<(TcpStream, FrameReader, Vec<NamespaceInfo>)> {
    let exchange = async {
        let mut stream = TcpStream::connect(settings.addr).await.map_err(|e| {
            Error::disconnected(
                DisconnectReason::ConnectionLost,
                format!("cannot connect to {}: {e}", settings.addr),
            )
        })?;
        let _ = stream.set_nodelay(true);
        let mut hello = Vec::new();
        frame::encode(
            &ClientFrame::Hello {
                version: PROTOCOL_VERSION,
                token: settings.token.clone(),
            },
            &mut hello,
        )?;
        stream.write_all(&hello).await.map_err(|e| {
            Error::disconnected(
                DisconnectReason::ConnectionLost,
                format!("handshake with {} failed: {e}", settings.addr),
            )
        })?;
        let mut reader = FrameReader::default();
        loop {
            match reader.next::<ServerFrame>(settings.max_frame_bytes) {
                Ok(Some(ServerFrame::Welcome {
                    version,
                    namespaces,
                })) if version == PROTOCOL_VERSION => {
                    return Ok((stream, reader, namespaces));
                }
                Ok(Some(ServerFrame::Refused { reason })) => return Err(Error::Refused(reason)),
                Ok(Some(other)) => {
                    return Err(Error::Protocol(format!(
                        "expected the server's welcome, got {other:?}"
                    )));
                }
                Ok(None) => {}
                Err(e) => return Err(Error::Protocol(e.to_string())),
            }
            let read = stream.read_buf(reader.buffer()).await.map_err(|e| {
                Error::disconnected(
                    DisconnectReason::ConnectionLost,
                    format!("handshake with {} failed: {e}", settings.addr),
                )
            })?;
            if read == 0 {
                return Err(Error::disconnected(
                    DisconnectReason::ConnectionLost,
                    format!(
                        "{} closed the connection during the handshake",
                        settings.addr
                    ),
                ));
            }
        }
    };
    tokio::time::timeout(settings.connect_timeout, exchange)
        .await
        .map_err(|_| {
            Error::disconnected(
                DisconnectReason::ConnectionLost,
                format!("no handshake with {} within the timeout", settings.addr),
            )
        })?
}

/// The room a connection's buffers keep between bursts.
pub(crate) const KEPT_ROOM: usize = 1 << 20;

/// How many times the connection lets its callers run before writing, as
/// long as each time brings more calls.
const BATCH_YIELDS: usize = 3;

/// Writes queued frames and hands replies to their callers until the
/// connection breaks or every stub and the client are gone. Writing runs
/// as a task of its own, so that on a multi-threaded runtime one thread
/// can send the next calls while another reads replies.
async fn run_connection(
    state: Arc<ConnState>,
    stream: TcpStream,
    reader: FrameReader,
    max_frame: usize,
) {
    let (rd, wr) = stream.into_split();
    let mut writer = tokio::spawn(write_frames(state.clone(), wr));
    let reason = tokio::select! {
        reason = read_replies(&state, rd, reader, max_frame) => {
            // Stopped before the calls are failed: none is sent after.
            writer.abort();
            let _ = (&mut writer).await;
            reason
        }
        reason = &mut writer => reason
            .unwrap_or_else(|e| format!("the connection's writer stopped: {e}")),
    };
    state.close(reason);
}

/// Writes the stubs' frames, as many in one write as have queued up;
/// returns why it stopped.
async fn write_frames(state: Arc<ConnState>, mut wr: tokio::net::tcp::OwnedWriteHalf) -> String {
    // Swapped with the queue each time: two buffers, reused.
    let mut batch = Vec::new();
    loop {
        // Wait for frames, or for the end.
        let dropped = std::future::poll_fn(|cx| {
            // Registered before looking, so a frame queued after the look
            // wakes this task.
            state.writer.register(cx.waker());
            let calls = state.lock();
            match (
                calls.out.is_empty(),
                calls.dropped || calls.closed.is_some(),
            ) {
                (false, _) => Poll::Ready(false),
                (true, true) => Poll::Ready(true),
                (true, false) => Poll::Pending,
            }
        })
        .await;
        if dropped {
            return "the client was dropped".to_owned();
        }
        // Other calls in flight: their callers, woken by replies just
        // read, are likely about to send more. Let them, so that one write
        // carries them all (a yield costs little when nobody comes).
        if state.lock().waiting.len() > 1 {
            for _ in 0..BATCH_YIELDS {
                let queued = state.lock().out.len();
                tokio::task::yield_now().await;
                if state.lock().out.len() == queued {
                    break;
                }
            }
        }
        std::mem::swap(&mut batch, &mut state.lock().out);
        if let Err(e) = wr.write_all(&batch).await {
            return format!("the connection to the server broke: {e}");
        }
        batch.clear();
        // Not the room of the largest burst ever written, for good.
        batch.shrink_to(KEPT_ROOM);
    }
}

/// Hands each reply to its caller; returns why it stopped.
async fn read_replies(
    state: &ConnState,
    mut rd: tokio::net::tcp::OwnedReadHalf,
    mut reader: FrameReader,
    max_frame: usize,
) -> String {
    // The replies of one read, then their callers, taken under one lock.
    let mut read = Vec::new();
    let mut answered = Vec::new();
    loop {
        // Replies already buffered (read along with the handshake) first.
        let broke = loop {
            match reader.next::<ServerFrame>(max_frame) {
                Ok(Some(ServerFrame::Reply { call, result })) => read.push((call, result)),
                Ok(Some(ServerFrame::Chunk { stream, bytes })) => {
                    if let Err(broke) = state.incoming.chunk(stream, bytes) {
                        break Some(format!("the server broke the protocol: {broke}"));
                    }
                }
                Ok(Some(ServerFrame::StreamEnd { stream, error })) => {
                    state.incoming.end(stream, error);
                }
                Ok(Some(ServerFrame::Credit { stream, chunks })) => {
                    state.forwards.credit(stream, chunks);
                }
                Ok(Some(ServerFrame::CancelStream { stream })) => {
                    state.forwards.cancel(stream);
                }
                Ok(Some(other)) => {
                    break Some(format!(
                        "the server broke the protocol: unexpected {other:?}"
                    ));
                }
                Ok(None) => break None,
                Err(e) => break Some(format!("the server broke the protocol: {e}")),
            }
        };
        if !read.is_empty() {
            let mut calls = state.lock();
            for (call, result) in read.drain(..) {
                if let Some(reply) = calls.waiting.remove(&call) {
                    answered.push((reply, result));
                }
            }
            drop(calls);
            for (reply, result) in answered.drain(..) {
                // A caller that went away leaves a streamed body nobody
                // will read: the server is told to stop it.
                if let Err(Ok(bytes)) = reply.send(result)
                    && let Some(stream) = crate::base::fetch::stream_of_reply(&bytes)
                {
                    state.incoming.abandon(stream, state);
                }
            }
        }
        if let Some(reason) = broke {
            return reason;
        }
        match rd.read_buf(reader.buffer()).await {
            Ok(0) => return "the server closed the connection".to_owned(),
            Ok(_) => {}
            Err(e) => return format!("the connection to the server broke: {e}"),
        }
    }
}
