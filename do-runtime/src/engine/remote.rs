//! The remote end of a stub: what a local [`Port`](crate::engine::port::Port)
//! is to an object of another process. The transport implements it
//! (`net::transport::client`); the engine only routes calls to it (a
//! cluster's object served by another runtime, see `engine::placement`).

use std::sync::Arc;

use tokio::sync::oneshot;

use crate::base::error::Error;
use crate::base::id::DurableObjectId;
use crate::base::wire::MethodInfo;
use crate::engine::reply::Reply;

/// The remote end of one stub: what a local [`Port`](crate::engine::port::Port)
/// is to an object of this process.
pub(crate) trait RemotePort: Send + Sync {
    /// The object the stub calls.
    fn id(&self) -> &DurableObjectId;
    /// The class name, for spans.
    fn class_name(&self) -> &str;
    /// The cluster node that forwards through this stub, for spans.
    fn node(&self) -> Option<&str> {
        None
    }
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
