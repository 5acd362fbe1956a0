//! St5–St7: input gate (atomic read-modify-write), coalescing, durability.

use do_tests::{Tally, builder, runtime};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_read_modify_write_increments_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let ns = rt.namespace::<Tally>();
    let id = ns.id_from_name("race");

    // 10 tasks × 100 pipelined increments, each `get().await` then `put`,
    // interleaved with slow readers that yield in the middle of their calls.
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let stub = ns.get(id.clone());
            tokio::spawn(async move {
                let calls: Vec<_> = (0..100)
                    .map(|i| (stub.increment(), (i % 10 == 0).then(|| stub.peek_slowly())))
                    .collect();
                for (inc, peek) in calls {
                    inc.await.unwrap();
                    if let Some(peek) = peek {
                        peek.await.unwrap();
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(ns.get(id).peek_slowly().await.unwrap(), 1_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_increment_sees_the_one_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let stub = rt.namespace::<Tally>().get_by_name("sequence");
    let calls: Vec<_> = (0..500).map(|_| stub.increment()).collect();
    for (i, call) in calls.into_iter().enumerate() {
        assert_eq!(call.await.unwrap(), i as i64 + 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_released_by_one_fsync_reach_their_callers_through_their_runtimes_relays() {
    let dir = tempfile::tempdir().unwrap();
    // Slow fsyncs: many replies wait for each, and are released together.
    let rt = builder()
        .data_dir(dir.path())
        .__persist_delay(std::time::Duration::from_millis(20))
        .build()
        .unwrap();
    let ns = rt.namespace::<Tally>();
    // 200 callers on this multi-threaded runtime, each writing its own
    // object 10 times: every reply must arrive, with the right count.
    let callers: Vec<_> = (0..200)
        .map(|i| {
            let stub = ns.get_by_name(&format!("relayed-{i}"));
            tokio::spawn(async move {
                for n in 1..=10 {
                    assert_eq!(stub.increment().await.unwrap(), n);
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.unwrap();
    }
    let relayed = rt.stats().relayed_replies;
    assert!(
        relayed > 0,
        "no reply went through a relay, though hundreds waited for each fsync"
    );
    assert!(relayed <= 2_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_writes_to_one_object_are_coalesced_into_shared_batches() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let stub = rt.namespace::<Tally>().get_by_name("coalesced");
    // The object exists (and its task sleeps) before the burst.
    stub.increment().await.unwrap();
    let before = rt.stats().storage.batches;
    // 1 000 calls put on the worker's channel at once: the worker hands
    // each one over on its own turn, and must still give the object's
    // writes one batch per window of calls, not one per call.
    let calls: Vec<_> = (0..1_000).map(|_| stub.increment()).collect();
    for (i, call) in calls.into_iter().enumerate() {
        assert_eq!(call.await.unwrap(), i as i64 + 2);
    }
    let batches = rt.stats().storage.batches - before;
    assert!(
        batches <= 500,
        "1 000 pipelined writes took {batches} batches: not coalesced"
    );
}
