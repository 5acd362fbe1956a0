//! What a node of the cluster is told: where etcd is, its own name and
//! address, how long its lease lives, and how many shards there are.

use std::time::Duration;

use crate::error::ClusterError;

/// The most shards a cluster may have.
pub const MAX_SHARDS: u32 = 65_536;

/// The settings of one node of a cluster (see the crate's documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// etcd's endpoints (`http://127.0.0.1:2379`, …).
    pub endpoints: Vec<String>,
    /// This node's name: unique in the cluster, and stable across its
    /// restarts. Letters, digits, `_`, `-` and `.`.
    pub node: String,
    /// The address other nodes and clients reach this node at (its RPC
    /// listener, `host:port`).
    pub address: String,
    /// The prefix of every etcd key of the cluster (default `do`): two
    /// clusters may share one etcd under different prefixes.
    pub prefix: String,
    /// How long this node's lease lives without renewal (default 5 s): a
    /// node that stops renewing loses its shards after this long, and stops
    /// serving them before.
    pub lease_ttl: Duration,
    /// How many shards the cluster has (default 1 024). Fixed when the
    /// cluster is created: a node with another count is refused.
    pub shards: u32,
    /// How long one request to etcd may take (default 2 s).
    pub timeout: Duration,
    /// The shared secret every node's server asks of its clients, and
    /// presents to the other nodes when it forwards calls (default none:
    /// anyone who reaches a node's address may call its objects).
    pub token: Option<Secret>,
}

/// A shared secret: compared, sent, never shown (its `Debug` is
/// `Secret(<redacted>)`).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// The secret's bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl ClusterConfig {
    /// A node `node`, reachable at `address`, of the cluster on etcd's
    /// `endpoints`, with the defaults.
    pub fn new(
        endpoints: impl IntoIterator<Item = impl Into<String>>,
        node: impl Into<String>,
        address: impl Into<String>,
    ) -> Self {
        ClusterConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            node: node.into(),
            address: address.into(),
            prefix: "do".into(),
            lease_ttl: Duration::from_secs(5),
            shards: 1024,
            timeout: Duration::from_secs(2),
            token: None,
        }
    }

    /// The prefix of the cluster's etcd keys.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long the node's lease lives without renewal.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// How many shards the cluster has.
    pub fn shards(mut self, shards: u32) -> Self {
        self.shards = shards;
        self
    }

    /// How long one request to etcd may take.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The shared secret of the cluster's nodes (see
    /// [`ClusterConfig::token`](#structfield.token)): every node of one
    /// cluster needs the same, and its clients too.
    pub fn token(mut self, token: impl AsRef<[u8]>) -> Self {
        self.token = Some(Secret(token.as_ref().to_vec()));
        self
    }

    /// Refuses settings that cannot work, saying why.
    pub fn check(&self) -> Result<(), ClusterError> {
        let refuse = |why: String| Err(ClusterError::Config(why));
        if self.endpoints.is_empty() {
            return refuse("no etcd endpoint".into());
        }
        let token = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        };
        if !token(&self.node) {
            return refuse(format!(
                "the node name {:?}: letters, digits, `_`, `-` and `.` only",
                self.node
            ));
        }
        if !token(&self.prefix) {
            return refuse(format!(
                "the prefix {:?}: letters, digits, `_`, `-` and `.` only",
                self.prefix
            ));
        }
        if self.address.is_empty() {
            return refuse("no address for this node".into());
        }
        if self.lease_ttl < Duration::from_secs(2) {
            return refuse(format!(
                "a lease of {:?}: etcd's leases last at least 2 s",
                self.lease_ttl
            ));
        }
        if self.shards == 0 || self.shards > MAX_SHARDS {
            return refuse(format!(
                "{} shards: between 1 and {MAX_SHARDS}",
                self.shards
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_that_cannot_work_are_refused_saying_why() {
        let good = ClusterConfig::new(["http://127.0.0.1:2379"], "n1", "127.0.0.1:7000");
        assert!(good.check().is_ok());
        let no_etcd = ClusterConfig::new(Vec::<String>::new(), "n1", "a:1");
        assert!(matches!(no_etcd.check(), Err(ClusterError::Config(_))));
        assert!(good.clone().shards(0).check().is_err());
        assert!(
            good.clone()
                .lease_ttl(Duration::from_millis(500))
                .check()
                .is_err()
        );
        let bad_name = ClusterConfig::new(["e"], "a/b", "a:1");
        assert!(bad_name.check().is_err());
    }
}
