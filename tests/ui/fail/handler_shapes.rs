use do_runtime::{durable_object, Ctx, Request, Response, WebSocket};

pub struct Room;

#[durable_object]
impl Room {
    pub fn new(_ctx: Ctx) -> Self { Room }
    pub async fn fetch(&self) -> Response { Response::new(Default::default()) }
    pub async fn websocket_close(&self, _socket: WebSocket, _code: u16) {}
}

pub struct Page;

#[durable_object]
impl Page {
    pub fn new(_ctx: Ctx) -> Self { Page }
    pub async fn fetch(&self, _request: Request) {}
}

fn main() {}
