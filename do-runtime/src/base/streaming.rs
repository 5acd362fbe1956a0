//! Streamed response bodies: a `fetch` handler answers at once with a
//! [`streaming_response`] and sends the body chunk by chunk through its
//! [`BodySender`] (typically from `ctx.wait_until`), and the caller (or the
//! gateway, for an HTTP client) reads it as a [`BodyStream`] while it is
//! produced. At most [`BUFFERED_CHUNKS`] chunks wait between the two: a
//! producer faster than its reader waits in `send` (backpressure), so a
//! body of any size holds a bounded amount of memory.
//!
//! The receiving end crosses the call beside the reply: the object's side
//! registers it under a number in this process's table of streams, the
//! reply carries the number, and the caller's side claims it through its
//! thread's home (see `base::passing`): a runtime of this process from the
//! table, a remote client from the chunks its connection receives (the
//! server claimed the body and forwards it: `net::transport::streams`). A
//! body not claimed within [`UNCLAIMED_FOR`] is dropped (its sender then
//! fails).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::base::error::{DisconnectReason, Error};
use crate::base::fetch::Response;

/// Chunks that may wait between a streamed body's producer and its reader.
pub const BUFFERED_CHUNKS: usize = 4;

/// How long a streamed body may wait for its caller to claim it.
pub const UNCLAIMED_FOR: Duration = Duration::from_secs(30);

/// The sending end of a streamed body; see [`streaming_response`]. Call
/// [`finish`](Self::finish) when the body is complete: a body whose last
/// sender is dropped without it (its object was reset, its task
/// panicked) ends with an error for the reader, never as a body that
/// looks complete.
#[derive(Debug, Clone)]
pub struct BodySender {
    /// Before `tx`: dropped first, so the reader learns the body broke
    /// before it sees the channel close.
    ending: Arc<Ending>,
    tx: mpsc::Sender<Chunk>,
}

/// Why a body broke off, once it did: shared by its senders (or its
/// connection) and its reader.
#[derive(Default, Debug)]
pub(crate) struct Broken(std::sync::OnceLock<Error>);

impl Broken {
    pub(crate) fn set(&self, error: Error) {
        let _ = self.0.set(error);
    }
}

/// Shared by the clones of one sender: the last to go says whether the
/// body was finished.
#[derive(Debug)]
struct Ending {
    broken: Arc<Broken>,
    finished: std::sync::atomic::AtomicBool,
}

impl Drop for Ending {
    fn drop(&mut self) {
        if !self.finished.load(std::sync::atomic::Ordering::Acquire) {
            self.broken.set(Error::disconnected(
                DisconnectReason::Reset,
                "the streamed body broke off: its sender went before finish() (the object was reset, or its task ended)",
            ));
        }
    }
}

/// One piece of a streamed body: a chunk, or why the body broke off.
pub(crate) type Chunk = Result<Bytes, Error>;

impl BodySender {
    /// Sends the next chunk, waiting while [`BUFFERED_CHUNKS`] chunks wait
    /// for the reader. Fails with [`Error::Disconnected`] (reason
    /// `ConnectionLost`) once the reader is gone: the HTTP client hung up,
    /// or the caller dropped the body.
    pub async fn send(&self, chunk: impl Into<Bytes>) -> Result<(), Error> {
        self.tx.send(Ok(chunk.into())).await.map_err(|_| {
            Error::disconnected(
                DisconnectReason::ConnectionLost,
                "the reader of the streamed body went away",
            )
        })
    }

    /// Sends the next chunk if there is room now: `Ok(true)` when sent,
    /// `Ok(false)` when [`BUFFERED_CHUNKS`] chunks wait already (a reader
    /// that falls behind then misses this one, as a slow WebSocket client
    /// would). Fails like [`send`](Self::send) once the reader is gone.
    pub fn try_send(&self, chunk: impl Into<Bytes>) -> Result<bool, Error> {
        match self.tx.try_send(Ok(chunk.into())) {
            Ok(()) => Ok(true),
            Err(mpsc::error::TrySendError::Full(_)) => Ok(false),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Error::disconnected(
                DisconnectReason::ConnectionLost,
                "the reader of the streamed body went away",
            )),
        }
    }

    /// Resolves once the reader is gone: `ctx.wait_until(body.closed())`
    /// keeps the object alive while its reader stays.
    pub async fn closed(&self) {
        self.tx.closed().await;
    }

    /// Whether the reader is gone.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Ends the body, complete: the reader reads to its end (once the
    /// other clones of this sender, if any, are gone too).
    pub fn finish(self) {
        self.ending
            .finished
            .store(true, std::sync::atomic::Ordering::Release);
    }

    fn new(tx: mpsc::Sender<Chunk>, broken: Arc<Broken>) -> Self {
        BodySender {
            ending: Arc::new(Ending {
                broken,
                finished: std::sync::atomic::AtomicBool::new(false),
            }),
            tx,
        }
    }

    /// Ends the body with `error` (after what was sent): the reader's next
    /// item is that error.
    #[cfg_attr(not(feature = "gateway"), allow(dead_code))]
    pub(crate) async fn fail(self, error: Error) {
        let _ = self.tx.send(Err(error)).await;
        self.finish();
    }
}

