//! The cluster (`RuntimeBuilder::cluster`) on an etcd and NATS JetStream
//! started here: what a call forwarded by a non-owner costs beside one
//! straight to the owner and beside a remote client's call; how long the
//! shards of a runtime killed with `kill -9` go unserved; and durable
//! increments on three runtimes beside one.
//!
//! The failover rounds kill real processes: this binary run as
//! `do-bench --node …` (see [`node_main`]).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use do_cluster::testing::Etcd;
use do_replica::testing::NatsCluster;
use do_runtime::{
    Client, ClusterConfig, ReplicaConfig, Runtime, RuntimeBuilder, Stub, inspect_cluster,
};

use crate::durable::{Counter, closed_loop};
use crate::harness::{Config, Outcome, Series, Unit, interleave, percentile};
use crate::remote::Tally;

/// The shard count of the in-process benchmarks.
const SHARDS: u32 = 16;

/// A node `name` of the cluster under `prefix` on `etcd`, replicating to
/// stream `stream` on `nats` with `replicas`.
fn node(
    builder: RuntimeBuilder,
    dir: &std::path::Path,
    etcd: &Etcd,
    nats: &NatsCluster,
    (prefix, name): (&str, &str),
    (stream, replicas): (&str, usize),
) -> Runtime {
    builder
        .data_dir(dir)
        .replicate(
            ReplicaConfig::new(nats.urls())
                .stream(stream)
                .replicas(replicas)
                .shards(SHARDS),
        )
        .cluster(
            ClusterConfig::new(etcd.endpoints(), name, "127.0.0.1:0")
                .prefix(prefix)
                .shards(SHARDS),
        )
        .build()
        .expect("the bench node builds")
}

