//! One WebSocket between a client and an object: checks and completes the
//! upgrade, then carries the client's messages to the object's handlers and
//! the object's sends to the client, until either side closes.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::sync::watch;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message as Frame};

use crate::api::stub::{Call, RawStub};
use crate::base::error::Error;
use crate::base::fetch::Response;
use crate::engine::shared::Shared;
use crate::engine::sockets::{
    Claimed, Event, Message, Out, Outgoing, SOCKET_HEADER, SocketEntry, TOKEN_HEADER,
};

/// How long one write to the client may take before the client is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the client's answer to a close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// A client silent this long is pinged; silent for three times as long, it
/// is dropped.
const PING_EVERY: Duration = Duration::from_secs(30);
/// Bytes of frames waiting to be written to one client (tungstenite's
/// write buffer: the object's messages, pongs, closes) beyond the largest
/// message: a client that does not read past this is disconnected (close
/// code 1008 to the object), so neither a ping flood nor a client that
/// stops reading grows the gateway's memory.
const OUTGOING_SLACK: usize = 1024 * 1024;

/// Checks a WebSocket handshake before the object sees it: a GET over
/// HTTP/1.1 with `connection: upgrade`, a 16-byte base64 key and version 13.
/// The error is the answer to send instead.
pub(super) fn check_handshake<B>(request: &hyper::Request<B>) -> Result<(), Box<Response>> {
    use crate::net::gateway::route::plain;
    use http::StatusCode;
    let header = |name| {
        request
            .headers()
            .get(name)
            .and_then(|v: &http::HeaderValue| v.to_str().ok())
    };
    let bad = |why: &str| {
        Err(Box::new(plain(
            StatusCode::BAD_REQUEST,
            format!("invalid WebSocket handshake: {why}"),
        )))
    };
    if request.method() != http::Method::GET || request.version() != http::Version::HTTP_11 {
        return bad("it must be a GET over HTTP/1.1");
    }
    let connection_upgrade = header(http::header::CONNECTION).is_some_and(|c| {
        c.split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
    });
    if !connection_upgrade {
        return bad("no `connection: upgrade`");
    }
    let key_ok = header(http::header::SEC_WEBSOCKET_KEY).is_some_and(|k| {
        k.len() == 24
            && k.ends_with("==")
            && k[..22]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
    });
    if !key_ok {
        return bad("`sec-websocket-key` must be 16 bytes in base64");
    }
    if header(http::header::SEC_WEBSOCKET_VERSION) != Some("13") {
        let mut response = plain(
            StatusCode::UPGRADE_REQUIRED,
            "unsupported WebSocket version: use 13".to_owned(),
        );
        response.headers_mut().insert(
            http::header::SEC_WEBSOCKET_VERSION,
            http::HeaderValue::from_static("13"),
        );
        return Err(Box::new(response));
    }
    Ok(())
}

/// The `101` answer that completes the handshake, keeping the headers the
/// object set (a subprotocol, say).
pub(super) fn switching_protocols(response: Response, key: &[u8]) -> Response {
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(SOCKET_HEADER);
    parts.headers.remove(TOKEN_HEADER);
    parts.headers.insert(
        http::header::UPGRADE,
        http::HeaderValue::from_static("websocket"),
    );
    parts.headers.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("upgrade"),
    );
    if let Ok(accept) = http::HeaderValue::from_str(&tungstenite::handshake::derive_accept_key(key))
    {
        parts
            .headers
            .insert(http::header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    Response::from_parts(parts, bytes::Bytes::new())
}

/// Serves one socket until it closes; then the runtime forgets it.
pub(super) async fn serve(
    shared: Arc<Shared>,
    claimed: Claimed,
    upgrade: hyper::upgrade::OnUpgrade,
    stopped: watch::Receiver<bool>,
) {
    match upgrade.await {
        Ok(upgraded) => serve_io(shared, claimed, TokioIo::new(upgraded), stopped).await,
        Err(_) => shared.sockets().remove(&claimed.entry),
    }
}

/// Serves one socket over `io`, the connection to its client, until it
/// closes; then the runtime forgets it.
async fn serve_io<S>(shared: Arc<Shared>, claimed: Claimed, io: S, stopped: watch::Receiver<bool>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let entry = claimed.entry.clone();
    let limit = shared.sockets().message_limit();
    let config = WebSocketConfig::default()
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit));
    let (io, over) = Bounded::new(io, limit.saturating_add(OUTGOING_SLACK));
    let stream = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
    let Claimed {
        entry: claimed_entry,
        rx,
    } = claimed;
    Pump {
        shared: shared.clone(),
        entry: claimed_entry,
        rx,
        reorder: Reorder::default(),
        stub: None,
        closed_told: false,
        over,
    }
    .run(stream, stopped)
    .await;
    shared.sockets().remove(&entry);
}

