//! L1 and the threading model: one instance per id, objects need not be Send.

use do_runtime::Error;
use do_tests::{Cells, Counter, runtime};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_holding_rc_and_refcell_state_works() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let stub = rt.namespace::<Cells>().get_by_name("not-send");
    assert_eq!(stub.visit("a".into()).await.unwrap(), (1, 1));
    assert_eq!(stub.visit("b".into()).await.unwrap(), (2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_stubs_of_one_id_reach_one_instance() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let ns = rt.namespace::<Cells>();
    let id = ns.new_unique_id();
    let tasks: Vec<_> = (0..10)
        .map(|t| {
            let stub = ns.get(id.clone());
            tokio::spawn(async move {
                for i in 0..100 {
                    stub.visit(format!("{t}-{i}")).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    // One more visit sees all 1 000 earlier ones: one instance served them all.
    assert_eq!(
        ns.get(id).visit("last".into()).await.unwrap(),
        (1_001, 1_001)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_ids_are_different_instances() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let ns = rt.namespace::<Cells>();
    for name in ["a", "b", "c"] {
        assert_eq!(
            ns.get_by_name(name).visit(name.into()).await.unwrap(),
            (1, 1)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_after_the_runtime_is_dropped_fail_disconnected() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let stub = rt.namespace::<Counter>().get_by_name("c");
    stub.increment(1).await.unwrap();
    drop(rt);
    let err = stub.increment(1).await.unwrap_err();
    assert!(matches!(err, Error::Disconnected(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_can_use_tokio_io_in_their_methods() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let stub = rt.namespace::<do_tests::Netter>().get_by_name("net");
    assert_eq!(stub.echo(42).await.unwrap(), 42);
}
