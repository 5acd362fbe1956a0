//! RP3, RP4 and RP5 at the log: the replicated log on a real 3-server
//! JetStream cluster (started here, see `do_tests::nats`). Fencing is the
//! server's, batches are whole or absent, the log keeps each key's newest
//! write only, and losing one server loses nothing acknowledged.

use do_replica::{Entry, Interrupt, Log, ObjectWrites, ReplicaConfig, ReplicaError};
use do_tests::nats::NatsCluster;

/// A log on `cluster`'s stream `stream`, for epoch `epoch`, with `shards`
/// shards, claimed.
async fn log(cluster: &NatsCluster, stream: &str, epoch: u64, shards: u32) -> Log {
    let config = ReplicaConfig::new(cluster.urls())
        .stream(stream)
        .replicas(3)
        .shards(shards)
        .epoch(epoch);
    let log = Log::open(config).await.expect("the log opens");
    log.claim_all().await.expect("the shards are claimed");
    log
}

fn id(n: u8) -> [u8; 16] {
    [n; 16]
}

/// A batch of `writes` to object `id` of class `C`, without alarm or name.
fn batch<'a>(id: [u8; 16], writes: Vec<(&'a [u8], Option<&'a [u8]>)>) -> ObjectWrites<'a> {
    ObjectWrites {
        class: "C",
        id,
        writes,
        alarm: None,
        name: None,
    }
}

/// One write of `key` = `value` to object `n` of class `C`.
fn put<'a>(n: u8, key: &'a str, value: &'a [u8]) -> ObjectWrites<'a> {
    batch(id(n), vec![(key.as_bytes(), Some(value))])
}

