use do_runtime::{durable_object, Ctx};

pub struct Counter;

#[durable_object(name = "Tally", name = "Count")]
impl Counter {
    pub fn new(_ctx: Ctx) -> Self { Counter }
    pub async fn get(&self) -> u32 { 0 }
}

fn main() {}
