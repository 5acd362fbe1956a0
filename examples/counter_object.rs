//! The seeds' Counter, shared by the examples.

use do_runtime::{Ctx, Error, durable_object};

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

/// The exit of an example: a one-line message on error.
pub fn exit(result: Result<(), Box<dyn std::error::Error>>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Logs to stderr as `RUST_LOG` says (default: warnings). Try
/// `RUST_LOG=do_runtime=debug` to see a span per call and the lifecycle
/// events, or `RUST_LOG=do_storage::commit=debug` for every commit group.
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
