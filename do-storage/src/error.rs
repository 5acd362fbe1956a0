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
    ///
    /// Its [`source`](std::error::Error::source) is fjall's error, when
    /// fjall reported the failure.
    #[error(transparent)]
    Engine(EngineError),
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
    /// The data directory is not empty and is not a store: nothing in it was
    /// changed. Point the runtime at an empty or new directory.
    #[error("{path} is not a data directory (it is not empty and holds no store): {found}")]
    NotAStore {
        /// The directory.
        path: String,
        /// What was found in it.
        found: String,
    },
    /// A part of a complete data directory is missing or damaged (a
    /// deleted journal or keyspace folder, a journal emptied or
    /// overwritten): the store refuses to open rather than start over as if
    /// it were new. `what` names the part; restore it from a backup.
    #[error("the data directory is damaged: {what}")]
    Damaged {
        /// What is missing or wrong.
        what: String,
    },
    /// The store is closed (the runtime shut down); nothing more can be written.
    #[error("the store is closed")]
    Closed,
    /// The replicated log did not take the batch (see `Replicate`): it is
    /// not applied, and the object's later batches are not either.
    #[error("the write was not replicated: {}", .0.message)]
    Unreplicated(Unreplicated),
}

/// Why the replicated log did not take a batch (see `Replicate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreplicated {
    /// What happened, in words.
    pub message: String,
    /// The log refused it because a newer writer holds the object's shard:
    /// this store may not write the object again.
    pub fenced: bool,
}

impl From<fjall::Error> for StorageError {
    fn from(e: fjall::Error) -> Self {
        StorageError::Engine(EngineError::from(e))
    }
}

/// What [`StorageError::Engine`] holds: fjall's error, or what this crate
/// found wrong with what fjall stored (a damaged entry) or around it (the
/// commit thread did not start).
///
/// Shared rather than copied, so [`StorageError`] stays `Clone` (the commit
/// thread hands one failure to every batch of its group) while fjall's
/// error, which is not `Clone`, is kept whole as the
/// [`source`](std::error::Error::source) of the error chain.
///
/// Displays as `storage engine failure: ` and the cause. Two engine errors
/// are equal when they display alike.
#[derive(Clone)]
pub struct EngineError(Cause);

#[derive(Clone)]
enum Cause {
    Fjall(Arc<fjall::Error>),
    Message(Arc<str>),
}

impl EngineError {
    /// The cause without the `storage engine failure: ` in front.
    fn cause(&self) -> &dyn std::fmt::Display {
        match &self.0 {
            Cause::Fjall(e) => e,
            Cause::Message(m) => m,
        }
    }
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "storage engine failure: {}", self.cause())?;
        if self.is_poisoned() {
            // fjall's own word says nothing of why or what next.
            f.write_str(
                " (fjall stopped writing after a write or fsync failed: a full disk or an I/O error; writes fail until the store is reopened)",
            )?;
        }
        Ok(())
    }
}

impl EngineError {
    /// Whether fjall refuses every write from now on (it failed to write
    /// or sync a file earlier): only reopening the database ends it.
    pub fn is_poisoned(&self) -> bool {
        matches!(&self.0, Cause::Fjall(e) if matches!(**e, fjall::Error::Poisoned))
    }
}

/// The cause, as a string: what the error held before it kept fjall's.
impl std::fmt::Debug for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.cause().to_string(), f)
    }
}

impl std::error::Error for EngineError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.0 {
            Cause::Fjall(e) => Some(&**e),
            Cause::Message(_) => None,
        }
    }
}

impl PartialEq for EngineError {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Cause::Message(a), Cause::Message(b)) => a == b,
            _ => self.cause().to_string() == other.cause().to_string(),
        }
    }
}

impl Eq for EngineError {}

impl From<fjall::Error> for EngineError {
    fn from(e: fjall::Error) -> Self {
        EngineError(Cause::Fjall(Arc::new(e)))
    }
}

impl From<&str> for EngineError {
    fn from(message: &str) -> Self {
        EngineError(Cause::Message(message.into()))
    }
}

impl From<String> for EngineError {
    fn from(message: String) -> Self {
        EngineError(Cause::Message(message.into()))
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn an_engine_error_keeps_fjalls_error_as_its_source_and_displays_as_before() {
        let fjall = || fjall::Error::from(std::io::Error::other("disk on fire"));
        let e = StorageError::from(fjall());
        assert_eq!(
            e.to_string(),
            format!("storage engine failure: {}", fjall()),
            "the same text as when only the text was kept"
        );
        let source = e.source().expect("a source");
        let found = source
            .downcast_ref::<fjall::Error>()
            .expect("fjall's error");
        assert!(matches!(found, fjall::Error::Io(io) if io.to_string() == "disk on fire"));
        // Cloned, it shares the same error.
        let copy = e.clone();
        let again = copy.source().and_then(|s| s.downcast_ref::<fjall::Error>());
        assert!(std::ptr::eq(found, again.expect("fjall's error")));
        assert_eq!(copy, e);
        // Down the chain: fjall's own source, the I/O error.
        assert_eq!(
            source.source().map(ToString::to_string).as_deref(),
            Some("disk on fire")
        );
    }

    #[test]
    fn a_store_that_cannot_open_reports_fjalls_error_as_the_source() {
        // A creation that stopped after fjall wrote a version file that is
        // not one: fjall refuses it.
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("do-storage.mark"),
            b"do-storage data directory\ncreating\n",
        )
        .expect("write");
        std::fs::write(dir.path().join("version"), b"x").expect("write");
        let e = crate::Store::open(dir.path(), Default::default()).expect_err("no store");
        assert!(matches!(e, StorageError::Engine(_)), "{e:?}");
        let source = e.source().expect("a source");
        assert!(source.is::<fjall::Error>(), "{source:?}");
    }

    #[test]
    fn an_engine_error_made_from_a_message_has_no_source_and_compares_by_text() {
        let e = StorageError::Engine("a stored key is not valid UTF-8".into());
        assert_eq!(
            e.to_string(),
            "storage engine failure: a stored key is not valid UTF-8"
        );
        assert!(e.source().is_none());
        assert_eq!(
            format!("{e:?}"),
            r#"Engine("a stored key is not valid UTF-8")"#
        );
        assert_eq!(
            e,
            StorageError::Engine(String::from("a stored key is not valid UTF-8").into())
        );
        assert_ne!(e, StorageError::Engine("another".into()));
    }
}