/// The bytes of a relayed socket's pipe kept in memory on their way, each
/// way (besides the chunks in flight on the connection).
const RELAY_PIPE: usize = 64 * 1024;
/// The room each read of a relayed socket's bytes takes: an idle socket
/// holds one such buffer on each side.
const RELAY_READ: usize = 8 * 1024;

/// Reads `io` into chunks of at most [`RELAY_READ`] bytes, sending each to
/// `to`, until `io` ends (`Ok`) or breaks (`Err`), or the reader of `to`
/// lets it go (`Ok`, with nothing more to say).
async fn pump_chunks<R>(
    io: &mut R,
    to: &crate::base::streaming::BodySender,
) -> std::io::Result<bool>
where
    R: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt;
    let mut buffer = bytes::BytesMut::new();
    loop {
        buffer.reserve(RELAY_READ);
        if io.read_buf(&mut buffer).await? == 0 {
            return Ok(true);
        }
        if to.send(buffer.split().freeze()).await.is_err() {
            return Ok(false);
        }
    }
}

/// How a gateway in front tells the object's runtime it stops: the error
/// that ends the client's bytes (see [`relay`]).
fn going_away() -> Error {
    Error::disconnected(
        crate::base::error::DisconnectReason::Shutdown,
        "the gateway in front is shutting down",
    )
}

