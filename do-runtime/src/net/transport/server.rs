//! The server side: serves a runtime's namespaces over TCP.
//!
//! Each connection is one task: it reads frames in order and hands each call
//! to a local stub kept per remote stub, so a remote stub keeps E-order and
//! breaks like a local one; it writes replies as they complete. A peer that
//! breaks the protocol loses its connection, nobody else's.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use subtle::ConstantTimeEq;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::api::stub::RawStub;
use crate::base::error::{Error, Result};
use crate::engine::reply::ReplyTo;
use crate::engine::shared::ConnectionGuard;
use crate::engine::shared::Shared;
use crate::net::transport::frame::{
    self, ClientFrame, FrameReader, NamespaceInfo, PROTOCOL_VERSION, ServerFrame,
};
use crate::net::transport::handshakes::{Handshakes, Limits, Open, Slot};
use crate::net::transport::sink::{FrameReply, FrameSink};
use crate::service::runtime::Runtime;

/// The largest handshake frame accepted, whatever the frame limit.
const HELLO_LIMIT: usize = 64 * 1024;

/// Configures and starts a [`Server`]; from [`Runtime::server`].
#[must_use]
pub struct ServerBuilder {
    shared: Arc<Shared>,
    addr: SocketAddr,
    config: Config,
}

#[derive(Clone)]
struct Config {
    token: Option<Vec<u8>>,
    max_frame_bytes: usize,
    max_in_flight: usize,
    max_stubs: usize,
    max_connections: usize,
    handshakes: Limits,
    handshake_timeout: Duration,
    frame_timeout: Duration,
}

/// A running server. Dropping it stops accepting connections and closes the
/// open ones (their clients' stubs fail with a disconnected error).
pub struct Server {
    local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// The address the server listens on (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

impl Runtime {
    /// Configures a server for this runtime's namespaces. It binds
    /// `127.0.0.1` on a free port unless told otherwise.
    ///
    /// ```no_run
    /// # async fn f(rt: &do_runtime::Runtime) -> Result<(), do_runtime::Error> {
    /// let server = rt.server().addr("127.0.0.1:7878".parse().unwrap()).token("s3cret").start().await?;
    /// println!("serving on {}", server.local_addr());
    /// # Ok(()) }
    /// ```
    pub fn server(&self) -> ServerBuilder {
        ServerBuilder {
            shared: self.shared(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            config: Config {
                token: None,
                max_frame_bytes: 16 * 1024 * 1024,
                max_in_flight: 4096,
                max_stubs: 65_536,
                max_connections: 1024,
                handshakes: Limits {
                    total: 256,
                    per_addr: 64,
                    min_age: Duration::from_secs(1),
                },
                handshake_timeout: Duration::from_secs(10),
                frame_timeout: Duration::from_secs(30),
            },
        }
    }

    /// Serves this runtime's namespaces on `addr` with the default settings
    /// (no token). Must run inside a tokio runtime, which then drives the
    /// server.
    pub async fn serve(&self, addr: SocketAddr) -> Result<Server> {
        self.server().addr(addr).start().await
    }
}

impl ServerBuilder {
    /// Where to listen. Default: `127.0.0.1:0` (loopback, a free port).
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Require this shared secret in every client's handshake (compared in
    /// constant time). An empty or whitespace token is refused by
    /// [`start`](Self::start).
    pub fn token(mut self, token: impl AsRef<[u8]>) -> Self {
        self.config.token = Some(token.as_ref().to_vec());
        self
    }

    /// The largest frame a client may send; larger ones close its
    /// connection. Default: 16 MiB.
    pub fn max_frame_bytes(mut self, bytes: usize) -> Self {
        self.config.max_frame_bytes = bytes;
        self
    }

    /// How many calls one connection may have in flight; past it the server
    /// stops reading from that connection until replies go out, so a client
    /// that does not read its replies cannot make the server hold more.
    /// Default: 4096.
    pub fn max_in_flight(mut self, calls: usize) -> Self {
        self.config.max_in_flight = calls.max(1);
        self
    }