/// A streamed body as its reader gets it: a `Stream` of chunks, ending
/// when the producer drops its sender. An `Err` says the body broke off
/// (the connection to a remote runtime was lost); nothing follows it.
pub struct BodyStream {
    rx: mpsc::Receiver<Chunk>,
    /// What the transport does as the reader goes (see `Flow`).
    flow: Option<Box<dyn Flow>>,
    /// Set when the body broke off; read once the channel ends.
    broken: Arc<Broken>,
    /// The end (or the error that ended it) was read.
    over: bool,
    /// What must live as long as the reader (the connection a relayed
    /// WebSocket's bytes come through).
    _held: Option<Box<dyn std::any::Any + Send + Sync>>,
}

/// How a body that crosses a connection is paced: the reader took a
/// chunk (room for one more), or let the body go.
pub(crate) trait Flow: Send + Sync {
    fn took(&self);
    fn dropped(&self);
}

impl BodyStream {
    /// A body read from `rx`, paced by `flow`.
    pub(crate) fn paced(
        rx: mpsc::Receiver<Chunk>,
        flow: Box<dyn Flow>,
        broken: Arc<Broken>,
    ) -> Self {
        BodyStream {
            rx,
            flow: Some(flow),
            broken,
            over: false,
            _held: None,
        }
    }

    /// This body, keeping `held` alive as long as it is read.
    #[cfg_attr(not(feature = "gateway"), allow(dead_code))]
    pub(crate) fn holding(mut self, held: Box<dyn std::any::Any + Send + Sync>) -> Self {
        self._held = Some(held);
        self
    }

    /// A new body: its sender, and its reader.
    fn pair() -> (BodySender, BodyStream) {
        let (tx, rx) = mpsc::channel(BUFFERED_CHUNKS);
        let broken = Arc::new(Broken::default());
        let reader = BodyStream {
            rx,
            flow: None,
            broken: broken.clone(),
            over: false,
            _held: None,
        };
        (BodySender::new(tx, broken), reader)
    }

    /// The next chunk, `None` at the end.
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes, Error>> {
        futures_util::StreamExt::next(self).await
    }
}