/// Serves a socket of this runtime claimed by another runtime's gateway
/// (see `transport::server`): `inbound` brings the bytes its client sends,
/// `outbound` takes the bytes for it. The socket is served here as if the
/// client were connected to this runtime (hibernation, auto-responses,
/// pings, limits, the close event), over a pipe those bytes go through.
pub(crate) async fn serve_relayed(
    shared: Arc<Shared>,
    claimed: Claimed,
    mut inbound: crate::base::streaming::BodyStream,
    outbound: crate::base::streaming::BodySender,
) {
    use tokio::io::AsyncWriteExt;
    let (here, there) = tokio::io::duplex(RELAY_PIPE);
    let (mut from_pump, mut to_pump) = tokio::io::split(there);
    // Set when the gateway in front stops: the pump closes with 1001, as
    // that gateway's own sockets do.
    let (stop, stopped) = watch::channel(false);
    // The client's bytes into the pipe; their end (or a break: the
    // connection was lost) is the end of the pipe's input.
    let input = tokio::spawn(async move {
        loop {
            match inbound.next().await {
                Some(Ok(chunk)) => {
                    if to_pump.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
                Some(Err(e)) if e == going_away() => {
                    // Told before the input ends: the pump sends its close
                    // and, finding the input ended, does not wait for the
                    // client's answer, which the stopping gateway drops.
                    let _ = stop.send(true);
                    break;
                }
                Some(Err(_)) | None => break,
            }
        }
        let _ = to_pump.shutdown().await;
        // Held until the pump is done: a dropped sender reads as a stop.
        stop.closed().await;
    });
    // The pump's bytes to the client, until the pump lets the pipe go.
    let output = tokio::spawn(async move {
        if let Ok(true) = pump_chunks(&mut from_pump, &outbound).await {
            outbound.finish();
        }
    });
    serve_io(shared, claimed, here, stopped).await;
    // The pump is done: nothing more is read for it.
    input.abort();
    drop(output);
}

/// Completes an upgrade whose socket an object of another runtime serves
/// (see [`serve_relayed`]): copies the client's bytes to `inbound` and
/// `outbound`'s to the client, until the other runtime ends the socket.
/// When this gateway stops, the other runtime closes the socket with 1001
/// and this one waits for that close to reach the client (at most
/// [`CLOSE_TIMEOUT`]).
pub(super) async fn relay(
    upgrade: hyper::upgrade::OnUpgrade,
    inbound: crate::base::streaming::BodySender,
    mut outbound: crate::base::streaming::BodyStream,
    mut stopped: watch::Receiver<bool>,
) {
    use tokio::io::AsyncWriteExt;
    let Ok(upgraded) = upgrade.await else {
        // No client: the other end sees the socket's input end.
        inbound.finish();
        return;
    };
    let (mut rd, mut wr) = tokio::io::split(TokioIo::new(upgraded));
    let mut down = std::pin::pin!(async {
        while let Some(Ok(chunk)) = outbound.next().await {
            match tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(&chunk)).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
        let _ = tokio::time::timeout(WRITE_TIMEOUT, wr.shutdown()).await;
    });
    /// How the client's side ended, or why it stopped being read.
    enum Up {
        /// The client's bytes ended.
        Ended,
        /// The other runtime let them go.
        Gone,
        Broke(std::io::Error),
        /// This gateway stops.
        Stopping,
    }
    let up = async {
        match pump_chunks(&mut rd, &inbound).await {
            Ok(true) => Up::Ended,
            Ok(false) => Up::Gone,
            Err(e) => Up::Broke(e),
        }
    };
    let ended = tokio::select! {
        up = up => up,
        () = &mut down => return,
        () = super::stopping(&mut stopped) => Up::Stopping,
    };
    match ended {
        Up::Ended => {
            inbound.finish();
            // The other runtime answers the end (the object hears the
            // close): its end of the socket ends this.
            tokio::select! {
                () = &mut down => {}
                () = super::stopping(&mut stopped) => {}
            }
        }
        Up::Gone => {}
        Up::Broke(e) => {
            inbound
                .fail(Error::disconnected(
                    crate::base::error::DisconnectReason::ConnectionLost,
                    format!("the WebSocket's client connection broke: {e}"),
                ))
                .await;
        }
        Up::Stopping => {
            inbound.fail(going_away()).await;
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, &mut down).await;
        }
    }
}

/// Puts the object's sends back in the order it made them: the output gate
/// may release them out of order.
#[derive(Default)]
struct Reorder {
    next: u64,
    early: BTreeMap<u64, Outgoing>,
}

impl Reorder {
    /// Takes one released send; returns those now due, in order, giving
    /// their bytes back to the socket's send budget.
    fn push(&mut self, outgoing: Outgoing, entry: &SocketEntry, due: &mut Vec<Option<Out>>) {
        self.early.insert(outgoing.seq, outgoing);
        while let Some(outgoing) = self.early.remove(&self.next) {
            if let Some(bytes) = outgoing.counted {
                entry.written(bytes);
            }
            due.push(outgoing.what);
            self.next += 1;
        }
    }
}

struct Pump {
    shared: Arc<Shared>,
    entry: Arc<SocketEntry>,
    rx: tokio::sync::mpsc::UnboundedReceiver<Outgoing>,
    reorder: Reorder,
    /// The stub events go through; replaced when a reset breaks it.
    stub: Option<RawStub>,
    /// Whether the object was given this socket's close event: it is
    /// given at most one, whatever ends the socket (a close frame, a lost
    /// connection, a failed write, a client that does not read).
    closed_told: bool,
    /// Set when the client's unwritten frames passed the bound.
    over: Arc<AtomicBool>,
}

/// An event on its way to the object: the call, and what to send again if
/// a reset of the instance loses it.
struct InFlight {
    call: Call<Result<(), Error>>,
    method: u32,
    args: Vec<u8>,
    retried: bool,
    /// How the socket ends once the object has seen the event, if it does.
    then: Option<End>,
}

/// What ends a socket.
enum End {
    /// The connection is gone or broken: nothing more to send.
    Drop,
    /// Send a close with this code and reason, then wait for the client's.
    Close(u16, String),
}

type Stream<S> = WebSocketStream<S>;

