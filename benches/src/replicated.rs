//! Replicated durable increments (`RuntimeBuilder::replicate`) on a
//! 3-server NATS JetStream cluster started here, beside a raw `async-nats`
//! publisher appending the same bytes (a message per increment, awaiting
//! its acknowledgement) to a stream with the same replicas; and reading an
//! object back from the log beside a raw consumer reading the same stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream};
use do_replica::testing::NatsCluster;
use do_runtime::{ReplicaConfig, Runtime};

use crate::durable::{Counter, closed_loop, increments};
use crate::harness::{Config, Outcome, Unit, interleave, percentile};

fn replicated(
    dir: &std::path::Path,
    cluster: &NatsCluster,
    stream: &str,
    replicas: usize,
) -> Runtime {
    Runtime::builder()
        .data_dir(dir)
        .register::<Counter>()
        .register::<Filler>()
        .replicate(
            ReplicaConfig::new(cluster.urls())
                .stream(stream)
                .replicas(replicas)
                .shards(64),
        )
        .build()
        .expect("the replicated bench runtime builds")
}

/// A plain client of `cluster`.
async fn connect(cluster: &NatsCluster) -> async_nats::Client {
    let addrs: Vec<async_nats::ServerAddr> = cluster
        .urls()
        .iter()
        .map(|u| u.parse().expect("a server address"))
        .collect();
    async_nats::connect(addrs).await.expect("connects")
}

/// A raw JetStream publisher on `cluster`: stream `name` with `replicas`,
/// one message kept per subject, as the log's stream is.
struct RawLog {
    js: jetstream::Context,
    prefix: String,
}

impl RawLog {
    async fn open(cluster: &NatsCluster, name: &str, replicas: usize) -> RawLog {
        let js = jetstream::new(connect(cluster).await);
        let prefix = format!("raw.{name}");
        js.get_or_create_stream(stream::Config {
            name: name.to_owned(),
            subjects: vec![format!("{prefix}.>")],
            max_messages_per_subject: 1,
            num_replicas: replicas,
            ..Default::default()
        })
        .await
        .expect("the raw stream");
        RawLog { js, prefix }
    }

    /// Publishes `value` for object `o`'s key and waits for the ack.
    async fn put(&self, o: usize, value: u64) {
        // The log's subject for a key is about as long: prefix, kind,
        // shard, class, 32 hex digits, the key.
        let subject = format!("{}.k.{o}.Counter.{:032x}.kdmFsdWU", self.prefix, o);
        let mut payload = Vec::with_capacity(10);
        payload.push(1);
        payload.extend_from_slice(&value.to_le_bytes());
        self.js
            .publish(subject, payload.into())
            .await
            .expect("published")
            .await
            .expect("acknowledged");
    }
}

/// Throughput of replicated increments with `tasks` callers over `objects`
/// objects, beside the raw publisher, with `replicas` replicas.
pub fn throughput(
    config: &Config,
    scenario: &'static str,
    objects: usize,
    tasks: usize,
    replicas: usize,
) -> Outcome {
    let tokio = crate::harness::callers();
    let cluster = NatsCluster::start(3);
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = replicated(dir.path(), &cluster, &format!("OURS{replicas}"), replicas);
    let raw = Arc::new(tokio.block_on(RawLog::open(&cluster, &format!("RAW{replicas}"), replicas)));
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
                raw.put(o, n).await;
            }
        }))
    };
    let series = interleave(
        config,
        &mut [
            ("do-runtime, replicated", Unit::OpsPerSec, &mut ours),
            ("raw async-nats publisher", Unit::OpsPerSec, &mut raw_run),
        ],
    );
    let stats = rt.stats().storage;
    eprintln!(
        "  do-runtime: {} groups, {:.1} object batches per group",
        stats.groups,
        stats.batches as f64 / stats.groups.max(1) as f64,
    );
    let ratio = series[0].median() / series[1].median();
    drop(rt);
    Outcome {
        scenario,
        series,
        target: format!("≥ 0.8 × the raw publisher (now {ratio:.2}×)"),
        met: Some(ratio >= 0.8),
    }
}

