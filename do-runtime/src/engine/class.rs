//! A registered class as the engine knows it, and the type-erased instance
//! it builds: the engine runs objects without naming the user's API.

use std::rc::Rc;
use std::sync::Arc;

use do_storage::ObjectStore;
use futures_util::future::LocalBoxFuture;

use crate::base::error::Error;
use crate::base::id::{DurableObjectId, NamespaceKey};
use crate::engine::input_gate::InputGate;
use crate::engine::reply::Reply;
use crate::engine::shared::Shared;

/// One registered class.
pub(crate) struct Class {
    pub index: u32,
    pub name: String,
    #[allow(dead_code)] // read by the remote handshake
    pub schema: &'static str,
    pub key: NamespaceKey,
    /// The namespace's number in the store: the first bytes of its keys.
    pub storage_namespace: u16,
    /// Builds an instance from its parts (the API layer's constructor of
    /// the class, which makes the object's `Ctx` of them).
    pub construct: fn(ObjectParts) -> Rc<dyn Instance>,
    /// Metric handles of each method, with the method's name.
    pub metrics: crate::engine::telemetry::ClassMetrics,
    /// Its methods (for a remote port's spans, in a cluster).
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub methods: &'static [crate::base::wire::MethodInfo],
    /// Whether the class has an `alarm` handler.
    pub has_alarm: bool,
}

/// What an instance is built of: the engine's side of its context. The
/// class's constructor turns it into the `Ctx` the object is given.
pub(crate) struct ObjectParts {
    pub class: Arc<Class>,
    pub id: DurableObjectId,
    pub store: Rc<ObjectStore>,
    pub shared: Arc<Shared>,
    pub gate: Rc<InputGate>,
}

/// A live instance of some class, type-erased: it decodes a call to one of
/// its methods and returns the future that runs it.
pub(crate) trait Instance {
    /// Decodes call `method` with `args` and returns the future yielding
    /// the encoded result; `system` calls (WebSocket events, alarms) may
    /// reach handlers, which no stub call can.
    fn dispatch(
        self: Rc<Self>,
        method: u32,
        args: &[u8],
        system: bool,
    ) -> Result<LocalBoxFuture<'static, Reply>, Error>;
}
