//! The cluster's keys in etcd, all under one prefix:
//!
//! ```text
//! {prefix}/shards            the shard count, set once when the cluster is created
//! {prefix}/members/{node}    a live node's address, bound to its lease
//! {prefix}/owners/{shard}    the node that owns the shard, bound to its lease;
//!                            the key's create revision is the shard's epoch
//! ```
//!
//! A key bound to a lease goes when the lease does: a node that stops
//! renewing leaves the member list, and its shards become free to claim.

/// The keys of one cluster.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

/// What a key of the cluster names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Named {
    Member(String),
    Owner(u32),
    Other,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Keys {
            prefix: format!("{prefix}/"),
        }
    }

    /// Every key of the cluster.
    pub fn all(&self) -> &str {
        &self.prefix
    }

    pub fn shards(&self) -> String {
        format!("{}shards", self.prefix)
    }

    pub fn member(&self, node: &str) -> String {
        format!("{}members/{node}", self.prefix)
    }

    pub fn owner(&self, shard: u32) -> String {
        format!("{}owners/{shard}", self.prefix)
    }

    /// What `key` names (`Other` for keys this crate does not write, or
    /// cannot read).
    pub fn parse(&self, key: &[u8]) -> Named {
        let Some(rest) = std::str::from_utf8(key)
            .ok()
            .and_then(|k| k.strip_prefix(&self.prefix))
        else {
            return Named::Other;
        };
        if let Some(node) = rest.strip_prefix("members/") {
            return Named::Member(node.to_owned());
        }
        match rest.strip_prefix("owners/").map(str::parse) {
            Some(Ok(shard)) => Named::Owner(shard),
            _ => Named::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_what_they_were_made_from() {
        let keys = Keys::new("do");
        assert_eq!(
            keys.parse(keys.member("n1").as_bytes()),
            Named::Member("n1".into())
        );
        assert_eq!(keys.parse(keys.owner(1023).as_bytes()), Named::Owner(1023));
        assert_eq!(keys.parse(keys.shards().as_bytes()), Named::Other);
        assert_eq!(keys.parse(b"other/members/n1"), Named::Other);
        assert_eq!(keys.parse(b"do/owners/x"), Named::Other);
    }
}
