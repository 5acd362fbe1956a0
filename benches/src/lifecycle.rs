//! Object lifecycle costs beside raw tokio and fjall: cold activation,
//! memory per idle object, and restart with a million keys.

use std::time::{Duration, Instant};

use do_runtime::{Ctx, Error, Runtime, durable_object};
use fjall::{Database, KeyspaceCreateOptions};
use tokio::sync::{mpsc, oneshot};

use crate::harness::{Config, Outcome, Series, Unit, interleave};

/// Reads ten keys on its first call (empty storage), as a new object
/// loading its state would.
#[allow(dead_code)] // built by the runtime, never by name
pub struct Cold {
    ctx: Ctx,
}

#[durable_object]
impl Cold {
    pub fn new(ctx: Ctx) -> Self {
        Cold { ctx }
    }

    pub async fn touch(&self) -> Result<usize, Error> {
        const KEYS: [&str; 10] = ["k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "k9"];
        Ok(self.ctx.storage().get_many::<u64>(&KEYS).await?.len())
    }

    /// Up to `limit` keys after `after` (from the start without), in order.
    pub async fn scan(&self, after: Option<String>, limit: u32) -> Result<Vec<String>, Error> {
        let mut options = do_runtime::ListOptions::new().limit(limit as usize);
        if let Some(after) = after {
            options = options.start_after(after);
        }
        let entries = self.ctx.storage().list::<u32>(options).await?;
        Ok(entries.into_iter().map(|(k, _)| k).collect())
    }

    /// Writes `n` keys (up to 128) starting at `from`.
    pub async fn fill(&self, from: u32, n: u32) -> Result<(), Error> {
        let entries: Vec<(String, u32)> = (from..from + n)
            .map(|i| (format!("key{i:08}"), i))
            .collect();
        self.ctx.storage().put_many(&entries)
    }
}

/// The baseline of an activation: spawn a task owning a channel, send it
/// one request, await the reply.
async fn raw_activation() {
    let (tx, mut rx) = mpsc::unbounded_channel::<oneshot::Sender<usize>>();
    tokio::spawn(async move {
        while let Some(reply) = rx.recv().await {
            let _ = reply.send(0);
        }
    });
    let (reply, answer) = oneshot::channel();
    let _ = tx.send(reply);
    let _ = answer.await;
}

fn runtime(dir: &std::path::Path, idle: Option<Duration>) -> Runtime {
    Runtime::builder()
        .data_dir(dir)
        .idle_timeout(idle)
        .register::<Cold>()
        .build()
        .expect("runtime")
}

/// Microseconds per activation of a new object (its first call), one at a
/// time, beside a raw task spawn and first call.
pub fn cold_activation(config: &Config) -> Outcome {
    let tokio = crate::harness::callers();
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(dir.path(), None);
    let ns = rt.namespace::<Cold>();
    let n = if config.duration < Duration::from_millis(500) {
        200
    } else {
        2_000
    };
    let mut round = 0u64;
    let mut ours = || {
        round += 1;
        let ns = ns.clone();
        tokio.block_on(async move {
            let stubs: Vec<_> = (0..n)
                .map(|i| ns.get_by_name(&format!("cold-{round}-{i}")))
                .collect();
            let start = Instant::now();
            for stub in &stubs {
                stub.touch().await.expect("touch");
            }
            start.elapsed().as_secs_f64() * 1e6 / n as f64
        })
    };
    let mut raw = || {
        tokio.block_on(async {
            let start = Instant::now();
            for _ in 0..n {
                raw_activation().await;
            }
            start.elapsed().as_secs_f64() * 1e6 / n as f64
        })
    };
    let series = interleave(
        config,
        &mut [
            (
                "do-runtime activation + 10-key read",
                Unit::Micros,
                &mut ours,
            ),
            ("raw task spawn + first call", Unit::Micros, &mut raw),
        ],
    );
    let (ours_us, raw_us) = (series[0].median(), series[1].median());
    Outcome {
        scenario: "cold activation, one at a time",
        series,
        target: "≤ raw + 10 µs and ≤ 25 µs per activation".into(),
        met: Some(ours_us <= 25.0 && ours_us <= raw_us + 10.0),
    }
}

/// Heap bytes per live idle object (100 000 of them), beside a raw task
/// with a channel; and what is left after the objects are evicted. Counted
/// by the bench's allocator (live heap bytes), not RSS, which the
/// allocator does not give back.
pub fn memory(config: &Config) -> Outcome {
    let tokio = crate::harness::callers();
    let n: usize = if config.duration < Duration::from_millis(500) {
        5_000
    } else {
        100_000
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = runtime(dir.path(), Some(Duration::from_millis(500)));
    let ns = rt.namespace::<Cold>();
    let mut ours_samples = Vec::new();
    let mut after_samples = Vec::new();
    let mut raw_samples = Vec::new();
    for run in 0..config.runs.max(1) {
        // Raw: n tasks, each holding its channel, idle.
        let before = crate::alloc::live_bytes();
        let senders = tokio.block_on(async {
            let mut senders = Vec::with_capacity(n);
            for _ in 0..n {
                let (tx, mut rx) = mpsc::unbounded_channel::<oneshot::Sender<usize>>();
                tokio::spawn(async move {
                    while let Some(reply) = rx.recv().await {
                        let _ = reply.send(0);
                    }
                });
                senders.push(tx);
            }
            senders
        });
        raw_samples.push((crate::alloc::live_bytes() - before) / n as f64);
        drop(senders);
        // Ours: n live idle objects, each activated by one call.
        let before = crate::alloc::live_bytes();
        tokio.block_on(async {
            let stubs: Vec<_> = (0..n)
                .map(|i| ns.get_by_name(&format!("m{run}-{i}")))
                .collect();
            let calls: Vec<_> = stubs.iter().map(|s| s.touch()).collect();
            for call in calls {
                call.await.expect("touch");
            }
        });
        ours_samples.push((crate::alloc::live_bytes() - before) / n as f64);
        // Evicted after the idle timeout (the stubs are dropped too).
        let deadline = Instant::now() + Duration::from_secs(30);
        while rt.stats().live_instances > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        after_samples.push((crate::alloc::live_bytes() - before) / n as f64);
    }
    let series = vec![
        Series {
            label: format!("do-runtime, {n} live idle objects, bytes each"),
            unit: Unit::Bytes,
            samples: ours_samples,
        },
        Series {
            label: format!("raw task + channel, {n} idle, bytes each"),
            unit: Unit::Bytes,
            samples: raw_samples,
        },
        Series {
            label: "do-runtime after eviction, bytes each still held".into(),
            unit: Unit::Bytes,
            samples: after_samples,
        },
    ];
    let ratio = series[0].median() / series[1].median();
    Outcome {
        scenario: "memory per live idle object",
        series,
        target: "≤ 3 × raw, back to baseline after eviction".into(),
        met: Some(ratio <= 3.0),
    }
}

/// A data directory whose object `big` holds `keys` keys, and a raw fjall
/// directory with the same keys.
fn big_object(
    tokio: &tokio::runtime::Runtime,
    keys: u32,
) -> (tempfile::TempDir, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let rt = runtime(dir.path(), None);
        let stub = rt.namespace::<Cold>().get_by_name("big");
        tokio.block_on(async {
            let mut calls = Vec::new();
            for from in (0..keys).step_by(128) {
                calls.push(stub.fill(from, 128.min(keys - from)));
                if calls.len() == 64 {
                    for call in calls.drain(..) {
                        call.await.expect("fill");
                    }
                }
            }
            for call in calls {
                call.await.expect("fill");
            }
        });
        tokio.block_on(rt.shutdown());
    }
    let raw_dir = tempfile::tempdir().expect("tempdir");
    {
        let db = Database::builder(raw_dir.path()).open().expect("fjall");
        let ks = db
            .keyspace("objects", KeyspaceCreateOptions::default)
            .expect("keyspace");
        for i in 0..keys {
            ks.insert(format!("key{i:08}"), i.to_be_bytes())
                .expect("insert");
        }
        db.persist(fjall::PersistMode::SyncAll).expect("persist");
    }
    (dir, raw_dir)
}

/// Listing one object's 1 000 000 keys (1 000-key pages through its
/// stub), and 100-key pages from random cursors, beside fjall's own range
/// scans of the same keys.
pub fn list(config: &Config) -> Outcome {
    let tokio = crate::harness::callers();
    let keys: u32 = if config.duration < Duration::from_millis(500) {
        20_000
    } else {
        1_000_000
    };
    let (dir, raw_dir) = big_object(&tokio, keys);
    let rt = runtime(dir.path(), None);
    let stub = rt.namespace::<Cold>().get_by_name("big");
    let db = Database::builder(raw_dir.path()).open().expect("fjall");
    let ks = db
        .keyspace("objects", KeyspaceCreateOptions::default)
        .expect("keyspace");
    let mut full_ours = || {
        tokio.block_on(async {
            let start = Instant::now();
            let (mut after, mut seen) = (None, 0usize);
            loop {
                let page = stub.scan(after.clone(), 1_000).await.expect("scan");
                seen += page.len();
                match page.last() {
                    Some(last) if page.len() == 1_000 => after = Some(last.clone()),
                    _ => break,
                }
            }
            assert_eq!(seen, keys as usize);
            seen as f64 / start.elapsed().as_secs_f64()
        })
    };
    let mut full_raw = || {
        let start = Instant::now();
        let mut seen = 0usize;
        for entry in ks.prefix("key") {
            let (k, v) = entry.into_inner().expect("entry");
            std::hint::black_box((k, v));
            seen += 1;
        }
        assert_eq!(seen, keys as usize);
        seen as f64 / start.elapsed().as_secs_f64()
    };
    let pages = 200u32;
    let cursor = |i: u32| format!("key{:08}", (i.wrapping_mul(2_654_435_761)) % keys);
    let mut page_ours = || {
        tokio.block_on(async {
            let start = Instant::now();
            for i in 0..pages {
                let page = stub.scan(Some(cursor(i)), 100).await.expect("page");
                std::hint::black_box(page);
            }
            start.elapsed().as_secs_f64() * 1e6 / f64::from(pages)
        })
    };
    let mut page_raw = || {
        let start = Instant::now();
        for i in 0..pages {
            let from = cursor(i);
            let page: Vec<_> = ks
                .range(from.clone()..)
                .skip(1)
                .take(100)
                .map(|e| e.into_inner().expect("entry"))
                .collect();
            std::hint::black_box(page);
        }
        start.elapsed().as_secs_f64() * 1e6 / f64::from(pages)
    };
    let series = interleave(
        config,
        &mut [
            (
                "do-runtime: all keys via 1 000-key pages",
                Unit::OpsPerSec,
                &mut full_ours,
            ),
            ("fjall prefix scan", Unit::OpsPerSec, &mut full_raw),
            (
                "do-runtime: 100-key page from a random cursor",
                Unit::Micros,
                &mut page_ours,
            ),
            ("fjall range, 100 keys", Unit::Micros, &mut page_raw),
        ],
    );
    let scan = series[0].median() / series[1].median();
    let page = series[2].median() / series[3].median();
    Outcome {
        scenario: "list 1 000 000 keys of one object (keys/s), and random 100-key pages",
        series,
        target: "≥ 0.5 × raw scan; page ≤ 2 × raw".into(),
        met: Some(scan >= 0.5 && page <= 2.0),
    }
}

/// Milliseconds from opening a data directory holding 1 000 000 keys to the
/// answer of the first call, beside reopening the same data with raw fjall
/// and reading one key.
pub fn restart(config: &Config) -> Outcome {
    let tokio = crate::harness::callers();
    let keys: u32 = if config.duration < Duration::from_millis(500) {
        20_000
    } else {
        1_000_000
    };
    let (dir, raw_dir) = big_object(&tokio, keys);
    let path = dir.path().to_owned();
    let mut ours = || {
        let start = Instant::now();
        let rt = runtime(&path, None);
        let n = tokio
            .block_on(rt.namespace::<Cold>().get_by_name("big").touch())
            .expect("first call");
        let elapsed = start.elapsed().as_secs_f64() * 1e3;
        assert_eq!(n, 0);
        drop(rt);
        elapsed
    };
    let raw_path = raw_dir.path().to_owned();
    let mut raw = || {
        let start = Instant::now();
        let db = Database::builder(&raw_path).open().expect("fjall");
        let ks = db
            .keyspace("objects", KeyspaceCreateOptions::default)
            .expect("keyspace");
        let _ = ks.get("key00000000").expect("get");
        start.elapsed().as_secs_f64() * 1e3
    };
    let series = interleave(
        config,
        &mut [
            ("do-runtime: open + first call", Unit::Millis, &mut ours),
            ("raw fjall: reopen + first read", Unit::Millis, &mut raw),
        ],
    );
    let ratio = series[0].median() / series[1].median();
    Outcome {
        scenario: "restart with 1 000 000 keys, time to first call",
        series,
        target: "≤ 1.2 × raw".into(),
        met: Some(ratio <= 1.2),
    }
}
