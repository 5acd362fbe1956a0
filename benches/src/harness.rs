//! Interleaved runs, statistics and the results table.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// How long and how often to measure.
#[derive(Debug, Clone)]
pub struct Config {
    /// Timed runs per variant (after one warm-up run each).
    pub runs: usize,
    /// Length of one timed run.
    pub duration: Duration,
}

/// What a figure measures, and which way is better.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unit {
    /// Operations per second: higher is better.
    OpsPerSec,
    /// Microseconds: lower is better.
    Micros,
    /// Milliseconds: lower is better.
    Millis,
    /// Bytes: lower is better.
    Bytes,
}

/// Every sample of one variant of one scenario.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub unit: Unit,
    pub samples: Vec<f64>,
}

impl Series {
    pub fn median(&self) -> f64 {
        let mut s = self.samples.clone();
        s.sort_by(f64::total_cmp);
        match s.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => s[n / 2],
            n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
        }
    }
    pub fn min(&self) -> f64 {
        self.samples.iter().copied().fold(f64::INFINITY, f64::min)
    }
    pub fn max(&self) -> f64 {
        self.samples
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max)
    }
}

/// The outcome of one scenario: our series first, then its baselines.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub scenario: &'static str,
    pub series: Vec<Series>,
    /// The target, in words.
    pub target: String,
    /// Whether the target was met, when it can be judged.
    pub met: Option<bool>,
}

/// Whether the variant `label` is to run: all are, unless
/// `DO_BENCH_ONLY=<the start of a label>` picks some alone (for profiling;
/// the others' series stay empty).
pub fn selected(label: &str) -> bool {
    std::env::var("DO_BENCH_ONLY").map_or(true, |only| label.starts_with(&only))
}

/// Runs each variant once to warm up, then `runs` times, interleaved
/// (A, B, C, A, B, C, …) so drift on a noisy machine hits all alike.
pub fn interleave(
    config: &Config,
    variants: &mut [(&str, Unit, &mut dyn FnMut() -> f64)],
) -> Vec<Series> {
    for (label, _, run) in variants.iter_mut() {
        if selected(label) {
            run();
        }
    }
    let mut series: Vec<Series> = variants
        .iter()
        .map(|(label, unit, _)| Series {
            label: (*label).to_owned(),
            unit: *unit,
            samples: Vec::new(),
        })
        .collect();
    for _ in 0..config.runs {
        for (i, (label, _, run)) in variants.iter_mut().enumerate() {
            if selected(label) {
                series[i].samples.push(run());
            }
        }
    }
    series
}

/// The runtime the callers run on: two worker threads, separate from the
/// threads of whatever is measured.
pub fn callers() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio")
}

/// The p-th percentile (0–100) of latencies, in microseconds.
pub fn percentile(latencies: &mut [Duration], p: f64) -> f64 {
    if latencies.is_empty() {
        return f64::NAN;
    }
    latencies.sort();
    let idx = ((p / 100.0) * (latencies.len() - 1) as f64).round() as usize;
    latencies[idx].as_secs_f64() * 1e6
}

/// Operations per second over an elapsed time.
pub fn rate(ops: u64, since: Instant) -> f64 {
    ops as f64 / since.elapsed().as_secs_f64()
}

fn fmt_value(v: f64, unit: Unit) -> String {
    match unit {
        Unit::OpsPerSec if v >= 1e6 => format!("{:.2} M/s", v / 1e6),
        Unit::OpsPerSec if v >= 1e3 => format!("{:.1} k/s", v / 1e3),
        Unit::OpsPerSec => format!("{v:.0} /s"),
        Unit::Micros => format!("{v:.1} µs"),
        Unit::Millis => format!("{v:.1} ms"),
        Unit::Bytes if v >= 1024.0 => format!("{:.1} KiB", v / 1024.0),
        Unit::Bytes => format!("{v:.0} B"),
    }
}

/// The results as a markdown table: one row per series, with the ratio of
/// our median to each baseline's median (for throughput above 1 is better
/// for us; for latency below 1 is).
pub fn table(outcomes: &[Outcome]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| scenario | variant | median | min | max | ours ÷ this | target | met |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
    for o in outcomes {
        for (i, s) in o.series.iter().enumerate() {
            // Compare with our first series of the same unit and the same
            // kind of figure (the label's last word: "p50", "p99" …), else
            // of the same unit.
            let kind = |x: &Series| x.label.rsplit(' ').next().map(str::to_owned);
            let index = |x: &Series| o.series.iter().position(|y| std::ptr::eq(y, x));
            let ours = o
                .series
                .iter()
                .find(|x| x.unit == s.unit && kind(x) == kind(s) && index(x) < index(s))
                .filter(|_| s.unit == Unit::Micros)
                .or_else(|| o.series.iter().find(|x| x.unit == s.unit));
            let ratio = match ours {
                // A figure shown for context is no baseline of ours.
                _ if s.label.ends_with("(context)") => "—".to_owned(),
                Some(ours) if !std::ptr::eq(ours, s) => {
                    format!("{:.2}", ours.median() / s.median())
                }
                _ => "—".to_owned(),
            };
            let (target, met) = if i == 0 {
                (
                    o.target.clone(),
                    match o.met {
                        Some(true) => "yes",
                        Some(false) => "**no**",
                        None => "—",
                    }
                    .to_owned(),
                )
            } else {
                (String::new(), String::new())
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                if i == 0 { o.scenario } else { "" },
                s.label,
                fmt_value(s.median(), s.unit),
                fmt_value(s.min(), s.unit),
                fmt_value(s.max(), s.unit),
                ratio,
                target,
                met
            );
        }
    }
    out
}
