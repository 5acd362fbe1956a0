//! HTTP requests to an object's `fetch` handler: the request and response
//! types, what a stub's `fetch` accepts, and their form on the wire.
//!
//! An object that defines `pub async fn fetch(&self, request: Request) ->
//! Response` (or `-> Result<Response, E>`) can be sent HTTP requests: through
//! its stub (`stub.fetch(request)` or `stub.fetch("http://do/path")`), in
//! process or through a remote client, and, with the `gateway` feature, from
//! any HTTP client through [`Runtime::gateway`](crate::Runtime::gateway).
//!
//! ```
//! # fn main() -> Result<(), do_runtime::Error> {
//! # let dir = tempfile::tempdir().unwrap();
//! # let tokio = tokio::runtime::Runtime::new().unwrap();
//! # tokio.block_on(async {
//! use do_runtime::{durable_object, Ctx, Request, Response, Runtime};
//!
//! pub struct Echo { ctx: Ctx }
//!
//! #[durable_object]
//! impl Echo {
//!     pub fn new(ctx: Ctx) -> Self { Self { ctx } }
//!
//!     pub async fn fetch(&self, request: Request) -> Response {
//!         let text = format!("{} {}", request.method(), request.uri().path());
//!         Response::new(text.into())
//!     }
//! }
//!
//! let rt = Runtime::builder().data_dir(dir.path()).register::<Echo>().build()?;
//! let echo = rt.namespace::<Echo>().get_by_name("a");
//! let response = echo.fetch("http://do/hello?x=1").await?;
//! assert_eq!(response.body().as_ref(), b"GET /hello");
//! # Ok::<_, do_runtime::Error>(()) })?;
//! # Ok(()) }
//! ```

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

use crate::base::error::Error;

/// The internal response headers that hand a WebSocket an object accepted
/// to the gateway: the socket's number and its token (see
/// `engine::sockets`).
pub(crate) const SOCKET_HEADER: &str = "x-durable-object-websocket";
pub(crate) const TOKEN_HEADER: &str = "x-durable-object-websocket-token";

/// A WebSocket accepted by an object of another runtime, whose response
/// came back through a connection to that runtime: what lets a gateway
/// complete it (the response carries it as a [`Relayed`] extension).
#[cfg_attr(not(feature = "gateway"), allow(dead_code))]
pub(crate) trait SocketRelay: Send + Sync {
    /// Takes over socket `socket` (with its `token`) on the other runtime:
    /// `inbound` carries the bytes the WebSocket's client sends; the
    /// answer, the bytes the other runtime sends it. Refused when no such
    /// socket waits there (claimed, closed or expired).
    fn claim(
        &self,
        socket: u64,
        token: u128,
        inbound: crate::base::streaming::BodyStream,
    ) -> futures_util::future::BoxFuture<'static, Result<crate::base::streaming::BodyStream, Error>>;
}

/// The extension a response decoded from another runtime carries when it
/// hands over a WebSocket (see [`SocketRelay`]).
#[derive(Clone)]
#[cfg_attr(not(feature = "gateway"), allow(dead_code))]
pub(crate) struct Relayed(pub std::sync::Arc<dyn SocketRelay>);

/// The socket number and token a response hands over, if it does.
pub(crate) fn handed_over(response: &Response) -> Option<(u64, u128)> {
    let header = |name| response.headers().get(name)?.to_str().ok();
    let id: u64 = header(SOCKET_HEADER)?.parse().ok()?;
    let token = u128::from_str_radix(header(TOKEN_HEADER)?, 16).ok()?;
    Some((id, token))
}

/// An HTTP request to an object: the `http` crate's request with the whole
/// body in memory.
pub type Request = http::Request<Bytes>;

/// An object's HTTP response: the `http` crate's response with the whole
/// body in memory.
pub type Response = http::Response<Bytes>;

/// What a stub's `fetch` accepts: a [`Request`] (or an `http::Request` with
/// a `Vec<u8>`, `String`, `&'static str` or `()` body), or a URL, sent as a
/// `GET` with no body. The URL needs no resolvable host: `http://do/path`.
pub trait IntoRequest {
    /// The request, or [`Error::BadRequest`] for a URL that does not parse.
    fn into_request(self) -> Result<Request, Error>;
}

impl IntoRequest for Request {
    fn into_request(self) -> Result<Request, Error> {
        Ok(self)
    }
}

impl IntoRequest for http::Request<Vec<u8>> {
    fn into_request(self) -> Result<Request, Error> {
        Ok(self.map(Bytes::from))
    }
}

impl IntoRequest for http::Request<String> {
    fn into_request(self) -> Result<Request, Error> {
        Ok(self.map(Bytes::from))
    }
}

impl IntoRequest for http::Request<&'static str> {
    fn into_request(self) -> Result<Request, Error> {
        Ok(self.map(|s| Bytes::from_static(s.as_bytes())))
    }
}

impl IntoRequest for http::Request<()> {
    fn into_request(self) -> Result<Request, Error> {
        Ok(self.map(|()| Bytes::new()))
    }
}

