use do_runtime::{durable_object, Ctx};

pub struct Snapshot { pub bytes: Vec<u8> }

pub struct Canvas;

#[durable_object]
impl Canvas {
    pub fn new(_ctx: Ctx) -> Self { Canvas }
    pub async fn snapshot(&self) -> Snapshot { Snapshot { bytes: vec![] } }
}

fn main() {}
