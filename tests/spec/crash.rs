//! St5: an acknowledged write survives `kill -9`; no batch is ever visible in part.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use do_runtime::ListOptions;
use do_tests::{Counter, Kv, runtime};

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
    for round in 0..ROUNDS {
        let acked = run_and_kill(dir.path(), rng.next(300))
            .expect("the writer acknowledged at least one round");
        assert!(acked > stored_round, "round {round}: acks go forward");
        let acks_now = (acked - stored_round) as i64;

        let rt = runtime(dir.path());
        let batch = rt.namespace::<Kv>().get_by_name("batch");
        let values: Vec<String> = batch
            .get_many((0..10).map(|k| format!("k{k}")).collect())
            .await
            .unwrap()
            .into_values()
            .collect();
        assert_eq!(
            values.len(),
            10,
            "round {round}: the batch has all ten keys"
        );
        assert!(
            values.iter().all(|v| *v == values[0]),
            "round {round}: torn batch {values:?}"
        );
        let stored: u64 = values[0].parse().unwrap();
        assert!(
            stored == acked || stored == acked + 1,
            "round {round}: acknowledged {acked}, stored {stored}"
        );
        assert_eq!(batch.keys(ListOptions::new()).await.unwrap().len(), 10);

        for (i, name) in ["c0", "c1", "c2", "c3"].iter().enumerate() {
            let v = rt
                .namespace::<Counter>()
                .get_by_name(name)
                .value()
                .await
                .unwrap();
            let floor = counters[i] + acks_now;
            // Every acknowledged increment is there; at most the one in flight at the kill is extra.
            assert!(
                v == floor || v == floor + 1,
                "round {round}: counter {name} is {v}, acknowledged floor {floor}"
            );
            counters[i] = v;
        }
        stored_round = stored;
        drop(rt);
    }
}
