use do_runtime::{durable_object, Ctx};

pub struct Counter;

#[durable_object]
impl Counter {
    pub fn new(_ctx: Ctx) -> Self { Counter }
    pub async fn default_step() -> u32 { 1 }
}

fn main() {}
