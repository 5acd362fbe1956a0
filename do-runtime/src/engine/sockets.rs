//! WebSockets accepted by objects, as the runtime keeps them: by object and
//! by id, with their tags, attachment, send queue and state, so they
//! outlive the instance (hibernation). The user's handle is
//! `api::websocket::WebSocket`; the gateway serves what is queued here.

// Without the gateway, sockets are accepted but nothing serves them.
#![cfg_attr(not(feature = "gateway"), allow(dead_code))]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::base::error::{DisconnectReason, Error};
use crate::base::fetch::{Request, Response};
use crate::base::id::DurableObjectId;
use crate::engine::class::Class;
use crate::engine::worker::ObjectKey;

/// The most tags one socket may carry.
pub const MAX_TAGS: usize = 10;
/// The longest tag, in bytes.
pub const MAX_TAG_BYTES: usize = 256;
/// The largest serialized attachment, in bytes.
pub const MAX_ATTACHMENT_BYTES: usize = 16 * 1024;
/// Messages an object may queue on one socket before `send` fails with
/// [`Error::Overloaded`].
pub const SEND_BUFFER: usize = 1024;
/// Bytes an object may queue on one socket before `send` fails with
/// [`Error::Overloaded`].
pub const SEND_BUFFER_BYTES: usize = 8 * 1024 * 1024;

pub(crate) use crate::base::fetch::{SOCKET_HEADER, TOKEN_HEADER};

/// How long an accepted socket may wait for the gateway to complete its
/// upgrade before it is forgotten.
const PENDING_TIMEOUT: Duration = Duration::from_secs(10);

/// One WebSocket message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// A UTF-8 text frame.
    Text(String),
    /// A binary frame.
    Binary(Bytes),
}

impl Message {
    /// The payload's length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Message::Text(t) => t.len(),
            Message::Binary(b) => b.len(),
        }
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The text of a text message.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Message::Text(t) => Some(t),
            Message::Binary(_) => None,
        }
    }
}

impl From<String> for Message {
    fn from(text: String) -> Self {
        Message::Text(text)
    }
}

impl From<&str> for Message {
    fn from(text: &str) -> Self {
        Message::Text(text.to_owned())
    }
}

impl From<Vec<u8>> for Message {
    fn from(bytes: Vec<u8>) -> Self {
        Message::Binary(bytes.into())
    }
}

impl From<Bytes> for Message {
    fn from(bytes: Bytes) -> Self {
        Message::Binary(bytes)
    }
}

/// A fixed request/response pair answered by the runtime without waking the
/// object: when a socket of the object receives exactly `request` as a text
/// message, it is sent `response`, and no handler runs. Typically a
/// keep-alive ping.
///
/// ```
/// # use do_runtime::AutoResponse;
/// let pong = AutoResponse::new("ping", "pong");
/// assert_eq!(pong.request(), "ping");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoResponse {
    request: String,
    response: String,
}

impl AutoResponse {
    /// Answers `request` with `response`.
    pub fn new(request: impl Into<String>, response: impl Into<String>) -> Self {
        AutoResponse {
            request: request.into(),
            response: response.into(),
        }
    }

    /// The message answered.
    pub fn request(&self) -> &str {
        &self.request
    }

    /// The answer.
    pub fn response(&self) -> &str {
        &self.response
    }
}

/// Limits on the WebSockets of each object; set with the runtime builder.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub per_object: usize,
    pub message_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_object: 32_768,
            message_bytes: 1024 * 1024,
        }
    }
}

/// What an object asks the gateway to do with a socket, numbered so the
/// gateway sends them in the order the object made them, whatever order the
/// output gate releases them in.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub seq: u64,
    /// The message's bytes, counted against the send budget (`None` for a
    /// close, which is not), given back when the gateway takes it up.
    pub counted: Option<usize>,
    /// `None`: the writes this message reflected were lost (the instance
    /// was reset), so the message is dropped.
    pub what: Option<Out>,
}

