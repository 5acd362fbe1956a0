//! What can go wrong with the cluster's membership, as a caller can act on
//! it.

/// An error of the cluster's membership.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The settings cannot work.
    #[error("the cluster is misconfigured: {0}")]
    Config(String),
    /// The cluster in etcd was made otherwise (another shard count), or a
    /// live node has this node's name.
    #[error("this node does not fit the cluster: {0}")]
    Refused(String),
    /// etcd could not be reached, or did not answer in time. Retryable.
    #[error("etcd is unavailable: {0}")]
    Unavailable(String),
    /// etcd holds a key of the cluster this version cannot read.
    #[error("etcd holds a key this version cannot read: {0}")]
    Corrupt(String),
}

impl ClusterError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ClusterError::Unavailable(_))
    }
}

impl From<etcd_client::Error> for ClusterError {
    fn from(e: etcd_client::Error) -> Self {
        ClusterError::Unavailable(e.to_string())
    }
}
