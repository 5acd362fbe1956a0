//! Latency under load: calls issued on a fixed schedule (open loop, never
//! waiting for replies) at half of the measured peak, each timed from its
//! scheduled tick (less the timer's own millisecond of round-up), beside
//! the same schedule against the baselines. How late the ticks fired is
//! reported beside them.

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

/// The load generator's tasks; each issues a quarter of the calls.
const DRIVERS: usize = 4;

/// What one driver saw: each call's latency, and how late each of its
/// ticks fired.
#[derive(Default)]
struct Observed {
    latencies: Vec<Duration>,
    lateness: Vec<Duration>,
}

/// The finest step of tokio's timer: a tick fires up to this late even
/// on an idle runtime.
const TIMER_STEP: Duration = Duration::from_millis(1);

/// Issues `rate` calls per second for `d`, every millisecond a batch (the
/// finest step of tokio's timer); returns each call's latency and how late
/// each tick fired. Every call is due at or before its tick; it is timed
/// from its tick's scheduled time plus the timer's own round-up (up to
/// [`TIMER_STEP`]), so a tick that fires later than that (the callers'
/// threads busy, not least with the system under test) counts against the
/// system, while the timer's granularity does not.
async fn open_loop(op: &Op, rate: f64, d: Duration) -> Observed {
    let per_ms = rate / 1000.0;
    let start = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    let mut seen = Observed::default();
    let mut issued = 0f64;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    while start.elapsed() < d {
        tokio::select! {
            scheduled = tick.tick() => {
                let fired = Instant::now();
                let late = fired.saturating_duration_since(scheduled.into_std());
                seen.lateness.push(late);
                // The timer's own round-up (up to a millisecond) is not
                // counted; a tick later than that (the callers' threads
                // busy, the system under test among them) is.
                let counted_from = fired - late.saturating_sub(TIMER_STEP);
                let due_total = per_ms * (start.elapsed().as_secs_f64() * 1000.0).floor();
                while issued < due_total {
                    let call = op();
                    in_flight.push(async move {
                        call.await;
                        counted_from.elapsed()
                    });
                    issued += 1.0;
                }
            }
            Some(latency) = in_flight.next(), if !in_flight.is_empty() => seen.latencies.push(latency),
        }
    }
    while let Some(latency) = in_flight.next().await {
        seen.latencies.push(latency);
    }
    seen
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
    let mut samples: Vec<Series> = Vec::new();
    let mut record =
        |label: &str, unit: Unit, value: f64| match samples.iter_mut().find(|s| s.label == label) {
            Some(s) => s.samples.push(value),
            None => samples.push(Series {
                label: label.to_owned(),
                unit,
                samples: vec![value],
            }),
        };
    for _ in 0..config.runs.max(1) {
        for (name, op) in [
            ("in-memory call", &in_memory),
            ("raw actor", &raw),
            ("durable increment", &durable),
        ] {
            if !crate::harness::selected(name) {
                continue;
            }
            let peak_rate = tokio.block_on(peak(op, d / 2));
            let seen = tokio.block_on(async {
                let drivers: Vec<_> = (0..DRIVERS)
                    .map(|_| {
                        let op = op.clone();
                        let rate = peak_rate / 2.0 / DRIVERS as f64;
                        tokio::spawn(async move { open_loop(&op, rate, d).await })
                    })
                    .collect();
                let mut all = Observed::default();
                for driver in drivers {
                    let seen = driver.await.unwrap_or_default();
                    all.latencies.extend(seen.latencies);
                    all.lateness.extend(seen.lateness);
                }
                all
            });
            let (mut lat, mut late) = (seen.latencies, seen.lateness);
            record(
                &format!("{name} p50"),
                Unit::Micros,
                percentile(&mut lat, 50.0),
            );
            record(
                &format!("{name} p99"),
                Unit::Micros,
                percentile(&mut lat, 99.0),
            );
            record(
                &format!("{name}: peak (context)"),
                Unit::OpsPerSec,
                peak_rate,
            );
            record(
                &format!("{name}: tick lateness p99 (context)"),
                Unit::Micros,
                percentile(&mut late, 99.0),
            );
        }
        record("fsync p99", Unit::Micros, fsync_p99(dir.path(), d / 2));
    }
    let get = |label: &str| {
        samples
            .iter()
            .find(|s| s.label == label)
            .map_or(f64::NAN, Series::median)
    };
    let met = get("in-memory call p99") <= 5.0 * get("in-memory call p50")
        && get("durable increment p99") <= get("fsync p99") + 1000.0;
    Outcome {
        scenario: "latency under load at half of peak (open loop)",
        series: samples,
        target: "in-memory p99 ≤ 5 × p50; durable p99 ≤ fsync p99 + 1 ms".into(),
        met: Some(met),
    }
}
