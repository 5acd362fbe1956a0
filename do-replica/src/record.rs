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

/// A staged message: the subject it stands for (its length, 4 bytes
/// big-endian, then its bytes), then that subject's payload.
pub(crate) fn staged(subject: &str, payload: &[u8]) -> bytes::Bytes {
    let mut bytes = Vec::with_capacity(4 + subject.len() + payload.len());
    bytes.extend_from_slice(&(subject.len() as u32).to_be_bytes());
    bytes.extend_from_slice(subject.as_bytes());
    bytes.extend_from_slice(payload);
    bytes.into()
}

/// The subject a staged message stands for, and its payload.
pub(crate) fn read_staged(payload: &[u8]) -> Result<(&str, &[u8]), ReplicaError> {
    let corrupt = || ReplicaError::Corrupt("a staged message cut short".into());
    let (len, rest) = payload.split_first_chunk::<4>().ok_or_else(corrupt)?;
    let len = u32::from_be_bytes(*len) as usize;
    if rest.len() < len {
        return Err(corrupt());
    }
    let (subject, payload) = rest.split_at(len);
    let subject = std::str::from_utf8(subject)
        .map_err(|_| ReplicaError::Corrupt("a staged message's subject is not UTF-8".into()))?;
    Ok((subject, payload))
}

/// Where a staged batch stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Staged {
    /// Committed: its messages count, and may not all be written to their
    /// own subjects yet.
    Committed,
    /// Written to their own subjects: the stage is garbage.
    Applied,
}

/// A staged batch's commit: where it stands (1 committed, 2 applied), its
/// message count (4 bytes, big-endian), then its id.
pub(crate) fn commit(state: Staged, count: usize, txn: &str) -> bytes::Bytes {
    let mut bytes = Vec::with_capacity(5 + txn.len());
    bytes.push(match state {
        Staged::Committed => 1,
        Staged::Applied => 2,
    });
    bytes.extend_from_slice(&(count as u32).to_be_bytes());
    bytes.extend_from_slice(txn.as_bytes());
    bytes.into()
}

/// Where a staged batch stands, its message count, and its id.
pub(crate) fn read_commit(payload: &[u8]) -> Result<(Staged, usize, &str), ReplicaError> {
    let corrupt = || ReplicaError::Corrupt("a staged batch's commit is malformed".into());
    let (state, rest) = payload.split_first().ok_or_else(corrupt)?;
    let state = match state {
        1 => Staged::Committed,
        2 => Staged::Applied,
        _ => return Err(corrupt()),
    };
    let (count, txn) = rest.split_first_chunk::<4>().ok_or_else(corrupt)?;
    let txn = std::str::from_utf8(txn).map_err(|_| corrupt())?;
    Ok((state, u32::from_be_bytes(*count) as usize, txn))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_messages_and_commits_read_back_as_written_and_cut_ones_are_refused() {
        let staged = staged("do.DO.k.1.C.00.kYQ", &[1, 2, 3]);
        assert_eq!(
            read_staged(&staged).expect("it reads back"),
            ("do.DO.k.1.C.00.kYQ", &[1u8, 2, 3][..])
        );
        assert!(read_staged(&staged[..10]).is_err());
        assert!(read_staged(&[0, 0]).is_err());
        let commit = commit(Staged::Committed, 2500, "TXN");
        assert_eq!(
            read_commit(&commit).expect("it reads back"),
            (Staged::Committed, 2500, "TXN")
        );
        assert!(read_commit(&[3, 0, 0, 0, 1]).is_err());
        assert!(read_commit(&[1, 0]).is_err());
    }
}
