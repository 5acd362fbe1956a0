//! A replicated log the commit thread appends each commit group to before
//! it applies it (the runtime's is `do-replica`, on NATS JetStream). With
//! one, a batch is applied to the engine, and reported durable, only once
//! the log has stored it on a quorum: the log is what survives the loss of
//! this machine, and the engine becomes a copy of it that a new store can
//! read back (see [`Store::replica_applied`](crate::Store::replica_applied)).
//!
//! This crate only calls the trait; it knows nothing of the log's servers.

use crate::alarm::Alarm;
pub use crate::error::Unreplicated;
use crate::keys::ObjectPrefix;

/// One object's batch as the log takes it: all of it or none.
#[derive(Debug, Clone)]
pub struct ReplicaBatch<'a> {
    /// The object.
    pub object: ObjectPrefix,
    /// Its keys' writes, in order: the stored value, or `None` to delete.
    pub writes: Vec<(&'a [u8], Option<&'a [u8]>)>,
    /// Its alarm, if the batch changes it (`Some(None)`: deleted).
    pub alarm: Option<Option<Alarm>>,
    /// The name its id was made from, if the batch records it.
    pub name: Option<String>,
}

/// A replicated log (see the module's documentation).
pub trait Replicate: Send + Sync + 'static {
    /// Appends each batch, all of it or none, blocking until the log has
    /// stored it on a quorum or refused it: one outcome per batch, in
    /// order, the log's position of the batch or why it is not there. A
    /// batch refused may build on a batch before it, so once one of an
    /// object's batches fails, its later ones are not handed over.
    fn append(&self, batches: &[ReplicaBatch<'_>]) -> Vec<Result<u64, Unreplicated>>;

    /// Whether the positions `append` gives may be recorded as how far this
    /// store's copy goes: not once an append's outcome could not be known
    /// (it may be in the log and not here; a restart reads it back).
    fn position_trusted(&self) -> bool {
        true
    }
}

/// The replicated log a store appends to (see [`Replicate`]).
#[derive(Clone)]
pub struct ReplicaHandle(pub std::sync::Arc<dyn Replicate>);

impl std::fmt::Debug for ReplicaHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReplicaHandle")
    }
}
