use do_runtime::{durable_object, Ctx};

pub struct Account;

#[durable_object]
impl Account {
    pub fn new(_ctx: Ctx) -> Self { Account }
    pub async fn id(&self) -> u64 { 7 }
}

fn main() {}
