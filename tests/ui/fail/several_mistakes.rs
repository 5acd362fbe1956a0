use do_runtime::{durable_object, Ctx};

pub struct Room;

#[durable_object]
impl Room {
    pub fn new(_ctx: Ctx) -> Self { Room }
    pub fn join(&self, who: String) -> bool { let _ = who; true }
    pub async fn leave(&mut self) {}
    pub async fn name(&self) -> String { String::new() }
}

fn main() {}
