//! CL2, CL3, CL5 and CL6 through runtimes: three runtimes of one cluster
//! (etcd and a JetStream server started here) serve each object on one of
//! them, reach it from any of them, and keep every acknowledged write when
//! one leaves or dies.

use std::time::{Duration, Instant};

use do_cluster::ClusterConfig;
use do_replica::ReplicaConfig;
use do_runtime::{Error, Runtime};
use do_tests::etcd::Etcd;
use do_tests::nats::NatsCluster;
use do_tests::{Counter, builder};

const SHARDS: u32 = 16;

/// A runtime on a fresh directory, node `name` of the cluster on `etcd`,
/// replicating to `nats`.
fn node(etcd: &Etcd, nats: &NatsCluster, name: &str) -> (Runtime, tempfile::TempDir) {
    node_with(etcd, nats, name, builder())
}

/// [`node`], from `builder`.
fn node_with(
    etcd: &Etcd,
    nats: &NatsCluster,
    name: &str,
    builder: do_runtime::RuntimeBuilder,
) -> (Runtime, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let rt = builder
        .data_dir(dir.path())
        .replicate(
            ReplicaConfig::new(nats.urls())
                .stream("CLUSTER")
                .replicas(1)
                .shards(SHARDS),
        )
        .cluster(
            ClusterConfig::new(etcd.endpoints(), name, "127.0.0.1:0")
                .lease_ttl(Duration::from_secs(2))
                .shards(SHARDS),
        )
        .build()
        .expect("the node builds");
    (rt, dir)
}

/// Waits (at most 30 s) until `runtimes` serve every shard between them,
/// each where placement puts it.
async fn settled(runtimes: &[&Runtime]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let statuses: Vec<_> = runtimes
            .iter()
            .map(|rt| rt.cluster_status().expect("a member"))
            .collect();
        let served: usize = statuses.iter().map(|s| s.serving.len()).sum();
        let placed = statuses
            .iter()
            .all(|s| s.misplaced == 0 && s.members.len() == runtimes.len());
        if placed && served == SHARDS as usize {
            return;
        }
        assert!(Instant::now() < deadline, "not settled: {statuses:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Calls `call` until it succeeds, through a new stub each time, while the
/// error is retryable (a shard moving, a connection being made).
async fn retried<T, F, Fut>(mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match call().await {
            Ok(value) => return value,
            Err(e) if e.is_retryable() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the call failed for good: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_are_served_once_reached_from_every_runtime_and_survive_a_leave_and_a_death() {
    let etcd = Etcd::start();
    let nats = NatsCluster::start(1);
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let (a, _dir_a) = node_with(
        &etcd,
        &nats,
        "a",
        builder().metrics_recorder(std::sync::Arc::new(recorder)),
    );
    let (b, _dir_b) = node(&etcd, &nats, "b");
    let (c, _dir_c) = node(&etcd, &nats, "c");
    settled(&[&a, &b, &c]).await;
    let names: Vec<String> = (0..30).map(|i| format!("counter-{i}")).collect();
    // Every call goes through a; the objects live on all three.
    for name in &names {
        for _ in 0..3 {
            retried(|| a.namespace::<Counter>().get_by_name(name).increment(1)).await;
        }
    }
    for rt in [&b, &c] {
        for name in &names {
            let value = retried(|| rt.namespace::<Counter>().get_by_name(name).value()).await;
            assert_eq!(value, 3, "{name}");
        }
    }
    // A client of a reaches every object too: those a does not serve
    // through a, which forwards the calls.
    let address = a.cluster_status().unwrap().members[0].address.clone();
    let client = do_runtime::Client::connect(address.as_str()).await.unwrap();
    for name in &names {
        let value = retried(|| async {
            client
                .namespace::<Counter>()?
                .get_by_name(name)
                .value()
                .await
        })
        .await;
        assert_eq!(value, 3, "{name}");
    }
    // a's metrics say so, and what its node did.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // (A snapshot takes the counters' values: one for all.)
    let snapshot = snapshotter.snapshot().into_vec();
    let metric = |name: &str| -> f64 {
        snapshot
            .iter()
            .filter(|(key, _, _, _)| key.key().name() == name)
            .map(|(_, _, _, value)| match value {
                metrics_util::debugging::DebugValue::Counter(n) => *n as f64,
                metrics_util::debugging::DebugValue::Gauge(g) => g.into_inner(),
                _ => 0.0,
            })
            .sum()
    };
    let served = a.cluster_status().unwrap().serving.len() as f64;
    assert!(metric("do_cluster_forwarded_calls_total") >= 1.0);
    assert!(metric("do_cluster_shards_acquired_total") >= served);
    assert!(metric("do_cluster_lease_renewals_total") >= 1.0);
    assert_eq!(metric("do_cluster_shards_served"), served);
    // Each object has one live instance, on the runtime that serves it.
    let live: usize = [&a, &b, &c]
        .iter()
        .map(|rt| rt.stats().live_instances)
        .sum();
    assert_eq!(live, names.len());
    assert!(
        [&a, &b, &c].iter().all(|rt| rt.stats().live_instances > 0),
        "the objects are spread"
    );

    // c leaves on purpose: its shards move at once, with their writes.
    c.shutdown().await;
    settled(&[&a, &b]).await;
    for name in &names {
        let value = retried(|| b.namespace::<Counter>().get_by_name(name).increment(1)).await;
        assert_eq!(value, 4, "{name}");
    }
    // b dies (no leave): once its lease expires, a serves everything.
    drop(b);
    settled(&[&a]).await;
    for name in &names {
        let value = retried(|| a.namespace::<Counter>().get_by_name(name).value()).await;
        assert_eq!(value, 4, "{name}");
    }
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_disk_failed_reads_its_shards_back_from_the_log() {
    let etcd = Etcd::start();
    let nats = NatsCluster::start(1);
    let fail = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (a, _dir) = node_with(&etcd, &nats, "a", builder().__fail_commits(fail.clone()));
    settled(&[&a]).await;
    let counter = || a.namespace::<Counter>().get_by_name("disk");
    assert_eq!(retried(|| counter().increment(1)).await, 1);
    // The log takes the next write; the local disk does not.
    fail.store(1, std::sync::atomic::Ordering::SeqCst);
    let failed = counter().increment(1).await;
    assert!(failed.is_err(), "{failed:?}");
    // The store is reopened, and the node's shards read back from the log:
    // the copy holds what the log took.
    // (Until then, reads may still see the copy before the reopen.)
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let value = counter().value().await.ok();
        if value == Some(2) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the log's write is not in the reopened copy: {value:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(retried(|| counter().increment(1)).await, 3);
    a.shutdown().await;
}
