//! C6 with R1: a WebSocket accepted by an object of another runtime,
//! reached through a remote client, is completed by the gateway that
//! received the upgrade (a front router, as in Cloudflare). The object's
//! runtime serves the socket (hibernation, auto-responses, closes, errors)
//! and the connection between the runtimes carries its bytes both ways.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use do_runtime::gateway::Gateway;
use do_runtime::http::StatusCode;
use do_runtime::{Client, Request, Server, TestRuntime};
use do_tests::client::{
    ask, binary_and_many_messages_echo_in_order, close_three_ways, connect, get,
    invalid_utf8_closes_with_1007, next, next_text, send, try_connect,
};
use do_tests::{Web, builder, eventually};
use tokio_tungstenite::tungstenite::Message;

/// A runtime that owns the `Web` objects and serves them over TCP (the
/// back), and another whose gateway forwards `/{room}/{rest}` to the
/// room's object through a remote client (the front).
struct FrontAndBack {
    back: TestRuntime,
    server: Option<Server>,
    front: TestRuntime,
    gateway: Gateway,
    client: Client,
}

async fn front_and_back() -> FrontAndBack {
    front_and_back_holding(None).await
}

/// [`front_and_back`] whose front, when given `hold`, waits for it after
/// the object answers and before the gateway sees the answer.
async fn front_and_back_holding(hold: Option<Arc<Notify>>) -> FrontAndBack {
    let back = builder().build_for_test().unwrap();
    let server = back.server().start().await.unwrap();
    let client = Client::connect(server.local_addr()).await.unwrap();
    let webs = client.namespace::<Web>().unwrap();
    let front = builder().build_for_test().unwrap();
    let gateway = front
        .gateway()
        .route(move |request: Request, _env| {
            let webs = webs.clone();
            let hold = hold.clone();
            async move {
                let (mut parts, body) = request.into_parts();
                let path = parts.uri.path().trim_start_matches('/').to_owned();
                let (room, rest) = path.split_once('/').unwrap_or((&path, ""));
                let uri = match parts.uri.query() {
                    Some(query) => format!("http://do/{rest}?{query}"),
                    None => format!("http://do/{rest}"),
                };
                parts.uri = uri.parse().expect("a URI");
                let response = webs
                    .get_by_name(room)
                    .fetch(Request::from_parts(parts, body))
                    .await;
                if let Some(hold) = hold {
                    hold.notified().await;
                }
                response
            }
        })
        .start()
        .await
        .unwrap();
    FrontAndBack {
        back,
        server: Some(server),
        front,
        gateway,
        client,
    }
}

impl FrontAndBack {
    async fn open(&self, room: &str, name: &str, tags: &str) -> do_tests::client::Socket {
        let path = format!("/{room}/ws?name={name}&tags={tags}");
        connect(self.gateway.local_addr(), &path).await
    }
}

