//! How the gateway picks an object for a request, and how errors become
//! HTTP answers.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use http::StatusCode;

use crate::api::env::Env;
use crate::base::error::Error;
use crate::base::fetch::{Request, Response};

/// The boxed future a router returns.
pub type RouteFuture = Pin<Box<dyn Future<Output = Result<Response, Error>> + Send>>;

/// A routing function: the role a Worker's `fetch(request, env)` plays in
/// front of Durable Objects. It picks a namespace and an object for the
/// request, usually forwarding it to the object's `fetch`, and may answer by
/// itself (a static page, a redirect).
pub(crate) type Router = dyn Fn(Request, Env) -> RouteFuture + Send + Sync;

/// The gateway's default routing: `/{class}/{name}/{rest}` goes to
/// `env.namespace_named(class).get_by_name(name).fetch(…)` with the path
/// `/{rest}` (and the query unchanged). `{name}` is percent-decoded.
///
/// A custom router can fall back to it:
///
/// ```no_run
/// # async fn f(rt: do_runtime::Runtime) -> Result<(), do_runtime::Error> {
/// use do_runtime::gateway::default_route;
/// use do_runtime::Response;
///
/// let gateway = rt
///     .gateway()
///     .route(|request, env| async move {
///         if request.uri().path() == "/" {
///             return Ok(Response::new("index".into()));
///         }
///         default_route(request, env).await
///     })
///     .start()
///     .await?;
/// # Ok(()) }
/// ```
pub async fn default_route(request: Request, env: Env) -> Result<Response, Error> {
    let (class, name, request) = split_default_path(request)?;
    env.namespace_named(&class)?
        .get_by_name(&name)
        .fetch(request)
        .await
}

/// Takes `/{class}/{name}` off the front of the request's path.
fn split_default_path(mut request: Request) -> Result<(String, String, Request), Error> {
    let usage = || {
        Error::BadRequest(format!(
            "no object in the path {:?}: expected /{{class}}/{{name}}/…",
            request.uri().path()
        ))
    };
    let path = request.uri().path().to_owned();
    let mut parts = path.trim_start_matches('/').splitn(3, '/');
    let class = parts.next().filter(|s| !s.is_empty()).ok_or_else(usage)?;
    let name = parts.next().filter(|s| !s.is_empty()).ok_or_else(usage)?;
    let rest = parts.next().unwrap_or("");
    let class = percent_decode(class)?;
    let name = percent_decode(name)?;
    let path_and_query = match request.uri().query() {
        Some(query) => format!("/{rest}?{query}"),
        None => format!("/{rest}"),
    };
    let mut uri = http::Uri::builder().path_and_query(path_and_query);
    if let (Some(scheme), Some(authority)) = (request.uri().scheme(), request.uri().authority()) {
        uri = uri.scheme(scheme.clone()).authority(authority.clone());
    }
    *request.uri_mut() = uri
        .build()
        .map_err(|e| Error::BadRequest(format!("cannot rebuild the URI: {e}")))?;
    Ok((class, name, request))
}

/// Decodes `%XX` escapes; the result must be UTF-8.
pub(super) fn percent_decode(text: &str) -> Result<String, Error> {
    let bad = || Error::BadRequest(format!("invalid percent-encoding in {text:?}"));
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
            let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// The HTTP answer to an error: a 4xx with a one-line reason for a bad
/// request, a 5xx without internal details for a failure inside an object.
pub(crate) fn error_response(error: &Error) -> Response {
    let (status, reason) = match error {
        Error::BadRequest(_) | Error::InvalidId(_) | Error::WrongNamespace { .. } => {
            (StatusCode::BAD_REQUEST, error.to_string())
        }
        Error::NotRegistered(class) => (StatusCode::NOT_FOUND, format!("no class named {class:?}")),
        Error::UnknownMethod { class, .. } => (
            StatusCode::NOT_FOUND,
            format!("objects of class {class} do not serve HTTP (no fetch handler)"),
        ),
        Error::WebSocketLimit(_) => (StatusCode::TOO_MANY_REQUESTS, error.to_string()),
        Error::Overloaded(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the object is overloaded; retry later".to_owned(),
        ),
        Error::Disconnected(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the object is unavailable; retry later".to_owned(),
        ),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error".to_owned(),
        ),
    };
    plain(status, reason)
}

/// A `text/plain` response of one line.
pub(crate) fn plain(status: StatusCode, line: String) -> Response {
    let mut response = Response::new(Bytes::from(line + "\n"));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("1"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(uri: &str) -> Result<(String, String, String), Error> {
        let request = http::Request::builder()
            .uri(uri)
            .body(Bytes::new())
            .map_err(|e| Error::BadRequest(e.to_string()))?;
        let (class, name, request) = split_default_path(request)?;
        Ok((class, name, request.uri().to_string()))
    }

    #[test]
    fn the_default_route_takes_class_and_name_off_the_path() {
        let (class, name, rest) = split("/Room/lobby/a/b?x=1").expect("routes");
        assert_eq!(
            (class.as_str(), name.as_str(), rest.as_str()),
            ("Room", "lobby", "/a/b?x=1")
        );
        let (_, name, rest) = split("/Room/big%20room").expect("routes");
        assert_eq!((name.as_str(), rest.as_str()), ("big room", "/"));
        let (_, _, rest) = split("http://host/Room/x/y").expect("routes");
        assert_eq!(rest, "http://host/y");
    }

    #[test]
    fn paths_without_an_object_are_bad_requests() {
        for uri in ["/", "/Room", "/Room/", "//x", "/Room/%zz/", "/Room/%ff/"] {
            assert!(matches!(split(uri), Err(Error::BadRequest(_))), "{uri}");
        }
    }
}
