//! Streamed response bodies (issue 26 item 5): a `fetch` handler answers
//! at once and sends its body as it makes it; callers in process and HTTP
//! clients through the gateway read it as it comes, with bounded memory.

use std::time::Duration;

use do_runtime::{Client, Server, Stub, TestRuntime, body_stream};
use do_tests::client::{read_head, read_until};
use do_tests::{Streamer, builder, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stub_caller_reads_the_first_event_before_the_last_is_made() {
    let rt = builder().build_for_test().unwrap();
    let streamer = rt.namespace::<Streamer>().get_by_name("in-process");
    let mut response = streamer.fetch("http://do/sse").await.unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = body_stream(&mut response).expect("a streamed body");
    assert!(response.body().is_empty(), "nothing buffered");
    assert_eq!(body.next_chunk().await.unwrap().unwrap(), "data: first\n\n");
    // The last event is made only now: had the body been buffered whole,
    // the first would never have arrived.
    streamer.release().await.unwrap();
    assert_eq!(body.next_chunk().await.unwrap().unwrap(), "data: last\n\n");
    assert!(
        body.next_chunk().await.is_none(),
        "the body ends with its sender"
    );
}

/// Sends a GET for `path` on a new connection; returns it after the
/// response's head, and the head.
async fn get(addr: std::net::SocketAddr, path: &str) -> (tokio::net::TcpStream, String) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let head = read_head(&mut tcp).await;
    (tcp, head)
}

/// A runtime serving its objects, a remote client of it, and a stub of
/// streamer `name` through that client (the caller keeps them all).
async fn remote_streamer(name: &str) -> (TestRuntime, Server, Client, Stub<Streamer>) {
    let rt = builder().build_for_test().unwrap();
    let server = rt.server().start().await.unwrap();
    let client = Client::connect(server.local_addr()).await.unwrap();
    let streamer = client.namespace::<Streamer>().unwrap().get_by_name(name);
    (rt, server, client, streamer)
}

/// How the streamer's last download ended, once it has.
async fn producer_ended(streamer: &Stub<Streamer>) -> String {
    eventually("the producer stops", || async {
        streamer.ended().await.unwrap()
    })
    .await
}

/// Waits until the streamer has read the first chunk of its upload.
async fn first_chunk_read(streamer: &Stub<Streamer>) {
    eventually("the first chunk arrives", || async {
        (streamer.seen().await.unwrap() >= 1).then_some(())
    })
    .await;
}

