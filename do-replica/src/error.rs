//! What can go wrong with the log, as a caller can act on it.

/// An error of the replicated log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicaError {
    /// The settings cannot work (no server, a bad stream name, …).
    #[error("replication is misconfigured: {0}")]
    Config(String),
    /// The stream exists with settings this writer cannot use.
    #[error("the stream does not fit: {0}")]
    Stream(String),
    /// A writer with a newer epoch holds the shard: this one may never
    /// write it again.
    #[error("shard {shard} belongs to epoch {current}; this writer's epoch {ours} is older")]
    StaleEpoch {
        /// The shard.
        shard: u32,
        /// This writer's epoch.
        ours: u64,
        /// The epoch that holds it.
        current: u64,
    },
    /// The server refused an append: a newer epoch claimed the shard after
    /// this writer did. Nothing of the refused batch is in the log.
    #[error("shard {shard} was claimed by a newer epoch: the append was refused")]
    Fenced {
        /// The shard.
        shard: u32,
    },
    /// The servers could not be reached, or did not answer in time (an
    /// election, a lost connection). Retryable; an append that fails so
    /// may or may not be in the log.
    #[error("the log is unavailable: {0}")]
    Unavailable(String),
    /// The reader of [`crate::Log::read`] stopped the read, saying why.
    #[error("the read was stopped: {0}")]
    Stopped(String),
    /// A message of the stream is not one this crate wrote.
    #[error("the log holds a message this version cannot read: {0}")]
    Corrupt(String),
}

impl ReplicaError {
    /// Whether trying again (later, or after a new claim) may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ReplicaError::Unavailable(_))
    }
}
