//! WebSockets accepted by objects, kept by the runtime so they outlive the
//! instance (hibernation).
//!
//! An object accepts a socket in its `fetch` handler with
//! [`Ctx::accept_websocket`](crate::Ctx::accept_websocket) and returns the
//! `101` response it gets; the gateway completes the upgrade. From then on
//! the socket belongs to the object, not to the instance: an idle object may
//! be evicted while its sockets stay open, and the next message builds a new
//! instance and is delivered to it. Messages, closes and errors arrive as
//! calls of the object's handlers, in the order they happened on the socket:
//!
//! ```
//! use do_runtime::{durable_object, Ctx, Error, Message, Request, Response, WebSocket};
//!
//! pub struct Room { ctx: Ctx }
//!
//! #[durable_object]
//! impl Room {
//!     pub fn new(ctx: Ctx) -> Self { Self { ctx } }
//!
//!     pub async fn fetch(&self, request: Request) -> Result<Response, Error> {
//!         let (socket, response) = self.ctx.accept_websocket(&request, &["guest"])?;
//!         socket.serialize_attachment(&"anonymous")?;
//!         Ok(response)
//!     }
//!
//!     pub async fn websocket_message(&self, socket: WebSocket, message: Message) {
//!         for other in self.ctx.websockets(None) {
//!             if other.id() != socket.id() {
//!                 other.send(message.clone()).ok();
//!             }
//!         }
//!     }
//!
//!     pub async fn websocket_close(&self, socket: WebSocket, code: u16, reason: String, clean: bool) {}
//!
//!     pub async fn websocket_error(&self, socket: WebSocket, error: String) {}
//! }
//! ```
//!
//! The three handlers are optional and never appear on the stub.
//!
//! The gateway in front need not be the object's runtime's: a gateway whose
//! router forwards the upgrade through a remote client, and returns the
//! object's `101` as it came back, completes it, and the connection between
//! the runtimes carries the socket's bytes both ways. The object's runtime
//! serves the socket as its own (hibernation, auto-response, closes):
//!
//! ```no_run
//! # use do_runtime::{durable_object, Ctx, Error, Request, Response};
//! # pub struct Room { ctx: Ctx }
//! # #[durable_object] impl Room { pub fn new(ctx: Ctx) -> Self { Self { ctx } }
//! #   pub async fn fetch(&self, request: Request) -> Result<Response, Error> {
//! #     Ok(self.ctx.accept_websocket(&request, &[])?.1) } }
//! # #[cfg(feature = "gateway")]
//! # async fn f(front: do_runtime::Runtime) -> Result<(), Error> {
//! use do_runtime::Client;
//!
//! let rooms = Client::connect("10.0.0.2:7878").await?.namespace::<Room>()?;
//! let gateway = front
//!     .gateway()
//!     .route(move |request, _env| {
//!         let rooms = rooms.clone();
//!         async move { rooms.get_by_name("lobby").fetch(request).await }
//!     })
//!     .start()
//!     .await?;
//! # Ok(()) }
//! ```

use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::ctx::Ctx;
use crate::api::object::Incoming;
use crate::base::error::{DisconnectReason, Error};
use crate::base::fetch::Response;
use crate::engine::shared::Shared;
use crate::engine::sockets::Event;
use crate::engine::sockets::SocketEntry;
pub use crate::engine::sockets::{
    AutoResponse, MAX_ATTACHMENT_BYTES, MAX_TAG_BYTES, MAX_TAGS, Message, SEND_BUFFER,
    SEND_BUFFER_BYTES,
};

/// One WebSocket of an object: send on it, close it, read its tags, keep a
/// small attachment with it. Cheap to clone, `Send` and `Sync`; it stays
/// valid across the object's hibernation (the next instance gets the same
/// socket, with its tags and attachment, from
/// [`Ctx::websockets`](crate::Ctx::websockets) and the handlers).
#[derive(Clone)]
pub struct WebSocket {
    entry: Arc<SocketEntry>,
}

impl WebSocket {
    /// The handle of socket `entry`.
    pub(crate) fn of(entry: Arc<SocketEntry>) -> Self {
        WebSocket { entry }
    }

    pub(crate) fn entry(&self) -> &SocketEntry {
        &self.entry
    }
}

impl WebSocket {
    /// A number that identifies the socket within its runtime.
    pub fn id(&self) -> u64 {
        self.entry.id()
    }

    /// The tags it was accepted with.
    pub fn tags(&self) -> &[String] {
        self.entry.tags()
    }

    /// Whether the socket is closed or closing: sends fail.
    pub fn is_closed(&self) -> bool {
        self.entry.is_closed()
    }

    /// Queues a message to the client. Like a method's result, it leaves
    /// only once the writes the object made before it are durable (the
    /// output gate), in the order sent. Fails with [`Error::WebSocketLimit`]
    /// for a message over the runtime's limit, [`Error::Disconnected`] once
    /// the socket is closed, and [`Error::Overloaded`] when the client is not
    /// reading and [`SEND_BUFFER`] messages or [`SEND_BUFFER_BYTES`] bytes
    /// are waiting.
    pub fn send(&self, message: impl Into<Message>) -> Result<(), Error> {
        self.entry.send(message.into())
    }

