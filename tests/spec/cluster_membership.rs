//! CL1, CL2, CL5 and CL6 at the membership layer (`do-cluster`), against
//! a real etcd started here (see `do_tests::etcd`): nodes hold leases,
//! split the shards by placement, hand them over when one joins or leaves,
//! take a dead one's after its lease expires, and a node that cannot renew
//! its lease stops serving before it could expire.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use do_cluster::{BoxFuture, ClusterConfig, ClusterError, Host, Node, Route, placed};
use do_tests::etcd::Etcd;

/// What a host was told, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Told {
    Acquire(u32, u64),
    Drain(u32),
    Lost(u32),
}

/// A host that takes every shard at once and records what it was told,
/// with when.
#[derive(Default)]
struct Recorder {
    told: Mutex<Vec<(Instant, Told)>>,
}

impl Recorder {
    fn told(&self) -> Vec<(Instant, Told)> {
        self.told.lock().unwrap().clone()
    }
}

impl Host for Recorder {
    fn acquire(&self, shards: Vec<(u32, u64)>) -> BoxFuture<'_, Vec<Result<(), String>>> {
        let now = Instant::now();
        let mut told = self.told.lock().unwrap();
        let outcomes = shards
            .iter()
            .map(|&(shard, epoch)| {
                told.push((now, Told::Acquire(shard, epoch)));
                Ok(())
            })
            .collect();
        Box::pin(async move { outcomes })
    }

    fn drain(&self, shards: Vec<u32>) -> BoxFuture<'_, ()> {
        let now = Instant::now();
        let mut told = self.told.lock().unwrap();
        told.extend(shards.into_iter().map(|shard| (now, Told::Drain(shard))));
        Box::pin(async {})
    }

    fn lost(&self, shards: &[u32]) {
        let now = Instant::now();
        let mut told = self.told.lock().unwrap();
        told.extend(shards.iter().map(|&shard| (now, Told::Lost(shard))));
    }
}

const SHARDS: u32 = 64;

fn config(etcd: &Etcd, name: &str) -> ClusterConfig {
    ClusterConfig::new(etcd.endpoints(), name, format!("{name}.test:7000"))
        .lease_ttl(Duration::from_secs(2))
        .shards(SHARDS)
}

async fn join(etcd: &Etcd, name: &str) -> (Node, Arc<Recorder>) {
    let host = Arc::new(Recorder::default());
    let node = Node::join(config(etcd, name), host.clone())
        .await
        .expect("the node joins");
    (node, host)
}

/// The shards each node serves, by name.
fn serving(nodes: &[&Node]) -> BTreeMap<String, BTreeSet<u32>> {
    nodes
        .iter()
        .map(|node| {
            let serves = (0..SHARDS).filter(|&s| node.serves(s).is_some()).collect();
            (node.config().node.clone(), serves)
        })
        .collect()
}

/// What placement gives each of `names`.
fn placement(names: &[&str]) -> BTreeMap<String, BTreeSet<u32>> {
    names
        .iter()
        .map(|name| (name.to_string(), placed(SHARDS, names, name)))
        .collect()
}

