//! What the stream's messages hold: a key's write, an object's alarm or
//! name, a shard's epoch. Each is the bytes of one message's payload.

use crate::error::ReplicaError;

/// A key's write: `1` then the stored value, or `0` for a delete.
pub(crate) fn write(value: Option<&[u8]>) -> bytes::Bytes {
    match value {
        Some(value) => {
            let mut bytes = Vec::with_capacity(1 + value.len());
            bytes.push(1);
            bytes.extend_from_slice(value);
            bytes.into()
        }
        None => bytes::Bytes::from_static(&[0]),
    }
}

/// Reads a key's write: the stored value, or `None` for a delete.
pub(crate) fn read_write(payload: &[u8]) -> Result<Option<Vec<u8>>, ReplicaError> {
    match payload.split_first() {
        Some((1, value)) => Ok(Some(value.to_vec())),
        Some((0, [])) => Ok(None),
        _ => Err(ReplicaError::Corrupt(
            "a key's write is neither a value nor a delete".into(),
        )),
    }
}

/// An alarm: its due time in ms since the epoch (8 bytes, big-endian) and
/// its retries so far (4 bytes, big-endian), or nothing when deleted.
pub(crate) fn alarm(alarm: Option<(u64, u32)>) -> bytes::Bytes {
    match alarm {
        Some((due, retries)) => {
            let mut bytes = Vec::with_capacity(12);
            bytes.extend_from_slice(&due.to_be_bytes());
            bytes.extend_from_slice(&retries.to_be_bytes());
            bytes.into()
        }
        None => bytes::Bytes::new(),
    }
}

pub(crate) fn read_alarm(payload: &[u8]) -> Result<Option<(u64, u32)>, ReplicaError> {
    match payload.len() {
        0 => Ok(None),
        12 => {
            let mut due = [0u8; 8];
            due.copy_from_slice(&payload[..8]);
            let mut retries = [0u8; 4];
            retries.copy_from_slice(&payload[8..]);
            Ok(Some((u64::from_be_bytes(due), u32::from_be_bytes(retries))))
        }
        n => Err(ReplicaError::Corrupt(format!("an alarm of {n} bytes"))),
    }
}

/// An epoch marker: the epoch (8 bytes, big-endian), then the claiming
/// writer's incarnation (its own random id: two processes given the same
/// epoch, a restart say, are still told apart).
pub(crate) fn epoch(epoch: u64, incarnation: &str) -> bytes::Bytes {
    let mut bytes = Vec::with_capacity(8 + incarnation.len());
    bytes.extend_from_slice(&epoch.to_be_bytes());
    bytes.extend_from_slice(incarnation.as_bytes());
    bytes.into()
}

/// The epoch and the incarnation of a marker.
pub(crate) fn read_epoch(payload: &[u8]) -> Result<(u64, &[u8]), ReplicaError> {
    let Some((epoch, incarnation)) = payload.split_first_chunk::<8>() else {
        return Err(ReplicaError::Corrupt(format!(
            "an epoch marker of {} bytes",
            payload.len()
        )));
    };
    Ok((u64::from_be_bytes(*epoch), incarnation))
}

/// A name: its UTF-8 bytes.
pub(crate) fn read_name(payload: &[u8]) -> Result<String, ReplicaError> {
    String::from_utf8(payload.to_vec())
        .map_err(|_| ReplicaError::Corrupt("a name that is not UTF-8".into()))
}
