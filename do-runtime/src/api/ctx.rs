//! What an instance is given at construction: its id, its storage, the environment.

use std::rc::Rc;

use std::future::Future;

use futures_util::future::LocalBoxFuture;

use std::sync::Arc;

use crate::api::env::Env;
use crate::api::storage::{AlarmHooks, Storage};
use crate::api::websocket::{AutoResponse, WebSocket};
use crate::base::error::Error;
use crate::base::fetch::{Request, Response};
use crate::base::id::DurableObjectId;
use crate::engine::class::{Class, ObjectParts};
use crate::engine::input_gate::InputGate;

/// The context of one instance: its id, its [`Storage`] and the runtime's
/// [`Env`]. Cheap to clone; not `Send` (it belongs to the thread that runs
/// the object).
///
/// The constructor receives it: by convention `pub fn new(ctx: Ctx) -> Self`,
/// keeping `ctx` in a field.
///
/// ```
/// use do_runtime::{durable_object, Ctx};
///
/// pub struct Greeter { ctx: Ctx }
///
/// #[durable_object]
/// impl Greeter {
///     pub fn new(ctx: Ctx) -> Self { Self { ctx } }
///
///     pub async fn whoami(&self) -> String {
///         self.ctx.id().name().unwrap_or("anonymous").to_owned()
///     }
/// }
/// ```
#[derive(Clone)]
pub struct Ctx {
    inner: Rc<Inner>,
}

struct Inner {
    class: Arc<Class>,
    id: DurableObjectId,
    storage: Storage,
    env: Env,
    gate: Rc<InputGate>,
}

impl Ctx {
    /// The context of an instance built of `parts`.
    pub(crate) fn from_parts(parts: ObjectParts) -> Self {
        let storage = Storage::new(
            parts.store,
            Some(AlarmHooks {
                class: parts.class.name.clone(),
                has_handler: parts.class.has_alarm,
                scheduler: parts.shared.alarms().clone(),
            }),
        );
        Ctx::new(
            parts.class,
            parts.id,
            storage,
            Env::new(parts.shared),
            parts.gate,
        )
    }

    fn new(
        class: Arc<Class>,
        id: DurableObjectId,
        storage: Storage,
        env: Env,
        gate: Rc<InputGate>,
    ) -> Self {
        Ctx {
            inner: Rc::new(Inner {
                class,
                id,
                storage,
                env,
                gate,
            }),
        }
    }