/// Waits (at most 30 s) until the nodes serve exactly what placement over
/// `names` gives them.
async fn settled(nodes: &[&Node], names: &[&str]) {
    let wanted = placement(names);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = serving(nodes);
        if now == wanted {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not settled: serving {now:?}, placement {wanted:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Each shard's epoch as its owner serves it.
fn epochs(nodes: &[&Node]) -> BTreeMap<u32, u64> {
    let mut epochs = BTreeMap::new();
    for node in nodes {
        for shard in 0..SHARDS {
            if let Some(epoch) = node.serves(shard) {
                assert!(
                    epochs.insert(shard, epoch).is_none(),
                    "shard {shard} served twice"
                );
            }
        }
    }
    epochs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_split_the_shards_by_placement_and_route_to_each_other() {
    let etcd = Etcd::start();
    let (a, _) = join(&etcd, "a").await;
    let (b, _) = join(&etcd, "b").await;
    let (c, _) = join(&etcd, "c").await;
    settled(&[&a, &b, &c], &["a", "b", "c"]).await;
    let epochs = epochs(&[&a, &b, &c]);
    assert_eq!(epochs.len(), SHARDS as usize, "every shard has one owner");
    assert!(epochs.values().all(|&e| e > 0));
    // Another node's shard routes to its address; one's own is here.
    let of_b = *placed(SHARDS, &["a", "b", "c"], "b").first().unwrap();
    assert_eq!(
        a.route(of_b),
        Route::There {
            node: "b".into(),
            address: "b.test:7000".into()
        }
    );
    assert_eq!(
        b.route(of_b),
        Route::Here {
            epoch: epochs[&of_b]
        }
    );
    // What an operator sees, from etcd alone.
    let endpoints = etcd.endpoints().join(",");
    let args = [
        "do-cli", "cluster", "status", "--etcd", &endpoints, "--shards",
    ];
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = do_cli::run(args, &mut std::io::empty(), &mut out, &mut err);
        (
            code,
            String::from_utf8_lossy(&out).into_owned(),
            String::from_utf8_lossy(&err).into_owned(),
        )
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some("cluster \"do\": 64 shards, 3 members, 0 unowned, 0 misplaced")
    );
    lines.next();
    for name in ["a", "b", "c"] {
        let line = lines.next().unwrap_or_default();
        let words: Vec<&str> = line.split_whitespace().collect();
        let share = placed(SHARDS, &["a", "b", "c"], name).len().to_string();
        assert_eq!(
            words,
            [name, &format!("{name}.test:7000"), &share, &share],
            "{out}"
        );
    }
    lines.next();
    let shard_of_b = format!("{of_b} b {}", epochs[&of_b]);
    assert!(
        lines.any(|line| line.split_whitespace().collect::<Vec<_>>().join(" ") == shard_of_b),
        "{out}"
    );
    let status = a.status();
    assert_eq!(status.members.len(), 3);
    assert_eq!(status.owners.len(), SHARDS as usize);
    assert_eq!(status.misplaced, 0);
    assert_eq!(
        status.serving,
        placed(SHARDS, &["a", "b", "c"], "a")
            .into_iter()
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_takes_only_its_share_each_shard_drained_before_it_moves() {
    let etcd = Etcd::start();
    let (a, host_a) = join(&etcd, "a").await;
    let (b, host_b) = join(&etcd, "b").await;
    settled(&[&a, &b], &["a", "b"]).await;
    let before = epochs(&[&a, &b]);
    let joined = Instant::now();
    let (c, host_c) = join(&etcd, "c").await;
    settled(&[&a, &b, &c], &["a", "b", "c"]).await;
    let after = epochs(&[&a, &b, &c]);
    let moved = placed(SHARDS, &["a", "b", "c"], "c");
    for shard in 0..SHARDS {
        if moved.contains(&shard) {
            assert!(after[&shard] > before[&shard], "a new owner, a newer epoch");
        } else {
            assert_eq!(after[&shard], before[&shard], "shard {shard} did not move");
        }
    }
    // Every shard the newcomer took was drained by its owner first.
    let drained: BTreeMap<u32, Instant> = host_a
        .told()
        .into_iter()
        .chain(host_b.told())
        .filter_map(|(at, told)| match told {
            Told::Drain(shard) if at >= joined => Some((shard, at)),
            _ => None,
        })
        .collect();
    assert_eq!(drained.keys().copied().collect::<BTreeSet<_>>(), moved);
    for (at, told) in host_c.told() {
        if let Told::Acquire(shard, _) = told {
            assert!(
                drained[&shard] <= at,
                "shard {shard} acquired before drained"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaving_node_hands_its_shards_over_and_a_dead_ones_move_after_its_lease() {
    let etcd = Etcd::start();
    let (a, _) = join(&etcd, "a").await;
    let (b, _) = join(&etcd, "b").await;
    let (c, _) = join(&etcd, "c").await;
    settled(&[&a, &b, &c], &["a", "b", "c"]).await;
    // Leaving on purpose: its shards move at once (no lease to wait out).
    c.leave().await.expect("c leaves");
    settled(&[&a, &b], &["a", "b"]).await;
    // Dying (no more renewals, no release): its lease expires, then the
    // others take its shards.
    drop(b);
    settled(&[&a], &["a"]).await;
    let counts = a.counts();
    assert!(counts.renewals > 0, "{counts:?}");
    assert_eq!(counts.lost, 0, "{counts:?}");
    assert_eq!(
        counts.acquired - counts.released,
        u64::from(SHARDS),
        "{counts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_cannot_renew_its_lease_stops_serving_before_it_expires_then_comes_back() {
    let mut etcd = Etcd::start();
    let (a, host) = join(&etcd, "a").await;
    settled(&[&a], &["a"]).await;
    let before = epochs(&[&a]);
    // etcd is gone: no renewal can be answered. The node stops serving on
    // its own, and tells its host every shard is lost.
    etcd.kill();
    let deadline = Instant::now() + Duration::from_secs(20);
    while (0..SHARDS).any(|s| a.serves(s).is_some()) {
        assert!(Instant::now() < deadline, "still serving without a lease");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lost: BTreeSet<u32> = host
        .told()
        .into_iter()
        .filter_map(|(_, told)| match told {
            Told::Lost(shard) => Some(shard),
            _ => None,
        })
        .collect();
    assert_eq!(lost.len(), SHARDS as usize);
    assert_eq!(a.counts().lapses, 1);
    // etcd is back: the node joins again under a new lease and serves its
    // shards at newer epochs.
    etcd.restart();
    settled(&[&a], &["a"]).await;
    let after = epochs(&[&a]);
    assert!(before.iter().all(|(shard, epoch)| after[shard] > *epoch));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_does_not_fit_the_cluster_is_refused_saying_why() {
    let etcd = Etcd::start();
    let (_a, _) = join(&etcd, "a").await;
    let other_count = Node::join(
        config(&etcd, "b").shards(SHARDS * 2),
        Arc::new(Recorder::default()),
    )
    .await;
    assert!(
        matches!(&other_count, Err(ClusterError::Refused(why)) if why.contains("shards")),
        "{other_count:?}"
    );
    let same_name = Node::join(config(&etcd, "a"), Arc::new(Recorder::default())).await;
    assert!(
        matches!(&same_name, Err(ClusterError::Refused(why)) if why.contains("named")),
        "{same_name:?}"
    );
    let nowhere = Node::join(
        ClusterConfig::new(["http://127.0.0.1:1"], "x", "x:1").timeout(Duration::from_millis(500)),
        Arc::new(Recorder::default()),
    )
    .await;
    assert!(
        nowhere.as_ref().is_err_and(ClusterError::is_retryable),
        "{nowhere:?}"
    );
}
