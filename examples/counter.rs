//! The seeds' Counter: a durable counter per name.
//!
//! ```text
//! cargo run --example counter            # prints 1, then 2 on the next run, …
//! cargo run --example counter -- alice 5 # adds 5 to the counter "alice"
//! ```
//!
//! The data lives in `./counter-data` (or `$COUNTER_DATA`), so every run
//! continues counting from the previous one.

use do_runtime::{Ctx, Error, Runtime, durable_object};

/// A counter whose value survives restarts.
pub struct Counter {
    ctx: Ctx,
}

#[durable_object]
impl Counter {
    /// Builds an instance on its first call.
    pub fn new(ctx: Ctx) -> Self {
        Self { ctx }
    }

    /// Adds `amount` and returns the new value.
    pub async fn increment(&self, amount: i64) -> Result<i64, Error> {
        let value = self.ctx.storage().get::<i64>("value").await?.unwrap_or(0) + amount;
        self.ctx.storage().put("value", &value)?;
        Ok(value)
    }

    /// The current value.
    pub async fn value(&self) -> Result<i64, Error> {
        Ok(self.ctx.storage().get::<i64>("value").await?.unwrap_or(0))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
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
    Ok(())
}
