//! tarpc, serving the same in-memory counter as the remote scenarios.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use futures_util::{StreamExt, future};
use tarpc::server::{self, Channel};
use tarpc::tokio_serde::formats::Bincode;
use tarpc::{client, context};

#[tarpc::service]
pub trait TallyService {
    async fn add(amount: i64) -> i64;
}

#[derive(Clone)]
struct TallyServer(Arc<AtomicI64>);

impl TallyService for TallyServer {
    async fn add(self, _: context::Context, amount: i64) -> i64 {
        self.0.fetch_add(amount, Ordering::Relaxed) + amount
    }
}

/// Starts a tarpc server on loopback; returns its address.
pub async fn serve() -> SocketAddr {
    let mut listener = tarpc::serde_transport::tcp::listen("127.0.0.1:0", Bincode::default)
        .await
        .expect("tarpc listens");
    listener.config_mut().max_frame_length(usize::MAX);
    let addr = listener.local_addr();
    let total = Arc::new(AtomicI64::new(0));
    tokio::spawn(async move {
        listener
            .filter_map(|r| future::ready(r.ok()))
            .map(server::BaseChannel::with_defaults)
            .for_each(move |channel| {
                let server = TallyServer(total.clone());
                tokio::spawn(
                    channel
                        .execute(server.serve())
                        .for_each(|response| async move {
                            tokio::spawn(response);
                        }),
                );
                future::ready(())
            })
            .await;
    });
    addr
}

/// A connected tarpc client.
pub async fn connect(addr: SocketAddr) -> TallyServiceClient {
    let transport = tarpc::serde_transport::tcp::connect(addr, Bincode::default)
        .await
        .expect("tarpc connects");
    let mut config = client::Config::default();
    config.max_in_flight_requests = 4096;
    TallyServiceClient::new(config, transport).spawn()
}

/// One call.
pub async fn add(client: &TallyServiceClient, amount: i64) -> i64 {
    client
        .add(context::current(), amount)
        .await
        .expect("tarpc call")
}
