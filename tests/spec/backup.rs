//! A backup restores anywhere: an export imported into an empty data
//! directory (another deployment secret) holds every object, name and key,
//! offline and through the admin API.

use std::collections::BTreeMap;

use do_runtime::admin::{DataDir, ImportOptions, Record};
use do_runtime::bytes::Bytes;
use do_runtime::gateway::admin::group_by_object;
use do_runtime::http::{self, StatusCode};
use do_runtime::{Error, ListIds, StoredValue};
use do_tests::{Counter, Kv, builder};

/// Every object of `class` in `data`: its name (or, without one, its id's
/// random half) and its keys with their values.
type Objects = BTreeMap<String, Vec<(String, StoredValue)>>;

fn objects(data: &DataDir, class: &str) -> Objects {
    let page = data
        .list_ids(class, ListIds::new().limit(1000))
        .expect("a listing");
    page.objects
        .iter()
        .map(|o| {
            let dump = data.show(class, &o.id).expect("the object");
            let who = match &o.name {
                Some(name) => format!("name {name}"),
                None => format!("id {}", &o.id.to_string()[..32]),
            };
            (who, dump.entries)
        })
        .collect()
}

/// The export of every object of `data`, as `do-cli export` writes it.
fn export(data: &DataDir) -> Vec<Record> {
    let mut records = Vec::new();
    for class in data.namespaces() {
        let page = data.list_ids(&class, ListIds::new().limit(1000)).unwrap();
        for object in page.objects {
            records.extend(data.show(&class, &object.id).unwrap().records(&class));
        }
    }
    records
}

