//! In-process calls beside a raw tokio actor: an mpsc of postcard-encoded
//! requests with a oneshot per reply, decoded and encoded on both sides, the
//! state in the actor task.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use do_runtime::{Ctx, Runtime, durable_object};
use tokio::sync::{mpsc, oneshot};

use crate::harness::{Config, Outcome, Unit, interleave};

/// An in-memory counter.
#[allow(dead_code)] // built by the runtime, never by name
pub struct Adder {
    n: Cell<i64>,
}

#[durable_object]
impl Adder {
    pub fn new(_ctx: Ctx) -> Self {
        Adder { n: Cell::new(0) }
    }

    pub async fn add(&self, amount: i64) -> i64 {
        self.n.set(self.n.get() + amount);
        self.n.get()
    }
}

/// A caller task: on the runtime's workers or on the callers' tokio runtime.
enum Caller {
    Ours(do_runtime::JoinHandle<()>),
    Tokio(tokio::task::JoinHandle<()>),
}

pub type Request = (Vec<u8>, oneshot::Sender<Vec<u8>>);

/// The raw actor: one task owning its state.
pub fn spawn_actor() -> mpsc::UnboundedSender<Request> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Request>();
    tokio::spawn(async move {
        let mut n = 0i64;
        while let Some((args, reply)) = rx.recv().await {
            let Ok(amount) = postcard::from_bytes::<i64>(&args) else {
                continue;
            };
            n += amount;
            let _ = reply.send(postcard::to_allocvec(&n).expect("encode"));
        }
    });
    tx
}

pub async fn raw_add(actor: &mpsc::UnboundedSender<Request>, amount: i64) -> i64 {
    let (reply, rx) = oneshot::channel();
    actor
        .send((postcard::to_allocvec(&amount).expect("encode"), reply))
        .expect("actor alive");
    postcard::from_bytes(&rx.await.expect("reply")).expect("decode")
}

