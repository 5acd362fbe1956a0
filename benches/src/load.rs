//! Latency under load: calls issued on a fixed schedule (open loop) at half
//! of the measured peak, each timed from when it was due (no coordinated
//! omission), beside the same schedule against the baselines.

use std::fs::OpenOptions;
use std::future::Future;
use std::io::{Seek, SeekFrom, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use do_runtime::Runtime;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use crate::harness::{Config, Outcome, Series, Unit, percentile};

type Op = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Calls per second with 64 callers in a closed loop for `d`.
async fn peak(op: &Op, d: Duration) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (op, done) = (op.clone(), done.clone());
            tokio::spawn(async move {
                while start.elapsed() < d {
                    op().await;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// Issues `rate` calls per second for `d`, every millisecond a batch;
/// returns each call's latency from when it was due, or from when its
/// batch was scheduled if that is later: the harness's own batching is not
/// counted against the system, but a tick that comes late (the callers'
/// runtime lagging) is.
async fn open_loop(op: &Op, rate: f64, d: Duration) -> Vec<Duration> {
    let per_ms = rate / 1000.0;
    let start = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    let mut latencies = Vec::new();
    let mut issued = 0f64;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    while start.elapsed() < d {
        tokio::select! {
            scheduled = tick.tick() => {
                let scheduled = scheduled.into_std();
                let due_total = per_ms * (start.elapsed().as_secs_f64() * 1000.0).floor();
                while issued < due_total {
                    // When this call was due on the schedule.
                    let due = (start + Duration::from_secs_f64(issued / rate)).max(scheduled);
                    let call = op();
                    in_flight.push(async move {
                        call.await;
                        due.elapsed()
                    });
                    issued += 1.0;
                }
            }
            Some(latency) = in_flight.next(), if !in_flight.is_empty() => latencies.push(latency),
        }
    }
    while let Some(latency) = in_flight.next().await {
        latencies.push(latency);
    }
    latencies
}

fn fsync_p99(dir: &std::path::Path, duration: Duration) -> f64 {
    let Ok(mut file) = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("fsync-probe"))
    else {
        return f64::NAN;
    };
    let mut lat = Vec::new();
    let until = Instant::now() + duration;
    let mut n = 0u64;
    while Instant::now() < until {
        let t = Instant::now();
        let _ = file.seek(SeekFrom::Start(0));
        let _ = file.write_all(&n.to_le_bytes());
        let _ = file.sync_data();
        lat.push(t.elapsed());
        n += 1;
    }
    percentile(&mut lat, 99.0)
}

/// p50 and p99 under load at half of peak: in-memory calls beside a raw
/// actor, durable increments beside an fsync probe.
pub fn latency(config: &Config) -> Outcome {
    let tokio = crate::harness::callers();
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Runtime::builder()
        .data_dir(dir.path())
        .register::<crate::inproc::Adder>()
        .register::<crate::durable::Counter>()
        .build()
        .expect("runtime");
    let adder = rt.namespace::<crate::inproc::Adder>().get_by_name("load");
    let counter = rt
        .namespace::<crate::durable::Counter>()
        .get_by_name("load");
    let actor = tokio.block_on(async { crate::inproc::spawn_actor() });
    let in_memory: Op = Arc::new(move || {
        let call = adder.add(1);
        Box::pin(async move {
            let _ = call.await;
        })
    });
    let raw: Op = Arc::new(move || {
        let actor = actor.clone();
        Box::pin(async move {
            crate::inproc::raw_add(&actor, 1).await;
        })
    });
    let durable: Op = Arc::new(move || {
        let call = counter.increment(1);
        Box::pin(async move {
            let _ = call.await;
        })
    });
    let d = config.duration;
    let mut samples: Vec<(String, Vec<f64>)> = Vec::new();
    let mut record = |label: &str, value: f64| match samples.iter_mut().find(|(l, _)| l == label) {
        Some((_, v)) => v.push(value),
        None => samples.push((label.to_owned(), vec![value])),
    };
    for _ in 0..config.runs.max(1) {
        for (name, op) in [
            ("in-memory call", &in_memory),
            ("raw actor", &raw),
            ("durable increment", &durable),
        ] {
            let peak_rate = tokio.block_on(peak(op, d / 2));
            // Four schedules of a quarter each, so one driver task is not
            // the bottleneck.
            let mut lat = tokio.block_on(async {
                let drivers: Vec<_> = (0..4)
                    .map(|_| {
                        let op = op.clone();
                        tokio::spawn(async move { open_loop(&op, peak_rate / 8.0, d).await })
                    })
                    .collect();
                let mut all = Vec::new();
                for driver in drivers {
                    all.extend(driver.await.unwrap_or_default());
                }
                all
            });
            record(&format!("{name} p50"), percentile(&mut lat, 50.0));
            record(&format!("{name} p99"), percentile(&mut lat, 99.0));
        }
        record("fsync p99", fsync_p99(dir.path(), d / 2));
    }
    let series: Vec<Series> = samples
        .into_iter()
        .map(|(label, samples)| Series {
            label,
            unit: Unit::Micros,
            samples,
        })
        .collect();
    let get = |label: &str| {
        series
            .iter()
            .find(|s| s.label == label)
            .map_or(f64::NAN, Series::median)
    };
    let met = get("in-memory call p99") <= 5.0 * get("in-memory call p50")
        && get("durable increment p99") <= get("fsync p99") + 1000.0;
    Outcome {
        scenario: "latency under load at half of peak (open loop)",
        series,
        target: "in-memory p99 ≤ 5 × p50; durable p99 ≤ fsync p99 + 1 ms".into(),
        met: Some(met),
    }
}
