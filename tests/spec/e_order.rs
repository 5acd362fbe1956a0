//! C2: calls through one stub reach the object in the order they were made.

use do_tests::{Recorder, runtime};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_on_one_stub_arrive_in_call_order_even_when_awaited_in_reverse() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let stub = rt.namespace::<Recorder>().get_by_name("order");

    const N: u64 = 10_000;
    let calls: Vec<_> = (0..N).map(|n| stub.record(n)).collect();
    for (n, call) in calls.into_iter().enumerate().rev() {
        assert_eq!(call.await.unwrap(), n as u64);
    }
    assert_eq!(stub.log().await.unwrap(), (0..N).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_is_fixed_when_the_method_is_called_not_when_the_future_is_polled() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let stub = rt.namespace::<Recorder>().get_by_name("poll-order");

    let a = stub.record(1);
    let b = stub.record(2);
    // `b` is polled first and `a` from another task: delivery still follows the calls.
    let b = tokio::spawn(b);
    let a = tokio::spawn(a);
    assert_eq!(b.await.unwrap().unwrap(), 2);
    assert_eq!(a.await.unwrap().unwrap(), 1);
    assert_eq!(stub.log().await.unwrap(), vec![1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_of_a_stub_share_its_order() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let stub = rt.namespace::<Recorder>().get_by_name("clones");
    let clone = stub.clone();

    let calls: Vec<_> = (0..1_000u64)
        .map(|n| {
            if n % 2 == 0 {
                stub.record(n)
            } else {
                clone.record(n)
            }
        })
        .collect();
    for call in calls {
        call.await.unwrap();
    }
    assert_eq!(stub.log().await.unwrap(), (0..1_000).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_of_many_stubs_keeps_its_own_order() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let ns = rt.namespace::<Recorder>();

    // Eight tasks, each with its own stub, pipelining into one object.
    let tasks: Vec<_> = (0..8u64)
        .map(|t| {
            let stub = ns.get_by_name("shared");
            tokio::spawn(async move {
                let calls: Vec<_> = (0..500u64).map(|i| stub.record(t * 1_000 + i)).collect();
                for call in calls {
                    call.await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let log = ns.get_by_name("shared").log().await.unwrap();
    assert_eq!(log.len(), 8 * 500);
    for t in 0..8u64 {
        let mine: Vec<u64> = log.iter().copied().filter(|n| n / 1_000 == t).collect();
        assert_eq!(
            mine,
            (0..500).map(|i| t * 1_000 + i).collect::<Vec<_>>(),
            "stub {t}"
        );
    }
}
