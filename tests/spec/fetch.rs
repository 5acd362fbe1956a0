//! C5: `fetch` handlers, in process and through a remote client: requests
//! arrive unchanged, responses come back whole, failures are typed errors.

use do_runtime::bytes::Bytes;
use do_runtime::http::{self, StatusCode};
use do_runtime::{Client, Error, Request, Response, Stub};
use do_tests::{Counter, Web, builder};

fn request(method: &str, uri: &str, body: &'static [u8]) -> Request {
    http::Request::builder()
        .method(method)
        .uri(uri)
        .header("x-in-one", "1")
        .header("x-in-many", "a")
        .header("x-in-many", "b")
        .header("content-type", "application/octet-stream")
        .body(Bytes::from_static(body))
        .expect("a valid request")
}

/// The echo checks shared by the in-process and the remote test.
async fn requests_arrive_unchanged(stub: &Stub<Web>) {
    for method in ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        let response = stub
            .fetch(request(
                method,
                "http://do/a/b%20c?x=1&y=%2F",
                b"\x00\x01body\xff",
            ))
            .await
            .expect("the handler answers");
        assert_eq!(response.status(), StatusCode::CREATED);
        let headers = response.headers();
        assert_eq!(headers["x-method"], method);
        assert_eq!(headers["x-path"], "/a/b%20c");
        assert_eq!(headers["x-query"], "x=1&y=%2F");
        assert_eq!(headers["x-in-one"], "1");
        let many: Vec<_> = headers.get_all("x-in-many").iter().collect();
        assert_eq!(many, ["a", "b"], "repeated headers keep their order");
        assert_eq!(response.body().as_ref(), b"\x00\x01body\xff");
    }
    // A URL alone is a GET with no body; the host need not resolve.
    let response = stub.fetch("http://do/plain?q").await.expect("answers");
    assert_eq!(response.headers()["x-method"], "GET");
    assert_eq!(response.headers()["x-query"], "q");
    assert!(response.body().is_empty());
    // Large bodies both ways.
    let big = vec![7u8; 4 * 1024 * 1024];
    let response = stub
        .fetch(
            http::Request::post("http://do/echo")
                .body(big.clone())
                .expect("valid"),
        )
        .await
        .expect("answers");
    assert_eq!(response.body().len(), big.len());
    assert!(response.body().iter().all(|b| *b == 7));
    let response = stub
        .fetch("http://do/big?n=3000000")
        .await
        .expect("answers");
    assert_eq!(response.body().len(), 3_000_000);
}

/// The failure checks shared by the in-process and the remote test.
async fn failures_are_typed_errors(stub: &Stub<Web>) {
    assert_eq!(
        stub.fetch("http://do/error").await.unwrap_err(),
        Error::app("the handler failed")
    );
    assert!(matches!(
        stub.fetch("http://do/storage-error").await,
        Err(Error::KeyTooLarge { len: 5000, .. })
    ));
    assert!(matches!(
        stub.fetch("http://exa mple/").await,
        Err(Error::BadRequest(_))
    ));
    match stub.fetch("http://do/panic").await {
        Err(Error::Panicked(message)) => assert!(message.contains("the fetch handler panicked")),
        other => panic!("expected a panic, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_in_process_delivers_requests_and_responses_whole() {
    let rt = builder().build_for_test().unwrap();
    let stub = rt.namespace::<Web>().get_by_name("fetch-local");
    requests_arrive_unchanged(&stub).await;
    failures_are_typed_errors(&rt.namespace::<Web>().get_by_name("fetch-local-errors")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_through_a_remote_client_behaves_the_same() {
    let rt = builder().build_for_test().unwrap();
    let server = rt.server().start().await.unwrap();
    let client = Client::connect(server.local_addr()).await.unwrap();
    let web = client.namespace::<Web>().unwrap();
    requests_arrive_unchanged(&web.get_by_name("fetch-remote")).await;
    failures_are_typed_errors(&web.get_by_name("fetch-remote-errors")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_writes_are_durable_and_ordered_like_calls() {
    let mut rt = builder().build_for_test().unwrap();
    let stub = rt.namespace::<Web>().get_by_name("fetch-count");
    let calls: Vec<_> = (0..50).map(|_| stub.fetch("http://do/count")).collect();
    for (i, call) in calls.into_iter().enumerate() {
        let response: Response = call.await.unwrap();
        assert_eq!(response.body().as_ref(), (i + 1).to_string().as_bytes());
    }
    rt.restart().unwrap();
    let stub = rt.namespace::<Web>().get_by_name("fetch-count");
    let response = stub.fetch("http://do/count").await.unwrap();
    assert_eq!(response.body().as_ref(), b"51");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untyped_fetch_by_class_name_and_its_errors() {
    let rt = builder().build_for_test().unwrap();
    let env = rt.env();
    let web = env.namespace_named("Web").unwrap();
    let response = web
        .get_by_name("untyped")
        .fetch("http://do/x")
        .await
        .unwrap();
    assert_eq!(response.headers()["x-path"], "/x");
    // Untyped callers see the handler's errors as failures inside the
    // object (`App`), whatever runtime error caused them.
    assert_eq!(
        web.get_by_name("untyped")
            .fetch("http://do/error")
            .await
            .unwrap_err(),
        Error::app("the handler failed")
    );
    match web
        .get_by_name("untyped")
        .fetch("http://do/storage-error")
        .await
    {
        Err(Error::App(message)) => assert!(message.contains("key"), "{message}"),
        other => panic!("expected an App error, got {other:?}"),
    }
    assert!(matches!(
        env.namespace_named("Nope"),
        Err(Error::NotRegistered(class)) if class == "Nope"
    ));
    // A class without a fetch handler.
    let counters = env.namespace_named("Counter").unwrap();
    assert!(matches!(
        counters.get_by_name("c").fetch("http://do/").await,
        Err(Error::UnknownMethod { .. })
    ));
    // The typed namespace still reaches the same object.
    let _typed = rt.namespace::<Counter>();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_handlers_are_not_reachable_as_calls() {
    // A call with a handler's method id (as a stub, or a remote peer, could
    // send) gets UnknownMethod: handlers run only for the runtime's own events.
    let rt = builder().build_for_test().unwrap();
    let stub = rt.namespace::<Web>().get_by_name("no-handler-calls");
    let raw = do_runtime::__private::Client::raw(&*stub);
    let id = do_runtime::__private::method_id("websocket_message");
    let forged: Result<(), Error> =
        do_runtime::__private::call(raw, id, Ok(vec![1, 0, 0]), |_| Ok(()), Err).await;
    assert!(
        matches!(forged, Err(Error::UnknownMethod { .. })),
        "{forged:?}"
    );
    assert_eq!(stub.sockets(None).await.unwrap(), 0);
}
