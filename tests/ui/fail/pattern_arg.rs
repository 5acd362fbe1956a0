use do_runtime::{durable_object, Ctx};

pub struct Grid;

#[durable_object]
impl Grid {
    pub fn new(_ctx: Ctx) -> Self { Grid }
    pub async fn set(&self, (x, y): (i32, i32)) -> i32 { x + y }
}

fn main() {}
