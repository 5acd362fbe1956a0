//! What generated code names. Not a public API: anything here may change
//! in any release.

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use futures_util::future::LocalBoxFuture;
pub use std::boxed::Box;
pub use std::rc::Rc;

pub use crate::api::alarms::alarm_args;
pub use crate::api::object::Incoming;
pub use crate::api::stub::{Call, Client, RawStub};
pub use crate::api::websocket::{
    fetch_scope, websocket_close_args, websocket_error_args, websocket_message_args,
};
use crate::base::error::Error;
pub use crate::base::fetch::encode_request;
use crate::base::fetch::{Request, Response, WireFetchReply, WireRequest, WireResponse};
pub use crate::base::wire::{MethodInfo, method_id};
/// The wire protocol's version, for tests that write frames by hand.
pub use crate::net::transport::frame::PROTOCOL_VERSION;

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
        let value = Self::decode(&mut bytes).map_err(|e| match e {
            Error::Codec(e) => Error::Codec(format!("cannot decode the result: {e}")),
            // An id or stub refused by its check: as it was refused.
            e => e,
        })?;
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
        let (value, rest) = postcard::take_from_bytes(input).map_err(|e| match e {
            // An id or stub that failed its check says why, typed.
            postcard::Error::SerdeDeCustom => {
                crate::base::passing::take_failure().unwrap_or(Error::Codec(e.to_string()))
            }
            e => Error::Codec(e.to_string()),
        })?;
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
    match e {
        Error::Codec(e) => Error::Codec(format!(
            "cannot decode the arguments of {class}::{method}: {e}"
        )),
        // An id or stub refused by its check: as it was refused.
        e => e,
    }
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

/// What a `fetch` handler returns: a [`Response`], or `Result<Response, E>`
/// with a serde error type.
#[diagnostic::on_unimplemented(
    message = "a `fetch` handler returns `do_runtime::Response` or `Result<do_runtime::Response, E>`, not `{Self}`",
    label = "the handler's result is sent back to the caller as an HTTP response",
    note = "`E` must implement serde's `Serialize` and `Deserialize`, and `From<do_runtime::Error>`"
)]
pub trait FetchWire: Sized {
    /// The response, if the handler gave one.
    fn response(&self) -> Option<&Response>;
    /// Appends the reply's encoding.
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), Error>;
    /// Decodes a whole reply.
    fn decode_reply(bytes: &[u8]) -> Result<Self, Error>;
    /// Decodes a whole reply of a handler's own `Result`, turning a decoding
    /// failure into its error type.
    fn decode_fallible(bytes: &[u8]) -> Self
    where
        Self: FallibleResult,
    {
        Self::decode_reply(bytes).unwrap_or_else(Self::from_error)
    }
}

fn encode_fetch_reply(reply: &WireFetchReply, out: &mut Vec<u8>) -> Result<(), Error> {
    let taken = std::mem::take(out);
    *out = postcard::to_extend(reply, taken).map_err(|e| Error::Codec(e.to_string()))?;
    Ok(())
}

impl FetchWire for Response {
    fn response(&self) -> Option<&Response> {
        Some(self)
    }
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        encode_fetch_reply(&WireFetchReply::Ok(WireResponse::from_response(self)), out)
    }
    fn decode_reply(bytes: &[u8]) -> Result<Self, Error> {
        crate::base::fetch::decode_untyped_reply(bytes)
    }
}

impl<E: Serialize + DeserializeOwned + 'static> FetchWire for Result<Response, E> {
    fn response(&self) -> Option<&Response> {
        self.as_ref().ok()
    }
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        let reply = match self {
            Ok(response) => WireFetchReply::Ok(WireResponse::from_response(response)),
            Err(e) => WireFetchReply::Err {
                encoded: postcard::to_stdvec(e)
                    .map_err(|e| Error::Codec(e.to_string()))?
                    .into(),
                runtime: (e as &dyn std::any::Any).downcast_ref::<Error>().cloned(),
            },
        };
        encode_fetch_reply(&reply, out)
    }
    fn decode_reply(bytes: &[u8]) -> Result<Self, Error> {
        let reply: WireFetchReply = postcard::from_bytes(bytes)
            .map_err(|e| Error::Codec(format!("cannot decode the fetch reply: {e}")))?;
        match reply {
            WireFetchReply::Ok(response) => Ok(Ok(response.into_response()?)),
            WireFetchReply::Err { encoded, .. } => postcard::from_bytes(&encoded)
                .map(Err)
                .map_err(|e| Error::Codec(format!("cannot decode the fetch handler's error: {e}"))),
        }
    }
}

/// The argument of a `fetch` handler: the request.
#[diagnostic::on_unimplemented(
    message = "a `fetch` handler takes a `do_runtime::Request`, not `{Self}`",
    label = "write `request: Request`",
    note = "`Request` is `http::Request<bytes::Bytes>`: method, URI, headers and the whole body"
)]
pub trait FetchArg: Sized {
    /// Converts the decoded request.
    fn from_request(request: Request) -> Self;
}

impl FetchArg for Request {
    fn from_request(request: Request) -> Self {
        request
    }
}

/// Takes a `fetch` call's request off the front of `input`.
pub fn decode_request(input: &mut &[u8]) -> Result<Request, Error> {
    let (wire, rest): (WireRequest, _) =
        postcard::take_from_bytes(input).map_err(|e| Error::Codec(e.to_string()))?;
    *input = rest;
    wire.into_request()
}

/// What a handler the runtime calls (WebSocket events, alarms) returns:
/// nothing, or `Result<(), E>` with a displayable error.
#[diagnostic::on_unimplemented(
    message = "a handler returns `()` or `Result<(), E>` with `E: Display`, not `{Self}`",
    label = "the runtime calls this handler; nobody receives its result"
)]
pub trait HandlerOutput {
    /// The reply: empty, or the error as [`Error::App`].
    fn into_reply(self) -> Result<Vec<u8>, Error>;
}

impl HandlerOutput for () {
    fn into_reply(self) -> Result<Vec<u8>, Error> {
        Ok(Vec::new())
    }
}

impl<E: std::fmt::Display> HandlerOutput for Result<(), E> {
    fn into_reply(self) -> Result<Vec<u8>, Error> {
        self.map(|()| Vec::new())
            .map_err(|e| Error::App(e.to_string()))
    }
}
