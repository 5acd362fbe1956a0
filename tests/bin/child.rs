//! A child process the tests start, restart and kill.
//!
//! ```text
//! do-tests-child DIR increment NAME AMOUNT   prints the counter's new value
//! do-tests-child DIR value NAME              prints the counter's value
//! do-tests-child DIR id NAME                 prints the id of NAME
//! do-tests-child DIR crash-writer            writes until killed, printing `ack N`
//! do-tests-child DIR serve PORT [TOKEN]      serves on 127.0.0.1:PORT until killed
//! do-tests-child DIR set-alarm NAME MS       sets NAME's alarm MS ms from now, then is killed
//! ```
//!
//! `DIR --replicate URLS STREAM EPOCH COMMAND …` runs the command on a
//! runtime that replicates to the NATS servers `URLS` (comma-separated),
//! stream `STREAM`, with epoch `EPOCH` (16 shards).
//!
//! `DIR --cluster ETCD NODE PORT URLS STREAM` runs a node `NODE` of the
//! cluster on etcd `ETCD` (a lease of 2 s, 16 shards), replicating to the
//! NATS servers `URLS`, stream `STREAM`, serving on 127.0.0.1:`PORT`; it
//! prints `listening PORT` and serves until killed.

use std::io::Write;

use do_runtime::Runtime;
use do_tests::{Counter, Kv, runtime};

/// The counters and the batch object the crash writer updates each round.
pub const CRASH_COUNTERS: [&str; 4] = ["c0", "c1", "c2", "c3"];

#[tokio::main]
async fn main() {
    // `RUST_LOG` set: the runtime's events go to stderr (the fault tests
    // keep each node's stderr in a file, to show when a check fails).
    if let Ok(filter) = std::env::var("RUST_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .init();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((dir, rest)) = args.split_first() else {
        usage()
    };
    let (rt, rest) = match rest {
        [flag, etcd, node, port, urls, stream] if flag == "--cluster" => {
            let rt = do_tests::builder()
                .data_dir(dir)
                .replicate(
                    do_runtime::ReplicaConfig::new(urls.split(','))
                        .stream(stream.as_str())
                        .replicas(3)
                        .shards(16),
                )
                .cluster(
                    do_cluster::ClusterConfig::new(
                        etcd.split(','),
                        node.as_str(),
                        format!("127.0.0.1:{port}"),
                    )
                    .lease_ttl(std::time::Duration::from_secs(2))
                    .shards(16),
                )
                .build()
                .expect("the node builds");
            println!("listening {port}");
            let _ = std::io::stdout().flush();
            std::future::pending::<()>().await;
            drop(rt);
            return;
        }
        [flag, urls, stream, epoch, rest @ ..] if flag == "--replicate" => {
            let config = do_runtime::ReplicaConfig::new(urls.split(','))
                .stream(stream.as_str())
                .replicas(3)
                .shards(16)
                .epoch(epoch.parse().expect("EPOCH is a number"));
            let rt = do_tests::builder()
                .data_dir(dir)
                .replicate(config)
                .build()
                .expect("the replicated runtime builds");
            (rt, rest)
        }
        rest => (runtime(std::path::Path::new(dir)), rest),
    };
    let ns = rt.namespace::<Counter>();
    let words: Vec<&str> = rest.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["increment", name, amount] => {
            let amount: i64 = amount.parse().expect("AMOUNT is an integer");
            println!(
                "{}",
                ns.get_by_name(name)
                    .increment(amount)
                    .await
                    .expect("increment")
            );
        }
        ["value", name] => println!("{}", ns.get_by_name(name).value().await.expect("value")),
        ["id", name] => println!("{}", ns.id_from_name(name)),
        ["set-alarm", name, ms] => {
            let ms: u64 = ms.parse().expect("MS is a number");
            let stub = rt.namespace::<do_tests::Alarmed>().get_by_name(name);
            stub.set_in(ms).await.expect("set the alarm");
            // Acknowledged means durable: die without any shutdown.
            println!("set");
            let _ = std::io::stdout().flush();
            std::process::abort();
        }
        ["crash-writer"] => crash_writer(&rt).await,
        ["serve", port, rest @ ..] => {
            let port: u16 = port.parse().expect("PORT is a number");
            let mut server = rt
                .server()
                .addr(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
            if let [token] = rest {
                server = server.token(token);
            }
            let server = server.start().await.expect("the server starts");
            println!("listening {}", server.local_addr().port());
            std::future::pending::<()>().await;
        }
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: do-tests-child DIR (increment NAME AMOUNT | value NAME | id NAME | crash-writer)"
    );
    std::process::exit(2);
}

/// Each round N increments every counter by one and writes N to the ten
/// keys of one batch, all concurrently; once all are acknowledged it prints
/// `ack N`. Runs until killed.
async fn crash_writer(rt: &Runtime) {
    let mut counters: Vec<_> = CRASH_COUNTERS
        .iter()
        .map(|name| rt.namespace::<Counter>().get_by_name(name))
        .collect();
    let mut batch = rt.namespace::<Kv>().get_by_name("batch");
    let keys: Vec<String> = (0..10).map(|k| format!("k{k}")).collect();
    let start: u64 = batch
        .get_many(vec!["k0".into()])
        .await
        .expect("read the batch")
        .get("k0")
        .map_or(0, |v| v.parse().expect("a number"));
    let mut out = std::io::stdout().lock();
    for round in start + 1.. {
        // A retryable failure (the replicated log electing a leader, say)
        // tries the round again, on new stubs: the batch is idempotent, an
        // increment may land twice, so each try is printed first.
        loop {
            writeln!(out, "try {round}").expect("stdout");
            out.flush().expect("stdout");
            let increments: Vec<_> = counters.iter().map(|c| c.increment(1)).collect();
            let entries = keys
                .iter()
                .map(|k| (k.clone(), round.to_string()))
                .collect();
            let write = batch.put_many(entries);
            let mut failed = None;
            for inc in increments {
                if let Err(e) = inc.await {
                    failed.get_or_insert(e);
                }
            }
            if let Err(e) = write.await {
                failed.get_or_insert(e);
            }
            match failed {
                None => break,
                Some(e) if e.is_retryable() => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    counters = CRASH_COUNTERS
                        .iter()
                        .map(|name| rt.namespace::<Counter>().get_by_name(name))
                        .collect();
                    batch = rt.namespace::<Kv>().get_by_name("batch");
                }
                Some(e) => panic!("round {round}: {e}"),
            }
        }
        writeln!(out, "ack {round}").expect("stdout");
        out.flush().expect("stdout");
    }
}
