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
