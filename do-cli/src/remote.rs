//! The admin API of a running server, over HTTP/1.1.

use do_runtime::bytes::Bytes;
use do_runtime::http;
use do_runtime::{DisconnectReason, Error};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// A server's admin API.
pub(crate) struct Admin {
    authority: String,
    token: Option<String>,
}

impl Admin {
    pub(crate) fn new(url: &str, token: Option<String>) -> Result<Admin, Error> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| Error::BadRequest(format!("invalid server URL {url:?}: {e}")))?;
        if uri.scheme_str().is_some_and(|s| s != "http") {
            return Err(Error::BadRequest(format!(
                "the server URL must be http://HOST:PORT, not {url:?}"
            )));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| Error::BadRequest(format!("no host in the server URL {url:?}")))?
            .to_string();
        Ok(Admin { authority, token })
    }

    async fn send(
        &self,
        method: http::Method,
        path: &str,
        body: String,
    ) -> Result<(http::StatusCode, String), Error> {
        let stream = tokio::net::TcpStream::connect(&self.authority)
            .await
            .map_err(|e| {
                Error::disconnected(
                    DisconnectReason::ConnectionLost,
                    format!("cannot connect to {}: {e}", self.authority),
                )
            })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Error::Protocol(format!("HTTP handshake with {}: {e}", self.authority)))?;
        tokio::spawn(connection);
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, &self.authority);
        if let Some(token) = &self.token {
            request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| Error::BadRequest(format!("cannot build the request: {e}")))?;
        let response = sender.send_request(request).await.map_err(|e| {
            Error::disconnected(
                DisconnectReason::ConnectionLost,
                format!("the request to {} failed: {e}", self.authority),
            )
        })?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| {
                Error::disconnected(
                    DisconnectReason::ConnectionLost,
                    format!("reading the answer failed: {e}"),
                )
            })?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    async fn json(&self, method: http::Method, path: &str, body: String) -> Result<Value, Error> {
        let (status, text) = self.send(method, path, body).await?;
        let value: Value = serde_json::from_str(&text).map_err(|_| {
            Error::Protocol(format!(
                "the server answered {status} without JSON; is its admin API on? ({})",
                text.trim()
            ))
        })?;
        if status.is_success() {
            return Ok(value);
        }
        let message = value["error"]
            .as_str()
            .unwrap_or("no reason given")
            .to_owned();
        Err(match status {
            http::StatusCode::UNAUTHORIZED => Error::Refused(format!("{message} (check --token)")),
            http::StatusCode::NOT_FOUND => Error::NotRegistered(message),
            s if s.is_client_error() => Error::BadRequest(message),
            _ => Error::App(format!("the server failed: {message}")),
        })
    }

    pub(crate) async fn get_json(&self, path: &str) -> Result<Value, Error> {
        self.json(http::Method::GET, path, String::new()).await
    }

    pub(crate) async fn post_json(&self, path: &str, body: String) -> Result<Value, Error> {
        self.json(http::Method::POST, path, body).await
    }

    pub(crate) async fn delete_json(&self, path: &str) -> Result<Value, Error> {
        self.json(http::Method::DELETE, path, String::new()).await
    }

    pub(crate) async fn get_text(&self, path: &str) -> Result<String, Error> {
        let (status, text) = self.send(http::Method::GET, path, String::new()).await?;
        if status.is_success() {
            Ok(text)
        } else {
            // The error is JSON: reuse its mapping.
            self.json(http::Method::GET, path, String::new())
                .await
                .map(|_| text)
        }
    }
}

/// Percent-encodes a path segment or query value.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