impl IntoRequest for &str {
    fn into_request(self) -> Result<Request, Error> {
        let uri: http::Uri = self
            .parse()
            .map_err(|e| Error::BadRequest(format!("invalid URL {self:?}: {e}")))?;
        uri.into_request()
    }
}

impl IntoRequest for String {
    fn into_request(self) -> Result<Request, Error> {
        self.as_str().into_request()
    }
}

impl IntoRequest for &String {
    fn into_request(self) -> Result<Request, Error> {
        self.as_str().into_request()
    }
}

impl IntoRequest for http::Uri {
    fn into_request(self) -> Result<Request, Error> {
        let mut request = Request::new(Bytes::new());
        *request.uri_mut() = self;
        Ok(request)
    }
}

/// A request as it crosses a call.
#[derive(Serialize, Deserialize)]
pub(crate) struct WireRequest {
    method: String,
    uri: String,
    headers: Vec<(String, Bytes)>,
    body: Bytes,
    /// The number of its streamed body in this process's table (see
    /// `base::streaming`), if it has one.
    stream: Option<u64>,
}

/// A response as it crosses a call.
#[derive(Serialize, Deserialize)]
pub(crate) struct WireResponse {
    status: u16,
    headers: Vec<(String, Bytes)>,
    body: Bytes,
    /// The number of its streamed body in this process's table (see
    /// `base::streaming`), if it has one.
    stream: Option<u64>,
}

/// What a `fetch` call replies: a response, or the handler's own error,
/// encoded with its type's serde form, and as itself when it is an [`Error`]
/// (so callers that do not know the type still see it).
#[derive(Serialize, Deserialize)]
pub(crate) enum WireFetchReply {
    Ok(WireResponse),
    Err {
        encoded: Bytes,
        runtime: Option<Error>,
    },
}

fn wire_headers(headers: &http::HeaderMap) -> Vec<(String, Bytes)> {
    headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                Bytes::copy_from_slice(value.as_bytes()),
            )
        })
        .collect()
}

/// The most headers a request or response may carry across a call.
const MAX_HEADERS: usize = 1024;

fn header_map(headers: Vec<(String, Bytes)>) -> Result<http::HeaderMap, Error> {
    if headers.len() > MAX_HEADERS {
        return Err(Error::Codec(format!(
            "{} headers; at most {MAX_HEADERS} cross a call",
            headers.len()
        )));
    }
    let mut map = http::HeaderMap::try_with_capacity(headers.len())
        .map_err(|e| Error::Codec(format!("too many headers: {e}")))?;
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| Error::Codec(format!("invalid header name {name:?}: {e}")))?;
        let value = HeaderValue::from_maybe_shared(value)
            .map_err(|e| Error::Codec(format!("invalid value of header {name}: {e}")))?;
        map.try_append(name, value)
            .map_err(|e| Error::Codec(format!("too many headers: {e}")))?;
    }
    Ok(map)
}

impl WireRequest {
    pub(crate) fn from_request(request: Request) -> Self {
        let stream = crate::base::streaming::register(&request);
        let (parts, body) = request.into_parts();
        WireRequest {
            method: parts.method.as_str().to_owned(),
            uri: parts.uri.to_string(),
            headers: wire_headers(&parts.headers),
            body,
            stream,
        }
    }

    /// The streamed body's number encoded request `bytes` names, if any.
    fn stream_of(bytes: &[u8]) -> Option<u64> {
        // Without one, the encoding ends with the `None` of its number.
        if bytes.last() == Some(&0) {
            return None;
        }
        postcard::from_bytes::<WireRequest>(bytes).ok()?.stream
    }

    /// Whether encoded request `bytes` names a streamed body.
    pub(crate) fn names_stream(bytes: &[u8]) -> bool {
        Self::stream_of(bytes).is_some()
    }

    /// Encoded request `bytes` naming streamed body `n`, encoded again
    /// with the number `renumber(n)` gives instead; `None` when it names
    /// none, or `renumber` gives none.
    pub(crate) fn restate_stream(
        bytes: &[u8],
        renumber: impl FnOnce(u64) -> Option<u64>,
    ) -> Option<Vec<u8>> {
        let mut request: WireRequest = postcard::from_bytes(bytes).ok()?;
        request.stream = Some(renumber(request.stream?)?);
        postcard::to_stdvec(&request).ok()
    }

    pub(crate) fn into_request(self) -> Result<Request, Error> {
        let method = http::Method::from_bytes(self.method.as_bytes())
            .map_err(|e| Error::Codec(format!("invalid method {:?}: {e}", self.method)))?;
        let uri: http::Uri = self
            .uri
            .parse()
            .map_err(|e| Error::Codec(format!("invalid URI {:?}: {e}", self.uri)))?;
        let mut request = Request::new(self.body);
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.headers_mut() = header_map(self.headers)?;
        if let Some(number) = self.stream {
            let body = crate::base::passing::claim_stream(number)?;
            crate::base::streaming::attach(&mut request, body);
        }
        Ok(request)
    }
}

