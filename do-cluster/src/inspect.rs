//! The cluster as etcd holds it, read without joining it: what an operator
//! asks for (`do-cli cluster status`).

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_client::{Client, GetOptions};

use crate::error::ClusterError;
use crate::keys::{Keys, Named};
use crate::node::Owner;
use crate::placement;

/// One member, as an operator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    /// Its name.
    pub name: String,
    /// The address it serves on.
    pub address: String,
    /// The shards it owns now.
    pub owned: usize,
    /// The shards placement gives it (what it owns once nothing moves).
    pub placed: usize,
}

/// The cluster as etcd holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    /// The shard count set when the cluster was created (`None`: no cluster
    /// under this prefix).
    pub shards: Option<u32>,
    /// The live members, by name.
    pub members: Vec<MemberView>,
    /// Each owned shard's owner and epoch.
    pub owners: BTreeMap<u32, Owner>,
    /// Shards with no owner now (their owner died, or they are moving).
    pub unowned: usize,
    /// Shards owned by another member than placement gives them to.
    pub misplaced: usize,
}

/// Reads the cluster under `prefix` from etcd at `endpoints`.
pub async fn inspect(
    endpoints: &[String],
    prefix: &str,
    timeout: Duration,
) -> Result<ClusterView, ClusterError> {
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(timeout)
        .with_timeout(timeout);
    let connect = Client::connect(endpoints, Some(options));
    let mut client = tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| ClusterError::Unavailable(format!("no answer from {endpoints:?}")))??;
    let keys = Keys::new(prefix);
    let read = client.get(keys.all(), Some(GetOptions::new().with_prefix()));
    let response = tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| ClusterError::Unavailable("etcd did not answer in time".into()))??;
    let mut shards = None;
    let mut members = BTreeMap::new();
    let mut owners = BTreeMap::new();
    for kv in response.kvs() {
        if kv.key() == keys.shards().as_bytes() {
            let text = String::from_utf8_lossy(kv.value());
            shards = Some(
                text.parse::<u32>()
                    .map_err(|_| ClusterError::Corrupt(format!("the shard count {text:?}")))?,
            );
            continue;
        }
        match keys.parse(kv.key()) {
            Named::Member(name) => {
                members.insert(name, String::from_utf8_lossy(kv.value()).into_owned());
            }
            Named::Owner(shard) => {
                owners.insert(
                    shard,
                    Owner {
                        node: String::from_utf8_lossy(kv.value()).into_owned(),
                        epoch: kv.create_revision() as u64,
                    },
                );
            }
            Named::Other => {}
        }
    }
    Ok(view_of(shards, &members, owners))
}

/// The view of a cluster of `shards` shards whose live members (by name,
/// with their addresses) and shard owners are these.
pub(crate) fn view_of(
    shards: Option<u32>,
    members: &BTreeMap<String, String>,
    owners: BTreeMap<u32, Owner>,
) -> ClusterView {
    let count = shards.unwrap_or(0);
    let names: Vec<&str> = members.keys().map(String::as_str).collect();
    let mut placed: BTreeMap<&str, usize> = BTreeMap::new();
    let mut misplaced = 0;
    for shard in 0..count {
        let wanted = placement::owner(shard, names.iter().copied());
        if let Some(wanted) = wanted {
            *placed.entry(wanted).or_default() += 1;
        }
        if let Some(owner) = owners.get(&shard)
            && Some(owner.node.as_str()) != wanted
        {
            misplaced += 1;
        }
    }
    let members = members
        .iter()
        .map(|(name, address)| MemberView {
            name: name.clone(),
            address: address.clone(),
            owned: owners.values().filter(|o| &o.node == name).count(),
            placed: placed.get(name.as_str()).copied().unwrap_or(0),
        })
        .collect();
    ClusterView {
        shards,
        unowned: (count as usize).saturating_sub(owners.len()),
        members,
        owners,
        misplaced,
    }
}
