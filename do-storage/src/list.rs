//! Options of `list` and the merge of buffered writes with the engine's range.

use std::cmp::Ordering;
use std::ops::Bound;

use fjall::Slice;

use crate::error::{Result, StorageError};

/// What `list` returns: entries in key order (or reverse key order).
///
/// Build it with the chained setters:
///
/// ```
/// use do_storage::ListOptions;
/// let page = ListOptions::new().prefix("user:").start_after("user:41").limit(100);
/// assert_eq!(page.limit, Some(100));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct ListOptions {
    /// The first key to return (inclusive). Not together with `start_after`.
    pub start: Option<String>,
    /// Return only keys after this one (exclusive). Not together with `start`.
    pub start_after: Option<String>,
    /// Return only keys before this one (exclusive).
    pub end: Option<String>,
    /// Return only keys that begin with this string.
    pub prefix: Option<String>,
    /// Return keys in descending order. `limit` then keeps the last keys of the range.
    pub reverse: bool,
    /// Return at most this many entries; at least 1.
    pub limit: Option<usize>,
}

impl ListOptions {
    /// Every key, in ascending order.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets [`ListOptions::start`].
    pub fn start(mut self, key: impl Into<String>) -> Self {
        self.start = Some(key.into());
        self
    }
    /// Sets [`ListOptions::start_after`].
    pub fn start_after(mut self, key: impl Into<String>) -> Self {
        self.start_after = Some(key.into());
        self
    }
    /// Sets [`ListOptions::end`].
    pub fn end(mut self, key: impl Into<String>) -> Self {
        self.end = Some(key.into());
        self
    }
    /// Sets [`ListOptions::prefix`].
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }
    /// Sets [`ListOptions::reverse`].
    pub fn reverse(mut self, reverse: bool) -> Self {
        self.reverse = reverse;
        self
    }
    /// Sets [`ListOptions::limit`].
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// The range of user keys these options select, checked for contradictions.
    pub(crate) fn bounds(&self) -> Result<KeyRange> {
        if self.start.is_some() && self.start_after.is_some() {
            return Err(StorageError::InvalidListOptions(
                "`start` and `start_after` cannot be used together",
            ));
        }
        if self.limit == Some(0) {
            return Err(StorageError::InvalidListOptions(
                "`limit` must be at least 1",
            ));
        }
        let mut lo = match (&self.start, &self.start_after) {
            (Some(s), _) => Bound::Included(s.as_bytes().to_vec()),
            (_, Some(s)) => Bound::Excluded(s.as_bytes().to_vec()),
            _ => Bound::Unbounded,
        };
        let mut hi = match &self.end {
            Some(e) => Bound::Excluded(e.as_bytes().to_vec()),
            None => Bound::Unbounded,
        };
        if let Some(p) = &self.prefix {
            let p = p.as_bytes();
            let below = match &lo {
                Bound::Unbounded => true,
                Bound::Included(s) | Bound::Excluded(s) => s.as_slice() < p,
            };
            if below {
                lo = Bound::Included(p.to_vec());
            }
            if let Some(succ) = successor(p) {
                let above = match &hi {
                    Bound::Unbounded => true,
                    Bound::Included(e) | Bound::Excluded(e) => e.as_slice() > succ.as_slice(),
                };
                if above {
                    hi = Bound::Excluded(succ);
                }
            }
        }
        Ok(KeyRange {
            lo,
            hi,
            prefix: self.prefix.as_ref().map(|p| p.as_bytes().to_vec()),
        })
    }
}

/// A range of user keys.
#[derive(Debug, Clone)]
pub(crate) struct KeyRange {
    pub lo: Bound<Vec<u8>>,
    pub hi: Bound<Vec<u8>>,
    pub prefix: Option<Vec<u8>>,
}

impl KeyRange {
    /// Whether the range can hold no key at all (so no engine read is needed).
    pub fn is_empty(&self) -> bool {
        match (&self.lo, &self.hi) {
            (Bound::Included(l), Bound::Excluded(h)) => l >= h,
            (Bound::Excluded(l), Bound::Excluded(h) | Bound::Included(h)) => l >= h,
            (Bound::Included(l), Bound::Included(h)) => l > h,
            _ => false,
        }
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        let above_lo = match &self.lo {
            Bound::Included(l) => key >= l.as_slice(),
            Bound::Excluded(l) => key > l.as_slice(),
            Bound::Unbounded => true,
        };
        let below_hi = match &self.hi {
            Bound::Included(h) => key <= h.as_slice(),
            Bound::Excluded(h) => key < h.as_slice(),
            Bound::Unbounded => true,
        };
        above_lo && below_hi && self.prefix.as_ref().is_none_or(|p| key.starts_with(p))
    }
}

/// The smallest byte string greater than every string that starts with `bytes`,
/// or `None` when there is none (all bytes are 0xFF).
pub(crate) fn successor(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = bytes.to_vec();
    while let Some(last) = out.pop() {
        if last < u8::MAX {
            out.push(last + 1);
            return Some(out);
        }
    }
    None
}

/// Merges buffered writes (newer, `None` = deleted) with engine entries, both
/// sorted in the requested direction, until `limit` live entries are found.
pub(crate) fn merge(
    overlay: impl Iterator<Item = (Slice, Option<Slice>)>,
    engine: impl Iterator<Item = Result<(Vec<u8>, Slice)>>,
    reverse: bool,
    limit: usize,
) -> Result<Vec<(String, Slice)>> {
    let mut overlay = overlay.peekable();
    let mut engine = engine.peekable();
    let mut out = Vec::with_capacity(limit.min(1024));
    while out.len() < limit {
        let order = match (overlay.peek(), engine.peek()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), Some(Err(_))) => Ordering::Greater,
            (Some((a, _)), Some(Ok((b, _)))) => {
                let o = a[..].cmp(&b[..]);
                if reverse { o.reverse() } else { o }
            }
        };
        if order == Ordering::Greater {
            if let Some(entry) = engine.next() {
                let (key, value) = entry?;
                out.push((into_string(key)?, value));
            }
            continue;
        }
        if order == Ordering::Equal {
            // The buffered write hides the stored entry.
            engine.next();
        }
        if let Some((key, Some(value))) = overlay.next() {
            out.push((key_string(&key)?, value));
        }
    }
    Ok(out)
}

/// Keys are written from `&str` only, so anything else means a damaged file.
pub(crate) fn into_string(key: Vec<u8>) -> Result<String> {
    String::from_utf8(key).map_err(|_| not_utf8())
}

/// [`into_string`] of a borrowed key.
pub(crate) fn key_string(key: &[u8]) -> Result<String> {
    std::str::from_utf8(key)
        .map(str::to_owned)
        .map_err(|_| not_utf8())
}

fn not_utf8() -> StorageError {
    StorageError::Engine("a stored key is not valid UTF-8".into())
}