#[derive(Debug)]
pub(crate) enum Out {
    Message(Message),
    Close { code: u16, reason: String },
}

const PENDING: u8 = 0;
const OPEN: u8 = 1;
const CLOSING: u8 = 2;
const CLOSED: u8 = 3;

/// One accepted socket, as the runtime keeps it.
pub(crate) struct SocketEntry {
    id: u64,
    /// The secret that hands the socket from the object's response to the
    /// gateway: random, so no other runtime's response can claim it.
    token: u128,
    group: Arc<SocketGroup>,
    tags: Vec<String>,
    attachment: Mutex<Option<Bytes>>,
    out: mpsc::UnboundedSender<Outgoing>,
    /// The receiving end, until the gateway claims it.
    pending: Mutex<Option<mpsc::UnboundedReceiver<Outgoing>>>,
    state: AtomicU8,
    accepted: Instant,
    message_bytes: usize,
    next_seq: AtomicU64,
    /// Messages and bytes sent and not yet written to the client.
    queued: AtomicUsize,
    queued_bytes: AtomicUsize,
    /// When the runtime last sent the auto-response on this socket (ms
    /// since the Unix epoch, by the runtime's clock); 0: never.
    auto_at: AtomicU64,
}

/// The sockets and auto-response of one object.
pub(crate) struct SocketGroup {
    class: Arc<Class>,
    id: DurableObjectId,
    sockets: Mutex<Vec<Arc<SocketEntry>>>,
    auto_response: Mutex<Option<AutoResponse>>,
}

/// Every socket of one runtime.
pub(crate) struct Sockets {
    next_id: AtomicU64,
    groups: Mutex<HashMap<ObjectKey, Arc<SocketGroup>>>,
    by_id: Mutex<HashMap<u64, Arc<SocketEntry>>>,
    /// When pending sockets were last swept.
    swept: Mutex<Instant>,
    limits: Limits,
    /// `do_websockets`: how many sockets are kept.
    gauge: metrics::Gauge,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn random_token() -> u128 {
    let mut bytes = [0u8; 16];
    // Without randomness the id alone still works within one runtime.
    let _ = getrandom::fill(&mut bytes);
    u128::from_le_bytes(bytes)
}

impl Sockets {
    pub(crate) fn new(limits: Limits, gauge: metrics::Gauge) -> Self {
        Sockets {
            next_id: AtomicU64::new(1),
            groups: Mutex::default(),
            by_id: Mutex::default(),
            swept: Mutex::new(Instant::now()),
            limits,
            gauge,
        }
    }

    /// Runs `f` on the object's group (made if need be) with the map locked,
    /// so no concurrent `remove` drops the group while `f` adds to it.
    fn with_group<R>(
        &self,
        class: &Arc<Class>,
        id: &DurableObjectId,
        f: impl FnOnce(&Arc<SocketGroup>) -> R,
    ) -> R {
        let mut groups = lock(&self.groups);
        let group = groups.entry((class.index, id.base())).or_insert_with(|| {
            Arc::new(SocketGroup {
                class: class.clone(),
                id: id.clone(),
                sockets: Mutex::default(),
                auto_response: Mutex::default(),
            })
        });
        f(group)
    }

    fn existing_group(&self, class: &Class, id: &DurableObjectId) -> Option<Arc<SocketGroup>> {
        lock(&self.groups).get(&(class.index, id.base())).cloned()
    }

    /// Forgets sockets accepted more than [`PENDING_TIMEOUT`] ago that no
    /// gateway claimed, open or already closed by the object (at most once
    /// a second).
    fn sweep_pending(&self) {
        {
            let mut swept = lock(&self.swept);
            if swept.elapsed() < Duration::from_secs(1) {
                return;
            }
            *swept = Instant::now();
        }
        let stale: Vec<Arc<SocketEntry>> = lock(&self.by_id)
            .values()
            .filter(|s| {
                s.state.load(Ordering::Acquire) == PENDING && s.accepted.elapsed() > PENDING_TIMEOUT
            })
            .cloned()
            .collect();
        for entry in stale {
            self.remove(&entry);
        }
    }