/// Waits (at most 60 s) until the cluster under `prefix` has `members`
/// members and every shard is owned where placement puts it.
async fn settled(etcd: &[String], prefix: &str, members: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let view = inspect_cluster(etcd, prefix, Duration::from_secs(2)).await;
        if let Ok(view) = &view
            && view.shards.is_some()
            && view.members.len() == members
            && view.unowned == 0
            && view.misplaced == 0
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the cluster never settled: {view:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (at most 60 s) until each of `runtimes` sees them all as members,
/// with every shard served by one of them where placement puts it.
async fn serving(runtimes: &[&Runtime]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let statuses: Vec<_> = runtimes
            .iter()
            .map(|rt| rt.cluster_status().expect("a cluster member"))
            .collect();
        let served: usize = statuses.iter().map(|s| s.serving.len()).sum();
        if served == SHARDS as usize
            && statuses
                .iter()
                .all(|s| s.misplaced == 0 && s.members.len() == runtimes.len())
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the cluster never settled: {statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A stub made by `make` whose first call (`probe`) went through: a stub
/// made before its node reached the object's node fails retryably for
/// good, so new ones are made until then (at most 30 s).
async fn working<T, F, Fut>(make: &dyn Fn() -> Stub<T>, probe: F) -> Stub<T>
where
    T: do_runtime::DurableObject,
    F: Fn(Stub<T>) -> Fut,
    Fut: std::future::Future<Output = Result<(), do_runtime::Error>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stub = make();
        match probe(stub.clone()).await {
            Ok(()) => return stub,
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("no call reaches the object: {e}"),
        }
    }
}

/// The first half of an id: what its shard comes from.
fn base(id: &do_runtime::DurableObjectId) -> [u8; 16] {
    let mut base = [0; 16];
    base.copy_from_slice(&id.as_bytes()[..16]);
    base
}

/// The address `rt` serves its cluster peers and clients on.
fn address(rt: &Runtime) -> String {
    let status = rt.cluster_status().expect("a cluster member");
    status
        .members
        .iter()
        .find(|m| m.name == status.node)
        .map(|m| m.address.clone())
        .expect("the node is among its members")
}

/// p50 latency of a sequential call on `stub`-like calls `call` for
/// `duration`, on the callers' runtime.
fn sequential_p50<F, Fut>(tokio: &tokio::runtime::Runtime, duration: Duration, call: F) -> f64
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio.block_on(async move {
        tokio::spawn(async move {
            let mut lat = Vec::new();
            let until = Instant::now() + duration;
            while Instant::now() < until {
                let t = Instant::now();
                call().await;
                lat.push(t.elapsed());
            }
            percentile(&mut lat, 50.0)
        })
        .await
        .expect("the caller task")
    })
}

/// One caller, sequential, in-memory calls on an object served by runtime
/// b: through a stub made on runtime a (a forwards to b), beside a stub
/// made on b, a remote client of b (`remote-1`'s path) and a remote client
/// of a (two hops).
pub fn forwarding(config: &Config) -> Outcome {
    let tokio = crate::harness::callers();
    let etcd = Etcd::start();
    let nats = NatsCluster::start(1);
    let dirs = [(); 2].map(|_| tempfile::tempdir().expect("tempdir"));
    let [a, b] = [0, 1].map(|i| {
        let builder = Runtime::builder().register::<Tally>();
        let name = ["a", "b"][i];
        node(
            builder,
            dirs[i].path(),
            &etcd,
            &nats,
            ("fwd", name),
            ("FWD", 1),
        )
    });
    tokio.block_on(serving(&[&a, &b]));
    // An object whose shard b serves.
    let served = b.cluster_status().expect("a member").serving;
    let ns = b.namespace::<Tally>();
    let name = (0..)
        .map(|i| format!("fwd-{i}"))
        .find(|n| served.contains(&do_replica::shard_of(&base(&ns.id_from_name(n)), SHARDS)))
        .expect("b serves a shard");
    let (to_b, to_a) = tokio.block_on(async {
        let b = Client::connect(address(&b).as_str())
            .await
            .expect("a client of b");
        let a = Client::connect(address(&a).as_str())
            .await
            .expect("a client of a");
        (b, a)
    });
    let d = config.duration;
    let tokio = &tokio;
    let add = |stub: Stub<Tally>| async move { stub.add(0).await.map(drop) };
    let working = |make: &dyn Fn() -> Stub<Tally>| tokio.block_on(working(make, add));
    let stub_a = working(&|| a.namespace::<Tally>().get_by_name(&name));
    let stub_b = working(&|| b.namespace::<Tally>().get_by_name(&name));
    let remote_b = working(&|| to_b.namespace::<Tally>().expect("Tally").get_by_name(&name));
    let remote_a = working(&|| to_a.namespace::<Tally>().expect("Tally").get_by_name(&name));
    macro_rules! p50 {
        ($stub:expr) => {{
            let stub = $stub.clone();
            move || {
                let stub = stub.clone();
                sequential_p50(tokio, d, move || {
                    let call = stub.add(1);
                    async move {
                        call.await.expect("add");
                    }
                })
            }
        }};
    }
    let series = interleave(
        config,
        &mut [
            (
                "stub on a non-owner, forwarded p50",
                Unit::Micros,
                &mut p50!(stub_a),
            ),
            (
                "remote client of the owner (remote-1) p50",
                Unit::Micros,
                &mut p50!(remote_b),
            ),
            ("stub on the owner p50", Unit::Micros, &mut p50!(stub_b)),
            (
                "remote client of a non-owner, two hops p50",
                Unit::Micros,
                &mut p50!(remote_a),
            ),
        ],
    );
    let added = series[0].median() / series[1].median() - 1.0;
    drop((a, b));
    Outcome {
        scenario: "cluster: a call forwarded by a non-owner",
        series,
        target: format!(
            "forwarding adds ≤ 30 % to remote-1's latency (now {:+.0} %)",
            added * 100.0
        ),
        met: Some(added <= 0.30),
    }
}

/// Durable (replicated, 3 replicas) increments on 100 objects by 300
/// callers: spread over the 3 runtimes of one cluster (each caller on one
/// runtime, most calls forwarded), beside all on a cluster of 1 runtime.
pub fn three_against_one(config: &Config) -> Outcome {
    const OBJECTS: usize = 100;
    const CALLERS: usize = 300;
    let tokio = crate::harness::callers();
    let etcd = Etcd::start();
    let nats = NatsCluster::start(3);
    let dirs = [(); 4].map(|_| tempfile::tempdir().expect("tempdir"));
    let builder = || Runtime::builder().register::<Counter>();
    let three: Vec<Runtime> = ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            node(
                builder(),
                dirs[i].path(),
                &etcd,
                &nats,
                ("three", name),
                ("THREE", 3),
            )
        })
        .collect();
    let one = node(
        builder(),
        dirs[3].path(),
        &etcd,
        &nats,
        ("one", "solo"),
        ("ONE", 3),
    );
    tokio.block_on(serving(&three.iter().collect::<Vec<_>>()));
    tokio.block_on(serving(&[&one]));
    let d = config.duration;
    let tokio = &tokio;
    let run = |runtimes: &[&Runtime]| {
        let increment = |stub: Stub<Counter>| async move { stub.increment(0).await.map(drop) };
        let stubs: Arc<Vec<_>> = Arc::new(
            (0..CALLERS)
                .map(|i| {
                    let make = || {
                        runtimes[i % runtimes.len()]
                            .namespace::<Counter>()
                            .get_by_name(&format!("o{}", i % OBJECTS))
                    };
                    tokio.block_on(working(&make, increment))
                })
                .collect(),
        );
        move || {
            let stubs = stubs.clone();
            tokio.block_on(closed_loop(CALLERS, d, move |i| {
                let call = stubs[i].increment(1);
                async move {
                    call.await.expect("increment");
                }
            }))
        }
    };
    let series = interleave(
        config,
        &mut [
            (
                "3 runtimes",
                Unit::OpsPerSec,
                &mut run(&three.iter().collect::<Vec<_>>()),
            ),
            ("1 runtime", Unit::OpsPerSec, &mut run(&[&one])),
        ],
    );
    let ratio = series[0].median() / series[1].median();
    drop((three, one));
    Outcome {
        scenario: "cluster: durable increments, 100 objects × 300 callers, 3 runtimes vs 1",
        series,
        target: format!("reported: one 2-core machine runs all 3 (now {ratio:.2}×)"),
        met: None,
    }
}

