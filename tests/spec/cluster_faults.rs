//! CL1–CL6 under faults, the way Jepsen tests them: three runtime processes
//! (`tests/bin/child.rs --cluster`), etcd and three NATS servers, all real
//! and started here. Clients call increments and `put_many` batches on
//! many objects through randomly chosen runtimes and record every
//! acknowledgement, while a nemesis kills runtimes with SIGKILL, pauses
//! one with SIGSTOP past its lease and resumes it, and kills a NATS server.
//! The checker then verifies: no acknowledged write lost, the results of
//! one counter's increments all distinct (two live instances of it would
//! hand out one value twice), no batch seen in part.
//!
//! It runs for 40 s; `DO_CLUSTER_SECS=600 cargo test -p do-tests --test
//! spec cluster_faults -- --nocapture` is the long form.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use do_runtime::{Client, Error};
use do_tests::etcd::Etcd;
use do_tests::nats::NatsCluster;
use do_tests::{Counter, Kv};

const COUNTERS: u64 = 200;
const BATCHES: u64 = 24;
const WORKERS: u64 = 4;
/// How long one call may take before it counts as unknown (its runtime is
/// paused, or dead).
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// A small deterministic generator: a run can be told by its seed.
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// One runtime process, restartable on its directory and port.
struct NodeProcess {
    name: String,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl NodeProcess {
    fn start(&mut self, etcd: &Etcd, nats: &NatsCluster) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("stderr.log"))
            .expect("the node's log opens");
        let mut child = Command::new(env!("CARGO_BIN_EXE_do-tests-child"))
            .arg(self.dir.path().join("data"))
            .args([
                "--cluster",
                &etcd.endpoints().join(","),
                &self.name,
                &self.port.to_string(),
                &nats.urls().join(","),
                "JEPSEN",
            ])
            .env(
                "RUST_LOG",
                std::env::var("DO_NODE_LOG")
                    .unwrap_or_else(|_| "warn,do_cluster=info,do_runtime::cluster=info".into()),
            )
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("the node starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        match lines.next() {
            Some(Ok(line)) if line.starts_with("listening") => {}
            other => panic!(
                "node {} did not start ({other:?}):\n{}",
                self.name,
                self.log_tail()
            ),
        }
        // Keep reading, so the node never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status()
                .expect("kill runs");
            assert!(status.success(), "kill {signal}");
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.signal("-CONT");
        self.kill();
    }
}

/// Clients of the runtimes, one per port, made on first use and made
/// again when one fails to connect.
struct Clients {
    ports: Vec<u16>,
    clients: Mutex<HashMap<u16, Client>>,
}

impl Clients {
    async fn get(&self, port: u16) -> Option<Client> {
        if let Some(client) = self.clients.lock().unwrap().get(&port) {
            return Some(client.clone());
        }
        let connect = Client::connect(("127.0.0.1", port));
        let client = tokio::time::timeout(CALL_TIMEOUT, connect)
            .await
            .ok()?
            .ok()?;
        self.clients.lock().unwrap().insert(port, client.clone());
        Some(client)
    }
}

/// What the clients heard.
#[derive(Default)]
struct History {
    /// Each counter's acknowledged results.
    increments: HashMap<u64, Vec<i64>>,
    /// Each counter's tries whose outcome is unknown (an error or no
    /// answer: it may have been applied).
    unknown: HashMap<u64, i64>,
    /// Each batch object's last acknowledged round, and the rounds tried
    /// since whose outcome is unknown.
    batches: HashMap<u64, (u64, Vec<u64>)>,
    acknowledged: u64,
    failed: u64,
}

