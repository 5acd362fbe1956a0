//! C5 and C6 through the HTTP gateway: default routing, 4xx and 5xx
//! answers, WebSocket conversations, hibernation and auto-responses, limits.

use do_runtime::bytes::Bytes;
use do_runtime::gateway::{Gateway, default_route};
use do_runtime::http::{self, StatusCode};
use do_runtime::{Response, TestRuntime};
use do_tests::client::{
    Socket, ask, binary_and_many_messages_echo_in_order, close_three_ways, connect, get,
    http as send_http, invalid_utf8_closes_with_1007, next, next_text, raw_socket, send,
    try_connect,
};
use do_tests::{Web, builder, web_constructions};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

async fn start(rt: &TestRuntime) -> Gateway {
    rt.gateway().start().await.unwrap()
}

/// Waits (at most 10 s) until the runtime keeps no WebSocket.
async fn sockets_forgotten(rt: &TestRuntime) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while rt.stats().websockets != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "closed sockets are forgotten"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn text_of(response: &http::Response<Bytes>) -> String {
    String::from_utf8_lossy(response.body()).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_route_reaches_the_object_with_the_rest_of_the_path() {
    let rt = builder().build_for_test().unwrap();
    let gateway = start(&rt).await;
    let addr = gateway.local_addr();
    let response = get(addr, "/Web/room%201/a/b?x=1").await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["x-path"], "/a/b");
    assert_eq!(response.headers()["x-query"], "x=1");
    let request = http::Request::put("/Web/room%201/upload")
        .header("host", "gateway")
        .header("x-in-token", "t")
        .body(Bytes::from(vec![3u8; 1_000_000]))
        .unwrap();
    let response = send_http(addr, request).await;
    assert_eq!(response.headers()["x-method"], "PUT");
    assert_eq!(response.headers()["x-in-token"], "t");
    assert_eq!(response.body().len(), 1_000_000);
    // It is the object `get_by_name("room 1")` reaches.
    for _ in 0..3 {
        get(addr, "/Web/room%201/count").await;
    }
    let stub = rt.namespace::<Web>().get_by_name("room 1");
    let response = stub.fetch("http://do/count").await.unwrap();
    assert_eq!(response.body().as_ref(), b"4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_a_4xx_with_a_one_line_reason() {
    let rt = builder().build_for_test().unwrap();
    let gateway = rt.gateway().max_body_bytes(1000).start().await.unwrap();
    let addr = gateway.local_addr();
    for (path, status, reason) in [
        ("/", StatusCode::BAD_REQUEST, "expected /{class}/{name}/"),
        ("/Web", StatusCode::BAD_REQUEST, "expected /{class}/{name}/"),
        ("/Web/%zz/", StatusCode::BAD_REQUEST, "percent-encoding"),
        ("/Nope/x/", StatusCode::NOT_FOUND, "no class named \"Nope\""),
        ("/Counter/x/", StatusCode::NOT_FOUND, "no fetch handler"),
        // Accepting a WebSocket on a request that is no upgrade.
        (
            "/Web/x/ws",
            StatusCode::BAD_REQUEST,
            "not a WebSocket upgrade",
        ),
    ] {
        let response = get(addr, path).await;
        assert_eq!(response.status(), status, "{path}");
        let text = text_of(&response);
        assert!(text.contains(reason), "{path}: {text}");
        assert_eq!(text.trim_end().lines().count(), 1, "{path}: one line");
    }
    let request = http::Request::post("/Web/x/")
        .header("host", "gateway")
        .body(Bytes::from(vec![0u8; 5000]))
        .unwrap();
    assert_eq!(
        send_http(addr, request).await.status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_router_picks_objects_and_invalid_ids_are_bad_requests() {
    let rt = builder().build_for_test().unwrap();
    let other_ns_id = rt
        .namespace::<do_tests::Counter>()
        .id_from_name("c")
        .to_string();
    let gateway = rt
        .gateway()
        .route(|request, env| async move {
            let path = request.uri().path().to_owned();
            if path == "/" {
                return Ok(Response::new("index".into()));
            }
            if let Some(id) = path.strip_prefix("/by-id/") {
                let web = env.namespace::<Web>();
                let id = web.id_from_string(id)?;
                return web.get(id).fetch(request).await;
            }
            default_route(request, env).await
        })
        .start()
        .await
        .unwrap();
    let addr = gateway.local_addr();
    assert_eq!(text_of(&get(addr, "/").await), "index");
    let id = rt.namespace::<Web>().id_from_name("by-id").to_string();
    let response = get(addr, &format!("/by-id/{id}")).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let response = get(addr, "/by-id/not-an-id").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(
        text_of(&response).contains("invalid"),
        "{}",
        text_of(&response)
    );
    let response = get(addr, &format!("/by-id/{other_ns_id}")).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    // The fallback still works.
    assert_eq!(get(addr, "/Web/a/").await.status(), StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_inside_objects_get_a_5xx_without_details() {
    let rt = builder().build_for_test().unwrap();
    let gateway = start(&rt).await;
    let addr = gateway.local_addr();
    for path in ["/Web/x/panic", "/Web/x/error", "/Web/x/storage-error"] {
        let response = get(addr, path).await;
        assert_eq!(
            response.status(),
            StatusCode::INTERNAL_SERVER_ERROR,
            "{path}"
        );
        let text = text_of(&response);
        assert_eq!(text, "internal error\n", "{path}");
    }
    // The object serves on after its panic.
    assert_eq!(get(addr, "/Web/x/").await.status(), StatusCode::CREATED);
}

async fn open(addr: std::net::SocketAddr, room: &str, name: &str, tags: &str) -> Socket {
    connect(addr, &format!("/Web/{room}/ws?name={name}&tags={tags}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_messages_reach_the_object_and_broadcast_to_every_socket() {
    let rt = builder().build_for_test().unwrap();
    let gateway = start(&rt).await;
    let addr = gateway.local_addr();
    let mut alice = open(addr, "chat", "alice", "red").await;
    let mut bob = open(addr, "chat", "bob", "blue").await;
    let mut carol = open(addr, "chat", "carol", "red,blue").await;
    assert_eq!(ask(&mut alice, "whoami").await, "alice");
    assert_eq!(ask(&mut bob, "whoami").await, "bob");
    assert_eq!(ask(&mut carol, "count").await, "3");
    assert_eq!(ask(&mut alice, "hello").await, "echo:hello");
    // Broadcast reaches everyone, the sender too.
    send(&mut bob, "all:hi everyone").await;
    for socket in [&mut alice, &mut bob, &mut carol] {
        assert_eq!(next_text(socket).await, "hi everyone");
    }
    // By tag: red is alice and carol.
    send(&mut bob, "tag:red:only red").await;
    assert_eq!(next_text(&mut alice).await, "only red");
    assert_eq!(next_text(&mut carol).await, "only red");
    send(&mut bob, "tag:blue:only blue").await;
    assert_eq!(next_text(&mut bob).await, "only blue");
    assert_eq!(next_text(&mut carol).await, "only blue");
    // Nothing else was queued for alice: her next message is her own echo.
    assert_eq!(ask(&mut alice, "after").await, "echo:after");
    binary_and_many_messages_echo_in_order(&mut alice).await;
    // The object lists its sockets through an ordinary method too.
    let stub = rt.namespace::<Web>().get_by_name("chat");
    assert_eq!(stub.sockets(Some("red".into())).await.unwrap(), 2);
    assert_eq!(rt.stats().websockets, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closes_are_delivered_and_objects_can_close_sockets() {
    let rt = builder().build_for_test().unwrap();
    let gateway = start(&rt).await;
    let addr = gateway.local_addr();
    let stub = rt.namespace::<Web>().get_by_name("closing");
    let mut a = open(addr, "closing", "a", "").await;
    let b = open(addr, "closing", "b", "").await;
    let c = open(addr, "closing", "c", "").await;
    assert_eq!(ask(&mut a, "count").await, "3");
    close_three_ways(a, b, c).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let closes = stub.fetch("http://do/closes").await.unwrap();
        let text = String::from_utf8_lossy(closes.body()).into_owned();
        if text.contains("4001") && text.contains("1006") {
            assert!(text.contains("(4001, \"done\", true)"), "{text}");
            assert!(text.contains("(1006,"), "{text}");
            assert!(
                !text.contains("4000"),
                "no close handler for the object's own close: {text}"
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "closes seen: {text}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    sockets_forgotten(&rt).await;
    assert_eq!(stub.sockets(None).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hibernation_keeps_sockets_open_and_the_next_message_wakes_the_object() {
    let rt = builder().build_for_test().unwrap();
    let gateway = start(&rt).await;
    let addr = gateway.local_addr();
    let id = rt.namespace::<Web>().id_from_name("hibernating");
    let mut socket = open(addr, "hibernating", "alice", "t").await;
    assert_eq!(ask(&mut socket, "whoami").await, "alice");
    let built = web_constructions("hibernating");
    assert!(
        rt.evict(&id).await.unwrap(),
        "the instance was live and is evicted"
    );
    // The auto-response answers without waking the object.
    assert_eq!(ask(&mut socket, "ping").await, "pong");
    assert_eq!(ask(&mut socket, "ping").await, "pong");
    assert!(
        !rt.evict(&id).await.unwrap(),
        "the auto-response did not wake it"
    );
    assert_eq!(web_constructions("hibernating"), built);
    // A message builds a new instance; the socket and its attachment and
    // tags are intact.
    assert_eq!(ask(&mut socket, "whoami").await, "alice");
    assert_eq!(web_constructions("hibernating"), built + 1);
    assert_eq!(ask(&mut socket, "tag:t:still tagged").await, "still tagged");
    // A panic in a handler resets the instance; the socket survives it.
    send(&mut socket, "panic").await;
    assert_eq!(ask(&mut socket, "whoami").await, "alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_limits_are_enforced_with_clear_errors() {
    let rt = builder()
        .max_websockets_per_object(2)
        .max_websocket_message_bytes(1024)
        .build_for_test()
        .unwrap();
    let gateway = start(&rt).await;
    let addr = gateway.local_addr();
    let mut first = open(addr, "limited", "a", "").await;
    let _second = open(addr, "limited", "b", "").await;
    // A third socket for the same object is refused with 429.
    match try_connect(addr, "/Web/limited/ws?name=c").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        }
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
    // Another object has room.
    let _other = open(addr, "limited-2", "c", "").await;
    // Too many tags.
    let tags = (0..11)
        .map(|i| format!("t{i}"))
        .collect::<Vec<_>>()
        .join(",");
    match try_connect(addr, &format!("/Web/limited-3/ws?tags={tags}")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
            let body = response.body().as_deref().unwrap_or_default();
            assert!(String::from_utf8_lossy(body).contains("tags"));
        }
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
    // An object's send over the limit is an error it sees.
    let answer = ask(&mut first, "big:2000").await;
    assert!(
        answer.starts_with("error:WebSocket limit: a message of 2000 bytes"),
        "{answer}"
    );
    assert_eq!(ask(&mut first, "big:1000").await.len(), 1000);
    // A client message over the limit closes that socket with 1009.
    send(&mut first, &"x".repeat(2000)).await;
    match next(&mut first).await {
        Some(Message::Close(Some(frame))) => assert_eq!(u16::from(frame.code), 1009),
        other => panic!("expected a 1009 close, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutting_the_gateway_down_closes_its_sockets_with_going_away() {
    let rt = builder().build_for_test().unwrap();
    let gateway = start(&rt).await;
    let addr = gateway.local_addr();
    let mut socket = open(addr, "going-away", "a", "").await;
    assert_eq!(ask(&mut socket, "whoami").await, "a");
    gateway.shutdown().await;
    match next(&mut socket).await {
        Some(Message::Close(Some(frame))) => assert_eq!(u16::from(frame.code), 1001),
        other => panic!("expected a 1001 close, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_handshakes_are_refused_before_the_object_accepts_anything() {
    let rt = builder().build_for_test().unwrap();
    let gateway = start(&rt).await;
    let addr = gateway.local_addr();
    let upgrade = |key: Option<&str>, version: &str| {
        let mut request = http::Request::get("/Web/handshakes/ws")
            .header("host", "gateway")
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", version);
        if let Some(key) = key {
            request = request.header("sec-websocket-key", key);
        }
        request.body(Bytes::new()).unwrap()
    };
    for _ in 0..20 {
        let response = send_http(addr, upgrade(None, "13")).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }
    let response = send_http(addr, upgrade(Some("short"), "13")).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = send_http(addr, upgrade(Some("dGhlIHNhbXBsZSBub25jZQ=="), "8")).await;
    assert_eq!(response.status(), StatusCode::UPGRADE_REQUIRED);
    assert_eq!(response.headers()["sec-websocket-version"], "13");
    assert_eq!(rt.stats().websockets, 0, "nothing was accepted");
    let stub = rt.namespace::<Web>().get_by_name("handshakes");
    assert_eq!(stub.sockets(None).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_accepted_without_an_upgrade_or_closed_at_once_are_not_kept() {
    let rt = builder().build_for_test().unwrap();
    let gateway = start(&rt).await;
    let addr = gateway.local_addr();
    // Accepted, then answered 200: the client gets the 200, nothing is kept.
    match try_connect(addr, "/Web/accept-plain/ws-plain").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::OK);
        }
        other => panic!("expected a plain answer, got {:?}", other.map(|_| ())),
    }
    assert_eq!(rt.stats().websockets, 0);
    // Accepted and closed at once: the client gets the close, then nothing is kept.
    let mut socket = connect(addr, "/Web/accept-closed/ws-closed").await;
    match next(&mut socket).await {
        Some(Message::Close(Some(frame))) => {
            assert_eq!(u16::from(frame.code), 4001);
            assert_eq!(frame.reason.as_str(), "full");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    while next(&mut socket).await.is_some() {}
    sockets_forgotten(&rt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_one_sockets_handler_loses_no_other_sockets_messages() {
    let rt = builder().build_for_test().unwrap();
    let gateway = start(&rt).await;
    let addr = gateway.local_addr();
    let mut a = open(addr, "panicky", "a", "").await;
    let mut b = open(addr, "panicky", "b", "").await;
    for round in 0..20 {
        send(&mut a, "panic").await;
        for i in 0..5 {
            send(&mut b, &format!("r{round}m{i}")).await;
        }
        for i in 0..5 {
            assert_eq!(next_text(&mut b).await, format!("echo:r{round}m{i}"));
        }
    }
    assert_eq!(ask(&mut a, "whoami").await, "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_does_not_hold_up_shutdown() {
    let rt = builder().build_for_test().unwrap();
    let gateway = start(&rt).await;
    let addr = gateway.local_addr();
    let mut socket = open(addr, "not-reading", "a", "").await;
    // 100 × 100 kB that the client never reads: the send buffer and the
    // socket fill up.
    send(&mut socket, "flood:100").await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(rt.stats().websockets, 1);
    let done = tokio::time::timeout(std::time::Duration::from_secs(60), gateway.shutdown()).await;
    assert!(
        done.is_ok(),
        "shutdown finishes though the client does not read"
    );
    // Shutdown waited for the socket to end: the runtime forgot it.
    assert_eq!(rt.stats().websockets, 0);
    drop(socket);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_sends_wait_for_the_writes_they_reflect() {
    let rt = builder().build_for_test().unwrap();
    let gateway = start(&rt).await;
    let addr = gateway.local_addr();
    let mut socket = open(addr, "gated", "a", "").await;
    // Written, sent, then the handler panics: the write is lost, and so is
    // the message that reflected it.
    send(&mut socket, "write-send-panic").await;
    assert_eq!(ask(&mut socket, "whoami").await, "a");
    // Written and sent: the message arrives once the write is durable.
    assert_eq!(
        ask(&mut socket, "write-send").await,
        "reflects a durable write"
    );
    let id = rt.namespace::<Web>().id_from_name("gated");
    let (doomed, kept) = rt
        .namespace::<Web>()
        .with_storage(&id, |s| async move {
            (
                s.get::<bool>("doomed").await.unwrap(),
                s.get::<bool>("kept").await.unwrap(),
            )
        })
        .await
        .unwrap();
    assert_eq!((doomed, kept), (None, Some(true)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_after_a_lost_write_still_closes_the_socket() {
    let rt = builder().build_for_test().unwrap();
    let gateway = start(&rt).await;
    let mut socket = open(gateway.local_addr(), "lost-close", "a", "").await;
    send(&mut socket, "write-close-panic").await;
    match next(&mut socket).await {
        Some(Message::Close(Some(frame))) => assert_eq!(u16::from(frame.code), 4002),
        other => panic!("expected the close, got {other:?}"),
    }
    while next(&mut socket).await.is_some() {}
    sockets_forgotten(&rt).await;
}

/// Waits (at most 10 s) until the `Web` object `room` has recorded `n`
/// close events, and returns them all.
async fn closes_of(rt: &TestRuntime, room: &str, n: usize) -> Vec<String> {
    let stub = rt.namespace::<Web>().get_by_name(room);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let text = text_of(&stub.fetch("http://do/closes").await.unwrap());
        let closes: Vec<String> = text
            .trim_matches(|c| c == '[' || c == ']')
            .split("), (")
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect();
        if closes.len() >= n || std::time::Instant::now() > deadline {
            return closes;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_socket_close_reaches_the_object_exactly_once() {
    let rt = builder().build_for_test().unwrap();
    let gateway = start(&rt).await;
    let addr = gateway.local_addr();
    let mut speaker = open(addr, "many", "speaker", "").await;
    let mut sockets = Vec::new();
    for i in 0..100 {
        sockets.push(open(addr, "many", &format!("s{i}"), "").await);
    }
    assert_eq!(ask(&mut speaker, "count").await, "101");
    // Broadcasts keep coming while half the sockets close cleanly and half
    // drop without a close frame: writes to sockets that just closed fail.
    let speaking = tokio::spawn(async move {
        for i in 0..300 {
            send(&mut speaker, &format!("all:m{i}")).await;
            tokio::task::yield_now().await;
        }
        speaker
    });
    for (i, mut socket) in sockets.into_iter().enumerate() {
        if i % 2 == 0 {
            let _ = socket
                .close(Some(CloseFrame {
                    code: CloseCode::from(4001),
                    reason: "bye".into(),
                }))
                .await;
            tokio::spawn(async move { while next(&mut socket).await.is_some() {} });
        } else {
            drop(socket);
        }
        tokio::task::yield_now().await;
    }
    let speaker = speaking.await.unwrap();
    // Every socket but the speaker is gone: their pumps have ended, and
    // whatever close event they sent has reached the object's queue.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while rt.stats().websockets != 1 {
        assert!(std::time::Instant::now() < deadline, "sockets closed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let closes = closes_of(&rt, "many", 100).await;
    assert_eq!(closes.len(), 100, "one close event per socket: {closes:?}");
    let clean = closes.iter().filter(|c| c.contains("4001")).count();
    assert_eq!(clean, 50, "{closes:?}");
    drop(speaker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_floods_pings_without_reading_is_disconnected_with_bounded_memory() {
    use tokio::io::AsyncWriteExt;
    let rt = builder().build_for_test().unwrap();
    let gateway = start(&rt).await;
    let mut tcp = raw_socket(gateway.local_addr(), "/Web/flood/ws?name=f&tags=").await;
    // Masked pings (a zero mask) of 125 bytes each; the client never reads
    // the pongs.
    let mut ping = vec![0x89, 0x80 | 125, 0, 0, 0, 0];
    ping.extend(std::iter::repeat_n(b'p', 125));
    let chunk: Vec<u8> = ping
        .iter()
        .copied()
        .cycle()
        .take(ping.len() * 512)
        .collect();
    let most = 256 * 1024 * 1024;
    let mut sent = 0usize;
    let refused = loop {
        let write =
            tokio::time::timeout(std::time::Duration::from_secs(30), tcp.write_all(&chunk)).await;
        match write {
            Ok(Ok(())) => sent += chunk.len(),
            Ok(Err(_)) => break true,
            Err(_) => break false,
        }
        if sent > most {
            break false;
        }
    };
    assert!(
        refused,
        "the gateway kept taking pings it could not answer: {sent} bytes"
    );
    // Kernel buffers on both sides hold some megabytes; the gateway itself
    // held at most its bound before it let go.
    assert!(sent < 64 * 1024 * 1024, "{sent} bytes of pings taken");
    // Gone, and the object was told once, with 1008 (policy violation).
    sockets_forgotten(&rt).await;
    let closes = closes_of(&rt, "flood", 1).await;
    assert_eq!(closes.len(), 1, "{closes:?}");
    assert!(closes[0].contains("1008"), "{closes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_message_that_is_not_utf8_closes_with_1007() {
    let rt = builder().build_for_test().unwrap();
    let gateway = start(&rt).await;
    let object = rt.namespace::<Web>().get_by_name("utf");
    invalid_utf8_closes_with_1007(gateway.local_addr(), "/Web/utf/ws?name=u&tags=", &object).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auto_response_timestamp_says_when_the_runtime_last_answered_for_the_object() {
    let rt = builder().build_for_test().unwrap();
    let gateway = start(&rt).await;
    let mut socket = open(gateway.local_addr(), "stamped", "s", "").await;
    assert_eq!(ask(&mut socket, "auto-at").await, "none");
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    assert_eq!(ask(&mut socket, "ping").await, "pong");
    let at: u128 = ask(&mut socket, "auto-at").await.parse().unwrap();
    assert!(at >= before, "{at} is not before the ping ({before})");
    // Another socket of the object was never auto-answered.
    let mut other = open(gateway.local_addr(), "stamped", "t", "").await;
    assert_eq!(ask(&mut other, "auto-at").await, "none");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_handler_past_the_event_timeout_is_stopped_and_the_socket_goes_on() {
    let rt = builder()
        .websocket_event_timeout(Some(std::time::Duration::from_millis(200)))
        .build_for_test()
        .unwrap();
    let gateway = start(&rt).await;
    let mut socket = open(gateway.local_addr(), "hanging", "h", "").await;
    // Without the timeout this handler would hold the socket's events
    // for good: the next message would never be answered.
    send(&mut socket, "hang").await;
    assert_eq!(ask(&mut socket, "whoami").await, "h");
    // The instance was not reset: the same one answers.
    assert_eq!(web_constructions("hanging"), 1);
}

/// The status code of the HTTP answer on `tcp` (0 when it closed without
/// one).
async fn status_of(tcp: &mut tokio::net::TcpStream) -> u16 {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n") {
        let mut byte = [0u8; 1];
        if tcp.read_exact(&mut byte).await.is_err() {
            break;
        }
        head.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&head);
    if line.is_empty() {
        return 0;
    }
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP status line: {line:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_body_past_the_limit_is_refused_before_any_byte_is_read() {
    use tokio::io::AsyncWriteExt;
    let rt = builder().build_for_test().unwrap();
    let gateway = start(&rt).await;
    let mut tcp = tokio::net::TcpStream::connect(gateway.local_addr())
        .await
        .unwrap();
    tcp.write_all(
        b"POST /Web/big/ HTTP/1.1\r\nhost: gateway\r\ncontent-length: 1073741824\r\n\r\n",
    )
    .await
    .unwrap();
    // No byte of the body is sent: the answer comes anyway.
    let status = tokio::time::timeout(std::time::Duration::from_secs(20), status_of(&mut tcp))
        .await
        .expect("an answer without the body");
    assert_eq!(status, 413);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_sending_bodies_hold_no_more_than_the_client_memory_budget() {
    use tokio::io::AsyncWriteExt;
    const BUDGET: usize = 16 * 1024 * 1024;
    const CLIENTS: usize = 1000;
    const SENT: usize = 256 * 1024;
    let rt = builder()
        .client_memory_bytes(BUDGET)
        .build_for_test()
        .unwrap();
    // A body counts three times while its request is handled: the largest
    // body is at most a third of the budget.
    let gateway = rt
        .gateway()
        .max_body_bytes(BUDGET / 4)
        .start()
        .await
        .unwrap();
    let addr = gateway.local_addr();
    let before = do_tests::resident_bytes();
    let chunk = std::sync::Arc::new(vec![b'x'; SENT]);
    // Half declare their length (1 MiB, of which they send a quarter), half
    // send chunked bodies; none finishes, so the gateway holds what it read.
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let chunk = chunk.clone();
        clients.push(tokio::spawn(async move {
            let mut tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
            let head = if i % 2 == 0 {
                "POST /Web/b/ HTTP/1.1\r\nhost: gateway\r\ncontent-length: 1048576\r\n\r\n"
                    .to_owned()
            } else {
                format!(
                    "POST /Web/b/ HTTP/1.1\r\nhost: gateway\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n",
                    chunk.len()
                )
            };
            tcp.write_all(head.as_bytes()).await.ok()?;
            // The gateway may answer 503 and stop reading meanwhile.
            let _ = tcp.write_all(&chunk).await;
            Some(tcp)
        }));
    }
    let open = do_tests::clients_within_budget(&rt, BUDGET, before, clients).await;
    // Most were told to come back later (the others wait for the rest of
    // their body: they are given a few seconds).
    let answers: Vec<_> = open
        .into_iter()
        .map(|mut tcp| {
            tokio::spawn(async move {
                tokio::time::timeout(std::time::Duration::from_secs(5), status_of(&mut tcp))
                    .await
                    .ok()
            })
        })
        .collect();
    let mut unavailable = 0;
    for answer in answers {
        unavailable += usize::from(answer.await.unwrap() == Some(503));
    }
    assert!(
        unavailable > CLIENTS / 2,
        "{unavailable} of {CLIENTS} got 503"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_that_could_never_fit_the_client_budget_are_refused_at_start() {
    let rt = builder()
        .client_memory_bytes(12 * 1024 * 1024)
        .build_for_test()
        .unwrap();
    // A body counts three times while handled: 4 MiB fits, 5 MiB never would.
    assert!(rt.gateway().max_body_bytes(4 << 20).start().await.is_ok());
    assert!(matches!(
        rt.gateway().max_body_bytes(5 << 20).start().await,
        Err(do_runtime::Error::Setup(_))
    ));
    assert!(matches!(
        rt.server().max_frame_bytes(13 << 20).start().await,
        Err(do_runtime::Error::Setup(_))
    ));
    assert!(rt.server().max_frame_bytes(12 << 20).start().await.is_ok());
}