    /// Accepts a socket for an object: checks the request and the limits and
    /// registers the socket as pending until the gateway claims it.
    pub(crate) fn accept(
        &self,
        class: &Arc<Class>,
        id: &DurableObjectId,
        request: &Request,
        tags: &[&str],
    ) -> Result<(Arc<SocketEntry>, Response), Error> {
        if !is_upgrade(request.headers()) {
            return Err(Error::BadRequest(
                "not a WebSocket upgrade request (no `upgrade: websocket` header)".into(),
            ));
        }
        if tags.len() > MAX_TAGS {
            return Err(Error::WebSocketLimit(format!(
                "{} tags given; a socket carries at most {MAX_TAGS}",
                tags.len()
            )));
        }
        if let Some(tag) = tags
            .iter()
            .find(|t| t.len() > MAX_TAG_BYTES || t.is_empty())
        {
            return Err(Error::WebSocketLimit(format!(
                "a tag of {} bytes; tags are 1 to {MAX_TAG_BYTES} bytes",
                tag.len()
            )));
        }
        self.sweep_pending();
        let entry = self.with_group(class, id, |group| {
            let mut sockets = lock(&group.sockets);
            if sockets.len() >= self.limits.per_object {
                return Err(Error::WebSocketLimit(format!(
                    "the object has {} WebSockets; the limit is {}",
                    sockets.len(),
                    self.limits.per_object
                )));
            }
            let (out, rx) = mpsc::unbounded_channel();
            let entry = Arc::new(SocketEntry {
                id: self.next_id.fetch_add(1, Ordering::Relaxed),
                token: random_token(),
                group: group.clone(),
                tags: tags.iter().map(|t| (*t).to_owned()).collect(),
                attachment: Mutex::default(),
                out,
                pending: Mutex::new(Some(rx)),
                state: AtomicU8::new(PENDING),
                accepted: Instant::now(),
                message_bytes: self.limits.message_bytes,
                next_seq: AtomicU64::new(0),
                queued: AtomicUsize::new(0),
                queued_bytes: AtomicUsize::new(0),
                auto_at: AtomicU64::new(0),
            });
            sockets.push(entry.clone());
            Ok(entry)
        })?;
        scope::note(&entry);
        {
            let mut by_id = lock(&self.by_id);
            by_id.insert(entry.id, entry.clone());
            self.gauge.set(by_id.len() as f64);
        }
        let mut response = Response::new(Bytes::new());
        *response.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
        response
            .headers_mut()
            .insert(SOCKET_HEADER, http::HeaderValue::from(entry.id));
        if let Ok(token) = http::HeaderValue::from_str(&format!("{:032x}", entry.token)) {
            response.headers_mut().insert(TOKEN_HEADER, token);
        }
        Ok((entry, response))
    }

    /// The socket a response hands over, if its id and token match.
    fn handed_over(&self, response: &Response) -> Option<Arc<SocketEntry>> {
        let (id, token) = crate::base::fetch::handed_over(response)?;
        self.by_token(id, token)
    }

    /// Socket `id`, if `token` is its token.
    fn by_token(&self, id: u64, token: u128) -> Option<Arc<SocketEntry>> {
        let entry = lock(&self.by_id).get(&id).cloned()?;
        (entry.token == token).then_some(entry)
    }

    /// The gateway takes over the socket `response` hands over (see
    /// [`Sockets::claim_token`]).
    pub(crate) fn claim(&self, response: &Response) -> Option<Claimed> {
        let (id, token) = crate::base::fetch::handed_over(response)?;
        self.claim_token(id, token)
    }

