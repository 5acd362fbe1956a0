//! St1 (get, put, delete, list), St3, St6, St8.

use do_runtime::Error;
use do_tests::{Notes, runtime};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_then_get_returns_the_value_and_overwrites_replace_it() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let notes = rt.namespace::<Notes>().get_by_name("kv");
    assert_eq!(notes.get("a".into()).await.unwrap(), None);
    notes.put("a".into(), "1".into()).await.unwrap();
    assert_eq!(notes.get("a".into()).await.unwrap().as_deref(), Some("1"));
    notes.put("a".into(), "2".into()).await.unwrap();
    assert_eq!(notes.get("a".into()).await.unwrap().as_deref(), Some("2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_tells_whether_the_key_existed() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let notes = rt.namespace::<Notes>().get_by_name("kv");
    notes.put("a".into(), "1".into()).await.unwrap();
    assert!(notes.delete("a".into()).await.unwrap());
    assert!(!notes.delete("a".into()).await.unwrap());
    assert_eq!(notes.get("a".into()).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_returns_entries_in_utf8_byte_order_and_honours_the_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let notes = rt.namespace::<Notes>().get_by_name("kv");
    for key in ["b", "a", "ab", "é", "Z", "a\u{0}"] {
        notes.put(key.into(), key.to_uppercase()).await.unwrap();
    }
    let keys: Vec<String> = notes
        .list(None)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(keys, ["Z", "a", "a\u{0}", "ab", "b", "é"]);
    let under_a = notes.list(Some("a".into())).await.unwrap();
    assert_eq!(
        under_a,
        [
            ("a".into(), "A".into()),
            ("a\u{0}".into(), "A\u{0}".into()),
            ("ab".into(), "AB".into())
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_see_the_objects_own_unflushed_writes() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let notes = rt.namespace::<Notes>().get_by_name("ryw");
    notes.put("old".into(), "x".into()).await.unwrap();
    let (read, keys) = notes.put_then_read("new".into(), "y".into()).await.unwrap();
    assert_eq!(read.as_deref(), Some("y"));
    assert_eq!(keys, ["new", "old"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_a_value_as_the_wrong_type_is_an_error_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let notes = rt.namespace::<Notes>().get_by_name("types");
    notes
        .put("greeting".into(), "hello, world".into())
        .await
        .unwrap();
    match notes.get_number("greeting".into()).await {
        Err(Error::ValueType { key, type_name, .. }) => {
            assert_eq!(key, "greeting");
            assert!(type_name.contains("u64"), "{type_name}");
        }
        other => panic!("gave {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_key_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let notes = rt.namespace::<Notes>().get_by_name("limits");
    let key = "k".repeat(2049);
    let err = notes.put(key, "v".into()).await.unwrap_err();
    assert_eq!(
        err,
        Error::KeyTooLarge {
            len: 2049,
            limit: 2048
        }
    );
    assert_eq!(notes.list(None).await.unwrap(), vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_see_only_their_own_keys() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let ns = rt.namespace::<Notes>();
    let (a, b) = (ns.get_by_name("a"), ns.get_by_name("b"));
    a.put("shared".into(), "from a".into()).await.unwrap();
    a.put("only-a".into(), "1".into()).await.unwrap();
    b.put("shared".into(), "from b".into()).await.unwrap();
    assert_eq!(
        a.get("shared".into()).await.unwrap().as_deref(),
        Some("from a")
    );
    assert_eq!(
        b.get("shared".into()).await.unwrap().as_deref(),
        Some("from b")
    );
    assert_eq!(b.get("only-a".into()).await.unwrap(), None);
    assert_eq!(
        b.list(None).await.unwrap(),
        [("shared".into(), "from b".into())]
    );

    b.delete_all().await.unwrap();
    assert_eq!(b.list(None).await.unwrap(), vec![]);
    assert_eq!(
        a.list(None).await.unwrap().len(),
        2,
        "delete_all of b left a untouched"
    );
}
