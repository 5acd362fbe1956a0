//! A namespace: the objects of one class, and the ids and stubs that reach them.

use std::marker::PhantomData;
use std::sync::Arc;

use std::future::Future;

use futures_util::future::LocalBoxFuture;
use tokio::sync::oneshot;

use crate::api::ctx::Ctx;
use crate::api::object::DurableObject;
use crate::api::remote::RemoteNamespace;
use crate::api::storage::Storage;
use crate::api::stub::{RawStub, Stub};
use crate::base::error::{DisconnectReason, Error, Result};
use crate::base::id::{DurableObjectId, NamespaceKey};
use crate::engine::class::ObjectParts;
use crate::engine::worker::{Envelope, Kind};
use crate::engine::{class::Class, shared::Shared};

/// The objects of class `T` in one runtime: makes ids and hands out stubs.
///
/// ```
/// # fn main() -> Result<(), do_runtime::Error> {
/// # let dir = tempfile::tempdir().unwrap();
/// use do_runtime::{durable_object, Ctx, Runtime};
///
/// pub struct Room { ctx: Ctx }
///
/// #[durable_object]
/// impl Room {
///     pub fn new(ctx: Ctx) -> Self { Self { ctx } }
///     pub async fn hello(&self, who: String) -> String { format!("hello {who}") }
/// }
///
/// let rt = Runtime::builder().data_dir(dir.path()).register::<Room>().build()?;
/// let rooms = rt.namespace::<Room>();
/// let stub = rooms.get_by_name("lobby");
/// assert_eq!(stub.name(), Some("lobby"));
/// assert_eq!(stub.id(), &rooms.id_from_name("lobby"));
/// # Ok(()) }
/// ```
pub struct Namespace<T> {
    target: NsTarget,
    _class: PhantomData<fn() -> T>,
}

/// Where a namespace's objects live.
#[derive(Clone)]
enum NsTarget {
    Local {
        shared: Arc<Shared>,
        class: Arc<Class>,
    },
    Remote(Arc<dyn RemoteNamespace>),
}

impl<T: DurableObject> Namespace<T> {
    pub(crate) fn new(shared: Arc<Shared>, class: Arc<Class>) -> Self {
        Namespace {
            target: NsTarget::Local { shared, class },
            _class: PhantomData,
        }
    }

    pub(crate) fn remote(namespace: Arc<dyn RemoteNamespace>) -> Self {
        Namespace {
            target: NsTarget::Remote(namespace),
            _class: PhantomData,
        }
    }

    fn key(&self) -> &NamespaceKey {
        match &self.target {
            NsTarget::Local { class, .. } => &class.key,
            NsTarget::Remote(remote) => remote.key(),
        }
    }

    /// The class name of this namespace.
    pub fn class_name(&self) -> &str {
        match &self.target {
            NsTarget::Local { class, .. } => &class.name,
            NsTarget::Remote(remote) => remote.class_name(),
        }
    }

    /// The id of the object called `name`: the same name gives the same id on
    /// every run; the same name in another namespace gives another id.
    pub fn id_from_name(&self, name: &str) -> DurableObjectId {
        self.key().id_from_name(name)
    }

    /// A fresh random id, different from every other id.
    pub fn new_unique_id(&self) -> DurableObjectId {
        self.key().new_unique_id()
    }

    /// Parses an id's text form. Fails with [`Error::InvalidId`](crate::Error::InvalidId)
    /// for anything that is not 64 lowercase hex characters, and with
    /// [`Error::WrongNamespace`](crate::Error::WrongNamespace) for the id of
    /// another namespace or another deployment.
    pub fn id_from_string(&self, text: &str) -> Result<DurableObjectId> {
        self.key().id_from_string(text)
    }

    /// A stub for the object `id`, at once and without I/O. The object is
    /// created on the first call if it never existed.
    ///
    /// An id of another namespace gives a stub whose calls fail with
    /// [`Error::WrongNamespace`](crate::Error::WrongNamespace).
    pub fn get(&self, id: DurableObjectId) -> Stub<T> {
        match &self.target {
            NsTarget::Local { shared, class } => {
                Stub::from_raw(RawStub::new(shared.clone(), class.clone(), id))
            }
            NsTarget::Remote(remote) => {
                Stub::from_raw(RawStub::remote(remote.port(id, T::METHODS)))
            }
        }
    }