    /// A gateway takes over socket `id` (if `token` is its token): marks
    /// it open (a socket the object closed meanwhile stays closing, so its
    /// close is sent) and takes the queue of what the object sends on it.
    /// The gateway is this runtime's, or another's that the object's
    /// response reached through a connection.
    pub(crate) fn claim_token(&self, id: u64, token: u128) -> Option<Claimed> {
        let entry = self.by_token(id, token)?;
        let rx = lock(&entry.pending).take()?;
        let _ = entry
            .state
            .compare_exchange(PENDING, OPEN, Ordering::AcqRel, Ordering::Acquire);
        // Removed meanwhile: nothing to serve.
        if entry.state.load(Ordering::Acquire) == CLOSED {
            return None;
        }
        Some(Claimed { entry, rx })
    }

    /// Forgets the sockets a `fetch` accepted that its response does not
    /// hand over: nothing will ever upgrade them.
    pub(crate) fn settle(&self, accepted: Vec<Arc<SocketEntry>>, response: Option<&Response>) {
        let kept = response
            .filter(|r| r.status() == http::StatusCode::SWITCHING_PROTOCOLS)
            .and_then(|r| self.handed_over(r));
        for entry in accepted {
            if !kept.as_ref().is_some_and(|k| Arc::ptr_eq(k, &entry)) {
                self.remove(&entry);
            }
        }
    }

    /// Forgets the socket `response` hands over when no upgrade follows
    /// (the response is not a 101, or the handshake is not valid).
    pub(crate) fn abandon(&self, response: &Response) {
        if let Some(entry) = self.handed_over(response) {
            self.remove(&entry);
        }
    }

    /// The socket `socket` if it belongs to the object `(class, id)`.
    pub(crate) fn get(
        &self,
        class: &Class,
        id: &DurableObjectId,
        socket: u64,
    ) -> Option<Arc<SocketEntry>> {
        let entry = lock(&self.by_id).get(&socket).cloned()?;
        (entry.group.class.index == class.index && entry.group.id == *id).then_some(entry)
    }

    /// Forgets a socket for good.
    pub(crate) fn remove(&self, entry: &Arc<SocketEntry>) {
        entry.state.store(CLOSED, Ordering::Release);
        {
            let mut by_id = lock(&self.by_id);
            by_id.remove(&entry.id);
            self.gauge.set(by_id.len() as f64);
        }
        let group = &entry.group;
        let mut groups = lock(&self.groups);
        let empty = {
            let mut sockets = lock(&group.sockets);
            sockets.retain(|s| s.id != entry.id);
            sockets.is_empty()
        };
        let key = (group.class.index, group.id.base());
        // Remove the group unless it keeps an auto-response, or it is no
        // longer the object's group.
        if empty
            && lock(&group.auto_response).is_none()
            && groups.get(&key).is_some_and(|g| Arc::ptr_eq(g, group))
        {
            groups.remove(&key);
        }
    }

    /// Drops what is kept for an object that has no sockets (its
    /// auto-response), when its instance leaves.
    pub(crate) fn forget_idle(&self, class: &Class, id: &DurableObjectId) {
        let mut groups = lock(&self.groups);
        let key = (class.index, id.base());
        if groups
            .get(&key)
            .is_some_and(|g| lock(&g.sockets).is_empty())
        {
            groups.remove(&key);
        }
    }

    /// The object's sockets that are not closed, in the order they were
    /// accepted, optionally only those with `tag`.
    pub(crate) fn list(
        &self,
        class: &Class,
        id: &DurableObjectId,
        tag: Option<&str>,
    ) -> Vec<Arc<SocketEntry>> {
        self.sweep_pending();
        let Some(group) = self.existing_group(class, id) else {
            return Vec::new();
        };
        lock(&group.sockets)
            .iter()
            .filter(|s| s.state.load(Ordering::Acquire) < CLOSING)
            .filter(|s| tag.is_none_or(|t| s.tags.iter().any(|own| own == t)))
            .cloned()
            .collect()
    }

