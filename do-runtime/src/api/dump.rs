//! An object's stored state as tools see it: its keys, values and alarm, and
//! the records an export writes and an import reads. Public through
//! [`admin`](crate::admin).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::api::values::StoredValue;
use crate::base::error::{Error, Result};
use crate::base::id::{DurableObjectId, NamespaceKey};

/// One object's stored state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectDump {
    /// Its id.
    pub id: DurableObjectId,
    /// The name its id was made from, if known.
    pub name: Option<String>,
    /// When its alarm is due, if one is set.
    pub alarm: Option<SystemTime>,
    /// Every key with its value, in key order.
    pub entries: Vec<(String, StoredValue)>,
}

/// A stored value made readable: postcard is not self-describing, so a
/// serialized value that decodes as exactly one string is shown as that
/// text, and anything else (raw bytes included) as hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueView {
    /// The value was a string.
    Text(String),
    /// Anything else, in lowercase hex.
    Hex(String),
}

impl ValueView {
    /// Views a stored value.
    ///
    /// ```
    /// use do_runtime::StoredValue;
    /// use do_runtime::admin::ValueView;
    /// let text = StoredValue::Serialized(postcard::to_stdvec("hello").unwrap());
    /// assert_eq!(ValueView::of(&text), ValueView::Text("hello".into()));
    /// let bytes = StoredValue::Bytes(vec![0xff, 0x01]);
    /// assert_eq!(ValueView::of(&bytes), ValueView::Hex("ff01".into()));
    /// ```
    pub fn of(value: &StoredValue) -> Self {
        match value {
            StoredValue::Serialized(bytes) => match postcard::take_from_bytes::<String>(bytes) {
                Ok((text, [])) => ValueView::Text(text),
                _ => ValueView::Hex(hex::encode(bytes)),
            },
            StoredValue::Bytes(bytes) => ValueView::Hex(hex::encode(bytes)),
        }
    }
}

/// One line of an export: an object's key and value, or its alarm. An
/// export is JSON lines of these; an import reads them back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// The class name.
    pub class: String,
    /// The object's id (64 hex characters).
    pub id: String,
    /// The name its id was made from, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The key, for a key record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The value in hex, for a key record: its postcard encoding, or with
    /// `raw` its raw bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Whether `value` is raw bytes (written with `put_bytes`). Absent in
    /// exports made before raw values existed: those are all serialized.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub raw: bool,
    /// When the alarm is due (ms since the Unix epoch), for an alarm record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alarm: Option<u64>,
    /// Which deployment secret the id was made under: the tag of the
    /// class's id key (16 hex digits), which tells deployments apart and
    /// reveals nothing of the secret. Absent in older exports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
}

/// How an import treats the ids of objects exported under another
/// deployment secret (another data directory that was not restored from
/// this one), whose ids this deployment's keys do not accept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImportOptions {
    /// An object without a name keeps its identity (the random half of its
    /// id) and gets this deployment's signature: its id's text changes, so
    /// whoever stored the old text must be told. Off: such an object is
    /// refused, naming it. Named objects are always re-made from their name.
    pub keep_unique_ids: bool,
}

impl ImportOptions {
    /// The defaults: named objects are re-signed by their name, objects
    /// without one refused.
    pub fn new() -> Self {
        Self::default()
    }

    /// See [`ImportOptions::keep_unique_ids`].
    pub fn keep_unique_ids(mut self, keep: bool) -> Self {
        self.keep_unique_ids = keep;
        self
    }
}