    /// `self.get(self.id_from_name(name))`.
    pub fn get_by_name(&self, name: &str) -> Stub<T> {
        self.get(self.id_from_name(name))
    }

    /// A page of the objects of this namespace that ever stored something,
    /// in id order: each with its id, its name where known, and whether it
    /// holds stored data now. Pass the page's cursor to
    /// [`ListIds::cursor`](crate::ListIds::cursor) for the next one.
    ///
    /// ```
    /// # fn main() -> Result<(), do_runtime::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let tokio = tokio::runtime::Runtime::new().unwrap();
    /// # tokio.block_on(async {
    /// # use do_runtime::{durable_object, Ctx, ListIds, Runtime};
    /// # pub struct Counter { ctx: Ctx }
    /// # #[durable_object] impl Counter { pub fn new(ctx: Ctx) -> Self { Self { ctx } }
    /// #   pub async fn bump(&self) { self.ctx.storage().put("n", &1).ok(); } }
    /// # let rt = Runtime::builder().data_dir(dir.path()).register::<Counter>().build()?;
    /// let counters = rt.namespace::<Counter>();
    /// counters.get_by_name("a").bump().await?;
    /// let page = counters.list_ids(ListIds::new().limit(10)).await?;
    /// assert_eq!(page.objects[0].name.as_deref(), Some("a"));
    /// assert!(page.objects[0].has_stored_data);
    /// assert_eq!(page.cursor, None);
    /// # Ok::<_, do_runtime::Error>(()) })?;
    /// # Ok(()) }
    /// ```
    pub async fn list_ids(
        &self,
        options: crate::api::listing::ListIds,
    ) -> Result<crate::api::listing::IdPage> {
        let (after, limit) = options.resolve()?;
        match &self.target {
            NsTarget::Local { shared, class } => {
                let entries =
                    crate::api::listing::list_everywhere(shared, class, after, limit).await?;
                crate::api::listing::page(&class.key, entries, limit)
            }
            NsTarget::Remote(remote) => {
                let entries = remote.list_ids(after, limit).await?;
                crate::api::listing::page(remote.key(), entries, limit)
            }
        }
    }

    /// Runs `f(stub)` on the worker thread of object `id`, beside the
    /// object, with a stub for it: the task's calls to that object skip the
    /// hand-off between threads (a call and its reply then cost no thread
    /// wake-up at all), in E-order like any other caller's.
    ///
    /// Use it for a task that talks mostly to one object: a session, a
    /// connection's handler, a loop feeding one queue. `f` runs on that
    /// thread, so the future it returns need not be `Send`. The task shares
    /// the thread with that worker's objects, so it must not block (see
    /// [`Runtime::spawn`](crate::Runtime::spawn)). Through a remote client's
    /// namespace the handle fails with
    /// [`Error::Unsupported`](crate::Error::Unsupported).
    ///
    /// ```
    /// # fn main() -> Result<(), do_runtime::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let tokio = tokio::runtime::Runtime::new().unwrap();
    /// # tokio.block_on(async {
    /// # use do_runtime::{durable_object, Ctx, Runtime};
    /// # pub struct Counter { n: std::cell::Cell<i64> }
    /// # #[durable_object] impl Counter { pub fn new(_ctx: Ctx) -> Self { Self { n: Default::default() } }
    /// #   pub async fn add(&self, by: i64) -> i64 { self.n.set(self.n.get() + by); self.n.get() } }
    /// # let rt = Runtime::builder().data_dir(dir.path()).register::<Counter>().build()?;
    /// let counters = rt.namespace::<Counter>();
    /// let id = counters.id_from_name("hits");
    /// let total = counters
    ///     .spawn_beside(&id, |counter| async move {
    ///         let mut last = 0;
    ///         for _ in 0..1_000 {
    ///             last = counter.add(1).await?;
    ///         }
    ///         Ok::<_, do_runtime::Error>(last)
    ///     })
    ///     .await??;
    /// assert_eq!(total, 1_000);
    /// # Ok::<_, do_runtime::Error>(()) })?;
    /// # Ok(()) }
    /// ```
    pub fn spawn_beside<M, F>(
        &self,
        id: &DurableObjectId,
        f: M,
    ) -> crate::engine::spawn::JoinHandle<F::Output>
    where
        M: FnOnce(Stub<T>) -> F + Send + 'static,
        F: Future + 'static,
        F::Output: Send + 'static,
    {
        match &self.target {
            NsTarget::Local { shared, class } => {
                let stub = self.get(id.clone());
                crate::engine::spawn::spawn_on(shared, shared.worker_for(class.index, id), move || f(stub))
            }
            NsTarget::Remote(_) => crate::engine::spawn::JoinHandle::failed(Error::Unsupported(
                "spawn_beside runs beside objects of this process; the namespace is a remote client's".into(),
            )),
        }
    }

