//! What an instance is given at construction: its id, its storage, the environment.

use std::rc::Rc;

use crate::env::Env;
use crate::id::DurableObjectId;
use crate::storage::Storage;

/// The context of one instance: its id, its [`Storage`] and the runtime's
/// [`Env`]. Cheap to clone; not `Send` (it belongs to the thread that runs
/// the object).
///
/// The constructor receives it: by convention `pub fn new(ctx: Ctx) -> Self`,
/// keeping `ctx` in a field.
///
/// ```
/// use do_runtime::{durable_object, Ctx};
///
/// pub struct Greeter { ctx: Ctx }
///
/// #[durable_object]
/// impl Greeter {
///     pub fn new(ctx: Ctx) -> Self { Self { ctx } }
///
///     pub async fn whoami(&self) -> String {
///         self.ctx.id().name().unwrap_or("anonymous").to_owned()
///     }
/// }
/// ```
#[derive(Clone)]
pub struct Ctx {
    inner: Rc<Inner>,
}

struct Inner {
    id: DurableObjectId,
    storage: Storage,
    env: Env,
}

impl Ctx {
    pub(crate) fn new(id: DurableObjectId, storage: Storage, env: Env) -> Self {
        Ctx {
            inner: Rc::new(Inner { id, storage, env }),
        }
    }

    /// The id of this object.
    pub fn id(&self) -> &DurableObjectId {
        &self.inner.id
    }

    /// This object's private, durable key-value storage.
    pub fn storage(&self) -> &Storage {
        &self.inner.storage
    }

    /// The runtime's environment: other namespaces, to call other objects.
    pub fn env(&self) -> &Env {
        &self.inner.env
    }
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("id", &self.inner.id)
            .finish_non_exhaustive()
    }
}