/// One client's loop: random calls through random runtimes until `stop`.
async fn client_loop(
    worker: u64,
    clients: Arc<Clients>,
    history: Arc<Mutex<History>>,
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
) {
    let mut dice = Dice(worker * 7919 + 17);
    while !stop.load(Ordering::Acquire) {
        let port = clients.ports[dice.below(clients.ports.len() as u64) as usize];
        let Some(client) = clients.get(port).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        if dice.below(10) < 7 {
            let object = dice.below(COUNTERS);
            let call = async {
                client
                    .namespace::<Counter>()?
                    .get_by_name(&format!("c{object}"))
                    .increment(1)
                    .await
            };
            let outcome = tokio::time::timeout(CALL_TIMEOUT, call).await;
            let mut history = history.lock().unwrap();
            match outcome {
                Ok(Ok(value)) => {
                    history.increments.entry(object).or_default().push(value);
                    history.acknowledged += 1;
                }
                Ok(Err(e)) if !e.is_retryable() => panic!("c{object}: {e}"),
                _ => {
                    *history.unknown.entry(object).or_default() += 1;
                    history.failed += 1;
                }
            }
        } else {
            // Each batch object is this worker's alone: its rounds go up.
            let object = worker + WORKERS * dice.below(BATCHES / WORKERS);
            let round = rounds.fetch_add(1, Ordering::AcqRel) + 1;
            let entries: Vec<(String, String)> = (0..5)
                .map(|k| (format!("k{k}"), round.to_string()))
                .collect();
            let call = async {
                client
                    .namespace::<Kv>()?
                    .get_by_name(&format!("b{object}"))
                    .put_many(entries)
                    .await
            };
            let outcome = tokio::time::timeout(CALL_TIMEOUT, call).await;
            let mut history = history.lock().unwrap();
            match outcome {
                Ok(Ok(())) => {
                    *history.batches.entry(object).or_default() = (round, Vec::new());
                    history.acknowledged += 1;
                }
                Ok(Err(e)) if !e.is_retryable() => panic!("b{object}: {e}"),
                _ => {
                    history.batches.entry(object).or_default().1.push(round);
                    history.failed += 1;
                }
            }
        }
    }
}

