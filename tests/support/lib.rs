//! Objects and helpers shared by the behaviour tests in `spec/`.

pub mod capture;
pub mod client;
pub mod crash_check;
/// A real etcd process (see `do_cluster::testing`).
pub use do_cluster::testing as etcd;
/// Real nats-server processes (see `do_replica::testing`).
pub use do_replica::testing as nats;
pub mod objects;
pub mod web;

use std::path::Path;

use do_runtime::Runtime;

pub use objects::*;
pub use web::*;

/// A runtime over `dir` with every test class registered.
pub fn runtime(dir: &Path) -> Runtime {
    builder()
        .data_dir(dir)
        .build()
        .expect("the test runtime builds")
}

/// A builder with every test class registered and two workers.
pub fn builder() -> do_runtime::RuntimeBuilder {
    Runtime::builder()
        .workers(2)
        .register::<Counter>()
        .register::<Recorder>()
        .register::<Notes>()
        .register::<Cells>()
        .register::<Bank>()
        .register::<Kv>()
        .register::<Tally>()
        .register::<TxnLab>()
        .register::<Netter>()
        .register::<Gatekeeper>()
        .register::<Fragile>()
        .register::<Relay>()
        .register::<Slow>()
        .register::<Web>()
        .register::<Alarmed>()
        .register::<Configured>()
        .register::<Aborter>()
        .register::<Chores>()
        .register::<Passer>()
        .register::<Blobs>()
        .register::<Streamer>()
}

/// Calls `f` until it returns `Some` (every 10 ms, for at most 60 s:
/// a bound for a failing test, not a speed requirement).
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(value) = f().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// The process's resident memory, in bytes.
pub fn resident_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS in /proc/self/status");
    let kib: usize = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("a number of kB");
    kib * 1024
}

/// Waits for flood `clients` (each a connection, or `None` if it failed
/// early), lets the runtime take what they sent, and checks that what it
/// holds for clients stays within `budget`. Resident memory since `before`
/// is the whole test process's (other tests run beside): shown, not
/// asserted. Returns the connections still open.
pub async fn clients_within_budget(
    rt: &Runtime,
    budget: usize,
    before: usize,
    clients: Vec<tokio::task::JoinHandle<Option<tokio::net::TcpStream>>>,
) -> Vec<tokio::net::TcpStream> {
    let mut open = Vec::new();
    for client in clients {
        if let Some(tcp) = client.await.expect("a client task") {
            open.push(tcp);
        }
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let grown = resident_bytes().saturating_sub(before);
    eprintln!("resident memory grew by {} KiB", grown / 1024);
    let held = rt.stats().client_bytes_held;
    assert!(
        held <= budget,
        "{held} bytes held with a budget of {budget}"
    );
    open
}
