//! The chat room of `cargo run --example chat`: one Durable Object per room,
//! every member a WebSocket of it, recent history kept in its storage; a
//! directory object that knows the rooms. Shared with the tests, which talk
//! to it with a WebSocket client.
//!
//! Protocol (text frames, tab-separated): the server sends
//! `msg\t<name>\t<text>`, `join\t<name>` and `leave\t<name>`; a client sends
//! the text of a message. A newcomer first receives the message of the day
//! (`motd\t<text>`, when the `CHAT_MOTD` var is bound), then the room's
//! recent messages.
//!
//! What it shows of the API: bindings (`CHAT_MOTD`), a stub passed as an
//! argument (a room announces itself to the directory) and returned as a
//! result (the directory hands out the rooms), `wait_until` (the
//! announcement runs after the join is answered; a follower keeps the room
//! alive), and a streamed response (`GET /ChatRoom/{room}/events`: the
//! room's messages as server-sent events, for read-only followers).

use do_runtime::gateway::default_route;
use do_runtime::http::{HeaderValue, StatusCode, header};
use std::cell::RefCell;
use std::rc::Rc;

use do_runtime::{
    AutoResponse, BodySender, Ctx, DurableObjectId, Env, Error, ListOptions, Message, Request,
    Response, Stub, WebSocket, durable_object, streaming_response,
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
    /// Readers of `/events`, sent every frame as a server-sent event.
    followers: Rc<RefCell<Vec<BodySender>>>,
}

#[durable_object]
impl ChatRoom {
    pub fn new(ctx: Ctx) -> Self {
        // Keep-alive pings are answered without waking a hibernating room.
        ctx.set_websocket_auto_response(Some(AutoResponse::new("ping", "pong")));
        ChatRoom {
            ctx,
            followers: Rc::default(),
        }
    }

    /// `GET /websocket?name=…` joins the room; `GET /events` follows it.
    pub async fn fetch(&self, request: Request) -> Result<Response, Error> {
        match request.uri().path() {
            "/websocket" => self.join(request).await,
            "/events" => Ok(self.follow()),
            _ => Ok(text(
                StatusCode::NOT_FOUND,
                "rooms serve /websocket and /events only",
            )),
        }
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
    async fn join(&self, request: Request) -> Result<Response, Error> {
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
        if let Ok(motd) = self.ctx.env().var("CHAT_MOTD") {
            socket.send(format!("motd\t{motd}"))?;
        }
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
        self.announce();
        Ok(response)
    }

    /// Tells the directory (if the runtime has one) that this room exists,
    /// passing it a stub of the room: after the join is answered.
    fn announce(&self) {
        let env = self.ctx.env();
        let (Ok(directory), Ok(rooms)) = (
            env.try_namespace::<ChatDirectory>(),
            env.try_namespace::<ChatRoom>(),
        ) else {
            return;
        };
        let directory = directory.get_by_name(DIRECTORY);
        let me = rooms.get(self.ctx.id().clone());
        self.ctx.wait_until(async move {
            if let Err(e) = directory.announce(me).await {
                report(&e);
            }
        });
    }

    /// A streamed response that carries the room's frames as server-sent
    /// events while its reader stays.
    fn follow(&self) -> Response {
        let (mut response, body) = streaming_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        // The room stays (is not evicted) while a follower reads.
        let until_gone = body.clone();
        self.ctx
            .wait_until(async move { until_gone.closed().await });
        self.followers.borrow_mut().push(body);
        response
    }

    fn broadcast(&self, frame: &str) {
        for member in self.ctx.websockets(None) {
            // A member whose client stopped reading misses messages rather
            // than holding up the room.
            let _ = member.send(frame);
        }
        let event = format!("data: {}\n\n", frame.replace('\t', " "));
        // A follower that fell behind misses this one; one that left goes.
        self.followers
            .borrow_mut()
            .retain(|follower| follower.try_send(event.clone()).is_ok());
    }
}

/// The name of the one directory object.
pub const DIRECTORY: &str = "directory";

/// Knows every room that was ever joined.
pub struct ChatDirectory {
    ctx: Ctx,
}

#[durable_object]
impl ChatDirectory {
    pub fn new(ctx: Ctx) -> Self {
        ChatDirectory { ctx }
    }

    /// Records `room` (a stub, as an argument): by its name, its id.
    pub async fn announce(&self, room: Stub<ChatRoom>) -> Result<(), Error> {
        let name = room.name().unwrap_or("unnamed").to_owned();
        self.ctx.storage().put(&format!("room:{name}"), room.id())
    }

    /// The rooms, as stubs (a result) the caller can call.
    pub async fn rooms(&self) -> Result<Vec<Stub<ChatRoom>>, Error> {
        let rooms = self.ctx.env().namespace::<ChatRoom>();
        let ids = self
            .ctx
            .storage()
            .list::<DurableObjectId>(ListOptions::new().prefix("room:"))
            .await?;
        Ok(ids.into_iter().map(|(_, id)| rooms.get(id)).collect())
    }
}

fn report(e: &Error) {
    eprintln!("chat: the directory did not take a room: {e}");
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

/// The gateway's router: the page at `/`, the rooms and their members at
/// `/rooms` (one `<room>\t<members>` line each), rooms at
/// `/ChatRoom/{room}/websocket` and `/ChatRoom/{room}/events` (the default
/// route).
pub async fn route(request: Request, env: Env) -> Result<Response, Error> {
    if request.uri().path() == "/rooms" {
        let directory = env.try_namespace::<ChatDirectory>()?.get_by_name(DIRECTORY);
        let mut lines = String::new();
        for room in directory.rooms().await? {
            let members = room.members().await?;
            lines.push_str(&format!(
                "{}\t{members}\n",
                room.name().unwrap_or("unnamed")
            ));
        }
        return Ok(Response::new(lines.into()));
    }
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
