//! Where an object is served, when runtimes form a cluster: here, by
//! another runtime (reached through a remote port), or, while its shard
//! moves, nowhere. Without a cluster there is no placement and every
//! object is served here.
//!
//! The cluster (`net::cluster`) implements [`Placement`]; the engine asks
//! it when a stub is made (which end the stub gets) and when a call is
//! admitted (a runtime that no longer serves an object, or whose lease may
//! have lapsed, takes no call for it).

use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::base::error::Result;
use crate::base::id::DurableObjectId;
use crate::base::wire::{MethodInfo, WireEntry};
use crate::engine::remote::RemotePort;

/// Where calls to an object go.
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
pub(crate) enum Route {
    /// This runtime serves it.
    Here,
    /// Another runtime does: calls go through this port.
    There(Arc<dyn RemotePort>),
    /// Nobody can take them now (the object's shard is moving, or its
    /// runtime is not reachable yet): calls fail, retryably.
    Nowhere,
}

/// Where objects are served (see the module's documentation).
pub(crate) trait Placement: Send + Sync {
    /// Whether this runtime serves the object of `id` now.
    fn serves(&self, id: &DurableObjectId) -> bool {
        self.serves_base(&id.base())
    }

    /// Whether this runtime serves the object whose id base is `base` now.
    fn serves_base(&self, base: &[u8; 16]) -> bool;

    /// What each other member serves of class `class`: a page after
    /// `after` of at most `limit` objects from each, all together. Fails,
    /// retryably, while a member cannot be reached.
    fn list_elsewhere(
        &self,
        class: &str,
        after: Option<[u8; 16]>,
        limit: usize,
    ) -> BoxFuture<'static, Result<Vec<WireEntry>>>;

    /// Where calls to object `id` of class `class` (whose methods are
    /// `methods`) go now.
    fn route(&self, class: &str, id: &DurableObjectId, methods: &'static [MethodInfo]) -> Route;
}