    /// Runs `f` with the storage of object `id`, on the object's thread and
    /// in order with its calls (like a call, it waits for the input gate),
    /// without constructing an instance. Resolves once `f` is done and its
    /// writes are durable. Meant for tests, tools and migrations.
    ///
    /// ```
    /// # fn main() -> Result<(), do_runtime::Error> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// # let tokio = tokio::runtime::Runtime::new().unwrap();
    /// # tokio.block_on(async {
    /// # use do_runtime::{durable_object, Ctx, Runtime};
    /// # pub struct Counter { ctx: Ctx }
    /// # #[durable_object] impl Counter { pub fn new(ctx: Ctx) -> Self { Self { ctx } }
    /// #   pub async fn get(&self) -> Option<i64> { self.ctx.storage().get("value").await.ok().flatten() } }
    /// # let rt = Runtime::builder().data_dir(dir.path()).register::<Counter>().build()?;
    /// let counters = rt.namespace::<Counter>();
    /// let id = counters.id_from_name("seeded");
    /// counters.with_storage(&id, |storage| async move { storage.put("value", &41i64) }).await??;
    /// assert_eq!(counters.get(id).get().await?, Some(41));
    /// # Ok::<_, do_runtime::Error>(()) })?;
    /// # Ok(()) }
    /// ```
    pub async fn with_storage<F, Fut, R>(&self, id: &DurableObjectId, f: F) -> Result<R>
    where
        F: FnOnce(Storage) -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
        R: Send + 'static,
    {
        let NsTarget::Local { shared, class } = &self.target else {
            return Err(Error::Unsupported(
                "with_storage runs in the object's process; it is not available through a remote client".into(),
            ));
        };
        run_with_storage(shared, class, id, f).await
    }
}

/// Runs `f` with the storage of object `id` of `class`, on the object's
/// thread and in order with its calls, and waits until its writes are durable.
pub(crate) async fn run_with_storage<F, Fut, R>(
    shared: &Arc<Shared>,
    class: &Arc<Class>,
    id: &DurableObjectId,
    f: F,
) -> Result<R>
where
    F: FnOnce(Storage) -> Fut + Send + 'static,
    Fut: Future<Output = R> + 'static,
    R: Send + 'static,
{
    if id.namespace_tag() != class.key.tag() {
        return Err(Error::WrongNamespace {
            class: class.name.clone(),
        });
    }
    if shared.is_closing() {
        return Err(Error::disconnected(
            DisconnectReason::Shutdown,
            "the runtime is shutting down",
        ));
    }
    let (done, result) = oneshot::channel();
    let run: Box<dyn FnOnce(ObjectParts) -> LocalBoxFuture<'static, ()> + Send> =
        Box::new(move |parts: ObjectParts| {
            Box::pin(async move {
                let storage = Ctx::from_parts(parts).storage().clone();
                let value = f(storage.clone()).await;
                let _ = done.send(storage.sync().await.map(|()| value));
            })
        });
    let envelope = Envelope {
        class: class.index,
        relay: None,
        kind: Kind::Run {
            id: id.clone(),
            handle: shared.registry().handle(class.index, id.base()),
            run,
        },
    };
    shared.send(shared.worker_for(class.index, id), envelope)?;
    result.await.map_err(|_| {
        Error::disconnected(
            shared.lost_reason(),
            "the object was reset or the runtime shut down",
        )
    })?
}

impl<T> Clone for Namespace<T> {
    fn clone(&self) -> Self {
        Namespace {
            target: self.target.clone(),
            _class: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Namespace<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (class, remote) = match &self.target {
            NsTarget::Local { class, .. } => (class.name.as_str(), false),
            NsTarget::Remote(remote) => (remote.class_name(), true),
        };
        f.debug_struct("Namespace")
            .field("class", &class)
            .field("remote", &remote)
            .finish()
    }
}
