//! Streamed bodies across a connection (see `base::streaming`): fetch
//! responses from server to client, fetch requests from client to server,
//! the same way each.
//!
//! The sending side claims the body from its process's table and sends it
//! as `Chunk` frames under a stream number (the server: the call's number;
//! the client: one of its own, which the request then names), then a
//! `StreamEnd` (`Forwards`); the receiving side puts the chunks in a
//! channel the reader reads (`Incoming`; on the server, the object claims
//! it from the process's table under a new number). Credit paces it: the
//! sender sends a chunk only against a credit, starts with
//! [`BUFFERED_CHUNKS`] and gets one back (`Credit`) each time the reader
//! takes a chunk, so at most that many chunks are on their way or waiting,
//! whatever the sizes of the producer and the reader. A reader that lets
//! the body go sends `CancelStream`, and the producer's next `send` fails.
//! A sender also holds a chunk while its connection has [`UNWRITTEN_BYTES`]
//! not yet written: a peer that grants credit but does not read cannot
//! make it buffer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, mpsc};

use crate::base::error::{DisconnectReason, Error};
use crate::base::streaming::{BUFFERED_CHUNKS, BodyStream, Broken, Chunk, Flow};

/// Bytes a connection may have encoded and not yet written before a
/// streamed body waits.
pub(crate) const UNWRITTEN_BYTES: usize = 4 << 20;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// One body a server sends: its credit, and a stop for when the reader
/// lets it go.
struct Forward {
    credit: Semaphore,
    stop: Notify,
}

/// The bodies a served connection is sending, by stream number.
#[derive(Default)]
pub(crate) struct Forwards {
    active: Mutex<HashMap<u64, Arc<Forward>>>,
    /// How many `active` holds, read without its lock on every turn of
    /// the connection's loop.
    count: std::sync::atomic::AtomicUsize,
}

/// Where a forwarding task puts a body's frames: a served connection's
/// sink (responses), or a client's connection (requests).
pub(crate) trait StreamOut: Send + Sync + 'static {
    /// Queues a chunk of `stream`; false once the connection has ended.
    fn chunk(&self, stream: u64, bytes: Vec<u8>) -> bool;
    /// Queues the end of `stream`.
    fn end(&self, stream: u64, error: Option<Error>) -> bool;
    /// Bytes encoded and not yet written.
    fn unwritten(&self) -> usize;
}

/// Where a receiving side's pacing goes: to the other end of the
/// connection.
pub(crate) trait Back: Send + Sync + 'static {
    /// The reader took `chunks` chunks of `stream`.
    fn credit(&self, stream: u64, chunks: u32);
    /// The reader let `stream` go.
    fn cancel(&self, stream: u64);
}

impl Forwards {
    /// Whether a body is being sent.
    pub(crate) fn any(&self) -> bool {
        self.count.load(std::sync::atomic::Ordering::Acquire) > 0
    }

    fn remove(&self, stream: u64) -> Option<Arc<Forward>> {
        let removed = lock(&self.active).remove(&stream);
        if removed.is_some() {
            self.count.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        }
        removed
    }

    /// Forgets `stream` if it is still `forward` (not a body that took its
    /// number since).
    fn remove_if(&self, stream: u64, forward: &Arc<Forward>) {
        let mut active = lock(&self.active);
        if active.get(&stream).is_some_and(|f| Arc::ptr_eq(f, forward)) {
            active.remove(&stream);
            self.count.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        }
    }

    /// The reader took `chunks` chunks of `stream`: as many more may go
    /// (never more than [`BUFFERED_CHUNKS`] in all).
    pub(crate) fn credit(&self, stream: u64, chunks: u32) {
        if let Some(forward) = lock(&self.active).get(&stream) {
            let room = BUFFERED_CHUNKS.saturating_sub(forward.credit.available_permits());
            forward.credit.add_permits((chunks as usize).min(room));
        }
    }

    /// The reader let `stream` go.
    pub(crate) fn cancel(&self, stream: u64) {
        if let Some(forward) = self.remove(stream) {
            forward.stop.notify_one();
        }
    }

    /// Stops every body (the connection ended).
    pub(crate) fn cancel_all(&self) {
        let streams: Vec<u64> = lock(&self.active).keys().copied().collect();
        for stream in streams {
            self.cancel(stream);
        }
    }