/// A data directory with named and unnamed objects of two classes.
async fn source() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let rt = builder().data_dir(dir.path()).build().unwrap();
    let counters = rt.namespace::<Counter>();
    for (name, n) in [("alpha", 3), ("beta", 5)] {
        counters.get_by_name(name).increment(n).await.unwrap();
    }
    let unnamed = counters.new_unique_id();
    counters.get(unnamed.clone()).increment(7).await.unwrap();
    rt.namespace::<Kv>()
        .get_by_name("shelf")
        .put_many(vec![("a".into(), "1".into()), ("b".into(), "2".into())])
        .await
        .unwrap();
    rt.shutdown().await;
    (dir, unnamed.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_imported_into_an_empty_directory_keeps_every_object_name_and_key() {
    let (from, unnamed) = source().await;
    let old = DataDir::open(from.path()).unwrap();
    let records = export(&old);
    assert!(
        records.iter().all(|r| r.deployment.is_some()),
        "{records:?}"
    );
    let empty = tempfile::tempdir().unwrap();
    let to = empty.path().join("restored");
    let new = DataDir::open_or_create(&to, None).unwrap();
    // Another deployment: the unnamed object has no name to re-make its id
    // from, and is refused, saying how to keep it.
    let groups = group_by_object(records.clone());
    let mut refused = Vec::new();
    for group in &groups {
        if let Err(e) = new.import(group, ImportOptions::new()).await {
            refused.push((group[0].id.clone(), e));
        }
    }
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].0, unnamed);
    assert!(
        matches!(&refused[0].1, Error::BadRequest(m) if m.contains("keep")),
        "{:?}",
        refused[0].1
    );
    let unnamed_group = groups.iter().find(|g| g[0].id == unnamed).unwrap();
    new.import(unnamed_group, ImportOptions::new().keep_unique_ids(true))
        .await
        .unwrap();
    for class in ["Counter", "Kv"] {
        assert_eq!(objects(&new, class), objects(&old, class), "{class}");
    }
    // The unnamed object kept its identity, under a new id text.
    let listed = new.list_ids("Counter", ListIds::new()).unwrap();
    let moved = listed.objects.iter().find(|o| o.name.is_none()).unwrap();
    assert_eq!(moved.id.to_string()[..32], unnamed[..32]);
    assert_ne!(moved.id.to_string(), unnamed);
    new.close();
    old.close();
    // A runtime on the restored directory serves them.
    let rt = builder().data_dir(&to).build().unwrap();
    let counters = rt.namespace::<Counter>();
    assert_eq!(counters.get_by_name("alpha").value().await.unwrap(), 3);
    assert_eq!(counters.get_by_name("beta").increment(1).await.unwrap(), 6);
    assert_eq!(counters.get(moved.id.clone()).value().await.unwrap(), 7);
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_imported_through_the_admin_api_is_exported_back_the_same() {
    let (from, unnamed) = source().await;
    let old = DataDir::open(from.path()).unwrap();
    let records = export(&old);
    let empty = tempfile::tempdir().unwrap();
    let rt = builder().data_dir(empty.path()).build().unwrap();
    let gateway = rt.gateway().admin("s3cret").start().await.unwrap();
    let post = |path: &str, body: String| {
        http::Request::post(path)
            .header("host", "gateway")
            .header("authorization", "Bearer s3cret")
            .body(Bytes::from(body))
            .unwrap()
    };
    let mut body = String::new();
    for record in &records {
        body.push_str(&serde_json::to_string(record).unwrap());
        body.push('\n');
    }
    let addr = gateway.local_addr();
    let refused = do_tests::client::http(addr, post("/admin/import", body.clone())).await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let taken = do_tests::client::http(addr, post("/admin/import?keepUniqueIds=true", body)).await;
    assert_eq!(taken.status(), StatusCode::OK, "{:?}", taken.body());
    // Every object exports back as it was (ids of this deployment), names
    // included, also when asked for by id (the name comes from the
    // directory, as offline).
    let listing = do_tests::client::http(
        addr,
        http::Request::get("/admin/namespaces/Counter/objects")
            .header("host", "gateway")
            .header("authorization", "Bearer s3cret")
            .body(Bytes::new())
            .unwrap(),
    )
    .await;
    let listing: serde_json::Value = serde_json::from_slice(listing.body()).unwrap();
    let objects = listing["objects"].as_array().unwrap();
    assert_eq!(objects.len(), 3, "{listing}");
    for object in objects {
        let id = object["id"].as_str().unwrap();
        let shown = do_tests::client::http(
            addr,
            http::Request::get(format!("/admin/namespaces/Counter/objects/{id}"))
                .header("host", "gateway")
                .header("authorization", "Bearer s3cret")
                .body(Bytes::new())
                .unwrap(),
        )
        .await;
        let shown: serde_json::Value = serde_json::from_slice(shown.body()).unwrap();
        assert_eq!(shown["name"], object["name"], "{shown}");
        if object["name"].is_null() {
            assert_eq!(&id[..32], &unnamed[..32]);
        }
    }
    let names: Vec<&str> = objects.iter().filter_map(|o| o["name"].as_str()).collect();
    assert_eq!(names.len(), 2, "{listing}");
    assert_eq!(
        rt.namespace::<Counter>()
            .get_by_name("alpha")
            .value()
            .await
            .unwrap(),
        3
    );
    let shelf = rt
        .namespace::<Kv>()
        .get_by_name("shelf")
        .get_many(vec!["a".into(), "b".into()])
        .await
        .unwrap();
    assert_eq!(shelf.len(), 2);
    rt.shutdown().await;
    old.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_given_the_deployment_secret_makes_the_same_ids_and_refuses_another_directory() {
    let (from, unnamed) = source().await;
    let old = DataDir::open(from.path()).unwrap();
    let secret = old.reveal_deployment_secret();
    let records = export(&old);
    old.close();
    // A new directory under the same secret: ids keep their text, the
    // unnamed object's too, without any option.
    let empty = tempfile::tempdir().unwrap();
    let restored = DataDir::open_or_create(empty.path(), Some(secret.as_bytes())).unwrap();
    for group in group_by_object(records) {
        restored.import(&group, ImportOptions::new()).await.unwrap();
    }
    restored.close();
    let rt = builder()
        .data_dir(empty.path())
        .deployment_secret(&secret)
        .build()
        .unwrap();
    let counters = rt.namespace::<Counter>();
    let id = counters.id_from_string(&unnamed).unwrap();
    assert_eq!(counters.get(id).value().await.unwrap(), 7);
    assert_eq!(counters.get_by_name("beta").value().await.unwrap(), 5);
    rt.shutdown().await;
    // The source directory was made under another secret than a new one.
    let other = [7u8; 32];
    let refused = builder()
        .data_dir(from.path())
        .deployment_secret(other)
        .build();
    assert!(
        matches!(&refused, Err(Error::Setup(m)) if m.contains("deployment secret")),
        "{:?}",
        refused.err()
    );
    let bad = builder()
        .data_dir(tempfile::tempdir().unwrap().path())
        .deployment_secret("too short")
        .build();
    assert!(matches!(bad, Err(Error::Setup(_))));
}