    /// Closes the socket with a close `code` (1000, or 3000 to 4999) and a
    /// `reason` of at most 123 bytes, after the messages sent before. No
    /// close handler runs for a close the object started.
    pub fn close(&self, code: u16, reason: &str) -> Result<(), Error> {
        self.entry.close(code, reason)
    }

    /// Keeps `value` with the socket, replacing the previous attachment. It
    /// survives hibernation (not a restart: the socket does not either). At
    /// most [`MAX_ATTACHMENT_BYTES`] once encoded.
    pub fn serialize_attachment<T: Serialize + ?Sized>(&self, value: &T) -> Result<(), Error> {
        let bytes = postcard::to_stdvec(value).map_err(|e| Error::Codec(e.to_string()))?;
        self.entry.set_attachment(bytes)
    }

    /// The attachment, if one was set; [`Error::Codec`] if it was set with
    /// another type.
    pub fn deserialize_attachment<T: DeserializeOwned>(&self) -> Result<Option<T>, Error> {
        self.entry
            .attachment()
            .map(|b| {
                postcard::from_bytes(&b)
                    .map_err(|e| Error::Codec(format!("cannot decode the attachment: {e}")))
            })
            .transpose()
    }
}

impl PartialEq for WebSocket {
    fn eq(&self, other: &Self) -> bool {
        self.entry.id() == other.entry.id()
    }
}

impl Eq for WebSocket {}

impl std::fmt::Debug for WebSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocket")
            .field("id", &self.entry.id())
            .field("tags", &self.entry.tags())
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// Runs a `fetch` handler; when it ends, the WebSockets it accepted that its
/// response does not hand over are forgotten.
pub fn fetch_scope<F>(
    ctx: &Ctx,
    future: F,
    response: fn(&F::Output) -> Option<&Response>,
) -> impl std::future::Future<Output = F::Output>
where
    F: std::future::Future,
{
    /// Settles the sockets accepted so far when the handler ends — or is
    /// dropped (a reset): then none of them is handed over.
    struct Settle {
        shared: std::sync::Arc<Shared>,
        accepted: crate::engine::sockets::scope::Accepted,
    }
    impl Settle {
        fn settle(&self, response: Option<&Response>) {
            let sockets = std::mem::take(&mut *self.accepted.borrow_mut());
            if !sockets.is_empty() {
                self.shared.sockets().settle(sockets, response);
            }
        }
    }
    impl Drop for Settle {
        fn drop(&mut self) {
            self.settle(None);
        }
    }
    let settle = Settle {
        shared: ctx.env().shared().clone(),
        accepted: crate::engine::sockets::scope::Accepted::default(),
    };
    let mut future = Box::pin(future);
    std::future::poll_fn(move |cx| {
        let polled =
            crate::engine::sockets::scope::with(&settle.accepted, || future.as_mut().poll(cx));
        if let std::task::Poll::Ready(output) = &polled {
            settle.settle(response(output));
        }
        polled
    })
}

/// The event of a WebSocket handler call, with its socket.
fn socket_event(call: &Incoming<'_>) -> Result<(WebSocket, Event), Error> {
    let event: Event = postcard::from_bytes(call.args)
        .map_err(|e| Error::Codec(format!("cannot decode a WebSocket event: {e}")))?;
    let socket = match &event {
        Event::Message { socket, .. }
        | Event::Close { socket, .. }
        | Event::Error { socket, .. } => *socket,
    };
    let ws = call.ctx.websocket(socket).ok_or_else(|| {
        Error::disconnected(
            DisconnectReason::SocketClosed,
            format!("WebSocket {socket} is gone"),
        )
    })?;
    Ok((ws, event))
}

/// The arguments of `websocket_message`.
pub fn websocket_message_args(call: &Incoming<'_>) -> Result<(WebSocket, Message), Error> {
    match socket_event(call)? {
        (ws, Event::Message { message, .. }) => Ok((ws, message)),
        _ => Err(Error::Codec("expected a WebSocket message event".into())),
    }
}

/// The arguments of `websocket_close`.
pub fn websocket_close_args(call: &Incoming<'_>) -> Result<(WebSocket, u16, String, bool), Error> {
    match socket_event(call)? {
        (
            ws,
            Event::Close {
                code,
                reason,
                clean,
                ..
            },
        ) => Ok((ws, code, reason, clean)),
        _ => Err(Error::Codec("expected a WebSocket close event".into())),
    }
}

/// The arguments of `websocket_error`.
pub fn websocket_error_args(call: &Incoming<'_>) -> Result<(WebSocket, String), Error> {
    match socket_event(call)? {
        (ws, Event::Error { error, .. }) => Ok((ws, error)),
        _ => Err(Error::Codec("expected a WebSocket error event".into())),
    }
}