/// The settings of the failover rounds' nodes.
struct Nodes {
    etcd: Vec<String>,
    nats: Vec<String>,
    shards: u32,
    ttl: Duration,
    dir: tempfile::TempDir,
}

impl Nodes {
    /// Starts node `name` on `port` (a fresh directory each time: the log
    /// has every acknowledged write) and waits until it says it listens.
    fn spawn(&self, name: &str, port: u16, round: usize) -> Child {
        let exe = std::env::current_exe().expect("this binary's path");
        let dir = self.dir.path().join(format!("{name}-{round}"));
        let mut child = Command::new(exe)
            .arg("--node")
            .args([
                self.etcd.join(","),
                name.to_owned(),
                port.to_string(),
                self.nats.join(","),
                self.shards.to_string(),
                self.ttl.as_millis().to_string(),
            ])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the node process starts");
        let stdout = child.stdout.take().expect("its stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the node says it listens");
        assert!(line.starts_with("listening"), "the node said {line:?}");
        child
    }
}

/// Runs a node of the failover rounds until killed:
/// `ETCD NAME PORT NATS SHARDS TTL_MS DIR`.
pub fn node_main(args: &[String]) {
    let [etcd, name, port, nats, shards, ttl, dir] = args else {
        eprintln!("usage: do-bench --node ETCD NAME PORT NATS SHARDS TTL_MS DIR");
        std::process::exit(2);
    };
    let number = |s: &str| -> u64 {
        s.parse().unwrap_or_else(|_| {
            eprintln!("{s:?} is not a number");
            std::process::exit(2)
        })
    };
    let shards = number(shards) as u32;
    let rt = Runtime::builder()
        .register::<Counter>()
        .data_dir(dir)
        .replicate(
            ReplicaConfig::new(nats.split(','))
                .stream("FAILOVER")
                .replicas(3)
                .shards(shards),
        )
        .cluster(
            ClusterConfig::new(etcd.split(','), name.as_str(), format!("127.0.0.1:{port}"))
                .prefix("failover")
                .lease_ttl(Duration::from_millis(number(ttl)))
                .shards(shards),
        )
        .build()
        .unwrap_or_else(|e| {
            eprintln!("the node does not build: {e}");
            std::process::exit(1)
        });
    println!("listening {port}");
    loop {
        std::thread::park();
        let _ = &rt;
    }
}