/// Calls `call` through any runtime until it succeeds (at most 60 s).
async fn settled_read<T, F, Fut>(clients: &Clients, logs: &dyn Fn() -> String, mut call: F) -> T
where
    F: FnMut(Client) -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut turn = 0;
    loop {
        let port = clients.ports[turn % clients.ports.len()];
        turn += 1;
        let last = match clients.get(port).await {
            Some(client) => match tokio::time::timeout(CALL_TIMEOUT, call(client)).await {
                Ok(Ok(value)) => return value,
                Ok(Err(e)) => format!("through {port}: {e}"),
                Err(_) => format!("through {port}: no answer"),
            },
            None => format!("cannot connect to {port}"),
        };
        assert!(
            Instant::now() < deadline,
            "the cluster did not settle: {last}\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_kills_pauses_and_a_lost_log_server_no_acknowledged_write_is_lost_and_no_object_runs_twice()
 {
    let secs: u64 = std::env::var("DO_CLUSTER_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    eprintln!("cluster_faults: {secs} s, seed {seed}");
    let etcd = Etcd::start();
    let mut nats = NatsCluster::start(3);
    let mut nodes: Vec<NodeProcess> = ["n0", "n1", "n2"]
        .iter()
        .map(|name| {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            NodeProcess {
                name: name.to_string(),
                port,
                dir: tempfile::tempdir().expect("a directory"),
                child: None,
            }
        })
        .collect();
    for node in &mut nodes {
        node.start(&etcd, &nats);
    }
    let clients = Arc::new(Clients {
        ports: nodes.iter().map(|n| n.port).collect(),
        clients: Mutex::new(HashMap::new()),
    });
    let history = Arc::new(Mutex::new(History::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..WORKERS)
        .map(|worker| {
            tokio::spawn(client_loop(
                worker,
                clients.clone(),
                history.clone(),
                stop.clone(),
                rounds.clone(),
            ))
        })
        .collect();

    // The nemesis.
    let mut dice = Dice(seed);
    let end = Instant::now() + Duration::from_secs(secs);
    let mut faults = Vec::new();
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(1500 + dice.below(1500))).await;
        let victim = dice.below(3) as usize;
        match dice.below(3) {
            0 => {
                faults.push(format!("kill -9 {}", nodes[victim].name));
                nodes[victim].kill();
                tokio::time::sleep(Duration::from_millis(500 + dice.below(1500))).await;
                nodes[victim].start(&etcd, &nats);
            }
            1 => {
                // Past its lease (2 s): the others take its shards, and it
                // must commit nothing once resumed.
                faults.push(format!("SIGSTOP {} for 4 s", nodes[victim].name));
                nodes[victim].signal("-STOP");
                tokio::time::sleep(Duration::from_secs(4)).await;
                nodes[victim].signal("-CONT");
            }
            _ => {
                faults.push(format!("kill -9 nats-{victim}"));
                nats.kill(victim);
                tokio::time::sleep(Duration::from_millis(1000 + dice.below(2000))).await;
                nats.restart(victim);
            }
        }
    }
    stop.store(true, Ordering::Release);
    for worker in workers {
        worker.await.expect("a client loop");
    }
    eprintln!("cluster_faults: faults {faults:?}");

    // The checker.
    let logs = || {
        let mut text = String::new();
        for node in &nodes {
            text += &format!("--- node {}:\n{}\n", node.name, node.log_tail());
        }
        for i in 0..3 {
            text += &format!("--- nats-{i}:\n{}\n", nats.log_tail(i));
        }
        text
    };
    let history = std::mem::take(&mut *history.lock().unwrap());
    eprintln!(
        "cluster_faults: {} acknowledged, {} failed or unanswered",
        history.acknowledged, history.failed
    );
    assert!(
        history.acknowledged > 100,
        "the load went on: {} acknowledged",
        history.acknowledged
    );
    for object in 0..COUNTERS {
        let acked = history.increments.get(&object).cloned().unwrap_or_default();
        let unknown = history.unknown.get(&object).copied().unwrap_or(0);
        let name = format!("c{object}");
        let value = settled_read(&clients, &logs, |client| {
            let name = name.clone();
            async move {
                client
                    .namespace::<Counter>()?
                    .get_by_name(&name)
                    .value()
                    .await
            }
        })
        .await;
        let mut sorted = acked.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            acked.len(),
            "{name}: one result handed out twice (two live instances?): {acked:?}"
        );
        let highest = sorted.last().copied().unwrap_or(0);
        assert!(
            value >= highest,
            "{name}: acknowledged {highest}, now {value}: a write was lost"
        );
        assert!(
            value <= acked.len() as i64 + unknown,
            "{name}: {value} is more than the {} acknowledged and {unknown} unknown tries",
            acked.len()
        );
    }
    for (object, (acked, unknown)) in &history.batches {
        let name = format!("b{object}");
        let values = settled_read(&clients, &logs, |client| {
            let name = name.clone();
            async move {
                client
                    .namespace::<Kv>()?
                    .get_by_name(&name)
                    .get_many((0..5).map(|k| format!("k{k}")).collect())
                    .await
            }
        })
        .await;
        let rounds: Vec<u64> = values
            .values()
            .map(|v| v.parse().expect("a round"))
            .collect();
        if *acked > 0 {
            assert_eq!(rounds.len(), 5, "{name}: {values:?}");
        }
        assert!(
            rounds.iter().all(|r| *r == rounds[0]),
            "{name}: a torn batch {values:?}"
        );
        // The last acknowledged round, or one tried since, or before and
        // still in flight then (a call whose outcome is unknown may land
        // late): never an older acknowledged one.
        if let Some(&stored) = rounds.first() {
            assert!(
                stored == *acked || unknown.contains(&stored),
                "{name}: stored round {stored}; acknowledged {acked}, unknown {unknown:?}"
            );
        }
    }
    // Each claim of a shard (one owner's epoch) had one committing owner:
    // every message the log still holds names the node that appended it,
    // beside the claim it was fenced by.
    let writers = do_tests::nats::writers_by_fence(&nats.urls(), "JEPSEN")
        .await
        .expect("the log can be read");
    let names: std::collections::BTreeSet<String> = nodes.iter().map(|n| n.name.clone()).collect();
    for ((claim, fence), by) in &writers {
        assert_eq!(
            by.len(),
            1,
            "{claim} at sequence {fence}: committed by {by:?}, two owners under one claim"
        );
        assert!(
            by.is_subset(&names),
            "{claim} at {fence}: unknown writers {by:?}"
        );
    }
    let shards: std::collections::BTreeSet<&String> =
        writers.keys().map(|(claim, _)| claim).collect();
    eprintln!(
        "cluster_faults: {} claims over {} shards seen in the log, one writer each",
        writers.len(),
        shards.len()
    );
    assert!(
        shards.len() > 1,
        "the log shows the claims of several shards: {writers:?}"
    );
    for node in &mut nodes {
        node.kill();
    }
}
