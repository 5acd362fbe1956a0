//! Per-object key-value storage for Durable Objects, on [fjall].
//!
//! One [`Store`] per runtime holds every object's data in one fjall keyspace.
//! An object is named by an [`ObjectPrefix`] (namespace, object id); its
//! data keys start with a short store-wide number it gets at its first
//! write, so objects never see each other's keys and keys stay short. An
//! [`ObjectStore`] is one object's view: reads see its own buffered writes,
//! writes are buffered and handed to a single commit thread that applies the
//! batches of many objects together and persists the journal once for all
//! of them (group commit).
//!
//! This crate knows nothing of RPC or of the runtime; values are bytes.
//!
//! ```
//! # fn main() -> Result<(), do_storage::StorageError> {
//! use do_storage::{ListOptions, ObjectPrefix, Store};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = Store::open(dir.path(), Default::default())?;
//! let object = store.object(ObjectPrefix::new(0, [7; 16]));
//! object.put("b", b"2".to_vec(), true)?;
//! object.put("a", b"1".to_vec(), true)?;
//! let keys: Vec<String> = object.list(&ListOptions::new())?.into_iter().map(|(k, _)| k).collect();
//! assert_eq!(keys, ["a", "b"]);
//! # Ok(()) }
//! ```
//!
//! [fjall]: https://docs.rs/fjall

#![deny(unsafe_code, missing_docs, clippy::unwrap_used)]

mod alarm;
mod cache;
mod commit_stats;
mod committer;
mod error;
mod highwater;
mod keys;
pub mod limits;
mod list;
mod marker;
mod numbers;
mod object;
mod queue;
mod releases;
mod replica;
mod signal;
mod store;
mod sync;
mod txn;
pub mod values;
mod writes;

pub use alarm::{Alarm, DueAlarm};
pub use cache::{CacheCounters, CacheStats, ValueCache};
pub use commit_stats::{CommitGroup, CommitHook, CommitStats};
pub use committer::Release;
pub use error::{EngineError, Result, StorageError};
pub use fjall::Slice;
pub use keys::{DataPrefix, NAMESPACE_BYTES, OBJECT_ID_BYTES, ObjectPrefix, PREFIX_BYTES};
pub use list::ListOptions;
pub use object::ObjectStore;
pub use releases::Releases;
pub use replica::{ReplicaBatch, ReplicaHandle, Replicate, Unreplicated};
pub use store::{KnownObject, Store, StoreOptions};
pub use txn::{Txn, TxnOutcome};
