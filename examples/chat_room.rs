//! The chat room of `cargo run --example chat`: one Durable Object per room,
//! every member a WebSocket of it, recent history kept in its storage. Shared
//! with the tests, which talk to it with a WebSocket client.
//!
//! Protocol (text frames, tab-separated): the server sends
//! `msg\t<name>\t<text>`, `join\t<name>` and `leave\t<name>`; a client sends
//! the text of a message. A newcomer first receives the room's recent
//! messages.

use do_runtime::gateway::default_route;
use do_runtime::http::{HeaderValue, StatusCode, header};
use do_runtime::{
    AutoResponse, Ctx, Env, Error, ListOptions, Message, Request, Response, WebSocket,
    durable_object,
};

/// The page the gateway serves at `/`.
pub const PAGE: &str = include_str!("chat.html");

/// Messages kept per room.
pub const HISTORY: usize = 100;

/// The longest message, in characters; longer ones are cut.
const MAX_TEXT: usize = 2000;

/// One chat room.
pub struct ChatRoom {
    ctx: Ctx,
}

#[durable_object]
impl ChatRoom {
    pub fn new(ctx: Ctx) -> Self {
        // Keep-alive pings are answered without waking a hibernating room.
        ctx.set_websocket_auto_response(Some(AutoResponse::new("ping", "pong")));
        ChatRoom { ctx }
    }

    /// `GET /websocket?name=…` joins the room.
    pub async fn fetch(&self, request: Request) -> Result<Response, Error> {
        if request.uri().path() != "/websocket" {
            return Ok(text(StatusCode::NOT_FOUND, "rooms serve /websocket only"));
        }
        let name = request
            .uri()
            .query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("name=")))
            .map(percent_decode)
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| "anonymous".to_owned());
        let name: String = name.replace(['\t', '\n'], " ").chars().take(40).collect();
        let (socket, response) = self.ctx.accept_websocket(&request, &[])?;
        socket.serialize_attachment(&name)?;
        let history = self
            .ctx
            .storage()
            .list::<(String, String)>(
                ListOptions::new()
                    .prefix("msg:")
                    .reverse(true)
                    .limit(HISTORY),
            )
            .await?;
        for (_, (who, said)) in history.into_iter().rev() {
            socket.send(format!("msg\t{who}\t{said}"))?;
        }
        self.broadcast(&format!("join\t{name}"));
        Ok(response)
    }

    pub async fn websocket_message(
        &self,
        socket: WebSocket,
        message: Message,
    ) -> Result<(), Error> {
        let Message::Text(said) = message else {
            return Ok(());
        };
        let said: String = said.replace('\n', " ").chars().take(MAX_TEXT).collect();
        let name: String = socket.deserialize_attachment()?.unwrap_or_default();
        let storage = self.ctx.storage();
        let seq = storage.get::<u64>("seq").await?.unwrap_or(0) + 1;
        storage.put("seq", &seq)?;
        storage.put(&message_key(seq), &(name.clone(), said.clone()))?;
        if let Some(old) = seq.checked_sub(HISTORY as u64) {
            storage.delete(&message_key(old)).await?;
        }
        self.broadcast(&format!("msg\t{name}\t{said}"));
        Ok(())
    }

    pub async fn websocket_close(
        &self,
        socket: WebSocket,
        _code: u16,
        _reason: String,
        _clean: bool,
    ) {
        let name: String = socket
            .deserialize_attachment()
            .ok()
            .flatten()
            .unwrap_or_default();
        self.broadcast(&format!("leave\t{name}"));
    }

    /// How many members are in the room.
    pub async fn members(&self) -> usize {
        self.ctx.websockets(None).len()
    }
}

impl ChatRoom {
    fn broadcast(&self, frame: &str) {
        for member in self.ctx.websockets(None) {
            // A member whose client stopped reading misses messages rather
            // than holding up the room.
            let _ = member.send(frame);
        }
    }
}

fn message_key(seq: u64) -> String {
    format!("msg:{seq:020}")
}

fn text(status: StatusCode, body: &'static str) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The gateway's router: the page at `/`, rooms at
/// `/ChatRoom/{room}/websocket` (the default route).
pub async fn route(request: Request, env: Env) -> Result<Response, Error> {
    if request.uri().path() == "/" {
        let mut response = Response::new(PAGE.into());
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        return Ok(response);
    }
    default_route(request, env).await
}
