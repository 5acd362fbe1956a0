//! The replicated commit log of Durable Objects for Rust, on NATS
//! JetStream.
//!
//! A runtime with replication on appends every commit group here before it
//! applies it, and acknowledges a write only once JetStream has stored it
//! on a majority of the stream's replicas. The log is what survives the
//! loss of a machine and its disk: a runtime started on an empty data
//! directory reads every object's state back from it.
//!
//! - **Per-key compaction.** Each key of each object has a subject, and the
//!   stream keeps one message per subject: the log holds each key's newest
//!   write, so reading an object back costs in proportion to its size, not
//!   to how often it was written (see `subjects`).
//! - **Fencing by the server.** Objects map to shards; a writer claims a
//!   shard with its epoch, and the server refuses every later append of an
//!   older epoch (see [`Log::claim`]).
//! - **Atomic batches.** One object's batch is stored whole or not at all:
//!   in one atomic append, or, past [`MAX_ATOMIC`] messages, staged and then
//!   committed by one message (see [`Log::append`]).
//!
//! This crate knows nothing of objects' code or of the storage engine: it
//! appends and reads bytes by class, id and key.

mod config;
mod error;
mod log;
mod record;
mod subjects;
#[cfg(feature = "testing")]
pub mod testing;

pub use config::{MAX_SHARDS, ReplicaConfig};
pub use error::ReplicaError;
#[cfg(feature = "testing")]
pub use log::Interrupt;
pub use log::{Entry, Log, MAX_ATOMIC, ObjectWrites};
pub use subjects::shard_of;
