//! The per-object storage limits (SPEC St2), checked before anything is written.

use crate::error::{Result, StorageError};

/// The longest key, in bytes of its UTF-8 encoding.
pub const MAX_KEY_BYTES: usize = 2048;
/// The largest value, in bytes of its encoding (its kind byte, see
/// `values`, not counted).
pub const MAX_VALUE_BYTES: usize = 128 * 1024;
/// The most keys one batch operation (`get_many`, `put_many`, `delete_many`) may name.
pub const MAX_BATCH_KEYS: usize = 128;

/// Checks one key against [`MAX_KEY_BYTES`].
pub fn check_key(key: &str) -> Result<()> {
    if key.len() > MAX_KEY_BYTES {
        return Err(StorageError::KeyTooLarge {
            len: key.len(),
            limit: MAX_KEY_BYTES,
        });
    }
    Ok(())
}

/// Checks one entry: its key, then its stored value (kind byte and
/// encoding) against [`MAX_VALUE_BYTES`] for the encoding.
pub fn check_entry(key: &str, value: &[u8]) -> Result<()> {
    check_key(key)?;
    let len = value.len().saturating_sub(crate::values::KIND_BYTES);
    if len > MAX_VALUE_BYTES {
        return Err(StorageError::ValueTooLarge {
            key: key.to_owned(),
            len,
            limit: MAX_VALUE_BYTES,
        });
    }
    Ok(())
}

/// Checks the number of keys in a batch against [`MAX_BATCH_KEYS`].
pub fn check_batch(len: usize) -> Result<()> {
    if len > MAX_BATCH_KEYS {
        return Err(StorageError::BatchTooLarge {
            len,
            limit: MAX_BATCH_KEYS,
        });
    }
    Ok(())
}
