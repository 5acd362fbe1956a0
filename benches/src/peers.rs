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

/// The same in-memory counter as a ractor actor and as a kameo actor, for
/// the in-process scenarios.
pub mod actors {
    use kameo::actor::Spawn;
    use ractor::{ActorProcessingErr, ActorRef, RpcReplyPort};

    /// ractor: an actor whose state is the count.
    pub struct RactorAdder;

    pub enum RactorMsg {
        Add(i64, RpcReplyPort<i64>),
    }

    impl ractor::Actor for RactorAdder {
        type Msg = RactorMsg;
        type State = i64;
        type Arguments = ();

        async fn pre_start(
            &self,
            _myself: ActorRef<Self::Msg>,
            _args: (),
        ) -> Result<i64, ActorProcessingErr> {
            Ok(0)
        }

        async fn handle(
            &self,
            _myself: ActorRef<Self::Msg>,
            message: Self::Msg,
            state: &mut i64,
        ) -> Result<(), ActorProcessingErr> {
            let RactorMsg::Add(amount, reply) = message;
            *state += amount;
            let _ = reply.send(*state);
            Ok(())
        }
    }

    pub async fn ractor_spawn() -> ActorRef<RactorMsg> {
        let (actor, _handle) = ractor::Actor::spawn(None, RactorAdder, ())
            .await
            .expect("ractor spawns");
        actor
    }

    pub async fn ractor_add(actor: &ActorRef<RactorMsg>, amount: i64) -> i64 {
        ractor::call!(actor, RactorMsg::Add, amount).expect("ractor call")
    }

    /// kameo: an actor with one message.
    #[derive(kameo::Actor)]
    pub struct KameoAdder {
        n: i64,
    }

    pub struct Add(pub i64);

    impl kameo::message::Message<Add> for KameoAdder {
        type Reply = i64;

        async fn handle(
            &mut self,
            msg: Add,
            _ctx: &mut kameo::message::Context<Self, Self::Reply>,
        ) -> i64 {
            self.n += msg.0;
            self.n
        }
    }

    pub fn kameo_spawn() -> kameo::actor::ActorRef<KameoAdder> {
        KameoAdder::spawn(KameoAdder { n: 0 })
    }

    pub async fn kameo_add(actor: &kameo::actor::ActorRef<KameoAdder>, amount: i64) -> i64 {
        actor.ask(Add(amount)).await.expect("kameo ask")
    }
}
