//! The stall watch: a thread that looks at every worker's beat (see
//! `engine::stalls`) a few times per threshold, and reports a step of
//! object code that has held its worker longer than the threshold: once
//! per step, as a `tracing` warning naming class, id and method, in the
//! counter `do_stalled_steps_total{class}`, and in `Runtime::stats` and
//! `Runtime::stalls` for as long as it lasts.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::engine::shared::Shared;
use crate::engine::stalls::{Stall, StepOf, method_name};

/// The longest wait between two looks: a stopping runtime waits for it.
const MAX_PERIOD: Duration = Duration::from_millis(50);

/// Starts the watch thread.
pub(crate) fn spawn(
    shared: Arc<Shared>,
    threshold: Duration,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("do-stall-watch".into())
        .spawn(move || watch(&shared, threshold))
}

/// What the watch saw running on one worker.
#[derive(Clone, Copy)]
struct Seen {
    seq: u64,
    since: Instant,
    reported: bool,
}

fn watch(shared: &Shared, threshold: Duration) {
    let period = (threshold / 4).clamp(Duration::from_millis(1), MAX_PERIOD);
    let mut seen: Vec<Option<Seen>> = vec![None; shared.beats.len()];
    while !shared.is_stopping() {
        std::thread::sleep(period);
        let now = Instant::now();
        let mut stalled = Vec::new();
        for ((worker, beat), seen) in shared.beats.iter().enumerate().zip(&mut seen) {
            let Some((seq, of)) = beat.read() else {
                *seen = None;
                continue;
            };
            let entry = match seen {
                Some(entry) if entry.seq == seq => entry,
                _ => {
                    *seen = Some(Seen {
                        seq,
                        since: now,
                        reported: false,
                    });
                    continue;
                }
            };
            let stalled_for = now.saturating_duration_since(entry.since);
            if stalled_for < threshold {
                continue;
            }
            let Some(stall) = describe(shared, worker, of, stalled_for) else {
                continue;
            };
            if !entry.reported {
                entry.reported = true;
                report(shared, &stall, of.class);
            }
            stalled.push(stall);
        }
        *shared.stalls.lock().unwrap_or_else(|p| p.into_inner()) = stalled;
    }
}

fn describe(shared: &Shared, worker: usize, of: StepOf, stalled_for: Duration) -> Option<Stall> {
    let class = shared.classes().get(of.class as usize)?;
    Some(Stall {
        class: class.name.clone(),
        id: class.key.id_from_base(of.base),
        method: method_name(class, of.method).to_owned(),
        worker,
        stalled_for,
    })
}

fn report(shared: &Shared, stall: &Stall, class: u32) {
    shared
        .counters
        .stalled_steps
        .fetch_add(1, Ordering::Relaxed);
    if let Some(class) = shared.classes().get(class as usize) {
        class.metrics.stalled.increment(1);
    }
    tracing::warn!(
        target: "do_runtime::stall",
        class = %stall.class,
        id = %stall.id,
        method = %stall.method,
        worker = stall.worker,
        stalled_ms = stall.stalled_for.as_millis() as u64,
        "a step of an object's code has held its worker thread for {:?} or more: \
         every object on this worker waits for it (a blocking call in async code?)",
        stall.stalled_for
    );
}
