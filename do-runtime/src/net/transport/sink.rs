//! A served connection's replies, written as frames by whoever sends them.
//!
//! A call from a remote client carries a [`FrameReply`] as its way back.
//! The worker that answers it encodes the reply frame straight into the
//! connection's [`FrameSink`], and wakes the connection's task only when
//! the sink was empty: a burst of replies costs one wake, the connection
//! finds them encoded and ready to write, and no call needs a channel, a
//! future of its own or a copy of its reply.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

use crate::api::stub::Tracked;
use crate::base::error::Error;
use crate::engine::reply::{Reply, ReplySink};
use crate::engine::wakes::{DeferredWake, defer_wake};
use crate::net::transport::frame;

/// The encoded replies of one served connection, waiting to be written.
#[derive(Default)]
pub(crate) struct FrameSink {
    frames: Mutex<Frames>,
    /// How many replies `frames` holds, set under its lock: read without
    /// it by a connection spinning for a reply.
    waiting: AtomicUsize,
    /// The connection's task, woken when the first reply of a batch comes.
    waker: AtomicWaker,
    /// The worker thread that will wake the connection when its event
    /// loop's poll ends (see `engine::wakes`); 0: none.
    promised: AtomicU64,
    /// The streamed bodies this connection sends (see `streams`).
    pub(crate) streams: Arc<crate::net::transport::streams::Forwards>,
    /// The connection's runtime, where streamed bodies are sent from.
    runtime: std::sync::OnceLock<tokio::runtime::Handle>,
}

#[derive(Default)]
struct Frames {
    bytes: Vec<u8>,
    /// How many replies `bytes` holds.
    replies: usize,
    /// How many other frames (chunks of streamed bodies) it holds.
    others: usize,
    /// The connection has ended: later replies are dropped.
    closed: bool,
}

impl FrameSink {
    fn lock(&self) -> MutexGuard<'_, Frames> {
        self.frames.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds the reply to call `call`, and sees that the connection is
    /// woken: on a worker's thread, when its event loop has run what it
    /// can (see `engine::wakes`); elsewhere at once, if it is the first
    /// reply since the connection last took them.
    pub(crate) fn push(self: &Arc<Self>, call: u64, result: &Reply) {
        let mut frames = self.lock();
        if frames.closed {
            return;
        }
        let first = frames.replies + frames.others == 0;
        frame::encode_reply(call, result, &mut frames.bytes);
        frames.replies += 1;
        self.waiting
            .store(frames.replies + frames.others, Ordering::Release);
        drop(frames);
        if !defer_wake(self) && first {
            self.waker.wake();
        }
    }

    /// Appends the replies waiting to `out`; returns how many there were.
    pub(crate) fn take(&self, out: &mut Vec<u8>) -> usize {
        // The connection has what there is: the next reply need not wake
        // it unless it waits again (and registers again).
        drop(self.waker.take());
        let mut frames = self.lock();
        if out.is_empty() {
            // Swapped, not copied: `out` comes back empty, with its room.
            std::mem::swap(out, &mut frames.bytes);
        } else {
            out.append(&mut frames.bytes);
        }
        self.waiting.store(0, Ordering::Release);
        frames.others = 0;
        std::mem::take(&mut frames.replies)
    }

    /// Sends streamed bodies from `runtime` (the connection's).
    pub(crate) fn serve_streams_on(&self, runtime: tokio::runtime::Handle) {
        let _ = self.runtime.set(runtime);
    }

    /// Whether the connection has frames to write other than replies: a
    /// body it streams.
    pub(crate) fn is_streaming(&self) -> bool {
        self.streams.any()
    }

    /// A fetch reply whose response has a streamed body in this process's
    /// table: the body is claimed and sent as this connection's stream
    /// `call`, which the reply then names. Any other reply as it is.
    fn stream_fetch_reply(self: &Arc<Self>, call: u64, reply: Reply) -> Reply {
        let Ok(bytes) = reply else { return reply };
        // A reply without a streamed body ends with the `None` of its
        // stream number, a zero byte; a number is never 0.
        if bytes.last() != Some(&0)
            && let Some(runtime) = self.runtime.get()
        {
            let mut claimed = None;
            if let Some(restated) = crate::base::fetch::restate_stream(&bytes, |number| {
                claimed = crate::base::streaming::claim(number);
                claimed.as_ref().map(|_| call)
            }) && let Some(body) = claimed
            {
                self.streams.start(runtime, call, body, self.clone());
                return Ok(restated);
            }
        }
        Ok(bytes)
    }

    /// Whether replies are waiting.
    pub(crate) fn has_replies(&self) -> bool {
        self.waiting.load(Ordering::Acquire) > 0
    }

    /// Ready once replies are waiting.
    pub(crate) fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        // Registered before looking, so a reply pushed after the look
        // wakes this task.
        self.waker.register(cx.waker());
        if self.has_replies() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// The connection has ended: replies still to come are dropped, not
    /// kept until the last of them, and its task is let go.
    pub(crate) fn close(&self) {
        self.streams.cancel_all();
        let mut frames = self.lock();
        frames.closed = true;
        frames.bytes = Vec::new();
        frames.replies = 0;
        frames.others = 0;
        self.waiting.store(0, Ordering::Release);
        drop(frames);
        drop(self.waker.take());
    }
}