/// `kills` rounds: a node of three is killed with `kill -9` while every
/// object has been called; the time until each object answers a call made
/// through a survivor (the time its shard goes unserved) is one sample per
/// round, the slowest object's. The killed node then comes back, and the
/// cluster settles before the next round. Quick runs: a lease of 2 s, 16
/// shards, 1 kill; else the defaults (5 s, 1 024 shards) and 20 kills.
pub fn failover(config: &Config) -> Outcome {
    let quick = config.duration < Duration::from_millis(500);
    let (ttl, shards, kills) = if quick {
        (Duration::from_secs(2), 16, 1)
    } else {
        (Duration::from_secs(5), 1024, 20)
    };
    let tokio = crate::harness::callers();
    let etcd = Etcd::start();
    let nats = NatsCluster::start(3);
    let nodes = Nodes {
        etcd: etcd.endpoints(),
        nats: nats.urls(),
        shards,
        ttl,
        dir: tempfile::tempdir().expect("tempdir"),
    };
    let names = ["a", "b", "c"];
    let ports: Vec<u16> = {
        let held: Vec<_> = (0..3)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port"))
            .collect();
        held.iter()
            .map(|l| l.local_addr().expect("an address").port())
            .collect()
    };
    let mut running: Vec<Child> = (0..3).map(|i| nodes.spawn(names[i], ports[i], 0)).collect();
    tokio.block_on(settled(&nodes.etcd, "failover", 3));
    let objects: Vec<String> = (0..48).map(|i| format!("f{i}")).collect();
    // Each object's last acknowledged value: never seen to go back.
    let mut last: BTreeMap<String, i64> = BTreeMap::new();
    let mut samples = Vec::new();
    for round in 0..kills {
        let victim = round % 3;
        let survivor = format!("127.0.0.1:{}", ports[(victim + 1) % 3]);
        let times = tokio.block_on(async {
            let client = Client::connect(survivor.as_str()).await.expect("a client");
            // Every object answers before the kill.
            for name in &objects {
                let value = increment_retried(&client, name, Instant::now()).await.1;
                check(&mut last, name, value);
            }
            let mut node = running.remove(victim);
            node.kill().expect("kill -9");
            let killed = Instant::now();
            let _ = node.wait();
            let calls: Vec<_> = objects
                .iter()
                .map(|name| {
                    let (client, name) = (client.clone(), name.clone());
                    tokio::spawn(async move {
                        (
                            name.clone(),
                            increment_retried(&client, &name, killed).await,
                        )
                    })
                })
                .collect();
            let mut times = Vec::new();
            for call in calls {
                times.push(call.await.expect("the caller task"));
            }
            times
        });
        let mut slowest = Duration::ZERO;
        for (name, (took, value)) in times {
            check(&mut last, &name, value);
            slowest = slowest.max(took);
        }
        eprintln!("failover round {round}: {} ms", slowest.as_millis());
        samples.push(slowest.as_secs_f64() * 1e3);
        running.insert(victim, nodes.spawn(names[victim], ports[victim], round + 1));
        tokio.block_on(settled(&nodes.etcd, "failover", 3));
    }
    for mut node in running {
        let _ = node.kill();
        let _ = node.wait();
    }
    let series = vec![
        Series {
            label: format!("failover, {kills} kills of 3 nodes, {shards} shards"),
            unit: Unit::Millis,
            samples: samples.clone(),
        },
        Series {
            label: "lease TTL (context)".into(),
            unit: Unit::Millis,
            samples: vec![ttl.as_secs_f64() * 1e3],
        },
    ];
    let max = series[0].max();
    let bound = (ttl + Duration::from_secs(2)).as_secs_f64() * 1e3;
    Outcome {
        scenario: "cluster: failover after kill -9 of an owner",
        series,
        target: format!("max ≤ TTL + 2 s = {bound:.0} ms (max {max:.0} ms)"),
        met: Some(max <= bound),
    }
}

/// Increments `name` through `client` until a call succeeds (each attempt
/// on a new stub, as a caller whose stub broke does); returns the time
/// since `since` and the value.
async fn increment_retried(client: &Client, name: &str, since: Instant) -> (Duration, i64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let result = async {
            client
                .namespace::<Counter>()?
                .get_by_name(name)
                .increment(1)
                .await
        }
        .await;
        match result {
            Ok(value) => return (since.elapsed(), value),
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("an increment of {name} failed for good: {e}"),
        }
    }
}

/// Records `value` as `name`'s newest acknowledged value: an acknowledged
/// increment is never lost, so values only grow.
fn check(last: &mut BTreeMap<String, i64>, name: &str, value: i64) {
    let before = last.insert(name.to_owned(), value).unwrap_or(0);
    assert!(
        value > before,
        "{name}: {value} after {before}: an acknowledged write was lost"
    );
}