/// Everything the log holds, as (object, key) → value.
async fn contents(log: &Log) -> std::collections::BTreeMap<(u8, String), Option<Vec<u8>>> {
    let mut seen = std::collections::BTreeMap::new();
    log.read(0, None, |_, entry| {
        if let Entry::Write { id, key, value, .. } = entry {
            seen.insert((id[0], String::from_utf8_lossy(&key).into_owned()), value);
        }
        Ok(())
    })
    .await
    .expect("the log reads");
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_epoch_is_refused_by_the_server_and_nothing_it_appends_after_the_newer_claim_is_visible()
 {
    let cluster = NatsCluster::start(3);
    let old = log(&cluster, "FENCE", 1, 4).await;
    let outcomes = old
        .append(&[put(1, "a", b"old-1"), put(2, "b", b"old-2")])
        .await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    // A newer epoch claims every shard.
    let new = log(&cluster, "FENCE", 2, 4).await;
    // The old writer still believes it holds them: the server refuses it,
    // batch by batch, shard by shard.
    assert!(old.holds(old.shard_of(&id(1))));
    let refused = old
        .append(&[put(1, "a", b"zombie"), put(3, "c", b"zombie")])
        .await;
    for outcome in &refused {
        assert!(
            matches!(outcome, Err(ReplicaError::Fenced { .. })),
            "{refused:?}"
        );
    }
    assert!(!old.holds(old.shard_of(&id(1))), "a refused writer lets go");
    let accepted = new.append(&[put(2, "b", b"new-2")]).await;
    assert!(accepted[0].is_ok(), "{accepted:?}");
    let seen = contents(&new).await;
    assert_eq!(seen[&(1, "a".into())].as_deref(), Some(&b"old-1"[..]));
    assert_eq!(seen[&(2, "b".into())].as_deref(), Some(&b"new-2"[..]));
    assert!(
        !seen.contains_key(&(3, "c".into())),
        "nothing of a refused batch is in the log: {seen:?}"
    );
    // Another process given the same epoch (a restart) takes the shards
    // over from the one before: the old one's appends are refused.
    let restarted = log(&cluster, "FENCE", 2, 4).await;
    assert!(matches!(
        new.append(&[put(2, "b", b"from-the-old-process")]).await[0],
        Err(ReplicaError::Fenced { .. })
    ));
    assert!(restarted.append(&[put(2, "b", b"new-3")]).await[0].is_ok());
    // An older epoch cannot claim back what a newer one holds.
    let config = ReplicaConfig::new(cluster.urls())
        .stream("FENCE")
        .shards(4)
        .epoch(1);
    let stale = Log::open(config).await.expect("the log opens");
    assert!(matches!(
        stale.claim_all().await,
        Err(ReplicaError::StaleEpoch {
            ours: 1,
            current: 2,
            ..
        })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_128_keys_of_128_kib_is_appended_whole_and_read_back_whole() {
    let cluster = NatsCluster::start(3);
    let log = log(&cluster, "LARGE", 1, 8).await;
    let value = vec![7u8; 128 * 1024];
    let keys: Vec<String> = (0..128).map(|k| format!("k{k:03}")).collect();
    let big = ObjectWrites {
        class: "C",
        id: id(9),
        writes: keys
            .iter()
            .map(|k| (k.as_bytes(), Some(&value[..])))
            .collect(),
        alarm: Some(Some((1_700_000_000_000, 2))),
        name: Some("big"),
    };
    let outcome = log.append(std::slice::from_ref(&big)).await;
    assert!(outcome[0].is_ok(), "{outcome:?}");
    let mut writes = 0;
    let mut alarm = None;
    let mut name = None;
    log.read(0, None, |_, entry| {
        match entry {
            Entry::Write { value: v, .. } => {
                assert_eq!(v.as_deref(), Some(&value[..]));
                writes += 1;
            }
            Entry::Alarm { at, .. } => alarm = at,
            Entry::Name { name: n, .. } => name = Some(n),
        }
        Ok(())
    })
    .await
    .expect("the log reads");
    assert_eq!(writes, 128);
    assert_eq!(alarm, Some((1_700_000_000_000, 2)));
    assert_eq!(name.as_deref(), Some("big"));
}

/// Object `n`'s values of `keys` in `seen`, as text.
fn values_of(
    seen: &std::collections::BTreeMap<(u8, String), Option<Vec<u8>>>,
    n: u8,
) -> std::collections::BTreeMap<String, Option<String>> {
    seen.iter()
        .filter(|((object, _), _)| *object == n)
        .map(|((_, key), value)| {
            let value = value
                .as_ref()
                .map(|v| String::from_utf8_lossy(v).into_owned());
            (key.clone(), value)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_objects_batch_past_one_atomic_append_is_whole_or_absent_even_when_its_writer_dies_midway()
 {
    let cluster = NatsCluster::start(3);
    let old = log(&cluster, "STAGED", 1, 4).await;
    let keys: Vec<String> = (0..2500).map(|k| format!("m{k:04}")).collect();
    let all = |n: u8, value: Option<&'static [u8]>| {
        batch(id(n), keys.iter().map(|k| (k.as_bytes(), value)).collect())
    };
    let every = |value: Option<&str>| -> std::collections::BTreeMap<String, Option<String>> {
        keys.iter()
            .map(|k| (k.clone(), value.map(str::to_owned)))
            .collect()
    };
    // 2 500 writes in one batch (past one atomic append), and a later
    // batch of the same object in the same append, which builds on it.
    let after = batch(id(1), vec![(b"m0000", Some(&b"after"[..]))]);
    let outcome = old.append(&[all(1, Some(b"one")), after]).await;
    let (Ok(first), Ok(second)) = (&outcome[0], &outcome[1]) else {
        panic!("{outcome:?}");
    };
    assert!(first < second, "{outcome:?}");
    let mut expected = every(Some("one"));
    expected.insert("m0000".into(), Some("after".into()));
    assert_eq!(values_of(&contents(&old).await, 1), expected);
    // Finished: the keys, the finished commit and the epoch markers are
    // all the stream holds; the stage is gone.
    assert_eq!(old.message_count().await.unwrap(), 2500 + 1 + 4);

    // A writer that dies with its stage in the log, before its commit:
    // nothing of that batch is ever read.
    old.interrupt_staged(Interrupt::BeforeCommit);
    let outcome = old.append(&[all(1, Some(b"two"))]).await;
    assert!(outcome[0].is_err(), "{outcome:?}");
    assert_eq!(values_of(&contents(&old).await, 1), expected);
    // A writer that dies once its commit is in, before it writes the keys'
    // own subjects: the batch is read whole, from its stage.
    old.interrupt_staged(Interrupt::AfterCommit);
    let outcome = old.append(&[all(2, Some(b"three"))]).await;
    assert!(outcome[0].is_ok(), "{outcome:?}");
    assert_eq!(values_of(&contents(&old).await, 2), every(Some("three")));

    // The next writer of the shards finishes the committed batch and
    // purges the stage never committed, before it appends anything.
    let new = log(&cluster, "STAGED", 2, 4).await;
    assert_eq!(new.message_count().await.unwrap(), 2500 + 2500 + 2 + 4);
    let seen = contents(&new).await;
    assert_eq!(values_of(&seen, 1), expected);
    assert_eq!(values_of(&seen, 2), every(Some("three")));
    // A delete of every key in one batch is staged the same way.
    let outcome = new.append(&[all(2, None)]).await;
    assert!(outcome[0].is_ok(), "{outcome:?}");
    assert_eq!(values_of(&contents(&new).await, 2), every(None));
    // And the writer it replaced is fenced, staged or not.
    old.interrupt_staged(Interrupt::Never);
    let outcome = old.append(&[all(1, Some(b"stale"))]).await;
    assert!(
        matches!(outcome[0], Err(ReplicaError::Fenced { .. })),
        "{outcome:?}"
    );
    assert_eq!(values_of(&contents(&new).await, 1), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_keeps_each_keys_newest_write_only_so_a_read_costs_the_objects_size() {
    let cluster = NatsCluster::start(3);
    let log = log(&cluster, "COMPACT", 1, 4).await;
    // 10 keys of 2 objects, each written 100 times, and one key deleted.
    for round in 0..100u32 {
        let value = round.to_be_bytes();
        let keys: Vec<String> = (0..10).map(|k| format!("k{k}")).collect();
        let batches: Vec<ObjectWrites> = [1u8, 2]
            .iter()
            .map(|&n| {
                batch(
                    id(n),
                    keys.iter()
                        .map(|k| (k.as_bytes(), Some(&value[..])))
                        .collect(),
                )
            })
            .collect();
        let outcomes = log.append(&batches).await;
        assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    }
    let deleted = batch(id(1), vec![(b"k0", None)]);
    assert!(log.append(&[deleted]).await[0].is_ok());
    // 20 keys and the 4 shards' epoch markers: nothing older.
    assert_eq!(log.message_count().await.unwrap(), 24);
    let seen = contents(&log).await;
    assert_eq!(seen.len(), 20);
    assert_eq!(
        seen[&(1, "k0".into())],
        None,
        "the delete is the newest write"
    );
    assert_eq!(
        seen[&(2, "k9".into())].as_deref(),
        Some(&99u32.to_be_bytes()[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_one_of_three_servers_loses_no_acknowledged_append_and_appends_go_on() {
    let mut cluster = NatsCluster::start(3);
    let log = log(&cluster, "SURVIVE", 1, 8).await;
    let mut acknowledged = std::collections::BTreeMap::new();
    let mut refused = 0;
    for round in 0..60u32 {
        if round == 20 {
            cluster.kill(0);
        }
        let value = round.to_be_bytes();
        let key = format!("k{}", round % 7);
        let outcome = log.append(&[put((round % 5) as u8, &key, &value)]).await;
        match &outcome[0] {
            Ok(_) => {
                acknowledged.insert(((round % 5) as u8, key), value.to_vec());
            }
            // During the election: retryable, and the append may or may
            // not have landed.
            Err(e) => {
                assert!(e.is_retryable(), "{e}");
                refused += 1;
            }
        }
    }
    assert!(
        acknowledged.len() >= 20,
        "appends go on with two servers ({refused} refused)"
    );
    let seen = contents(&log).await;
    for ((n, key), value) in &acknowledged {
        // A later append to the same key that failed ambiguously may have
        // landed; an acknowledged one is never lost behind an older value.
        let found = seen.get(&(*n, key.clone())).cloned().flatten();
        let found = found.expect("an acknowledged key is in the log");
        assert!(
            u32::from_be_bytes(found[..4].try_into().unwrap())
                >= u32::from_be_bytes(value[..4].try_into().unwrap()),
            "{n} {key}: {found:?} is older than the acknowledged {value:?}"
        );
    }
}

// RP1, RP2 and RP4 through a runtime: `RuntimeBuilder::replicate`.

use do_runtime::{DisconnectReason, Error, ListIds, Runtime};
use do_tests::crash_check::check_after_crash;
use do_tests::{Counter, Kv, builder, eventually};

/// A runtime on `dir`, replicating to `cluster`'s stream `stream` with
/// `epoch`.
fn replicated(
    cluster: &NatsCluster,
    dir: &std::path::Path,
    stream: &str,
    epoch: u64,
) -> Result<Runtime, Error> {
    builder()
        .data_dir(dir)
        .replicate(
            ReplicaConfig::new(cluster.urls())
                .stream(stream)
                .replicas(3)
                .shards(16)
                .epoch(epoch),
        )
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_on_an_empty_data_directory_serves_every_acknowledged_write_from_the_log_alone() {
    let cluster = NatsCluster::start(3);
    let first = tempfile::tempdir().unwrap();
    let rt = replicated(&cluster, first.path(), "RESTORE", 1).unwrap();
    let counters = rt.namespace::<Counter>();
    for name in ["a", "b", "c"] {
        for _ in 0..10 {
            counters.get_by_name(name).increment(1).await.unwrap();
        }
    }
    let kv = rt.namespace::<Kv>().get_by_name("shelf");
    let entries: Vec<(String, String)> = (0..50)
        .map(|i| (format!("k{i:02}"), format!("v{i}")))
        .collect();
    kv.put_many(entries).await.unwrap();
    kv.delete_many(vec!["k00".into(), "k01".into()])
        .await
        .unwrap();
    let acknowledged_keys = kv.keys(Default::default()).await.unwrap();
    assert_eq!(acknowledged_keys.len(), 48);
    rt.shutdown().await;
    // The machine and its disk are gone: a new runtime on an empty
    // directory, with a newer epoch, has only the log.
    drop(first);
    let second = tempfile::tempdir().unwrap();
    let rt = replicated(&cluster, second.path(), "RESTORE", 2).unwrap();
    let counters = rt.namespace::<Counter>();
    for name in ["a", "b", "c"] {
        assert_eq!(
            counters.get_by_name(name).value().await.unwrap(),
            10,
            "{name}"
        );
    }
    let kv = rt.namespace::<Kv>().get_by_name("shelf");
    assert_eq!(
        kv.keys(Default::default()).await.unwrap(),
        acknowledged_keys
    );
    let values = kv.get_many(vec!["k02".into(), "k49".into()]).await.unwrap();
    assert_eq!(values["k49"], "v49");
    // Named objects are listed with their names.
    let listed = rt
        .namespace::<Counter>()
        .list_ids(ListIds::new())
        .await
        .unwrap();
    let mut names: Vec<String> = listed
        .objects
        .iter()
        .filter_map(|entry| entry.name.clone())
        .collect();
    names.sort();
    assert_eq!(names, ["a", "b", "c"]);
    // And it goes on writing to the log.
    assert_eq!(counters.get_by_name("a").increment(5).await.unwrap(), 15);
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_all_of_more_keys_than_one_atomic_append_holds_is_replicated_whole() {
    let cluster = NatsCluster::start(3);
    let first = tempfile::tempdir().unwrap();
    let rt = replicated(&cluster, first.path(), "WIDE", 1).unwrap();
    let kv = rt.namespace::<Kv>().get_by_name("wide");
    let keys: Vec<String> = (0..1300).map(|i| format!("k{i:04}")).collect();
    for chunk in keys.chunks(100) {
        let entries = chunk
            .iter()
            .map(|k| (k.clone(), format!("v-{k}")))
            .collect();
        kv.put_many(entries).await.unwrap();
    }
    // 1 300 deletes in one commit: more than one atomic append holds.
    kv.delete_all().await.unwrap();
    kv.put_many(vec![("kept".into(), "yes".into())])
        .await
        .unwrap();
    rt.shutdown().await;
    drop(first);
    // Only the log is left: it has the delete whole, and what came after.
    let second = tempfile::tempdir().unwrap();
    let rt = replicated(&cluster, second.path(), "WIDE", 2).unwrap();
    let kv = rt.namespace::<Kv>().get_by_name("wide");
    assert_eq!(kv.keys(Default::default()).await.unwrap(), ["kept"]);
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_whose_write_the_log_could_not_take_goes_on_once_the_log_is_back() {
    let cluster = NatsCluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let rt = builder()
        .data_dir(dir.path())
        .replicate(
            ReplicaConfig::new(cluster.urls())
                .stream("OUTAGE")
                .replicas(3)
                .shards(4),
        )
        .build()
        .unwrap();
    let counters = rt.namespace::<Counter>();
    assert_eq!(counters.get_by_name("busy").increment(1).await.unwrap(), 1);
    // The log certainly does not take the next write: its caller is told
    // so, retryably.
    do_tests::nats::refuse_next_appends("OUTAGE", 1);
    let refused = counters.get_by_name("busy").increment(1).await.unwrap_err();
    assert!(refused.is_retryable(), "{refused}");
    // The object, kept busy (never evicted), takes writes again on a new
    // stub, and holds exactly what was acknowledged.
    for expected in 2..=5 {
        let value = counters.get_by_name("busy").increment(1).await;
        assert_eq!(
            value.as_ref().ok(),
            Some(&expected),
            "the object does not take writes again: {value:?}"
        );
    }
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_let_go_in_doubt_is_read_back_and_takes_writes_again_without_a_restart() {
    let mut cluster = NatsCluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let urls = cluster.urls();
    let config = || {
        ReplicaConfig::new(urls.clone())
            .stream("DOUBTFUL")
            .replicas(3)
            .shards(4)
    };
    let rt = builder()
        .data_dir(dir.path())
        // An append in doubt is settled within 4 × 1 s: the outage below
        // outlasts that, so its shard is let go.
        .replicate(config().timeout(std::time::Duration::from_secs(1)))
        .build()
        .unwrap();
    let counters = rt.namespace::<Counter>();
    assert_eq!(
        counters.get_by_name("doubted").increment(1).await.unwrap(),
        1
    );
    cluster.kill(1);
    cluster.kill(2);
    let stub = counters.get_by_name("doubted");
    let failing = tokio::spawn(async move { stub.increment(1).await });
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    let failed = failing.await.unwrap().unwrap_err();
    assert!(failed.is_retryable(), "{failed}");
    cluster.restart_all(&[1, 2]);
    // The log is back: the shard is read back from it (the write in doubt
    // may be there) and takes writes again, in this same runtime.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let value = loop {
        match counters.get_by_name("doubted").increment(1).await {
            Ok(value) => break value,
            Err(e) if e.is_retryable() && std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the shard does not take writes again: {e}"),
        }
    };
    assert!(value == 2 || value == 3, "{value}");
    rt.shutdown().await;
    // And the log agrees with what this runtime acknowledged.
    let fresh = tempfile::tempdir().unwrap();
    let reader = builder()
        .data_dir(fresh.path())
        .replicate(config().epoch(2))
        .build()
        .unwrap();
    let read = reader
        .namespace::<Counter>()
        .get_by_name("doubted")
        .value()
        .await
        .unwrap();
    assert_eq!(read, value);
    reader.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_whose_disk_failed_reads_back_from_the_log_what_the_disk_missed() {
    let cluster = NatsCluster::start(1);
    let dir = tempfile::tempdir().unwrap();
    let fail = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let rt = builder()
        .data_dir(dir.path())
        .__fail_commits(fail.clone())
        .replicate(
            ReplicaConfig::new(cluster.urls())
                .stream("DISK")
                .replicas(1)
                .shards(4),
        )
        .build()
        .unwrap();
    let counters = rt.namespace::<Counter>();
    assert_eq!(counters.get_by_name("disk").increment(1).await.unwrap(), 1);
    // The log takes the next write; the local disk does not.
    fail.store(1, std::sync::atomic::Ordering::SeqCst);
    let failed = counters.get_by_name("disk").increment(1).await;
    assert!(failed.is_err(), "{failed:?}");
    // The store is reopened and reads back what the log holds past it
    // (until then, reads may still see the copy before the reopen).
    eventually("the log's write is in the reopened copy", || async {
        let value = counters.get_by_name("disk").value().await.ok();
        (value == Some(2)).then_some(())
    })
    .await;
    assert_eq!(counters.get_by_name("disk").increment(1).await.unwrap(), 3);
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_whose_epoch_is_overtaken_has_its_writes_refused_by_the_server_and_its_instance_reset()
 {
    let cluster = NatsCluster::start(3);
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let old = replicated(&cluster, one.path(), "ZOMBIE", 1).unwrap();
    let stale = old.namespace::<Counter>().get_by_name("contested");
    assert_eq!(stale.increment(1).await.unwrap(), 1);
    // A newer runtime takes every shard over (as after a failover).
    let new = replicated(&cluster, two.path(), "ZOMBIE", 2).unwrap();
    let current = new.namespace::<Counter>().get_by_name("contested");
    assert_eq!(current.value().await.unwrap(), 1);
    // The old one's write is refused by the log's server: typed and
    // retryable, and its instance is reset.
    let refused = stale.increment(100).await.unwrap_err();
    assert_eq!(
        refused.disconnect_reason(),
        Some(DisconnectReason::Unreplicated),
        "{refused}"
    );
    assert!(refused.is_retryable());
    assert_eq!(current.increment(1).await.unwrap(), 2);
    // Nothing the old one wrote after the new one began is visible, even
    // to a third runtime reading the log alone.
    let three = tempfile::tempdir().unwrap();
    new.shutdown().await;
    let reader = replicated(&cluster, three.path(), "ZOMBIE", 3).unwrap();
    let value = reader
        .namespace::<Counter>()
        .get_by_name("contested")
        .value()
        .await
        .unwrap();
    assert_eq!(value, 2);
    // A runtime older than the log's epoch does not start.
    let four = tempfile::tempdir().unwrap();
    match replicated(&cluster, four.path(), "ZOMBIE", 2) {
        Err(Error::Setup(message)) => assert!(message.contains("epoch"), "{message}"),
        other => panic!("expected a setup error, got {:?}", other.map(|_| ())),
    }
    old.shutdown().await;
    reader.shutdown().await;
}

// RP5 with real processes: the writer is killed with SIGKILL and its data
// directory deleted (the machine and its disk are lost); some rounds also
// kill one of the three log servers while it writes.

/// The writer's acknowledged rounds and its tries, read from its output.
#[derive(Default)]
struct Heard {
    acked: Option<u64>,
    tries: u64,
}

/// Runs the replicated crash writer on `dir` with `epoch` until it has
/// acknowledged a round, lets it run `extra_ms` longer (killing log server
/// `kill_server` meanwhile, if given), then kills it with SIGKILL.
fn run_replicated_and_kill(
    cluster: &mut NatsCluster,
    dir: &std::path::Path,
    epoch: u64,
    extra_ms: u64,
    kill_server: Option<usize>,
) -> Heard {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};
    let mut child = Command::new(env!("CARGO_BIN_EXE_do-tests-child"))
        .arg(dir)
        .args([
            "--replicate",
            &cluster.urls().join(","),
            "CRASH",
            &epoch.to_string(),
        ])
        .arg("crash-writer")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the child starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            tx.send(line).ok();
        }
    });
    let mut heard = Heard::default();
    let hear = |line: String, heard: &mut Heard| {
        if let Some(n) = line.strip_prefix("ack ") {
            heard.acked = Some(n.parse().expect("ack N"));
        } else if line.starts_with("try ") {
            heard.tries += 1;
        }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while heard.acked.is_none() && Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            hear(line, &mut heard);
        }
    }
    if let Some(server) = kill_server {
        cluster.kill(server);
    }
    let until = Instant::now() + Duration::from_millis(extra_ms);
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => hear(line, &mut heard),
            Err(_) => break,
        }
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    reader.join().expect("reader");
    for line in rx.try_iter() {
        hear(line, &mut heard);
    }
    heard
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_the_loss_of_the_writers_machine_and_disk_and_of_a_log_server()
{
    let rounds: u64 = std::env::var("DO_REPLICATION_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(20);
    let mut cluster = NatsCluster::start(3);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("replicated crash test seed {seed}");
    let mut rng = seed;
    let mut next = |below: u64| {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (rng >> 33) % below
    };
    let mut counters = [0i64; 4];
    let mut stored_round = 0u64;
    for round in 0..rounds {
        // Every fourth round loses one of the log's servers too.
        let kill_server = (round % 4 == 1).then_some((round / 4 % 3) as usize);
        let disk = tempfile::tempdir().unwrap();
        let heard = run_replicated_and_kill(
            &mut cluster,
            disk.path(),
            2 * round + 1,
            next(300),
            kill_server,
        );
        // The machine is gone with its disk.
        drop(disk);
        let acked = heard
            .acked
            .expect("the writer acknowledged at least one round");
        let fresh = tempfile::tempdir().unwrap();
        let rt = replicated(&cluster, fresh.path(), "CRASH", 2 * round + 2).unwrap();
        // A try that was not acknowledged (the one in flight at the kill,
        // one the log refused) may be there too.
        let unacknowledged = heard.tries as i64 - (acked - stored_round) as i64;
        let stored = check_after_crash(
            &rt,
            round,
            acked,
            stored_round,
            &mut counters,
            unacknowledged,
        )
        .await;
        eprintln!(
            "round {round}: acknowledged {acked}, stored {stored}, {} tries, server killed: {kill_server:?}",
            heard.tries
        );
        stored_round = stored;
        rt.shutdown().await;
        if let Some(server) = kill_server {
            cluster.restart(server);
        }
    }
}

/// `do-cli` with `args`, in process (on a thread that may block): its
/// exit code and what it printed.
async fn cli(args: &[&str]) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = do_cli::run(
            std::iter::once("do-cli".to_owned()).chain(args),
            &mut std::io::empty(),
            &mut out,
            &mut err,
        );
        (
            code,
            String::from_utf8_lossy(&out).into_owned(),
            String::from_utf8_lossy(&err).into_owned(),
        )
    })
    .await
    .expect("do-cli ran")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn do_cli_rebuilds_a_data_directory_from_the_log_without_fencing_its_writer() {
    let cluster = NatsCluster::start(3);
    let (live, copy) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let writer = replicated(&cluster, live.path(), "REBUILD", 1).unwrap();
    let counter = writer.namespace::<Counter>().get_by_name("n");
    for _ in 0..7 {
        counter.increment(1).await.unwrap();
    }
    let urls = cluster.urls().join(",");
    let copy_dir = copy.path().to_str().unwrap().to_owned();
    let rebuild = [
        "--data", &copy_dir, "rebuild", "--nats", &urls, "--stream", "REBUILD", "--shards", "16",
    ];
    let (code, out, err) = cli(&rebuild).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("rebuilt"), "{out}");
    // The writer was not fenced: it goes on.
    assert_eq!(counter.increment(1).await.unwrap(), 8);
    // A rebuild of the same directory reads only the tail it lacks.
    let (code, out, err) = cli(&rebuild).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("from 1 entries"), "{out}");
    // The copy opens as an ordinary data directory, with the log's ids.
    writer.shutdown().await;
    let rt = do_tests::runtime(copy.path());
    assert_eq!(
        rt.namespace::<Counter>()
            .get_by_name("n")
            .value()
            .await
            .unwrap(),
        8
    );
    rt.shutdown().await;
    // A log nobody wrote has nothing to rebuild from: a clear error.
    let empty = tempfile::tempdir().unwrap();
    let empty_dir = empty.path().to_str().unwrap().to_owned();
    let (code, _, err) = cli(&[
        "--data", &empty_dir, "rebuild", "--nats", &urls, "--stream", "NOBODY", "--shards", "16",
    ])
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("no deployment secret"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_claimed_by_a_newer_epoch_fails_alone_and_each_shard_has_an_epoch_of_its_own() {
    let cluster = NatsCluster::start(3);
    let old = log(&cluster, "PARTIAL", 1, 4).await;
    // Objects on two different shards.
    let (mut a, mut b) = (id(0), id(0));
    a[3] = 1;
    b[3] = 2;
    assert_ne!(old.shard_of(&a), old.shard_of(&b));
    // A newer writer claims only a's shard.
    let config = ReplicaConfig::new(cluster.urls())
        .stream("PARTIAL")
        .shards(4)
        .epoch(2);
    let new = Log::open(config).await.unwrap();
    new.claim(&[new.shard_of(&a)]).await.unwrap();
    let write = |id: [u8; 16]| batch(id, vec![(b"k", Some(&b"old"[..]))]);
    // One append of both: the old writer's batch on a's shard is refused,
    // the other goes through.
    let outcomes = old.append(&[write(a), write(b)]).await;
    assert!(
        matches!(outcomes[0], Err(ReplicaError::Fenced { .. })),
        "{outcomes:?}"
    );
    assert!(outcomes[1].is_ok(), "{outcomes:?}");
    assert!(!old.holds(old.shard_of(&a)));
    assert!(old.holds(old.shard_of(&b)));
    let mut seen = Vec::new();
    new.read(0, None, |_, entry| {
        if let Entry::Write { id, .. } = entry {
            seen.push(id);
        }
        Ok(())
    })
    .await
    .unwrap();
    assert_eq!(
        seen,
        vec![b],
        "only the batch of the shard still held is in the log"
    );
    // Each shard has an epoch of its own (in a cluster, its owner key's
    // revision in etcd): b's shard at 7 fences the old writer there too.
    let shard_b = new.shard_of(&b);
    new.claim_at(&[(shard_b, 7)]).await.unwrap();
    assert_eq!(new.epoch_of(shard_b), Some(7));
    let outcomes = old.append(&[write(b)]).await;
    assert!(
        matches!(outcomes[0], Err(ReplicaError::Fenced { .. })),
        "{outcomes:?}"
    );
    assert!(new.append(&[write(b)]).await[0].is_ok());
    // An older epoch can never claim it back.
    let config = ReplicaConfig::new(cluster.urls())
        .stream("PARTIAL")
        .shards(4);
    let older = Log::open(config).await.unwrap();
    let refused = older.claim_at(&[(shard_b, 5)]).await;
    assert!(
        matches!(
            refused,
            Err(ReplicaError::StaleEpoch {
                ours: 5,
                current: 7,
                ..
            })
        ),
        "{refused:?}"
    );
    // A shard let go takes no more appends from this writer.
    new.release(&[shard_b]);
    assert_eq!(new.epoch_of(shard_b), None);
    let outcomes = new.append(&[write(b)]).await;
    assert!(
        matches!(outcomes[0], Err(ReplicaError::Fenced { .. })),
        "{outcomes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_whose_acknowledgement_is_lost_is_settled_so_that_its_outcome_matches_the_log() {
    let mut cluster = NatsCluster::start(3);
    let config = ReplicaConfig::new(cluster.urls())
        .stream("DOUBT")
        .shards(4)
        .timeout(std::time::Duration::from_secs(5));
    let log = std::sync::Arc::new(Log::open(config).await.unwrap());
    log.claim_all().await.unwrap();
    assert!(log.append(&[put(1, "k", b"before")]).await[0].is_ok());
    // No quorum: the append cannot be acknowledged in time (5 s); the
    // servers are back well within the time it is settled in (4 × 5 s),
    // even on a busy machine.
    cluster.kill(1);
    cluster.kill(2);
    let appending = tokio::spawn({
        let log = log.clone();
        async move { log.append(&[put(1, "k", b"during")]).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    cluster.restart_all(&[1, 2]);
    let outcome = appending.await.unwrap().remove(0);
    eprintln!("the append in doubt settled as {outcome:?}");
    let seen = contents(&log).await;
    let stored = seen[&(1, "k".into())].clone();
    match &outcome {
        Ok(_) => assert_eq!(
            stored.as_deref(),
            Some(&b"during"[..]),
            "acknowledged, so in the log"
        ),
        Err(e) => {
            assert!(e.is_retryable(), "{e}");
            assert_eq!(
                stored.as_deref(),
                Some(&b"before"[..]),
                "refused ({e}), so never in the log"
            );
        }
    }
    // The shard is still this writer's, and appends go on.
    assert!(log.holds(log.shard_of(&id(1))));
    assert!(log.append(&[put(1, "k", b"after")]).await[0].is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_marks_of_deleted_keys_leave_the_log_after_their_ttl_so_deletes_do_not_grow_it() {
    let cluster = NatsCluster::start(3);
    let config = ReplicaConfig::new(cluster.urls())
        .stream("TOMBSTONES")
        .shards(4)
        .tombstone_ttl(std::time::Duration::from_secs(1));
    let log = Log::open(config).await.unwrap();
    log.claim_all().await.unwrap();
    // A queue's worth of unique keys, each written once and deleted.
    let keys: Vec<String> = (0..50).map(|k| format!("job-{k}")).collect();
    let written = batch(
        id(4),
        keys.iter()
            .map(|k| (k.as_bytes(), Some(&b"v"[..])))
            .collect(),
    );
    assert!(log.append(&[written]).await[0].is_ok());
    let deleted = batch(id(4), keys.iter().map(|k| (k.as_bytes(), None)).collect());
    assert!(log.append(&[deleted]).await[0].is_ok());
    // The 4 epoch markers and the 50 tombstones…
    assert_eq!(log.message_count().await.unwrap(), 54);
    // …and once their TTL has passed, the markers only.
    eventually("the tombstones expire", || async {
        (log.message_count().await.unwrap() == 4).then_some(())
    })
    .await;
    assert!(contents(&log).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_further_behind_the_log_than_its_tombstones_live_is_refused_rather_than_caught_up() {
    let cluster = NatsCluster::start(3);
    let dir = tempfile::tempdir().unwrap();
    let start = || {
        builder()
            .data_dir(dir.path())
            .replicate(
                ReplicaConfig::new(cluster.urls())
                    .stream("BEHIND")
                    .shards(4)
                    .tombstone_ttl(std::time::Duration::from_secs(2)),
            )
            .build()
    };
    let rt = start().unwrap();
    rt.namespace::<Counter>()
        .get_by_name("n")
        .increment(1)
        .await
        .unwrap();
    rt.shutdown().await;
    // Longer than the tombstones live: deletes made meanwhile could be gone.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    match start() {
        Err(Error::Setup(message)) => assert!(message.contains("miss deletes"), "{message}"),
        other => panic!("expected a setup error, got {:?}", other.map(|_| ())),
    }
    // An empty directory reads everything from the log.
    let fresh = tempfile::tempdir().unwrap();
    let rt = builder()
        .data_dir(fresh.path())
        .replicate(
            ReplicaConfig::new(cluster.urls())
                .stream("BEHIND")
                .shards(4)
                .epoch(2),
        )
        .build()
        .unwrap();
    assert_eq!(
        rt.namespace::<Counter>()
            .get_by_name("n")
            .value()
            .await
            .unwrap(),
        1
    );
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_of_the_log_names_the_one_writer_of_each_claim() {
    let cluster = NatsCluster::start(1);
    let named = |epoch: u64, writer: &str| {
        ReplicaConfig::new(cluster.urls())
            .stream("AUDIT")
            .replicas(1)
            .shards(1)
            .epoch(epoch)
            .writer(writer)
    };
    let first = Log::open(named(1, "first")).await.unwrap();
    first.claim_all().await.unwrap();
    assert!(first.append(&[put(1, "a", b"1")]).await[0].is_ok());
    let second = Log::open(named(2, "second")).await.unwrap();
    second.claim_all().await.unwrap();
    assert!(second.append(&[put(2, "b", b"2")]).await[0].is_ok());
    // The first writer's late append is refused: it leaves no trace.
    assert!(first.append(&[put(3, "c", b"3")]).await[0].is_err());
    let audit = do_tests::nats::writers_by_fence(&cluster.urls(), "AUDIT")
        .await
        .unwrap();
    let writers: Vec<Vec<String>> = audit
        .values()
        .map(|w| w.iter().cloned().collect())
        .collect();
    assert_eq!(
        writers,
        vec![vec!["first".to_owned()], vec!["second".to_owned()]],
        "two claims of the one shard, each with its writer: {audit:?}"
    );
}