/// The way back for one served call: its number on the connection, the
/// caller-side record of the call, and the sink its reply frame goes to.
/// Dropped unsent (the instance was reset, the runtime shut down, or the
/// call could not be handed to its worker), it answers with a disconnected
/// error, as a local caller's closed channel does.
pub(crate) struct FrameReply {
    sink: Arc<FrameSink>,
    call: u64,
    tracked: Tracked,
    sent: bool,
    /// A `fetch` call: its response's body may be streamed.
    fetch: bool,
}

impl FrameReply {
    pub(crate) fn new(sink: Arc<FrameSink>, call: u64, tracked: Tracked, fetch: bool) -> Box<Self> {
        Box::new(FrameReply {
            sink,
            call,
            tracked,
            sent: false,
            fetch,
        })
    }
}

impl ReplySink for FrameReply {
    /// Adds the reply to the sink and records the call's outcome; once.
    fn answer(&mut self, reply: Reply) {
        if self.sent {
            return;
        }
        let reply = if self.fetch {
            self.sink.stream_fetch_reply(self.call, reply)
        } else {
            reply
        };
        // The frame first: nothing after it can lose the reply.
        self.sink.push(self.call, &reply);
        self.sent = true;
        self.tracked.finish(&reply);
    }

    fn warm_up(&self) -> u64 {
        self.call ^ self.sink.promised.load(Ordering::Relaxed)
    }
}

impl FrameSink {
    /// Queues a frame other than a reply; false once the connection ended.
    fn push_frame(&self, frame: &crate::net::transport::frame::ServerFrame) -> bool {
        let mut frames = self.lock();
        if frames.closed {
            return false;
        }
        let first = frames.replies + frames.others == 0;
        if frame::encode(frame, &mut frames.bytes).is_err() {
            return false;
        }
        frames.others += 1;
        self.waiting
            .store(frames.replies + frames.others, Ordering::Release);
        drop(frames);
        if first {
            self.waker.wake();
        }
        true
    }
}

impl crate::net::transport::streams::StreamOut for FrameSink {
    fn chunk(&self, stream: u64, bytes: Vec<u8>) -> bool {
        self.push_frame(&crate::net::transport::frame::ServerFrame::Chunk { stream, bytes })
    }

    fn end(&self, stream: u64, error: Option<Error>) -> bool {
        self.push_frame(&crate::net::transport::frame::ServerFrame::StreamEnd { stream, error })
    }

    fn unwritten(&self) -> usize {
        self.lock().bytes.len()
    }
}

/// A request body the connection receives is paced from here.
impl crate::net::transport::streams::Back for FrameSink {
    fn credit(&self, stream: u64, chunks: u32) {
        self.push_frame(&crate::net::transport::frame::ServerFrame::Credit { stream, chunks });
    }

    fn cancel(&self, stream: u64) {
        self.push_frame(&crate::net::transport::frame::ServerFrame::CancelStream { stream });
    }
}

impl DeferredWake for FrameSink {
    fn promised(&self) -> &AtomicU64 {
        &self.promised
    }

    fn wake(&self) {
        self.waker.wake();
    }
}