/// The close events `back`'s `Web` object `room` recorded, once there are
/// `n` of them.
async fn closes(back: &TestRuntime, room: &str, n: usize) -> String {
    let stub = back.namespace::<Web>().get_by_name(room);
    eventually("the object records its closes", || {
        let stub = stub.clone();
        async move {
            let closes = stub.fetch("http://do/closes").await.unwrap();
            let text = String::from_utf8_lossy(closes.body()).into_owned();
            let seen = if text.len() > 2 {
                text.matches("), (").count() + 1
            } else {
                0
            };
            (seen >= n).then_some(text)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_accepted_behind_a_remote_client_is_completed_by_the_front_gateway() {
    let pair = front_and_back().await;
    let mut alice = pair.open("chat", "alice", "red").await;
    let mut bob = pair.open("chat", "bob", "blue").await;
    assert_eq!(ask(&mut alice, "whoami").await, "alice");
    assert_eq!(ask(&mut bob, "count").await, "2");
    assert_eq!(ask(&mut alice, "hello").await, "echo:hello");
    // The object's sends reach every socket, through the front.
    send(&mut bob, "all:hi everyone").await;
    assert_eq!(next_text(&mut alice).await, "hi everyone");
    assert_eq!(next_text(&mut bob).await, "hi everyone");
    send(&mut bob, "tag:red:only red").await;
    assert_eq!(next_text(&mut alice).await, "only red");
    binary_and_many_messages_echo_in_order(&mut alice).await;
    // A message near the size limit crosses whole, both ways.
    let big = "x".repeat(512 * 1024);
    assert_eq!(ask(&mut alice, &big).await, format!("echo:{big}"));
    // The sockets are the back's: the front keeps none.
    assert_eq!(pair.back.stats().websockets, 2);
    assert_eq!(pair.front.stats().websockets, 0);
    let stub = pair.client.namespace::<Web>().unwrap().get_by_name("chat");
    assert_eq!(stub.sockets(Some("red".into())).await.unwrap(), 1);
    // Ordinary requests still go through the same route.
    assert_eq!(
        get(pair.gateway.local_addr(), "/chat/plain").await.status(),
        StatusCode::CREATED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_socket_hibernates_and_its_auto_response_is_answered_without_waking_the_object() {
    let pair = front_and_back().await;
    let id = pair.back.namespace::<Web>().id_from_name("relay-sleepy");
    let mut socket = pair.open("relay-sleepy", "alice", "t").await;
    assert_eq!(ask(&mut socket, "whoami").await, "alice");
    assert!(
        pair.back.evict(&id).await.unwrap(),
        "the instance is evicted"
    );
    // The back answers the auto-response for its hibernated object.
    assert_eq!(ask(&mut socket, "ping").await, "pong");
    assert!(
        !pair.back.evict(&id).await.unwrap(),
        "the auto-response did not wake the object"
    );
    // The next message builds a new instance; attachment and tags kept.
    assert_eq!(ask(&mut socket, "whoami").await, "alice");
    assert!(
        pair.back.evict(&id).await.unwrap(),
        "the message woke the object"
    );
    assert_eq!(ask(&mut socket, "tag:t:still tagged").await, "still tagged");
    let at = ask(&mut socket, "auto-at").await;
    assert_ne!(at, "none", "the auto-response's time is the back's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closes_cross_both_ways_and_a_client_that_leaves_reaches_the_object_as_1006() {
    let pair = front_and_back().await;
    let mut a = pair.open("relay-closing", "a", "").await;
    let b = pair.open("relay-closing", "b", "").await;
    let c = pair.open("relay-closing", "c", "").await;
    assert_eq!(ask(&mut a, "count").await, "3");
    close_three_ways(a, b, c).await;
    let closes = closes(&pair.back, "relay-closing", 2).await;
    assert!(closes.contains("(4001, \"done\", true)"), "{closes}");
    assert!(closes.contains("(1006,"), "{closes}");
    assert!(!closes.contains("4000"), "{closes}");
    eventually("the back forgets its closed sockets", || async {
        (pair.back.stats().websockets == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocol_error_on_a_relayed_socket_reaches_the_objects_websocket_error() {
    let pair = front_and_back().await;
    let object = pair.back.namespace::<Web>().get_by_name("relay-utf");
    invalid_utf8_closes_with_1007(
        pair.gateway.local_addr(),
        "/relay-utf/ws?name=u&tags=",
        &object,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_connection_between_the_runtimes_breaks_the_client_and_the_object_both_learn_it() {
    let mut pair = front_and_back().await;
    let mut socket = pair.open("relay-lost", "l", "").await;
    assert_eq!(ask(&mut socket, "whoami").await, "l");
    // The back stops serving: its connections close.
    drop(pair.server.take());
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(message) = next(&mut socket).await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the client's socket ends");
    // The object heard its client leave.
    let closes = closes(&pair.back, "relay-lost", 1).await;
    assert!(closes.contains("(1006,"), "{closes}");
    eventually("the back forgets the socket", || async {
        (pair.back.stats().websockets == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_no_longer_waiting_on_its_runtime_is_refused_with_502_and_the_front_serves_on() {
    let hold = Arc::new(Notify::new());
    let pair = front_and_back_holding(Some(hold.clone())).await;
    let addr = pair.gateway.local_addr();
    let opening =
        tokio::spawn(async move { try_connect(addr, "/relay-late/ws?name=l&tags=").await });
    // The object accepted; nothing claims the socket in time, and the
    // back forgets it (after 10 s).
    eventually("the object accepts", || async {
        (pair.back.stats().websockets == 1).then_some(())
    })
    .await;
    eventually("the back forgets the unclaimed socket", || async {
        (pair.back.stats().websockets == 0).then_some(())
    })
    .await;
    hold.notify_one();
    match opening.await.unwrap() {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
            let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                .into_owned();
            assert!(body.contains("cannot be claimed"), "{body}");
        }
        other => panic!("expected a 502, got {other:?}"),
    }
    // The next socket opens as usual.
    hold.notify_one();
    let mut socket = pair.open("relay-late", "m", "").await;
    assert_eq!(ask(&mut socket, "whoami").await, "m");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutting_the_front_gateway_down_closes_its_relayed_sockets_with_going_away() {
    let FrontAndBack {
        back,
        server: _server,
        front: _front,
        gateway,
        client: _client,
    } = front_and_back().await;
    let mut socket = connect(gateway.local_addr(), "/relay-front-stop/ws?name=s&tags=").await;
    assert_eq!(ask(&mut socket, "whoami").await, "s");
    tokio::time::timeout(Duration::from_secs(10), gateway.shutdown())
        .await
        .expect("the front gateway stops without waiting for its clients");
    // The object's runtime closed the socket as the front's own are closed.
    match next(&mut socket).await {
        Some(Message::Close(Some(frame))) => assert_eq!(u16::from(frame.code), 1001),
        other => panic!("expected a close with 1001, got {other:?}"),
    }
    eventually("the back forgets the socket", || async {
        (back.stats().websockets == 0).then_some(())
    })
    .await;
}