    /// How many connections past their handshake may be open at once; more
    /// are refused after their hello. Default: 1024.
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.config.max_connections = connections.max(1);
        self
    }

    /// How many connections may wait for their hello at once, in all and
    /// from one address; they do not count against
    /// [`max_connections`](Self::max_connections). When either is full, the
    /// oldest waiting connection (from that address, for its share) is
    /// closed to make room if it has waited a second (else the newcomer is
    /// refused), so sockets that never say hello cannot keep a client out
    /// while they wait out the
    /// [`handshake_timeout`](Self::handshake_timeout). Default: 256 in all,
    /// 64 from one address.
    pub fn max_handshakes(mut self, total: usize, per_addr: usize) -> Self {
        self.config.handshakes = Limits {
            total: total.max(1),
            per_addr: per_addr.max(1),
            ..self.config.handshakes
        };
        self
    }

    /// How long a client may take to say hello. Default: 10 s.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.config.handshake_timeout = timeout;
        self
    }

    /// How long a frame may take to arrive once it has begun; a client that
    /// stops in the middle of one (truncated, or trickling bytes) loses its
    /// connection. Default: 30 s.
    pub fn frame_timeout(mut self, timeout: Duration) -> Self {
        self.config.frame_timeout = timeout;
        self
    }

    /// Binds and starts accepting connections. Fails with
    /// [`Error::Setup`](crate::Error::Setup) for a token that is empty or
    /// only whitespace, and for a `max_frame_bytes` larger than the runtime's
    /// [`client_memory_bytes`](crate::RuntimeBuilder::client_memory_bytes)
    /// (such a frame could never be read).
    pub async fn start(self) -> Result<Server> {
        if let Some(token) = &self.config.token {
            crate::base::secret::check_token(token, "the server token")?;
        }
        let budget = self.shared.client_budget.limit();
        if self.config.max_frame_bytes > budget {
            return Err(Error::Setup(format!(
                "max_frame_bytes ({}) is larger than the runtime's client_memory_bytes ({budget})",
                self.config.max_frame_bytes
            )));
        }
        let (listener, local_addr) = listen(self.addr).await?;
        let task = tokio::spawn(accept(listener, self.shared, self.config));
        Ok(Server { local_addr, task })
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>, config: Config) {
    let welcome: Arc<Vec<NamespaceInfo>> = Arc::new(
        shared
            .classes()
            .iter()
            .map(|c| NamespaceInfo {
                index: c.index,
                class: c.name.clone(),
                schema: c.schema.to_owned(),
                key: c.key.key_bytes().to_vec(),
            })
            .collect(),
    );
    let mut connections = JoinSet::new();
    let pool = Arc::new(Handshakes::default());
    loop {
        let accepted = listener.accept().await;
        while connections.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // Its place among those waiting for a hello, taken now: a full pool
        // lets its oldest go.
        let Some(slot) = pool.enter(peer.ip(), config.handshakes) else {
            connections.spawn(refuse(
                stream,
                "too many connections are waiting for their handshake; try again".into(),
            ));
            continue;
        };
        let (shared, config, welcome, pool) = (
            shared.clone(),
            config.clone(),
            welcome.clone(),
            pool.clone(),
        );
        connections.spawn(async move {
            let _open = ConnectionGuard::open(&shared);
            if let Err(reason) =
                serve_connection(stream, &shared, &config, &welcome, slot, &pool).await
            {
                tracing::warn!(%peer, %reason, "closed a client connection");
            }
        });
    }
}

/// Tells a connection it is refused, then closes it (giving up after a
/// second: a client that does not read is not waited for).
async fn refuse(mut stream: TcpStream, reason: String) {
    let mut out = Vec::new();
    if frame::encode(&ServerFrame::Refused { reason }, &mut out).is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&out)).await;
    }
}