/// One caller, sequential: p50 and p99 of an acknowledged replicated
/// increment beside the raw publisher's publish-to-ack latency.
pub fn one_caller(config: &Config) -> Outcome {
    let tokio = crate::harness::callers();
    let cluster = NatsCluster::start(3);
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = replicated(dir.path(), &cluster, "LAT", 3);
    let raw = Arc::new(tokio.block_on(RawLog::open(&cluster, "RAWLAT", 3)));
    let stub = rt.namespace::<Counter>().get_by_name("solo");
    let d = config.duration;
    let latencies = |p: f64, ours: bool| {
        let (stub, raw) = (stub.clone(), raw.clone());
        tokio.block_on(async move {
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let until = Instant::now() + d;
                let mut n = 0;
                while Instant::now() < until {
                    let t = Instant::now();
                    if ours {
                        stub.increment(1).await.expect("increment");
                    } else {
                        n += 1;
                        raw.put(0, n).await;
                    }
                    lat.push(t.elapsed());
                }
                percentile(&mut lat, p)
            })
            .await
            .expect("task")
        })
    };
    let series = interleave(
        config,
        &mut [
            ("do-runtime p50", Unit::Micros, &mut || {
                latencies(50.0, true)
            }),
            ("raw publish-ack p50", Unit::Micros, &mut || {
                latencies(50.0, false)
            }),
            ("do-runtime p99", Unit::Micros, &mut || {
                latencies(99.0, true)
            }),
            ("raw publish-ack p99", Unit::Micros, &mut || {
                latencies(99.0, false)
            }),
        ],
    );
    let ratio = series[0].median() / series[1].median();
    drop(rt);
    Outcome {
        scenario: "replicated increment, 1 caller, 3 replicas: latency",
        series,
        target: format!("p50 beside the raw publish-ack p50 (now {ratio:.2}×)"),
        met: None,
    }
}

/// Reading back from the log, on an empty directory: an object of 1 000
/// keys written once, the same keys each overwritten (1 000 times; 20 in
/// quick runs) — compaction keeps it within 2× — and an object of `big`
/// keys, beside a raw ordered consumer reading that same stream.
pub fn recovery(config: &Config, big: usize) -> Outcome {
    let tokio = crate::harness::callers();
    let cluster = NatsCluster::start(3);
    let work = tempfile::tempdir().expect("tempdir");
    let quick = config.duration < Duration::from_millis(500);
    let overwrites = if quick { 20 } else { 1000 };
    let fill = |stream: &str, keys: usize, rounds: usize| {
        let rt = replicated(&work.path().join(stream), &cluster, stream, 3);
        let filler = rt.namespace::<Filler>().get_by_name("big");
        tokio.block_on(async {
            for round in 0..rounds {
                for start in (0..keys).step_by(100) {
                    filler
                        .fill(start as u64, (keys - start).min(100) as u64, round as u64)
                        .await
                        .expect("fill");
                }
            }
        });
        drop(rt);
    };
    fill("ONCE", 1000, 1);
    fill("OVER", 1000, overwrites);
    fill("BIG", big, 1);
    let restore = |stream: &str| {
        let target = tempfile::tempdir().expect("tempdir");
        let t = Instant::now();
        let rt = replicated(target.path(), &cluster, stream, 3);
        let took = t.elapsed();
        drop(rt);
        took.as_secs_f64() * 1e3
    };
    let raw_read = |stream: &str| {
        tokio.block_on(async {
            let js = jetstream::new(connect(&cluster).await);
            let t = Instant::now();
            let stream = js.get_stream(stream).await.expect("the stream");
            let consumer = stream
                .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
                .await
                .expect("a consumer");
            let pending = consumer.cached_info().num_pending;
            let mut messages = consumer.messages().await.expect("messages");
            let mut read = 0;
            while read < pending {
                use futures_util::StreamExt;
                match tokio::time::timeout(Duration::from_secs(10), messages.next()).await {
                    Ok(Some(Ok(_))) => read += 1,
                    _ => break,
                }
            }
            t.elapsed().as_secs_f64() * 1e3
        })
    };
    let series = interleave(
        config,
        &mut [
            ("restore 1 000 keys written once", Unit::Millis, &mut || {
                restore("ONCE")
            }),
            (
                "restore 1 000 keys, each overwritten",
                Unit::Millis,
                &mut || restore("OVER"),
            ),
            ("restore the big object", Unit::Millis, &mut || {
                restore("BIG")
            }),
            (
                "raw ordered consumer, the big object's stream",
                Unit::Millis,
                &mut || raw_read("BIG"),
            ),
        ],
    );
    let compaction = series[1].median() / series[0].median();
    let against_raw = series[2].median() / series[3].median();
    Outcome {
        scenario: if big >= 1_000_000 {
            "restore from the log: compaction, and 1 000 000 keys beside a raw consumer"
        } else {
            "restore from the log: compaction, and a big object beside a raw consumer (quick: fewer keys)"
        },
        series,
        target: format!(
            "1 000 keys overwritten {overwrites}× restore within 2× of written once (now {compaction:.2}×); {big} keys at {against_raw:.2}× the raw consumer"
        ),
        met: Some(compaction <= 2.0),
    }
}

/// Writes many keys in one call, for the recovery benchmark.
pub struct Filler {
    ctx: do_runtime::Ctx,
}

#[do_runtime::durable_object]
impl Filler {
    pub fn new(ctx: do_runtime::Ctx) -> Self {
        Self { ctx }
    }

    /// Sets keys `start` .. `start + n` to `round`.
    pub async fn fill(&self, start: u64, n: u64, round: u64) -> Result<(), do_runtime::Error> {
        let storage = self.ctx.storage();
        for k in start..start + n {
            storage.put(&format!("k{k:08}"), &round)?;
        }
        Ok(())
    }
}
