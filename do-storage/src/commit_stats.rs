//! What the commit thread reports: each commit group to a hook, and its
//! running totals.

/// What one commit group did: one engine batch and one fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommitGroup {
    /// Object batches in the group.
    pub batches: u64,
    /// Keys written or deleted.
    pub writes: u64,
    /// Bytes of keys and values written.
    pub bytes: u64,
    /// How long the fsync took.
    pub persist: std::time::Duration,
    /// Whether it failed.
    pub failed: bool,
}

/// A callback run after each commit group (see [`StoreOptions::on_commit`](crate::StoreOptions::on_commit)).
/// It runs on the commit thread: keep it short.
#[derive(Clone)]
pub struct CommitHook(pub std::sync::Arc<dyn Fn(&CommitGroup) + Send + Sync>);

impl std::fmt::Debug for CommitHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CommitHook")
    }
}

/// What the commit thread has done since the store opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommitStats {
    /// Commit groups: each is one engine batch and one fsync.
    pub groups: u64,
    /// Object batches committed (several share a group).
    pub batches: u64,
    /// Keys written or deleted.
    pub writes: u64,
    /// Bytes of keys and values written.
    pub bytes: u64,
    /// Time spent persisting (fsync), in total.
    pub persist_time: std::time::Duration,
}
