//! Alarms in the store: one per object, kept twice in one atomic batch —
//! by object (what `get_alarm` reads) and in one index ordered by due time
//! (what the scheduler scans), so a million pending alarms cost their keys
//! and nothing in memory.

use fjall::Slice;

use crate::keys::{ObjectPrefix, Space, index_key, split_index_key};

/// An object's alarm: when it is due, and how often it has been retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alarm {
    /// Milliseconds since the Unix epoch.
    pub due_ms: u64,
    /// Failed runs so far (0 until the handler first fails).
    pub retries: u32,
}

/// An alarm found in the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DueAlarm {
    /// The object it belongs to.
    pub prefix: ObjectPrefix,
    /// The alarm.
    pub alarm: Alarm,
}

pub(crate) fn encode(alarm: &Alarm) -> Slice {
    let mut value = Vec::with_capacity(12);
    value.extend_from_slice(&alarm.due_ms.to_be_bytes());
    value.extend_from_slice(&alarm.retries.to_be_bytes());
    value.into()
}

pub(crate) fn decode(value: &[u8]) -> Option<Alarm> {
    let due: [u8; 8] = value.get(..8)?.try_into().ok()?;
    let retries: [u8; 4] = value.get(8..12)?.try_into().ok()?;
    Some(Alarm {
        due_ms: u64::from_be_bytes(due),
        retries: u32::from_be_bytes(retries),
    })
}

/// Decodes an index entry; `None` for a damaged one.
pub(crate) fn decode_index(key: &[u8], value: &[u8]) -> Option<DueAlarm> {
    let (due_ms, prefix) = split_index_key(key)?;
    let retries: [u8; 4] = value.get(..4)?.try_into().ok()?;
    Some(DueAlarm {
        prefix,
        alarm: Alarm {
            due_ms,
            retries: u32::from_be_bytes(retries),
        },
    })
}

/// The writes that move an object's alarm from `old` to `new`.
pub(crate) fn change(
    prefix: &ObjectPrefix,
    old: Option<Alarm>,
    new: Option<Alarm>,
    stale: &[u64],
) -> Vec<(Space, Slice, Option<Slice>)> {
    let mut ops = Vec::new();
    for due in stale {
        ops.push((Space::Index, index_key(*due, prefix), None));
    }
    if old == new {
        return ops;
    }
    if let Some(old) = old {
        ops.push((Space::Index, index_key(old.due_ms, prefix), None));
    }
    let by_object: Slice = prefix.as_bytes().to_vec().into();
    match new {
        Some(new) => {
            ops.push((
                Space::Index,
                index_key(new.due_ms, prefix),
                Some(new.retries.to_be_bytes().to_vec().into()),
            ));
            ops.push((Space::ByObject, by_object, Some(encode(&new))));
        }
        None => ops.push((Space::ByObject, by_object, None)),
    }
    ops
}