impl Drop for FrameReply {
    fn drop(&mut self) {
        if !self.sent {
            let reason = self.tracked.lost_reason();
            self.answer(Err(Error::disconnected(
                reason,
                "the object's instance was reset or the runtime shut down",
            )));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failing unwrap is a failing test
mod tests {
    use super::*;
    use crate::engine::wakes::DeferWakes;
    use crate::net::transport::frame::ServerFrame;
    use std::future::Future;
    use std::panic::AssertUnwindSafe;
    use std::pin::Pin;
    use std::sync::atomic::AtomicUsize;
    use std::task::{Wake, Waker};

    /// Counts its wakes.
    #[derive(Default)]
    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A sink whose connection waits for replies: its wake counter, and
    /// the waker it registered.
    fn waiting_connection() -> (Arc<FrameSink>, Arc<Count>, Waker) {
        let sink = Arc::new(FrameSink::default());
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        assert!(
            sink.poll_ready(&mut Context::from_waker(&waker))
                .is_pending()
        );
        (sink, count, waker)
    }

    fn decode_all(mut bytes: &[u8]) -> Vec<(u64, Reply)> {
        let mut replies = Vec::new();
        while !bytes.is_empty() {
            let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
            match frame::decode_body(&bytes[4..4 + len]) {
                Ok(ServerFrame::Reply { call, result }) => replies.push((call, result)),
                other => panic!("not a reply: {other:?}"),
            }
            bytes = &bytes[4 + len..];
        }
        replies
    }

    #[test]
    fn replies_are_encoded_in_order_and_the_first_of_a_batch_wakes_the_connection() {
        let sink = Arc::new(FrameSink::default());
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(sink.poll_ready(&mut cx).is_pending());
        sink.push(7, &Ok(vec![1]));
        sink.push(3, &Err(Error::Overloaded("full".into())));
        assert_eq!(count.0.load(Ordering::Relaxed), 1, "one wake per batch");
        assert!(sink.poll_ready(&mut cx).is_ready());
        let mut out = Vec::new();
        assert_eq!(sink.take(&mut out), 2);
        assert_eq!(
            decode_all(&out),
            vec![(7, Ok(vec![1])), (3, Err(Error::Overloaded("full".into())))]
        );
        // Taken: the next reply starts a new batch, appended after what
        // the connection has not written yet.
        assert!(sink.poll_ready(&mut cx).is_pending());
        sink.push(9, &Ok(Vec::new()));
        assert_eq!(count.0.load(Ordering::Relaxed), 2);
        assert_eq!(sink.take(&mut out), 1);
        assert_eq!(decode_all(&out).len(), 3);
        assert_eq!(sink.take(&mut out), 0);
        // Closed: replies still to come are dropped.
        sink.close();
        sink.push(10, &Ok(Vec::new()));
        assert!(sink.poll_ready(&mut cx).is_pending());
        assert_eq!(sink.take(&mut Vec::new()), 0);
    }

    #[test]
    fn replies_sent_during_one_poll_of_a_worker_loop_wake_their_connection_when_it_ends() {
        let sinks = [
            Arc::new(FrameSink::default()),
            Arc::new(FrameSink::default()),
        ];
        let counts = [Arc::new(Count::default()), Arc::new(Count::default())];
        for (sink, count) in sinks.iter().zip(&counts) {
            let waker = Waker::from(count.clone());
            assert!(
                sink.poll_ready(&mut Context::from_waker(&waker))
                    .is_pending()
            );
        }
        let woken = || counts.each_ref().map(|c| c.0.load(Ordering::Relaxed));
        let mut loop_ = DeferWakes::new(std::future::poll_fn(|_| {
            for call in 0..10 {
                sinks[call as usize % 2].push(call, &Ok(Vec::new()));
            }
            assert_eq!(woken(), [0, 0], "no wake while the loop runs");
            Poll::<()>::Pending
        }));
        let waker = Waker::from(Arc::new(Count::default()));
        assert!(
            Pin::new(&mut loop_)
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
        assert_eq!(woken(), [1, 1], "one wake each when the poll ends");
        // Outside a worker loop's poll, the first reply wakes at once.
        sinks[0].take(&mut Vec::new());
        let waker = Waker::from(counts[0].clone());
        assert!(
            sinks[0]
                .poll_ready(&mut Context::from_waker(&waker))
                .is_pending()
        );
        sinks[0].push(11, &Ok(Vec::new()));
        assert_eq!(woken(), [2, 1]);
    }

    #[test]
    fn a_workers_replies_do_not_wait_for_another_workers_poll_to_end() {
        let (sink, count, _waker) = waiting_connection();
        let (pushed, wait_pushed) = std::sync::mpsc::channel();
        let (release, wait_release) = std::sync::mpsc::channel::<()>();
        // Worker one answers first, then stays in its poll.
        let one = {
            let sink = sink.clone();
            std::thread::spawn(move || {
                let mut worker = DeferWakes::new(std::future::poll_fn(|_| {
                    sink.push(1, &Ok(Vec::new()));
                    pushed.send(()).unwrap();
                    wait_release.recv().unwrap();
                    Poll::<()>::Pending
                }));
                let waker = Waker::from(Arc::new(Count::default()));
                let _ = Pin::new(&mut worker).poll(&mut Context::from_waker(&waker));
            })
        };
        wait_pushed.recv().unwrap();
        assert_eq!(count.0.load(Ordering::Relaxed), 0, "promised, not yet sent");
        // Worker two answers too, and its poll ends.
        let mut two = DeferWakes::new(std::future::poll_fn(|_| {
            sink.push(2, &Ok(Vec::new()));
            Poll::<()>::Pending
        }));
        let other = Waker::from(Arc::new(Count::default()));
        let _ = Pin::new(&mut two).poll(&mut Context::from_waker(&other));
        assert_eq!(
            count.0.load(Ordering::Relaxed),
            1,
            "woken when worker two is done, with worker one still busy"
        );
        release.send(()).unwrap();
        one.join().unwrap();
        assert_eq!(sink.take(&mut Vec::new()), 2);
    }

    #[test]
    fn a_panic_in_a_worker_loop_still_wakes_the_connections_it_answered() {
        let (sink, count, waker) = waiting_connection();
        let mut loop_ = DeferWakes::new(std::future::poll_fn(|_| -> Poll<()> {
            sink.push(1, &Ok(Vec::new()));
            panic!("in the loop")
        }));
        let polled = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let waker = Waker::from(Arc::new(Count::default()));
            let _ = Pin::new(&mut loop_).poll(&mut Context::from_waker(&waker));
        }));
        assert!(polled.is_err());
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
        // And the thread defers no more.
        sink.take(&mut Vec::new());
        assert!(
            sink.poll_ready(&mut Context::from_waker(&waker))
                .is_pending()
        );
        sink.push(2, &Ok(Vec::new()));
        assert_eq!(count.0.load(Ordering::Relaxed), 2);
    }
}
