//! Worker threads: each runs a single-threaded tokio runtime and routes calls
//! to the objects pinned to it.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::JoinHandle;

use do_storage::ValueCache;
use tokio::sync::{mpsc, oneshot};
use tokio::task::LocalSet;

use crate::id::{DurableObjectId, ID_BYTES};
use crate::instance::{Mailbox, ObjectTask};
use crate::runtime::Shared;
use crate::stub::{Reply, StubShared};

/// One call on its way to an object.
pub(crate) struct Envelope {
    pub class: u32,
    pub id: DurableObjectId,
    pub method: u32,
    pub args: Vec<u8>,
    pub reply: oneshot::Sender<Reply>,
    pub stub: Arc<StubShared>,
}

pub(crate) enum WorkerMsg {
    Call(Envelope),
    Stop,
}

pub(crate) fn spawn(
    index: usize,
    rx: mpsc::UnboundedReceiver<WorkerMsg>,
    shared: Arc<Shared>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("do-worker-{index}"))
        .spawn(move || {
            let mut builder = tokio::runtime::Builder::new_current_thread();
            builder.enable_time();
            if shared.worker_io() {
                builder.enable_io();
            }
            let rt = match builder.build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("do-runtime: worker {index} cannot start its event loop: {e}");
                    return;
                }
            };
            LocalSet::new().block_on(&rt, route(rx, shared));
        })
}

/// Routes each call to its object's mailbox, starting the object's task on
/// its first call. One FIFO channel per worker keeps each stub's calls in order.
async fn route(mut rx: mpsc::UnboundedReceiver<WorkerMsg>, shared: Arc<Shared>) {
    let mut objects: HashMap<(u32, [u8; ID_BYTES]), Mailbox> = HashMap::new();
    let cache = ValueCache::new(shared.value_cache_per_worker());
    while let Some(msg) = rx.recv().await {
        let envelope = match msg {
            WorkerMsg::Call(envelope) => envelope,
            WorkerMsg::Stop => break,
        };
        let key = (envelope.class, *envelope.id.as_bytes());
        let mailbox = objects.entry(key).or_insert_with(|| {
            let mailbox = Mailbox::default();
            let class = shared.classes()[envelope.class as usize].clone();
            let task = ObjectTask::new(
                class,
                envelope.id.clone(),
                shared.clone(),
                mailbox.clone(),
                cache.clone(),
            );
            tokio::task::spawn_local(task);
            mailbox
        });
        mailbox.push(envelope);
    }
}