/// `callers` tasks calling for the run's duration; caller `i` picks its
/// object with `pick(i, call)` among `objects`.
pub fn calls(config: &Config, scenario: &'static str, objects: usize, callers: usize) -> Outcome {
    let tokio = crate::harness::callers();
    // A runtime in its own directory with the given spin budgets, and a
    // stub for each of its objects.
    let setup = |spin: Option<std::time::Duration>| {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut builder = Runtime::builder().data_dir(dir.path());
        if let Some(spin) = spin {
            builder = builder.worker_spin(spin).caller_spin(spin);
        }
        let rt = builder.register::<Adder>().build().expect("runtime");
        let ns = rt.namespace::<Adder>();
        let stubs: Arc<Vec<_>> = Arc::new(
            (0..objects)
                .map(|o| ns.get_by_name(&format!("a{o}")))
                .collect(),
        );
        (dir, rt, stubs)
    };
    let (_dir, rt, stubs) = setup(None);
    // The same with no spinning: every hand-off wakes a sleeping thread.
    let (_still_dir, _still, still_stubs) = setup(Some(std::time::Duration::ZERO));
    let actors: Arc<Vec<_>> =
        Arc::new(tokio.block_on(async { (0..objects).map(|_| spawn_actor()).collect() }));
    #[cfg(feature = "peers")]
    let peers = tokio.block_on(async {
        let mut ractors = Vec::with_capacity(objects);
        for _ in 0..objects {
            ractors.push(crate::peers::actors::ractor_spawn().await);
        }
        let kameos: Vec<_> = (0..objects)
            .map(|_| crate::peers::actors::kameo_spawn())
            .collect();
        Arc::new((ractors, kameos))
    });
    let d = config.duration;
    // 0: our stubs, 1: the raw actor, 2: ractor, 3: kameo, 4: our stubs
    // called from tasks on the runtime's workers.
    let ns = rt.namespace::<Adder>();
    let id0 = stubs[0].id().clone();
    let run = |variant: u8, stubs: &Arc<Vec<do_runtime::Stub<Adder>>>| {
        let (stubs, actors) = (stubs.clone(), actors.clone());
        let (rt, ns, id0) = (&rt, &ns, &id0);
        #[cfg(feature = "peers")]
        let peers = peers.clone();
        tokio.block_on(async move {
            let done = Arc::new(AtomicU64::new(0));
            let start = Instant::now();
            let tasks: Vec<_> = (0..callers)
                .map(|i| {
                    let (stubs, actors, done) = (stubs.clone(), actors.clone(), done.clone());
                    #[cfg(feature = "peers")]
                    let peers = peers.clone();
                    let body = async move {
                        // A cheap per-caller sequence of objects: random-looking, repeatable.
                        let mut x = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                        while start.elapsed() < d {
                            for _ in 0..64 {
                                x ^= x << 13;
                                x ^= x >> 7;
                                x ^= x << 17;
                                let o = (x % objects as u64) as usize;
                                match variant {
                                    1 => {
                                        raw_add(&actors[o], 1).await;
                                    }
                                    #[cfg(feature = "peers")]
                                    2 => {
                                        crate::peers::actors::ractor_add(&peers.0[o], 1).await;
                                    }
                                    #[cfg(feature = "peers")]
                                    3 => {
                                        crate::peers::actors::kameo_add(&peers.1[o], 1).await;
                                    }
                                    _ => {
                                        stubs[o].add(1).await.expect("add");
                                    }
                                }
                            }
                            done.fetch_add(64, Ordering::Relaxed);
                        }
                    };
                    // Variant 4 runs on the runtime's own threads: beside the
                    // one object, or spread over the workers.
                    match (variant, objects) {
                        (4, 1) => Caller::Ours(ns.spawn_beside(id0, move |_| body)),
                        (4, _) => Caller::Ours(rt.spawn(body)),
                        _ => Caller::Tokio(tokio::spawn(body)),
                    }
                })
                .collect();
            for t in tasks {
                match t {
                    Caller::Ours(t) => t.await.expect("task"),
                    Caller::Tokio(t) => t.await.expect("task"),
                }
            }
            done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
        })
    };
    // The same runtime and threads with spans and metrics switched off:
    // what instrumentation costs with no subscriber and no recorder.
    let mut ours = || {
        rt.__set_instrument(true);
        run(0, &stubs)
    };
    let mut raw = || run(1, &stubs);
    let mut off = || {
        rt.__set_instrument(false);
        let rate = run(0, &stubs);
        rt.__set_instrument(true);
        rate
    };
    let mut no_spin = || run(0, &still_stubs);
    let mut beside = || run(4, &stubs);
    #[allow(unused_mut)]
    let mut variants: Vec<(&str, Unit, &mut dyn FnMut() -> f64)> = vec![
        ("do-runtime stub", Unit::OpsPerSec, &mut ours),
        (
            "raw mpsc+oneshot actor, postcard",
            Unit::OpsPerSec,
            &mut raw,
        ),
        (
            "do-runtime stub, instrumentation off",
            Unit::OpsPerSec,
            &mut off,
        ),
        (
            "do-runtime stub, no spinning (worker_spin, caller_spin 0)",
            Unit::OpsPerSec,
            &mut no_spin,
        ),
        (
            if objects == 1 {
                "do-runtime stub, callers beside the object (Namespace::spawn_beside)"
            } else {
                "do-runtime stub, callers on the workers (Runtime::spawn)"
            },
            Unit::OpsPerSec,
            &mut beside,
        ),
    ];
    #[cfg(feature = "peers")]
    let mut ractor = || run(2, &stubs);
    #[cfg(feature = "peers")]
    let mut kameo = || run(3, &stubs);
    #[cfg(feature = "peers")]
    {
        variants.push(("ractor 0.16", Unit::OpsPerSec, &mut ractor));
        variants.push(("kameo 0.22", Unit::OpsPerSec, &mut kameo));
    }
    let series = interleave(config, &mut variants);
    let ratio = series[0].median() / series[1].median();
    let need = match (objects, callers) {
        (1, 1) => 0.7,
        (1, _) => 0.6,
        _ => 0.6,
    };
    Outcome {
        scenario,
        series,
        target: format!("≥ {need} × raw (peers: issue 6)"),
        met: Some(ratio >= need),
    }
}
