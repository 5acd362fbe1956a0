//! An HTTP server in front of a runtime's objects (feature `gateway`): each
//! request goes through a routing function to an object's `fetch` handler,
//! and WebSockets the objects accept are served here.
//!
//! ```no_run
//! # async fn f() -> Result<(), do_runtime::Error> {
//! use do_runtime::{durable_object, Ctx, Request, Response, Runtime};
//!
//! pub struct Counter { ctx: Ctx }
//!
//! #[durable_object]
//! impl Counter {
//!     pub fn new(ctx: Ctx) -> Self { Self { ctx } }
//!     pub async fn fetch(&self, _request: Request) -> Response {
//!         let storage = self.ctx.storage();
//!         let n = storage.get::<u64>("n").await.ok().flatten().unwrap_or(0) + 1;
//!         storage.put("n", &n).ok();
//!         Response::new(n.to_string().into())
//!     }
//! }
//!
//! let rt = Runtime::builder().data_dir("data").register::<Counter>().build()?;
//! let gateway = rt.gateway().addr("127.0.0.1:8080".parse().unwrap()).start().await?;
//! // curl http://127.0.0.1:8080/Counter/mine/ → 1, 2, 3 …
//! # Ok(()) }
//! ```

pub mod admin;
mod route;
pub(crate) mod socket;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The Prometheus exporter the gateway's `/metrics` renders (feature `prometheus`).
#[cfg(feature = "prometheus")]
pub use metrics_exporter_prometheus as prometheus;
pub use route::{RouteFuture, default_route};

use crate::api::env::Env;
use crate::base::error::Result;
use crate::base::fetch::{Relayed, Request, Response};
use crate::engine::shared::Shared;
use crate::engine::sockets::{SOCKET_HEADER, TOKEN_HEADER, is_upgrade};
use crate::service::runtime::Runtime;
use route::{Router, error_response, plain};

/// Configures a [`Gateway`]; from [`Runtime::gateway`].
#[must_use]
pub struct GatewayBuilder {
    shared: Arc<Shared>,
    addr: SocketAddr,
    router: Arc<Router>,
    max_body_bytes: usize,
    stream_request_bodies: bool,
    max_connections: usize,
    health: bool,
    admin: Option<String>,
    #[cfg(feature = "prometheus")]
    prometheus: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// The runtime's membership of a cluster, for `GET /admin/cluster`.
    #[cfg(feature = "cluster")]
    member: Option<Arc<dyn crate::service::membership::Member>>,
}

/// A running HTTP gateway. Dropping it (or [`Gateway::shutdown`]) stops
/// accepting connections and closes its WebSockets (code 1001).
pub struct Gateway {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    pumps: Arc<Pumps>,
}

/// The WebSockets a gateway serves, so shutdown can wait for them.
#[derive(Default)]
pub(crate) struct Pumps {
    live: std::sync::atomic::AtomicUsize,
    ended: tokio::sync::Notify,
}

impl Pumps {
    pub(crate) fn started(self: &Arc<Self>) -> PumpGuard {
        self.live.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        PumpGuard(self.clone())
    }

    async fn all_ended(&self) {
        loop {
            let ended = self.ended.notified();
            if self.live.load(std::sync::atomic::Ordering::Acquire) == 0 {
                return;
            }
            ended.await;
        }
    }
}

/// Counts one served WebSocket while it lives.
pub(crate) struct PumpGuard(Arc<Pumps>);

impl Drop for PumpGuard {
    fn drop(&mut self) {
        self.0
            .live
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        self.0.ended.notify_waiters();
    }
}

impl Runtime {
    /// Starts configuring an HTTP gateway for this runtime's objects.
    /// Requests are routed with [`default_route`] unless
    /// [`GatewayBuilder::route`] says otherwise.
    pub fn gateway(&self) -> GatewayBuilder {
        GatewayBuilder {
            shared: self.shared(),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            router: Arc::new(|request, env| Box::pin(default_route(request, env))),
            max_body_bytes: 16 * 1024 * 1024,
            stream_request_bodies: false,
            max_connections: 10_000,
            health: false,
            admin: None,
            #[cfg(feature = "prometheus")]
            prometheus: None,
            #[cfg(feature = "cluster")]
            member: self.member(),
        }
    }
}