impl Pump {
    async fn run<S>(mut self, mut stream: Stream<S>, mut stopped: watch::Receiver<bool>)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let mut in_flight: Option<InFlight> = None;
        let mut due = Vec::new();
        let mut last_seen = Instant::now();
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.reset();
        let end = loop {
            tokio::select! {
                biased;
                () = super::stopping(&mut stopped) => break End::Close(1001, "the gateway is shutting down".into()),
                outgoing = self.rx.recv() => {
                    let Some(outgoing) = outgoing else { break End::Close(1011, String::new()) };
                    self.reorder.push(outgoing, &self.entry, &mut due);
                    if let Some(end) = self.write_due(&mut stream, &mut due).await {
                        break end;
                    }
                }
                // While the object handles one event, the client's next
                // frames wait (backpressure) but the object's sends go out.
                result = poll_in_flight(&mut in_flight), if in_flight.is_some() => {
                    let Some(done) = in_flight.take() else { continue };
                    // The client was not read meanwhile: its silence is ours.
                    last_seen = Instant::now();
                    match self.after(done, result) {
                        Ok(next) => in_flight = next,
                        Err(end) => break end,
                    }
                }
                incoming = stream.next(), if in_flight.is_none() => {
                    last_seen = Instant::now();
                    match self.on_frame(incoming, &mut stream).await {
                        Step::Continue => {}
                        Step::Deliver(event, then) => match self.deliver(&event, then) {
                            Ok(call) => in_flight = Some(call),
                            Err(Some(end)) => break end,
                            Err(None) => {}
                        },
                        Step::End(end) => break end,
                    }
                }
                _ = ping.tick() => {
                    if in_flight.is_none() && last_seen.elapsed() > 3 * PING_EVERY {
                        self.entry.mark_closing();
                        self.notify_close(1006, "the client stopped answering").await;
                        break End::Drop;
                    }
                    if write(&mut stream, Frame::Ping(Default::default())).await.is_err() {
                        self.entry.mark_closing();
                        let (code, reason) = self.lost();
                        self.notify_close(code, reason).await;
                        break End::Drop;
                    }
                }
            }
        };
        // An event still on its way (a close, say, while a write failed)
        // reaches the object before the socket is forgotten: its handler
        // must still find the socket. Not while the gateway stops: that
        // does not wait for handlers.
        if let Some(in_flight) = in_flight.take().filter(|_| !*stopped.borrow()) {
            let _ = tokio::time::timeout(WRITE_TIMEOUT, in_flight.call).await;
        }
        if let End::Close(code, reason) = end {
            let frame = CloseFrame {
                code: CloseCode::from(code),
                reason: reason.into(),
            };
            if write(&mut stream, Frame::Close(Some(frame))).await.is_ok() {
                // Wait for the client's close, briefly; what it sends meanwhile is dropped.
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                    while let Some(Ok(_)) = stream.next().await {}
                })
                .await;
            }
        }
    }
}

/// What a frame from the client leads to.
enum Step {
    Continue,
    /// Deliver the event, then end the socket this way (if given).
    Deliver(Event, Option<End>),
    End(End),
}

impl Pump {
    fn socket(&self) -> u64 {
        self.entry.id()
    }

