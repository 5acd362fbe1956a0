use do_runtime::{durable_object, Ctx};

pub struct Store;

#[durable_object]
impl Store {
    pub fn new(_ctx: Ctx) -> Self { Store }
    pub async fn save<T: serde::Serialize>(&self, value: T) -> bool { let _ = value; true }
}

fn main() {}
