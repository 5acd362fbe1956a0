//! Values and listing without a type (issue 26 item 4; SPEC St1, St9):
//! raw bytes beside serde values, keys without values, undecoded
//! listings, alarms inside transactions, write options on deletes and
//! alarms.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use do_runtime::{Client, Error, ListOptions, ManualClock};
use do_tests::{Blobs, builder, eventually, runtime};

/// How postcard encodes a short string: its length, then its bytes.
fn postcard_string(s: &str) -> Vec<u8> {
    let mut bytes = vec![s.len() as u8];
    bytes.extend_from_slice(s.as_bytes());
    bytes
}

fn value_type_of(result: &Result<impl std::fmt::Debug, Error>, named: &str) -> bool {
    matches!(result, Err(Error::ValueType { key, .. }) if key == named)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_bytes_come_back_as_given_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // Bytes that are also valid postcard, empty bytes, and every byte value.
    let cases: Vec<(String, Vec<u8>)> = vec![
        ("looks-like-postcard".into(), postcard_string("hi")),
        ("empty".into(), Vec::new()),
        ("every-byte".into(), (0..=255u8).collect()),
    ];
    {
        let rt = runtime(dir.path());
        let blobs = rt.namespace::<Blobs>().get_by_name("b");
        for (key, bytes) in &cases {
            blobs.put_raw(key.clone(), bytes.clone()).await.unwrap();
            assert_eq!(
                blobs.get_raw(key.clone()).await.unwrap().as_ref(),
                Some(bytes)
            );
        }
        assert_eq!(blobs.get_raw("missing".into()).await.unwrap(), None);
    }
    let rt = runtime(dir.path());
    let blobs = rt.namespace::<Blobs>().get_by_name("b");
    for (key, bytes) in &cases {
        assert_eq!(
            blobs.get_raw(key.clone()).await.unwrap().as_ref(),
            Some(bytes)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_one_kind_of_value_as_the_other_is_a_typed_error_naming_the_key() {
    let rt = builder().build_for_test().unwrap();
    let blobs = rt.namespace::<Blobs>().get_by_name("kinds");
    // Raw bytes that would decode as a string, were they read as one.
    blobs
        .put_raw("raw".into(), postcard_string("hi"))
        .await
        .unwrap();
    blobs.put_text("text".into(), "hello".into()).await.unwrap();
    let read = blobs.get_text("raw".into()).await;
    assert!(value_type_of(&read, "raw"), "{read:?}");
    let read = blobs.get_raw("text".into()).await;
    assert!(value_type_of(&read, "text"), "{read:?}");
    let listed = blobs.texts().await;
    assert!(
        value_type_of(&listed, "raw"),
        "a typed listing meets it: {listed:?}"
    );
    // Nothing was lost: both read as what they are.
    assert_eq!(
        blobs.get_text("text".into()).await.unwrap().as_deref(),
        Some("hello")
    );
    assert_eq!(
        blobs.get_raw("raw".into()).await.unwrap(),
        Some(postcard_string("hi"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_list_without_their_values_and_undecoded_values_keep_their_kind() {
    let rt = builder().build_for_test().unwrap();
    let blobs = rt.namespace::<Blobs>().get_by_name("mixed");
    blobs.put_text("a:text".into(), "x".into()).await.unwrap();
    blobs.put_raw("a:raw".into(), vec![1, 2, 3]).await.unwrap();
    blobs.put_raw("b:raw".into(), vec![4]).await.unwrap();
    assert_eq!(
        blobs.keys(ListOptions::new()).await.unwrap(),
        ["a:raw", "a:text", "b:raw"]
    );
    assert_eq!(
        blobs
            .keys(ListOptions::new().prefix("a:").reverse(true).limit(1))
            .await
            .unwrap(),
        ["a:text"]
    );
    // Unflushed writes are listed too.
    assert_eq!(
        blobs.write_then_keys("c:new".into()).await.unwrap(),
        ["a:raw", "a:text", "b:raw", "c:new"]
    );
    let entries = blobs.raw_entries().await.unwrap();
    assert_eq!(
        entries,
        [
            ("a:raw".into(), true, vec![1, 2, 3]),
            ("a:text".into(), false, postcard_string("x")),
            ("b:raw".into(), true, vec![4]),
            ("c:new".into(), true, vec![1]),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_values_and_key_listings_work_through_a_remote_client() {
    let rt = builder().build_for_test().unwrap();
    let server = rt.server().start().await.unwrap();
    let client = Client::connect(server.local_addr()).await.unwrap();
    let blobs = client.namespace::<Blobs>().unwrap().get_by_name("remote");
    blobs.put_raw("r".into(), vec![9, 9]).await.unwrap();
    assert_eq!(blobs.get_raw("r".into()).await.unwrap(), Some(vec![9, 9]));
    let read = blobs.get_text("r".into()).await;
    assert!(value_type_of(&read, "r"), "{read:?}");
    assert_eq!(blobs.keys(ListOptions::new()).await.unwrap(), ["r"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_keeps_raw_values_raw_through_an_import() {
    let rt = builder().build_for_test().unwrap();
    let blobs = rt.namespace::<Blobs>().get_by_name("exported");
    blobs.put_raw("raw".into(), vec![0, 1]).await.unwrap();
    blobs.put_text("text".into(), "t".into()).await.unwrap();
    let any = rt.env().namespace_named("Blobs").unwrap();
    let id = blobs.id().clone();
    let records = any.show(&id).await.unwrap().records("Blobs");
    assert_eq!(records.iter().filter(|r| r.raw).count(), 1);
    any.delete_object(&id).await.unwrap();
    assert_eq!(any.import(&id, records).await.unwrap(), 2);
    let blobs = rt.namespace::<Blobs>().get_by_name("exported");
    assert_eq!(blobs.get_raw("raw".into()).await.unwrap(), Some(vec![0, 1]));
    assert_eq!(
        blobs.get_text("text".into()).await.unwrap().as_deref(),
        Some("t")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_set_in_a_transaction_commits_with_it_and_goes_with_a_rollback() {
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let rt = builder()
        .manual_clock(clock.clone())
        .build_for_test()
        .unwrap();
    let blobs = rt.namespace::<Blobs>().get_by_name("txn");
    // Rolled back: neither the key nor the alarm.
    assert!(
        blobs.txn_alarm("k".into(), 1_000, true).await.unwrap(),
        "seen inside"
    );
    assert_eq!(blobs.alarm_ms().await.unwrap(), None);
    assert_eq!(blobs.get_raw("k".into()).await.unwrap(), None);
    // Committed: both, and the alarm fires.
    assert!(blobs.txn_alarm("k".into(), 1_000, false).await.unwrap());
    assert!(blobs.alarm_ms().await.unwrap().is_some());
    assert_eq!(blobs.get_raw("k".into()).await.unwrap(), Some(vec![7]));
    clock.advance(Duration::from_millis(1_000));
    eventually("the alarm rings", || async {
        (blobs.rang().await.unwrap() > 0).then_some(())
    })
    .await;
    // Deleted in a transaction.
    assert!(blobs.txn_alarm("k2".into(), 60_000, false).await.unwrap());
    blobs.txn_delete_alarm().await.unwrap();
    assert_eq!(blobs.alarm_ms().await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_and_alarms_with_allow_unconfirmed_answer_without_waiting_for_their_commit() {
    // A failing commit tells them apart: a confirmed write's caller hears
    // of the failure, an unconfirmed one's was answered before it.
    let fail = Arc::new(AtomicUsize::new(0));
    let rt = builder()
        .__fail_commits(fail.clone())
        .build_for_test()
        .unwrap();
    let ns = rt.namespace::<Blobs>();
    let ready = || {
        eventually("the store comes back", || async {
            let stub = ns.get_by_name("opts");
            stub.put_raw("x".into(), vec![1]).await.ok().map(|()| stub)
        })
    };
    for name in ["delete_many", "delete_all", "set_alarm"] {
        for confirm in [true, false] {
            let stub = ready().await;
            fail.store(1, Ordering::SeqCst);
            let result = match name {
                "delete_many" => stub.delete_keys(vec!["x".into()], confirm).await.map(drop),
                "delete_all" => stub.delete_everything(confirm).await,
                _ => stub.set_alarm_in(60_000, confirm).await,
            };
            if confirm {
                assert!(
                    matches!(result, Err(Error::Storage(_))),
                    "{name}: {result:?}"
                );
            } else {
                assert!(result.is_ok(), "{name}, unconfirmed: {result:?}");
            }
        }
    }
}
