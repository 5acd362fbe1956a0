use do_runtime::{durable_object, Ctx};

pub struct Point { pub x: i32, pub y: i32 }

pub struct Canvas;

#[durable_object]
impl Canvas {
    pub fn new(_ctx: Ctx) -> Self { Canvas }
    pub async fn plot(&self, label: String, point: Point) -> bool { let _ = (label, point.x, point.y); true }
}

fn main() {}