/// Binds `addr`; returns the listener and the address it got (useful with
/// port 0).
pub(crate) async fn listen(addr: SocketAddr) -> Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Setup(format!("cannot listen on {addr}: {e}")))?;
    let local_addr = listener
        .local_addr()
        .map_err(|e| Error::Setup(format!("cannot read the listening address: {e}")))?;
    Ok((listener, local_addr))
}

/// Serves one connection until the client leaves or breaks the protocol;
/// the error says why it was closed.
async fn serve_connection(
    stream: TcpStream,
    shared: &Arc<Shared>,
    config: &Config,
    welcome: &[NamespaceInfo],
    slot: Slot,
    pool: &Arc<Handshakes>,
) -> std::result::Result<(), String> {
    let (mut rd, wr) = stream.into_split();
    let mut wr = BufWriter::new(wr);
    let mut reader = FrameReader::default();
    let mut out = Vec::new();

    // The handshake: one Hello within the timeout, unless the pool of
    // connections waiting for one lets this one go first.
    let evicted = slot.evicted.clone();
    let hello = tokio::time::timeout(config.handshake_timeout, async {
        loop {
            if let Some(frame) = reader
                .next::<ClientFrame>(HELLO_LIMIT)
                .map_err(|e| e.to_string())?
            {
                return Ok::<_, String>(frame);
            }
            match rd.read_buf(reader.buffer()).await {
                Ok(0) => return Err("the client left during the handshake".to_owned()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    });
    let hello = tokio::select! {
        biased;
        hello = hello => hello.map_err(|_| "no hello within the handshake timeout".to_owned())??,
        () = evicted.notified() => {
            return Err("closed while waiting for its hello, to make room for newer connections".into());
        }
    };
    drop(slot);
    let ClientFrame::Hello { version, token } = hello else {
        return Err("the first frame was not a hello".into());
    };
    let refusal = if version != PROTOCOL_VERSION {
        Some(format!(
            "protocol version {version} is not supported; this server speaks version {PROTOCOL_VERSION}"
        ))
    } else if !token_matches(config.token.as_deref(), token.as_deref()) {
        Some("wrong or missing token".to_owned())
    } else {
        None
    };
    let open = Open::take(pool, config.max_connections);
    let refusal = refusal.or_else(|| {
        open.is_none()
            .then(|| "the server has too many connections".to_owned())
    });
    if let Some(reason) = refusal {
        frame::encode(
            &ServerFrame::Refused {
                reason: reason.clone(),
            },
            &mut out,
        )
        .map_err(|e| e.to_string())?;
        let _ = wr.write_all(&out).await;
        let _ = wr.flush().await;
        return Err(format!("refused: {reason}"));
    }
    frame::encode(
        &ServerFrame::Welcome {
            version: PROTOCOL_VERSION,
            namespaces: welcome.to_vec(),
        },
        &mut out,
    )
    .map_err(|e| e.to_string())?;

    let mut held = shared.client_budget.hold();
    let mut connection = Connection::new(shared, config);
    let sink = connection.sink.clone();
    let mut pipelining = Pipelining::new(shared);
    let mut partial_since: Option<tokio::time::Instant> = None;
    loop {
        // Frames already buffered (say, sent along with the hello) first,
        // as far as the in-flight bound allows.
        let mut calls = 0;
        while connection.outstanding < config.max_in_flight {
            match reader
                .next::<ClientFrame>(config.max_frame_bytes)
                .map_err(|e| e.to_string())?
            {
                Some(frame) => {
                    // Progress: the clock for an incomplete frame starts over.
                    partial_since = None;
                    calls += usize::from(matches!(frame, ClientFrame::Call { .. }));
                    connection.handle(frame, &mut out)?;
                }
                None => break,
            }
        }
        if calls > 0 {
            pipelining.observe(calls);
            connection.count_in_flight();
        }
        // Frames taken: the room of a large one goes back, and so does
        // what was counted of it.
        if held.bytes() > 0 && !reader.has_partial() {
            reader.shrink();
            let room = reader.footprint();
            held.resize(if room > UNCOUNTED_PENDING { room } else { 0 });
        }
        if !out.is_empty() {
            wr.write_all(&out).await.map_err(|e| e.to_string())?;
            wr.flush().await.map_err(|e| e.to_string())?;
            out.clear();
            // Not the room of the largest burst ever written, for good.
            out.shrink_to(crate::net::transport::client::KEPT_ROOM);
        }
        // A lone call to a quiet runtime: spin for its reply, as a local
        // caller does (see `RawStub::reply_spin`), rather than let this
        // thread sleep and have the worker wake it microseconds later.
        if let Some((budget, stub)) = connection.spin.take()
            && connection.outstanding > 0
        {
            let since = std::time::Instant::now();
            crate::engine::spin::spin_until(budget, || sink.has_replies() || !shared.quiet());
            if sink.has_replies() {
                stub.record_reply(since.elapsed());
            }
        }
        // A frame that has begun must complete in time.
        let deadline = match (reader.has_partial(), partial_since) {
            (false, _) => {
                partial_since = None;
                None
            }
            (true, Some(since)) => Some(since + config.frame_timeout),
            (true, None) => {
                let now = tokio::time::Instant::now();
                partial_since = Some(now);
                Some(now + config.frame_timeout)
            }
        };
        let outstanding = connection.outstanding;
        // A pipelining client that falls silent with nothing in flight stops
        // counting as load after a moment.
        let calm = pipelining.on() && outstanding == 0;
        tokio::select! {
            // Lazy: no timer is made while the branch is off.
            () = async { tokio::time::sleep(Pipelining::SILENCE).await }, if calm => pipelining.calm_down(),
            () = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                return Err(format!("a frame did not complete within {:?}", config.frame_timeout));
            }
            () = std::future::poll_fn(|cx| sink.poll_ready(cx)), if outstanding > 0 || sink.is_streaming() || sink.has_replies() => {
                connection.took(sink.take(&mut out));
                // A pipelining client's other replies are likely moments
                // away (its calls come in bursts): let them come, as long
                // as each yield brings more, so that one write carries
                // them all.
                let mut yields = 0;
                while pipelining.on() && connection.outstanding > 0 && yields < REPLY_YIELDS {
                    yields += 1;
                    tokio::task::yield_now().await;
                    let replies = sink.take(&mut out);
                    connection.took(replies);
                    if replies == 0 {
                        break;
                    }
                }
            }
            read = rd.read_buf(reader.buffer()), if outstanding < config.max_in_flight => {
                match read {
                    Ok(0) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(e.to_string()),
                }
                // The reader's buffer counts against the runtime's budget
                // for clients (past a small allowance per connection).
                let room = reader.footprint();
                let counted = if room > UNCOUNTED_PENDING { room } else { 0 };
                if counted != held.bytes() && !held.resize(counted) {
                    return Err("the runtime holds as many bytes for clients as it may: closing a connection whose frame does not fit".into());
                }
            }
        }
    }
}

/// Bytes of buffer a connection may hold without counting them against the
/// runtime's budget for clients: most frames are smaller, and so cost no
/// shared counter.
const UNCOUNTED_PENDING: usize = 64 * 1024;

/// How many times a pipelining client's connection lets the workers run
/// before writing the replies it has, as long as each time brings more:
/// each yield lets a worker add the replies of calls it is finishing, so
/// one write carries more of them (how the count was chosen: BENCHMARKS.md,
/// "What changed on 2026-12-06").
const REPLY_YIELDS: usize = 3;

/// Whether a connection's client is pipelining: it is once one burst of
/// frames read brings two calls or more, and stops being after
/// [`Pipelining::CALM`] bursts in a row of one call at most, or after
/// [`Pipelining::SILENCE`] with nothing read and nothing in flight. While
/// it is, the runtime counts it as load for its callers (they do not spin,
/// which would hold the connection's thread), its idle workers spin for the
/// next burst instead of sleeping, and the connection waits a moment for
/// more replies before writing.
struct Pipelining {
    shared: Arc<Shared>,
    on: bool,
    calm: u32,
}

impl Pipelining {
    /// Bursts in a row of one call at most that end it.
    const CALM: u32 = 16;
    /// Silence (nothing read, nothing in flight) that ends it.
    const SILENCE: Duration = Duration::from_millis(10);

    fn new(shared: &Arc<Shared>) -> Self {
        Pipelining {
            shared: shared.clone(),
            on: false,
            calm: 0,
        }
    }

    fn on(&self) -> bool {
        self.on
    }

    /// Called after each burst of frames read, with the calls it brought.
    fn observe(&mut self, calls: usize) {
        if calls >= 2 {
            self.calm = 0;
            if !self.on {
                self.on = true;
                self.counter()
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        } else if self.on {
            self.calm += 1;
            if self.calm >= Self::CALM {
                self.calm_down();
            }
        }
    }

    /// The client is no longer pipelining.
    fn calm_down(&mut self) {
        if self.on {
            self.on = false;
            self.calm = 0;
            self.counter()
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn counter(&self) -> &std::sync::atomic::AtomicUsize {
        &self.shared.counters.pipelining
    }
}

impl Drop for Pipelining {
    fn drop(&mut self) {
        self.calm_down();
    }
}

/// The state of one served connection.
struct Connection<'a> {
    shared: &'a Arc<Shared>,
    config: &'a Config,
    /// Keyed by numbers the client picks: a seeded hasher.
    stubs: HashMap<u64, RemoteCaller, foldhash::fast::RandomState>,
    /// Where the calls' replies are encoded as they are sent.
    sink: Arc<FrameSink>,
    /// The streamed request bodies arriving on this connection.
    incoming: Arc<crate::net::transport::streams::Incoming>,
    /// Calls sent whose replies have not been taken from the sink.
    outstanding: usize,
    /// Those of them counted in flight.
    counted: Counted,
    /// A lone call in flight to a quiet runtime: how long to spin for its
    /// reply, and the stub it went through.
    spin: Option<(Duration, RawStub)>,
}

impl Connection<'_> {
    /// Acts on one frame; an error closes the connection.
    fn handle(&mut self, frame: ClientFrame, out: &mut Vec<u8>) -> std::result::Result<(), String> {
        match frame {
            ClientFrame::Call {
                call,
                stub,
                class,
                id,
                method,
                args,
                trace,
                name,
            } => {
                let caller = match self.stubs.get(&stub) {
                    Some(caller) if caller.class == class && caller.id == id => caller,
                    Some(_) => return Err(format!("stub {stub} was reused for another object")),
                    None => {
                        if self.stubs.len() >= self.config.max_stubs {
                            return Err(format!(
                                "more than {} stubs on one connection",
                                self.config.max_stubs
                            ));
                        }
                        let class_info = self
                            .shared
                            .classes()
                            .get(class as usize)
                            .ok_or_else(|| format!("no namespace numbered {class}"))?;
                        // An id made from a name comes with it.
                        let object = crate::base::passing::check_under(
                            &class_info.key,
                            &id,
                            name.as_deref(),
                        );
                        match object {
                            Ok(object) => self.stubs.entry(stub).or_insert(RemoteCaller {
                                class,
                                id,
                                stub: RawStub::new(self.shared.clone(), class_info.clone(), object),
                            }),
                            Err(e) => {
                                frame::encode_reply(call, &Err(e), out);
                                return Ok(());
                            }
                        }
                    }
                };
                let trace = (trace != 0).then_some(trace);
                let sink = &self.sink;
                const FETCH: u32 = crate::base::wire::method_id(crate::base::wire::FETCH);
                let fetch = method == FETCH;
                // A streamed request body: the client's stream number names
                // the chunks this connection receives; the object claims it
                // from this process's table, under a number of its own.
                let args = if fetch && crate::base::fetch::WireRequest::names_stream(&args) {
                    let back: Arc<dyn crate::net::transport::streams::Back> = self.sink.clone();
                    let mut refused = None;
                    let restated = crate::base::fetch::WireRequest::restate_stream(&args, |n| {
                        match self.incoming.claim(n, back) {
                            Ok(body) => Some(crate::base::streaming::register_body(body)),
                            Err(e) => {
                                refused = Some(e);
                                None
                            }
                        }
                    });
                    match restated {
                        Some(restated) => restated,
                        None => {
                            let e = refused.unwrap_or_else(|| {
                                Error::BadRequest("a malformed streamed request".into())
                            });
                            frame::encode_reply(call, &Err(e), out);
                            return Ok(());
                        }
                    }
                } else {
                    args
                };
                #[cfg(feature = "cluster")]
                if caller.stub.is_remote() {
                    self.shared.metrics.cluster.forwarded_calls.increment(1);
                }
                caller.stub.call_with(trace, method, args, |tracked| {
                    ReplyTo::Sink(FrameReply::new(sink.clone(), call, tracked, fetch))
                });
                self.outstanding += 1;
                self.spin = match self.outstanding {
                    1 => caller
                        .stub
                        .reply_spin()
                        .map(|spin| (spin, caller.stub.clone())),
                    _ => None,
                };
                Ok(())
            }
            ClientFrame::DropStub { stub } => {
                self.stubs.remove(&stub);
                Ok(())
            }
            ClientFrame::ListIds {
                call,
                class,
                after,
                limit,
                here,
            } => {
                let class_info = self
                    .shared
                    .classes()
                    .get(class as usize)
                    .ok_or_else(|| format!("no namespace numbered {class}"))?;
                let after = match after.map(|a| <[u8; 16]>::try_from(a.as_slice())) {
                    None => None,
                    Some(Ok(after)) => Some(after),
                    Some(Err(_)) => return Err("a listing cursor is not 16 bytes".into()),
                };
                let limit = (limit as usize).clamp(1, crate::api::listing::MAX_PAGE);
                let encode = |entries: Vec<crate::api::listing::WireEntry>| {
                    postcard::to_stdvec(&entries).map_err(|e| Error::Codec(e.to_string()))
                };
                // The whole cluster's: the other members answer too, so the
                // reply comes later, through the sink, as a call's does.
                #[cfg(feature = "cluster")]
                if !here && self.shared.placement.get().is_some() {
                    let (shared, class, sink) =
                        (self.shared.clone(), class_info.clone(), self.sink.clone());
                    tokio::spawn(async move {
                        let listed =
                            crate::api::listing::list_everywhere(&shared, &class, after, limit)
                                .await;
                        sink.push(call, &listed.and_then(encode));
                    });
                    self.outstanding += 1;
                    return Ok(());
                }
                let _ = here;
                let result =
                    crate::api::listing::list_served(self.shared, class_info, after, limit)
                        .and_then(encode);
                frame::encode_reply(call, &result, out);
                Ok(())
            }
            ClientFrame::Credit { stream, chunks } => {
                self.sink.streams.credit(stream, chunks);
                Ok(())
            }
            ClientFrame::CancelStream { stream } => {
                self.sink.streams.cancel(stream);
                Ok(())
            }
            ClientFrame::Chunk { stream, bytes } => self.incoming.chunk(stream, bytes),
            ClientFrame::StreamEnd { stream, error } => {
                self.incoming.end(stream, error);
                Ok(())
            }
            ClientFrame::ClaimSocket {
                call,
                socket,
                token,
                stream,
            } => {
                let result = self.claim_socket(call, socket, token, stream);
                frame::encode_reply(call, &result.map(|()| Vec::new()), out);
                Ok(())
            }
            ClientFrame::Hello { .. } => Err("a second hello".into()),
        }
    }
}

impl Connection<'_> {
    /// The client's gateway takes over WebSocket `socket` of this runtime
    /// (see `ClientFrame::ClaimSocket`): it is served here, its client's
    /// bytes coming as the client's stream `stream`, the bytes for it
    /// going as this connection's stream `call`.
    fn claim_socket(
        &self,
        call: u64,
        socket: u64,
        token: u128,
        stream: u64,
    ) -> std::result::Result<(), Error> {
        #[cfg(feature = "gateway")]
        {
            let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
                Error::Unsupported("no tokio runtime serves this connection".into())
            })?;
            // A zero token is the one a runtime without randomness gives
            // (see `engine::sockets`): never claimed from afar.
            let claimed = (token != 0)
                .then(|| self.shared.sockets().claim_token(socket, token))
                .flatten()
                .ok_or_else(|| {
                    Error::disconnected(
                        crate::base::error::DisconnectReason::SocketClosed,
                        "no WebSocket waits under that number and token: it was claimed, closed or forgotten",
                    )
                })?;
            let back: Arc<dyn crate::net::transport::streams::Back> = self.sink.clone();
            let inbound = match self.incoming.claim(stream, back) {
                Ok(inbound) => inbound,
                Err(e) => {
                    self.shared.sockets().remove(&claimed.entry);
                    return Err(e);
                }
            };
            let (outbound, to_client) = crate::base::streaming::pipe();
            self.sink
                .streams
                .start(&runtime, call, to_client, self.sink.clone());
            runtime.spawn(crate::net::gateway::socket::serve_relayed(
                self.shared.clone(),
                claimed,
                inbound,
                outbound,
            ));
            Ok(())
        }
        #[cfg(not(feature = "gateway"))]
        {
            let _ = (call, socket, token, stream);
            Err(Error::Unsupported(
                "this runtime was built without the `gateway` feature: it serves no WebSocket"
                    .into(),
            ))
        }
    }
}

