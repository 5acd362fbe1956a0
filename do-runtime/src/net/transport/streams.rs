//! Streamed response bodies across a connection (see `base::streaming`).
//!
//! The server claims a fetch reply's streamed body from its process's
//! table and sends it as `Chunk` frames numbered by the call, then a
//! `StreamEnd`; the client puts the chunks in a channel its caller reads.
//! Credit paces it: the server sends a chunk only against a credit, starts
//! with [`BUFFERED_CHUNKS`] and gets one back (`Credit`) each time the
//! reader takes a chunk, so at most that many chunks are on their way or
//! waiting, whatever the sizes of the producer and the reader. A reader
//! that lets the body go sends `CancelStream`, and the producer's next
//! `send` fails. The server also holds a chunk while its connection has
//! [`UNWRITTEN_BYTES`] not yet written: a client that grants credit but
//! does not read cannot make it buffer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, mpsc};

use crate::base::error::{DisconnectReason, Error};
use crate::base::streaming::{BUFFERED_CHUNKS, BodyStream, Broken, Chunk, Flow};
use crate::net::transport::frame::{ClientFrame, ServerFrame};

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

/// Where a server's forwarding task puts its frames: the connection's sink.
pub(crate) trait FrameOut: Send + Sync + 'static {
    /// Queues `frame`; false once the connection has ended.
    fn push_frame(&self, frame: &ServerFrame) -> bool;
    /// Bytes encoded and not yet written.
    fn unwritten(&self) -> usize;
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
        out: Arc<dyn FrameOut>,
    ) {
        let forward = Arc::new(Forward {
            credit: Semaphore::new(BUFFERED_CHUNKS),
            stop: Notify::new(),
        });
        if lock(&self.active).insert(stream, forward.clone()).is_none() {
            self.count.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
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
                    let frame = match body.next_chunk().await {
                        Some(Ok(bytes)) => ServerFrame::Chunk {
                            stream,
                            bytes: bytes.to_vec(),
                        },
                        Some(Err(error)) => ServerFrame::StreamEnd {
                            stream,
                            error: Some(error),
                        },
                        None => ServerFrame::StreamEnd {
                            stream,
                            error: None,
                        },
                    };
                    let last = matches!(frame, ServerFrame::StreamEnd { .. });
                    if !out.push_frame(&frame) || last {
                        return None;
                    }
                }
            };
            tokio::select! {
                _ = sent => {}
                () = forward.stop.notified() => {
                    // The reader let it go: its end tells the client to
                    // forget the stream.
                    out.push_frame(&ServerFrame::StreamEnd {
                        stream,
                        error: None,
                    });
                }
            }
            forwards.remove(stream);
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
    pub(crate) fn abandon(&self, stream: u64, tell: &dyn Fn(&ClientFrame)) {
        let mut state = lock(&self.state);
        let open = match state.slots.remove(&stream) {
            Some(slot) => slot.tx.is_some(),
            None => true,
        };
        if open {
            state.cancelled.insert(stream);
            drop(state);
            tell(&ClientFrame::CancelStream { stream });
        }
    }

    /// The caller's claim of `stream`: its receiving end, paced by `tell`
    /// (which queues a frame to the server).
    pub(crate) fn claim(
        self: &Arc<Self>,
        stream: u64,
        tell: Arc<dyn Fn(&ClientFrame) + Send + Sync>,
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
                tell,
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
    tell: Arc<dyn Fn(&ClientFrame) + Send + Sync>,
}

impl Flow for Paced {
    fn took(&self) {
        (self.tell)(&ClientFrame::Credit {
            stream: self.stream,
            chunks: 1,
        });
    }

    fn dropped(&self) {
        let mut state = lock(&self.incoming.state);
        // Still open: the server is sending it.
        if state.slots.remove(&self.stream).is_some() {
            state.cancelled.insert(self.stream);
            drop(state);
            (self.tell)(&ClientFrame::CancelStream {
                stream: self.stream,
            });
        }
    }
}
