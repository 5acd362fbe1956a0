//! One WebSocket between a client and an object: completes the upgrade, then
//! carries the client's messages to the object's handlers and the object's
//! sends to the client, until either side closes.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::sync::watch;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message as Frame};

use crate::error::Error;
use crate::fetch::Response;
use crate::runtime::Shared;
use crate::stub::RawStub;
use crate::websocket::{Claimed, Event, Message, Outgoing, SOCKET_HEADER};

/// How long to wait for the client's answer to a close the object started.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The `101` answer that completes the handshake, keeping the headers the
/// object set (a subprotocol, say).
pub(super) fn switching_protocols(response: Response, key: &[u8]) -> Response {
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(SOCKET_HEADER);
    parts.headers.insert(
        http::header::UPGRADE,
        http::HeaderValue::from_static("websocket"),
    );
    parts.headers.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("upgrade"),
    );
    if let Ok(accept) = http::HeaderValue::from_str(&tungstenite::handshake::derive_accept_key(key))
    {
        parts
            .headers
            .insert(http::header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    Response::from_parts(parts, bytes::Bytes::new())
}

/// Serves one socket until it closes; then the runtime forgets it.
pub(super) async fn serve(
    shared: Arc<Shared>,
    claimed: Claimed,
    upgrade: hyper::upgrade::OnUpgrade,
    stopped: watch::Receiver<bool>,
) {
    let entry = claimed.entry.clone();
    if let Ok(upgraded) = upgrade.await {
        let limit = shared.sockets().message_limit();
        let config = WebSocketConfig::default()
            .max_message_size(Some(limit))
            .max_frame_size(Some(limit));
        let stream =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        Pump {
            shared: shared.clone(),
            stub: None,
            claimed,
        }
        .run(stream, stopped)
        .await;
    }
    shared.sockets().remove(&entry);
}

struct Pump {
    shared: Arc<Shared>,
    /// The stub events go through; replaced when a reset breaks it.
    stub: Option<RawStub>,
    claimed: Claimed,
}

/// What ends a socket.
enum End {
    /// The client closed or went away; the object was told.
    Client,
    /// Close the socket with this code and reason.
    Close(u16, String),
}

impl Pump {
    async fn run<S>(mut self, mut stream: WebSocketStream<S>, mut stopped: watch::Receiver<bool>)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let end = loop {
            tokio::select! {
                biased;
                () = super::stopping(&mut stopped) => break End::Close(1001, "the gateway is shutting down".into()),
                outgoing = self.claimed.rx.recv() => match outgoing {
                    Some(Outgoing::Message(message)) => {
                        let frame = match message {
                            Message::Text(text) => Frame::text(text),
                            Message::Binary(bytes) => Frame::binary(bytes),
                        };
                        if let Err(e) = stream.send(frame).await {
                            self.deliver(Event::Error { socket: self.socket(), error: e.to_string() }).await;
                            break End::Client;
                        }
                    }
                    Some(Outgoing::Close { code, reason }) => break End::Close(code, reason),
                    None => break End::Close(1011, String::new()),
                },
                incoming = stream.next() => match incoming {
                    Some(Ok(Frame::Text(text))) => {
                        if let Some(answer) = self.claimed.entry.auto_answer(text.as_str()) {
                            if stream.send(Frame::text(answer)).await.is_err() {
                                break End::Client;
                            }
                            continue;
                        }
                        let message = Message::Text(text.as_str().to_owned());
                        if let Some(end) = self.deliver(Event::Message { socket: self.socket(), message }).await {
                            break end;
                        }
                    }
                    Some(Ok(Frame::Binary(bytes))) => {
                        let message = Message::Binary(bytes);
                        if let Some(end) = self.deliver(Event::Message { socket: self.socket(), message }).await {
                            break end;
                        }
                    }
                    Some(Ok(Frame::Close(frame))) => {
                        let (code, reason) = frame.map_or((1005, String::new()), |f| {
                            (u16::from(f.code), f.reason.as_str().to_owned())
                        });
                        self.deliver(Event::Close { socket: self.socket(), code, reason, clean: true }).await;
                        // Answer the close (tungstenite queued the reply).
                        let _ = stream.flush().await;
                        break End::Client;
                    }
                    Some(Ok(_)) => {} // ping and pong: tungstenite answers pings
                    Some(Err(tungstenite::Error::Capacity(e))) => {
                        self.deliver(Event::Error { socket: self.socket(), error: e.to_string() }).await;
                        break End::Close(1009, "message too big".into());
                    }
                    // The connection ended without a closing handshake: an
                    // abnormal closure (1006), not a protocol error.
                    None
                    | Some(Err(
                        tungstenite::Error::Io(_)
                        | tungstenite::Error::ConnectionClosed
                        | tungstenite::Error::AlreadyClosed
                        | tungstenite::Error::Protocol(
                            tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
                        ),
                    )) => {
                        let reason = "the connection was lost".to_owned();
                        self.deliver(Event::Close { socket: self.socket(), code: 1006, reason, clean: false }).await;
                        break End::Client;
                    }
                    Some(Err(e)) => {
                        self.deliver(Event::Error { socket: self.socket(), error: e.to_string() }).await;
                        break End::Client;
                    }
                },
            }
        };
        if let End::Close(code, reason) = end {
            let frame = CloseFrame {
                code: CloseCode::from(code),
                reason: reason.into(),
            };
            if stream.send(Frame::Close(Some(frame))).await.is_ok() {
                // Wait for the client's close, briefly; what it sends meanwhile is dropped.
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
                    while let Some(Ok(_)) = stream.next().await {}
                })
                .await;
            }
        }
    }

    fn socket(&self) -> u64 {
        self.claimed.entry.id()
    }

    /// Calls the object's handler for `event` and waits for it, so events
    /// arrive in order and a slow object slows its clients down. Returns how
    /// the socket ends if it must.
    async fn deliver(&mut self, event: Event) -> Option<End> {
        let args = match postcard::to_stdvec(&event) {
            Ok(args) => args,
            Err(e) => return Some(End::Close(1011, format!("cannot encode an event: {e}"))),
        };
        if self.stub.as_ref().is_some_and(RawStub::is_broken) {
            self.stub = None;
        }
        let stub = self.stub.get_or_insert_with(|| {
            RawStub::new(
                self.shared.clone(),
                self.claimed.entry.class().clone(),
                self.claimed.entry.object().clone(),
            )
        });
        let result = stub
            .call_system(event.handler(), args, |_| Ok(()), Err)
            .await;
        match result {
            Ok(()) => None,
            // An object without this handler ignores the event.
            Err(Error::UnknownMethod { .. }) => None,
            Err(_) if self.shared.is_closing() => {
                Some(End::Close(1001, "the runtime is shutting down".into()))
            }
            Err(e @ Error::Overloaded(_)) => {
                tracing::debug!(error = %e, "a WebSocket message was refused");
                Some(End::Close(1013, "the object is overloaded".into()))
            }
            Err(e) => {
                tracing::debug!(error = %e, socket = self.socket(), "a WebSocket handler failed");
                None
            }
        }
    }
}
