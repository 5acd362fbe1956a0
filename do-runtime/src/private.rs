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

/// A type that can cross a call: arguments and results. Implemented for
/// every serde type; the message below is what a user sees for any other.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot cross a Durable Object call: it is not serializable",
    label = "arguments and results must implement serde's `Serialize` and `Deserialize`",
    note = "add `#[derive(serde::Serialize, serde::Deserialize)]` to the type; calls are postcard-encoded, in process too"
)]
pub trait Wire: Sized {
    /// Appends the value's encoding.
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), Error>;
    /// Takes one value off the front of `input`.
    fn decode(input: &mut &[u8]) -> Result<Self, Error>;
}

impl<T: Serialize + DeserializeOwned> Wire for T {
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        let taken = std::mem::take(out);
        *out = postcard::to_extend(self, taken).map_err(|e| Error::Codec(e.to_string()))?;
        Ok(())
    }
    fn decode(input: &mut &[u8]) -> Result<Self, Error> {
        let (value, rest) =
            postcard::take_from_bytes(input).map_err(|e| Error::Codec(e.to_string()))?;
        *input = rest;
        Ok(value)
    }
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

/// A `Result` a method returns as its own error channel.
#[diagnostic::on_unimplemented(
    message = "the error type of `{Self}` must implement `From<do_runtime::Error>`",
    label = "a method returning `Result<T, E>` hands `E` to the caller, so failures on the way (a broken stub, an overloaded object, a panic) must convert into `E`",
    note = "implement `From<do_runtime::Error>` for the error type, or return `Result<T, do_runtime::Error>`"
)]
pub trait FallibleResult: Sized {
    /// Builds the error value from an infrastructure failure.
    fn from_error(e: Error) -> Self;
}

impl<T, E: From<Error>> FallibleResult for Result<T, E> {
    fn from_error(e: Error) -> Self {
        Err(E::from(e))
    }
}

/// A method returning `Result<T, E>`: the caller gets `Result<T, E>`, with
/// infrastructure errors converted by `E: From<Error>`.
pub struct Fallible<R>(PhantomData<fn() -> R>);

impl<R: FallibleResult + Wire> ReplyKind for Fallible<R> {
    type Output = R;
    fn decode(bytes: &[u8]) -> R {
        decode_whole::<R>(bytes).unwrap_or_else(R::from_error)
    }
    fn error(e: Error) -> R {
        R::from_error(e)
    }
}

/// A method returning a plain `T`: the caller gets `Result<T, Error>`.
pub struct Infallible<T>(PhantomData<fn() -> T>);

impl<T: Wire> ReplyKind for Infallible<T> {
    type Output = Result<T, Error>;
    fn decode(bytes: &[u8]) -> Result<T, Error> {
        decode_whole(bytes)
    }
    fn error(e: Error) -> Result<T, Error> {
        Err(e)
    }
}

/// A whole reply: one value and nothing after it.
fn decode_whole<T: Wire>(mut bytes: &[u8]) -> Result<T, Error> {
    let value = T::decode(&mut bytes)
        .map_err(|e| Error::Codec(format!("cannot decode the result: {e}")))?;
    if !bytes.is_empty() {
        return Err(Error::Codec(format!(
            "{} bytes left over after the result",
            bytes.len()
        )));
    }
    Ok(value)
}

/// Sends one call, whose arguments are already encoded, through `raw` now
/// and returns its future.
pub fn call<K: ReplyKind>(raw: &RawStub, method: u32, args: Result<Vec<u8>, Error>) -> Call<K> {
    raw.call(method, args)
}

/// The error for arguments that do not decode.
pub fn bad_args(class: &str, method: &str, e: Error) -> Error {
    Error::Codec(format!(
        "cannot decode the arguments of {class}::{method}: {e}"
    ))
}

/// The error for a result that does not encode.
pub fn bad_result(e: Error) -> Error {
    Error::Codec(format!("cannot encode the result: {e}"))
}

/// Checks that a call's arguments were consumed exactly.
pub fn finish_args(class: &str, method: &str, input: &[u8]) -> Result<(), Error> {
    if input.is_empty() {
        Ok(())
    } else {
        Err(Error::Codec(format!(
            "{} bytes left over after the arguments of {class}::{method}",
            input.len()
        )))
    }
}

/// Encodes a method's result.
pub fn encode_reply<R: Wire>(result: &R) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    result
        .encode(&mut out)
        .map_err(|e| Error::Codec(format!("cannot encode the result: {e}")))?;
    Ok(out)
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
