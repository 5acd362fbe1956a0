//! What generated code names. Not a public API: anything here may change
//! in any release.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use futures_util::future::LocalBoxFuture;
pub use std::boxed::Box;
pub use std::rc::Rc;

use crate::error::Error;
pub use crate::stub::{Call, RawStub};

/// The generated client type of a class: wraps a [`RawStub`].
pub trait Client: Clone + Send + Sync + 'static {
    /// Wraps a raw stub.
    fn from_raw(raw: RawStub) -> Self;
    /// The raw stub inside.
    fn raw(&self) -> &RawStub;
}

/// How a method's reply turns into what the stub method returns.
pub trait ReplyKind {
    /// What awaiting the call yields.
    type Output;
    /// Decodes a reply.
    fn decode(bytes: &[u8]) -> Self::Output;
    /// Turns an infrastructure error into the output.
    fn error(e: Error) -> Self::Output;
}

/// A method returning `Result<T, E>`: the caller gets `Result<T, E>`, with
/// infrastructure errors converted by `E: From<Error>`.
pub struct Fallible<R>(PhantomData<fn() -> R>);

impl<T: DeserializeOwned, E: DeserializeOwned + From<Error>> ReplyKind for Fallible<Result<T, E>> {
    type Output = Result<T, E>;
    fn decode(bytes: &[u8]) -> Result<T, E> {
        match postcard::from_bytes::<Result<T, E>>(bytes) {
            Ok(r) => r,
            Err(e) => Err(E::from(Error::Codec(format!(
                "cannot decode the result: {e}"
            )))),
        }
    }
    fn error(e: Error) -> Result<T, E> {
        Err(E::from(e))
    }
}

/// A method returning a plain `T`: the caller gets `Result<T, Error>`.
pub struct Infallible<T>(PhantomData<fn() -> T>);

impl<T: DeserializeOwned> ReplyKind for Infallible<T> {
    type Output = Result<T, Error>;
    fn decode(bytes: &[u8]) -> Result<T, Error> {
        postcard::from_bytes(bytes)
            .map_err(|e| Error::Codec(format!("cannot decode the result: {e}")))
    }
    fn error(e: Error) -> Result<T, Error> {
        Err(e)
    }
}

/// Sends one call through `raw` now and returns its future.
pub fn call<K: ReplyKind, A: Serialize>(raw: &RawStub, method: u32, args: &A) -> Call<K> {
    raw.call(method, args)
}

/// Decodes a call's arguments.
pub fn decode_args<A: DeserializeOwned>(
    class: &str,
    method: &str,
    bytes: &[u8],
) -> Result<A, Error> {
    postcard::from_bytes(bytes).map_err(|e| {
        Error::Codec(format!(
            "cannot decode the arguments of {class}::{method}: {e}"
        ))
    })
}

/// Encodes a method's result.
pub fn encode_reply<R: Serialize>(result: &R) -> Result<Vec<u8>, Error> {
    postcard::to_allocvec(result)
        .map_err(|e| Error::Codec(format!("cannot encode the result: {e}")))
}

/// The error for a method id the class does not have.
pub fn unknown_method(class: &str, method: u32) -> Error {
    Error::UnknownMethod {
        class: class.to_owned(),
        method,
    }
}

/// The wire id of a method: 32-bit FNV-1a of its name. Derived from the name
/// alone, so reordering methods never changes the wire format.
pub const fn method_id(name: &str) -> u32 {
    let bytes = name.as_bytes();
    let mut hash: u32 = 0x811c_9dc5;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u32;
        hash = hash.wrapping_mul(0x0100_0193);
        i += 1;
    }
    hash
}

/// Fails compilation when two methods of a class hash to the same id.
pub const fn assert_distinct_ids(ids: &[u32]) {
    let mut i = 0;
    while i < ids.len() {
        let mut j = i + 1;
        while j < ids.len() {
            if ids[i] == ids[j] {
                panic!("two methods of this class have the same wire id; rename one of them");
            }
            j += 1;
        }
        i += 1;
    }
}
