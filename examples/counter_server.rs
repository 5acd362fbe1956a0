//! Serves the Counter over TCP.
//!
//! ```text
//! cargo run --example counter_server                 # 127.0.0.1:7878, data in ./counter-data
//! cargo run --example counter_server -- 127.0.0.1:9000 s3cret
//! ```
//!
//! Stop it with Ctrl-C: it finishes calls in flight and makes every write
//! durable before it exits.

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
    let addr: std::net::SocketAddr = args.next().as_deref().unwrap_or("127.0.0.1:7878").parse()?;
    let token = args.next();
    let dir = std::env::var_os("COUNTER_DATA").unwrap_or_else(|| "counter-data".into());

    let rt = Runtime::builder()
        .data_dir(dir)
        .register::<Counter>()
        .build()?;
    let mut server = rt.server().addr(addr);
    if let Some(token) = &token {
        server = server.token(token);
    }
    let server = server.start().await?;
    println!("serving Counter on {}", server.local_addr());
    tokio::signal::ctrl_c().await?;
    drop(server);
    rt.shutdown().await;
    println!("stopped");
    Ok(())
}
