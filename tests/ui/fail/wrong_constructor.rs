use do_runtime::durable_object;

pub struct Counter;

#[durable_object]
impl Counter {
    pub fn new() -> Self { Counter }
    pub async fn get(&self) -> u32 { 0 }
}

fn main() {}