impl<'a> Connection<'a> {
    fn new(shared: &'a Arc<Shared>, config: &'a Config) -> Self {
        let sink = Arc::new(FrameSink::default());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            sink.serve_streams_on(runtime);
        }
        Connection {
            shared,
            config,
            stubs: HashMap::default(),
            sink,
            incoming: Arc::default(),
            outstanding: 0,
            counted: Counted {
                shared: shared.clone(),
                calls: 0,
            },
            spin: None,
        }
    }

    /// Counts the calls sent since the last count in flight (see
    /// `Shared::quiet`), all at once: per call, the connection's thread and
    /// the worker's would pass the counter's cache line back and forth.
    fn count_in_flight(&mut self) {
        if self.shared.spinning() {
            let more = self.outstanding - self.counted.calls;
            self.counted.add(more);
        }
    }

    /// `replies` replies were taken from the sink.
    fn took(&mut self, replies: usize) {
        self.outstanding -= replies;
        let counted = self.counted.calls.min(self.outstanding);
        self.counted.sub(self.counted.calls - counted);
    }
}

impl Drop for Connection<'_> {
    fn drop(&mut self) {
        // Replies still to come are dropped, not kept, once it has ended.
        self.sink.close();
        self.incoming.lost("the client's connection ended");
    }
}

