//! Where everything lives in the engine: the layout of every key this
//! crate writes, and the number of the storage format that layout is.
//!
//! Keyspaces and their keys:
//!
//! - `objects` (data): [`DataPrefix`] of the object's number, then the
//!   user's key.
//! - `known` (the registry of objects that ever stored something) and
//!   `alarm_of` (alarms by object): the 18-byte [`ObjectPrefix`].
//! - `alarms` (the index of alarms by due time): [`index_key`], the due
//!   time (8 bytes, big-endian) then the [`ObjectPrefix`], so a scan in key
//!   order finds the earliest alarms first.
//! - `meta` (the store's own): [`FORMAT_KEY`], [`NEXT_KEY`], and the
//!   namespace numbers under [`NS_BY_NAME`] and [`NS_BY_NUMBER`].
//! - every keyspace: the last commit group's number, under a key that
//!   starts with `0xff` (see `highwater`), a byte no other key starts
//!   with: a data key starts with its prefix's length (1–8), an index key
//!   with a due time in milliseconds, a registry key with a namespace
//!   number (fewer than 65 280 namespaces), a meta key with a letter.
//!
//! A change of any of these is a new [`FORMAT`].

use fjall::Slice;

/// Bytes of the namespace part of an [`ObjectPrefix`].
pub const NAMESPACE_BYTES: usize = 2;
/// Bytes of the object part of an [`ObjectPrefix`].
pub const OBJECT_ID_BYTES: usize = 16;
/// Bytes of an [`ObjectPrefix`].
pub const PREFIX_BYTES: usize = NAMESPACE_BYTES + OBJECT_ID_BYTES;

/// The storage format this version reads and writes: 3 puts a kind byte in
/// front of every value (see `values.rs`; a directory of format 2 is
/// migrated in place when opened); 2 keys data by object number (see
/// `numbers.rs`); 1 (before) keyed it by the 18-byte prefix.
pub(crate) const FORMAT: u8 = 3;

/// The format before this one, which open migrates.
pub(crate) const FORMAT_BEFORE: u8 = 2;

/// `meta` key of the storage format (one byte).
pub(crate) const FORMAT_KEY: &[u8] = b"storage-format\0";

/// `meta` key of the next free object number (8 bytes, big-endian).
pub(crate) const NEXT_KEY: &[u8] = b"object-number-next\0";

/// `meta` key of how far this store's copy of its replicated log goes:
/// the log's position (8 bytes, big-endian) of the last group applied.
pub(crate) const REPLICA_APPLIED_KEY: &[u8] = b"replica-applied\0";

/// `meta` keys of namespace numbers by class name: this, then the name;
/// the value is the number (2 bytes, big-endian).
pub(crate) const NS_BY_NAME: &[u8] = b"ns-name\0";

/// `meta` keys of class names by namespace number: this, then the number
/// (2 bytes, big-endian); the value is the name.
pub(crate) const NS_BY_NUMBER: &[u8] = b"ns-number\0";

/// Which object a store view belongs to: a fixed-width (namespace number,
/// object id) pair. It keys the object's alarm and its registry entry; its
/// data keys carry a shorter store-wide number given at its first write
/// (see [`DataPrefix`]), so they fit the engine's inline key.
///
/// The namespace comes first so one namespace's objects are contiguous in
/// the registry (for listing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectPrefix([u8; PREFIX_BYTES]);

impl ObjectPrefix {
    /// The prefix of object `id` in the namespace numbered `namespace`
    /// (see [`Store::namespace_number`](crate::Store::namespace_number)).
    pub fn new(namespace: u16, id: [u8; OBJECT_ID_BYTES]) -> Self {
        let mut p = [0u8; PREFIX_BYTES];
        p[..NAMESPACE_BYTES].copy_from_slice(&namespace.to_be_bytes());
        p[NAMESPACE_BYTES..].copy_from_slice(&id);
        ObjectPrefix(p)
    }

    /// The prefix's bytes.
    #[inline]
    pub fn as_bytes(&self) -> &[u8; PREFIX_BYTES] {
        &self.0
    }

    /// The prefix with these bytes, if there are exactly [`PREFIX_BYTES`].
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(ObjectPrefix)
    }

    /// The namespace number.
    pub fn namespace(&self) -> u16 {
        u16::from_be_bytes([self.0[0], self.0[1]])
    }

    /// The object's 16 id bytes.
    pub fn id(&self) -> [u8; OBJECT_ID_BYTES] {
        let mut id = [0u8; OBJECT_ID_BYTES];
        id.copy_from_slice(&self.0[NAMESPACE_BYTES..]);
        id
    }
}

/// The registry keys of namespace `namespace`'s objects after id `after`
/// (all of them without): the first key, and the end of the range
/// (exclusive; `None` for the last namespace, whose keys run to the end).
pub(crate) fn registry_range(
    namespace: u16,
    after: Option<[u8; OBJECT_ID_BYTES]>,
) -> (Vec<u8>, Option<Vec<u8>>) {
    let start: Vec<u8> = match after {
        Some(id) => {
            // The smallest key after `ns ++ id`.
            let mut k = ObjectPrefix::new(namespace, id).as_bytes().to_vec();
            k.push(0);
            k
        }
        None => namespace.to_be_bytes().to_vec(),
    };
    let end = (u32::from(namespace) + 1).to_be_bytes();
    let end = (namespace != u16::MAX).then(|| end[2..].to_vec());
    (start, end)
}

