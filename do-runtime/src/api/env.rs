//! The runtime's environment, as objects and other callers see it.

use std::any::TypeId;
use std::sync::Arc;

use crate::api::namespace::Namespace;
use crate::api::object::DurableObject;
use crate::base::error::{Error, Result};
use crate::engine::shared::Shared;

/// A handle to a runtime's namespaces: what an object uses to call other
/// objects (`ctx.env()`), and what tasks can hold to make stubs. Cheap to
/// clone, `Send` and `Sync`. It does not keep the runtime running: once the
/// [`Runtime`](crate::Runtime) is dropped, calls fail with
/// [`Error::Disconnected`].
///
/// ```no_run
/// # use do_runtime::{durable_object, Ctx, Error};
/// # pub struct Counter { ctx: Ctx }
/// # #[durable_object] impl Counter { pub fn new(ctx: Ctx) -> Self { Self { ctx } }
/// #   pub async fn increment(&self, n: i64) -> Result<i64, Error> { Ok(n) } }
/// pub struct Game { ctx: Ctx }
///
/// #[durable_object]
/// impl Game {
///     pub fn new(ctx: Ctx) -> Self { Self { ctx } }
///
///     pub async fn score(&self, player: String) -> Result<i64, Error> {
///         let counters = self.ctx.env().namespace::<Counter>();
///         counters.get_by_name(&player).increment(10).await
///     }
/// }
/// ```
#[derive(Clone)]
pub struct Env {
    shared: Arc<Shared>,
}

impl Env {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Env { shared }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The namespace of class `T`.
    ///
    /// # Panics
    /// When `T` was not registered with the runtime: that is a mistake in the
    /// program's setup, not a condition to handle. Use
    /// [`Env::try_namespace`] to get an error instead.
    pub fn namespace<T: DurableObject>(&self) -> Namespace<T> {
        match self.try_namespace() {
            Ok(ns) => ns,
            Err(e) => panic!(
                "{e}; register it with RuntimeBuilder::register::<{}>()",
                T::CLASS
            ),
        }
    }

    /// The namespace of class `T`, or [`Error::NotRegistered`].
    pub fn try_namespace<T: DurableObject>(&self) -> Result<Namespace<T>> {
        let class = self
            .shared
            .class_of(TypeId::of::<T>())
            .ok_or_else(|| Error::NotRegistered(T::CLASS.to_owned()))?;
        Ok(Namespace::new(self.shared.clone(), class))
    }

    /// The namespace of the class called `class`, for code that knows classes
    /// by name only (routers, tools): ids and `fetch`. Fails with
    /// [`Error::NotRegistered`] for a name no registered class has.
    pub fn namespace_named(&self, class: &str) -> Result<crate::api::untyped::AnyNamespace> {
        crate::api::untyped::namespace_named(&self.shared, class)
    }

    /// The plain value bound to `name` with
    /// [`RuntimeBuilder::var`](crate::RuntimeBuilder::var), or
    /// [`Error::MissingBinding`] naming it.
    pub fn var(&self, name: &str) -> Result<&str> {
        self.shared.bindings.var(name)
    }

    /// The secret bound to `name` with
    /// [`RuntimeBuilder::secret`](crate::RuntimeBuilder::secret), or
    /// [`Error::MissingBinding`] naming it. The runtime never shows it;
    /// what the object does with it is the object's business.
    pub fn secret(&self, name: &str) -> Result<&str> {
        self.shared.bindings.secret(name)
    }

    /// The value of type `T` bound with
    /// [`RuntimeBuilder::binding`](crate::RuntimeBuilder::binding), or
    /// [`Error::MissingBinding`] naming the type.
    ///
    /// ```
    /// # use do_runtime::{durable_object, Ctx, Error, Runtime};
    /// pub struct Limits { pub per_minute: u32 }
    ///
    /// pub struct RateLimiter { ctx: Ctx }
    ///
    /// #[durable_object]
    /// impl RateLimiter {
    ///     pub fn new(ctx: Ctx) -> Self { Self { ctx } }
    ///
    ///     pub async fn limit(&self) -> Result<u32, Error> {
    ///         Ok(self.ctx.env().get::<Limits>()?.per_minute)
    ///     }
    /// }
    /// # #[tokio::main] async fn main() -> Result<(), Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let rt = Runtime::builder()
    ///     .data_dir(dir.path())
    ///     .binding(Limits { per_minute: 60 })
    ///     .register::<RateLimiter>()
    ///     .build()?;
    /// assert_eq!(rt.namespace::<RateLimiter>().get_by_name("ip").limit().await?, 60);
    /// # Ok(()) }
    /// ```
    pub fn get<T: std::any::Any + Send + Sync>(&self) -> Result<&T> {
        self.shared.bindings.get::<T>()
    }

    /// The class names of the registered namespaces, in registration order.
    pub fn namespaces(&self) -> Vec<String> {
        self.shared
            .classes()
            .iter()
            .map(|c| c.name.clone())
            .collect()
    }
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env")
            .field("namespaces", &self.namespaces())
            .field("bindings", &self.shared.bindings)
            .finish()
    }
}