/// Calls of a connection counted in flight; uncounted when it closes.
struct Counted {
    shared: Arc<Shared>,
    calls: usize,
}

impl Counted {
    fn add(&mut self, calls: usize) {
        self.calls += calls;
        let counter = &self.shared.counters.in_flight.0;
        counter.fetch_add(calls as u64, std::sync::atomic::Ordering::Relaxed);
    }

    fn sub(&mut self, calls: usize) {
        self.calls -= calls;
        let counter = &self.shared.counters.in_flight.0;
        counter.fetch_sub(calls as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.sub(self.calls);
    }
}

/// A remote stub's local counterpart.
struct RemoteCaller {
    class: u32,
    id: Vec<u8>,
    stub: RawStub,
}

/// Constant-time comparison, so the time to refuse says nothing about the token.
fn token_matches(expected: Option<&[u8]>, given: Option<&[u8]>) -> bool {
    match (expected, given) {
        (None, _) => true,
        (Some(expected), Some(given)) => bool::from(expected.ct_eq(given)),
        (Some(_), None) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    /// A runtime with no classes, and the directory it keeps its data in.
    fn runtime() -> (tempfile::TempDir, Runtime) {
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = Runtime::builder()
            .data_dir(dir.path())
            .build()
            .expect("runtime");
        (dir, rt)
    }

    #[test]
    fn a_pipelining_client_is_load_until_it_calms_down() {
        let (_dir, rt) = runtime();
        let shared = rt.shared();
        let counted = || shared.counters.pipelining.load(Ordering::Relaxed);
        assert!(shared.quiet(), "nothing in flight: quiet");

        let mut connection = Pipelining::new(&shared);
        connection.observe(1);
        assert!(!connection.on(), "one call at a time is not pipelining");
        connection.observe(2);
        assert!(connection.on() && counted() == 1);
        assert!(!shared.quiet(), "a pipelining client is load");
        assert_eq!(
            shared.worker_spin_now(),
            shared.worker_spin() * 3,
            "workers spin through the gaps between a pipelining client's bursts"
        );
        // Unless the runtime is loaded far beyond that client's window.
        let in_flight = &shared.counters.in_flight.0;
        in_flight.fetch_add(10_000, Ordering::Relaxed);
        assert!(
            shared.worker_spin_now().is_zero(),
            "10 000 calls in flight: no spin"
        );
        in_flight.fetch_sub(10_000, Ordering::Relaxed);
        assert_eq!(shared.worker_spin_now(), shared.worker_spin() * 3);

        // A burst with more in flight starts the count of calm ones over.
        for _ in 0..Pipelining::CALM - 1 {
            connection.observe(1);
        }
        connection.observe(3);
        for _ in 0..Pipelining::CALM - 1 {
            connection.observe(0);
        }
        assert!(connection.on(), "not calm for long enough yet");
        connection.observe(1);
        assert!(!connection.on() && counted() == 0);
        assert!(shared.quiet());
        assert_eq!(
            shared.worker_spin_now(),
            shared.worker_spin(),
            "a quiet runtime's workers spin their usual budget"
        );

        // A client that falls silent is no longer load.
        connection.observe(8);
        assert_eq!(counted(), 1);
        connection.calm_down();
        assert!(!connection.on() && counted() == 0);
        connection.calm_down();
        assert_eq!(counted(), 0, "calming down twice counts once");

        // A connection that closes while pipelining is no longer load.
        connection.observe(64);
        assert_eq!(counted(), 1);
        drop(connection);
        assert_eq!(counted(), 0);
        assert!(shared.quiet());
    }

    #[test]
    fn a_connections_calls_are_counted_in_flight_until_their_replies_are_taken_or_it_closes() {
        let (_dir, rt) = runtime();
        let shared = rt.shared();
        let config = rt.server().config;
        let in_flight = || shared.counters.in_flight.0.load(Ordering::Relaxed);
        let mut connection = Connection::new(&shared, &config);
        connection.outstanding = 5;
        connection.count_in_flight();
        assert_eq!(in_flight(), 5);
        connection.took(3);
        assert_eq!((connection.outstanding, in_flight()), (2, 2));
        connection.outstanding += 4;
        connection.count_in_flight();
        assert_eq!(in_flight(), 6, "only the calls sent since are added");
        connection.took(0);
        assert_eq!(in_flight(), 6);
        drop(connection);
        assert_eq!(in_flight(), 0, "a closed connection's calls are no load");
    }
}
