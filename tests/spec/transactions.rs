//! St4: transactions commit atomically, re-run on conflict, roll back.

use do_runtime::{Error, MAX_TRANSACTION_ATTEMPTS};
use do_tests::{TxnLab, runtime};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_without_conflict_runs_once_and_commits() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let lab = rt.namespace::<TxnLab>().get_by_name("plain");
    assert_eq!(lab.add_hundred("x".into(), 0).await.unwrap(), (1, 100));
    assert_eq!(lab.get("x".into()).await.unwrap(), Some(100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_whose_read_key_was_written_meanwhile_reruns_and_ends_right() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let lab = rt.namespace::<TxnLab>().get_by_name("conflict");
    // First run: reads 0, a call bumps x to 1 meanwhile → conflict.
    // Second run: reads 1, writes 101.
    assert_eq!(lab.add_hundred("x".into(), 1).await.unwrap(), (2, 101));
    assert_eq!(lab.get("x".into()).await.unwrap(), Some(101));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_inside_a_listed_range_is_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let lab = rt.namespace::<TxnLab>().get_by_name("range");
    lab.bump("p:a".into()).await.unwrap();
    // First run counts 1 key, then p:new appears → conflict; second run counts 2.
    assert_eq!(lab.count_prefix("p:".into()).await.unwrap(), (2, 2));
    assert_eq!(lab.get("count".into()).await.unwrap(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_that_always_conflicts_gives_up_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let lab = rt.namespace::<TxnLab>().get_by_name("hopeless");
    let err = lab.add_hundred("x".into(), u32::MAX).await.unwrap_err();
    assert_eq!(
        err,
        Error::TransactionConflict {
            attempts: MAX_TRANSACTION_ATTEMPTS
        }
    );
    // Only the interleaved bumps were stored, never the transaction's write.
    assert_eq!(
        lab.get("x".into()).await.unwrap(),
        Some(MAX_TRANSACTION_ATTEMPTS as i64)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_writes_of_a_transaction_commit_together() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let lab = rt.namespace::<TxnLab>().get_by_name("bank");
    for _ in 0..50 {
        lab.bump("alice".into()).await.unwrap();
    }
    assert!(
        lab.transfer("alice".into(), "bob".into(), 30)
            .await
            .unwrap()
    );
    assert_eq!(lab.get("alice".into()).await.unwrap(), Some(20));
    assert_eq!(lab.get("bob".into()).await.unwrap(), Some(30));
    // Not enough left: the closure rolls back and nothing moves.
    assert!(
        !lab.transfer("alice".into(), "bob".into(), 30)
            .await
            .unwrap()
    );
    assert_eq!(lab.get("alice".into()).await.unwrap(), Some(20));
    assert_eq!(lab.get("bob".into()).await.unwrap(), Some(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_writes_nothing_and_does_not_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let lab = rt.namespace::<TxnLab>().get_by_name("rollback");
    assert_eq!(lab.write_then_rollback("k".into()).await.unwrap(), 1);
    assert_eq!(lab.get("k".into()).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_from_the_closure_aborts_and_reaches_the_caller_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let lab = rt.namespace::<TxnLab>().get_by_name("abort");
    let err = lab
        .write_then_fail("k".into(), "insufficient funds".into())
        .await
        .unwrap_err();
    assert_eq!(err, Error::App("insufficient funds".into()));
    assert_eq!(lab.get("k".into()).await.unwrap(), None);
}
