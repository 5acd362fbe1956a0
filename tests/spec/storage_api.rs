//! St1–St3: the full key-value API, list options and limits.

use do_runtime::{Error, ListOptions};
use do_tests::{Kv, runtime};

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

async fn filled(rt: &do_runtime::Runtime, name: &str) -> do_runtime::Stub<Kv> {
    let kv = rt.namespace::<Kv>().get_by_name(name);
    let keys = ["a", "b", "ba", "bb", "bc", "c", "d"];
    kv.put_many(
        keys.iter()
            .map(|k| (k.to_string(), k.to_string()))
            .collect(),
    )
    .await
    .unwrap();
    kv
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_many_returns_the_keys_found_in_key_order() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let kv = filled(&rt, "gm").await;
    let found = kv.get_many(s(&["d", "zz", "a", "b"])).await.unwrap();
    assert_eq!(found.keys().cloned().collect::<Vec<_>>(), ["a", "b", "d"]);
    assert_eq!(found["d"], "d");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_many_counts_the_keys_that_existed() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let kv = filled(&rt, "dm").await;
    assert_eq!(kv.delete_many(s(&["a", "a", "zz", "b"])).await.unwrap(), 2);
    assert_eq!(
        kv.keys(ListOptions::new()).await.unwrap(),
        ["ba", "bb", "bc", "c", "d"]
    );
    kv.delete_all().await.unwrap();
    assert_eq!(
        kv.keys(ListOptions::new()).await.unwrap(),
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_honours_each_option() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let kv = filled(&rt, "opts").await;
    let keys = |o: ListOptions| {
        let kv = kv.clone();
        async move { kv.keys(o).await.unwrap() }
    };
    assert_eq!(
        keys(ListOptions::new()).await,
        ["a", "b", "ba", "bb", "bc", "c", "d"]
    );
    assert_eq!(
        keys(ListOptions::new().start("bb")).await,
        ["bb", "bc", "c", "d"]
    );
    assert_eq!(
        keys(ListOptions::new().start_after("bb")).await,
        ["bc", "c", "d"]
    );
    assert_eq!(keys(ListOptions::new().end("bb")).await, ["a", "b", "ba"]);
    assert_eq!(
        keys(ListOptions::new().prefix("b")).await,
        ["b", "ba", "bb", "bc"]
    );
    assert_eq!(
        keys(ListOptions::new().reverse(true)).await,
        ["d", "c", "bc", "bb", "ba", "b", "a"]
    );
    assert_eq!(keys(ListOptions::new().limit(2)).await, ["a", "b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_combines_options() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let kv = filled(&rt, "combo").await;
    let keys = |o: ListOptions| {
        let kv = kv.clone();
        async move { kv.keys(o).await.unwrap() }
    };
    assert_eq!(
        keys(ListOptions::new().prefix("b").reverse(true).limit(2)).await,
        ["bc", "bb"]
    );
    assert_eq!(
        keys(ListOptions::new().start_after("b").end("c")).await,
        ["ba", "bb", "bc"]
    );
    assert_eq!(
        keys(ListOptions::new().prefix("b").start("bb")).await,
        ["bb", "bc"]
    );
    assert_eq!(
        keys(ListOptions::new().prefix("b").end("bb").reverse(true)).await,
        ["ba", "b"]
    );
    assert_eq!(
        keys(ListOptions::new().start("c").end("b")).await,
        Vec::<String>::new()
    );
    assert_eq!(
        keys(ListOptions::new().prefix("zz")).await,
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_sees_unflushed_puts_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let kv = filled(&rt, "overlay").await;
    let got = kv
        .write_then_keys(
            s(&["bab", "e"]),
            s(&["bb", "c"]),
            ListOptions::new().start("b").limit(5),
        )
        .await
        .unwrap();
    assert_eq!(got, ["b", "ba", "bab", "bc", "d"]);
    let rev = kv
        .write_then_keys(s(&[]), s(&["d"]), ListOptions::new().reverse(true).limit(3))
        .await
        .unwrap();
    assert_eq!(rev, ["e", "bc", "bab"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contradictory_list_options_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let kv = filled(&rt, "bad-opts").await;
    let both = kv
        .keys(ListOptions::new().start("a").start_after("a"))
        .await;
    assert!(
        matches!(both, Err(Error::InvalidListOptions(ref m)) if m.contains("start_after")),
        "{both:?}"
    );
    let zero = kv.keys(ListOptions::new().limit(0)).await;
    assert!(
        matches!(zero, Err(Error::InvalidListOptions(ref m)) if m.contains("limit")),
        "{zero:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_over_128_keys_are_refused_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let kv = rt.namespace::<Kv>().get_by_name("batch");
    let keys: Vec<String> = (0..129).map(|i| format!("k{i:03}")).collect();
    let entries: Vec<(String, String)> = keys.iter().map(|k| (k.clone(), k.clone())).collect();
    let too_many = Error::BatchTooLarge {
        len: 129,
        limit: 128,
    };
    assert_eq!(kv.put_many(entries.clone()).await.unwrap_err(), too_many);
    assert_eq!(kv.get_many(keys.clone()).await.unwrap_err(), too_many);
    assert_eq!(kv.delete_many(keys.clone()).await.unwrap_err(), too_many);
    assert_eq!(
        kv.keys(ListOptions::new()).await.unwrap(),
        Vec::<String>::new()
    );
    // 128 is fine.
    kv.put_many(entries[..128].to_vec()).await.unwrap();
    assert_eq!(kv.keys(ListOptions::new()).await.unwrap().len(), 128);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_over_128_kib_encoded_are_refused_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let kv = rt.namespace::<Kv>().get_by_name("big");
    // A Vec<u8> of n bytes encodes as a 3-byte length (n ≥ 16 384) plus n bytes.
    let max = 128 * 1024 - 3;
    kv.put_bytes("fits".into(), vec![7; max]).await.unwrap();
    assert_eq!(
        kv.get_bytes("fits".into()).await.unwrap().map(|v| v.len()),
        Some(max)
    );
    let err = kv
        .put_bytes("too-big".into(), vec![7; max + 1])
        .await
        .unwrap_err();
    assert_eq!(
        err,
        Error::ValueTooLarge {
            key: "too-big".into(),
            len: 128 * 1024 + 1,
            limit: 128 * 1024
        }
    );
    // One oversized value spoils the whole batch.
    let mut entries = vec![("ok".to_string(), "small".to_string())];
    entries.push(("huge".into(), "x".repeat(200 * 1024)));
    assert!(
        matches!(kv.put_many(entries).await, Err(Error::ValueTooLarge { ref key, .. }) if key == "huge")
    );
    assert_eq!(kv.keys(ListOptions::new()).await.unwrap(), ["fits"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_keys_are_refused_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let kv = rt.namespace::<Kv>().get_by_name("keys");
    let long = "k".repeat(2049);
    let too_long = Error::KeyTooLarge {
        len: 2049,
        limit: 2048,
    };
    assert_eq!(kv.get_many(vec![long.clone()]).await.unwrap_err(), too_long);
    assert_eq!(
        kv.delete_many(vec![long.clone()]).await.unwrap_err(),
        too_long
    );
    assert_eq!(
        kv.put_many(vec![("a".into(), "1".into()), (long, "2".into())])
            .await
            .unwrap_err(),
        too_long
    );
    assert_eq!(
        kv.keys(ListOptions::new()).await.unwrap(),
        Vec::<String>::new()
    );
    kv.put_bytes("k".repeat(2048), vec![]).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unconfirmed_and_synced_writes_are_stored() {
    let dir = tempfile::tempdir().unwrap();
    {
        let rt = runtime(dir.path());
        let kv = rt.namespace::<Kv>().get_by_name("modes");
        kv.put_unconfirmed("fast".into(), "1".into()).await.unwrap();
        kv.put_and_sync("synced".into(), "2".into()).await.unwrap();
        assert_eq!(
            kv.keys(ListOptions::new()).await.unwrap(),
            ["fast", "synced"]
        );
    }
    let rt = runtime(dir.path());
    let kv = rt.namespace::<Kv>().get_by_name("modes");
    assert_eq!(
        kv.keys(ListOptions::new()).await.unwrap(),
        ["fast", "synced"]
    );
}
