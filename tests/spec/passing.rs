//! B2: ids and stubs as arguments and results, in process and through a
//! remote client.

use do_runtime::{Client, DurableObjectId, Error};
use do_tests::{Counter, Notes, Passer, builder};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_arrives_as_the_same_id_with_its_name() {
    let rt = builder().build_for_test().unwrap();
    let passer = rt.namespace::<Passer>().get_by_name("p");
    let counters = rt.namespace::<Counter>();
    let named = counters.id_from_name("hits");
    let echoed = passer.echo_id(named.clone()).await.unwrap();
    assert_eq!(echoed, named);
    assert_eq!(echoed.name(), Some("hits"));
    let unique = counters.new_unique_id();
    let echoed = passer.echo_id(unique.clone()).await.unwrap();
    assert_eq!((echoed.name(), &echoed), (None, &unique));
    // And in storage, across an eviction.
    passer.remember(named.clone()).await.unwrap();
    rt.evict(passer.id()).await.unwrap();
    assert_eq!(passer.recall().await.unwrap(), Some(named));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stub_passed_to_a_method_reaches_the_same_object() {
    let rt = builder().build_for_test().unwrap();
    let passer = rt.namespace::<Passer>().get_by_name("p");
    let counter = rt.namespace::<Counter>().get_by_name("passed");
    assert_eq!(passer.bump(counter.clone(), 5).await.unwrap(), 5);
    assert_eq!(counter.value().await.unwrap(), 5, "the same object");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stub_returned_by_a_method_works_for_the_caller() {
    let rt = builder().build_for_test().unwrap();
    let passer = rt.namespace::<Passer>().get_by_name("p");
    let counter = passer.counter_for("returned".into()).await.unwrap();
    assert_eq!(counter.name(), Some("returned"));
    assert_eq!(counter.increment(2).await.unwrap(), 2);
    let same = rt.namespace::<Counter>().get_by_name("returned");
    assert_eq!(same.value().await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_of_another_namespace_or_deployment_is_refused_as_wrong_namespace() {
    let rt = builder().build_for_test().unwrap();
    let passer = rt.namespace::<Passer>().get_by_name("p");
    // A stub of `Counter` whose id is a `Notes` id.
    let notes_id = rt.namespace::<Notes>().id_from_name("n");
    let misfit = rt.namespace::<Counter>().get(notes_id);
    let refused = passer.bump(misfit, 1).await;
    assert!(
        matches!(&refused, Err(Error::WrongNamespace { class }) if class == "Counter"),
        "{refused:?}"
    );
    // An id made by another deployment (another secret): its tag and MAC
    // mean nothing here.
    let elsewhere = builder().build_for_test().unwrap();
    let foreign = elsewhere.namespace::<Counter>().id_from_name("hits");
    let refused = passer.echo_id(foreign).await;
    assert!(
        matches!(&refused, Err(Error::WrongNamespace { .. })),
        "{refused:?}"
    );
    // The stub and the object carry on.
    let ok = passer
        .echo_id(rt.namespace::<Counter>().id_from_name("x"))
        .await;
    assert!(ok.is_ok(), "{ok:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_in_text_form_is_checked_the_same_way() {
    let rt = builder().build_for_test().unwrap();
    let counters = rt.namespace::<Counter>();
    let passer = rt.namespace::<Passer>().get_by_name("p");
    let id = counters.id_from_name("hits");
    let text = serde_json::to_value(&id).unwrap();
    assert_eq!(text["id"], id.to_string());
    assert_eq!(text["name"], "hits");
    let post = |body: serde_json::Value| {
        let request = do_runtime::http::Request::post("http://do/")
            .body(do_runtime::bytes::Bytes::from(body.to_string()))
            .unwrap();
        passer.fetch(request)
    };
    let answer = post(text.clone()).await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.body(), id.to_string().as_bytes());
    // A name that does not give the id's bytes.
    let mut lying = text.clone();
    lying["name"] = "other".into();
    let answer = post(lying).await.unwrap();
    assert_eq!(answer.status(), 400);
    let said = String::from_utf8_lossy(answer.body()).into_owned();
    assert!(said.contains("not made from the name"), "{said}");
    // Bytes whose MAC does not hold.
    let mut forged = text.clone();
    let mut hex = id.to_string();
    hex.replace_range(0..2, if hex.starts_with("00") { "11" } else { "00" });
    forged["id"] = hex.into();
    forged["name"] = serde_json::Value::Null;
    let answer = post(forged).await.unwrap();
    assert_eq!(answer.status(), 400);
    let said = String::from_utf8_lossy(answer.body()).into_owned();
    assert!(said.contains("does not belong to namespace"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_and_stubs_cross_a_remote_client_both_ways() {
    let rt = builder().build_for_test().unwrap();
    let server = rt.server().start().await.unwrap();
    let client = Client::connect(server.local_addr()).await.unwrap();
    let passer = client.namespace::<Passer>().unwrap().get_by_name("p");
    let counters = client.namespace::<Counter>().unwrap();
    // An id, out and back.
    let id: DurableObjectId = counters.id_from_name("remote");
    assert_eq!(passer.echo_id(id.clone()).await.unwrap(), id);
    // A stub the client made, as an argument: the object calls it locally.
    let counter = counters.get_by_name("remote");
    assert_eq!(passer.bump(counter.clone(), 3).await.unwrap(), 3);
    assert_eq!(counter.value().await.unwrap(), 3);
    // A stub as a result: a working stub through the client's connection.
    let returned = passer.counter_for("remote".into()).await.unwrap();
    assert_eq!(returned.increment(4).await.unwrap(), 7);
    assert_eq!(
        rt.namespace::<Counter>()
            .get_by_name("remote")
            .value()
            .await
            .unwrap(),
        7
    );
    // A misfit through the client is refused as in process.
    let misfit = counters.get(client.namespace::<Notes>().unwrap().id_from_name("n"));
    let refused = passer.bump(misfit, 1).await;
    assert!(
        matches!(&refused, Err(Error::WrongNamespace { .. })),
        "{refused:?}"
    );
}