impl futures_util::Stream for BodyStream {
    type Item = Result<Bytes, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.over {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                if let Some(flow) = &self.flow {
                    flow.took();
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.over = true;
                Poll::Ready(Some(Err(e)))
            }
            // The channel ended: completely, or broken off.
            Poll::Ready(None) => {
                self.over = true;
                Poll::Ready(self.broken.0.get().cloned().map(Err))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for BodyStream {
    fn drop(&mut self) {
        if let Some(flow) = self.flow.take() {
            flow.dropped();
        }
    }
}

impl std::fmt::Debug for BodyStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyStream").finish_non_exhaustive()
    }
}

/// The extension of a response whose body is streamed: the receiving end,
/// until the reply's encoding or its reader takes it.
#[derive(Clone)]
struct Streamed(Arc<Mutex<Option<BodyStream>>>);

/// A `200 OK` response whose body is streamed: set its status and headers
/// as on any [`Response`], return it from `fetch`, and send the body with
/// the [`BodySender`], from `ctx.wait_until` so the object stays while it
/// streams. Through the gateway an HTTP client receives each chunk as it
/// is sent (chunked transfer encoding); a stub's caller takes the body with
/// [`body_stream`].
///
/// ```
/// use do_runtime::{durable_object, streaming_response, Ctx, Request, Response};
///
/// pub struct Ticker { ctx: Ctx }
///
/// #[durable_object]
/// impl Ticker {
///     pub fn new(ctx: Ctx) -> Self { Self { ctx } }
///
///     /// Server-sent events: one a tick, three ticks.
///     pub async fn fetch(&self, _request: Request) -> Response {
///         let (mut response, body) = streaming_response();
///         response.headers_mut().insert("content-type", "text/event-stream".parse().unwrap());
///         self.ctx.wait_until(async move {
///             for n in 1..=3 {
///                 if body.send(format!("data: tick {n}\n\n")).await.is_err() {
///                     return; // the client left
///                 }
///             }
///             body.finish(); // complete: without it the reader gets an error
///         });
///         response
///     }
/// }
/// ```
pub fn streaming_response() -> (Response, BodySender) {
    let (sender, reader) = BodyStream::pair();
    let mut response = Response::new(Bytes::new());
    attach(&mut response, reader);
    (response, sender)
}

/// A request or a response: either may carry a streamed body.
pub trait HttpMessage: sealed::Sealed {
    #[doc(hidden)]
    fn extensions(&self) -> &http::Extensions;
    #[doc(hidden)]
    fn extensions_mut(&mut self) -> &mut http::Extensions;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::base::fetch::Request {}
    impl Sealed for crate::base::fetch::Response {}
}

impl HttpMessage for crate::base::fetch::Request {
    fn extensions(&self) -> &http::Extensions {
        self.extensions()
    }
    fn extensions_mut(&mut self) -> &mut http::Extensions {
        self.extensions_mut()
    }
}

impl HttpMessage for Response {
    fn extensions(&self) -> &http::Extensions {
        self.extensions()
    }
    fn extensions_mut(&mut self) -> &mut http::Extensions {
        self.extensions_mut()
    }
}

/// Takes the streamed body of `message` (a response, or a request), if it
/// has one (once: a second call gives `None`). The buffered body of such a
/// message is empty.
pub fn body_stream<M: HttpMessage>(message: &mut M) -> Option<BodyStream> {
    let streamed = message.extensions_mut().remove::<Streamed>()?;
    lock(&streamed.0).take()
}

/// Whether `message` has a streamed body not yet taken.
pub fn is_streamed<M: HttpMessage>(message: &M) -> bool {
    message
        .extensions()
        .get::<Streamed>()
        .is_some_and(|s| lock(&s.0).is_some())
}

/// Gives `request` a streamed body (its buffered body should be empty) and
/// returns its sender: the caller sends the body while the object reads it
/// with [`body_stream`], each waiting for the other past
/// [`BUFFERED_CHUNKS`]. Start the call first, then send, then await it:
///
/// ```no_run
/// # async fn f(uploads: do_runtime::AnyStub) -> Result<(), do_runtime::Error> {
/// use do_runtime::{Request, stream_request_body};
/// let mut request = Request::new(Default::default());
/// *request.uri_mut() = "http://do/upload".parse().unwrap();
/// let body = stream_request_body(&mut request);
/// let response = uploads.fetch(request);      // sent now
/// for part in [&b"first"[..], b"second"] {
///     body.send(part.to_vec()).await?;
/// }
/// body.finish();                              // the end of the body
/// let response = response.await?;
/// # Ok(()) }
/// ```
///
/// Through a remote client the body crosses the connection as it is sent,
/// paced by the server (see `net::transport::streams`).
pub fn stream_request_body(request: &mut crate::base::fetch::Request) -> BodySender {
    let (sender, reader) = BodyStream::pair();
    attach(request, reader);
    sender
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// This process's streamed bodies between a reply's encoding and its
/// caller's claim.
static STREAMS: Mutex<Option<Table>> = Mutex::new(None);

#[derive(Default)]
struct Table {
    next: u64,
    waiting: HashMap<u64, (Instant, BodyStream)>,
}

/// Registers the streamed body of `response`, if it has one, for its
/// reply to carry: returns its number.
pub(crate) fn register<M: HttpMessage>(message: &M) -> Option<u64> {
    let streamed = message.extensions().get::<Streamed>()?;
    let body = lock(&streamed.0).take()?;
    Some(register_body(body))
}

/// Puts `body` in this process's table: returns its number.
pub(crate) fn register_body(body: BodyStream) -> u64 {
    let number = {
        let mut guard = lock(&STREAMS);
        let table = guard.get_or_insert_with(Table::default);
        let now = Instant::now();
        table
            .waiting
            .retain(|_, (since, _)| now.saturating_duration_since(*since) < UNCLAIMED_FOR);
        // Random, so that no number can be guessed (or taken over) by
        // another caller of this process.
        let mut number = 0;
        while number == 0 || table.waiting.contains_key(&number) {
            let mut bytes = [0u8; 8];
            if getrandom::fill(&mut bytes).is_err() {
                table.next += 1;
                bytes = table.next.to_le_bytes();
            }
            number = u64::from_le_bytes(bytes);
        }
        table.waiting.insert(number, (now, body));
        number
    };
    // Dropped unclaimed in time even if nothing else is registered after
    // it (a caller that went away would otherwise hold its producer).
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            tokio::time::sleep(UNCLAIMED_FOR).await;
            let unclaimed = lock(&STREAMS)
                .as_mut()
                .and_then(|table| table.waiting.remove(&number));
            drop(unclaimed);
        });
    }
    number
}

/// Claims the streamed body registered under `number`.
pub(crate) fn claim(number: u64) -> Option<BodyStream> {
    let mut table = lock(&STREAMS);
    let (_, body) = table.as_mut()?.waiting.remove(&number)?;
    Some(body)
}

/// Puts a claimed body back on a decoded response, for its reader.
pub(crate) fn attach<M: HttpMessage>(message: &mut M, body: BodyStream) {
    message
        .extensions_mut()
        .insert(Streamed(Arc::new(Mutex::new(Some(body)))));
}

/// A new body for the runtime's own plumbing (a relayed WebSocket's
/// bytes): its sender, and its reader.
#[cfg_attr(not(feature = "gateway"), allow(dead_code))]
pub(crate) fn pipe() -> (BodySender, BodyStream) {
    BodyStream::pair()
}

/// A channel for a body that arrives over a connection: its sending end
/// for the transport, and the receiving end to pace with [`BodyStream::paced`].
pub(crate) fn channel() -> (mpsc::Sender<Chunk>, mpsc::Receiver<Chunk>) {
    mpsc::channel(BUFFERED_CHUNKS)
}
