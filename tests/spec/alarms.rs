//! St9: alarms fire once at or after their time, retry with backoff while
//! they fail, can be set from their handler, survive a real process restart,
//! wake evicted objects, and go with `delete_all`. A manual clock moves time.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use do_runtime::{Error, ManualClock, Stub, TestRuntime};
use do_tests::{Alarmed, alarmed_constructions, builder};

fn clocked() -> (TestRuntime, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let rt = builder()
        .manual_clock(clock.clone())
        .build_for_test()
        .unwrap();
    (rt, clock)
}

/// Waits (in real time) until the object has recorded `n` runs.
async fn runs_reach(stub: &Stub<Alarmed>, n: usize) -> Vec<do_tests::AlarmRun> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let runs = stub.runs().await.unwrap();
        if runs.len() >= n {
            return runs;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} runs of {n} after 20 s: {runs:?}",
            runs.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Gives the scheduler time to (wrongly) run something.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_fires_once_at_or_after_its_time() {
    let (rt, clock) = clocked();
    let stub = rt.namespace::<Alarmed>().get_by_name("once");
    let start = clock.now();
    stub.set_in(10_000).await.unwrap();
    assert!(stub.alarm_at().await.unwrap().is_some());
    clock.advance(Duration::from_millis(9_999));
    settle().await;
    assert!(stub.runs().await.unwrap().is_empty(), "not before its time");
    clock.advance(Duration::from_millis(1));
    let runs = runs_reach(&stub, 1).await;
    let start_ms = start
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert_eq!(runs, [(0, false, start_ms + 10_000)]);
    clock.advance(Duration::from_secs(3600));
    settle().await;
    assert_eq!(stub.runs().await.unwrap().len(), 1, "once");
    assert_eq!(stub.alarm_at().await.unwrap(), None, "a run alarm is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_alarm_is_retried_with_backoff_and_stops_after_six_retries() {
    let (rt, clock) = clocked();
    let stub = rt.namespace::<Alarmed>().get_by_name("failing");
    stub.fail_next(100).await.unwrap();
    stub.set_in(1_000).await.unwrap();
    clock.advance(Duration::from_millis(1_000));
    let mut runs = runs_reach(&stub, 1).await;
    for retry in 1..=6u32 {
        let backoff = 2_000u64 << (retry - 1);
        clock.advance(Duration::from_millis(backoff - 1));
        settle().await;
        assert_eq!(
            stub.runs().await.unwrap().len(),
            retry as usize,
            "retry {retry} waits {backoff} ms"
        );
        clock.advance(Duration::from_millis(1));
        runs = runs_reach(&stub, retry as usize + 1).await;
        let (count, is_retry, at) = runs[retry as usize];
        assert_eq!((count, is_retry), (retry, true));
        assert_eq!(at - runs[retry as usize - 1].2, backoff);
    }
    assert_eq!(runs[0].0, 0);
    assert!(!runs[0].1);
    clock.advance(Duration::from_secs(10_000));
    settle().await;
    assert_eq!(
        stub.runs().await.unwrap().len(),
        7,
        "one run and six retries, no more"
    );
    assert_eq!(stub.alarm_at().await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_alarm_is_retried_too() {
    // The system clock, with a 10 ms backoff.
    let rt = builder()
        .alarm_retries(Duration::from_millis(10), 6)
        .build_for_test()
        .unwrap();
    let ns = rt.namespace::<Alarmed>();
    ns.get_by_name("panicking").panic_next(2).await.unwrap();
    ns.get_by_name("panicking").set_in(0).await.unwrap();
    // Each panic resets the instance and breaks the stubs bound to it: ask
    // with a new stub each time.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let runs = loop {
        if let Ok(runs) = ns.get_by_name("panicking").runs().await
            && !runs.is_empty()
        {
            break runs;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the alarm never succeeded"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(
        runs,
        [(2, true, runs[0].2)],
        "the third run succeeds, as retry 2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_set_inside_its_handler_fires_again() {
    let (rt, clock) = clocked();
    let stub = rt.namespace::<Alarmed>().get_by_name("chained");
    stub.chain(2, 5_000).await.unwrap();
    stub.set_in(5_000).await.unwrap();
    for n in 1..=3 {
        clock.advance(Duration::from_millis(5_000));
        runs_reach(&stub, n).await;
    }
    assert_eq!(stub.alarm_at().await.unwrap(), None, "the chain ended");
    clock.advance(Duration::from_secs(60));
    settle().await;
    assert_eq!(stub.runs().await.unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_wakes_an_evicted_object() {
    let (rt, clock) = clocked();
    let ns = rt.namespace::<Alarmed>();
    let stub = ns.get_by_name("sleeper");
    stub.set_in(1_000).await.unwrap();
    assert!(rt.evict(&ns.id_from_name("sleeper")).await.unwrap());
    assert_eq!(rt.stats().live_instances, 0);
    let built = alarmed_constructions("sleeper");
    clock.advance(Duration::from_millis(1_000));
    // No call reaches the object until the alarm has built it.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while rt.stats().live_instances == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the alarm built nothing"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        alarmed_constructions("sleeper"),
        built + 1,
        "the alarm built a new instance, which knows its name"
    );
    runs_reach(&stub, 1).await;
    assert_eq!(alarmed_constructions("sleeper"), built + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_all_and_delete_alarm_remove_the_alarm() {
    let (rt, clock) = clocked();
    let ns = rt.namespace::<Alarmed>();
    let cleared = ns.get_by_name("cleared");
    cleared.put("k".into(), "v".into()).await.unwrap();
    cleared.set_in(1_000).await.unwrap();
    cleared.clear().await.unwrap();
    assert_eq!(cleared.alarm_at().await.unwrap(), None);
    let deleted = ns.get_by_name("deleted");
    deleted.set_in(1_000).await.unwrap();
    deleted.delete_alarm().await.unwrap();
    // Replacing an alarm keeps only the new one.
    let replaced = ns.get_by_name("replaced");
    replaced.set_in(1_000).await.unwrap();
    replaced.set_in(50_000).await.unwrap();
    clock.advance(Duration::from_millis(2_000));
    settle().await;
    assert!(cleared.runs().await.unwrap().is_empty());
    assert!(deleted.runs().await.unwrap().is_empty());
    assert!(replaced.runs().await.unwrap().is_empty());
    clock.advance(Duration::from_millis(48_000));
    runs_reach(&replaced, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_class_without_a_handler_cannot_set_an_alarm() {
    let rt = builder().build_for_test().unwrap();
    let id = rt.namespace::<do_tests::Counter>().id_from_name("no-alarm");
    let result = rt
        .namespace::<do_tests::Counter>()
        .with_storage(&id, |s| async move { s.set_alarm(SystemTime::now()) })
        .await
        .unwrap();
    assert!(matches!(result, Err(Error::Unsupported(m)) if m.contains("alarm")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_survives_a_process_restart_and_fires_when_overdue() {
    let dir = tempfile::tempdir().unwrap();
    // A child process sets the alarm (acknowledged = durable) and aborts.
    let out = Command::new(env!("CARGO_BIN_EXE_do-tests-child"))
        .arg(dir.path())
        .args(["set-alarm", "restarted", "200"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "set");
    assert!(!out.status.success(), "the child aborted");
    // Let it become overdue while nothing runs.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let rt = builder().data_dir(dir.path()).build().unwrap();
    let stub = rt.namespace::<Alarmed>().get_by_name("restarted");
    let runs = runs_reach(&stub, 1).await;
    assert_eq!(runs.len(), 1);
    assert_eq!(stub.alarm_at().await.unwrap(), None);
}
