//! Calls the Counter served by `counter_server` and prints the count.
//!
//! ```text
//! cargo run --example counter_client                       # increments "foo" on 127.0.0.1:7878
//! cargo run --example counter_client -- alice 5 127.0.0.1:9000 s3cret
//! ```

#[path = "counter_object.rs"]
mod counter_object;

use counter_object::Counter;
use do_runtime::Client;

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
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:7878".to_owned());
    let mut client = Client::builder();
    if let Some(token) = args.next() {
        client = client.token(token);
    }
    let client = client.connect(addr.as_str()).await?;
    let counters = client.namespace::<Counter>()?;
    let stub = counters.get_by_name(&name);
    let value = stub.increment(amount).await?;
    println!("counter {name:?} ({}) on {addr} is now {value}", stub.id());
    Ok(())
}
