//! B3: lifecycle controls an object uses on itself.

use std::time::Duration;

use do_runtime::{Client, DisconnectReason, Error};
use do_tests::{Aborter, builder};

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
