//! Ids and stubs as values (SPEC B2): their wire form, and the "home" that
//! brings one back to life where it is decoded.
//!
//! An id's wire form carries its namespace tag with its 32 bytes (and its
//! name, if it has one). Decoding it needs the key of that namespace, to
//! check the id exactly as `id_from_string` does: a forged or foreign id is
//! refused. The key comes from the thread's [`Home`]: a worker thread's is
//! its runtime (installed for good when the worker starts), so arguments
//! and stored values decode there as they are; elsewhere (a caller's thread
//! decoding a result) none is in force, the decoding notes that it wanted
//! one, and the call decodes again with the home of the stub it was made
//! on (its runtime, or its remote client). A stub's wire form is its id;
//! the home makes a working stub of it.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::sync::Arc;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::base::error::Error;
use crate::base::id::{DurableObjectId, NamespaceKey};
use crate::base::wire::MethodInfo;

/// Where decoded ids and stubs come to life: a runtime, or a remote client.
pub(crate) trait Home: Send + Sync {
    /// The key of the namespace whose ids carry `tag`.
    fn key(&self, tag: u64) -> Option<&NamespaceKey>;
    /// A working stub (a boxed `RawStub`) of class `class`, whose methods
    /// are `methods`, for `id`; refused when `id` is of another namespace.
    fn stub(
        &self,
        class: &str,
        methods: &'static [MethodInfo],
        id: DurableObjectId,
    ) -> Result<Box<dyn Any + Send>, Error>;
    /// The streamed body `number` of a decoded response (see
    /// `base::streaming`): from this process's table for a runtime, from
    /// its connection for a remote client. A home that cannot has none.
    fn claim_stream(&self, number: u64) -> Result<crate::base::streaming::BodyStream, Error> {
        let _ = number;
        Err(Error::Unsupported(
            "no streamed response body can be claimed here".into(),
        ))
    }
    /// The way to the runtime a decoded response came from, for the
    /// WebSocket it hands over: a remote client's connection has one; a
    /// runtime's own sockets need none.
    fn socket_relay(&self) -> Option<Arc<dyn crate::base::fetch::SocketRelay>> {
        None
    }
}

thread_local! {
    static HOME: RefCell<Option<Arc<dyn Home>>> = const { RefCell::new(None) };
    /// Set when a decoding met an id its thread's home did not know.
    static WANTED: Cell<bool> = const { Cell::new(false) };
    /// Why the last id or stub failed to decode, as a typed error.
    static FAILED: RefCell<Option<Error>> = const { RefCell::new(None) };
}

/// Makes `home` this thread's for good (a worker's, at its start).
pub(crate) fn install(home: Arc<dyn Home>) {
    HOME.with(|h| *h.borrow_mut() = Some(home));
}

/// Runs `f` with `home` as this thread's; the previous one comes back.
pub(crate) fn with_home<R>(home: Arc<dyn Home>, f: impl FnOnce() -> R) -> R {
    crate::base::scoped::with_local(&HOME, home, f)
}

/// Whether a decoding since the last call met an id this thread's home did
/// not know (and so should run again under the right home).
pub(crate) fn take_wanted() -> bool {
    WANTED.with(|w| w.replace(false))
}

/// Forgets what earlier decodings on this thread noted: each decoding of a
/// reply starts afresh.
pub(crate) fn clear_flags() {
    WANTED.with(|w| w.set(false));
    FAILED.with(|f| {
        if let Ok(mut failed) = f.try_borrow_mut() {
            failed.take();
        }
    });
}

/// The typed error behind the last id or stub that failed to decode.
pub(crate) fn take_failure() -> Option<Error> {
    FAILED.with(|f| f.borrow_mut().take())
}

/// Fails a decoding with `e`: kept as the typed error, and said in words
/// for the decoder.
fn fail<E: serde::de::Error>(e: Error) -> E {
    let message = e.to_string();
    FAILED.with(|f| *f.borrow_mut() = Some(e));
    E::custom(message)
}

/// The id of `tag`'s namespace with these bytes and name, checked under
/// this thread's home.
fn check(tag: u64, bytes: &[u8], name: Option<String>) -> Result<DurableObjectId, Error> {
    let checked = HOME.with(|home| {
        let home = home.borrow();
        let key = home.as_ref()?.key(tag)?;
        Some(check_under(key, bytes, name.as_deref()))
    });
    checked.unwrap_or_else(|| {
        WANTED.with(|w| w.set(true));
        Err(Error::WrongNamespace {
            class: format!("unknown here (namespace tag {tag:016x})"),
        })
    })
}

