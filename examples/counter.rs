//! The seeds' Counter: a durable counter per name.
//!
//! ```text
//! cargo run --example counter            # prints 1, then 2 on the next run, …
//! cargo run --example counter -- alice 5 # adds 5 to the counter "alice"
//! ```
//!
//! The data lives in `./counter-data` (or `$COUNTER_DATA`), so every run
//! continues counting from the previous one.

#[path = "counter_object.rs"]
mod counter_object;

use counter_object::Counter;
use do_runtime::Runtime;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    counter_object::init_tracing();
    counter_object::exit(run().await)
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "foo".to_owned());
    let amount: i64 = match args.next() {
        Some(text) => text
            .parse()
            .map_err(|e| format!("amount {text:?} is not an integer: {e}"))?,
        None => 1,
    };
    let dir = std::env::var_os("COUNTER_DATA").unwrap_or_else(|| "counter-data".into());

    let rt = Runtime::builder()
        .data_dir(dir)
        .register::<Counter>()
        .build()?;
    let ns = rt.namespace::<Counter>();
    let stub = ns.get(ns.id_from_name(&name));
    let value = stub.increment(amount).await?;
    println!("counter {name:?} ({}) is now {value}", stub.id());
    rt.shutdown().await;
    Ok(())
}
