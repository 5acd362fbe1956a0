//! Where the log is and how it is laid out: the NATS servers, the stream,
//! its replica count, the number of shards, and this writer's epoch.

use std::time::Duration;

use crate::error::ReplicaError;

/// The most shards a log may have.
pub const MAX_SHARDS: u32 = 65_536;

/// How a runtime reaches its replicated log.
///
/// ```
/// let config = do_replica::ReplicaConfig::new(["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"])
///     .stream("DO")
///     .replicas(3)
///     .epoch(7);
/// assert_eq!(config.subject_prefix(), "do.DO");
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct ReplicaConfig {
    pub(crate) servers: Vec<String>,
    pub(crate) stream: String,
    pub(crate) replicas: usize,
    pub(crate) shards: u32,
    pub(crate) epoch: u64,
    pub(crate) timeout: Duration,
    pub(crate) tombstone_ttl: Duration,
    pub(crate) writer: Option<String>,
}

impl ReplicaConfig {
    /// The NATS servers to connect to (any of them will do; the client
    /// learns the rest of the cluster from the one it reaches).
    pub fn new<S: Into<String>>(servers: impl IntoIterator<Item = S>) -> Self {
        ReplicaConfig {
            servers: servers.into_iter().map(Into::into).collect(),
            stream: "DO".to_owned(),
            replicas: 3,
            shards: 1024,
            epoch: 1,
            timeout: Duration::from_secs(5),
            tombstone_ttl: Duration::from_secs(7 * 24 * 3600),
            writer: None,
        }
    }

    /// The JetStream stream (created if missing). Default: `DO`. Letters,
    /// digits, `-` and `_` only: it also names the stream's subjects.
    pub fn stream(mut self, name: impl Into<String>) -> Self {
        self.stream = name.into();
        self
    }

    /// How many servers keep each message (the stream's replicas, when the
    /// stream is created). An append is acknowledged once a majority of
    /// them have it. Default: 3.
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    /// How many shards object ids map to, each with its own epoch; fixed
    /// when the stream is created. Default: 1 024.
    pub fn shards(mut self, shards: u32) -> Self {
        self.shards = shards;
        self
    }

    /// This writer's epoch: a writer with a newer epoch fences it out, by
    /// the server (see [`crate::Log::claim`]). Default: 1.
    pub fn epoch(mut self, epoch: u64) -> Self {
        self.epoch = epoch;
        self
    }

    /// How long an append or a read may wait for the servers before it
    /// fails with [`ReplicaError::Unavailable`]. Default: 5 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long the log keeps the mark of a deleted key (a tombstone) before
    /// the server removes it, so that deleting keys does not grow the log
    /// with history. A copy of the log further behind than this cannot
    /// catch up (it could miss a delete) and must be rebuilt from the log
    /// (a runtime refuses to start on it). At least 1 s. Default: 7 days.
    pub fn tombstone_ttl(mut self, ttl: Duration) -> Self {
        self.tombstone_ttl = ttl;
        self
    }

    /// A name put on each append this writer makes, in its `Do-Writer`
    /// header beside the fence it carries: an audit of the log (such as
    /// [`testing::writers_by_fence`](crate::testing)) can then tell who
    /// committed under each claim. A cluster's node sets its own name.
    /// Default: none.
    pub fn writer(mut self, name: impl Into<String>) -> Self {
        self.writer = Some(name.into());
        self
    }

    /// How long tombstones are kept (see [`ReplicaConfig::tombstone_ttl`]).
    pub fn tombstone_lifetime(&self) -> Duration {
        self.tombstone_ttl
    }

    /// The prefix of every subject of the stream: `do.` and its name.
    pub fn subject_prefix(&self) -> String {
        format!("do.{}", self.stream)
    }

    /// This writer's epoch.
    pub fn current_epoch(&self) -> u64 {
        self.epoch
    }

    /// The number of shards.
    pub fn shard_count(&self) -> u32 {
        self.shards
    }

    /// Checks the settings before anything connects.
    pub(crate) fn check(&self) -> Result<(), ReplicaError> {
        let bad = |why: String| Err(ReplicaError::Config(why));
        if self.servers.is_empty() {
            return bad("no NATS server given".into());
        }
        let name_ok = !self.stream.is_empty()
            && self
                .stream
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            return bad(format!(
                "the stream name {:?} must be letters, digits, `-` and `_`",
                self.stream
            ));
        }
        if self.replicas == 0 || self.replicas > 5 {
            return bad(format!(
                "{} replicas: JetStream keeps 1 to 5",
                self.replicas
            ));
        }
        if self.shards == 0 || self.shards > MAX_SHARDS {
            return bad(format!("{} shards: use 1 to {MAX_SHARDS}", self.shards));
        }
        if self.tombstone_ttl < Duration::from_secs(1) {
            return bad("a tombstone TTL under 1 s: JetStream counts it in seconds".into());
        }
        if self.epoch == 0 {
            return bad("epoch 0: epochs start at 1".into());
        }
        Ok(())
    }
}
