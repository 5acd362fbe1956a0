//! Stored values and their two kinds: serialized (a serde value, with
//! postcard: `put`, `get`) and raw bytes stored as given (`put_bytes`,
//! `get_bytes`). Each is stored behind one kind byte (storage format 3,
//! `do_storage::values`), so reading one kind as the other is a typed
//! error naming the key rather than a misread.

use do_storage::Slice;
use do_storage::values::{KIND_BYTES, RAW, SERIALIZED};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::base::error::{Error, Result};

/// A stored value as it is, undecoded: what
/// [`Storage::list_raw`](crate::Storage::list_raw) returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredValue {
    /// A serde value, postcard-encoded (written with `put`): decode it
    /// with [`StoredValue::decode`].
    Serialized(Vec<u8>),
    /// Raw bytes, as given to `put_bytes`.
    Bytes(Vec<u8>),
}

impl StoredValue {
    /// The bytes: the postcard encoding, or the raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            StoredValue::Serialized(b) | StoredValue::Bytes(b) => b,
        }
    }

    /// Whether it was written with `put_bytes`.
    pub fn is_bytes(&self) -> bool {
        matches!(self, StoredValue::Bytes(_))
    }

    /// Decodes a serialized value as a `T`; `key` names it in errors.
    /// Fails with [`Error::ValueType`] for raw bytes and for a value that
    /// is not a `T`.
    pub fn decode<T: DeserializeOwned>(&self, key: &str) -> Result<T> {
        match self {
            StoredValue::Serialized(bytes) => decode_serialized(key, bytes),
            StoredValue::Bytes(_) => Err(holds_bytes::<T>(key)),
        }
    }

    /// The value as stored: the kind byte, then the bytes.
    pub(crate) fn to_stored(&self) -> Vec<u8> {
        match self {
            StoredValue::Serialized(b) => stored(SERIALIZED, b),
            StoredValue::Bytes(b) => stored(RAW, b),
        }
    }

    /// The value of `key` as stored.
    pub(crate) fn from_stored(key: &str, stored: &[u8]) -> Result<StoredValue> {
        match do_storage::values::split(stored) {
            Some((SERIALIZED, bytes)) => Ok(StoredValue::Serialized(bytes.to_vec())),
            Some((RAW, bytes)) => Ok(StoredValue::Bytes(bytes.to_vec())),
            _ => Err(unknown_kind(key, stored)),
        }
    }
}

fn unknown_kind(key: &str, stored: &[u8]) -> Error {
    Error::Storage(format!(
        "the stored value of key {key:?} has no known kind (kind byte {:?})",
        stored.first()
    ))
}

fn holds_bytes<T>(key: &str) -> Error {
    Error::ValueType {
        key: key.to_owned(),
        type_name: std::any::type_name::<T>().to_owned(),
        message: "the key holds raw bytes (written with put_bytes): read it with get_bytes".into(),
    }
}

/// `value` as stored: the serialized kind byte, then its postcard encoding.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    postcard::to_extend(value, vec![SERIALIZED])
        .map_err(|e| Error::Codec(format!("cannot encode a value: {e}")))
}

/// Raw `bytes` as stored: the raw kind byte, then the bytes.
pub(crate) fn encode_bytes(bytes: &[u8]) -> Vec<u8> {
    stored(RAW, bytes)
}

/// `kind`, then `bytes`.
fn stored(kind: u8, bytes: &[u8]) -> Vec<u8> {
    let mut stored = Vec::with_capacity(bytes.len() + KIND_BYTES);
    stored.push(kind);
    stored.extend_from_slice(bytes);
    stored
}

pub(crate) fn encode_all<K: AsRef<str>, T: Serialize>(
    entries: &[(K, T)],
) -> Result<Vec<(String, Vec<u8>)>> {
    entries
        .iter()
        .map(|(k, v)| Ok((k.as_ref().to_owned(), encode(v)?)))
        .collect()
}

pub(crate) fn decode_opt<T: DeserializeOwned>(
    key: &str,
    value: Option<Slice>,
) -> Result<Option<T>> {
    value.map(|stored| decode(key, &stored)).transpose()
}

pub(crate) fn decode_all<T: DeserializeOwned>(
    entries: Vec<(String, Slice)>,
) -> Result<Vec<(String, T)>> {
    entries
        .into_iter()
        .map(|(k, v)| decode(&k, &v).map(|v| (k, v)))
        .collect()
}

/// The raw bytes stored under `key`; a serialized value is a typed error.
pub(crate) fn decode_bytes(key: &str, value: Option<Slice>) -> Result<Option<Vec<u8>>> {
    let Some(stored) = value else {
        return Ok(None);
    };
    match do_storage::values::split(&stored) {
        Some((RAW, bytes)) => Ok(Some(bytes.to_vec())),
        Some((SERIALIZED, _)) => Err(Error::ValueType {
            key: key.to_owned(),
            type_name: "raw bytes".into(),
            message: "the key holds a serialized value (written with put): read it with get".into(),
        }),
        _ => Err(unknown_kind(key, &stored)),
    }
}

pub(crate) fn stored_all(entries: Vec<(String, Slice)>) -> Result<Vec<(String, StoredValue)>> {
    entries
        .into_iter()
        .map(|(k, v)| StoredValue::from_stored(&k, &v).map(|v| (k, v)))
        .collect()
}

/// Decodes a stored value as a `T`.
fn decode<T: DeserializeOwned>(key: &str, stored: &[u8]) -> Result<T> {
    match do_storage::values::split(stored) {
        Some((SERIALIZED, bytes)) => decode_serialized(key, bytes),
        Some((RAW, _)) => Err(holds_bytes::<T>(key)),
        _ => Err(unknown_kind(key, stored)),
    }
}

/// Decodes a postcard encoding, insisting that the whole value is consumed:
/// postcard is not self-describing, so leftover bytes are the surest sign
/// of a value read as the wrong type.
fn decode_serialized<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T> {
    let wrong = |message: String| Error::ValueType {
        key: key.to_owned(),
        type_name: std::any::type_name::<T>().to_owned(),
        message,
    };
    match postcard::take_from_bytes(bytes) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(wrong(format!(
            "{} bytes left over after decoding",
            rest.len()
        ))),
        // An id or stub that failed its check says why.
        Err(e @ postcard::Error::SerdeDeCustom) => Err(wrong(
            crate::base::passing::take_failure().map_or_else(|| e.to_string(), |f| f.to_string()),
        )),
        Err(e) => Err(wrong(e.to_string())),
    }
}
