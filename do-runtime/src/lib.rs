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
//! # Handlers
//!
//! A few method names are special: `fetch` takes a [`Request`] and returns
//! a [`Response`] (see the `fetch` docs of [`Request`] and the gateway, feature
//! `gateway`); `websocket_message`, `websocket_close` and `websocket_error`
//! receive the events of the object's WebSockets ([`websocket`]); `alarm`
//! runs when the object's alarm is due ([`AlarmInfo`],
//! [`Storage::set_alarm`]). The last four are called by the runtime only
//! and never appear on the stub. What the runtime records about calls
//! (spans, metrics) is described in [`telemetry`]; tools read stored objects
//! through [`admin`].
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
//!   object's reply, a timer, a socket), and only then may the next call
//!   start. So calls interleave only at the awaits of a method, never in the
//!   middle of synchronous code. Storage reads never yield, so a
//!   read-modify-write within one method is atomic with respect to the
//!   object's other calls without any lock. State read before an `.await`
//!   may have changed after it: re-read it, or use
//!   [`Storage::transaction`], which re-runs when what it read changed.
//! * **`RefCell` borrows.** Never hold a `RefCell` borrow (or a `Cell`
//!   value you mean to write back) across an `.await`: another call may run
//!   there and borrow it too, which panics, and a panic resets the instance.
//!   Borrow, copy out what you need, drop the borrow, then await.
//! * **Reentrancy.** Because a call that awaits another object's reply lets
//!   the next call in, object A calling B while B calls A, and an object
//!   calling itself through its own stub, complete instead of deadlocking.
//! * **Input gate.** [`Ctx::block_concurrency_while`] holds every other call
//!   until a future completes, for work that must not interleave (loading
//!   state in the constructor, a migration).
//! * **Durability.** Writes are buffered and need not be awaited. A method's
//!   result is released to its caller only once every write the object made
//!   before it is on disk (the output gate); writes made in one turn of the
//!   object share one atomic batch, and one fsync covers the batches of many
//!   objects.
//! * **Failures.** A panic in a method or in a `block_concurrency_while`
//!   future resets the instance: its memory is dropped, writes not yet
//!   handed to storage are discarded, committed writes stay, and the stubs
//!   bound to it fail from then on with [`Error::Disconnected`]
//!   (retryable: take a new stub). A panic in the constructor fails the call
//!   and breaks nothing. Each object's queue is bounded (count and bytes);
//!   past the bound calls fail at once with [`Error::Overloaded`].
//! * **Lifecycle.** Idle instances are evicted after
//!   [`RuntimeBuilder::idle_timeout`]; the next call builds a new instance
//!   from storage, through the same stub. [`Runtime::shutdown`] finishes the
//!   calls in flight and makes every write durable before it stops.
//!
//! # Testing objects
//!
//! With the `testing` feature, `RuntimeBuilder::build_for_test` gives a
//! runtime in a temporary directory (removed on drop) that can `restart` on
//! its data; [`Runtime::evict`] forces a new instance and
//! [`Namespace::with_storage`] reads or seeds an object's storage.

//! # Wire format and compatibility
//!
//! A call is the method's id followed by its arguments, each
//! postcard-encoded in order; the reply is the postcard-encoded result. A
//! method's id is the 32-bit FNV-1a hash of its name (never its position),
//! and the macro rejects two names of one class that hash alike. Each class
//! also carries a schema fingerprint (`DurableObject::SCHEMA`): every exposed
//! method with its argument and result types, sorted by name, which remote
//! peers compare at connect time.
//!
//! Changes that keep existing callers working:
//! * adding a method, removing one nobody calls, reordering methods;
//! * renaming an argument, changing a method's body, adding private helpers;
//! * adding a variant at the end of an enum that only callers send.
//!
//! Changes that break existing callers (deploy both sides together):
//! * renaming a method: old callers get [`Error::UnknownMethod`];
//! * adding, removing or reordering arguments, or changing an argument's or
//!   the result's type: the bytes no longer decode ([`Error::Codec`]) or,
//!   worse, decode as something else (postcard is not self-describing:
//!   `u32` and `u64` share an encoding), which is why the fingerprint exists;
//! * renaming the class (`#[durable_object(name = …)]` keeps it stable
//!   across a type rename): the namespace, its ids and its stored data are
//!   keyed by the class name.

#![deny(unsafe_code, missing_docs, clippy::unwrap_used)]

extern crate self as do_runtime;

// The layers, lowest first: each imports only its own and those below it
// (see docs/ARCHITECTURE.md; `tests/spec/layers.rs` checks it).
mod api;
mod base;
mod engine;
mod net;
mod service;
mod tools;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use api::websocket;
pub use engine::telemetry;
#[cfg(feature = "gateway")]
pub use net::gateway;
#[cfg(feature = "testing")]
pub use service::testing;
pub use tools::admin;

pub use api::alarms::AlarmInfo;
pub use api::ctx::{Blocking, Ctx};
pub use api::env::Env;
pub use api::listing::{IdPage, ListIds, MAX_PAGE, ObjectEntry};
pub use api::namespace::Namespace;
pub use api::object::DurableObject;
pub use api::storage::{ListOptions, MAX_TRANSACTION_ATTEMPTS, Storage, Transaction, WriteOptions};
pub use api::stub::{Call, Stub};
pub use api::untyped::{AnyNamespace, AnyStub};
pub use api::values::StoredValue;
pub use api::websocket::{AutoResponse, Message, WebSocket};
pub use base::clock::ManualClock;
pub use base::error::{Disconnect, DisconnectReason, Error, Result};
pub use base::fetch::{IntoRequest, Request, Response};
pub use base::id::DurableObjectId;
pub use base::streaming::{
    BUFFERED_CHUNKS, BodySender, BodyStream, body_stream, is_streamed, stream_request_body,
    streaming_response,
};
/// The cluster's settings and views (feature `cluster`).
#[cfg(feature = "cluster")]
pub use do_cluster::{
    ClusterConfig, ClusterError, ClusterView, MemberView, Status as ClusterStatus,
    inspect as inspect_cluster,
};
pub use do_macros::durable_object;
#[cfg(feature = "replication")]
pub use do_replica::{ReplicaConfig, ReplicaError};
pub use do_storage::CommitStats;
pub use engine::spawn::JoinHandle;
pub use engine::stalls::Stall;
pub use net::transport::client::{Client, ClientBuilder};
pub use net::transport::server::{Server, ServerBuilder};
pub use service::runtime::{Runtime, RuntimeBuilder, Stats};
#[cfg(feature = "testing")]
pub use service::testing::TestRuntime;
pub use {bytes, http};
