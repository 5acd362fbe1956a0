//! Object ids and the per-namespace keys that make and check them.
//!
//! An id is 32 bytes: 16 base bytes (random for `new_unique_id`, a keyed hash
//! of the name for `id_from_name`) followed by 16 bytes of HMAC-SHA256 over the
//! base under the namespace's key. The namespace key derives from the class
//! name and the runtime's secret, so ids are stable across restarts, differ
//! between namespaces, and cannot be forged for another deployment.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::base::error::Error;

type HmacSha256 = Hmac<Sha256>;

const BASE: usize = 16;
const TAG: usize = 16;
/// Bytes of an id.
pub const ID_BYTES: usize = BASE + TAG;

/// The identity of one Durable Object within its namespace.
///
/// Made by a [`Namespace`](crate::Namespace): `id_from_name`, `new_unique_id`
/// or `id_from_string`. Shown as 64 lowercase hex characters. Two ids are
/// equal exactly when they denote the same object.
///
/// ```
/// # fn main() -> Result<(), do_runtime::Error> {
/// # let dir = tempfile::tempdir().unwrap();
/// # use do_runtime::{durable_object, Ctx, Runtime};
/// # pub struct Room { ctx: Ctx }
/// # #[durable_object] impl Room { pub fn new(ctx: Ctx) -> Self { Self { ctx } } pub async fn ping(&self) {} }
/// # let rt = Runtime::builder().data_dir(dir.path()).register::<Room>().build()?;
/// let rooms = rt.namespace::<Room>();
/// let id = rooms.id_from_name("lobby");
/// assert_eq!(id.name(), Some("lobby"));
/// let text = id.to_string();
/// assert_eq!(text.len(), 64);
/// assert_eq!(rooms.id_from_string(&text)?, id);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct DurableObjectId {
    bytes: [u8; ID_BYTES],
    name: Option<Arc<str>>,
    /// Which namespace key made the id; lets `get` refuse foreign ids cheaply.
    namespace: u64,
}

impl DurableObjectId {
    /// The name this id was derived from, for ids made by `id_from_name`.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The id's 32 bytes.
    pub fn as_bytes(&self) -> &[u8; ID_BYTES] {
        &self.bytes
    }

    /// The random or name-derived half; the other half is a MAC over it, so
    /// this half alone identifies the object within its namespace.
    pub(crate) fn base(&self) -> [u8; BASE] {
        let mut base = [0u8; BASE];
        base.copy_from_slice(&self.bytes[..BASE]);
        base
    }

    pub(crate) fn namespace_tag(&self) -> u64 {
        self.namespace
    }
}

impl PartialEq for DurableObjectId {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}
impl Eq for DurableObjectId {}
impl Hash for DurableObjectId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.bytes.hash(state);
    }
}

impl fmt::Display for DurableObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.bytes))
    }
}

impl fmt::Debug for DurableObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_tuple("DurableObjectId");
        d.field(&format_args!("{}", self));
        if let Some(name) = &self.name {
            d.field(name);
        }
        d.finish()
    }
}

/// The key of one namespace: makes and checks its ids.
#[derive(Clone)]
pub(crate) struct NamespaceKey {
    class: Arc<str>,
    key: [u8; 32],
    tag: u64,
}

impl NamespaceKey {
    pub fn derive(secret: &[u8], class: &str) -> Self {
        let key: [u8; 32] = mac(secret, &[b"do-runtime/namespace/v1\0", class.as_bytes()]);
        Self::with_key(class, key)
    }

    fn with_key(class: &str, key: [u8; 32]) -> Self {
        let mut tag = [0u8; 8];
        tag.copy_from_slice(&key[..8]);
        NamespaceKey {
            class: class.into(),
            key,
            tag: u64::from_le_bytes(tag),
        }
    }

