//! Tasks run on the runtime's own worker threads, beside the objects.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::FutureExt;
use tokio::sync::oneshot;

use crate::base::error::{DisconnectReason, Error};
use crate::engine::shared::Shared;
use crate::engine::worker::WorkerMsg;

/// The future of a task started with [`Runtime::spawn`](crate::Runtime::spawn)
/// or [`Namespace::spawn_beside`](crate::Namespace::spawn_beside): resolves to
/// the task's output.
///
/// Fails with [`Error::Panicked`] when the task panicked, and with
/// [`Error::Disconnected`] when the runtime stopped before the task ended.
/// Dropping the handle does not stop the task.
#[must_use = "the task runs anyway; await the handle to get its output"]
pub struct JoinHandle<T> {
    rx: oneshot::Receiver<Result<T, Error>>,
}

impl<T> JoinHandle<T> {
    /// A handle that resolves to `error` at once.
    pub(crate) fn failed(error: Error) -> Self {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(Err(error));
        JoinHandle { rx }
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx).poll(cx).map(|out| {
            out.unwrap_or_else(|_| {
                Err(Error::disconnected(
                    DisconnectReason::Shutdown,
                    "the runtime stopped before the task ended",
                ))
            })
        })
    }
}

impl<T> std::fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinHandle").finish_non_exhaustive()
    }
}

/// Starts the future `make` returns on worker `worker`'s event loop; `make`
/// runs there, so the future itself need not be `Send`.
pub(crate) fn spawn_on<M, F>(shared: &Arc<Shared>, worker: usize, make: M) -> JoinHandle<F::Output>
where
    M: FnOnce() -> F + Send + 'static,
    F: Future + 'static,
    F::Output: Send + 'static,
{
    let (tx, rx) = oneshot::channel();
    let start = Box::new(move || {
        tokio::task::spawn_local(async move {
            let out = AssertUnwindSafe(async move { make().await })
                .catch_unwind()
                .await
                .map_err(|panic| {
                    Error::Panicked(format!(
                        "a spawned task panicked: {}",
                        crate::engine::instance::panic_message(&*panic)
                    ))
                });
            let _ = tx.send(out);
        });
    });
    // Refused (the runtime stopped): the closure and its sender are dropped,
    // so the handle resolves to `Disconnected`.
    let _ = shared.send_msg(worker, WorkerMsg::Spawn(start));
    JoinHandle { rx }
}
