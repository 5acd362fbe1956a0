//! The admin API (R3 over HTTP, behind a bearer token) and the offline view
//! of a data directory the command-line tool uses.

use std::time::Duration;

use do_runtime::ListIds;
use do_runtime::admin::{DataDir, ValueView};
use do_runtime::bytes::Bytes;
use do_runtime::http::{self, StatusCode};
use do_tests::client::{get, http as send_http};
use do_tests::{Alarmed, Counter, Kv, builder};
use serde_json::Value;

async fn admin(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (StatusCode, String) {
    let mut request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "gateway");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = send_http(addr, request.body(Bytes::from(body.to_owned())).unwrap()).await;
    (
        response.status(),
        String::from_utf8_lossy(response.body()).into_owned(),
    )
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_needs_its_token_and_is_off_unless_configured() {
    let rt = builder().build_for_test().unwrap();
    let off = rt.gateway().start().await.unwrap();
    let response = get(off.local_addr(), "/admin/namespaces").await;
    assert_eq!(
        response.status(),
        StatusCode::NOT_FOUND,
        "no admin API: the router says no class `admin`"
    );
    let on = rt.gateway().admin("s3cret").start().await.unwrap();
    let addr = on.local_addr();
    for token in [None, Some("wrong"), Some("s3cre"), Some("s3cret2")] {
        let (status, body) = admin(addr, "GET", "/admin/namespaces", token, "").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}");
        assert!(json(&body)["error"].is_string());
    }
    let (status, body) = admin(addr, "GET", "/admin/namespaces", Some("s3cret"), "").await;
    assert_eq!(status, StatusCode::OK);
    let classes: Vec<String> = json(&body)["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["class"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(classes, rt.namespaces());
    // A runtime of no cluster says so.
    let (status, body) = admin(addr, "GET", "/admin/cluster", Some("s3cret"), "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        json(&body)["error"]
            .as_str()
            .is_some_and(|e| e.contains("not a member of a cluster")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_lists_shows_exports_deletes_and_imports() {
    let rt = builder().build_for_test().unwrap();
    for i in 0..30 {
        rt.namespace::<Counter>()
            .get_by_name(&format!("a{i}"))
            .increment(i)
            .await
            .unwrap();
    }
    let kv = rt.namespace::<Kv>().get_by_name("doc");
    kv.put_many(vec![
        ("title".into(), "Hello".into()),
        ("body".into(), "World".into()),
    ])
    .await
    .unwrap();
    let gateway = rt.gateway().admin("t").start().await.unwrap();
    let addr = gateway.local_addr();

    // Pages of 7 with a cursor.
    let mut seen = Vec::new();
    let mut path = "/admin/namespaces/Counter/objects?limit=7".to_owned();
    loop {
        let (status, body) = admin(addr, "GET", &path, Some("t"), "").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let page = json(&body);
        let objects = page["objects"].as_array().unwrap();
        assert!(objects.len() <= 7);
        for o in objects {
            assert_eq!(o["hasStoredData"], Value::Bool(true));
            seen.push(o["name"].as_str().unwrap().to_owned());
        }
        match page["cursor"].as_str() {
            Some(cursor) => {
                path = format!("/admin/namespaces/Counter/objects?limit=7&cursor={cursor}")
            }
            None => break,
        }
    }
    seen.sort();
    let mut expected: Vec<String> = (0..30).map(|i| format!("a{i}")).collect();
    expected.sort();
    assert_eq!(seen, expected);

    // Show: keys with their values, strings readable.
    let (status, body) = admin(
        addr,
        "GET",
        "/admin/namespaces/Kv/objects/doc",
        Some("t"),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let shown = json(&body);
    assert_eq!(shown["name"], "doc");
    let entries = shown["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["key"], "body");
    assert_eq!(entries[0]["text"], "World");

    // Export, delete, import back: the same object.
    let (status, exported) = admin(
        addr,
        "GET",
        "/admin/namespaces/Kv/objects/doc/export",
        Some("t"),
        "",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(exported.lines().count(), 2);
    let (status, body) = admin(
        addr,
        "DELETE",
        "/admin/namespaces/Kv/objects/doc",
        Some("t"),
        "",
    )
    .await;
    assert_eq!(
        (status, json(&body)["deleted"].as_u64()),
        (StatusCode::OK, Some(2))
    );
    assert!(kv.get_many(vec!["title".into()]).await.unwrap().is_empty());
    let (status, body) = admin(addr, "POST", "/admin/import", Some("t"), &exported).await;
    assert_eq!(
        (status, json(&body)["written"].as_u64()),
        (StatusCode::OK, Some(2)),
        "{body}"
    );
    let title = kv.get_many(vec!["title".into()]).await.unwrap();
    assert_eq!(title.get("title").map(String::as_str), Some("Hello"));

    // Bad requests are 4xx with a reason.
    for (method, path, body) in [
        ("GET", "/admin/namespaces/Nope/objects", ""),
        ("GET", "/admin/namespaces/Counter/objects?limit=0", ""),
        ("GET", "/admin/namespaces/Counter/objects?cursor=zz", ""),
        ("POST", "/admin/import", "not json\n"),
        ("GET", "/admin/whatever", ""),
    ] {
        let (status, text) = admin(addr, method, path, Some("t"), body).await;
        assert!(status.is_client_error(), "{path}: {status} {text}");
        assert!(json(&text)["error"].is_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_can_be_read_and_changed_offline() {
    let dir = tempfile::tempdir().unwrap();
    {
        let rt = builder().data_dir(dir.path()).build().unwrap();
        rt.namespace::<Kv>()
            .get_by_name("offline")
            .put_many(vec![("a".into(), "one".into()), ("b".into(), "two".into())])
            .await
            .unwrap();
        rt.namespace::<Alarmed>()
            .get_by_name("ringing")
            .set_in(3_600_000)
            .await
            .unwrap();
        rt.shutdown().await;
    }
    let data = DataDir::open(dir.path()).unwrap();
    assert!(data.namespaces().contains(&"Kv".to_owned()));
    let page = data.list_ids("Kv", ListIds::new()).unwrap();
    assert_eq!(page.objects.len(), 1);
    assert_eq!(page.objects[0].name.as_deref(), Some("offline"));
    let id = data.id("Kv", "offline").unwrap();
    assert_eq!(data.id("Kv", &id.to_string()).unwrap(), id);
    let dump = data.show("Kv", &id).unwrap();
    let views: Vec<_> = dump
        .entries
        .iter()
        .map(|(k, v)| (k.clone(), ValueView::of(v)))
        .collect();
    assert_eq!(
        views,
        [
            ("a".into(), ValueView::Text("one".into())),
            ("b".into(), ValueView::Text("two".into()))
        ]
    );
    let ringing = data.id("Alarmed", "ringing").unwrap();
    let alarm = data
        .show("Alarmed", &ringing)
        .unwrap()
        .alarm
        .expect("the alarm is shown");
    assert!(alarm > std::time::SystemTime::now() + Duration::from_secs(3000));
    // Export, delete, import: round trip, then a runtime sees it.
    let records = dump.records("Kv");
    assert_eq!(data.delete("Kv", &id).await.unwrap(), 2);
    assert!(data.show("Kv", &id).unwrap().entries.is_empty());
    assert_eq!(
        data.import(&records, do_runtime::admin::ImportOptions::new())
            .await
            .unwrap(),
        2
    );
    assert!(matches!(
        data.list_ids("Nope", ListIds::new()),
        Err(do_runtime::Error::NotRegistered(_))
    ));
    data.close();
    let rt = builder().data_dir(dir.path()).build().unwrap();
    let value = rt
        .namespace::<Kv>()
        .get_by_name("offline")
        .get_many(vec!["b".into()])
        .await
        .unwrap();
    assert_eq!(value.get("b").map(String::as_str), Some("two"));
    drop(rt);
    assert!(DataDir::open(&dir.path().join("missing")).is_err());
    let empty = tempfile::tempdir().unwrap();
    assert!(
        DataDir::open(empty.path()).is_err(),
        "no runtime secret: not a data directory"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_or_whitespace_token_is_refused_when_the_gateway_or_server_starts() {
    let rt = builder().build_for_test().unwrap();
    for token in ["", " ", "\t \n"] {
        let gateway = rt.gateway().admin(token).start().await;
        assert!(
            matches!(gateway, Err(do_runtime::Error::Setup(_))),
            "admin token {token:?}"
        );
        let server = rt.server().token(token).start().await;
        assert!(
            matches!(server, Err(do_runtime::Error::Setup(_))),
            "server token {token:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_takes_bearer_in_any_case_and_nothing_else() {
    let rt = builder().build_for_test().unwrap();
    let gateway = rt.gateway().admin("s3cret").start().await.unwrap();
    let addr = gateway.local_addr();
    let ask = |authorization: Option<&'static str>| async move {
        let mut request = http::Request::builder()
            .uri("/admin/namespaces")
            .header("host", "gateway");
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        send_http(addr, request.body(Bytes::new()).unwrap())
            .await
            .status()
    };
    for good in [
        "Bearer s3cret",
        "bearer s3cret",
        "BEARER s3cret",
        "Bearer  s3cret",
    ] {
        assert_eq!(ask(Some(good)).await, StatusCode::OK, "{good:?}");
    }
    for bad in [
        None,
        Some(""),
        Some("Bearer"),
        Some("Bearer "),
        Some("s3cret"),
        Some("Basic s3cret"),
        Some("Bearers3cret"),
        Some("Bearer s3cret2"),
    ] {
        assert_eq!(ask(bad).await, StatusCode::UNAUTHORIZED, "{bad:?}");
    }
}