    pub(crate) fn set_auto_response(
        &self,
        class: &Arc<Class>,
        id: &DurableObjectId,
        auto: Option<AutoResponse>,
    ) {
        match auto {
            Some(auto) => self.with_group(class, id, |g| *lock(&g.auto_response) = Some(auto)),
            None => {
                let groups = lock(&self.groups);
                if let Some(group) = groups.get(&(class.index, id.base())) {
                    *lock(&group.auto_response) = None;
                }
            }
        }
    }

    pub(crate) fn auto_response(
        &self,
        class: &Class,
        id: &DurableObjectId,
    ) -> Option<AutoResponse> {
        let group = self.existing_group(class, id)?;
        lock(&group.auto_response).clone()
    }

    /// How many sockets are open or waiting for their upgrade.
    pub(crate) fn count(&self) -> usize {
        self.sweep_pending();
        lock(&self.by_id).len()
    }

    pub(crate) fn message_limit(&self) -> usize {
        self.limits.message_bytes
    }
}

/// A socket the gateway took over.
pub(crate) struct Claimed {
    pub entry: Arc<SocketEntry>,
    pub rx: mpsc::UnboundedReceiver<Outgoing>,
}

impl SocketEntry {
    /// A number that identifies the socket within its runtime.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// The tags it was accepted with.
    pub(crate) fn tags(&self) -> &[String] {
        &self.tags
    }

    /// Whether the socket is closed or closing: sends fail.
    pub(crate) fn is_closed(&self) -> bool {
        self.state.load(Ordering::Acquire) >= CLOSING
    }

    /// Queues a message to the client behind the output gate; see
    /// `WebSocket::send`.
    pub(crate) fn send(&self, message: Message) -> Result<(), Error> {
        let len = message.len();
        if len > self.message_bytes {
            return Err(Error::WebSocketLimit(format!(
                "a message of {len} bytes; the limit is {}",
                self.message_bytes
            )));
        }
        if self.is_closed() {
            return Err(Error::disconnected(
                DisconnectReason::SocketClosed,
                "the WebSocket is closed",
            ));
        }
        let queued = self.queued.fetch_add(1, Ordering::AcqRel);
        let bytes = self.queued_bytes.fetch_add(len, Ordering::AcqRel);
        if queued >= SEND_BUFFER || bytes + len > SEND_BUFFER_BYTES {
            self.written(len);
            return Err(Error::Overloaded(format!(
                "the WebSocket's client is not reading: {queued} messages of {bytes} bytes are waiting"
            )));
        }
        self.queue(Out::Message(message));
        Ok(())
    }

    /// Closes the socket after the messages sent before; see
    /// `WebSocket::close`.
    pub(crate) fn close(&self, code: u16, reason: &str) -> Result<(), Error> {
        if code != 1000 && !(3000..=4999).contains(&code) {
            return Err(Error::BadRequest(format!(
                "close code {code}: use 1000 or 3000 to 4999"
            )));
        }
        if reason.len() > 123 {
            return Err(Error::BadRequest(format!(
                "a close reason of {} bytes; the limit is 123",
                reason.len()
            )));
        }
        let state = &self.state;
        let mut current = state.load(Ordering::Acquire);
        while current < CLOSING {
            match state.compare_exchange(current, CLOSING, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    self.queue(Out::Close {
                        code,
                        reason: reason.to_owned(),
                    });
                    return Ok(());
                }
                Err(now) => current = now,
            }
        }
        Ok(())
    }

    /// Keeps `bytes` (an encoded value) with the socket, replacing the
    /// previous attachment; at most [`MAX_ATTACHMENT_BYTES`].
    pub(crate) fn set_attachment(&self, bytes: Vec<u8>) -> Result<(), Error> {
        if bytes.len() > MAX_ATTACHMENT_BYTES {
            return Err(Error::WebSocketLimit(format!(
                "an attachment of {} bytes; the limit is {MAX_ATTACHMENT_BYTES}",
                bytes.len()
            )));
        }
        *lock(&self.attachment) = Some(bytes.into());
        Ok(())
    }