/// The longest [`DataPrefix`]: a length byte and eight number bytes.
const MAX_PREFIX: usize = 9;

/// The bytes every data key of one object starts with: the number of bytes
/// that follow, then the object's number big-endian without leading zeros.
/// No prefix is the start of another (the first byte fixes the length), so
/// objects' key ranges never overlap. Public so tools and benchmarks can
/// name the exact bytes in the engine.
///
/// Why a number rather than the 18-byte [`ObjectPrefix`]: a prefix of 2–9
/// bytes (2–4 for the first 16 million objects) keeps short keys inside the
/// engine's 20-byte inline key, so comparing, copying and dropping them
/// follows no pointer: the commit thread's memtable inserts and every
/// listed entry are cheaper. How numbers are handed out is in `numbers.rs`.
///
/// ```
/// use do_storage::DataPrefix;
/// assert_eq!(DataPrefix::of(300).key(b"value"), b"\x02\x01\x2cvalue");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataPrefix {
    number: u64,
    bytes: [u8; MAX_PREFIX],
    len: u8,
}

impl DataPrefix {
    /// The prefix of object number `number`.
    #[inline]
    pub fn of(number: u64) -> Self {
        let be = number.to_be_bytes();
        let skip = (number.leading_zeros() / 8).min(7) as usize;
        let digits = &be[skip..];
        let mut bytes = [0u8; MAX_PREFIX];
        bytes[0] = digits.len() as u8;
        bytes[1..=digits.len()].copy_from_slice(digits);
        DataPrefix {
            number,
            bytes,
            len: digits.len() as u8 + 1,
        }
    }

    /// The object's number.
    #[inline]
    pub fn number(&self) -> u64 {
        self.number
    }

    /// The prefix's bytes.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Calls `f` with `self` followed by `key`, built on the stack when it
    /// is short (most keys), so a lookup allocates nothing.
    #[inline]
    pub(crate) fn with_key<R>(&self, key: &[u8], f: impl FnOnce(&[u8]) -> R) -> R {
        let mut buf = [0u8; 64];
        let len = self.len() + key.len();
        match buf.get_mut(..len) {
            Some(full) => {
                full[..self.len()].copy_from_slice(self.as_bytes());
                full[self.len()..].copy_from_slice(key);
                f(full)
            }
            None => f(&self.key(key)),
        }
    }

    /// The engine key of the object's `key`: `self` followed by `key`.
    #[inline]
    pub fn key(&self, key: &[u8]) -> Vec<u8> {
        let mut full = Vec::with_capacity(self.len() + key.len());
        full.extend_from_slice(self.as_bytes());
        full.extend_from_slice(key);
        full
    }
}

/// Which keyspace a write of a batch other than its data goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Space {
    /// The alarm index: [`index_key`] → retries.
    Index,
    /// Alarms by object: prefix → due time + retries.
    ByObject,
    /// The registry of objects that ever stored something: prefix → number
    /// and name.
    Known,
}

/// The alarm index key of an alarm due at `due_ms` of the object `prefix`.
pub(crate) fn index_key(due_ms: u64, prefix: &ObjectPrefix) -> Slice {
    let mut key = Vec::with_capacity(8 + PREFIX_BYTES);
    key.extend_from_slice(&due_ms.to_be_bytes());
    key.extend_from_slice(prefix.as_bytes());
    key.into()
}

/// The due time of an alarm index key; `None` for a damaged one.
pub(crate) fn index_key_due(key: &[u8]) -> Option<u64> {
    key.get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
}

/// The due time and the object of an alarm index key; `None` for a
/// damaged one.
pub(crate) fn split_index_key(key: &[u8]) -> Option<(u64, ObjectPrefix)> {
    let due = index_key_due(key)?;
    let prefix = ObjectPrefix::from_bytes(key.get(8..)?)?;
    Some((due, prefix))
}

/// The end (exclusive) of the alarm index keys due at or before `now_ms`.
pub(crate) fn index_end(now_ms: u64) -> [u8; 8] {
    now_ms.saturating_add(1).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_data_prefix_starts_another_and_short_numbers_stay_short() {
        let edges = [
            0u64,
            1,
            255,
            256,
            65_535,
            65_536,
            (1 << 24) - 1,
            1 << 24,
            u64::MAX - 1,
            u64::MAX,
        ];
        for a in edges {
            for b in edges {
                if a != b {
                    let (pa, pb) = (DataPrefix::of(a), DataPrefix::of(b));
                    assert!(
                        !pb.as_bytes().starts_with(pa.as_bytes()),
                        "{a} is a prefix of {b}"
                    );
                }
            }
        }
        assert_eq!(DataPrefix::of(1).as_bytes(), [1, 1]);
        assert_eq!(DataPrefix::of(256).as_bytes(), [2, 1, 0]);
        assert_eq!(DataPrefix::of((1 << 24) - 1).len(), 4);
        assert_eq!(DataPrefix::of(u64::MAX).len(), 9);
        // The stack-built key equals the allocated one, short or long.
        let p = DataPrefix::of(300);
        for key in [&b"value"[..], &[7u8; 100][..]] {
            assert_eq!(p.with_key(key, <[u8]>::to_vec), p.key(key));
        }
    }
}