    async fn on_frame<S>(
        &mut self,
        incoming: Option<Result<Frame, tungstenite::Error>>,
        stream: &mut Stream<S>,
    ) -> Step
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let socket = self.socket();
        match incoming {
            Some(Ok(Frame::Text(text))) => {
                if let Some(answer) = self.entry.auto_answer(text.as_str()) {
                    return match write(stream, Frame::text(answer)).await {
                        Ok(()) => {
                            let now = crate::base::clock::millis(self.shared.clock().now());
                            self.entry.note_auto_response(now);
                            Step::Continue
                        }
                        Err(()) => Step::End(End::Drop),
                    };
                }
                let message = Message::Text(text.as_str().to_owned());
                Step::Deliver(Event::Message { socket, message }, None)
            }
            Some(Ok(Frame::Binary(bytes))) => Step::Deliver(
                Event::Message {
                    socket,
                    message: Message::Binary(bytes),
                },
                None,
            ),
            Some(Ok(Frame::Close(frame))) => {
                let (code, reason) = frame.map_or((1005, String::new()), |f| {
                    (u16::from(f.code), f.reason.as_str().to_owned())
                });
                self.entry.mark_closing();
                // tungstenite queued the answer to the close: flush it once
                // the object has seen the close.
                let _ = tokio::time::timeout(WRITE_TIMEOUT, stream.flush()).await;
                Step::Deliver(
                    Event::Close {
                        socket,
                        code,
                        reason,
                        clean: true,
                    },
                    Some(End::Drop),
                )
            }
            Some(Ok(_)) => Step::Continue, // ping and pong: tungstenite answers pings
            Some(Err(tungstenite::Error::Capacity(e))) => {
                self.entry.mark_closing();
                let reason = format!("message too big: {e}");
                Step::Deliver(
                    Event::Close {
                        socket,
                        code: 1009,
                        reason,
                        clean: false,
                    },
                    Some(End::Close(1009, "message too big".into())),
                )
            }
            // The connection ended without a closing handshake: an
            // abnormal closure (1006).
            None
            | Some(Err(
                tungstenite::Error::Io(_)
                | tungstenite::Error::ConnectionClosed
                | tungstenite::Error::AlreadyClosed
                | tungstenite::Error::Protocol(
                    tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
                ),
            )) => {
                self.entry.mark_closing();
                let (code, reason) = self.lost();
                Step::Deliver(
                    Event::Close {
                        socket,
                        code,
                        reason: reason.to_owned(),
                        clean: false,
                    },
                    Some(End::Drop),
                )
            }
            Some(Err(tungstenite::Error::Utf8(e))) => {
                // A text frame that is not UTF-8: 1007 (invalid payload).
                self.entry.mark_closing();
                Step::Deliver(
                    Event::Error {
                        socket,
                        error: format!("a text message is not UTF-8: {e}"),
                    },
                    Some(End::Close(1007, "invalid UTF-8".into())),
                )
            }
            Some(Err(e)) => {
                // A protocol violation: tell the object, close with 1002.
                self.entry.mark_closing();
                Step::Deliver(
                    Event::Error {
                        socket,
                        error: e.to_string(),
                    },
                    Some(End::Close(1002, "protocol error".into())),
                )
            }
        }
    }

    /// Why the connection is gone: the client did not read what it was
    /// sent (1008), or it was lost (1006).
    fn lost(&self) -> (u16, &'static str) {
        if self.over.load(Ordering::Acquire) {
            (1008, "the client does not read what it is sent")
        } else {
            (1006, "the connection was lost")
        }
    }

    /// Starts delivering `event` to the object's handler; if it cannot,
    /// says how the socket ends (if it does). A second close event for the
    /// socket is not delivered.
    fn deliver(&mut self, event: &Event, then: Option<End>) -> Result<InFlight, Option<End>> {
        if matches!(event, Event::Close { .. }) {
            if self.closed_told {
                return Err(then);
            }
            self.closed_told = true;
        }
        let args = match postcard::to_stdvec(event) {
            Ok(args) => args,
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode a WebSocket event");
                return Err(then);
            }
        };
        let method = event.handler();
        Ok(InFlight {
            call: self.send(method, args.clone()),
            method,
            args,
            retried: false,
            then,
        })
    }

    fn send(&mut self, method: u32, args: Vec<u8>) -> Call<Result<(), Error>> {
        if self.stub.as_ref().is_some_and(RawStub::is_broken) {
            self.stub = None;
        }
        let stub = self.stub.get_or_insert_with(|| {
            RawStub::new(
                self.shared.clone(),
                self.entry.class().clone(),
                self.entry.object().clone(),
            )
        });
        stub.call_system(method, args, |_| Ok(()), Err)
    }

    /// What follows a delivered event: nothing, a retry, or the end.
    fn after(
        &mut self,
        done: InFlight,
        result: Result<(), Error>,
    ) -> Result<Option<InFlight>, End> {
        match result {
            Ok(()) | Err(Error::UnknownMethod { .. }) => {}
            Err(_) if self.shared.is_closing() => {
                return Err(End::Close(1001, "the runtime is shutting down".into()));
            }
            // The store failed and is being reopened (see
            // `service::recovery`): the event cannot be delivered now, and
            // a socket left open would let the client think it was.
            Err(_) if self.shared.storage_fault().is_some() => {
                return Err(End::Close(
                    1012,
                    "the service is reopening its storage: reconnect".into(),
                ));
            }
            // A reset of the instance (another socket's handler panicked)
            // lost the event: send it once more, to the new instance.
            Err(Error::Disconnected(_)) if !done.retried => {
                return Ok(Some(InFlight {
                    call: self.send(done.method, done.args.clone()),
                    retried: true,
                    ..done
                }));
            }
            Err(e @ Error::Overloaded(_)) => {
                tracing::debug!(error = %e, "a WebSocket message was refused");
                return Err(End::Close(1013, "the object is overloaded".into()));
            }
            Err(e) => {
                tracing::debug!(error = %e, socket = self.socket(), "a WebSocket handler failed");
            }
        }
        match done.then {
            Some(end) => Err(end),
            None => Ok(None),
        }
    }

    /// Tells the object its socket closed, and waits (briefly) until it knows.
    async fn notify_close(&mut self, code: u16, reason: &str) {
        let event = Event::Close {
            socket: self.socket(),
            code,
            reason: reason.to_owned(),
            clean: false,
        };
        if let Ok(in_flight) = self.deliver(&event, None) {
            let _ = tokio::time::timeout(WRITE_TIMEOUT, in_flight.call).await;
        }
    }

    /// Writes the sends that are due; a close among them ends the socket.
    async fn write_due<S>(
        &mut self,
        stream: &mut Stream<S>,
        due: &mut Vec<Option<Out>>,
    ) -> Option<End>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        for what in due.drain(..) {
            match what {
                // Its writes were lost with a reset: it never happened.
                None => {}
                Some(Out::Message(message)) => {
                    let frame = match message {
                        Message::Text(text) => Frame::text(text),
                        Message::Binary(bytes) => Frame::binary(bytes),
                    };
                    if write(stream, frame).await.is_err() {
                        self.entry.mark_closing();
                        let (code, reason) = if self.over.load(Ordering::Acquire) {
                            self.lost()
                        } else {
                            (1006, "the client stopped reading")
                        };
                        self.notify_close(code, reason).await;
                        return Some(End::Drop);
                    }
                }
                Some(Out::Close { code, reason }) => return Some(End::Close(code, reason)),
            }
        }
        None
    }
}