    /// Runs `future` on this object's thread and delivers no other call to
    /// the object until it completes. Starts at once, whether or not the
    /// returned [`Blocking`] handle is awaited, so it works in the
    /// (synchronous) constructor, typically to load state before the first
    /// call:
    ///
    /// ```
    /// use std::cell::Cell;
    /// use std::rc::Rc;
    /// use do_runtime::{durable_object, Ctx, Error};
    ///
    /// pub struct Scores { ctx: Ctx, best: Rc<Cell<i64>> }
    ///
    /// #[durable_object]
    /// impl Scores {
    ///     pub fn new(ctx: Ctx) -> Self {
    ///         let best = Rc::new(Cell::new(0));
    ///         let (storage, slot) = (ctx.storage().clone(), best.clone());
    ///         // No call reaches `best` before it is loaded.
    ///         ctx.block_concurrency_while(async move {
    ///             slot.set(storage.get::<i64>("best").await.ok().flatten().unwrap_or(0));
    ///         });
    ///         Self { ctx, best }
    ///     }
    ///
    ///     pub async fn best(&self) -> i64 { self.best.get() }
    /// }
    /// ```
    ///
    /// A panic inside `future` resets the instance, like a panic in a method.
    /// So does a `future` still running after the runtime's limit (30 s
    /// unless set with
    /// [`RuntimeBuilder::block_concurrency_limit`](crate::RuntimeBuilder::block_concurrency_limit)):
    /// rather than hang for good, the instance is reset, and the calls it
    /// held and the stubs bound to it fail with
    /// [`DisconnectReason::TimedOut`](crate::DisconnectReason::TimedOut).
    pub fn block_concurrency_while<F>(&self, future: F) -> Blocking<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        let limit = self.inner.env.shared().block_concurrency_limit();
        Blocking {
            future: Box::pin(self.inner.gate.block_while(future, limit)),
        }
    }

    /// Runs `future` on this object's thread beside its calls, as
    /// Cloudflare's `ctx.waitUntil`: the method that starts it can answer
    /// at once, and the instance is not evicted (not even hibernated) until
    /// the future ends. Its writes are committed as it makes them, like a
    /// method's. A panic inside it resets the instance, like a panic in a
    /// method; a reset or the runtime's stop drops it unfinished.
    ///
    /// ```
    /// use do_runtime::{durable_object, Ctx, Error};
    ///
    /// pub struct Orders { ctx: Ctx }
    ///
    /// #[durable_object]
    /// impl Orders {
    ///     pub fn new(ctx: Ctx) -> Self { Self { ctx } }
    ///
    ///     pub async fn place(&self, order: String) -> Result<(), Error> {
    ///         self.ctx.storage().put(&order, &"placed")?;
    ///         let storage = self.ctx.storage().clone();
    ///         // Answered now; the receipt is written in the background.
    ///         self.ctx.wait_until(async move {
    ///             let _ = storage.put(&format!("receipt/{order}"), &"sent");
    ///         });
    ///         Ok(())
    ///     }
    /// }
    /// ```
    pub fn wait_until<F>(&self, future: F)
    where
        F: Future<Output = ()> + 'static,
    {
        self.inner.gate.wait_until(future);
    }

    /// Resets this instance on purpose, as Cloudflare's `ctx.abort()`: at
    /// the end of the current step the instance is dropped with every call
    /// running on it, writes not yet committed are dropped (committed ones
    /// are kept), and the stubs bound to it break with
    /// [`DisconnectReason::Aborted`](crate::DisconnectReason::Aborted);
    /// a new stub gets a new instance. Returns that error, for the calling
    /// method to return:
    ///
    /// ```
    /// # use do_runtime::{durable_object, Ctx, Error};
    /// pub struct Ledger { ctx: Ctx }
    ///
    /// #[durable_object]
    /// impl Ledger {
    ///     pub fn new(ctx: Ctx) -> Self { Self { ctx } }
    ///
    ///     pub async fn apply(&self, entry: i64) -> Result<(), Error> {
    ///         if entry == i64::MIN {
    ///             // Memory can no longer be trusted: start over from storage.
    ///             return Err(self.ctx.abort("impossible entry"));
    ///         }
    ///         self.ctx.storage().put("last", &entry)
    ///     }
    /// }
    /// ```
    pub fn abort(&self, reason: impl Into<String>) -> Error {
        let reason = reason.into();
        let error = Error::disconnected(
            crate::base::error::DisconnectReason::Aborted,
            format!("the object aborted: {reason}"),
        );
        self.inner
            .gate
            .request_reset(crate::engine::input_gate::ResetCause::Aborted(reason));
        error
    }

    /// The id of this object.
    pub fn id(&self) -> &DurableObjectId {
        &self.inner.id
    }

    /// The runtime's current time: the system's, or the test clock's (see
    /// [`RuntimeBuilder::manual_clock`](crate::RuntimeBuilder)). Use it to
    /// set alarms.
    pub fn now(&self) -> std::time::SystemTime {
        self.inner.env.shared().clock().now()
    }

    /// This object's private, durable key-value storage.
    pub fn storage(&self) -> &Storage {
        &self.inner.storage
    }

    /// The runtime's environment: other namespaces, to call other objects.
    pub fn env(&self) -> &Env {
        &self.inner.env
    }

    /// Accepts the WebSocket that `request` asks for, with `tags` to find it
    /// by later (at most [`MAX_TAGS`](crate::api::websocket::MAX_TAGS) of 1 to
    /// [`MAX_TAG_BYTES`](crate::api::websocket::MAX_TAG_BYTES) bytes). Return the
    /// response from the `fetch` handler; the gateway completes the upgrade.
    /// The socket belongs to the object from now on, across hibernation: its
    /// messages arrive at `websocket_message`, and
    /// [`Ctx::websockets`] lists it. See [`WebSocket`] for an example.
    ///
    /// Fails with [`Error::BadRequest`] for a request without
    /// `upgrade: websocket`, and with [`Error::WebSocketLimit`] past the
    /// limits on tags and on sockets per object.
    pub fn accept_websocket(
        &self,
        request: &Request,
        tags: &[&str],
    ) -> Result<(WebSocket, Response), Error> {
        self.inner
            .env
            .shared()
            .sockets()
            .accept(&self.inner.class, &self.inner.id, request, tags)
            .map(|(entry, response)| (WebSocket::of(entry), response))
    }

    /// The object's WebSockets that are not closed, in the order they were
    /// accepted; with `Some(tag)`, only those accepted with that tag.
    pub fn websockets(&self, tag: Option<&str>) -> Vec<WebSocket> {
        self.inner
            .env
            .shared()
            .sockets()
            .list(&self.inner.class, &self.inner.id, tag)
            .into_iter()
            .map(WebSocket::of)
            .collect()
    }

    /// Sets (or with `None` clears) the message the runtime answers on any of
    /// this object's sockets without waking it. It lasts while the object
    /// has sockets, across hibernation; setting it in the constructor keeps
    /// it in place.
    pub fn set_websocket_auto_response(&self, auto: Option<AutoResponse>) {
        self.inner.env.shared().sockets().set_auto_response(
            &self.inner.class,
            &self.inner.id,
            auto,
        );
    }

    /// The auto-response in force.
    pub fn websocket_auto_response(&self) -> Option<AutoResponse> {
        self.inner
            .env
            .shared()
            .sockets()
            .auto_response(&self.inner.class, &self.inner.id)
    }

    /// When the runtime last answered a message on `socket` with the
    /// auto-response (see [`Ctx::set_websocket_auto_response`]), by the
    /// runtime's clock; `None` if it never did. As Cloudflare's
    /// `getWebSocketAutoResponseTimestamp`: a hibernated object can tell
    /// a client that still pings from one that went quiet.
    pub fn websocket_auto_response_timestamp(
        &self,
        socket: &WebSocket,
    ) -> Option<std::time::SystemTime> {
        socket.entry().auto_response_at()
    }

    /// The socket `socket` of this object.
    pub(crate) fn websocket(&self, socket: u64) -> Option<WebSocket> {
        self.inner
            .env
            .shared()
            .sockets()
            .get(&self.inner.class, &self.inner.id, socket)
            .map(WebSocket::of)
    }
}

/// A future started by [`Ctx::block_concurrency_while`]. It runs whether or
/// not this handle is kept; `.await` it to get the future's output.
pub struct Blocking<T> {
    future: LocalBoxFuture<'static, T>,
}

impl<T> std::future::IntoFuture for Blocking<T> {
    type Output = T;
    type IntoFuture = LocalBoxFuture<'static, T>;
    fn into_future(self) -> Self::IntoFuture {
        self.future
    }
}

impl<T> std::fmt::Debug for Blocking<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Blocking")
    }
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("id", &self.inner.id)
            .finish_non_exhaustive()
    }
}
