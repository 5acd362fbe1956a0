//! Tracing spans for every call (both sides, one trace id, across the
//! network), metrics that add up to the calls made, Prometheus text at
//! `/metrics`, `rt.stats()`, and the health endpoints.

use std::sync::Arc;

use do_runtime::http::StatusCode;
use do_runtime::{Client, DurableObjectId};
use do_tests::capture::{self, CapturedSpan};
use do_tests::client::get;
use do_tests::{Bank, Counter, Recorder, builder};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

fn short(id: &DurableObjectId) -> String {
    id.to_string()[..16].to_owned()
}

fn field<'a>(span: &'a CapturedSpan, name: &str) -> &'a str {
    span.fields.get(name).map_or("", String::as_str)
}

/// The caller's and the object's span of the one call to `short`, with
/// `method`, once both have recorded their outcome.
fn call_pair(short: &str, method: &str) -> (CapturedSpan, CapturedSpan) {
    let spans = capture::indexed_spans_of(short);
    let of = |target: &str| {
        spans
            .iter()
            .filter(|(_, s)| s.target == target && field(s, "method") == method)
            .cloned()
            .collect::<Vec<_>>()
    };
    let (calls, handles) = (of("do_runtime::call"), of("do_runtime::handle"));
    assert_eq!(calls.len(), 1, "one caller span for {method}: {spans:?}");
    assert_eq!(handles.len(), 1, "one object span for {method}: {spans:?}");
    let (call_index, call) = calls[0].clone();
    let (_, handle) = handles[0].clone();
    assert_eq!(
        handle.parent,
        Some(call_index),
        "the object's span is a child of the caller's"
    );
    (call, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_is_a_span_with_class_id_method_and_outcome() {
    let rt = builder().build_for_test().unwrap();
    let counter = rt.namespace::<Counter>().get_by_name("traced");
    let bank = rt.namespace::<Bank>().get_by_name("traced");
    let recorder = rt.namespace::<Recorder>().get_by_name("traced");
    for id in [counter.id(), bank.id(), recorder.id()] {
        capture::watch(&short(id));
    }
    counter.increment(1).await.unwrap();
    bank.withdraw(1_000).await.unwrap_err();
    recorder.boom("kaboom".into()).await.unwrap_err();

    let (call, handle) = call_pair(&short(counter.id()), "increment");
    for span in [&call, &handle] {
        assert_eq!(field(span, "class"), "Counter");
        assert_eq!(field(span, "outcome"), "ok");
    }
    assert_eq!(field(&call, "trace_id").len(), 32, "{call:?}");
    assert_eq!(field(&call, "trace_id"), field(&handle, "trace_id"));

    let (call, handle) = call_pair(&short(bank.id()), "withdraw");
    assert_eq!(field(&call, "outcome"), "user_error");
    assert_eq!(field(&handle, "outcome"), "user_error");

    let (call, handle) = call_pair(&short(recorder.id()), "boom");
    assert_eq!(field(&call, "outcome"), "panic");
    assert_eq!(field(&handle, "outcome"), "panic");
    // Each call starts its own trace.
    let (other, _) = call_pair(&short(counter.id()), "increment");
    assert_ne!(field(&other, "trace_id"), field(&call, "trace_id"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_calls_server_span_carries_the_callers_trace_id() {
    let rt = builder().build_for_test().unwrap();
    let server = rt.server().start().await.unwrap();
    let client = Client::connect(server.local_addr()).await.unwrap();
    let stub = client
        .namespace::<Counter>()
        .unwrap()
        .get_by_name("traced-remote");
    let short = short(stub.id());
    capture::watch(&short);
    stub.increment(5).await.unwrap();
    let spans = capture::indexed_spans_of(&short);
    let client_span = spans
        .iter()
        .find(|(_, s)| s.target == "do_runtime::call" && field(s, "remote") == "true")
        .map(|(_, s)| s.clone())
        .expect("the client's span");
    let trace = field(&client_span, "trace_id").to_owned();
    assert_eq!(trace.len(), 32);
    assert_eq!(field(&client_span, "method"), "increment");
    assert_eq!(field(&client_span, "outcome"), "ok");
    let server_side: Vec<_> = spans
        .iter()
        .filter(|(_, s)| field(s, "remote") != "true")
        .map(|(_, s)| s.clone())
        .collect();
    assert!(
        server_side.iter().any(|s| s.target == "do_runtime::handle"),
        "the server made the object's span: {spans:?}"
    );
    for span in &server_side {
        assert_eq!(
            field(span, "trace_id"),
            trace,
            "server span in the caller's trace: {span:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_add_up_to_the_calls_made() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let rt = builder()
        .metrics_recorder(Arc::new(recorder))
        .build_for_test()
        .unwrap();
    let bank = rt.namespace::<Bank>().get_by_name("metered");
    for _ in 0..7 {
        bank.withdraw(1).await.unwrap();
    }
    for _ in 0..3 {
        bank.withdraw(1_000_000).await.unwrap_err();
    }
    rt.namespace::<Recorder>()
        .get_by_name("metered")
        .boom("x".into())
        .await
        .unwrap_err();
    let counter = rt.namespace::<Counter>().get_by_name("metered");
    counter.increment(2).await.unwrap();
    // A call whose future is dropped before its reply is counted as such.
    drop(counter.increment(3));

    let snapshot = snapshotter.snapshot().into_vec();
    let count = |class: &str, method: &str, outcome: &str| -> u64 {
        snapshot
            .iter()
            .filter(|(key, _, _, _)| {
                let key = key.key();
                let label = |k: &str| {
                    key.labels()
                        .find(|l| l.key() == k)
                        .map(|l| l.value().to_owned())
                };
                key.name() == "do_calls_total"
                    && label("class").as_deref() == Some(class)
                    && label("method").as_deref() == Some(method)
                    && label("outcome").as_deref() == Some(outcome)
            })
            .map(|(_, _, _, value)| match value {
                DebugValue::Counter(n) => *n,
                _ => 0,
            })
            .sum()
    };
    assert_eq!(count("Bank", "withdraw", "ok"), 7);
    assert_eq!(count("Bank", "withdraw", "user_error"), 3);
    assert_eq!(count("Recorder", "boom", "panic"), 1);
    assert_eq!(count("Counter", "increment", "ok"), 1);
    assert_eq!(count("Counter", "increment", "dropped"), 1);
    let latencies: usize = snapshot
        .iter()
        .filter(|(key, _, _, _)| {
            key.key().name() == "do_call_duration_seconds"
                && key
                    .key()
                    .labels()
                    .any(|l| l.key() == "class" && l.value() == "Bank")
        })
        .map(|(_, _, _, value)| match value {
            DebugValue::Histogram(samples) => samples.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(latencies, 10, "one latency per Bank call");
    // The counter's increment wrote and waited for a commit; the commit
    // thread records the group right after the replies, so wait for it.
    let commit_recorded = |snapshot: &[(metrics_util::CompositeKey, _, _, DebugValue)]| {
        snapshot.iter().any(|(key, _, _, value)| {
            key.key().name() == "do_commit_duration_seconds"
                && matches!(value, DebugValue::Histogram(samples) if !samples.is_empty())
        })
    };
    let mut recorded = commit_recorded(&snapshot);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !recorded {
        assert!(
            std::time::Instant::now() < deadline,
            "commit latencies are recorded"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        recorded = commit_recorded(&snapshotter.snapshot().into_vec());
    }
    let stats = rt.stats();
    assert_eq!((stats.calls, stats.failed_calls), (13, 5));
}

/// Checks one line of Prometheus text format: `name{labels} value` or a
/// comment; returns the sample's name, labels and value.
/// A sample: its name, labels and value.
type Sample = (String, Vec<(String, String)>, f64);

fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    assert!(
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
        "metric name {name:?}"
    );
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let close = inner.find('}')?;
        for pair in inner[..close].split(',').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=')?;
            let v = v.strip_prefix('"')?.strip_suffix('"')?;
            labels.push((k.to_owned(), v.to_owned()));
        }
        rest = &inner[close + 1..];
    }
    let value: f64 = rest.trim().split(' ').next()?.parse().ok()?;
    Some((name.to_owned(), labels, value))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_endpoint_serves_prometheus_text() {
    use do_runtime::gateway::prometheus::PrometheusBuilder;
    let recorder = PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let rt = builder()
        .metrics_recorder(Arc::new(recorder))
        .build_for_test()
        .unwrap();
    let gateway = rt.gateway().prometheus(handle).start().await.unwrap();
    let counter = rt.namespace::<Counter>().get_by_name("scraped");
    for _ in 0..3 {
        counter.increment(1).await.unwrap();
    }
    let response = get(gateway.local_addr(), "/metrics").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = String::from_utf8(response.body().to_vec()).unwrap();
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if line.starts_with('#') {
            assert!(
                line.starts_with("# TYPE ") || line.starts_with("# HELP "),
                "{line}"
            );
            continue;
        }
        samples.push(parse_sample(line).unwrap_or_else(|| panic!("not Prometheus text: {line:?}")));
    }
    let calls = samples.iter().find(|(name, labels, _)| {
        name == "do_calls_total"
            && labels.contains(&("class".into(), "Counter".into()))
            && labels.contains(&("method".into(), "increment".into()))
            && labels.contains(&("outcome".into(), "ok".into()))
    });
    assert_eq!(calls.map(|c| c.2), Some(3.0), "{text}");
    assert!(
        samples
            .iter()
            .any(|(name, _, _)| name == "do_live_instances"),
        "{text}"
    );
    // Not configured: no endpoint, the router answers.
    let plain = rt.gateway().start().await.unwrap();
    assert_eq!(
        get(plain.local_addr(), "/metrics").await.status(),
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_live_instances_before_and_after_eviction() {
    let rt = builder().build_for_test().unwrap();
    assert_eq!(rt.stats().live_instances, 0);
    let ns = rt.namespace::<Counter>();
    for name in ["a", "b", "c"] {
        ns.get_by_name(name).increment(1).await.unwrap();
    }
    let stats = rt.stats();
    assert_eq!(stats.live_instances, 3);
    assert_eq!(stats.calls, 3);
    assert!(stats.storage.groups >= 1);
    assert!(rt.evict(&ns.id_from_name("b")).await.unwrap());
    assert_eq!(rt.stats().live_instances, 2);
    // A panic resets (drops) the instance.
    let recorder = rt.namespace::<Recorder>().get_by_name("live-count");
    recorder.record(1).await.unwrap();
    assert_eq!(rt.stats().live_instances, 3);
    recorder.boom("reset".into()).await.unwrap_err();
    assert_eq!(rt.stats().live_instances, 2);
    // Reads after eviction go to the engine or the cache; both are counted.
    ns.get_by_name("b").value().await.unwrap();
    let stats = rt.stats();
    assert_eq!(stats.live_instances, 3, "a, c and b again");
    assert!(stats.cache_hits + stats.cache_misses >= 1);
    // Connections are counted while open.
    let server = rt.server().start().await.unwrap();
    let client = Client::connect(server.local_addr()).await.unwrap();
    client
        .namespace::<Counter>()
        .unwrap()
        .get_by_name("a")
        .value()
        .await
        .unwrap();
    assert_eq!(rt.stats().open_connections, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_endpoints_report_liveness_and_readiness() {
    let rt = builder().build_for_test().unwrap();
    let gateway = rt.gateway().health(true).start().await.unwrap();
    let addr = gateway.local_addr();
    let live = get(addr, "/healthz").await;
    assert_eq!(live.status(), StatusCode::OK);
    let ready = get(addr, "/readyz").await;
    assert_eq!(ready.status(), StatusCode::OK);
    rt.shutdown().await;
    assert_eq!(get(addr, "/healthz").await.status(), StatusCode::OK);
    let ready = get(addr, "/readyz").await;
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(String::from_utf8_lossy(ready.body()).contains("shutting down"));
}
