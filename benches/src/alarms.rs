//! What pending alarms cost the scheduler: the index it reads (the due
//! prefix and the first key) with many pending alarms, beside the same
//! reads of an empty index, and the process's memory before and after.

use std::time::{Duration, Instant, SystemTime};

use do_storage::{Alarm, ObjectPrefix, Store, StoreOptions};

use crate::harness::{Config, Outcome, Series, Unit};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Microseconds per scheduler scan: the due alarms (none) and the next due time.
fn scan_micros(store: &Store, now_ms: u64, rounds: u32) -> f64 {
    let start = Instant::now();
    for _ in 0..rounds {
        let due = store.due_alarms(now_ms, 1024).expect("scan");
        assert!(due.is_empty());
        let _ = store.next_alarm_due().expect("first key");
    }
    start.elapsed().as_secs_f64() * 1e6 / f64::from(rounds)
}

pub fn pending(config: &Config, count: u32) -> Outcome {
    let tokio = crate::harness::callers();
    let full_dir = tempfile::tempdir().expect("tempdir");
    let empty_dir = tempfile::tempdir().expect("tempdir");
    let full = Store::open(full_dir.path(), StoreOptions::default()).expect("store");
    let empty = Store::open(empty_dir.path(), StoreOptions::default()).expect("store");
    let now_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let rss_before = rss_kib();
    // Alarms due over the next year, none now.
    let started = Instant::now();
    let mut last = None;
    for i in 0..count {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&i.to_be_bytes());
        let object = full.object(ObjectPrefix::new(0, id));
        let due_ms = now_ms + 60_000 + u64::from(i) * 31;
        object
            .set_alarm(Some(Alarm { due_ms, retries: 0 }), false)
            .expect("set");
        object.flush().expect("flush");
        // Bounded backlog: the commit queue's transient memory is not what
        // pending alarms cost.
        if i % 10_000 == 9_999 {
            tokio.block_on(object.barrier()).expect("durable");
        }
        if i % 250_000 == 249_999 {
            eprintln!(
                "alarms: {} set, process RSS {} MiB",
                i + 1,
                rss_kib() / 1024
            );
        }
        last = Some(object);
    }
    if let Some(last) = last {
        tokio.block_on(last.barrier()).expect("durable");
    }
    let insert = started.elapsed();
    let rss_after = rss_kib();
    let rounds = if config.duration < Duration::from_millis(500) {
        200
    } else {
        5_000
    };
    let mut ours = Vec::new();
    let mut base = Vec::new();
    for _ in 0..config.runs.max(1) {
        ours.push(scan_micros(&full, now_ms, rounds));
        base.push(scan_micros(&empty, now_ms, rounds));
    }
    eprintln!(
        "alarms: {count} set in {:.1} s; process RSS {} MiB → {} MiB",
        insert.as_secs_f64(),
        rss_before / 1024,
        rss_after / 1024
    );
    let series = vec![
        Series {
            label: format!("scheduler scan, {count} pending"),
            unit: Unit::Micros,
            samples: ours,
        },
        Series {
            label: "scheduler scan, none pending".into(),
            unit: Unit::Micros,
            samples: base,
        },
    ];
    Outcome {
        scenario: "pending alarms: cost of one scheduler scan",
        series,
        target: format!(
            "scan cost independent of pending alarms (RSS grew {} MiB for {count})",
            rss_after.saturating_sub(rss_before) / 1024
        ),
        met: None,
    }
}
