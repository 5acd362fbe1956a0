//! Tasks on the runtime's worker threads: `Runtime::spawn` and
//! `Namespace::spawn_beside`, whose calls to their object skip the channel.

use std::collections::BTreeSet;
use std::time::Duration;

use do_runtime::{Client, Error};
use do_tests::{Recorder, builder};
use tokio::sync::oneshot;

/// Only a hang would exceed this.
const HANG: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_beside_an_object_runs_on_the_objects_thread() {
    let rt = builder().workers(2).build_for_test().unwrap();
    let ns = rt.namespace::<Recorder>();
    for name in ["a", "b", "c", "d"] {
        let id = ns.id_from_name(name);
        let (task_thread, object_thread) = ns
            .spawn_beside(&id, |stub| async move {
                let here = std::thread::current().name().map(str::to_owned);
                (here, stub.thread().await)
            })
            .await
            .unwrap();
        let object_thread = object_thread.unwrap();
        assert!(object_thread.starts_with("do-worker-"), "{object_thread}");
        assert_eq!(task_thread.as_deref(), Some(object_thread.as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beside_the_object_stay_in_order_behind_calls_sent_from_other_threads() {
    // C2 across both paths: one stub's calls go through the worker's channel
    // from a tokio thread, then (for the same stub, causally later) straight
    // from a task on the object's thread. The direct calls must not overtake
    // those still queued in the channel.
    let rt = builder().build_for_test().unwrap();
    let ns = rt.namespace::<Recorder>();
    let id = ns.id_from_name("mixed");
    let stub = ns.get(id.clone());
    const ROUNDS: u64 = 20;
    const N: u64 = 1_000;
    for round in 0..ROUNDS {
        let base = round * 2 * N;
        let (go, ready) = oneshot::channel::<do_runtime::Stub<Recorder>>();
        let beside = ns.spawn_beside(&id, move |_| async move {
            let stub = ready.await.expect("the test sends the stub");
            let calls: Vec<_> = (base + N..base + 2 * N).map(|n| stub.record(n)).collect();
            for call in calls {
                call.await.expect("record");
            }
        });
        let calls: Vec<_> = (base..base + N).map(|n| stub.record(n)).collect();
        assert!(go.send(stub.clone()).is_ok(), "the task waits for the stub");
        for call in calls {
            call.await.unwrap();
        }
        tokio::time::timeout(HANG, beside).await.unwrap().unwrap();
    }
    assert_eq!(
        stub.log().await.unwrap(),
        (0..ROUNDS * 2 * N).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tokio_task_started_from_a_worker_calls_objects_of_that_worker() {
    // `tokio::spawn` inside a task beside an object puts the new task on the
    // worker's own tokio runtime, outside the worker's set of object tasks:
    // its calls, to a live object and to one not yet started, must work.
    let rt = builder().workers(1).build_for_test().unwrap();
    let ns = rt.namespace::<Recorder>();
    let id = ns.id_from_name("live");
    let cold = ns.get_by_name("cold");
    let got = ns
        .spawn_beside(&id, move |live| async move {
            live.record(1).await.expect("a live object on this worker");
            tokio::spawn(async move { (live.record(2).await, cold.record(3).await) })
                .await
                .expect("the tokio task ran")
        })
        .await
        .unwrap();
    assert_eq!((got.0.unwrap(), got.1.unwrap()), (2, 3));
    assert_eq!(ns.get(id).log().await.unwrap(), vec![1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_call_from_a_nested_local_set_does_not_tie_the_object_to_it() {
    // A task beside an object runs a `LocalSet` of its own and makes the
    // object's first call in it, then drops the set. The object must not
    // have been started on that set: it keeps answering, from anywhere.
    let rt = builder().workers(1).build_for_test().unwrap();
    let ns = rt.namespace::<Recorder>();
    let near = ns.id_from_name("near");
    let fresh = ns.get_by_name("fresh");
    let inner_stub = fresh.clone();
    let task = ns.spawn_beside(&near, move |_| async move {
        let inner = tokio::task::LocalSet::new();
        // The call is made (not only awaited) inside the inner set.
        let first = inner.run_until(async { inner_stub.record(1).await }).await;
        drop(inner);
        let second = inner_stub.record(2).await;
        (first, second)
    });
    let first = tokio::time::timeout(HANG, task)
        .await
        .expect("the object answers after the inner set is gone")
        .unwrap();
    assert_eq!((first.0.unwrap(), first.1.unwrap()), (1, 2));
    let third = tokio::time::timeout(HANG, fresh.record(3)).await;
    assert_eq!(third.expect("the object still answers").unwrap(), 3);
    assert_eq!(fresh.log().await.unwrap(), vec![1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_on_one_worker_calls_objects_of_every_worker_in_order() {
    // Objects spread over both workers: calls to those beside the task go
    // directly, the others through the other worker's channel. Each stub's
    // calls still arrive in order, pipelined or not.
    let rt = builder().workers(2).build_for_test().unwrap();
    let ns = rt.namespace::<Recorder>();
    let names: Vec<String> = (0..32).map(|i| format!("spread-{i}")).collect();
    let stubs: Vec<_> = names.iter().map(|n| ns.get_by_name(n)).collect();
    let here = stubs[0].id().clone();
    let threads = ns
        .spawn_beside(&here, move |_| async move {
            let mut threads = BTreeSet::new();
            for stub in &stubs {
                let calls: Vec<_> = (0..100u64).map(|n| stub.record(n)).collect();
                for call in calls {
                    call.await.expect("record");
                }
                threads.insert(stub.thread().await.expect("thread"));
            }
            threads
        })
        .await
        .unwrap();
    assert_eq!(threads.len(), 2, "the objects live on both workers");
    for name in &names {
        assert_eq!(
            ns.get_by_name(name).log().await.unwrap(),
            (0..100).collect::<Vec<_>>()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_spawn_spreads_tasks_over_the_workers() {
    let rt = builder().workers(2).build_for_test().unwrap();
    let mut threads = BTreeSet::new();
    for _ in 0..4 {
        let name = rt
            .spawn(async { std::thread::current().name().map(str::to_owned) })
            .await
            .unwrap();
        threads.insert(name.unwrap());
    }
    assert_eq!(
        threads,
        BTreeSet::from(["do-worker-0".to_owned(), "do-worker-1".to_owned()])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_task_fails_its_handle_and_the_runtime_keeps_serving() {
    let rt = builder().workers(1).build_for_test().unwrap();
    let ns = rt.namespace::<Recorder>();
    let id = ns.id_from_name("survivor");
    let failed = ns
        .spawn_beside(&id, |_| async move {
            panic!("the task's own bug");
        })
        .await;
    assert!(
        matches!(&failed, Err(Error::Panicked(m)) if m.contains("the task's own bug")),
        "{failed:?}"
    );
    // The same (only) worker still runs the object and new tasks.
    assert_eq!(ns.get(id.clone()).record(1).await.unwrap(), 1);
    let twice = ns
        .spawn_beside(&id, |stub| async move { stub.record(2).await })
        .await
        .unwrap();
    assert_eq!(twice.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_still_running_at_shutdown_fail_with_disconnected() {
    let rt = builder().build_for_test().unwrap();
    let (_never, pending) = oneshot::channel::<()>();
    let stuck = rt.spawn(async move {
        let _ = pending.await;
    });
    rt.shutdown().await;
    let out = tokio::time::timeout(HANG, stuck).await.unwrap();
    assert!(matches!(out, Err(Error::Disconnected(_))), "{out:?}");
    // After the stop, a new task is refused the same way.
    let late = tokio::time::timeout(HANG, rt.spawn(async { 1 }))
        .await
        .unwrap();
    assert!(matches!(late, Err(Error::Disconnected(_))), "{late:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_beside_through_a_remote_namespace_is_unsupported() {
    let rt = builder().build_for_test().unwrap();
    let server = rt.server().start().await.unwrap();
    let client = Client::connect(server.local_addr()).await.unwrap();
    let ns = client.namespace::<Recorder>().unwrap();
    let id = ns.id_from_name("far");
    let out = ns.spawn_beside(&id, |_| async { 1 }).await;
    assert!(matches!(out, Err(Error::Unsupported(_))), "{out:?}");
}