impl GatewayBuilder {
    /// Where to listen. Default: `127.0.0.1:0` (loopback, a free port).
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Routes every request with `route(request, env)`: pick an object and
    /// forward the request to its `fetch`, or answer directly. Errors become
    /// HTTP answers: 400 for a bad request, an invalid id or an id of another
    /// namespace; 404 for an unknown class or an object without `fetch`; 429
    /// past a WebSocket limit; 503 when the object is overloaded or
    /// unavailable; 500, without details, for anything else.
    pub fn route<F, Fut>(mut self, route: F) -> Self
    where
        F: Fn(Request, Env) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Response>> + Send + 'static,
    {
        self.router = Arc::new(move |request, env| Box::pin(route(request, env)));
        self
    }

    /// Hands request bodies to objects as they arrive instead of whole:
    /// the object's request has an empty buffered body and a streamed one
    /// (read it with [`body_stream`](crate::body_stream)), and the client
    /// is read only as fast as the object reads (backpressure). Default:
    /// off (bodies arrive whole, up to [`max_body_bytes`](Self::max_body_bytes)).
    pub fn stream_request_bodies(mut self, on: bool) -> Self {
        self.stream_request_bodies = on;
        self
    }

    /// The largest request body accepted; larger ones get 413. Default: 16 MiB.
    /// (With [`stream_request_bodies`](Self::stream_request_bodies), a
    /// streamed body past it ends with an error for the object instead.)
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// How many HTTP connections may be open at once; more are closed as
    /// they arrive (WebSockets, once upgraded, count against the objects'
    /// own limit). Default: 10 000.
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.max_connections = connections.max(1);
        self
    }

    /// Serves the [`admin`] API under `/admin/` to requests carrying
    /// `authorization: Bearer {token}` (the scheme in any case, the token
    /// compared in constant time). Off unless called; an empty or
    /// whitespace token is refused by [`start`](Self::start).
    pub fn admin(mut self, token: impl Into<String>) -> Self {
        self.admin = Some(token.into());
        self
    }

    /// Serves `/healthz` (200 while the gateway runs: liveness) and
    /// `/readyz` (200 when the storage is open and every worker thread
    /// answers within a second, 503 with the reason otherwise), ahead of the
    /// router. Off by default.
    pub fn health(mut self, on: bool) -> Self {
        self.health = on;
        self
    }

    /// Serves the metrics `handle` renders at `/metrics`, in Prometheus text
    /// format, ahead of the router. Off unless called. The runtime must record
    /// into the matching recorder: pass it to
    /// [`RuntimeBuilder::metrics_recorder`](crate::RuntimeBuilder::metrics_recorder)
    /// or install it globally before building the runtime.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), do_runtime::Error> {
    /// use std::sync::Arc;
    /// use do_runtime::gateway::prometheus::PrometheusBuilder;
    ///
    /// let recorder = PrometheusBuilder::new().build_recorder();
    /// let handle = recorder.handle();
    /// let rt = do_runtime::Runtime::builder()
    ///     .data_dir("data")
    ///     .metrics_recorder(Arc::new(recorder))
    ///     .build()?;
    /// let gateway = rt.gateway().prometheus(handle).health(true).start().await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "prometheus")]
    pub fn prometheus(mut self, handle: metrics_exporter_prometheus::PrometheusHandle) -> Self {
        self.prometheus = Some(handle);
        self
    }

    /// Binds and starts serving on the current tokio runtime. Fails with
    /// [`Error::Setup`](crate::Error::Setup) for an admin token that is
    /// empty or only whitespace, and for a `max_body_bytes` more than a
    /// third of the runtime's
    /// [`client_memory_bytes`](crate::RuntimeBuilder::client_memory_bytes)
    /// (a body counts three times while its request is handled: such a
    /// body could never be).
    pub async fn start(self) -> Result<Gateway> {
        if self.max_body_bytes.saturating_mul(3) > self.shared.client_budget.limit() {
            return Err(crate::base::error::Error::Setup(format!(
                "max_body_bytes ({}) is more than a third of the runtime's client_memory_bytes ({})",
                self.max_body_bytes,
                self.shared.client_budget.limit()
            )));
        }
        if let Some(token) = &self.admin {
            crate::base::secret::check_token(token.as_bytes(), "the admin token")?;
        }
        let (listener, local_addr) = crate::net::transport::server::listen(self.addr).await?;
        let (stop, stopped) = watch::channel(false);
        let pumps = Arc::new(Pumps::default());
        let state = Arc::new(State {
            pumps: pumps.clone(),
            env: Env::new(self.shared.clone()),
            shared: self.shared,
            router: self.router,
            max_body_bytes: self.max_body_bytes,
            stream_request_bodies: self.stream_request_bodies,
            max_connections: self.max_connections,
            health: self.health,
            admin: self.admin,
            #[cfg(feature = "prometheus")]
            prometheus: self.prometheus,
            #[cfg(feature = "cluster")]
            member: self.member,
            stopped,
        });
        let task = tokio::spawn(accept_loop(listener, state));
        Ok(Gateway {
            local_addr,
            stop,
            task,
            pumps,
        })
    }
}

