//! Listing the objects of a namespace (R3): every object that ever stored
//! something, in id order, a page at a time.

use std::sync::Arc;

use crate::base::error::{DisconnectReason, Error, Result};
use crate::base::id::{DurableObjectId, NamespaceKey};
use crate::engine::{class::Class, shared::Shared};

/// The most objects one page may hold.
pub const MAX_PAGE: usize = 1000;

/// Which page of a listing to read: after `cursor` (from the previous
/// page), at most `limit` objects.
///
/// ```
/// use do_runtime::ListIds;
/// let first = ListIds::new().limit(50);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListIds {
    cursor: Option<String>,
    limit: Option<usize>,
}

impl ListIds {
    /// The first page, of the default size (100).
    pub fn new() -> Self {
        Self::default()
    }

    /// Continues after the page that returned `cursor`.
    pub fn cursor(mut self, cursor: impl Into<String>) -> Self {
        self.cursor = Some(cursor.into());
        self
    }

    /// At most `limit` objects (1 to [`MAX_PAGE`]).
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// The id bytes to start after, and the page size; checked.
    pub(crate) fn resolve(&self) -> Result<(Option<[u8; 16]>, usize)> {
        let limit = self.limit.unwrap_or(100);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(Error::BadRequest(format!(
                "a page holds 1 to {MAX_PAGE} objects, not {limit}"
            )));
        }
        let after = match &self.cursor {
            None => None,
            Some(cursor) => {
                let mut base = [0u8; 16];
                hex::decode_to_slice(cursor, &mut base)
                    .map_err(|_| Error::BadRequest(format!("invalid cursor {cursor:?}")))?;
                Some(base)
            }
        };
        Ok((after, limit))
    }
}

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectEntry {
    /// Its id.
    pub id: DurableObjectId,
    /// The name the id was made from, when the object was reached by name
    /// (the name is remembered once the object stores data).
    pub name: Option<String>,
    /// Whether it holds stored data now (an object whose data was deleted
    /// stays listed, without).
    pub has_stored_data: bool,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdPage {
    /// The objects, in id order.
    pub objects: Vec<ObjectEntry>,
    /// Where the next page starts; `None` on the last page.
    pub cursor: Option<String>,
}

pub(crate) use crate::base::wire::WireEntry;

/// Reads a page of the local store.
pub(crate) fn list_local(
    shared: &Arc<Shared>,
    class: &Class,
    after: Option<[u8; 16]>,
    limit: usize,
) -> Result<Vec<WireEntry>> {
    let store = store_of(shared)?;
    entries(&store, class.storage_namespace, &class.key, after, limit)
}

/// A page of the objects of `class` wherever they are served: without a
/// cluster, the local store's; in a cluster, those this runtime serves
/// merged with what every other member serves (each lists a page, and the
/// first `limit` of all of them, in id order, are the page). It fails,
/// retryably, while a member cannot be reached: a page never leaves out
/// the objects of a member silently.
pub(crate) async fn list_everywhere(
    shared: &Arc<Shared>,
    class: &Class,
    after: Option<[u8; 16]>,
    limit: usize,
) -> Result<Vec<WireEntry>> {
    #[cfg(feature = "cluster")]
    if let Some(placement) = shared.placement.get() {
        let elsewhere = placement.list_elsewhere(&class.name, after, limit);
        let mut all = list_served(shared, class, after, limit)?;
        all.extend(elsewhere.await?);
        all.sort_by(|a, b| a.id.cmp(&b.id));
        // An object whose shard moves between two answers may be in both.
        all.dedup_by(|a, b| a.id == b.id);
        all.truncate(limit);
        return Ok(all);
    }
    list_local(shared, class, after, limit)
}

/// A page of the local store's objects of `class` that this runtime
/// serves: in a cluster, the store may still hold objects of shards that
/// moved away, which their new owner lists.
pub(crate) fn list_served(
    shared: &Arc<Shared>,
    class: &Class,
    after: Option<[u8; 16]>,
    limit: usize,
) -> Result<Vec<WireEntry>> {
    #[cfg(feature = "cluster")]
    if let Some(placement) = shared.placement.get() {
        let store = store_of(shared)?;
        let mut served = Vec::new();
        let mut after = after;
        loop {
            let page = store.list_objects(class.storage_namespace, after, limit)?;
            let full = page.len() >= limit;
            after = page.last().map(|o| o.id);
            served.extend(
                page.into_iter()
                    .filter(|o| placement.serves_base(&o.id))
                    .map(|o| entry(&class.key, o)),
            );
            if !full || served.len() >= limit {
                served.truncate(limit);
                return Ok(served);
            }
        }
    }
    list_local(shared, class, after, limit)
}

/// The store, or why there is none now.
fn store_of(shared: &Arc<Shared>) -> Result<do_storage::Store> {
    shared.store().ok_or_else(|| match shared.storage_fault() {
        // Being reopened after a failed write (see `service::recovery`).
        Some(fault) => Error::disconnected(DisconnectReason::Reset, fault),
        None => Error::disconnected(DisconnectReason::Shutdown, "the runtime has shut down"),
    })
}

/// A page of the objects of namespace `number` in `store`.
pub(crate) fn entries(
    store: &do_storage::Store,
    number: u16,
    key: &NamespaceKey,
    after: Option<[u8; 16]>,
    limit: usize,
) -> Result<Vec<WireEntry>> {
    Ok(store
        .list_objects(number, after, limit)?
        .into_iter()
        .map(|o| entry(key, o))
        .collect())
}

/// A stored object as a listing's entry.
fn entry(key: &NamespaceKey, object: do_storage::KnownObject) -> WireEntry {
    WireEntry {
        id: key.id_from_base(object.id).as_bytes().to_vec(),
        name: object.name,
        has_data: object.has_data,
    }
}

/// Turns wire entries into a page, checking each id against the key.
pub(crate) fn page(key: &NamespaceKey, entries: Vec<WireEntry>, limit: usize) -> Result<IdPage> {
    let full = entries.len() >= limit;
    let mut objects = Vec::with_capacity(entries.len());
    for entry in entries {
        let id = key.id_from_bytes(&entry.id)?;
        // An id made from its name displays the name too.
        let id = match &entry.name {
            Some(name) => key.named(&id, name).unwrap_or(id),
            None => id,
        };
        objects.push(ObjectEntry {
            id,
            name: entry.name,
            has_stored_data: entry.has_data,
        });
    }
    let cursor = objects
        .last()
        .filter(|_| full)
        .map(|o| hex::encode(o.id.base()));
    Ok(IdPage { objects, cursor })
}
