//! Namespaces and stubs picked by class name at run time, for code that does
//! not know the object's type: routers, gateways, tools. They offer ids and
//! `fetch`; typed calls need [`Namespace`](crate::Namespace).

use std::sync::Arc;

use crate::api::stub::{Call, RawStub};
use crate::base::error::{Error, Result};
use crate::base::fetch::{IntoRequest, Response};
use crate::base::id::DurableObjectId;
use crate::engine::{class::Class, shared::Shared};

/// The objects of one class, chosen by its name: see
/// [`Env::namespace_named`](crate::Env::namespace_named).
///
/// ```
/// # fn main() -> Result<(), do_runtime::Error> {
/// # let dir = tempfile::tempdir().unwrap();
/// # let tokio = tokio::runtime::Runtime::new().unwrap();
/// # tokio.block_on(async {
/// use do_runtime::{durable_object, Ctx, Request, Response, Runtime};
///
/// pub struct Page { ctx: Ctx }
///
/// #[durable_object]
/// impl Page {
///     pub fn new(ctx: Ctx) -> Self { Self { ctx } }
///     pub async fn fetch(&self, _request: Request) -> Response {
///         Response::new("hello".into())
///     }
/// }
///
/// let rt = Runtime::builder().data_dir(dir.path()).register::<Page>().build()?;
/// let pages = rt.env().namespace_named("Page")?;
/// let response = pages.get_by_name("home").fetch("http://do/").await?;
/// assert_eq!(response.body().as_ref(), b"hello");
/// assert!(rt.env().namespace_named("Nope").is_err());
/// # Ok::<_, do_runtime::Error>(()) })?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct AnyNamespace {
    shared: Arc<Shared>,
    class: Arc<Class>,
}

impl AnyNamespace {
    pub(crate) fn new(shared: Arc<Shared>, class: Arc<Class>) -> Self {
        AnyNamespace { shared, class }
    }

    /// The class name.
    pub fn class_name(&self) -> &str {
        &self.class.name
    }

    /// The id of the object called `name`, as
    /// [`Namespace::id_from_name`](crate::Namespace::id_from_name).
    pub fn id_from_name(&self, name: &str) -> DurableObjectId {
        self.class.key.id_from_name(name)
    }

    /// Parses an id's text form, as
    /// [`Namespace::id_from_string`](crate::Namespace::id_from_string).
    pub fn id_from_string(&self, text: &str) -> Result<DurableObjectId> {
        self.class.key.id_from_string(text)
    }

    /// A stub for the object `id`.
    pub fn get(&self, id: DurableObjectId) -> AnyStub {
        AnyStub {
            raw: RawStub::new(self.shared.clone(), self.class.clone(), id),
        }
    }

    /// `self.get(self.id_from_name(name))`.
    pub fn get_by_name(&self, name: &str) -> AnyStub {
        self.get(self.id_from_name(name))
    }

    /// The id in this runtime of the object an export record is about (see
    /// [`ImportOptions`](crate::admin::ImportOptions)): its own, or, when
    /// it was exported under another deployment secret, one made anew.
    pub fn import_id(
        &self,
        record: &crate::api::dump::Record,
        options: crate::api::dump::ImportOptions,
    ) -> Result<DurableObjectId> {
        crate::api::dump::import_id(&self.class.key, record, options)
    }

    /// An object's keys, values and alarm, read on its thread in order with
    /// its calls. Its name is the id's, or else the one the data directory
    /// recorded for it (as an offline export shows it).
    pub async fn show(&self, id: &DurableObjectId) -> Result<crate::api::dump::ObjectDump> {
        let name = match id.name() {
            Some(name) => Some(name.to_owned()),
            None => self.shared.store().and_then(|store| {
                let prefix = do_storage::ObjectPrefix::new(self.class.storage_namespace, id.base());
                // (The store says `""` when it knows no name.)
                store
                    .known_name(&prefix)
                    .ok()
                    .flatten()
                    .filter(|n| !n.is_empty())
            }),
        };
        let id_for = id.clone();
        crate::api::namespace::run_with_storage(
            &self.shared,
            &self.class,
            id,
            move |storage| async move {
                crate::api::dump::dump(storage.object_store(), id_for, name)
            },
        )
        .await?
    }

    /// Removes an object's keys and alarm (durably); tells how many keys
    /// there were.
    pub async fn delete_object(&self, id: &DurableObjectId) -> Result<usize> {
        crate::api::namespace::run_with_storage(
            &self.shared,
            &self.class,
            id,
            |storage| async move { Ok(storage.object_store().delete_all(true)?) },
        )
        .await?
    }

    /// Writes export records of object `id` (durably); tells how many keys
    /// and alarms were written.
    pub async fn import(
        &self,
        id: &DurableObjectId,
        records: Vec<crate::api::dump::Record>,
    ) -> Result<usize> {
        crate::api::namespace::run_with_storage(
            &self.shared,
            &self.class,
            id,
            move |storage| async move { crate::api::dump::apply(storage.object_store(), &records) },
        )
        .await?
    }

    /// A page of the objects of this namespace, as
    /// [`Namespace::list_ids`](crate::Namespace::list_ids).
    pub async fn list_ids(
        &self,
        options: crate::api::listing::ListIds,
    ) -> crate::base::error::Result<crate::api::listing::IdPage> {
        let (after, limit) = options.resolve()?;
        let entries =
            crate::api::listing::list_everywhere(&self.shared, &self.class, after, limit).await?;
        crate::api::listing::page(&self.class.key, entries, limit)
    }
}

impl std::fmt::Debug for AnyNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnyNamespace")
            .field("class", &self.class.name)
            .finish()
    }
}

/// A stub whose class is known only by name: it can `fetch`.
#[derive(Clone)]
pub struct AnyStub {
    raw: RawStub,
}

impl AnyStub {
    /// The object's id.
    pub fn id(&self) -> &DurableObjectId {
        self.raw.id()
    }

    /// Sends an HTTP request to the object's `fetch` handler. An object
    /// without one answers [`Error::UnknownMethod`]; an error the handler
    /// returns arrives as itself when it is a [`do_runtime::Error`](Error)
    /// and as [`Error::App`] otherwise.
    pub fn fetch<R: IntoRequest>(&self, request: R) -> Call<Result<Response>> {
        let mut args = Vec::new();
        let encoded = crate::base::fetch::encode_request(request, &mut args);
        self.raw.call(
            crate::base::wire::method_id(crate::base::wire::FETCH),
            encoded.map(|()| args),
            crate::base::fetch::decode_untyped_reply,
            Err,
        )
    }
}

impl std::fmt::Debug for AnyStub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnyStub").field("id", self.id()).finish()
    }
}

/// Looks a class up by name.
pub(crate) fn namespace_named(shared: &Arc<Shared>, class: &str) -> Result<AnyNamespace> {
    shared
        .classes()
        .iter()
        .find(|c| c.name == class)
        .map(|c| AnyNamespace::new(shared.clone(), c.clone()))
        .ok_or_else(|| Error::NotRegistered(class.to_owned()))
}
