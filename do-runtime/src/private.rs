//! What generated code names. Not a public API: anything here may change
//! in any release.

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

    /// Decodes a whole reply: one value and nothing after it.
    fn decode_reply(mut bytes: &[u8]) -> Result<Self, Error> {
        let value = Self::decode(&mut bytes)
            .map_err(|e| Error::Codec(format!("cannot decode the result: {e}")))?;
        if !bytes.is_empty() {
            return Err(Error::Codec(format!(
                "{} bytes left over after the result",
                bytes.len()
            )));
        }
        Ok(value)
    }

    /// Decodes a whole reply of a method's own `Result`, turning a decoding
    /// failure into its error type.
    fn decode_fallible(bytes: &[u8]) -> Self
    where
        Self: FallibleResult,
    {
        Self::decode_reply(bytes).unwrap_or_else(Self::from_error)
    }
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

/// A `Result` a method returns as its own error channel.
#[diagnostic::on_unimplemented(
    message = "the error type of `{Self}` must implement `From<do_runtime::Error>`",
    label = "failures on the way (a broken stub, an overloaded object, a panic) reach the caller as this error type",
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

/// Sends one call, whose arguments are already encoded, through `raw` now
/// and returns its future, which yields `decode(reply)` or `fail(error)`.
pub fn call<O>(
    raw: &RawStub,
    method: u32,
    args: Result<Vec<u8>, Error>,
    decode: fn(&[u8]) -> O,
    fail: fn(Error) -> O,
) -> Call<O> {
    raw.call(method, args, decode, fail)
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
