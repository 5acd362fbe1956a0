//! Durable increments, acknowledged only once on disk, beside a raw fjall
//! storage thread (batch, persist, acknowledge) and a raw fsync probe.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use do_runtime::{Ctx, Error, Runtime, durable_object};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use tokio::sync::oneshot;

use crate::harness::{Config, Outcome, Unit, interleave, percentile, rate};

/// The seeds' counter: read, add, write; the reply waits for the disk.
pub struct Counter {
    ctx: Ctx,
}

#[durable_object]
impl Counter {
    pub fn new(ctx: Ctx) -> Self {
        Self { ctx }
    }

    pub async fn increment(&self, amount: i64) -> Result<i64, Error> {
        let value = self.ctx.storage().get::<i64>("value").await?.unwrap_or(0) + amount;
        self.ctx.storage().put("value", &value)?;
        Ok(value)
    }
}

fn runtime(dir: &std::path::Path) -> Runtime {
    runtime_with(dir, true)
}

fn runtime_with(dir: &std::path::Path, worker_io: bool) -> Runtime {
    Runtime::builder()
        .data_dir(dir)
        .worker_io(worker_io)
        .register::<Counter>()
        .build()
        .expect("the bench runtime builds")
}

/// The baseline: one thread drains a queue of writes, applies them as one
/// batch, persists once, then acknowledges them all.
/// A key, its value, and who to tell once both are on disk.
type RawWrite = (Vec<u8>, Vec<u8>, oneshot::Sender<()>);

struct RawStore {
    tx: Option<std_mpsc::Sender<RawWrite>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RawStore {
    /// fjall's defaults, or with `memtable` bytes of memtable.
    fn open(dir: &std::path::Path, memtable: Option<u64>) -> RawStore {
        let db = Database::builder(dir)
            .manual_journal_persist(true)
            .open()
            .expect("fjall");
        let options = || match memtable {
            Some(bytes) => KeyspaceCreateOptions::default().max_memtable_size(bytes),
            None => KeyspaceCreateOptions::default(),
        };
        let ks: Keyspace = db.keyspace("raw", options).expect("keyspace");
        let (tx, rx) = std_mpsc::channel::<RawWrite>();
        let thread = std::thread::spawn(move || {
            let mut acks = Vec::new();
            while let Ok(first) = rx.recv() {
                let mut batch = db.batch();
                let mut push = |(k, v, ack): RawWrite| {
                    batch.insert(&ks, k, v);
                    acks.push(ack);
                };
                push(first);
                while let Ok(next) = rx.try_recv() {
                    push(next);
                }
                batch.commit().expect("commit");
                db.persist(PersistMode::SyncData).expect("persist");
                for ack in acks.drain(..) {
                    let _ = ack.send(());
                }
            }
        });
        RawStore {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    async fn put(&self, key: Vec<u8>, value: Vec<u8>) {
        let (ack, done) = oneshot::channel();
        if let Some(tx) = &self.tx {
            tx.send((key, value, ack)).expect("raw store alive");
        }
        done.await.expect("acknowledged");
    }
}

impl Drop for RawStore {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs `callers` tasks for `duration`, each calling `op(caller_index)` in
/// a loop; returns the operations completed per second.
pub(crate) async fn closed_loop<F, Fut>(tasks: usize, duration: Duration, op: F) -> f64
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|i| {
            let (op, stop, done) = (op.clone(), stop.clone(), done.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    op(i).await;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let ops = done.load(Ordering::Relaxed);
    let elapsed = rate(ops, start);
    for h in handles {
        let _ = h.await;
    }
    elapsed
}

/// One timed run of acknowledged increments on `rt`: `tasks` callers in a
/// closed loop for `duration`, caller i on object `o{i % objects}`; each run
/// returns the increments per second.
pub(crate) fn increments<'a>(
    tokio: &'a tokio::runtime::Runtime,
    rt: &Runtime,
    objects: usize,
    tasks: usize,
    duration: Duration,
) -> impl FnMut() -> f64 + 'a {
    let ns = rt.namespace::<Counter>();
    let stubs: Arc<Vec<_>> = Arc::new(
        (0..tasks)
            .map(|i| ns.get_by_name(&format!("o{}", i % objects)))
            .collect(),
    );
    move || {
        let stubs = stubs.clone();
        tokio.block_on(closed_loop(tasks, duration, move |i| {
            let call = stubs[i].increment(1);
            async move {
                call.await.expect("increment");
            }
        }))
    }
}

/// p50 of write + fdatasync of 8 bytes, in microseconds.
fn fsync_probe(dir: &std::path::Path, duration: Duration) -> f64 {
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("fsync-probe"))
        .expect("probe file");
    let mut lat = Vec::new();
    let until = Instant::now() + duration;
    let mut n = 0u64;
    while Instant::now() < until {
        let t = Instant::now();
        file.seek(SeekFrom::Start(0)).expect("seek");
        file.write_all(&n.to_le_bytes()).expect("write");
        file.sync_data().expect("fdatasync");
        lat.push(t.elapsed());
        n += 1;
    }
    percentile(&mut lat, 50.0)
}

/// One object, one caller, sequential: p50 latency of an acknowledged increment.
pub fn one_caller(config: &Config) -> Outcome {
    let tokio = crate::harness::callers();
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(&dir.path().join("ours"));
    let raw = Arc::new(RawStore::open(&dir.path().join("raw"), None));
    let rt_no_io = runtime_with(&dir.path().join("ours-no-io"), false);
    let stub = rt.namespace::<Counter>().get_by_name("solo");
    let stub_no_io = rt_no_io.namespace::<Counter>().get_by_name("solo");
    let d = config.duration;
    let p50_of = |stub: do_runtime::Stub<Counter>| {
        tokio.block_on(async move {
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let until = Instant::now() + d;
                while Instant::now() < until {
                    let t = Instant::now();
                    stub.increment(1).await.expect("increment");
                    lat.push(t.elapsed());
                }
                percentile(&mut lat, 50.0)
            })
            .await
            .expect("task")
        })
    };
    let mut ours = || p50_of(stub.clone());
    let mut ours_no_io = || p50_of(stub_no_io.clone());
    let mut raw_run = || {
        let raw = raw.clone();
        tokio.block_on(async move {
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let until = Instant::now() + d;
                let mut n = 0i64;
                while Instant::now() < until {
                    let t = Instant::now();
                    n += 1;
                    raw.put(b"solo".to_vec(), n.to_le_bytes().to_vec()).await;
                    lat.push(t.elapsed());
                }
                percentile(&mut lat, 50.0)
            })
            .await
            .expect("task")
        })
    };
    let probe_dir = dir.path().to_owned();
    let mut probe = || fsync_probe(&probe_dir, d);
    let series = interleave(
        config,
        &mut [
            ("do-runtime p50", Unit::Micros, &mut ours),
            ("raw fjall thread p50", Unit::Micros, &mut raw_run),
            ("fsync probe p50", Unit::Micros, &mut probe),
            (
                "do-runtime, worker_io(false), p50",
                Unit::Micros,
                &mut ours_no_io,
            ),
        ],
    );
    let (ours_p50, fsync_p50) = (series[0].median(), series[2].median());
    let bound = 1.3 * fsync_p50 + 40.0;
    Outcome {
        scenario: "durable increment, 1 object, 1 caller",
        series,
        target: format!("p50 ≤ 1.3 × fsync p50 + 40 µs = {bound:.0} µs"),
        met: Some(ours_p50 <= bound),
    }
}

