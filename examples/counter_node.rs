//! Serves the Counter as one node of a cluster (feature `cluster`): etcd
//! for membership, NATS JetStream for the replicated log.
//! `scripts/local-cluster.sh` starts etcd, three NATS servers and three of
//! these on this machine.
//!
//! ```text
//! cargo run --example counter_node -- NODE ADDR
//!   ETCD=http://127.0.0.1:2379                 etcd's endpoints, comma-separated
//!   NATS=nats://127.0.0.1:4222,...             the NATS servers, comma-separated
//!   REPLICAS=3                                 the stream's replicas
//!   COUNTER_DATA=counter-data-NODE             the node's data directory
//! ```
//!
//! Call it from any node: `cargo run --example counter_client -- alice 1
//! ADDR`. Stop it with Ctrl-C: it hands its shards over before it exits.

#[path = "counter_object.rs"]
mod counter_object;

use counter_object::Counter;
use do_runtime::{ClusterConfig, ReplicaConfig, Runtime};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    counter_object::init_tracing();
    counter_object::exit(run().await)
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(node), Some(addr)) = (args.next(), args.next()) else {
        return Err("usage: counter_node NODE ADDR (see the file's header)".into());
    };
    let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    let etcd = var("ETCD", "http://127.0.0.1:2379");
    let nats = var("NATS", "nats://127.0.0.1:4222");
    let replicas: usize = var("REPLICAS", "3").parse()?;
    let dir = var("COUNTER_DATA", &format!("counter-data-{node}"));

    let rt = Runtime::builder()
        .data_dir(dir)
        .register::<Counter>()
        .replicate(
            ReplicaConfig::new(nats.split(','))
                .stream("COUNTER")
                .replicas(replicas),
        )
        .cluster(ClusterConfig::new(
            etcd.split(','),
            node.as_str(),
            addr.as_str(),
        ))
        .build()?;
    println!("node {node} serving Counter on {addr}");
    tokio::signal::ctrl_c().await?;
    rt.shutdown().await;
    println!("node {node} left the cluster");
    Ok(())
}
