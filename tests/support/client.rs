//! HTTP and WebSocket clients for the gateway tests.

use std::net::SocketAddr;

use do_runtime::bytes::Bytes;
use do_runtime::http;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// Sends one request on a new connection and reads the whole response.
pub async fn http(addr: SocketAddr, request: http::Request<Bytes>) -> http::Response<Bytes> {
    let stream = TcpStream::connect(addr).await.expect("the gateway accepts");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("an HTTP/1 handshake");
    tokio::spawn(connection);
    let response = sender
        .send_request(request.map(Full::new))
        .await
        .expect("a response");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("the whole body").to_bytes();
    http::Response::from_parts(parts, body)
}

/// `GET path` with a `host` header.
pub async fn get(addr: SocketAddr, path: &str) -> http::Response<Bytes> {
    let request = http::Request::get(path)
        .header("host", "gateway")
        .body(Bytes::new())
        .expect("a valid request");
    http(addr, request).await
}

/// A WebSocket client connection.
pub type Socket = WebSocketStream<TcpStream>;

/// Opens a WebSocket to `path` through the gateway.
pub async fn connect(addr: SocketAddr, path: &str) -> Socket {
    try_connect(addr, path).await.expect("the WebSocket opens")
}

/// Opens a WebSocket, or says why it could not.
pub async fn try_connect(
    addr: SocketAddr,
    path: &str,
) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
    let stream = TcpStream::connect(addr).await.expect("the gateway accepts");
    let url = format!("ws://{addr}{path}");
    tokio_tungstenite::client_async(url, stream)
        .await
        .map(|(socket, _)| socket)
}

/// Sends a text message.
pub async fn send(socket: &mut Socket, text: &str) {
    socket
        .send(Message::text(text))
        .await
        .expect("the message is sent");
}

/// The next data or close message, skipping pings and pongs; `None` when
/// the connection ends.
pub async fn next(socket: &mut Socket) -> Option<Message> {
    let wait = std::time::Duration::from_secs(10);
    loop {
        let message = tokio::time::timeout(wait, socket.next())
            .await
            .expect("a message within 10 s");
        match message {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(message)) => return Some(message),
            Some(Err(_)) | None => return None,
        }
    }
}

/// The next message, which must be text.
pub async fn next_text(socket: &mut Socket) -> String {
    match next(socket).await {
        Some(Message::Text(text)) => text.as_str().to_owned(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

/// Sends `text` and returns the text answer.
pub async fn ask(socket: &mut Socket, text: &str) -> String {
    send(socket, text).await;
    next_text(socket).await
}

/// Reads an HTTP head (through its blank line) from `tcp`, byte by byte so
/// nothing after it is taken.
pub async fn read_head(tcp: &mut TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tcp.read_exact(&mut byte)
            .await
            .expect("the head arrives whole");
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Reads from `tcp` into `seen` until it holds `text` (at most 20 s).
pub async fn read_until(tcp: &mut TcpStream, seen: &mut Vec<u8>, text: &str) {
    use tokio::io::AsyncReadExt;
    let wait = async {
        while !String::from_utf8_lossy(seen).contains(text) {
            let mut buf = [0u8; 4096];
            let n = tcp.read(&mut buf).await.expect("the connection reads");
            assert!(n > 0, "the connection ended before {text:?}");
            seen.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), wait)
        .await
        .unwrap_or_else(|_| panic!("{text:?} never arrived"));
}

/// A WebSocket opened by hand over plain TCP, to send what no well-behaved
/// client library would.
pub async fn raw_socket(addr: SocketAddr, path: &str) -> TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut tcp = TcpStream::connect(addr).await.expect("the gateway accepts");
    let request = format!(
        "GET {path} HTTP/1.1\r\nhost: gateway\r\nconnection: upgrade\r\n\
         upgrade: websocket\r\nsec-websocket-version: 13\r\n\
         sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    tcp.write_all(request.as_bytes())
        .await
        .expect("the request goes out");
    let head = read_head(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    tcp
}

/// The code of the close frame the server sends on a raw socket (its
/// frames are not masked), skipping the frames before it (at most 10 s).
pub async fn close_code(tcp: &mut TcpStream) -> u16 {
    use tokio::io::AsyncReadExt;
    let read = async {
        loop {
            let mut header = [0u8; 2];
            tcp.read_exact(&mut header).await.expect("a frame's header");
            let len = usize::from(header[1] & 0x7f);
            assert!(len < 126, "a short frame");
            let mut payload = vec![0u8; len];
            tcp.read_exact(&mut payload)
                .await
                .expect("a frame's payload");
            if header[0] & 0x0f == 0x8 {
                return u16::from_be_bytes([payload[0], payload[1]]);
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), read)
        .await
        .expect("a close frame")
}

/// Ends three sockets of one `Web` object, each its own way: `a` closed by
/// its client (4001, "done"), `b` by the object (asked with "close": the
/// client sees 4000, "bye"), `c` dropped without a close.
pub async fn close_three_ways(mut a: Socket, mut b: Socket, c: Socket) {
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    // The client closes: the object's close handler runs with code and reason.
    a.close(Some(CloseFrame {
        code: CloseCode::from(4001),
        reason: "done".into(),
    }))
    .await
    .expect("the close goes out");
    while next(&mut a).await.is_some() {}
    // The object closes: the client sees its code and reason.
    send(&mut b, "close").await;
    match next(&mut b).await {
        Some(Message::Close(Some(frame))) => {
            assert_eq!(u16::from(frame.code), 4000);
            assert_eq!(frame.reason.as_str(), "bye");
        }
        other => panic!("expected the object's close, got {other:?}"),
    }
    // Reading on sends the client's answer to the close.
    while next(&mut b).await.is_some() {}
    // The connection drops without a close frame.
    drop(c);
}

/// Sends a text frame that is not UTF-8 on a new raw socket to `path`
/// (through the gateway at `addr`): the server closes it with 1007, and
/// the socket's object, `object`, heard why in its `websocket_error`.
pub async fn invalid_utf8_closes_with_1007(
    addr: SocketAddr,
    path: &str,
    object: &do_runtime::Stub<crate::Web>,
) {
    use tokio::io::AsyncWriteExt;
    let mut tcp = raw_socket(addr, path).await;
    // A final text frame, masked with a zero mask, of two bytes that are
    // not UTF-8.
    tcp.write_all(&[0x81, 0x82, 0, 0, 0, 0, 0xff, 0xfe])
        .await
        .expect("the frame goes out");
    assert_eq!(close_code(&mut tcp).await, 1007);
    let errors = object.errors().await.expect("the object answers");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("not UTF-8"), "{errors:?}");
}

/// A binary message comes back reversed from a `Web` object, and 200 text
/// messages sent in a row come back echoed in order.
pub async fn binary_and_many_messages_echo_in_order(socket: &mut Socket) {
    socket
        .send(Message::binary(vec![1u8, 2, 3]))
        .await
        .expect("the message goes out");
    assert_eq!(next(socket).await, Some(Message::binary(vec![3u8, 2, 1])));
    for i in 0..200 {
        send(socket, &format!("m{i}")).await;
    }
    for i in 0..200 {
        assert_eq!(next_text(socket).await, format!("echo:m{i}"));
    }
}
