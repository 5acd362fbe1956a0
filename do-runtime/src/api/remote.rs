//! How the API reaches objects of another process: a [`Namespace`] or a
//! stub made by a remote client holds one of these traits, which the TCP
//! transport (`net::transport::client`) implements. The API layer thus
//! names no network code, as tarpc's client is generic over its transport.
//!
//! [`Namespace`]: crate::Namespace

use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::api::listing::WireEntry;
use crate::base::error::Result;
use crate::base::id::{DurableObjectId, NamespaceKey};
use crate::base::wire::MethodInfo;

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

/// The remote end of one stub (kept in the engine, which routes to it).
pub(crate) use crate::engine::remote::RemotePort;
