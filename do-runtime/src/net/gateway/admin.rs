//! The admin API: JSON endpoints for tools, behind a bearer token, off
//! unless configured ([`GatewayBuilder::admin`](super::GatewayBuilder::admin)).
//!
//! | method and path | answer |
//! |---|---|
//! | `GET /admin/namespaces` | `{"namespaces": [{"class": "Counter"}, …]}` |
//! | `GET /admin/namespaces/{class}/objects?cursor=…&limit=…` | `{"objects": [{"id", "name", "hasStoredData"}, …], "cursor"}` |
//! | `GET /admin/namespaces/{class}/objects/{id or name}` | `{"id", "name", "alarm", "entries": [{"key", "value", "text"}]}` |
//! | `GET /admin/namespaces/{class}/objects/{id or name}/export` | JSON lines of [`Record`]s |
//! | `DELETE /admin/namespaces/{class}/objects/{id or name}` | `{"deleted": n}` |
//! | `POST /admin/import?keepUniqueIds=true` (JSON lines of [`Record`]s; the query is optional, see [`ImportOptions`]) | `{"written": n}` |
//! | `GET /admin/cluster` (a member of a cluster) | `{"shards", "unowned", "misplaced", "members": [{"name", "address", "owned", "placed"}], "owners": [{"shard", "node", "epoch"}]}` |

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use crate::api::dump::{ImportOptions, ObjectDump, Record, ValueView};
use crate::api::env::Env;
use crate::api::listing::ListIds;
use crate::base::error::Error;
use crate::base::fetch::{Request, Response};

/// The cluster as the runtime knows it, for `GET /admin/cluster` (`None`:
/// it is no member of a cluster), read when asked for.
#[cfg(feature = "cluster")]
pub(super) type ClusterView = do_cluster::ClusterView;
/// Without the `cluster` feature a runtime is never one of a cluster.
#[cfg(not(feature = "cluster"))]
pub(super) type ClusterView = std::convert::Infallible;

/// Answers a request under `/admin/`.
pub(super) async fn handle(
    token: &str,
    env: &Env,
    cluster: &(dyn Fn() -> Option<ClusterView> + Sync),
    request: Request,
) -> Response {
    if !authorized(token, &request) {
        let mut response = json_response(
            StatusCode::UNAUTHORIZED,
            &json!({"error": "a valid `authorization: Bearer <token>` header is required"}),
        );
        response.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        );
        return response;
    }
    match route(env, cluster, request).await {
        Ok(response) => response,
        Err(e) => {
            let status = super::route::error_response(&e).status();
            let message = if status.is_server_error() {
                "internal error".to_owned()
            } else {
                e.to_string()
            };
            json_response(status, &json!({ "error": message }))
        }
    }
}

/// Whether `request` carries `authorization: Bearer {token}`. The scheme
/// is matched case-insensitively (RFC 9110); a missing or malformed header,
/// or an empty token, never matches (the gateway refuses to start with an
/// empty token anyway).
fn authorized(token: &str, request: &Request) -> bool {
    let Some(header) = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some((scheme, given)) = header.split_once(' ') else {
        return false;
    };
    let given = given.trim_start_matches(' ');
    scheme.eq_ignore_ascii_case("bearer")
        && !token.is_empty()
        && !given.is_empty()
        && given.len() == token.len()
        && bool::from(given.as_bytes().ct_eq(token.as_bytes()))
}

