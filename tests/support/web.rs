//! A test class that serves HTTP and WebSockets.

use std::collections::HashMap;
use std::sync::Mutex;

use do_runtime::bytes::Bytes;
use do_runtime::http::StatusCode;
use do_runtime::{AutoResponse, Ctx, Error, Message, Request, Response, WebSocket, durable_object};

/// How many instances of each named `Web` object were built, to tell
/// whether a message woke a hibernating object.
static CONSTRUCTED: Mutex<Option<HashMap<String, usize>>> = Mutex::new(None);

/// How many times the `Web` object `name` was constructed.
pub fn web_constructions(name: &str) -> usize {
    CONSTRUCTED
        .lock()
        .ok()
        .and_then(|m| m.as_ref().and_then(|m| m.get(name).copied()))
        .unwrap_or(0)
}

/// Echoes requests, and runs a small WebSocket protocol:
/// * `GET /ws?name=N&tags=a,b` accepts a socket with tags `a`, `b` and the
///   attachment `N`;
/// * on a socket: `whoami` → the attachment; `count` → how many sockets;
///   `all:M` → `M` to every socket; `tag:T:M` → `M` to the sockets tagged
///   `T`; `big:N` → `N` bytes, or `error:…` if the send fails; `close` → closes this socket (4000, "bye"); `panic` panics;
///   anything else comes back as `echo:…`; binary messages come back reversed.
/// * `ping` is answered `pong` by the runtime, without waking the object.
pub struct Web {
    ctx: Ctx,
}

#[durable_object]
impl Web {
    pub fn new(ctx: Ctx) -> Self {
        let name = ctx.id().name().unwrap_or("").to_owned();
        if let Ok(mut map) = CONSTRUCTED.lock() {
            *map.get_or_insert_with(HashMap::new)
                .entry(name)
                .or_default() += 1;
        }
        ctx.set_websocket_auto_response(Some(AutoResponse::new("ping", "pong")));
        Web { ctx }
    }

    pub async fn fetch(&self, request: Request) -> Result<Response, Error> {
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or("").to_owned();
        match path.as_str() {
            "/ws" => {
                let param = |key: &str| {
                    query.split('&').find_map(|kv| {
                        kv.strip_prefix(key)
                            .and_then(|rest| rest.strip_prefix('='))
                            .map(str::to_owned)
                    })
                };
                let tags = param("tags").unwrap_or_default();
                let tags: Vec<&str> = tags.split(',').filter(|t| !t.is_empty()).collect();
                let (socket, response) = self.ctx.accept_websocket(&request, &tags)?;
                socket.serialize_attachment(&param("name").unwrap_or_default())?;
                Ok(response)
            }
            "/ws-plain" => {
                // Accepts, then answers without the upgrade: the socket is dropped.
                let _accepted = self.ctx.accept_websocket(&request, &[])?;
                Ok(Response::new("no upgrade after all".into()))
            }
            "/ws-closed" => {
                // Accepts and closes at once ("room full").
                let (socket, response) = self.ctx.accept_websocket(&request, &[])?;
                socket.close(4001, "full")?;
                Ok(response)
            }
            "/panic" => panic!("the fetch handler panicked"),
            "/error" => Err(Error::app("the handler failed")),
            "/storage-error" => {
                self.ctx.storage().put(&"k".repeat(5000), &1)?;
                Ok(Response::new(Bytes::new()))
            }
            "/big" => {
                let n: usize = query
                    .strip_prefix("n=")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                Ok(Response::new(Bytes::from(vec![b'x'; n])))
            }
            "/count" => {
                let storage = self.ctx.storage();
                let n = storage.get::<u64>("hits").await?.unwrap_or(0) + 1;
                storage.put("hits", &n)?;
                Ok(Response::new(n.to_string().into()))
            }
            "/closes" => {
                let closes: Vec<(u16, String, bool)> =
                    self.ctx.storage().get("closes").await?.unwrap_or_default();
                Ok(Response::new(format!("{closes:?}").into()))
            }
            _ => {
                let mut response = Response::new(request.body().clone());
                *response.status_mut() = StatusCode::CREATED;
                let headers = response.headers_mut();
                headers.insert(
                    "x-method",
                    request.method().as_str().parse().expect("a header"),
                );
                headers.insert("x-path", path.parse().expect("a header"));
                headers.insert("x-query", query.parse().expect("a header"));
                for (name, value) in request.headers() {
                    if name.as_str().starts_with("x-in-") {
                        headers.append(name.clone(), value.clone());
                    }
                }
                Ok(response)
            }
        }
    }

