//! How the API reaches objects of another process: a [`Namespace`] or a
//! stub made by a remote client holds one of these traits, which the TCP
//! transport (`net::transport::client`) implements. The API layer thus
//! names no network code, as tarpc's client is generic over its transport.
//!
//! [`Namespace`]: crate::Namespace

use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::sync::oneshot;

use crate::api::listing::WireEntry;
use crate::base::error::{Error, Result};
use crate::base::id::{DurableObjectId, NamespaceKey};
use crate::base::wire::MethodInfo;
use crate::engine::reply::Reply;

/// A namespace of a remote runtime.
pub(crate) trait RemoteNamespace: Send + Sync {
    /// The namespace's id key (ids are made and checked on the client).
    fn key(&self) -> &NamespaceKey;
    /// The class name.
    fn class_name(&self) -> &str;
    /// A stub's remote end for object `id`, whose class has `methods`.
    fn port(&self, id: DurableObjectId, methods: &'static [MethodInfo]) -> Arc<dyn RemotePort>;
    /// A page of the namespace's objects, after `after`, at most `limit`.
    fn list_ids(
        &self,
        after: Option<[u8; 16]>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<WireEntry>>>;
}

/// The remote end of one stub: what a local [`Port`](crate::engine::port::Port)
/// is to an object of this process.
pub(crate) trait RemotePort: Send + Sync {
    /// The object the stub calls.
    fn id(&self) -> &DurableObjectId;
    /// The class name, for spans.
    fn class_name(&self) -> &str;
    /// What the client's code knows of method `method`, for spans.
    fn method(&self, method: u32) -> Option<&'static MethodInfo>;
    /// Whether every call now fails with a disconnected error.
    fn is_broken(&self) -> bool;
    /// Where ids and stubs in this stub's results come to life: its client.
    fn home(&self) -> Option<Arc<dyn crate::base::passing::Home>>;
    /// Breaks the stub for good (`aborted`: because its object aborted
    /// itself, which later calls then say).
    fn mark_broken(&self, aborted: bool);
    /// Sends one call now (so calls keep their order); returns where its
    /// reply will arrive.
    fn send(
        &self,
        method: u32,
        args: Vec<u8>,
        trace: u128,
    ) -> Result<oneshot::Receiver<Reply>, Error>;
}
