//! The trait `#[durable_object]` implements, and its type-erased form.

use std::rc::Rc;

use futures_util::future::LocalBoxFuture;

use crate::api::ctx::Ctx;
use crate::base::error::Error;
use crate::engine::class::{Instance, ObjectParts};
use crate::engine::reply::Reply;

/// A class of Durable Objects. Implemented by [`macro@crate::durable_object`];
/// not meant to be implemented by hand.
///
/// The macro derives the class name from the type's name (or from
/// `#[durable_object(name = "…")]`), builds the constructor from
/// `pub fn new(ctx: Ctx) -> Self`, and generates [`DurableObject::Client`],
/// the type a [`Stub`](crate::Stub) dereferences to, with one method per
/// `pub async fn` of the impl block.
pub trait DurableObject: Sized + 'static {
    /// The generated client with the object's methods; `Stub<Self>` derefs to it.
    type Client: crate::api::stub::Client;
    /// The class name: the name of the namespace.
    const CLASS: &'static str;
    /// The schema fingerprint: every exposed method with its argument and
    /// result types. Peers compare it to detect mismatched definitions.
    const SCHEMA: &'static str;
    /// Every method the runtime may call, with its name: for spans and metrics.
    #[doc(hidden)]
    const METHODS: &'static [crate::base::wire::MethodInfo] = &[];
    /// Whether the class has an `alarm` handler.
    #[doc(hidden)]
    const HAS_ALARM: bool = false;

    /// Builds an instance; runs on the object's first call after it was
    /// created, evicted or reset.
    fn construct(ctx: Ctx) -> Self;

    /// Decodes a call to method `method` and returns the future that runs it
    /// and yields the encoded result.
    #[doc(hidden)]
    fn dispatch(
        self: Rc<Self>,
        call: Incoming<'_>,
    ) -> Result<LocalBoxFuture<'static, Result<Vec<u8>, Error>>, Error>;
}

/// A live instance with the context it was built with: what the engine
/// holds as a type-erased [`Instance`].
struct Live<T> {
    object: Rc<T>,
    ctx: Ctx,
}

impl<T: DurableObject> Instance for Live<T> {
    fn dispatch(
        self: Rc<Self>,
        method: u32,
        args: &[u8],
        system: bool,
    ) -> Result<LocalBoxFuture<'static, Reply>, Error> {
        T::dispatch(
            self.object.clone(),
            Incoming {
                method,
                args,
                ctx: &self.ctx,
                system,
            },
        )
    }
}

/// Builds an instance of `T` from the parts the engine gives, behind the
/// type-erased interface: the class's constructor function.
pub(crate) fn construct_erased<T: DurableObject>(parts: ObjectParts) -> Rc<dyn Instance> {
    let ctx = Ctx::from_parts(parts);
    Rc::new(Live {
        object: Rc::new(T::construct(ctx.clone())),
        ctx,
    })
}

/// One call as the generated `dispatch` sees it.
pub struct Incoming<'a> {
    /// The method's wire id.
    pub method: u32,
    /// The encoded arguments.
    pub args: &'a [u8],
    /// The instance's context.
    pub ctx: &'a Ctx,
    /// Whether the runtime itself sent the call (a WebSocket event, an
    /// alarm): only such calls reach handlers.
    pub system: bool,
}