    /// Sends `body` as stream `stream` through `out`, on `runtime`.
    pub(crate) fn start(
        self: &Arc<Self>,
        runtime: &tokio::runtime::Handle,
        stream: u64,
        mut body: BodyStream,
        out: Arc<dyn StreamOut>,
    ) {
        let forward = Arc::new(Forward {
            credit: Semaphore::new(BUFFERED_CHUNKS),
            stop: Notify::new(),
        });
        match lock(&self.active).insert(stream, forward.clone()) {
            None => {
                self.count.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            }
            // A peer that reused a number: the body sent under it before
            // stops, rather than wait for credit that can no longer reach it.
            Some(replaced) => replaced.stop.notify_one(),
        }
        let forwards = self.clone();
        runtime.spawn(async move {
            let sent = async {
                loop {
                    match forward.credit.acquire().await {
                        Ok(permit) => permit.forget(),
                        Err(_) => return None::<()>,
                    }
                    while out.unwritten() > UNWRITTEN_BYTES {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    let (pushed, last) = match body.next_chunk().await {
                        Some(Ok(bytes)) => (out.chunk(stream, bytes.to_vec()), false),
                        Some(Err(error)) => (out.end(stream, Some(error)), true),
                        None => (out.end(stream, None), true),
                    };
                    if !pushed || last {
                        return None;
                    }
                }
            };
            tokio::select! {
                _ = sent => {}
                () = forward.stop.notified() => {
                    // The reader let it go: its end tells the client to
                    // forget the stream.
                    out.end(stream, None);
                }
            }
            forwards.remove_if(stream, &forward);
            // `body` goes here: the producer's next send fails.
        });
    }
}

/// The bodies a client receives, by stream number: the sending end for
/// the connection's reader, the receiving end until the caller claims it
/// (chunks may come before the reply is decoded).
#[derive(Default)]
pub(crate) struct Incoming {
    state: Mutex<IncomingState>,
}

#[derive(Default)]
struct IncomingState {
    slots: HashMap<u64, Slot>,
    /// Streams their readers let go: chunks still on their way are dropped.
    cancelled: std::collections::HashSet<u64>,
    /// Why the connection was lost, once it was: no stream starts after.
    lost: Option<String>,
}

struct Slot {
    tx: Option<mpsc::Sender<Chunk>>,
    rx: Option<mpsc::Receiver<Chunk>>,
    broken: Arc<Broken>,
}

impl Slot {
    fn open() -> Slot {
        let (tx, rx) = crate::base::streaming::channel();
        Slot {
            tx: Some(tx),
            rx: Some(rx),
            broken: Arc::default(),
        }
    }
}

impl Incoming {
    /// A chunk of `stream` arrived; an error when the server sent past its
    /// credit or after the stream's end.
    pub(crate) fn chunk(&self, stream: u64, bytes: Vec<u8>) -> Result<(), String> {
        let mut state = lock(&self.state);
        if state.cancelled.contains(&stream) {
            return Ok(());
        }
        let slot = state.slots.entry(stream).or_insert_with(Slot::open);
        match &slot.tx {
            Some(tx) => match tx.try_send(Ok(bytes.into())) {
                Ok(()) => Ok(()),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    Err(format!("the server sent stream {stream} past its credit"))
                }
                Err(mpsc::error::TrySendError::Closed(_)) => Ok(()),
            },
            None => Err(format!("a chunk of stream {stream} after its end")),
        }
    }

    /// `stream` ended (with `error`: broke off).
    pub(crate) fn end(&self, stream: u64, error: Option<Error>) {
        let mut state = lock(&self.state);
        if state.cancelled.remove(&stream) {
            return;
        }
        let slot = state.slots.entry(stream).or_insert_with(Slot::open);
        if let Some(error) = error {
            slot.broken.set(error);
        }
        slot.tx = None;
        if slot.rx.is_none() {
            state.slots.remove(&stream);
        }
    }

    /// The connection was lost: every body not yet ended breaks off, and
    /// none starts after.
    pub(crate) fn lost(&self, reason: &str) {
        let mut state = lock(&self.state);
        state.lost.get_or_insert_with(|| reason.to_owned());
        for (_, slot) in state.slots.drain() {
            slot.broken.set(Error::disconnected(
                DisconnectReason::ConnectionLost,
                format!("the streamed body broke off: {reason}"),
            ));
        }
    }

    /// A reply naming `stream` reached no caller: let the body go.
    pub(crate) fn abandon(&self, stream: u64, back: &dyn Back) {
        let mut state = lock(&self.state);
        let open = match state.slots.remove(&stream) {
            Some(slot) => slot.tx.is_some(),
            None => true,
        };
        if open {
            state.cancelled.insert(stream);
            drop(state);
            back.cancel(stream);
        }
    }

    /// The caller's claim of `stream`: its receiving end, paced by `tell`
    /// (which queues a frame to the server).
    pub(crate) fn claim(
        self: &Arc<Self>,
        stream: u64,
        back: Arc<dyn Back>,
    ) -> Result<BodyStream, Error> {
        let mut state = lock(&self.state);
        if let Some(reason) = &state.lost {
            return Err(Error::disconnected(
                DisconnectReason::ConnectionLost,
                format!("the streamed body broke off: {reason}"),
            ));
        }
        let slot = state.slots.entry(stream).or_insert_with(Slot::open);
        let Some(rx) = slot.rx.take() else {
            return Err(Error::disconnected(
                DisconnectReason::Other,
                "the streamed body was claimed already",
            ));
        };
        let broken = slot.broken.clone();
        if slot.tx.is_none() {
            state.slots.remove(&stream);
        }
        Ok(BodyStream::paced(
            rx,
            Box::new(Paced {
                stream,
                incoming: self.clone(),
                back,
            }),
            broken,
        ))
    }
}

/// A claimed body's pacing: credit back for each chunk taken, a cancel
/// when it is let go before its end.
struct Paced {
    stream: u64,
    incoming: Arc<Incoming>,
    back: Arc<dyn Back>,
}

impl Flow for Paced {
    fn took(&self) {
        self.back.credit(self.stream, 1);
    }

    fn dropped(&self) {
        let mut state = lock(&self.incoming.state);
        // Still open: the server is sending it.
        if state.slots.remove(&self.stream).is_some() {
            state.cancelled.insert(self.stream);
            drop(state);
            self.back.cancel(self.stream);
        }
    }
}
