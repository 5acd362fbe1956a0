//! A chat server: rooms are Durable Objects, members are WebSockets.
//!
//! ```text
//! cargo run --example chat                  # http://127.0.0.1:8787/, data in ./chat-data
//! cargo run --example chat -- 0.0.0.0:8080
//! ```
//!
//! Open the page in two browser windows, join the same room, and talk. The
//! room keeps its last 100 messages, so a newcomer (or a restarted server)
//! shows them. `curl http://127.0.0.1:8787/rooms` lists the rooms and their
//! members; `curl -N http://127.0.0.1:8787/ChatRoom/lobby/events` follows a
//! room as server-sent events. `CHAT_MOTD` sets the message of the day.
//! Stop it with Ctrl-C.

#[path = "chat_room.rs"]
mod chat_room;
#[path = "counter_object.rs"]
#[allow(dead_code)]
mod counter_object;

use chat_room::{ChatDirectory, ChatRoom};
use do_runtime::Runtime;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    counter_object::init_tracing();
    counter_object::exit(run().await)
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let addr: std::net::SocketAddr = std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or("127.0.0.1:8787")
        .parse()?;
    let dir = std::env::var_os("CHAT_DATA").unwrap_or_else(|| "chat-data".into());
    let motd = std::env::var("CHAT_MOTD").unwrap_or_else(|_| "be kind".to_owned());
    let rt = Runtime::builder()
        .data_dir(dir)
        .var("CHAT_MOTD", motd)
        .register::<ChatRoom>()
        .register::<ChatDirectory>()
        .build()?;
    let gateway = rt
        .gateway()
        .addr(addr)
        .route(chat_room::route)
        .start()
        .await?;
    println!("chat on http://{}/", gateway.local_addr());
    tokio::signal::ctrl_c().await?;
    gateway.shutdown().await;
    rt.shutdown().await;
    println!("stopped");
    Ok(())
}
