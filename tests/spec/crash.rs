//! St5: an acknowledged write survives `kill -9`; no batch is ever visible in part.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use do_tests::crash_check::check_after_crash;
use do_tests::runtime;

const ROUNDS: usize = 20;

/// A small deterministic generator, seeded from the clock and printed, so a
/// failing schedule can be replayed by hand.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

/// Runs the crash writer until it has acknowledged at least one round, lets
/// it run a random while longer, kills it with SIGKILL, and returns the last
/// round it acknowledged.
fn run_and_kill(dir: &std::path::Path, extra_ms: u64) -> Option<u64> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_do-tests-child"))
        .arg(dir)
        .arg("crash-writer")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the child starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(n) = line.strip_prefix("ack ") {
                tx.send(n.parse::<u64>().expect("ack N")).ok();
            }
        }
    });
    let mut last = None;
    // Wait for the first acknowledgement (startup can be slow on a busy machine).
    if let Ok(n) = rx.recv_timeout(Duration::from_secs(30)) {
        last = Some(n);
    }
    let until = Instant::now() + Duration::from_millis(extra_ms);
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(n) => last = Some(n),
            Err(_) => break,
        }
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    reader.join().expect("reader");
    // Acks printed before the kill but read only now still count.
    last.into_iter().chain(rx.try_iter()).max()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill_and_batches_are_never_torn() {
    let dir = tempfile::tempdir().unwrap();
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("crash test seed {seed}");
    let mut rng = Lcg(seed);
    // What was stored after the previous kill: each counter's value, and the
    // batch's round (the next writer continues from it).
    let mut counters = [0i64; 4];
    let mut stored_round = 0u64;
    for round in 0..ROUNDS as u64 {
        let acked = run_and_kill(dir.path(), rng.next(300))
            .expect("the writer acknowledged at least one round");
        let rt = runtime(dir.path());
        // At most the round in flight at the kill is extra.
        stored_round = check_after_crash(&rt, round, acked, stored_round, &mut counters, 1).await;
        drop(rt);
    }
}
