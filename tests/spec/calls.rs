//! C1, C3: methods on the stub, typed results and errors.

use do_runtime::Error;
use do_tests::{Bank, BankError, Cells, Notes, Recorder, runtime};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_methods_own_error_reaches_the_caller_typed() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let bank = rt.namespace::<Bank>().get_by_name("acct");
    assert_eq!(bank.withdraw(30).await, Ok(70));
    assert_eq!(
        bank.withdraw(100).await,
        Err(BankError::Insufficient {
            balance: 70,
            wanted: 100
        })
    );
    // The error did not break anything.
    assert_eq!(bank.withdraw(70).await, Ok(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_error_is_remote_and_not_retryable() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let notes = rt.namespace::<Notes>().get_by_name("n");
    let err = notes.fail("no such room".into()).await.unwrap_err();
    assert_eq!(err, Error::App("no such room".into()));
    assert!(err.is_remote() && !err.is_retryable() && !err.is_overloaded());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_result_arrives_wrapped_in_a_runtime_result() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let cells = rt.namespace::<Cells>().get_by_name("c");
    let reply: Result<(u32, usize), Error> = cells.visit("a".into()).await;
    assert_eq!(reply, Ok((1, 1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_reaches_the_caller_with_its_message_and_breaks_the_stub() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let ns = rt.namespace::<Recorder>();
    let stub = ns.get_by_name("p");
    stub.record(1).await.unwrap();
    let err = stub.boom("kaboom".into()).await.unwrap_err();
    assert_eq!(err, Error::Panicked("kaboom".into()));
    assert!(err.is_remote());
    assert!(stub.is_broken());
    let later = stub.record(2).await.unwrap_err();
    assert!(
        matches!(later, Error::Disconnected(_)) && later.is_retryable(),
        "{later:?}"
    );
    // A new stub reaches a fresh instance: the in-memory log is gone.
    let fresh = ns.get_by_name("p");
    assert_eq!(fresh.log().await.unwrap(), Vec::<u64>::new());
}

#[test]
fn stubs_and_their_futures_are_send_and_sync() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let stub = rt.namespace::<Cells>().get_by_name("c");
    send_sync(&stub);
    let call = stub.visit("x".into());
    send(&call);
    drop(call);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_future_does_not_borrow_its_stub() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let ns = rt.namespace::<Cells>();
    // The stub is dropped before the call is awaited, and calls made in a
    // closure can be returned from it.
    let call = {
        let stub = ns.get_by_name("short-lived");
        stub.visit("a".into())
    };
    assert_eq!(call.await.unwrap(), (1, 1));
    let stubs = [ns.get_by_name("short-lived")];
    let make = move |i: usize| stubs[0].visit(format!("{i}"));
    assert_eq!(tokio::spawn(make(2)).await.unwrap().unwrap(), (2, 2));
}
