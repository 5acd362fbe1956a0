//! What tools see of stored objects: an object's keys, values and alarm;
//! records to export and import; and [`DataDir`], the same over a data
//! directory no runtime has open (the command-line tool's offline mode).

use std::path::Path;

use do_storage::{ObjectPrefix, Store, StoreOptions};

pub use crate::api::dump::{ImportOptions, ObjectDump, Record, ValueView};
use crate::api::dump::{apply, dump};
use crate::api::listing::{IdPage, ListIds};
use crate::base::error::{Error, Result};
use crate::base::id::{DurableObjectId, NamespaceKey};

/// A data directory opened by a tool while no runtime has it open: list,
/// show, export, import and delete objects of any class, without their
/// code.
///
/// A directory the tool may not write (a read-only mount, a backup) is read
/// from a copy in the system's temporary directory: listing, showing and
/// exporting work, while deleting and importing fail with
/// [`Error::Unsupported`]. The copy goes when the `DataDir` does.
pub struct DataDir {
    // Dropped in this order: the store before its copy.
    store: Store,
    /// Each namespace's class name, number and id key; an import adds the
    /// classes it brings.
    classes: std::sync::Mutex<Vec<(String, u16, NamespaceKey)>>,
    secret: Vec<u8>,
    copy: Option<TempCopy>,
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
        let cannot = |e: &dyn std::fmt::Display| {
            Error::Setup(format!("cannot open {}: {e}", path.display()))
        };
        let (store, copy) = match Store::open(path, StoreOptions::default()) {
            Ok(store) => (store, None),
            Err(e) if cannot_write(&e) => {
                let copy = TempCopy::of(path).map_err(|e| cannot(&e))?;
                let store =
                    Store::open(&copy.0, StoreOptions::default()).map_err(|e| cannot(&e))?;
                (store, Some(copy))
            }
            Err(e) => return Err(cannot(&e)),
        };
        let secret = crate::base::secret::load_secret(&store)?;
        Self::with_secret(store, secret, copy)
    }

    /// Opens the data directory at `path`, or makes a new one there when
    /// `path` does not exist or is an empty directory: where an import
    /// restores a backup. The new directory takes `secret` as its
    /// deployment secret (see
    /// [`RuntimeBuilder::deployment_secret`](crate::RuntimeBuilder::deployment_secret);
    /// ids then keep their text), or makes one of its own; an existing
    /// directory made under another secret is refused.
    pub fn open_or_create(path: &Path, secret: Option<&[u8]>) -> Result<DataDir> {
        let given = secret
            .map(crate::base::secret::parse_deployment_secret)
            .transpose()?;
        let empty = match std::fs::read_dir(path) {
            Ok(mut entries) => entries.next().is_none(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => {
                return Err(Error::Setup(format!("cannot read {}: {e}", path.display())));
            }
        };
        if !empty {
            let data = Self::open(path)?;
            if given.as_ref().is_some_and(|given| *given != data.secret) {
                return Err(Error::Setup(format!(
                    "{} was made under another deployment secret than the one given",
                    path.display()
                )));
            }
            return Ok(data);
        }
        let store = Store::open(path, StoreOptions::default()).map_err(|e| {
            Error::Setup(format!(
                "cannot make a data directory in {}: {e}",
                path.display()
            ))
        })?;
        let secret = crate::base::secret::load_or_create_secret(&store, given.as_deref())?;
        Self::with_secret(store, secret, None)
    }

    /// The directory's deployment secret in hex: what
    /// [`RuntimeBuilder::deployment_secret`](crate::RuntimeBuilder::deployment_secret)
    /// takes to make the same ids elsewhere. Keep it as secret as the data:
    /// with it anyone can make ids of this deployment.
    pub fn reveal_deployment_secret(&self) -> String {
        hex::encode(&self.secret)
    }

    fn with_secret(store: Store, secret: Vec<u8>, copy: Option<TempCopy>) -> Result<DataDir> {
        let classes = store
            .namespaces()?
            .into_iter()
            .map(|(number, name)| {
                let key = NamespaceKey::derive(&secret, &name);
                (name, number, key)
            })
            .collect();
        Ok(DataDir {
            store,
            classes: std::sync::Mutex::new(classes),
            secret,
            copy,
        })
    }

    fn classes(&self) -> std::sync::MutexGuard<'_, Vec<(String, u16, NamespaceKey)>> {
        self.classes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The class names of the namespaces the directory holds.
    pub fn namespaces(&self) -> Vec<String> {
        self.classes().iter().map(|(n, _, _)| n.clone()).collect()
    }

    /// The number and id key of namespace `class`.
    fn class(&self, class: &str) -> Result<(u16, NamespaceKey)> {
        self.classes()
            .iter()
            .find(|(n, _, _)| n == class)
            .map(|(_, number, key)| (*number, key.clone()))
            .ok_or_else(|| Error::NotRegistered(class.to_owned()))
    }

    /// [`DataDir::class`], numbering the namespace first when the
    /// directory has none of that class yet (an import brings it).
    fn class_to_write(&self, class: &str) -> Result<(u16, NamespaceKey)> {
        if let Ok(found) = self.class(class) {
            return Ok(found);
        }
        let number = self
            .store
            .namespace_number(class)
            .map_err(|e| Error::Setup(format!("cannot number namespace {class:?}: {e}")))?;
        let key = NamespaceKey::derive(&self.secret, class);
        self.classes().push((class.to_owned(), number, key.clone()));
        Ok((number, key))
    }

    /// The id an argument names: 64 hex characters, or else a name.
    pub fn id(&self, class: &str, id_or_name: &str) -> Result<DurableObjectId> {
        let (_, key) = self.class(class)?;
        if id_or_name.len() == 64 && id_or_name.bytes().all(|b| b.is_ascii_hexdigit()) {
            key.id_from_string(id_or_name)
        } else {
            Ok(key.id_from_name(id_or_name))
        }
    }

    /// A page of the objects of `class`.
    pub fn list_ids(&self, class: &str, options: ListIds) -> Result<IdPage> {
        let (number, key) = self.class(class)?;
        let (after, limit) = options.resolve()?;
        let entries = crate::api::listing::entries(&self.store, number, &key, after, limit)?;
        crate::api::listing::page(&key, entries, limit)
    }

    fn object(&self, class: &str, id: &DurableObjectId) -> Result<do_storage::ObjectStore> {
        let (number, key) = self.class(class)?;
        if id.namespace_tag() != key.tag() {
            return Err(Error::WrongNamespace {
                class: class.to_owned(),
            });
        }
        Ok(self.store.object(ObjectPrefix::new(number, id.base())))
    }

    /// An object's keys, values and alarm.
    pub fn show(&self, class: &str, id: &DurableObjectId) -> Result<ObjectDump> {
        let store = self.object(class, id)?;
        let (number, _) = self.class(class)?;
        let prefix = ObjectPrefix::new(number, id.base());
        let name = id
            .name()
            .map(str::to_owned)
            // (The store says `""` for an object whose name it does not know.)
            .or_else(|| self.store.known_name(&prefix).ok().flatten())
            .filter(|name| !name.is_empty());
        dump(&store, id.clone(), name)
    }

    /// Whether the directory is read from a copy (it cannot be written).
    pub fn is_read_only(&self) -> bool {
        self.copy.is_some()
    }

    fn writable(&self) -> Result<()> {
        match self.copy {
            Some(_) => Err(Error::Unsupported(
                "the data directory cannot be written (read-only); only list, show and export work"
                    .into(),
            )),
            None => Ok(()),
        }
    }

    /// Removes an object's keys and alarm; tells how many keys there were.
    pub async fn delete(&self, class: &str, id: &DurableObjectId) -> Result<usize> {
        self.writable()?;
        let store = self.object(class, id)?;
        let count = store.delete_all(true)?;
        store.barrier().await?;
        Ok(count)
    }

    /// Writes the records of one object (the class and id of the first).
    /// An object exported under another deployment secret gets an id of
    /// this directory's (see [`ImportOptions`]).
    pub async fn import(&self, records: &[Record], options: ImportOptions) -> Result<usize> {
        self.writable()?;
        let Some(first) = records.first() else {
            return Ok(0);
        };
        let (_, key) = self.class_to_write(&first.class)?;
        let id = crate::api::dump::import_id(&key, first, options)?;
        if records
            .iter()
            .any(|r| r.class != first.class || r.id != first.id)
        {
            return Err(Error::BadRequest(
                "records of several objects in one import call".into(),
            ));
        }
        let store = self.object(&first.class, &id)?;
        if let Some(name) = id.name() {
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

/// Whether opening failed because the directory cannot be written.
fn cannot_write(e: &do_storage::StorageError) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied
            )
        {
            return true;
        }
        cause = c.source();
    }
    false
}

