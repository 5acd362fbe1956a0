//! R3: the namespaces of a runtime, and the objects of a namespace with
//! their names and whether they hold data, a page at a time — in process
//! and through a remote client.

use std::collections::BTreeSet;

use do_runtime::{Client, Error, ListIds, Namespace};
use do_tests::{Counter, Kv, builder};

/// Every object of the namespace, page by page.
async fn all_pages(ns: &Namespace<Counter>, limit: usize) -> Vec<do_runtime::ObjectEntry> {
    let mut all = Vec::new();
    let mut options = ListIds::new().limit(limit);
    loop {
        let page = ns.list_ids(options.clone()).await.unwrap();
        assert!(page.objects.len() <= limit);
        all.extend(page.objects);
        match page.cursor {
            Some(cursor) => options = ListIds::new().limit(limit).cursor(cursor),
            None => return all,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_pages_through_every_object_with_names_and_data() {
    let mut rt = builder().build_for_test().unwrap();
    assert!(rt.namespaces().contains(&"Counter".to_owned()));
    let counters = rt.namespace::<Counter>();
    assert!(
        counters
            .list_ids(ListIds::new())
            .await
            .unwrap()
            .objects
            .is_empty()
    );
    let names: Vec<String> = (0..250).map(|i| format!("c{i}")).collect();
    let calls: Vec<_> = names
        .iter()
        .map(|n| counters.get_by_name(n).increment(1))
        .collect();
    for call in calls {
        call.await.unwrap();
    }
    // One object reached by its id alone: listed without a name.
    let unnamed = counters.new_unique_id();
    counters.get(unnamed.clone()).increment(1).await.unwrap();
    // One object that only read: never stored anything, not listed.
    counters.get_by_name("reader").value().await.unwrap();
    // Objects of another namespace are not listed here.
    rt.namespace::<Kv>()
        .get_by_name("other")
        .put_many(vec![("k".into(), "v".into())])
        .await
        .unwrap();

    let all = all_pages(&counters, 64).await;
    assert_eq!(all.len(), 251);
    let ids: Vec<_> = all.iter().map(|o| o.id.to_string()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "in id order");
    assert_eq!(
        ids.iter().collect::<BTreeSet<_>>().len(),
        251,
        "no duplicates"
    );
    let listed: BTreeSet<_> = all.iter().filter_map(|o| o.name.clone()).collect();
    assert_eq!(listed, names.iter().cloned().collect::<BTreeSet<_>>());
    let anonymous = all
        .iter()
        .find(|o| o.id == unnamed)
        .expect("the unnamed object");
    assert_eq!(anonymous.name, None);
    assert!(all.iter().all(|o| o.has_stored_data));
    // Named ids show their names.
    let c7 = all
        .iter()
        .find(|o| o.name.as_deref() == Some("c7"))
        .unwrap();
    assert_eq!(c7.id, counters.id_from_name("c7"));
    assert_eq!(c7.id.name(), Some("c7"));

    // An object whose data is gone stays listed, without data; across a restart.
    rt.namespace::<Kv>()
        .get_by_name("other")
        .delete_all()
        .await
        .unwrap();
    rt.restart().unwrap();
    let kv = rt.namespace::<Kv>().list_ids(ListIds::new()).await.unwrap();
    assert_eq!(kv.objects.len(), 1);
    assert_eq!(kv.objects[0].name.as_deref(), Some("other"));
    assert!(!kv.objects[0].has_stored_data);
    assert_eq!(all_pages(&rt.namespace::<Counter>(), 1000).await.len(), 251);

    // Bad options are typed errors.
    for bad in [
        ListIds::new().limit(0),
        ListIds::new().limit(1001),
        ListIds::new().cursor("zz"),
    ] {
        assert!(matches!(
            rt.namespace::<Counter>().list_ids(bad).await,
            Err(Error::BadRequest(_))
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_works_through_a_remote_client() {
    let rt = builder().build_for_test().unwrap();
    for i in 0..30 {
        rt.namespace::<Counter>()
            .get_by_name(&format!("r{i}"))
            .increment(1)
            .await
            .unwrap();
    }
    let server = rt.server().start().await.unwrap();
    let client = Client::connect(server.local_addr()).await.unwrap();
    assert_eq!(client.namespaces(), rt.namespaces());
    let remote = client.namespace::<Counter>().unwrap();
    let remote_all = all_pages(&remote, 7).await;
    let local_all = all_pages(&rt.namespace::<Counter>(), 1000).await;
    assert_eq!(remote_all, local_all);
    assert_eq!(remote_all.len(), 30);
    assert!(matches!(
        remote.list_ids(ListIds::new().limit(0)).await,
        Err(Error::BadRequest(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_first_reached_by_name_through_a_remote_client_is_listed_with_its_name() {
    let rt = builder().build_for_test().unwrap();
    let server = rt.server().start().await.unwrap();
    let client = Client::connect(server.local_addr()).await.unwrap();
    let remote = client.namespace::<Counter>().unwrap();
    remote.get_by_name("from-afar").increment(1).await.unwrap();
    remote
        .get(remote.new_unique_id())
        .increment(1)
        .await
        .unwrap();
    let all = all_pages(&rt.namespace::<Counter>(), 10).await;
    let names: Vec<Option<&str>> = all.iter().map(|o| o.name.as_deref()).collect();
    assert_eq!(all.len(), 2);
    assert!(names.contains(&Some("from-afar")), "{all:?}");
    assert!(names.contains(&None), "the unique id has no name: {all:?}");
}