impl Gateway {
    /// The address the gateway listens on (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, closes open connections and WebSockets (1001), and
    /// waits until the accept loop and every WebSocket are gone. HTTP
    /// requests in flight are cut off, not drained.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        let _ = (&mut self.task).await;
        self.pumps.all_ended().await;
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

/// What every connection of one gateway shares.
struct State {
    pumps: Arc<Pumps>,
    shared: Arc<Shared>,
    env: Env,
    router: Arc<Router>,
    max_body_bytes: usize,
    stream_request_bodies: bool,
    max_connections: usize,
    health: bool,
    admin: Option<String>,
    #[cfg(feature = "prometheus")]
    prometheus: Option<metrics_exporter_prometheus::PrometheusHandle>,
    #[cfg(feature = "cluster")]
    member: Option<Arc<dyn crate::service::membership::Member>>,
    stopped: watch::Receiver<bool>,
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    let mut connections = JoinSet::new();
    let mut stopped = state.stopped.clone();
    loop {
        tokio::select! {
            () = stopping(&mut stopped) => break,
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors, say: back off instead of spinning.
                        tracing::warn!(error = %e, "the gateway cannot accept a connection");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if connections.len() >= state.max_connections {
                    continue; // dropped: closes the connection
                }
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                connections.spawn(async move {
                    let _open = crate::engine::shared::ConnectionGuard::open(&state.shared);
                    let service = hyper::service::service_fn(move |request| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(handle(&state, request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(REQUEST_TIMEOUT)
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    // Dropping the set aborts the connections still open.
}

/// Why a request's body could not be read whole.
enum BodyError {
    /// Past the gateway's largest body.
    TooLarge,
    /// Past the runtime's budget of bytes held for clients.
    Busy,
    /// The connection failed.
    Read,
}

/// Reads a request's body, at most `max` bytes, growing `held` (the bytes
/// taken from the budget for clients) as it arrives.
async fn read_body(
    mut body: Incoming,
    max: usize,
    held: &mut crate::engine::budget::Held,
) -> std::result::Result<Bytes, BodyError> {
    let mut bytes = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| BodyError::Read)?;
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        let total = bytes.len() + data.len();
        if total > max {
            return Err(BodyError::TooLarge);
        }
        // What is held is the buffer's room, not only its bytes.
        bytes.reserve(data.len());
        if bytes.capacity() > held.bytes() && !held.resize(bytes.capacity()) {
            return Err(BodyError::Busy);
        }
        bytes.extend_from_slice(&data);
    }
    Ok(bytes.freeze())
}

/// How long a client may take to send a request's headers, and its body.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Resolves once the gateway is told to stop (or is gone).
async fn stopping(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await;
}

/// Answers one request.
async fn handle(
    state: &Arc<State>,
    mut request: hyper::Request<Incoming>,
) -> hyper::Response<Body> {
    if let Some(response) = operations(state, request.uri().path()).await {
        return to_hyper(response);
    }
    let upgrade = if is_upgrade(request.headers()) {
        if let Err(response) = socket::check_handshake(&request) {
            return to_hyper(*response);
        }
        Some(hyper::upgrade::on(&mut request))
    } else {
        None
    };
    let (parts, body) = request.into_parts();
    // The admin API reads its bodies whole.
    let admin = state.admin.is_some() && parts.uri.path().starts_with("/admin/");
    if state.stream_request_bodies && upgrade.is_none() && !admin {
        // A declared length past the limit is refused before any byte is read.
        let declared = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|d| d > state.max_body_bytes as u64) {
            return to_hyper(plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body exceeds {} bytes", state.max_body_bytes),
            ));
        }
        let mut request = Request::from_parts(parts, Bytes::new());
        let sender = crate::base::streaming::stream_request_body(&mut request);
        tokio::spawn(pump_body(body, sender, state.max_body_bytes));
        return answer(state, request, None, None).await;
    }
    let too_large = || {
        to_hyper(plain(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body exceeds {} bytes", state.max_body_bytes),
        ))
    };
    let busy = || {
        to_hyper(plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server holds as many request bodies as it may; try again".to_owned(),
        ))
    };
    // The body's bytes count against the runtime's budget for clients, as
    // they arrive, until the request is answered. A declared length past
    // the limit is refused (413) before any byte of the body is read.
    let mut held = state.shared.client_budget.hold();
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(declared) = declared {
        let Ok(declared) = usize::try_from(declared) else {
            return too_large();
        };
        if declared > state.max_body_bytes {
            return too_large();
        }
    }
    let collected = tokio::time::timeout(
        REQUEST_TIMEOUT,
        read_body(body, state.max_body_bytes, &mut held),
    )
    .await;
    let body = match collected {
        Ok(Ok(body)) => body,
        Ok(Err(BodyError::TooLarge)) => return too_large(),
        Ok(Err(BodyError::Busy)) => return busy(),
        Ok(Err(BodyError::Read)) => {
            return to_hyper(plain(
                StatusCode::BAD_REQUEST,
                "cannot read the body".to_owned(),
            ));
        }
        Err(_) => {
            return to_hyper(plain(
                StatusCode::REQUEST_TIMEOUT,
                "the body did not arrive in time".to_owned(),
            ));
        }
    };
    // On its way to the object the body is copied twice (into the call's
    // encoded arguments, then into the object's request): while the
    // request is handled it counts three times.
    if !held.resize(body.len().saturating_mul(3)) {
        return busy();
    }
    let request = Request::from_parts(parts, body);
    answer(state, request, upgrade, Some(held)).await
}

/// Sends the body of a request as it arrives to the object reading it;
/// past `max` bytes, or when the client's body breaks, the object reads
/// an error.
async fn pump_body(mut body: Incoming, sender: crate::base::streaming::BodySender, max: usize) {
    let mut read = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            sender
                .fail(crate::base::error::Error::BadRequest(
                    "the request body broke off".into(),
                ))
                .await;
            return;
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        read += data.len();
        if read > max {
            sender
                .fail(crate::base::error::Error::BadRequest(format!(
                    "the body exceeds {max} bytes"
                )))
                .await;
            return;
        }
        if sender.send(data).await.is_err() {
            return; // the object let the body go
        }
    }
    sender.finish();
}

/// Routes `request` and answers it: through the router to the object, or
/// the admin API; completes a WebSocket upgrade the object accepted.
/// `held`: the request's body bytes counted for clients, until answered.
async fn answer(
    state: &Arc<State>,
    request: Request,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
    held: Option<crate::engine::budget::Held>,
) -> hyper::Response<Body> {
    let _held = held;
    if let Some(token) = &state.admin
        && request.uri().path().starts_with("/admin/")
    {
        // Read only by `GET /admin/cluster`.
        #[cfg(feature = "cluster")]
        let cluster = || state.member.as_ref().and_then(|member| member.view());
        #[cfg(not(feature = "cluster"))]
        let cluster = || None;
        return to_hyper(admin::handle(token, &state.env, &cluster, request).await);
    }
    let key = request
        .headers()
        .get(http::header::SEC_WEBSOCKET_KEY)
        .map(|k| k.as_bytes().to_vec());
    let response = match (state.router)(request, state.env.clone()).await {
        Ok(response) => response,
        Err(e) => {
            tracing::debug!(error = %e, "gateway request failed");
            return to_hyper(error_response(&e));
        }
    };
    let sockets = state.shared.sockets();
    let hands_over = response.headers().contains_key(SOCKET_HEADER);
    match (response.status(), upgrade, key) {
        (StatusCode::SWITCHING_PROTOCOLS, Some(upgrade), Some(key))
            if hands_over && response.extensions().get::<Relayed>().is_some() =>
        {
            relay_socket(state, response, upgrade, &key).await
        }
        (StatusCode::SWITCHING_PROTOCOLS, Some(upgrade), Some(key)) if hands_over => {
            let Some(claimed) = sockets.claim(&response) else {
                return to_hyper(plain(
                    StatusCode::BAD_GATEWAY,
                    "the accepted WebSocket is not this runtime's".to_owned(),
                ));
            };
            let pump = state.pumps.started();
            let serve = socket::serve(
                state.shared.clone(),
                claimed,
                upgrade,
                state.stopped.clone(),
            );
            tokio::spawn(async move {
                serve.await;
                drop(pump);
            });
            to_hyper(socket::switching_protocols(response, &key))
        }
        (status, _, _) => {
            // A socket accepted without the upgrade that would carry it.
            sockets.abandon(&response);
            if status == StatusCode::SWITCHING_PROTOCOLS {
                return to_hyper(plain(
                    StatusCode::BAD_GATEWAY,
                    "the object answered 101 without accepting this request's WebSocket".to_owned(),
                ));
            }
            to_hyper(response)
        }
    }
}

/// Completes an upgrade whose socket an object of another runtime accepted
/// (its response came through a remote client's connection): the socket
/// is claimed there, and its bytes cross that connection both ways.
async fn relay_socket(
    state: &Arc<State>,
    response: Response,
    upgrade: hyper::upgrade::OnUpgrade,
    key: &[u8],
) -> hyper::Response<Body> {
    let relay = response.extensions().get::<Relayed>().cloned();
    let (Some(Relayed(relay)), Some((socket, token))) =
        (relay, crate::base::fetch::handed_over(&response))
    else {
        return to_hyper(plain(
            StatusCode::BAD_GATEWAY,
            "the accepted WebSocket cannot be claimed".to_owned(),
        ));
    };
    let (inbound, client_bytes) = crate::base::streaming::pipe();
    let outbound = match relay.claim(socket, token, client_bytes).await {
        Ok(outbound) => outbound,
        Err(e) => {
            tracing::debug!(error = %e, "claiming a relayed WebSocket failed");
            return to_hyper(plain(
                StatusCode::BAD_GATEWAY,
                "the accepted WebSocket cannot be claimed from the runtime that accepted it"
                    .to_owned(),
            ));
        }
    };
    let pump = state.pumps.started();
    let relayed = socket::relay(upgrade, inbound, outbound, state.stopped.clone());
    tokio::spawn(async move {
        relayed.await;
        drop(pump);
    });
    to_hyper(socket::switching_protocols(response, key))
}

/// The health and metrics endpoints, when configured.
async fn operations(state: &State, path: &str) -> Option<Response> {
    match path {
        "/healthz" if state.health => Some(plain(StatusCode::OK, "ok".to_owned())),
        "/readyz" if state.health => Some(
            match state
                .shared
                .readiness(std::time::Duration::from_secs(1))
                .await
            {
                Ok(()) => plain(StatusCode::OK, "ready".to_owned()),
                Err(reason) => plain(StatusCode::SERVICE_UNAVAILABLE, reason),
            },
        ),
        #[cfg(feature = "prometheus")]
        "/metrics" => {
            let handle = state.prometheus.as_ref()?;
            // Refresh the figures kept outside the metrics facade.
            let _ = Runtime::stats_of(&state.shared);
            let mut response = Response::new(handle.render().into());
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            Some(response)
        }
        _ => None,
    }
}

/// A response body as the gateway sends it: whole, or streamed as the
/// object sends it (see `base::streaming`).
type Body = http_body_util::Either<Full<Bytes>, http_body_util::StreamBody<Chunks>>;

/// A streamed body's chunks as hyper's frames (a body that broke off
/// ends the response with an error: the client sees it cut short).
type Chunks = futures_util::stream::Map<
    crate::base::streaming::BodyStream,
    fn(
        Result<Bytes, crate::base::error::Error>,
    ) -> Result<hyper::body::Frame<Bytes>, crate::base::error::Error>,
>;

/// The response as hyper sends it: HTTP/1.1, without the internal socket
/// headers or hop-by-hop headers an object may have set; a streamed body
/// goes out chunk by chunk as the object sends it.
fn to_hyper(mut response: Response) -> hyper::Response<Body> {
    let streamed = crate::base::streaming::body_stream(&mut response);
    let (mut parts, body) = response.into_parts();
    parts.version = http::Version::HTTP_11;
    parts.headers.remove(SOCKET_HEADER);
    parts.headers.remove(TOKEN_HEADER);
    if parts.status != StatusCode::SWITCHING_PROTOCOLS {
        for hop in [
            http::header::CONNECTION,
            http::header::TRANSFER_ENCODING,
            http::header::UPGRADE,
            http::HeaderName::from_static("keep-alive"),
        ] {
            parts.headers.remove(hop);
        }
    }
    let body = match streamed {
        Some(stream) => {
            use futures_util::StreamExt;
            let frame: fn(
                Result<Bytes, crate::base::error::Error>,
            )
                -> Result<hyper::body::Frame<Bytes>, crate::base::error::Error> =
                |chunk| chunk.map(hyper::body::Frame::data);
            // Its length is not known: hyper sends it chunked.
            parts.headers.remove(http::header::CONTENT_LENGTH);
            http_body_util::Either::Right(http_body_util::StreamBody::new(stream.map(frame)))
        }
        None => http_body_util::Either::Left(Full::new(body)),
    };
    hyper::Response::from_parts(parts, body)
}
