//! The chat example's page and protocol, through the gateway with real
//! WebSocket clients: join, broadcast, history for newcomers and after a
//! restart, leave.

#[path = "../../examples/chat_room.rs"]
mod chat_room;

use chat_room::{ChatRoom, HISTORY};
use do_runtime::Runtime;
use do_runtime::http::StatusCode;
use do_tests::client::{Socket, connect, get, next_text, read_until, send};
use do_tests::eventually;

async fn join(addr: std::net::SocketAddr, room: &str, name: &str) -> Socket {
    connect(addr, &format!("/ChatRoom/{room}/websocket?name={name}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_page_is_served_and_rooms_broadcast_and_keep_history() {
    let dir = tempfile::tempdir().unwrap();
    let build = || {
        Runtime::builder()
            .data_dir(dir.path())
            .register::<ChatRoom>()
            .build()
            .unwrap()
    };
    let rt = build();
    let gateway = rt.gateway().route(chat_room::route).start().await.unwrap();
    let addr = gateway.local_addr();

    let page = get(addr, "/").await;
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let html = String::from_utf8_lossy(page.body()).into_owned();
    assert!(
        html.contains("new WebSocket(") && html.contains("/ChatRoom/"),
        "the page opens a socket to a room"
    );

    let mut alice = join(addr, "lobby", "alice").await;
    assert_eq!(next_text(&mut alice).await, "join\talice");
    let mut bob = join(addr, "lobby", "bob%20b").await;
    assert_eq!(next_text(&mut alice).await, "join\tbob b");
    assert_eq!(next_text(&mut bob).await, "join\tbob b");
    send(&mut alice, "hello bob").await;
    assert_eq!(next_text(&mut alice).await, "msg\talice\thello bob");
    assert_eq!(next_text(&mut bob).await, "msg\talice\thello bob");
    send(&mut bob, "hi alice").await;
    assert_eq!(next_text(&mut alice).await, "msg\tbob b\thi alice");
    assert_eq!(next_text(&mut bob).await, "msg\tbob b\thi alice");

    // Another room hears nothing of it; a newcomer to the lobby sees history.
    let mut other = join(addr, "other", "zed").await;
    assert_eq!(next_text(&mut other).await, "join\tzed");
    let mut carol = join(addr, "lobby", "carol").await;
    assert_eq!(next_text(&mut carol).await, "msg\talice\thello bob");
    assert_eq!(next_text(&mut carol).await, "msg\tbob b\thi alice");
    assert_eq!(next_text(&mut carol).await, "join\tcarol");
    assert_eq!(next_text(&mut alice).await, "join\tcarol");
    assert_eq!(next_text(&mut bob).await, "join\tcarol");

    // Leaving is announced.
    drop(carol);
    assert_eq!(next_text(&mut alice).await, "leave\tcarol");
    assert_eq!(next_text(&mut bob).await, "leave\tcarol");
    send(&mut other, "still alone").await;
    assert_eq!(next_text(&mut other).await, "msg\tzed\tstill alone");

    // History is bounded, and survives a restart of the server.
    for i in 0..HISTORY + 20 {
        send(&mut alice, &format!("n{i}")).await;
    }
    for i in 0..HISTORY + 20 {
        assert_eq!(next_text(&mut alice).await, format!("msg\talice\tn{i}"));
    }
    drop((alice, bob, other));
    gateway.shutdown().await;
    rt.shutdown().await;
    drop(rt);
    let rt = build();
    let gateway = rt.gateway().route(chat_room::route).start().await.unwrap();
    let mut dave = join(gateway.local_addr(), "lobby", "dave").await;
    for i in 20..HISTORY + 20 {
        assert_eq!(next_text(&mut dave).await, format!("msg\talice\tn{i}"));
    }
    assert_eq!(next_text(&mut dave).await, "join\tdave");
    assert_eq!(
        rt.namespace::<ChatRoom>()
            .get_by_name("lobby")
            .members()
            .await
            .unwrap(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_directory_lists_rooms_a_follower_streams_them_and_newcomers_get_the_motd() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let rt = Runtime::builder()
        .data_dir(dir.path())
        .var("CHAT_MOTD", "be kind")
        .register::<ChatRoom>()
        .register::<chat_room::ChatDirectory>()
        .build()
        .unwrap();
    let gateway = rt.gateway().route(chat_room::route).start().await.unwrap();
    let addr = gateway.local_addr();
    // A binding reaches the room: the message of the day comes first.
    let mut alice = join(addr, "garden", "alice").await;
    assert_eq!(next_text(&mut alice).await, "motd\tbe kind");
    assert_eq!(next_text(&mut alice).await, "join\talice");
    // The room announced itself (a stub as an argument, after the join
    // was answered); the directory hands rooms out (stubs as results).
    eventually("the room is listed", || async {
        let listed = String::from_utf8_lossy(get(addr, "/rooms").await.body()).into_owned();
        (listed == "garden\t1\n").then_some(())
    })
    .await;
    // A follower gets the room's frames as server-sent events, as they happen.
    let mut follower = tokio::net::TcpStream::connect(addr).await.unwrap();
    follower
        .write_all(b"GET /ChatRoom/garden/events HTTP/1.1\r\nhost: chat\r\n\r\n")
        .await
        .unwrap();
    let mut seen = Vec::new();
    read_until(&mut follower, &mut seen, "text/event-stream").await;
    send(&mut alice, "hello garden").await;
    assert_eq!(next_text(&mut alice).await, "msg\talice\thello garden");
    read_until(&mut follower, &mut seen, "data: msg alice hello garden\n\n").await;
    let mut bob = join(addr, "garden", "bob").await;
    assert_eq!(next_text(&mut bob).await, "motd\tbe kind");
    read_until(&mut follower, &mut seen, "data: join bob\n\n").await;
}
