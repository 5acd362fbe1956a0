use do_runtime::{durable_object, Ctx};

pub struct Counter { n: u32 }

#[durable_object]
impl Counter {
    pub fn new(_ctx: Ctx) -> Self { Counter { n: 0 } }
    pub async fn bump(&mut self) -> u32 { self.n += 1; self.n }
}

fn main() {}