impl WireResponse {
    pub(crate) fn from_response(response: &Response) -> Self {
        WireResponse {
            status: response.status().as_u16(),
            headers: wire_headers(response.headers()),
            body: response.body().clone(),
            stream: crate::base::streaming::register(response),
        }
    }

    pub(crate) fn into_response(self) -> Result<Response, Error> {
        let status = http::StatusCode::from_u16(self.status)
            .map_err(|e| Error::Codec(format!("invalid status {}: {e}", self.status)))?;
        let mut response = Response::new(self.body);
        *response.status_mut() = status;
        *response.headers_mut() = header_map(self.headers)?;
        if let Some(number) = self.stream {
            let body = crate::base::passing::claim_stream(number)?;
            crate::base::streaming::attach(&mut response, body);
        }
        // A WebSocket handed over from another runtime: the way to it.
        if status == http::StatusCode::SWITCHING_PROTOCOLS
            && response.headers().contains_key(SOCKET_HEADER)
            && let Some(relay) = crate::base::passing::socket_relay()
        {
            response.extensions_mut().insert(Relayed(relay));
        }
        Ok(response)
    }
}

/// An encoded `fetch` reply whose response carries streamed body `n`,
/// encoded again with the number `renumber(n)` gives instead; `None` when
/// it carries none, or `renumber` gives none.
pub(crate) fn restate_stream(
    bytes: &[u8],
    renumber: impl FnOnce(u64) -> Option<u64>,
) -> Option<Vec<u8>> {
    // `Ok` is the reply's first variant: an error reply carries no body.
    if bytes.first() != Some(&0) {
        return None;
    }
    let mut reply: WireFetchReply = postcard::from_bytes(bytes).ok()?;
    let WireFetchReply::Ok(response) = &mut reply else {
        return None;
    };
    response.stream = Some(renumber(response.stream?)?);
    postcard::to_stdvec(&reply).ok()
}

/// The streamed body's number an encoded `fetch` reply names, if any.
pub(crate) fn stream_of_reply(bytes: &[u8]) -> Option<u64> {
    if bytes.first() != Some(&0) {
        return None;
    }
    match postcard::from_bytes::<WireFetchReply>(bytes).ok()? {
        WireFetchReply::Ok(response) => response.stream,
        WireFetchReply::Err { .. } => None,
    }
}

/// Decodes a whole `fetch` reply for a caller that knows no error type: the
/// handler's own error becomes [`Error::App`].
pub(crate) fn decode_untyped_reply(bytes: &[u8]) -> Result<Response, Error> {
    let reply: WireFetchReply = postcard::from_bytes(bytes)
        .map_err(|e| Error::Codec(format!("cannot decode the fetch reply: {e}")))?;
    match reply {
        WireFetchReply::Ok(response) => response.into_response(),
        // A bad request stays one; any other error the handler returned is a
        // failure inside the object, whatever it says.
        WireFetchReply::Err { runtime, .. } => Err(match runtime {
            Some(e @ (Error::BadRequest(_) | Error::WebSocketLimit(_))) => e,
            Some(Error::App(message)) => Error::App(message),
            Some(e) => Error::App(format!("the fetch handler failed: {e}")),
            None => Error::App("the fetch handler returned an error".into()),
        }),
    }
}

/// Encodes a `fetch` call's request.
pub fn encode_request(request: impl IntoRequest, out: &mut Vec<u8>) -> Result<(), Error> {
    let request = request.into_request()?;
    let taken = std::mem::take(out);
    *out = postcard::to_extend(&WireRequest::from_request(request), taken)
        .map_err(|e| Error::Codec(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_crosses_the_wire_unchanged() {
        let request = http::Request::builder()
            .method("PATCH")
            .uri("http://do/a/b?c=d&e=%20f")
            .header("x-one", "1")
            .header("x-many", "a")
            .header("x-many", "b")
            .body(Bytes::from_static(b"\x00\xffbody"))
            .expect("a valid request");
        let bytes = postcard::to_stdvec(&WireRequest::from_request(request)).expect("encodes");
        let back = postcard::from_bytes::<WireRequest>(&bytes)
            .expect("decodes")
            .into_request()
            .expect("valid");
        assert_eq!(back.method(), "PATCH");
        assert_eq!(back.uri(), "http://do/a/b?c=d&e=%20f");
        assert_eq!(back.headers()["x-one"], "1");
        let many: Vec<_> = back.headers().get_all("x-many").iter().collect();
        assert_eq!(many, ["a", "b"]);
        assert_eq!(back.body().as_ref(), b"\x00\xffbody");
    }

    #[test]
    fn a_url_that_does_not_parse_is_a_bad_request() {
        assert!(matches!(
            "http://exa mple/".into_request(),
            Err(Error::BadRequest(_))
        ));
        let request = "http://do/path?q=1".into_request().expect("parses");
        assert_eq!(request.method(), "GET");
        assert_eq!(request.uri().path(), "/path");
    }
}