/// A copy of a directory in the system's temporary directory, removed when
/// dropped.
struct TempCopy(std::path::PathBuf);

impl TempCopy {
    fn of(from: &Path) -> std::io::Result<TempCopy> {
        let mut tag = [0u8; 8];
        getrandom::fill(&mut tag).map_err(|e| std::io::Error::other(e.to_string()))?;
        let to = std::env::temp_dir().join(format!("do-cli-copy-{}", hex::encode(tag)));
        let copy = TempCopy(to);
        copy_dir(from, &copy.0)?;
        Ok(copy)
    }
}

impl Drop for TempCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

impl std::fmt::Debug for DataDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataDir")
            .field("namespaces", &self.namespaces())
            .finish()
    }
}

/// Makes the data directory `dir` (empty, or one this log was written
/// from) a copy of the replicated log `config` names: its deployment
/// secret, then every object's state, read back past what the directory
/// holds. No shard is claimed, so a runtime writing the log meanwhile goes
/// on. Returns how many entries were read. A runtime (replicating or not)
/// can then open the directory. Feature `replication`; `do-cli rebuild`.
#[cfg(feature = "replication")]
pub fn rebuild_from_log(dir: &Path, config: do_replica::ReplicaConfig) -> Result<usize> {
    crate::service::replication::rebuild(dir, config)
}
