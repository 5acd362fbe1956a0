use do_runtime::{durable_object, Ctx};

pub struct Greeter;

#[durable_object]
impl Greeter {
    pub fn new(_ctx: Ctx) -> Self { Greeter }
    pub async fn greet(&self, name: impl Into<String>) -> String { name.into() }
}

fn main() {}