/// The id, under this deployment's `key`, of the object `record` is about:
/// its own, when it was made under this deployment; otherwise re-made from
/// its name, or (with [`ImportOptions::keep_unique_ids`]) from the random
/// half of its id. An object of another deployment without a name, and
/// without that option, is a [`Error::BadRequest`] that says what to do.
pub(crate) fn import_id(
    key: &NamespaceKey,
    record: &Record,
    options: ImportOptions,
) -> Result<DurableObjectId> {
    // Exports made before names were checked may say `""` for none.
    let name = record.name.as_deref().filter(|name| !name.is_empty());
    match key.id_from_string(&record.id) {
        Ok(id) => Ok(match name {
            Some(name) => key.named(&id, name).unwrap_or(id),
            None => id,
        }),
        Err(Error::WrongNamespace { .. }) => match name {
            Some(name) => Ok(key.id_from_name(name)),
            None if options.keep_unique_ids => {
                let base: [u8; 16] = hex::decode(record.id.get(..32).unwrap_or_default())
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| Error::InvalidId(format!("{:?} is not an id", record.id)))?;
                Ok(key.id_from_base(base))
            }
            None => Err(Error::BadRequest(format!(
                "object {} of {} was exported under another deployment secret{} and has no name to re-make its id from: import with `keep unique ids` (do-cli import --keep-unique-ids; the admin API's ?keepUniqueIds=true) to keep it under a new id text, or import into a directory of the same deployment",
                record.id,
                record.class,
                record
                    .deployment
                    .as_deref()
                    .map(|d| format!(" ({d}; here {:016x})", key.tag()))
                    .unwrap_or_default()
            ))),
        },
        Err(e) => Err(e),
    }
}

impl ObjectDump {
    /// The object as export records: one per key, and one for the alarm.
    pub fn records(&self, class: &str) -> Vec<Record> {
        let base = Record {
            class: class.to_owned(),
            id: self.id.to_string(),
            name: self.name.clone(),
            key: None,
            value: None,
            raw: false,
            alarm: None,
            deployment: Some(format!("{:016x}", self.id.namespace_tag())),
        };
        let mut records: Vec<Record> = self
            .entries
            .iter()
            .map(|(key, value)| Record {
                key: Some(key.clone()),
                value: Some(hex::encode(value.as_bytes())),
                raw: value.is_bytes(),
                ..base.clone()
            })
            .collect();
        if let Some(alarm) = self.alarm {
            records.push(Record {
                alarm: Some(crate::base::clock::millis(alarm)),
                ..base
            });
        }
        records
    }
}

/// Reads an object's state from its store.
pub(crate) fn dump(
    store: &do_storage::ObjectStore,
    id: DurableObjectId,
    name: Option<String>,
) -> Result<ObjectDump> {
    let entries = crate::api::values::stored_all(store.list(&do_storage::ListOptions::new())?)?;
    let alarm = store
        .alarm()?
        .map(|a| UNIX_EPOCH + Duration::from_millis(a.due_ms));
    Ok(ObjectDump {
        id,
        name,
        alarm,
        entries,
    })
}

/// A record's value, checked.
fn record_value(record: &Record) -> Result<Option<(String, StoredValue)>> {
    match (&record.key, &record.value) {
        (Some(key), Some(value)) => {
            let bytes = hex::decode(value)
                .map_err(|_| Error::BadRequest(format!("the value of {key:?} is not hex")))?;
            let value = if record.raw {
                StoredValue::Bytes(bytes)
            } else {
                StoredValue::Serialized(bytes)
            };
            Ok(Some((key.clone(), value)))
        }
        (None, None) => Ok(None),
        _ => Err(Error::BadRequest(
            "a key record needs both `key` and `value`".into(),
        )),
    }
}

/// Writes `records` (all of one object) into its store.
pub(crate) fn apply(store: &do_storage::ObjectStore, records: &[Record]) -> Result<usize> {
    let mut written = 0;
    for record in records {
        if let Some((key, value)) = record_value(record)? {
            store.put(&key, value.to_stored(), true)?;
            written += 1;
        }
        if let Some(due_ms) = record.alarm {
            store.set_alarm(Some(do_storage::Alarm { due_ms, retries: 0 }), true)?;
            written += 1;
        }
    }
    Ok(written)
}
