use do_runtime::durable_object;

#[durable_object]
pub struct Counter;

fn main() {}