/// The client's connection, refusing to take more than `limit` bytes of
/// frames at once: tungstenite hands its whole write buffer to each write,
/// and a client that does not read (while it sends pings, say, each
/// answered with a pong) would otherwise grow that buffer without bound.
/// Past the limit, writes fail and `over` is set.
struct Bounded<S> {
    inner: S,
    limit: usize,
    over: Arc<AtomicBool>,
}

impl<S> Bounded<S> {
    fn new(inner: S, limit: usize) -> (Self, Arc<AtomicBool>) {
        let over = Arc::new(AtomicBool::new(false));
        let io = Bounded {
            inner,
            limit,
            over: over.clone(),
        };
        (io, over)
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Bounded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Bounded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if buf.len() > self.limit || self.over.load(Ordering::Acquire) {
            self.over.store(true, Ordering::Release);
            return Poll::Ready(Err(std::io::Error::other(
                "the client does not read what it is sent",
            )));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Writes one frame, giving up after [`WRITE_TIMEOUT`].
async fn write<S>(stream: &mut Stream<S>, frame: Frame) -> Result<(), ()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match tokio::time::timeout(WRITE_TIMEOUT, stream.send(frame)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

/// Polls the event in flight, if any.
fn poll_in_flight(
    in_flight: &mut Option<InFlight>,
) -> impl Future<Output = Result<(), Error>> + '_ {
    std::future::poll_fn(move |cx| match in_flight.as_mut() {
        Some(f) => Pin::new(&mut f.call).poll(cx),
        None => Poll::Pending,
    })
}
