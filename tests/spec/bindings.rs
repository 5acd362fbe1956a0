//! B1: objects read vars, secrets and typed values bound on the builder; a
//! secret is never shown; a missing binding is a typed error naming it.

use std::sync::Arc;

use do_runtime::http::StatusCode;
use do_runtime::{Client, Error};
use do_tests::client::{get, http as send_http};
use do_tests::{Configured, Limits, builder};

const SECRET: &str = "sk-live-7c1d9e0f5a";

fn configured() -> do_runtime::RuntimeBuilder {
    builder()
        .var("REGION", "eu-west")
        .secret("API_KEY", SECRET)
        .binding(Limits { per_minute: 60 })
}

fn missing(e: &Error, kind: &str, name: &str) -> bool {
    matches!(e, Error::MissingBinding { kind: k, name: n } if k == kind && n == name)
}

/// What an object of a `configured()` runtime reads, and a missing var,
/// through `object` (in process or remote).
async fn reads_the_bindings(object: &do_runtime::Stub<Configured>) {
    assert_eq!(object.var("REGION".into()).await.unwrap(), "eu-west");
    assert!(
        object
            .secret_is("API_KEY".into(), SECRET.into())
            .await
            .unwrap()
    );
    assert_eq!(object.per_minute().await.unwrap(), 60);
    let e = object.var("ZONE".into()).await.unwrap_err();
    assert!(missing(&e, "var", "ZONE"), "{e:?}");
    assert!(e.to_string().contains("RuntimeBuilder::var"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_read_vars_secrets_and_typed_values_and_a_missing_one_is_a_typed_error() {
    let rt = configured().build_for_test().unwrap();
    let object = rt.namespace::<Configured>().get_by_name("a");
    reads_the_bindings(&object).await;
    let e = object
        .secret_is("REGION".into(), String::new())
        .await
        .unwrap_err();
    assert!(missing(&e, "secret", "REGION"), "a var is no secret: {e:?}");
    // The runtime's own environment reads them too.
    assert_eq!(rt.env().var("REGION").unwrap(), "eu-west");
    let rt = builder().build_for_test().unwrap();
    let e = rt
        .namespace::<Configured>()
        .get_by_name("a")
        .per_minute()
        .await
        .unwrap_err();
    assert!(
        missing(&e, "binding", std::any::type_name::<Limits>()),
        "{e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_client_gets_what_the_object_returns_and_the_missing_binding_error_typed() {
    let rt = configured().build_for_test().unwrap();
    let server = rt.server().start().await.unwrap();
    let client = Client::connect(server.local_addr()).await.unwrap();
    let object = client.namespace::<Configured>().unwrap().get_by_name("r");
    reads_the_bindings(&object).await;
}

#[test]
fn a_name_bound_both_as_var_and_secret_or_an_empty_name_is_refused_at_build() {
    for b in [
        builder().var("TOKEN", "a").secret("TOKEN", "b"),
        builder().var("", "a"),
        builder().secret("", "a"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let e = b.data_dir(dir.path()).build().unwrap_err();
        assert!(matches!(e, Error::Setup(_)), "{e:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_never_appears_in_debug_spans_metrics_or_the_admin_api() {
    use do_runtime::gateway::prometheus::PrometheusBuilder;
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let rt = configured()
        .metrics_recorder(Arc::new(recorder))
        .build_for_test()
        .unwrap();
    let object = rt.namespace::<Configured>().get_by_name("shown");
    let short = object.id().to_string()[..16].to_owned();
    do_tests::capture::watch(&short);
    assert_eq!(
        object
            .remember_secret_length("API_KEY".into())
            .await
            .unwrap(),
        SECRET.len()
    );
    let env = format!("{:?}", rt.env());
    assert!(env.contains("API_KEY"), "the name is shown: {env}");
    for shown in [env, format!("{:?}", &*rt), format!("{object:?}")] {
        assert!(!shown.contains(SECRET), "{shown}");
    }
    let spans = do_tests::capture::spans_of(&short);
    assert!(!spans.is_empty(), "the call was traced");
    for span in spans {
        for value in span.fields.values() {
            assert!(!value.contains(SECRET), "{value}");
        }
    }
    let gateway = rt
        .gateway()
        .prometheus(handle)
        .admin("t")
        .start()
        .await
        .unwrap();
    let metrics = get(gateway.local_addr(), "/metrics").await;
    assert_eq!(metrics.status(), StatusCode::OK);
    let text = String::from_utf8_lossy(metrics.body()).into_owned();
    assert!(text.contains("do_"), "metrics were rendered");
    assert!(!text.contains(SECRET));
    let request = do_runtime::http::Request::builder()
        .uri("/admin/namespaces/Configured/objects/shown/export")
        .header("host", "gateway")
        .header("authorization", "Bearer t")
        .body(do_runtime::bytes::Bytes::new())
        .unwrap();
    let export = send_http(gateway.local_addr(), request).await;
    let body = String::from_utf8_lossy(export.body()).into_owned();
    assert_eq!(export.status(), StatusCode::OK, "{body}");
    assert!(
        body.contains("length"),
        "the export holds the object: {body}"
    );
    assert!(!body.contains(SECRET), "{body}");
}
