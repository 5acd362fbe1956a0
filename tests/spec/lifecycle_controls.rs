//! B3: lifecycle controls an object uses on itself.

use std::time::Duration;

use do_runtime::{Client, DisconnectReason, Error};
use do_tests::{Aborter, Chores, builder, eventually};

fn aborted(result: &Result<impl std::fmt::Debug, Error>) -> bool {
    matches!(result, Err(e) if e.disconnect_reason() == Some(DisconnectReason::Aborted))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_resets_the_instance_drops_uncommitted_writes_and_breaks_its_stubs_as_aborted() {
    let rt = builder().build_for_test().unwrap();
    let ns = rt.namespace::<Aborter>();
    let a = ns.get_by_name("x");
    a.put("kept".into()).await.unwrap();
    let b = ns.get_by_name("x");
    let waiting = tokio::spawn(async move { b.wait(60_000).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let result = a.write_then_abort("dropped".into()).await;
    assert!(aborted(&result), "{result:?}");
    let e = result.unwrap_err();
    assert!(
        e.to_string().contains("bad state"),
        "the reason reaches the caller: {e}"
    );
    let in_flight = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("the call in flight ends at once")
        .unwrap();
    assert!(aborted(&in_flight), "{in_flight:?}");
    let later = a.has("kept".into()).await;
    assert!(aborted(&later), "a later call on the stub: {later:?}");
    let fresh = ns.get_by_name("x");
    assert!(
        fresh.has("kept".into()).await.unwrap(),
        "committed writes stay"
    );
    assert!(
        !fresh.has("dropped".into()).await.unwrap(),
        "the write of the aborting call is dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_reaches_a_remote_client_as_aborted() {
    let rt = builder().build_for_test().unwrap();
    let server = rt.server().start().await.unwrap();
    let client = Client::connect(server.local_addr()).await.unwrap();
    let ns = client.namespace::<Aborter>().unwrap();
    let a = ns.get_by_name("remote");
    a.put("kept".into()).await.unwrap();
    let result = a.write_then_abort("dropped".into()).await;
    assert!(aborted(&result), "{result:?}");
    let later = a.has("kept".into()).await;
    assert!(aborted(&later), "{later:?}");
    let fresh = ns.get_by_name("remote");
    assert!(fresh.has("kept".into()).await.unwrap());
    assert!(!fresh.has("dropped".into()).await.unwrap());
}

fn disconnected_as(result: &Result<impl std::fmt::Debug, Error>, reason: DisconnectReason) -> bool {
    matches!(result, Err(e) if e.disconnect_reason() == Some(reason))
}

/// Whether `e` says the stub's instance is gone: reset under it (`Reset`),
/// or found reset when the call set out (`Broken`).
fn lost_its_instance(e: &Error) -> bool {
    matches!(
        e.disconnect_reason(),
        Some(DisconnectReason::Reset | DisconnectReason::Broken)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_until_work_runs_after_its_call_answers_and_keeps_the_instance_from_eviction() {
    let rt = builder()
        .idle_timeout(Some(Duration::from_millis(20)))
        .build_for_test()
        .unwrap();
    let ns = rt.namespace::<Chores>();
    let a = ns.get_by_name("background");
    let token = a.token().await.unwrap();
    a.later("done".into(), 400).await.unwrap();
    assert!(
        !a.has("done".into()).await.unwrap(),
        "the call answered before its background work wrote"
    );
    // An eviction asked for now waits for the background work to end.
    let evicted = rt.evict(a.id()).await.unwrap();
    assert!(evicted, "the instance was live until then");
    let fresh = ns.get_by_name("background");
    assert!(
        fresh.has("done".into()).await.unwrap(),
        "the background work ended (and committed) before the instance left"
    );
    assert_ne!(fresh.token().await.unwrap(), token, "a new instance");
    // Kept from the idle timeout too: 400 ms of background work outlive
    // a 20 ms timeout many times over, and the instance stays.
    let b = ns.get_by_name("background-idle");
    let token = b.token().await.unwrap();
    b.later("done".into(), 400).await.unwrap();
    eventually("the background work ends", || async {
        b.has("done".into()).await.unwrap().then_some(())
    })
    .await;
    assert_eq!(
        b.token().await.unwrap(),
        token,
        "not evicted while its background work ran"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_wait_until_work_resets_the_instance_like_a_panic_in_a_method() {
    let rt = builder().build_for_test().unwrap();
    let ns = rt.namespace::<Chores>();
    let a = ns.get_by_name("panicky");
    let token = a.token().await.unwrap();
    a.panic_later(50).await.unwrap();
    let broken = eventually("the stub breaks", || async { a.token().await.err() }).await;
    assert!(lost_its_instance(&broken), "{broken}");
    let fresh = ns.get_by_name("panicky");
    assert_ne!(fresh.token().await.unwrap(), token, "a new instance");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_future_past_its_limit_resets_the_instance_and_its_callers_get_timed_out() {
    let rt = builder()
        .block_concurrency_limit(Duration::from_millis(200))
        .build_for_test()
        .unwrap();
    let ns = rt.namespace::<Chores>();
    let a = ns.get_by_name("stuck");
    let token = a.token().await.unwrap();
    let held = ns.get_by_name("stuck");
    held.token().await.unwrap();
    let blocking = tokio::spawn({
        let a = a.clone();
        async move { a.block_for(60_000).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Queued behind the closed gate.
    let queued = held.token().await;
    assert!(
        disconnected_as(&queued, DisconnectReason::TimedOut),
        "{queued:?}"
    );
    let blocked = tokio::time::timeout(Duration::from_secs(20), blocking)
        .await
        .expect("the blocked call ends instead of hanging")
        .unwrap();
    assert!(
        disconnected_as(&blocked, DisconnectReason::TimedOut),
        "{blocked:?}"
    );
    let e = blocked.unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert!(e.to_string().contains("limit"), "says why: {e}");
    let fresh = ns.get_by_name("stuck");
    assert_ne!(fresh.token().await.unwrap(), token, "a new instance serves");
    // A short blocking future is no trouble.
    fresh.block_for(10).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_future_past_its_limit_reaches_a_remote_client_as_timed_out() {
    let rt = builder()
        .block_concurrency_limit(Duration::from_millis(200))
        .build_for_test()
        .unwrap();
    let server = rt.server().start().await.unwrap();
    let client = Client::connect(server.local_addr()).await.unwrap();
    let ns = client.namespace::<Chores>().unwrap();
    let a = ns.get_by_name("stuck-remote");
    let blocked = a.block_for(60_000).await;
    assert!(
        disconnected_as(&blocked, DisconnectReason::TimedOut),
        "{blocked:?}"
    );
    ns.get_by_name("stuck-remote").token().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_resets_the_instance_so_its_memory_never_outlives_storage() {
    let fail = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let rt = builder()
        .__fail_commits(fail.clone())
        .build_for_test()
        .unwrap();
    let ns = rt.namespace::<Chores>();
    let a = ns.get_by_name("ledger");
    assert_eq!(a.increment().await.unwrap(), 1);
    fail.store(1, std::sync::atomic::Ordering::SeqCst);
    let failed = a.increment().await;
    assert!(matches!(failed, Err(Error::Storage(_))), "{failed:?}");
    // At once, not when the store's recovery gets to it: the instance
    // that counted 2 in memory is gone.
    let next = a.count().await;
    assert!(
        matches!(&next, Err(e) if lost_its_instance(e)),
        "the next call on the stub: {next:?}"
    );
    let count = eventually("the store is back", || async {
        ns.get_by_name("ledger").count().await.ok()
    })
    .await;
    assert_eq!(
        count, 1,
        "memory holds what storage holds, not the failed write"
    );
    let b = ns.get_by_name("ledger");
    assert_eq!(
        b.increment().await.unwrap(),
        2,
        "and writes go on from there"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_that_blocks_its_worker_is_reported_with_class_id_and_method() {
    do_tests::capture::install();
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let rt = builder()
        .stall_threshold(Some(Duration::from_millis(100)))
        .metrics_recorder(std::sync::Arc::new(recorder))
        .build_for_test()
        .unwrap();
    let a = rt.namespace::<Chores>().get_by_name("hog");
    let hog = tokio::spawn({
        let a = a.clone();
        async move { a.hog(1_500).await }
    });
    let stall = eventually("the stall is seen", || async {
        rt.stalls().into_iter().next()
    })
    .await;
    assert_eq!(
        (stall.class.as_str(), stall.method.as_str(), &stall.id),
        ("Chores", "hog", a.id())
    );
    assert!(stall.stalled_for >= Duration::from_millis(100), "{stall:?}");
    assert_eq!(rt.stats().stalled_now, 1);
    hog.await.unwrap().unwrap();
    eventually("the stall ends", || async {
        (rt.stats().stalled_now == 0).then_some(())
    })
    .await;
    assert_eq!(rt.stats().stalled_steps, 1, "reported once");
    let warned = do_tests::capture::events("do_runtime::stall")
        .into_iter()
        .filter(|e| e.get("id") == Some(&a.id().to_string()))
        .collect::<Vec<_>>();
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert_eq!(warned[0].get("class").map(String::as_str), Some("Chores"));
    assert_eq!(warned[0].get("method").map(String::as_str), Some("hog"));
    let counted = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .find(|(key, ..)| {
            key.key().name() == "do_stalled_steps_total"
                && key.key().labels().any(|l| l.value() == "Chores")
        })
        .map(|(.., value)| value);
    assert_eq!(
        counted,
        Some(metrics_util::debugging::DebugValue::Counter(1)),
        "the counter metric"
    );
    // Quick steps are never reported.
    a.token().await.unwrap();
    assert_eq!(rt.stats().stalled_steps, 1);
}
