use do_runtime::{durable_object, Ctx, Request};

pub struct Page;

#[durable_object]
impl Page {
    pub fn new(_ctx: Ctx) -> Self { Page }
    pub async fn fetch(&self, _request: Request) -> String { String::new() }
}

pub struct Echo;

#[durable_object]
impl Echo {
    pub fn new(_ctx: Ctx) -> Self { Echo }
    pub async fn fetch(&self, request: String) -> do_runtime::Response {
        do_runtime::Response::new(request.into())
    }
}

fn main() {}