    /// The key of a namespace as a peer described it.
    pub fn from_key(class: &str, key: &[u8]) -> Result<Self, Error> {
        let key: [u8; 32] = key.try_into().map_err(|_| {
            Error::Protocol(format!("the key of namespace {class:?} is not 32 bytes"))
        })?;
        Ok(Self::with_key(class, key))
    }

    /// The raw key, for the handshake.
    pub fn key_bytes(&self) -> &[u8; 32] {
        &self.key
    }

    pub fn tag(&self) -> u64 {
        self.tag
    }

    /// The id with these 32 bytes, if its MAC checks out under this key.
    pub fn id_from_bytes(&self, bytes: &[u8]) -> Result<DurableObjectId, Error> {
        let bytes: [u8; ID_BYTES] = bytes.try_into().map_err(|_| {
            Error::InvalidId(format!("expected {ID_BYTES} bytes, got {}", bytes.len()))
        })?;
        self.mac_over_base(&bytes[..BASE])
            .verify_truncated_left(&bytes[BASE..])
            .map_err(|_| Error::WrongNamespace {
                class: self.class.to_string(),
            })?;
        Ok(DurableObjectId {
            bytes,
            name: None,
            namespace: self.tag,
        })
    }

    pub fn id_from_name(&self, name: &str) -> DurableObjectId {
        let full: [u8; 32] = mac(&self.key, &[b"name\0", name.as_bytes()]);
        let mut base = [0u8; BASE];
        base.copy_from_slice(&full[..BASE]);
        let mut id = self.seal(base);
        id.name = Some(name.into());
        id
    }

    /// `id` carrying `name`, if `name` makes `id`.
    pub(crate) fn named(&self, id: &DurableObjectId, name: &str) -> Option<DurableObjectId> {
        let named = self.id_from_name(name);
        (named == *id).then_some(named)
    }

    /// The id with this base (as stored in the data directory).
    pub fn id_from_base(&self, base: [u8; BASE]) -> DurableObjectId {
        self.seal(base)
    }

    pub fn new_unique_id(&self) -> DurableObjectId {
        let mut base = [0u8; BASE];
        // The OS random source failing is not something a program can recover
        // from; getrandom documents it as practically impossible on Linux.
        if let Err(e) = getrandom::fill(&mut base) {
            panic!("the OS random number generator failed: {e}");
        }
        self.seal(base)
    }

    pub fn id_from_string(&self, text: &str) -> Result<DurableObjectId, Error> {
        if text.len() != 2 * ID_BYTES {
            return Err(Error::InvalidId(format!(
                "expected {} lowercase hex characters, got {} characters",
                2 * ID_BYTES,
                text.chars().count()
            )));
        }
        if let Some(bad) = text.chars().find(|c| !matches!(c, '0'..='9' | 'a'..='f')) {
            return Err(Error::InvalidId(format!(
                "{bad:?} is not a lowercase hex digit"
            )));
        }
        let mut bytes = [0u8; ID_BYTES];
        hex::decode_to_slice(text, &mut bytes).map_err(|e| Error::InvalidId(e.to_string()))?;
        self.id_from_bytes(&bytes)
    }

    fn mac_over_base(&self, base: &[u8]) -> HmacSha256 {
        let mut mac = new_mac(&self.key);
        mac.update(b"id\0");
        mac.update(base);
        mac
    }

    fn seal(&self, base: [u8; BASE]) -> DurableObjectId {
        let tag = self.mac_over_base(&base).finalize().into_bytes();
        let mut bytes = [0u8; ID_BYTES];
        bytes[..BASE].copy_from_slice(&base);
        bytes[BASE..].copy_from_slice(&tag[..TAG]);
        DurableObjectId {
            bytes,
            name: None,
            namespace: self.tag,
        }
    }
}

fn new_mac(key: &[u8]) -> HmacSha256 {
    match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        // HMAC accepts keys of any length.
        Err(_) => unreachable!("HMAC takes keys of any length"),
    }
}

fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = new_mac(key);
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}