/// Throughput of acknowledged increments with `tasks` callers over `objects`
/// objects (caller i uses object i % objects), beside the raw storage thread.
pub fn throughput(
    config: &Config,
    scenario: &'static str,
    objects: usize,
    tasks: usize,
) -> Outcome {
    let tokio = crate::harness::callers();
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(&dir.path().join("ours"));
    let raw = Arc::new(RawStore::open(&dir.path().join("raw"), None));
    let d = config.duration;
    let mut ours = increments(&tokio, &rt, objects, tasks, d);
    let counters: Arc<Vec<AtomicU64>> = Arc::new((0..objects).map(|_| AtomicU64::new(0)).collect());
    let mut raw_run = || {
        let (raw, counters) = (raw.clone(), counters.clone());
        tokio.block_on(closed_loop(tasks, d, move |i| {
            let (raw, counters) = (raw.clone(), counters.clone());
            async move {
                let o = i % objects;
                let n = counters[o].fetch_add(1, Ordering::Relaxed) + 1;
                raw.put(format!("o{o}").into_bytes(), n.to_le_bytes().to_vec())
                    .await;
            }
        }))
    };
    // The same storage work with the key bytes do-runtime writes: the
    // object's number (objects are numbered from 1 at their first write),
    // then the user's key.
    let our_keys: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..objects)
            .map(|o| do_storage::DataPrefix::of(o as u64 + 1).key(b"value"))
            .collect(),
    );
    // …in a keyspace configured as do-runtime's (its memtable size).
    let raw_like_ours = Arc::new(RawStore::open(
        &dir.path().join("raw-like-ours"),
        Some(do_storage::StoreOptions::default().memtable_bytes),
    ));
    let mut raw_ours = || {
        let (raw, counters, keys) = (raw_like_ours.clone(), counters.clone(), our_keys.clone());
        tokio.block_on(closed_loop(tasks, d, move |i| {
            let (raw, counters, keys) = (raw.clone(), counters.clone(), keys.clone());
            async move {
                let o = i % objects;
                let n = counters[o].fetch_add(1, Ordering::Relaxed) + 1;
                raw.put(keys[o].clone(), n.to_le_bytes().to_vec()).await;
            }
        }))
    };
    let series = interleave(
        config,
        &mut [
            ("do-runtime", Unit::OpsPerSec, &mut ours),
            ("raw fjall thread", Unit::OpsPerSec, &mut raw_run),
            (
                "raw fjall thread, do-runtime's keys and memtable size",
                Unit::OpsPerSec,
                &mut raw_ours,
            ),
        ],
    );
    let stats = rt.stats().storage;
    eprintln!(
        "  do-runtime: {} fsync groups, {:.1} object batches and {:.1} writes per group, {:.0} µs per fsync",
        stats.groups,
        stats.batches as f64 / stats.groups.max(1) as f64,
        stats.writes as f64 / stats.groups.max(1) as f64,
        stats.persist_time.as_secs_f64() * 1e6 / stats.groups.max(1) as f64
    );
    let ratio = series[0].median() / series[1].median();
    let (target, met) = if objects == 1 {
        (
            "≥ 100 k/s and ≥ 0.8 × raw".to_owned(),
            series[0].median() >= 100_000.0 && ratio >= 0.8,
        )
    } else {
        ("≥ 0.8 × raw".to_owned(), ratio >= 0.8)
    };
    Outcome {
        scenario,
        series,
        target,
        met: Some(met),
    }
}
