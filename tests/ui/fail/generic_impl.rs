use do_runtime::{durable_object, Ctx};

pub struct Holder<T>(T);

#[durable_object]
impl<T: Default + 'static> Holder<T> {
    pub fn new(_ctx: Ctx) -> Self { Holder(T::default()) }
    pub async fn ping(&self) -> u32 { 1 }
}

fn main() {}
