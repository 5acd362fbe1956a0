//! Listing the objects of a namespace (R3): every object that ever stored
//! something, in id order, a page at a time.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

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

/// An object of a listing as it crosses the network.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct WireEntry {
    pub id: Vec<u8>,
    pub name: Option<String>,
    pub has_data: bool,
}

/// Reads a page of the local store.
pub(crate) fn list_local(
    shared: &Arc<Shared>,
    class: &Class,
    after: Option<[u8; 16]>,
    limit: usize,
) -> Result<Vec<WireEntry>> {
    let store = shared.store().ok_or_else(|| match shared.storage_fault() {
        // Being reopened after a failed write (see `service::recovery`).
        Some(fault) => Error::disconnected(DisconnectReason::Reset, fault),
        None => Error::disconnected(DisconnectReason::Shutdown, "the runtime has shut down"),
    })?;
    entries(&store, class.storage_namespace, &class.key, after, limit)
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
        .map(|o| WireEntry {
            id: key.id_from_base(o.id).as_bytes().to_vec(),
            name: o.name,
            has_data: o.has_data,
        })
        .collect())
}

/// Turns wire entries into a page, checking each id against the key.
pub(crate) fn page(key: &NamespaceKey, entries: Vec<WireEntry>, limit: usize) -> Result<IdPage> {
    let full = entries.len() >= limit;
    let mut objects = Vec::with_capacity(entries.len());
    for entry in entries {
        let id = key.id_from_bytes(&entry.id)?;
        // An id made from its name displays the name too.
        let id = match &entry.name {
            Some(name) if key.id_from_name(name) == id => key.id_from_name(name),
            _ => id,
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
