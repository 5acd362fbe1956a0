//! The benchmark suite. Each scenario runs beside its baselines in the same
//! process, interleaved, and prints medians, extremes and ratios.
//!
//! ```text
//! cargo run --release -p do-bench -- [--quick] [--runs N] [--secs S] [--out FILE] [SCENARIO …]
//! cargo run --release -p do-bench -- --list
//! ```

mod alarms;
mod alloc;
mod cluster;
mod durable;
mod gateway;
mod harness;
mod inproc;
mod lifecycle;
mod load;
#[cfg(feature = "peers")]
mod peers;
mod remote;
mod replicated;

use std::time::Duration;

use harness::{Config, Outcome};

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

type Runner = fn(&Config) -> Outcome;

const SCENARIOS: &[(&str, &str, Runner)] = &[
    (
        "inproc-1",
        "in-process stub calls, 1 caller, sequential",
        |c| inproc::calls(c, "in-process stub call, 1 caller, sequential", 1, 1),
    ),
    (
        "inproc-64",
        "in-process stub calls, 64 callers on one object",
        |c| inproc::calls(c, "in-process stub calls, 64 callers, 1 object", 1, 64),
    ),
    (
        "inproc-10k",
        "in-process stub calls, 10 000 objects, random object per call",
        |c| {
            inproc::calls(
                c,
                "in-process stub calls, 10 000 objects, random object per call",
                10_000,
                64,
            )
        },
    ),
    (
        "durable-1x1",
        "durable increment, 1 object, 1 caller: p50 latency",
        durable::one_caller,
    ),
    (
        "durable-1x64",
        "durable increments, 1 object, 64 in flight",
        |c| durable::throughput(c, "durable increments, 1 object × 64 in flight", 1, 64),
    ),
    (
        "durable-100x1000",
        "durable increments, 100 objects × 1 000 callers",
        |c| {
            durable::throughput(
                c,
                "durable increments, 100 objects × 1 000 callers",
                100,
                1_000,
            )
        },
    ),
    (
        "remote-1",
        "remote calls over loopback, 1 caller sequential",
        |c| remote::remote(c, 1),
    ),
    (
        "remote-64",
        "remote calls over loopback, 64 in flight",
        |c| remote::remote(c, 64),
    ),
    (
        "cold-activation",
        "activation of a new object (first call, 10-key read) vs raw task spawn + call",
        lifecycle::cold_activation,
    ),
    (
        "memory-100k",
        "memory per live idle object (100 000) vs raw task + channel; after eviction",
        lifecycle::memory,
    ),
    (
        "latency-load",
        "p50/p99 at half of peak, open loop: in-memory (beside a raw actor) and durable (beside fsync)",
        load::latency,
    ),
    (
        "list-1m",
        "list one object's 1 000 000 keys, and random 100-key pages, vs fjall range scans",
        lifecycle::list,
    ),
    (
        "restart-1m",
        "restart with 1 000 000 keys: open + first call vs raw fjall reopen",
        lifecycle::restart,
    ),
    (
        "alarms-1m",
        "pending alarms: one scheduler scan with 1 000 000 pending vs none",
        |c| {
            alarms::pending(
                c,
                if c.duration < std::time::Duration::from_millis(500) {
                    10_000
                } else {
                    1_000_000
                },
            )
        },
    ),
    (
        "gateway-1",
        "HTTP through the gateway to one object's fetch, 16 keep-alive connections",
        |c| gateway::http(c, 16, 1),
    ),
    (
        "gateway-64",
        "HTTP through the gateway, 64 connections on 64 objects",
        |c| gateway::http(c, 64, 64),
    ),
    (
        "durable-10kx10k",
        "durable increments, 10 000 objects × 10 000 callers",
        |c| {
            durable::throughput(
                c,
                "durable increments, 10 000 objects × 10 000 callers",
                10_000,
                10_000,
            )
        },
    ),
    (
        "replicated-1x1",
        "replicated increment, 1 caller, 3 replicas: p50/p99 vs raw publish-ack",
        replicated::one_caller,
    ),
    (
        "replicated-1x64-r1",
        "replicated increments, 1 object × 64 in flight, 1 replica, vs raw publisher",
        |c| replicated::throughput(c, "replicated increments, 1 object × 64, R1", 1, 64, 1),
    ),
    (
        "replicated-1x64-r3",
        "replicated increments, 1 object × 64 in flight, 3 replicas, vs raw publisher",
        |c| replicated::throughput(c, "replicated increments, 1 object × 64, R3", 1, 64, 3),
    ),
    (
        "replicated-100x1000-r1",
        "replicated increments, 100 objects × 1 000 callers, 1 replica, vs raw publisher",
        |c| {
            replicated::throughput(
                c,
                "replicated increments, 100 objects × 1 000 callers, R1",
                100,
                1_000,
                1,
            )
        },
    ),
    (
        "replicated-100x1000-r3",
        "replicated increments, 100 objects × 1 000 callers, 3 replicas, vs raw publisher",
        |c| {
            replicated::throughput(
                c,
                "replicated increments, 100 objects × 1 000 callers, R3",
                100,
                1_000,
                3,
            )
        },
    ),
    (
        "replicated-recovery",
        "restore from the log: 1 000 keys × 1 000 overwrites vs once; 1 000 000 keys vs a raw consumer",
        |c| {
            replicated::recovery(
                c,
                if c.duration < std::time::Duration::from_millis(500) {
                    10_000
                } else {
                    1_000_000
                },
            )
        },
    ),
    (
        "cluster-forward",
        "cluster: a call through a non-owner vs straight to the owner vs remote-1",
        cluster::forwarding,
    ),
    (
        "cluster-3v1",
        "cluster: durable increments on 3 runtimes vs 1 runtime",
        cluster::three_against_one,
    ),
    (
        "cluster-failover",
        "cluster: time until a killed owner's objects answer again, 20 kills (1 in --quick)",
        cluster::failover,
    ),
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--node") {
        cluster::node_main(&args[2..]);
        return;
    }
    let mut config = Config {
        runs: 5,
        duration: Duration::from_secs(2),
    };
    let mut out = None;
    let mut chosen = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => {
                config.runs = 1;
                config.duration = Duration::from_millis(100);
            }
            "--runs" => config.runs = number(args.next(), "--runs"),
            "--secs" => config.duration = Duration::from_secs_f64(number(args.next(), "--secs")),
            "--out" => out = args.next(),
            "--list" => {
                for (name, about, _) in SCENARIOS {
                    println!("{name:20} {about}");
                }
                return;
            }
            "-h" | "--help" => {
                println!(
                    "usage: do-bench [--quick] [--runs N] [--secs S] [--out FILE] [SCENARIO …] | --list"
                );
                return;
            }
            name if SCENARIOS.iter().any(|(n, _, _)| *n == name) => chosen.push(name.to_owned()),
            other => {
                eprintln!("unknown argument {other:?}; --list shows the scenarios");
                std::process::exit(2);
            }
        }
    }
    let mut outcomes = Vec::new();
    for (name, about, run) in SCENARIOS {
        if !chosen.is_empty() && !chosen.iter().any(|c| c == name) {
            continue;
        }
        eprintln!("running {name}: {about}");
        let outcome = run(&config);
        println!("{}", harness::table(std::slice::from_ref(&outcome)));
        outcomes.push(outcome);
    }
    let table = harness::table(&outcomes);
    println!("{table}");
    if let Some(path) = out
        && let Err(e) = std::fs::write(&path, &table)
    {
        eprintln!("cannot write {path}: {e}");
        std::process::exit(1);
    }
}

fn number<T: std::str::FromStr>(arg: Option<String>, flag: &str) -> T {
    match arg.as_deref().map(str::parse) {
        Some(Ok(v)) => v,
        _ => {
            eprintln!("{flag} needs a number");
            std::process::exit(2);
        }
    }
}