/// Starts an upload to `streamer` with a streamed body and sends its first
/// 1 000 bytes; returns the body's sender and the call.
async fn start_upload(
    streamer: &Stub<Streamer>,
) -> (
    do_runtime::BodySender,
    do_runtime::Call<Result<do_runtime::Response, do_runtime::Error>>,
) {
    let mut request = do_runtime::Request::new(Default::default());
    *request.uri_mut() = "http://do/upload".parse().unwrap();
    let body = do_runtime::stream_request_body(&mut request);
    let answer = streamer.fetch(request);
    body.send(vec![1u8; 1000]).await.unwrap();
    (body, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_reach_an_http_client_as_they_are_made() {
    let rt = builder().build_for_test().unwrap();
    let gateway = rt.gateway().start().await.unwrap();
    let (mut tcp, head) = get(gateway.local_addr(), "/Streamer/events/sse").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_lowercase().contains("transfer-encoding: chunked"),
        "{head}"
    );
    let mut seen = Vec::new();
    read_until(&mut tcp, &mut seen, "data: first").await;
    assert!(!String::from_utf8_lossy(&seen).contains("data: last"));
    rt.namespace::<Streamer>()
        .get_by_name("events")
        .release()
        .await
        .unwrap();
    read_until(&mut tcp, &mut seen, "data: last").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_256_mib_download_through_the_gateway_holds_a_bounded_amount_of_memory() {
    const MIB: usize = 256;
    let rt = builder().build_for_test().unwrap();
    let gateway = rt.gateway().start().await.unwrap();
    let before = do_tests::resident_bytes();
    let (mut tcp, head) = get(
        gateway.local_addr(),
        &format!("/Streamer/big/download?mib={MIB}"),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let peak = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut peak = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(do_tests::resident_bytes());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            peak
        }
    });
    // The body, chunked: count its bytes of data (the chunk sizes are hex
    // digits, never an `x`).
    let mut data = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    let read = async {
        loop {
            let n = tcp.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            data += buf[..n].iter().filter(|b| **b == b'x').count();
        }
    };
    tokio::time::timeout(Duration::from_secs(300), read)
        .await
        .expect("the download ends");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = peak.await.unwrap();
    assert_eq!(data, MIB << 20, "every byte arrived");
    let grown = peak.saturating_sub(before);
    eprintln!(
        "{MIB} MiB streamed; resident memory grew by {:.1} MiB at most",
        grown as f64 / f64::from(1 << 20)
    );
    assert!(
        grown < 64 << 20,
        "the server grew by {} MiB for a {MIB} MiB download",
        grown >> 20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_stops_the_producer_with_a_typed_error() {
    let rt = builder().build_for_test().unwrap();
    let gateway = rt.gateway().start().await.unwrap();
    let (mut tcp, _) = get(gateway.local_addr(), "/Streamer/quitter/download?mib=4096").await;
    let mut buf = vec![0u8; 1 << 20];
    tcp.read_exact(&mut buf).await.unwrap();
    drop(tcp);
    let streamer = rt.namespace::<Streamer>().get_by_name("quitter");
    let ended = producer_ended(&streamer).await;
    assert!(ended.starts_with("stopped"), "{ended}");
    assert!(ended.contains("went away"), "{ended}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_client_reads_a_streamed_body_as_it_is_made() {
    let (_rt, _server, _client, streamer) = remote_streamer("remote").await;
    let mut response = streamer.fetch("http://do/sse").await.unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = body_stream(&mut response).expect("a streamed body");
    assert_eq!(body.next_chunk().await.unwrap().unwrap(), "data: first\n\n");
    streamer.release().await.unwrap();
    assert_eq!(body.next_chunk().await.unwrap().unwrap(), "data: last\n\n");
    assert!(body.next_chunk().await.is_none());
    // A whole download, every byte.
    let mut response = streamer.fetch("http://do/download?mib=32").await.unwrap();
    let mut body = body_stream(&mut response).unwrap();
    let mut bytes = 0;
    while let Some(chunk) = body.next_chunk().await {
        bytes += chunk.unwrap().len();
    }
    assert_eq!(bytes, 32 << 20);
    let ended = streamer.ended().await.unwrap();
    assert_eq!(ended.as_deref(), Some("complete"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_reader_that_stops_reading_holds_the_producer_back_and_one_that_leaves_stops_it() {
    let (_rt, _server, _client, streamer) = remote_streamer("slow").await;
    let mut response = streamer.fetch("http://do/download?mib=1024").await.unwrap();
    let mut body = body_stream(&mut response).unwrap();
    body.next_chunk().await.unwrap().unwrap();
    // The reader stops. Given time to run ahead, the producer gets no
    // further than the chunks that may wait on each side of the
    // connection, and one in each hand.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = streamer.sent().await.unwrap();
    let bound = 1 + 2 * do_runtime::BUFFERED_CHUNKS + 2;
    assert!(
        sent <= bound,
        "{sent} chunks of 1 MiB sent to a reader that took one"
    );
    // The reader leaves: the producer's next send fails, typed.
    drop(body);
    let ended = producer_ended(&streamer).await;
    assert!(ended.contains("went away"), "{ended}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_request_body_is_read_by_the_object_as_the_caller_sends_it() {
    let rt = builder().build_for_test().unwrap();
    let streamer = rt.namespace::<Streamer>().get_by_name("upload");
    let (body, answer) = start_upload(&streamer).await;
    // The object has the first chunk while the rest is still to come.
    first_chunk_read(&streamer).await;
    body.send(vec![2u8; 24]).await.unwrap();
    body.finish();
    let response = answer.await.unwrap();
    assert_eq!(response.body().as_ref(), b"bytes=1024");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_gateway_a_request_body_can_stream_to_the_object() {
    let rt = builder().build_for_test().unwrap();
    let gateway = rt
        .gateway()
        .stream_request_bodies(true)
        .max_body_bytes(64 << 10)
        .start()
        .await
        .unwrap();
    let addr = gateway.local_addr();
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        b"POST /Streamer/up/upload HTTP/1.1\r\nhost: g\r\nconnection: close\r\n\
          transfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
    )
    .await
    .unwrap();
    // The object reads the first chunk before the body is over.
    let streamer = rt.namespace::<Streamer>().get_by_name("up");
    first_chunk_read(&streamer).await;
    tcp.write_all(b"6\r\n world\r\n0\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("bytes=11"), "{answer}");
    // A declared length past the limit is refused at once (413); a
    // chunked body that grows past it ends with an error the object reads
    // (here, answering 400 with it), never as a body cut short.
    for (head, status) in [
        (format!("content-length: {}\r\n\r\n", 80 << 10), "413"),
        (
            format!("transfer-encoding: chunked\r\n\r\n{:x}\r\n", 80 << 10),
            "400",
        ),
    ] {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head =
            format!("POST /Streamer/up/upload HTTP/1.1\r\nhost: g\r\nconnection: close\r\n{head}");
        tcp.write_all(head.as_bytes()).await.unwrap();
        let _ = tcp.write_all(&vec![b'z'; 80 << 10]).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(20), tcp.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{answer}"
        );
        assert!(answer.contains("exceeds"), "{answer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_request_body_crosses_a_remote_client_as_it_is_sent() {
    let (_rt, _server, _client, streamer) = remote_streamer("remote-up").await;
    let (body, answer) = start_upload(&streamer).await;
    // The object has the first chunk while the rest is still to come.
    first_chunk_read(&streamer).await;
    // Far more than the credit allows at once: sent as the object reads.
    for _ in 0..64 {
        body.send(vec![2u8; 1 << 16]).await.unwrap();
    }
    body.finish();
    let response = answer.await.unwrap();
    let expected = format!("bytes={}", 1000 + 64 * (1 << 16));
    assert_eq!(response.body().as_ref(), expected.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_whose_sender_goes_without_finish_ends_with_an_error_not_as_complete() {
    let rt = builder().build_for_test().unwrap();
    let streamer = rt.namespace::<Streamer>().get_by_name("broken");
    let mut response = streamer.fetch("http://do/broken").await.unwrap();
    let mut body = body_stream(&mut response).unwrap();
    assert_eq!(body.next_chunk().await.unwrap().unwrap(), "partial");
    let end = body.next_chunk().await.expect("an error, not the end");
    assert!(
        matches!(&end, Err(e) if e.disconnect_reason() == Some(do_runtime::DisconnectReason::Reset)),
        "{end:?}"
    );
    assert!(body.next_chunk().await.is_none(), "nothing after the error");
    // Through a remote client the same.
    let server = rt.server().start().await.unwrap();
    let client = Client::connect(server.local_addr()).await.unwrap();
    let remote = client
        .namespace::<Streamer>()
        .unwrap()
        .get_by_name("broken-remote");
    let mut response = remote.fetch("http://do/broken").await.unwrap();
    let mut body = body_stream(&mut response).unwrap();
    assert_eq!(body.next_chunk().await.unwrap().unwrap(), "partial");
    let end = body.next_chunk().await.expect("an error, not the end");
    assert!(end.is_err(), "{end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_body_whose_connection_is_lost_ends_with_connection_lost() {
    let (_rt, server, _client, streamer) = remote_streamer("lost").await;
    let mut response = streamer.fetch("http://do/download?mib=1024").await.unwrap();
    let mut body = body_stream(&mut response).unwrap();
    body.next_chunk().await.unwrap().unwrap();
    drop(server);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(20), body.next_chunk()).await {
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => break e,
            Ok(None) => panic!("the body ended as if complete"),
            Err(_) => panic!("the body never ended"),
        }
        assert!(std::time::Instant::now() < deadline, "the body never ended");
    };
    assert_eq!(
        end.disconnect_reason(),
        Some(do_runtime::DisconnectReason::ConnectionLost),
        "{end}"
    );
}
