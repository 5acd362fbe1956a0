//! CL2, CL3, CL5 and CL6 through runtimes: three runtimes of one cluster
//! (etcd and a JetStream server started here) serve each object on one of
//! them, reach it from any of them, and keep every acknowledged write when
//! one leaves or dies.

use std::time::{Duration, Instant};

use do_cluster::ClusterConfig;
use do_replica::ReplicaConfig;
use do_runtime::bytes::Bytes;
use do_runtime::http;
use do_runtime::{Error, ListIds, Runtime};
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

/// The value of counter `name`, read through a remote `client` (retried).
async fn value_through(client: &do_runtime::Client, name: &str) -> i64 {
    retried(|| async {
        client
            .namespace::<Counter>()?
            .get_by_name(name)
            .value()
            .await
    })
    .await
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
        assert_eq!(value_through(&client, name).await, 3, "{name}");
    }
    // Listing reaches every member: each object once, in id order, page
    // by page, from a runtime and from a client of one.
    let mut wanted: Vec<String> = names
        .iter()
        .map(|n| a.namespace::<Counter>().id_from_name(n).to_string())
        .collect();
    wanted.sort();
    let mut listed = Vec::new();
    let mut options = ListIds::new().limit(7);
    loop {
        let counters = a.namespace::<Counter>();
        let page = retried(|| counters.list_ids(options.clone())).await;
        listed.extend(page.objects.iter().map(|o| o.id.to_string()));
        match page.cursor {
            Some(cursor) => options = ListIds::new().limit(7).cursor(&cursor),
            None => break,
        }
    }
    assert_eq!(listed, wanted, "a's listing of the cluster");
    let page = retried(|| async {
        client
            .namespace::<Counter>()?
            .list_ids(ListIds::new().limit(1000))
            .await
    })
    .await;
    let through_client: Vec<String> = page.objects.iter().map(|o| o.id.to_string()).collect();
    assert_eq!(through_client, wanted, "the listing through a client of a");
    assert!(
        page.objects
            .iter()
            .all(|o| o.has_stored_data && o.name.is_some()),
        "{page:?}"
    );
    // The admin API shows the cluster as do-cli does.
    let gateway = a.gateway().admin("s3cret").start().await.unwrap();
    let request = http::Request::get("/admin/cluster")
        .header("host", "gateway")
        .header("authorization", "Bearer s3cret")
        .body(Bytes::new())
        .unwrap();
    let response = do_tests::client::http(gateway.local_addr(), request).await;
    assert_eq!(response.status(), http::StatusCode::OK);
    let view: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
    assert_eq!(view["shards"], SHARDS);
    assert_eq!(view["members"].as_array().map(Vec::len), Some(3), "{view}");
    assert_eq!(
        view["owners"].as_array().map(Vec::len),
        Some(SHARDS as usize),
        "{view}"
    );
    let owned: u64 = view["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["owned"].as_u64().unwrap())
        .sum();
    assert_eq!(owned, u64::from(SHARDS), "{view}");
    // Spans say which node they were recorded on: the forwarding node's
    // call span, the serving node's handle span.
    let served_by_b = names
        .iter()
        .find(|n| {
            let id = b.namespace::<Counter>().id_from_name(n);
            b.cluster_status()
                .unwrap()
                .serving
                .contains(&do_replica::shard_of(
                    &id.as_bytes()[..16].try_into().unwrap(),
                    SHARDS,
                ))
        })
        .expect("b serves one of the objects");
    let id = a.namespace::<Counter>().id_from_name(served_by_b);
    let short = id.to_string()[..16].to_owned();
    do_tests::capture::watch(&short);
    retried(|| a.namespace::<Counter>().get_by_name(served_by_b).value()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let spans = do_tests::capture::spans_of(&short);
        let recorded = |target: &str, node: &str| {
            spans.iter().any(|s| {
                s.target == target
                    && s.fields.get("method").map(String::as_str) == Some("value")
                    && s.fields.get("node").map(String::as_str) == Some(node)
            })
        };
        if recorded("do_runtime::call", "a") && recorded("do_runtime::handle", "b") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "spans without their nodes: {spans:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_of_a_cluster_with_a_token_forward_to_each_other_and_refuse_clients_without_it() {
    let etcd = Etcd::start();
    let nats = NatsCluster::start(1);
    let with_token = |name: &str| {
        let dir = tempfile::tempdir().unwrap();
        let rt = builder()
            .data_dir(dir.path())
            .replicate(
                ReplicaConfig::new(nats.urls())
                    .stream("TOKENS")
                    .replicas(1)
                    .shards(SHARDS),
            )
            .cluster(
                ClusterConfig::new(etcd.endpoints(), name, "127.0.0.1:0")
                    .prefix("tokens")
                    .lease_ttl(Duration::from_secs(2))
                    .shards(SHARDS)
                    .token("a-cluster-secret"),
            )
            .build()
            .expect("the node builds");
        (rt, dir)
    };
    let (a, _dir_a) = with_token("a");
    let (b, _dir_b) = with_token("b");
    settled(&[&a, &b]).await;
    // Both serve some objects, and a reaches b's through its token.
    let names: Vec<String> = (0..20).map(|i| format!("secret-{i}")).collect();
    for name in &names {
        assert_eq!(
            retried(|| a.namespace::<Counter>().get_by_name(name).increment(1)).await,
            1
        );
    }
    assert!(b.stats().live_instances > 0, "some objects live on b");
    // A client must present the token.
    let address = a.cluster_status().unwrap().members[0].address.clone();
    let refused = do_runtime::Client::connect(address.as_str()).await;
    assert!(refused.is_err(), "a client without the token was let in");
    let client = do_runtime::Client::builder()
        .token("a-cluster-secret")
        .connect(address.as_str())
        .await
        .unwrap();
    for name in &names {
        assert_eq!(value_through(&client, name).await, 1, "{name}");
    }
    // Its Debug never shows the secret.
    let config = ClusterConfig::new(["http://x"], "n", "h:1").token("hidden-value");
    assert!(!format!("{config:?}").contains("hidden-value"));
    a.shutdown().await;
    b.shutdown().await;
}