    pub async fn websocket_message(
        &self,
        socket: WebSocket,
        message: Message,
    ) -> Result<(), Error> {
        let text = match message {
            Message::Text(text) => text,
            Message::Binary(bytes) => {
                let mut reversed = bytes.to_vec();
                reversed.reverse();
                return socket.send(reversed);
            }
        };
        if text == "whoami" {
            let name: Option<String> = socket.deserialize_attachment()?;
            socket.send(name.unwrap_or_default())
        } else if text == "count" {
            socket.send(self.ctx.websockets(None).len().to_string())
        } else if let Some(message) = text.strip_prefix("all:") {
            for other in self.ctx.websockets(None) {
                other.send(message)?;
            }
            Ok(())
        } else if let Some(rest) = text.strip_prefix("tag:") {
            let (tag, message) = rest.split_once(':').unwrap_or((rest, ""));
            for other in self.ctx.websockets(Some(tag)) {
                other.send(message)?;
            }
            Ok(())
        } else if let Some(n) = text.strip_prefix("big:") {
            let n = n.parse().unwrap_or(0);
            match socket.send("x".repeat(n)) {
                Ok(()) => Ok(()),
                Err(e) => socket.send(format!("error:{e}")),
            }
        } else if let Some(n) = text.strip_prefix("flood:") {
            for _ in 0..n.parse().unwrap_or(0) {
                if socket.send(vec![0u8; 100_000]).is_err() {
                    break;
                }
            }
            Ok(())
        } else if text == "close" {
            socket.close(4000, "bye")
        } else if text == "write-send-panic" {
            // The message reflects a write that the panic discards: the
            // output gate must drop it.
            self.ctx.storage().put("doomed", &true)?;
            socket.send("reflects a lost write")?;
            panic!("after writing and sending")
        } else if text == "write-close-panic" {
            // The close follows a write the panic discards: a close shows
            // no data, so it must still reach the client.
            self.ctx.storage().put("doomed", &true)?;
            socket.close(4002, "closing anyway")?;
            panic!("after writing and closing")
        } else if text == "write-send" {
            self.ctx.storage().put("kept", &true)?;
            socket.send("reflects a durable write")
        } else if text == "panic" {
            panic!("the message handler panicked")
        } else if text == "hang" {
            // Never ends: only an event timeout stops it.
            std::future::pending::<()>().await;
            Ok(())
        } else if text == "auto-at" {
            let at = self.ctx.websocket_auto_response_timestamp(&socket);
            socket.send(at.map_or("none".to_owned(), |at| {
                let ms = at
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis());
                ms.to_string()
            }))
        } else {
            socket.send(format!("echo:{text}"))
        }
    }

    pub async fn websocket_close(
        &self,
        _socket: WebSocket,
        code: u16,
        reason: String,
        clean: bool,
    ) {
        let storage = self.ctx.storage();
        let mut closes: Vec<(u16, String, bool)> = storage
            .get("closes")
            .await
            .ok()
            .flatten()
            .unwrap_or_default();
        closes.push((code, reason, clean));
        storage.put("closes", &closes).ok();
    }

    pub async fn websocket_error(&self, _socket: WebSocket, error: String) {
        let storage = self.ctx.storage();
        let mut errors: Vec<String> = storage
            .get("errors")
            .await
            .ok()
            .flatten()
            .unwrap_or_default();
        errors.push(error);
        storage.put("errors", &errors).ok();
    }

    /// The errors `websocket_error` was told of.
    pub async fn errors(&self) -> Vec<String> {
        self.ctx
            .storage()
            .get("errors")
            .await
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// An ordinary method beside the handlers.
    pub async fn sockets(&self, tag: Option<String>) -> usize {
        self.ctx.websockets(tag.as_deref()).len()
    }
}
