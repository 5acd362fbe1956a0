//! Durable Objects for Rust.
//!
//! Write an ordinary struct, put [`macro@durable_object`] on its impl block,
//! and call it through a typed [`Stub`]. Each object id lives as exactly one
//! instance, created on its first call, with its own transactional, durable
//! key-value [`Storage`]. Calls travel postcard-encoded over an ordered
//! channel and arrive in the order they were made (E-order).
//!
//! ```
//! # fn main() -> Result<(), do_runtime::Error> {
//! # let dir = tempfile::tempdir().unwrap();
//! # let tokio = tokio::runtime::Runtime::new().unwrap();
//! # tokio.block_on(async {
//! use do_runtime::{durable_object, Ctx, Error, Runtime};
//!
//! pub struct Counter { ctx: Ctx }
//!
//! #[durable_object]
//! impl Counter {
//!     pub fn new(ctx: Ctx) -> Self { Self { ctx } }
//!
//!     pub async fn increment(&self, amount: i64) -> Result<i64, Error> {
//!         let value = self.ctx.storage().get::<i64>("value").await?.unwrap_or(0) + amount;
//!         self.ctx.storage().put("value", &value)?;
//!         Ok(value)
//!     }
//! }
//!
//! let rt = Runtime::builder().data_dir(dir.path()).register::<Counter>().build()?;
//! let ns = rt.namespace::<Counter>();
//! let stub = ns.get(ns.id_from_name("foo"));   // a Stub<Counter>
//! assert_eq!(stub.increment(1).await?, 1);
//! # Ok::<_, Error>(()) })?;
//! # Ok(()) }
//! ```
//!
//! # The object model
//!
//! * **Constructor.** `pub fn new(ctx: Ctx) -> Self` builds an instance on
//!   its first call (and again after an eviction or a reset). [`Ctx`] gives
//!   the object its id, its storage and the runtime's [`Env`].
//! * **Methods.** Every `pub async fn` taking `&self` is exposed on the stub
//!   with the same arguments and result; arguments and results must be serde
//!   types. Private methods stay private. A method returning `Result<T, E>`
//!   hands `E` to the caller as is (`E` must implement `From<Error>` so
//!   infrastructure failures can arrive the same way); any other return type
//!   `T` reaches the caller as `Result<T, Error>`.
//! * **Threads.** Objects run on a fixed set of worker threads, each object
//!   pinned to one. Objects need not be `Send` or `Sync`: keep in-memory
//!   state in `Cell` or `RefCell`. Stubs and their futures are `Send`.
//! * **Interleaving.** Calls to one object are delivered one at a time, in
//!   order; a call runs until it awaits something that is not ready (another
//!   object's reply, a timer), and only then may the next call start. Storage
//!   reads never yield, so a read-modify-write within one method is atomic.
//!   Never hold a `RefCell` borrow across an `.await`.
//! * **Durability.** Writes are buffered and need not be awaited. A method's
//!   result is released to its caller only once every write the object made
//!   before it is on disk.
//!
//! # Wire format
//!
//! A call is the method's id and its arguments as one postcard-encoded tuple;
//! the reply is the postcard-encoded result. A method's id is the 32-bit
//! FNV-1a hash of its name, so reordering or adding methods keeps existing
//! callers working; renaming a method or changing its argument or result
//! types does not.

#![deny(unsafe_code, missing_docs, clippy::unwrap_used)]

extern crate self as do_runtime;

mod ctx;
mod env;
mod error;
mod gate;
mod id;
mod instance;
mod namespace;
mod object;
mod registry;
mod runtime;
mod storage;
mod stub;
#[cfg(feature = "testing")]
pub mod testing;
mod worker;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub(crate) use __private as private;

pub use ctx::{Blocking, Ctx};
pub use do_macros::durable_object;
pub use do_storage::CommitStats;
pub use env::Env;
pub use error::{Error, Result};
pub use id::DurableObjectId;
pub use namespace::Namespace;
pub use object::DurableObject;
pub use runtime::{Runtime, RuntimeBuilder, Stats};
pub use storage::{ListOptions, MAX_TRANSACTION_ATTEMPTS, Storage, Transaction, WriteOptions};
pub use stub::{Call, Stub};
#[cfg(feature = "testing")]
pub use testing::TestRuntime;
