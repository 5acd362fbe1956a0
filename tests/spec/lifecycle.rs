//! L1–L3, L5, L6: eviction, the input gate, shutdown, reentrancy, the test harness.

use std::time::Duration;

use do_runtime::{Error, Runtime};
use do_tests::{Cells, Counter, Gatekeeper, Relay, Slow, builder};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_keeps_the_stub_working_and_the_new_instance_sees_every_commit() {
    let rt = builder().build_for_test().unwrap();
    let cells = rt.namespace::<Cells>();
    let counters = rt.namespace::<Counter>();
    let cell = cells.get_by_name("e");
    let counter = counters.get_by_name("e");
    assert_eq!(cell.visit("a".into()).await.unwrap(), (1, 1));
    assert_eq!(counter.increment(5).await.unwrap(), 5);

    assert!(rt.evict(cell.id()).await.unwrap(), "an instance was live");
    assert!(rt.evict(counter.id()).await.unwrap());
    assert!(!rt.evict(cell.id()).await.unwrap(), "nothing left to evict");

    // Memory is gone, storage is not, and the same stubs still work.
    assert_eq!(cell.visit("b".into()).await.unwrap(), (1, 1));
    assert_eq!(counter.increment(1).await.unwrap(), 6);
    assert!(!cell.is_broken() && !counter.is_broken());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_instances_are_evicted_after_the_timeout() {
    let idle = Duration::from_millis(50);
    let rt = builder().idle_timeout(Some(idle)).build_for_test().unwrap();
    let cell = rt.namespace::<Cells>().get_by_name("idle");
    assert_eq!(cell.visit("a".into()).await.unwrap(), (1, 1));
    assert_eq!(
        cell.visit("b".into()).await.unwrap(),
        (2, 2),
        "still live between quick calls"
    );
    let last_call = std::time::Instant::now();
    assert_eq!(rt.stats().live_instances, 1);
    // The sweeper alone (every quarter of the timeout) evicts it: not
    // before the timeout, and within a few of them.
    while rt.stats().live_instances > 0 {
        assert!(
            last_call.elapsed() < Duration::from_secs(10),
            "the sweeper never evicted the idle instance"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(
        last_call.elapsed() >= idle / 2,
        "evicted {:?} after its last call, well before the {idle:?} timeout",
        last_call.elapsed()
    );
    // Memory is gone, the stub works, and the new instance starts afresh.
    assert_eq!(cell.visit("c".into()).await.unwrap(), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_concurrency_while_in_the_constructor_holds_every_call_until_loaded() {
    let rt = builder().build_for_test().unwrap();
    let ns = rt.namespace::<Gatekeeper>();
    let stub = ns.get_by_name("loader");
    let calls: Vec<_> = (0..20).map(|_| stub.loaded()).collect();
    for call in calls {
        assert!(call.await.unwrap(), "no call ran before the load finished");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_concurrency_while_in_a_method_delivers_no_other_call_meanwhile() {
    let rt = builder().build_for_test().unwrap();
    let stub = rt.namespace::<Gatekeeper>().get_by_name("holder");
    stub.echo(vec![]).await.unwrap();
    let hold = stub.hold(100);
    let flag = stub.flag(); // sent after `hold`; must wait for the gate
    assert!(
        flag.await.unwrap(),
        "the flag call waited for the gate to open"
    );
    hold.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_inside_block_concurrency_while_resets_the_instance() {
    let rt = builder().build_for_test().unwrap();
    let ns = rt.namespace::<Gatekeeper>();
    let stub = ns.get_by_name("poisoned");
    stub.echo(vec![]).await.unwrap();
    stub.poison().await.unwrap(); // the method itself returns; its blocker panics
    let later = stub.echo(vec![]).await;
    assert!(matches!(later, Err(Error::Disconnected(_))), "{later:?}");
    assert_eq!(ns.get_by_name("poisoned").echo(vec![1]).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_calls_in_flight_makes_them_durable_then_refuses_calls() {
    let dir = tempfile::tempdir().unwrap();
    let rt = builder().data_dir(dir.path()).build().unwrap();
    let stub = rt.namespace::<Slow>().get_by_name("s");
    let in_flight: Vec<_> = (0..10)
        .map(|i| stub.write_after(100, format!("k{i}")))
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    rt.shutdown().await;
    for call in in_flight {
        call.await.expect("a call in flight at shutdown completes");
    }
    let refused = stub.write_after(0, "late".into()).await;
    assert!(
        matches!(refused, Err(Error::Disconnected(_))),
        "{refused:?}"
    );
    rt.shutdown().await; // twice is fine
    drop(rt);

    let rt = builder().data_dir(dir.path()).build().unwrap();
    let keys = rt
        .namespace::<Slow>()
        .get_by_name("s")
        .keys()
        .await
        .unwrap();
    assert_eq!(
        keys.len(),
        10,
        "every write acknowledged at shutdown is on disk: {keys:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_past_the_shutdown_deadline_fail_disconnected() {
    let rt = builder()
        .shutdown_deadline(Duration::from_millis(50))
        .build_for_test()
        .unwrap();
    let stub = rt.namespace::<Slow>().get_by_name("s");
    let long = stub.write_after(10_000, "never".into());
    tokio::time::sleep(Duration::from_millis(20)).await;
    rt.shutdown().await;
    let result = tokio::time::timeout(Duration::from_secs(30), long)
        .await
        .expect("no hang");
    assert!(matches!(result, Err(Error::Disconnected(_))), "{result:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_runtime_with_calls_in_flight_does_not_hang() {
    let rt = builder().build_for_test().unwrap();
    let stub = rt.namespace::<Slow>().get_by_name("s");
    let calls: Vec<_> = (0..100)
        .map(|i| stub.write_after(5_000, format!("{i}")))
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(rt);
    for call in calls {
        let result = tokio::time::timeout(Duration::from_secs(30), call)
            .await
            .expect("no hang");
        assert!(matches!(result, Err(Error::Disconnected(_))), "{result:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_objects_calling_each_other_complete() {
    let rt = builder().build_for_test().unwrap();
    let relays = rt.namespace::<Relay>();
    let a = relays.get_by_name("a");
    let reply = tokio::time::timeout(Duration::from_secs(60), a.bounce(20, "b".into()))
        .await
        .expect("A ↔ B does not deadlock");
    assert_eq!(reply.unwrap(), 20);
    assert_eq!(a.hops().await.unwrap(), 11);
    assert_eq!(relays.get_by_name("b").hops().await.unwrap(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_calling_itself_through_its_own_stub_completes() {
    let rt = builder().build_for_test().unwrap();
    let me = rt.namespace::<Relay>().get_by_name("me");
    let reply = tokio::time::timeout(Duration::from_secs(60), me.bounce(10, "me".into()))
        .await
        .expect("self calls do not deadlock");
    assert_eq!(reply.unwrap(), 10);
    assert_eq!(me.hops().await.unwrap(), 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_runtime_restarts_on_its_data_and_removes_it_on_drop() {
    let mut rt = builder().build_for_test().unwrap();
    let path = rt.path().to_owned();
    let counter = rt.namespace::<Counter>().get_by_name("c");
    counter.increment(2).await.unwrap();
    rt.restart().unwrap();
    assert!(
        counter.increment(1).await.is_err(),
        "stubs of the old runtime are disconnected"
    );
    assert_eq!(
        rt.namespace::<Counter>()
            .get_by_name("c")
            .increment(1)
            .await
            .unwrap(),
        3
    );
    drop(rt);
    assert!(!path.exists(), "the temporary directory is removed");
}

#[test]
fn a_runtime_without_a_data_directory_is_a_setup_error() {
    let err = Runtime::builder().build().unwrap_err();
    assert!(
        matches!(err, Error::Setup(ref m) if m.contains("data_dir")),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_waits_until_the_objects_writes_are_durable() {
    // Every fsync takes 400 ms: a write is applied (visible to the engine)
    // long before it is durable.
    let rt = builder()
        .__persist_delay(Duration::from_millis(400))
        .build_for_test()
        .unwrap();
    let counters = rt.namespace::<Counter>();
    let id = counters.id_from_name("slow-disk");
    let started = std::time::Instant::now();
    let write = tokio::spawn(counters.get(id.clone()).increment(1));
    tokio::time::sleep(Duration::from_millis(100)).await; // applied, not yet durable

    // Eviction is asked for now; it may only happen once the write is
    // durable, which is not before the injected delay has passed.
    let evicted = rt.evict(&id).await.unwrap();
    assert!(evicted);
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "the instance left before its write was durable ({:?})",
        started.elapsed()
    );
    assert_eq!(write.await.unwrap().unwrap(), 1);

    // A new instance reads the value, and its reply is not released early.
    let read = counters.get(id).value().await.unwrap();
    assert_eq!(read, 1);
}
