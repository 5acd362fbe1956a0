//! What users write and call: the `DurableObject` trait, `Ctx`, `Env`,
//! `Storage`, namespaces, stubs and calls, WebSockets, listing, alarms.
//! Imports `engine` and `base`; the network reaches it through the traits in
//! [`remote`] that `net` implements.

pub(crate) mod alarms;
pub(crate) mod ctx;
pub(crate) mod dump;
pub(crate) mod env;
pub(crate) mod listing;
pub(crate) mod namespace;
pub(crate) mod object;
pub(crate) mod passing;
pub(crate) mod remote;
pub(crate) mod storage;
pub(crate) mod stub;
pub(crate) mod untyped;
pub(crate) mod values;
pub mod websocket;
