//! The storage error type.

use std::sync::Arc;

/// Everything that can go wrong in [`crate::Store`] and [`crate::ObjectStore`].
///
/// Limit violations ([`StorageError::KeyTooLarge`] and friends) are checked
/// before anything is written: when one is returned, nothing of the operation
/// reached storage and the caller may fix the input and try again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// A key is longer than [`crate::limits::MAX_KEY_BYTES`]. Use a shorter key.
    #[error("key of {len} bytes is too large: keys are at most {limit} bytes")]
    KeyTooLarge {
        /// The key's length in bytes.
        len: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// An encoded value is larger than [`crate::limits::MAX_VALUE_BYTES`].
    /// Split it over several keys.
    #[error(
        "value for key {key:?} is {len} bytes encoded, too large: values are at most {limit} bytes"
    )]
    ValueTooLarge {
        /// The key the value was meant for.
        key: String,
        /// The encoded value's length in bytes.
        len: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// A batch names more than [`crate::limits::MAX_BATCH_KEYS`] keys. Split the batch.
    #[error("batch of {len} keys is too large: a batch holds at most {limit} keys")]
    BatchTooLarge {
        /// How many keys the batch named.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The list options contradict each other or are out of range.
    #[error("invalid list options: {0}")]
    InvalidListOptions(&'static str),
    /// The storage engine failed (an I/O error, a full disk, a corrupted file).
    /// The write that hit it did not become durable; the storage may refuse
    /// further writes until the process restarts.
    #[error("storage engine failure: {0}")]
    Engine(Arc<str>),
    /// The writes were dropped before they were handed to the commit thread,
    /// because the object was reset. Nothing of them was stored.
    #[error("the object was reset before its writes were committed")]
    Discarded,
    /// The data directory was written in a storage format this version does
    /// not read. Nothing in it was changed. Export its objects with the
    /// version that wrote it (`do-cli export`) and import them with this one.
    #[error(
        "the data directory uses storage format {found}; this version reads format {supported} only (export it with the version that wrote it, then import)"
    )]
    UnsupportedFormat {
        /// The directory's format.
        found: u32,
        /// The format this version reads.
        supported: u32,
    },
    /// The store is closed (the runtime shut down); nothing more can be written.
    #[error("the store is closed")]
    Closed,
}

impl From<fjall::Error> for StorageError {
    fn from(e: fjall::Error) -> Self {
        StorageError::Engine(e.to_string().into())
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;
