//! What tools see of stored objects: an object's keys, values and alarm;
//! records to export and import; and [`DataDir`], the same over a data
//! directory no runtime has open (the command-line tool's offline mode).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use do_storage::{ObjectPrefix, Store, StoreOptions};
use serde::{Deserialize, Serialize};

use crate::api::listing::{IdPage, ListIds};
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
    /// Every key with its encoded (postcard) value, in key order.
    pub entries: Vec<(String, Vec<u8>)>,
}

/// A stored value made readable: postcard is not self-describing, so a
/// value that decodes as exactly one string is shown as that text, and
/// anything else as hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueView {
    /// The value was a string.
    Text(String),
    /// Anything else, in lowercase hex.
    Hex(String),
}

impl ValueView {
    /// Views an encoded value.
    ///
    /// ```
    /// use do_runtime::admin::ValueView;
    /// let text = postcard::to_stdvec("hello").unwrap();
    /// assert_eq!(ValueView::of(&text), ValueView::Text("hello".into()));
    /// assert_eq!(ValueView::of(&[0xff, 0x01]), ValueView::Hex("ff01".into()));
    /// ```
    pub fn of(bytes: &[u8]) -> Self {
        match postcard::take_from_bytes::<String>(bytes) {
            Ok((text, [])) => ValueView::Text(text),
            _ => ValueView::Hex(hex::encode(bytes)),
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
    /// The encoded value in hex, for a key record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// When the alarm is due (ms since the Unix epoch), for an alarm record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alarm: Option<u64>,
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
            alarm: None,
        };
        let mut records: Vec<Record> = self
            .entries
            .iter()
            .map(|(key, value)| Record {
                key: Some(key.clone()),
                value: Some(hex::encode(value)),
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
    let entries = store
        .list(&do_storage::ListOptions::new())?
        .into_iter()
        .map(|(k, v)| (k, v.to_vec()))
        .collect();
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

/// A record's value bytes, checked.
fn record_value(record: &Record) -> Result<Option<(String, Vec<u8>)>> {
    match (&record.key, &record.value) {
        (Some(key), Some(value)) => {
            let bytes = hex::decode(value)
                .map_err(|_| Error::BadRequest(format!("the value of {key:?} is not hex")))?;
            Ok(Some((key.clone(), bytes)))
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
            store.put(&key, value, true)?;
            written += 1;
        }
        if let Some(due_ms) = record.alarm {
            store.set_alarm(Some(do_storage::Alarm { due_ms, retries: 0 }), true)?;
            written += 1;
        }
    }
    Ok(written)
}

/// A data directory opened by a tool while no runtime has it open: list,
/// show, export, import and delete objects of any class, without their
/// code.
pub struct DataDir {
    store: Store,
    classes: Vec<(String, u16, NamespaceKey)>,
}

impl DataDir {
    /// Opens the data directory at `path`, which must exist.
    pub fn open(path: &Path) -> Result<DataDir> {
        if !path.is_dir() {
            return Err(Error::Setup(format!(
                "{} is not a data directory",
                path.display()
            )));
        }
        let store = Store::open(path, StoreOptions::default())
            .map_err(|e| Error::Setup(format!("cannot open {}: {e}", path.display())))?;
        let secret = crate::service::runtime::load_secret(&store)?;
        let classes = store
            .namespaces()?
            .into_iter()
            .map(|(number, name)| {
                let key = NamespaceKey::derive(&secret, &name);
                (name, number, key)
            })
            .collect();
        Ok(DataDir { store, classes })
    }

    /// The class names of the namespaces the directory holds.
    pub fn namespaces(&self) -> Vec<String> {
        self.classes.iter().map(|(n, _, _)| n.clone()).collect()
    }

    fn class(&self, class: &str) -> Result<&(String, u16, NamespaceKey)> {
        self.classes
            .iter()
            .find(|(n, _, _)| n == class)
            .ok_or_else(|| Error::NotRegistered(class.to_owned()))
    }

    /// The id an argument names: 64 hex characters, or else a name.
    pub fn id(&self, class: &str, id_or_name: &str) -> Result<DurableObjectId> {
        let (_, _, key) = self.class(class)?;
        if id_or_name.len() == 64 && id_or_name.bytes().all(|b| b.is_ascii_hexdigit()) {
            key.id_from_string(id_or_name)
        } else {
            Ok(key.id_from_name(id_or_name))
        }
    }

    /// A page of the objects of `class`.
    pub fn list_ids(&self, class: &str, options: ListIds) -> Result<IdPage> {
        let (_, number, key) = self.class(class)?;
        let (after, limit) = options.resolve()?;
        let entries = crate::api::listing::entries(&self.store, *number, key, after, limit)?;
        crate::api::listing::page(key, entries, limit)
    }

    fn object(&self, class: &str, id: &DurableObjectId) -> Result<do_storage::ObjectStore> {
        let (_, number, key) = self.class(class)?;
        if id.namespace_tag() != key.tag() {
            return Err(Error::WrongNamespace {
                class: class.to_owned(),
            });
        }
        Ok(self.store.object(ObjectPrefix::new(*number, id.base())))
    }

    /// An object's keys, values and alarm.
    pub fn show(&self, class: &str, id: &DurableObjectId) -> Result<ObjectDump> {
        let store = self.object(class, id)?;
        let (_, number, _) = self.class(class)?;
        let prefix = ObjectPrefix::new(*number, id.base());
        let name = id
            .name()
            .map(str::to_owned)
            .or_else(|| self.store.known_name(&prefix).ok().flatten());
        dump(&store, id.clone(), name)
    }

    /// Removes an object's keys and alarm; tells how many keys there were.
    pub async fn delete(&self, class: &str, id: &DurableObjectId) -> Result<usize> {
        let store = self.object(class, id)?;
        let count = store.delete_all(true)?;
        store.barrier().await?;
        Ok(count)
    }

    /// Writes the records of one object (the class and id of the first).
    pub async fn import(&self, records: &[Record]) -> Result<usize> {
        let Some(first) = records.first() else {
            return Ok(0);
        };
        let (_, _, key) = self.class(&first.class)?;
        let id = key.id_from_string(&first.id)?;
        if records
            .iter()
            .any(|r| r.class != first.class || r.id != first.id)
        {
            return Err(Error::BadRequest(
                "records of several objects in one import call".into(),
            ));
        }
        let store = self.object(&first.class, &id)?;
        if let Some(name) = &first.name {
            store.set_name(name);
        }
        let written = apply(&store, records)?;
        store.barrier().await?;
        Ok(written)
    }

    /// Closes the directory once every write is durable.
    pub fn close(self) {
        self.store.close();
    }
}

impl std::fmt::Debug for DataDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataDir")
            .field("namespaces", &self.namespaces())
            .finish()
    }
}