    /// The attachment, if one was set.
    pub(crate) fn attachment(&self) -> Option<Bytes> {
        lock(&self.attachment).clone()
    }

    pub(crate) fn class(&self) -> &Arc<Class> {
        &self.group.class
    }

    pub(crate) fn object(&self) -> &DurableObjectId {
        &self.group.id
    }

    /// The answer to `text` if it is the object's auto-response request.
    /// Records that the auto-response went out at `ms` (since the epoch).
    pub(crate) fn note_auto_response(&self, ms: u64) {
        self.auto_at.store(ms.max(1), Ordering::Relaxed);
    }

    /// When the auto-response last went out on this socket, if ever.
    pub(crate) fn auto_response_at(&self) -> Option<std::time::SystemTime> {
        match self.auto_at.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)),
        }
    }

    pub(crate) fn auto_answer(&self, text: &str) -> Option<String> {
        lock(&self.group.auto_response)
            .as_ref()
            .filter(|a| a.request == text)
            .map(|a| a.response.clone())
    }

    /// The client closed or left: the socket is no longer listed.
    pub(crate) fn mark_closing(&self) {
        self.state.fetch_max(CLOSING, Ordering::AcqRel);
    }

    /// A message of `bytes` was written to the client (or dropped).
    pub(crate) fn written(&self, bytes: usize) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
        self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Queues `what` behind the output gate: it leaves once every write the
    /// sending object made before it is durable, and is dropped if those
    /// writes are lost.
    fn queue(&self, what: Out) {
        let seq = self.next_seq.fetch_add(1, Ordering::AcqRel);
        let counted = match &what {
            Out::Message(m) => Some(m.len()),
            Out::Close { .. } => None,
        };
        let out = self.out.clone();
        let release = move |durable: bool| {
            // A close shows no data: it goes out even if the writes before
            // it were lost (else the socket would hang half-closed).
            let keep = durable || matches!(what, Out::Close { .. });
            let _ = out.send(Outgoing {
                seq,
                counted,
                what: keep.then_some(what),
            });
        };
        crate::engine::output_gate::release(release);
    }
}

/// Whether a request's headers ask for a WebSocket upgrade.
pub(crate) fn is_upgrade(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// What the gateway sends the object's handlers.
#[derive(Serialize, Deserialize)]
pub(crate) enum Event {
    Message {
        socket: u64,
        message: Message,
    },
    Close {
        socket: u64,
        code: u16,
        reason: String,
        clean: bool,
    },
    Error {
        socket: u64,
        error: String,
    },
}

impl Event {
    pub(crate) fn handler(&self) -> u32 {
        crate::base::wire::method_id(match self {
            Event::Message { .. } => crate::base::wire::WEBSOCKET_MESSAGE.name,
            Event::Close { .. } => crate::base::wire::WEBSOCKET_CLOSE.name,
            Event::Error { .. } => crate::base::wire::WEBSOCKET_ERROR.name,
        })
    }
}

/// The sockets accepted while one `fetch` runs, so those its response does
/// not hand over are forgotten when it ends.
pub(crate) mod scope {
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::sync::Arc;

    use super::SocketEntry;

    pub(crate) type Accepted = Rc<RefCell<Vec<Arc<SocketEntry>>>>;

    thread_local! {
        static CURRENT: RefCell<Option<Accepted>> = const { RefCell::new(None) };
    }

    /// Runs `f` (one poll of a `fetch`) collecting the sockets it accepts;
    /// the previous scope comes back however `f` ends.
    pub(crate) fn with<R>(accepted: &Accepted, f: impl FnOnce() -> R) -> R {
        crate::base::scoped::with_local(&CURRENT, accepted.clone(), f)
    }

    pub(crate) fn note(entry: &Arc<SocketEntry>) {
        CURRENT.with(|c| {
            if let Some(accepted) = &*c.borrow() {
                accepted.borrow_mut().push(entry.clone());
            }
        });
    }
}
