use do_runtime::{durable_object, Ctx};

pub struct Greeter;

#[durable_object]
impl Greeter {
    pub fn new(_ctx: Ctx) -> Self { Greeter }
    pub async fn greeting(&self) -> &'static str { "hello" }
}

fn main() {}
