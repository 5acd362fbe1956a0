//! Membership and shard ownership of Durable Objects for Rust, on etcd.
//!
//! A runtime in a cluster is a [`Node`]: it holds an etcd lease and is
//! registered under the cluster's prefix with the address it serves on.
//! Objects map to a fixed number of shards; each shard is owned by one live
//! node through a key bound to that node's lease and claimed in an etcd
//! transaction. The key's create revision is the shard's **epoch**, which
//! the replicated log fences appends with. Shards are spread over the live
//! members by rendezvous hashing: a joining node takes its share, a leaving
//! one drains before its shards move, and a dead one's shards are claimed
//! by the others once its lease expires. A node stops serving before its
//! lease could expire (self-fencing by time).
//!
//! This crate knows nothing of objects: it tells its [`Host`] (the runtime)
//! which shards to serve, at which epoch, and where the others are.

mod config;
mod error;
mod inspect;
mod keys;
mod node;
mod placement;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::{ClusterConfig, MAX_SHARDS, Secret};
pub use error::ClusterError;
pub use inspect::{ClusterView, MemberView, inspect};
pub use node::{BoxFuture, Counts, Host, Member, Node, Owner, Route, Status, placed};