async fn route(
    env: &Env,
    cluster: &(dyn Fn() -> Option<ClusterView> + Sync),
    request: Request,
) -> Result<Response, Error> {
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or("").to_owned();
    let parts: Vec<&str> = path
        .trim_start_matches("/admin/")
        .split('/')
        .filter(|p| !p.is_empty())
        .collect();
    let method = request.method().clone();
    match (method, parts.as_slice()) {
        (Method::GET, ["namespaces"]) => {
            let namespaces: Vec<Value> = env
                .namespaces()
                .into_iter()
                .map(|class| json!({ "class": class }))
                .collect();
            Ok(json_response(
                StatusCode::OK,
                &json!({ "namespaces": namespaces }),
            ))
        }
        (Method::GET, ["cluster"]) => match cluster() {
            #[cfg(feature = "cluster")]
            Some(view) => Ok(json_response(StatusCode::OK, &cluster_json(&view))),
            #[cfg(not(feature = "cluster"))]
            Some(never) => match never {},
            None => Ok(json_response(
                StatusCode::NOT_FOUND,
                &json!({ "error": "this runtime is not a member of a cluster" }),
            )),
        },
        (Method::GET, ["namespaces", class, "objects"]) => {
            let ns = env.namespace_named(class)?;
            let mut options = ListIds::new();
            for (key, value) in query.split('&').filter_map(|kv| kv.split_once('=')) {
                match key {
                    "cursor" => options = options.cursor(value),
                    "limit" => {
                        let limit = value
                            .parse()
                            .map_err(|_| Error::BadRequest(format!("invalid limit {value:?}")))?;
                        options = options.limit(limit);
                    }
                    _ => {}
                }
            }
            let page = ns.list_ids(options).await?;
            let objects: Vec<Value> = page
                .objects
                .iter()
                .map(|o| {
                    json!({
                        "id": o.id.to_string(),
                        "name": o.name,
                        "hasStoredData": o.has_stored_data,
                    })
                })
                .collect();
            Ok(json_response(
                StatusCode::OK,
                &json!({ "objects": objects, "cursor": page.cursor }),
            ))
        }
        (Method::GET, ["namespaces", class, "objects", id]) => {
            let ns = env.namespace_named(class)?;
            let id = parse_id(&ns, id)?;
            let dump = ns.show(&id).await?;
            Ok(json_response(StatusCode::OK, &dump_json(&dump)))
        }
        (Method::GET, ["namespaces", class, "objects", id, "export"]) => {
            let ns = env.namespace_named(class)?;
            let id = parse_id(&ns, id)?;
            let dump = ns.show(&id).await?;
            let mut body = Vec::new();
            for record in dump.records(ns.class_name()) {
                serde_json::to_writer(&mut body, &record)
                    .map_err(|e| Error::Codec(e.to_string()))?;
                body.push(b'\n');
            }
            let mut response = Response::new(Bytes::from(body));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/x-ndjson"),
            );
            Ok(response)
        }
        (Method::DELETE, ["namespaces", class, "objects", id]) => {
            let ns = env.namespace_named(class)?;
            let id = parse_id(&ns, id)?;
            let deleted = ns.delete_object(&id).await?;
            Ok(json_response(
                StatusCode::OK,
                &json!({ "deleted": deleted }),
            ))
        }
        (Method::POST, ["import"]) => {
            let text = std::str::from_utf8(request.body())
                .map_err(|_| Error::BadRequest("the body is not UTF-8".into()))?;
            let mut options = ImportOptions::new();
            for (key, value) in query.split('&').filter_map(|kv| kv.split_once('=')) {
                if key == "keepUniqueIds" {
                    options = options.keep_unique_ids(value == "true");
                }
            }
            let mut written = 0;
            for records in group_by_object(parse_records(text)?) {
                let ns = env.namespace_named(&records[0].class)?;
                let id = ns.import_id(&records[0], options)?;
                written += ns.import(&id, records).await?;
            }
            Ok(json_response(
                StatusCode::OK,
                &json!({ "written": written }),
            ))
        }
        _ => Err(Error::BadRequest(format!("no admin endpoint {path}"))),
    }
}

/// A cluster's view as JSON: what `do-cli cluster status` prints.
#[cfg(feature = "cluster")]
fn cluster_json(view: &ClusterView) -> Value {
    let members: Vec<Value> = view
        .members
        .iter()
        .map(|m| {
            json!({
                "name": m.name,
                "address": m.address,
                "owned": m.owned,
                "placed": m.placed,
            })
        })
        .collect();
    let owners: Vec<Value> = view
        .owners
        .iter()
        .map(|(shard, owner)| json!({ "shard": shard, "node": owner.node, "epoch": owner.epoch }))
        .collect();
    json!({
        "shards": view.shards,
        "unowned": view.unowned,
        "misplaced": view.misplaced,
        "members": members,
        "owners": owners,
    })
}

/// An id in its text form, or else a name.
fn parse_id(
    ns: &crate::api::untyped::AnyNamespace,
    text: &str,
) -> Result<crate::base::id::DurableObjectId, Error> {
    let text = super::route::percent_decode(text)?;
    if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        ns.id_from_string(&text)
    } else {
        Ok(ns.id_from_name(&text))
    }
}

/// The records of an export (JSON lines); a bad line is a
/// [`Error::BadRequest`] naming it.
pub fn parse_records(text: &str) -> Result<Vec<Record>, Error> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            serde_json::from_str(line).map_err(|e| {
                Error::BadRequest(format!("line {}: not an export record: {e}", n + 1))
            })
        })
        .collect()
}

/// Records grouped by object (each group non-empty), in the order objects
/// first appear.
pub fn group_by_object(records: Vec<Record>) -> Vec<Vec<Record>> {
    let mut groups: Vec<Vec<Record>> = Vec::new();
    for record in records {
        match groups
            .iter_mut()
            .find(|g| g[0].class == record.class && g[0].id == record.id)
        {
            Some(group) => group.push(record),
            None => groups.push(vec![record]),
        }
    }
    groups
}

/// An object's state as JSON: `id`, `name`, `alarm` (ms since the Unix
/// epoch) and `entries` (`key`, `value` in hex, `raw` when it is raw bytes,
/// `text` when it is a string).
pub fn dump_json(dump: &ObjectDump) -> Value {
    let entries: Vec<Value> = dump
        .entries
        .iter()
        .map(|(key, value)| {
            let text = match ValueView::of(value) {
                ValueView::Text(text) => Some(text),
                ValueView::Hex(_) => None,
            };
            json!({
                "key": key,
                "value": hex::encode(value.as_bytes()),
                "raw": value.is_bytes(),
                "text": text,
            })
        })
        .collect();
    json!({
        "id": dump.id.to_string(),
        "name": dump.name,
        "alarm": dump.alarm.map(crate::base::clock::millis),
        "entries": entries,
    })
}

fn json_response(status: StatusCode, value: &Value) -> Response {
    let mut body = serde_json::to_vec(value).unwrap_or_default();
    body.push(b'\n');
    let mut response = Response::new(Bytes::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}
