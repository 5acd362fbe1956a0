//! Stubs as arguments and results (SPEC B2): a stub travels as its
//! object's id and arrives as a working stub of the same object, made by
//! the [`Home`] of the side that decodes it: this runtime for its workers,
//! the remote client for results a client decodes (see `base::passing`).

use std::any::Any;
use std::sync::{Arc, Weak};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::api::object::DurableObject;
use crate::api::stub::{RawStub, Stub};
use crate::base::error::{DisconnectReason, Error};
use crate::base::id::{DurableObjectId, NamespaceKey};
use crate::base::passing::Home;
use crate::base::wire::MethodInfo;
use crate::engine::shared::Shared;

/// This runtime as the home of what its threads decode.
pub(crate) struct LocalHome {
    keys: Vec<NamespaceKey>,
    /// Weak: the runtime holds its home.
    shared: Weak<Shared>,
}

impl LocalHome {
    pub(crate) fn of(shared: &Arc<Shared>) -> Arc<dyn Home> {
        Arc::new(LocalHome {
            keys: shared.classes().iter().map(|c| c.key.clone()).collect(),
            shared: Arc::downgrade(shared),
        })
    }
}

impl Home for LocalHome {
    fn key(&self, tag: u64) -> Option<&NamespaceKey> {
        self.keys.iter().find(|k| k.tag() == tag)
    }

    fn stub(
        &self,
        class: &str,
        _methods: &'static [MethodInfo],
        id: DurableObjectId,
    ) -> Result<Box<dyn Any + Send>, Error> {
        let shared = self.shared.upgrade().ok_or_else(|| {
            Error::disconnected(DisconnectReason::Shutdown, "the runtime has shut down")
        })?;
        let found = shared.classes().iter().find(|c| c.name == class).cloned();
        let class = found.ok_or_else(|| Error::NotRegistered(class.to_owned()))?;
        crate::base::passing::check_namespace(&id, &class.name, &class.key)?;
        Ok(Box::new(RawStub::new(shared, class, id)))
    }

    fn claim_stream(&self, number: u64) -> Result<crate::base::streaming::BodyStream, Error> {
        crate::base::streaming::claim(number).ok_or_else(|| {
            Error::disconnected(
                DisconnectReason::Other,
                "the streamed body is gone (not claimed in time, or claimed already)",
            )
        })
    }
}

/// A stub travels as its object's id (see [`DurableObjectId`]'s wire form).
impl<T: DurableObject> Serialize for Stub<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.id().serialize(serializer)
    }
}

/// Arrives as a working stub of the same object: in an object's method, a
/// stub of its runtime; in a remote client's result, a stub through that
/// client's connection. An id of another namespace than `T`'s fails with
/// [`Error::WrongNamespace`].
impl<'de, T: DurableObject> Deserialize<'de> for Stub<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = crate::base::passing::decode_stub(deserializer, T::CLASS, T::METHODS)?;
        match raw.downcast::<RawStub>() {
            Ok(raw) => Ok(Stub::from_raw(*raw)),
            // Every home makes `RawStub`s.
            Err(_) => Err(serde::de::Error::custom("the home made no stub")),
        }
    }
}
