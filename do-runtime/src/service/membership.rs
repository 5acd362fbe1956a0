//! How a runtime joins a cluster (feature `cluster`). The cluster itself
//! lives in `net::cluster`, above this layer: it serves and forwards calls
//! over TCP. The builder only runs the join that
//! [`RuntimeBuilder::cluster`](crate::RuntimeBuilder::cluster) gave it, once
//! the runtime is built, and the runtime leaves through the member it got
//! back when it shuts down.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::base::error::Result;
use crate::service::replication::LogReplica;
use crate::service::runtime::Runtime;

/// A runtime's membership of a cluster.
pub(crate) trait Member: Send + Sync {
    /// Leaves the cluster: drains this runtime's shards and hands them
    /// over, then deregisters.
    fn leave(&self) -> BoxFuture<'_, ()>;
    /// What the cluster looks like from this runtime.
    fn status(&self) -> do_cluster::Status;
    /// The cluster as this runtime knows it, as an operator reads it;
    /// `None` until it has joined.
    fn view(&self) -> Option<do_cluster::ClusterView>;
}

/// Joins the built runtime to its cluster, given its replicated log.
pub(crate) type Join =
    Arc<dyn Fn(&Runtime, Arc<LogReplica>) -> Result<Arc<dyn Member>> + Send + Sync>;
