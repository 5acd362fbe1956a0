//! The trait `#[durable_object]` implements, and its type-erased form.

use std::rc::Rc;

use futures_util::future::LocalBoxFuture;

use crate::api::ctx::Ctx;
use crate::base::error::Error;

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
    type Client: crate::__private::Client;
    /// The class name: the name of the namespace.
    const CLASS: &'static str;
    /// The schema fingerprint: every exposed method with its argument and
    /// result types. Peers compare it to detect mismatched definitions.
    const SCHEMA: &'static str;
    /// Every method the runtime may call, with its name: for spans and metrics.
    #[doc(hidden)]
    const METHODS: &'static [crate::__private::MethodInfo] = &[];
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
        call: crate::__private::Incoming<'_>,
    ) -> Result<LocalBoxFuture<'static, Result<Vec<u8>, Error>>, Error>;
}

/// A live instance of some class, type-erased.
pub(crate) trait AnyObject {
    fn dispatch(
        self: Rc<Self>,
        call: crate::__private::Incoming<'_>,
    ) -> Result<LocalBoxFuture<'static, Result<Vec<u8>, Error>>, Error>;
}

impl<T: DurableObject> AnyObject for T {
    fn dispatch(
        self: Rc<Self>,
        call: crate::__private::Incoming<'_>,
    ) -> Result<LocalBoxFuture<'static, Result<Vec<u8>, Error>>, Error> {
        T::dispatch(self, call)
    }
}

/// Builds an instance of `T` behind the type-erased interface.
pub(crate) fn construct_erased<T: DurableObject>(ctx: Ctx) -> Rc<dyn AnyObject> {
    Rc::new(T::construct(ctx))
}
