//! Objects and helpers shared by the behaviour tests in `spec/`.

pub mod capture;
pub mod client;
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
