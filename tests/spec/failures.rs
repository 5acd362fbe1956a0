//! C3, C4, L4 and overload: every failure reaches the caller promptly and typed.

use std::time::Duration;

use do_runtime::Error;
use do_tests::{Fragile, Gatekeeper, Notes, Recorder, Tally, builder, runtime};
use futures_util::FutureExt;

/// Generous bound for "promptly": only a hang would exceed it.
const HANG: Duration = Duration::from_secs(60);

#[test]
fn each_error_says_whether_to_retry_and_where_it_came_from() {
    let disconnected = Error::Disconnected("x".into());
    assert!(
        disconnected.is_retryable() && !disconnected.is_overloaded() && !disconnected.is_remote()
    );
    let overloaded = Error::Overloaded("x".into());
    assert!(!overloaded.is_retryable() && overloaded.is_overloaded() && !overloaded.is_remote());
    let panicked = Error::Panicked("x".into());
    assert!(!panicked.is_retryable() && !panicked.is_overloaded() && panicked.is_remote());
    let app = Error::app("x");
    assert!(!app.is_retryable() && app.is_remote());
    let storage = Error::KeyTooLarge {
        len: 3000,
        limit: 2048,
    };
    assert!(!storage.is_retryable() && !storage.is_remote());
    assert_eq!(panicked.to_string(), "the object panicked: x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_resets_the_instance_and_keeps_exactly_the_committed_writes() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let ns = rt.namespace::<Notes>();
    let stub = ns.get_by_name("p");
    stub.put("kept".into(), "1".into()).await.unwrap();
    let err = stub.write_then_panic("doomed".into()).await.unwrap_err();
    assert_eq!(err, Error::Panicked("after writing doomed".into()));
    let fresh = ns.get_by_name("p");
    assert_eq!(
        fresh.get("kept".into()).await.unwrap().as_deref(),
        Some("1")
    );
    assert_eq!(
        fresh.get("doomed".into()).await.unwrap(),
        None,
        "the uncommitted write was discarded"
    );
    // Tally's committed state survives a reset of another object untouched.
    let tally = rt.namespace::<Tally>().get_by_name("p");
    assert_eq!(tally.increment().await.unwrap(), 1);
    assert!(
        rt.namespace::<Recorder>()
            .get_by_name("p")
            .boom("x".into())
            .await
            .is_err()
    );
    assert_eq!(tally.increment().await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_calls_in_flight_at_a_reset_all_end_promptly() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let ns = rt.namespace::<Recorder>();
    let stub = ns.get_by_name("reset");
    let other_stub = ns.get_by_name("reset");
    other_stub.record(0).await.unwrap(); // bound to the instance that will reset

    let before: Vec<_> = (1..=5_000u64).map(|n| stub.record(n)).collect();
    let boom = stub.boom("mid-flight".into());
    let after: Vec<_> = (5_001..=10_000u64).map(|n| stub.record(n)).collect();

    let results = tokio::time::timeout(HANG, async {
        let mut ok = 0;
        for call in before {
            match call.await {
                Ok(_) => ok += 1,
                Err(Error::Disconnected(_)) => {}
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        let boom = boom.await;
        let mut after_errors = 0;
        for call in after {
            assert!(matches!(call.await, Err(Error::Disconnected(_))));
            after_errors += 1;
        }
        (ok, boom, after_errors)
    })
    .await
    .expect("no call hangs");
    let (ok, boom, after_errors) = results;
    assert!(ok > 0, "calls delivered before the panic completed");
    assert_eq!(boom, Err(Error::Panicked("mid-flight".into())));
    assert_eq!(after_errors, 5_000);
    assert!(stub.is_broken());
    // Every stub bound to the old instance is broken, at once.
    let err = other_stub
        .record(1)
        .now_or_never()
        .expect("fails without waiting");
    assert!(matches!(err, Err(Error::Disconnected(_))), "{err:?}");
    // A new stub reaches a fresh instance.
    assert_eq!(
        ns.get_by_name("reset").log().await.unwrap(),
        Vec::<u64>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stub_that_never_called_the_reset_instance_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let ns = rt.namespace::<Recorder>();
    let unbound = ns.get_by_name("r");
    let stub = ns.get_by_name("r");
    assert!(stub.boom("x".into()).await.is_err());
    assert_eq!(unbound.record(7).await.unwrap(), 7);
    assert!(!unbound.is_broken());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_constructor_fails_the_call_and_leaves_no_half_built_instance() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let ns = rt.namespace::<Fragile>();

    let always = ns.get_by_name("always-broken");
    for _ in 0..2 {
        match always.keys().await {
            Err(e @ Error::Panicked(_)) => {
                assert!(e.is_remote());
                assert!(
                    e.to_string()
                        .contains("constructor of always-broken failed"),
                    "{e}"
                );
            }
            other => panic!("gave {other:?}"),
        }
    }
    let id = ns.id_from_name("always-broken");
    let stored = ns
        .with_storage(&id, |s| async move { s.get::<bool>("half-built").await })
        .await
        .unwrap();
    assert_eq!(
        stored.unwrap(),
        None,
        "the failed constructor's write was discarded"
    );

    // Fails once, then builds; the same stub works, and only the good
    // construction's writes exist.
    let once = ns.get_by_name("once-flaky");
    assert!(matches!(once.keys().await, Err(Error::Panicked(_))));
    assert_eq!(once.keys().await.unwrap(), ["built", "half-built"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_past_the_queue_bound_fails_at_once_with_overloaded_and_the_stub_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let rt = builder()
        .data_dir(dir.path())
        .max_queued_calls(100)
        .build()
        .unwrap();
    let stub = rt.namespace::<Gatekeeper>().get_by_name("busy");
    stub.echo(vec![]).await.unwrap(); // constructed, its load done
    let hold = stub.hold(300); // closes the gate: calls queue up
    tokio::time::sleep(Duration::from_millis(50)).await;

    let mut accepted = Vec::new();
    let mut overloaded = 0;
    for _ in 0..1_000 {
        let mut call = stub.echo(vec![1]);
        match (&mut call).now_or_never() {
            Some(Err(e)) => {
                assert!(e.is_overloaded() && !e.is_retryable(), "{e:?}");
                overloaded += 1;
            }
            Some(Ok(_)) => panic!("a call completed while the gate was closed"),
            None => accepted.push(call),
        }
    }
    assert_eq!(accepted.len(), 100, "exactly the bound was queued");
    assert_eq!(overloaded, 900);
    assert!(!stub.is_broken(), "overload does not break the stub");
    hold.await.unwrap();
    for call in accepted {
        assert_eq!(call.await.unwrap(), 1);
    }
    assert_eq!(stub.echo(vec![1, 2]).await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_is_bounded_by_bytes_too() {
    let dir = tempfile::tempdir().unwrap();
    let rt = builder()
        .data_dir(dir.path())
        .max_queued_bytes(10_000)
        .build()
        .unwrap();
    let stub = rt.namespace::<Gatekeeper>().get_by_name("bytes");
    stub.echo(vec![]).await.unwrap();
    let hold = stub.hold(200);
    tokio::time::sleep(Duration::from_millis(30)).await;
    let first = stub.echo(vec![0; 6_000]);
    let second = stub.echo(vec![0; 6_000]).now_or_never();
    assert!(
        matches!(second, Some(Err(Error::Overloaded(ref m))) if m.contains("bytes")),
        "{second:?}"
    );
    hold.await.unwrap();
    assert_eq!(first.await.unwrap(), 6_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnected_error_says_why_the_stub_lost_its_object() {
    use do_runtime::DisconnectReason;
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let ns = rt.namespace::<Notes>();
    let stub = ns.get_by_name("why");
    stub.put("a".into(), "1".into()).await.unwrap();
    // Another stub bound to the instance sees the reset on its next call;
    // the stub whose call panicked is broken from then on.
    let other = ns.get_by_name("why");
    other.get("a".into()).await.unwrap();
    assert!(stub.write_then_panic("b".into()).await.is_err());
    let again = stub.get("a".into()).await.unwrap_err();
    assert!(
        matches!(
            again.disconnect_reason(),
            Some(DisconnectReason::Broken | DisconnectReason::Reset)
        ),
        "{again:?}"
    );
    let reset = other.get("a".into()).await.unwrap_err();
    assert!(
        matches!(
            reset.disconnect_reason(),
            Some(DisconnectReason::Reset | DisconnectReason::Broken)
        ),
        "{reset:?}"
    );
    assert!(reset.is_retryable());
    // A runtime shutting down says so.
    rt.shutdown().await;
    let late = ns.get_by_name("why").get("a".into()).await.unwrap_err();
    assert_eq!(
        late.disconnect_reason(),
        Some(DisconnectReason::Shutdown),
        "{late:?}"
    );
    // Other errors carry none; a bare message says `Other`.
    assert_eq!(Error::Overloaded("x".into()).disconnect_reason(), None);
    assert_eq!(
        Error::Disconnected("x".into()).disconnect_reason(),
        Some(DisconnectReason::Other)
    );
}