/// The id of these bytes under `key`, carrying `name` when it comes with
/// one, which must make that id.
pub(crate) fn check_under(
    key: &NamespaceKey,
    bytes: &[u8],
    name: Option<&str>,
) -> Result<DurableObjectId, Error> {
    let id = key.id_from_bytes(bytes)?;
    match name {
        None => Ok(id),
        Some(name) => key.named(&id, name).ok_or_else(|| {
            Error::InvalidId(format!(
                "the id {id} was not made from the name {name:?} it carries"
            ))
        }),
    }
}

/// The binary wire form: namespace tag, bytes, name.
#[derive(Serialize, Deserialize)]
struct WireId {
    namespace: u64,
    bytes: [u8; crate::base::id::ID_BYTES],
    name: Option<String>,
}

/// The text form (JSON and the like): the tag in hex, the id as text.
#[derive(Serialize, Deserialize)]
struct TextId {
    namespace: String,
    id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
}

impl Serialize for DurableObjectId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            TextId {
                namespace: format!("{:016x}", self.namespace_tag()),
                id: self.to_string(),
                name: self.name().map(str::to_owned),
            }
            .serialize(serializer)
        } else {
            WireId {
                namespace: self.namespace_tag(),
                bytes: *self.as_bytes(),
                name: self.name().map(str::to_owned),
            }
            .serialize(serializer)
        }
    }
}

/// Checked against the key of the namespace it names, as
/// [`Namespace::id_from_string`](crate::Namespace::id_from_string) checks
/// text: an id of a namespace the decoding runtime (or client) does not
/// have, or whose MAC does not hold, fails with
/// [`Error::WrongNamespace`]; one whose name does not give its bytes, with
/// [`Error::InvalidId`]. Decodes only where a runtime or client decodes:
/// arguments, results and stored values.
impl<'de> Deserialize<'de> for DurableObjectId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (tag, bytes, name) = if deserializer.is_human_readable() {
            let text = TextId::deserialize(deserializer)?;
            let tag = u64::from_str_radix(&text.namespace, 16).map_err(|_| {
                fail::<D::Error>(Error::InvalidId(format!(
                    "{:?} is not a namespace tag (16 hex digits)",
                    text.namespace
                )))
            })?;
            let mut bytes = [0u8; crate::base::id::ID_BYTES];
            hex::decode_to_slice(&text.id, &mut bytes).map_err(|_| {
                fail::<D::Error>(Error::InvalidId(format!(
                    "{:?} is not an id (64 lowercase hex digits)",
                    text.id
                )))
            })?;
            (tag, bytes, text.name)
        } else {
            let wire = WireId::deserialize(deserializer)?;
            (wire.namespace, wire.bytes, wire.name)
        };
        check(tag, &bytes, name).map_err(fail::<D::Error>)
    }
}

/// Refuses a decoded stub's `id` unless it is of the namespace of `class`,
/// whose key is `key` (a home's `stub` checks this).
pub(crate) fn check_namespace(
    id: &DurableObjectId,
    class: &str,
    key: &NamespaceKey,
) -> Result<(), Error> {
    if id.namespace_tag() == key.tag() {
        Ok(())
    } else {
        Err(Error::WrongNamespace {
            class: class.to_owned(),
        })
    }
}

/// Claims the streamed body `number` of a decoded response through this
/// thread's home; without one, notes that the decoding wants one.
pub(crate) fn claim_stream(number: u64) -> Result<crate::base::streaming::BodyStream, Error> {
    let claimed = HOME.with(|home| Some(home.borrow().as_ref()?.claim_stream(number)));
    claimed.unwrap_or_else(|| {
        WANTED.with(|w| w.set(true));
        Err(Error::Unsupported(
            "a streamed response body is claimed only where a runtime decodes it".into(),
        ))
    })
}

/// The way to the runtime whose response this thread decodes, if it is
/// another runtime (see [`Home::socket_relay`]).
pub(crate) fn socket_relay() -> Option<Arc<dyn crate::base::fetch::SocketRelay>> {
    HOME.with(|home| home.borrow().as_ref()?.socket_relay())
}

/// Decodes a stub of class `class` (whose methods are `methods`): its id,
/// then a working stub for it from this thread's home.
pub(crate) fn decode_stub<'de, D: Deserializer<'de>>(
    deserializer: D,
    class: &str,
    methods: &'static [MethodInfo],
) -> Result<Box<dyn Any + Send>, D::Error> {
    let id = DurableObjectId::deserialize(deserializer)?;
    let made = HOME.with(|home| {
        let home = home.borrow();
        Some(home.as_ref()?.stub(class, methods, id))
    });
    match made {
        Some(stub) => stub.map_err(fail::<D::Error>),
        None => {
            WANTED.with(|w| w.set(true));
            Err(D::Error::custom(
                "a stub decodes only where a runtime or client decodes",
            ))
        }
    }
}
