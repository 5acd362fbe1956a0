//! HTTP through the gateway to an object's `fetch`, beside a plain hyper
//! server whose handler does the same work (count the request, answer the
//! count), on the same tokio runtime, with the same keep-alive clients.

use std::cell::Cell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use do_runtime::bytes::Bytes;
use do_runtime::{Ctx, Request, Response, Runtime, durable_object};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use crate::harness::{Config, Outcome, Series, Unit, interleave, percentile};

/// Counts requests in memory: measures the way there and back, not storage.
#[allow(dead_code)] // built by the runtime, never by name
pub struct Hits {
    n: Cell<u64>,
}

#[durable_object]
impl Hits {
    pub fn new(_ctx: Ctx) -> Self {
        Hits { n: Cell::new(0) }
    }

    pub async fn fetch(&self, _request: Request) -> Response {
        self.n.set(self.n.get() + 1);
        Response::new(self.n.get().to_string().into())
    }
}

/// The baseline: hyper serving one handler that counts.
async fn plain_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let hits = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let hits = hits.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_request| {
                    let n = hits.fetch_add(1, Ordering::Relaxed) + 1;
                    async move {
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(
                            n.to_string(),
                        ))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// `connections` keep-alive clients, each sending GETs one after another
/// for `d`; returns requests per second and every latency.
async fn load(
    addr: SocketAddr,
    path: &'static str,
    connections: usize,
    d: Duration,
) -> (f64, Vec<Duration>) {
    let start = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            tokio::spawn(async move {
                let stream = TcpStream::connect(addr).await.expect("connect");
                let _ = stream.set_nodelay(true);
                let (mut sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .expect("handshake");
                tokio::spawn(connection);
                let mut latencies = Vec::new();
                while start.elapsed() < d {
                    let t = Instant::now();
                    let request = hyper::Request::get(path)
                        .header("host", "bench")
                        .body(Full::new(Bytes::new()))
                        .expect("request");
                    let response = sender.send_request(request).await.expect("response");
                    assert!(response.status().is_success(), "{}", response.status());
                    response.into_body().collect().await.expect("body");
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("client task"));
    }
    (all.len() as f64 / start.elapsed().as_secs_f64(), all)
}

/// Requests through the gateway to one object (or spread over 1 000
/// objects), beside the plain hyper handler.
pub fn http(config: &Config, connections: usize, objects: usize) -> Outcome {
    let tokio = crate::harness::callers();
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Runtime::builder()
        .data_dir(dir.path())
        .register::<Hits>()
        .build()
        .expect("runtime");
    let (gateway, plain) = tokio.block_on(async {
        let gateway = rt.gateway().start().await.expect("gateway");
        (gateway, plain_server().await)
    });
    let gateway_addr = gateway.local_addr();
    let d = config.duration;
    // One path per connection: all on one object, or one object each.
    let paths: Vec<&'static str> = (0..connections)
        .map(|i| &*Box::leak(format!("/Hits/h{}/", i % objects).into_boxed_str()))
        .collect();
    let latencies = std::cell::RefCell::new((Vec::new(), Vec::new()));
    let mut ours = || {
        let paths = paths.clone();
        let (rate, lat) = tokio.block_on(async {
            let runs: Vec<_> = paths
                .into_iter()
                .map(|p| tokio::spawn(load(gateway_addr, p, 1, d)))
                .collect();
            let mut all = Vec::new();
            let mut rate = 0.0;
            for run in runs {
                let (r, l) = run.await.expect("load");
                rate += r;
                all.extend(l);
            }
            (rate, all)
        });
        latencies.borrow_mut().0.push(lat);
        rate
    };
    let mut base = || {
        let (rate, lat) = tokio.block_on(load(plain, "/", connections, d));
        latencies.borrow_mut().1.push(lat);
        rate
    };
    let mut variants: Vec<(&str, Unit, &mut dyn FnMut() -> f64)> = vec![
        ("gateway → object fetch", Unit::OpsPerSec, &mut ours),
        ("plain hyper handler", Unit::OpsPerSec, &mut base),
    ];
    let mut series = interleave(config, &mut variants);
    let (ours_lat, base_lat) = latencies.into_inner();
    for (label, runs) in [("gateway", ours_lat), ("plain hyper", base_lat)] {
        for (p, name) in [(50.0, "p50"), (99.0, "p99")] {
            series.push(Series {
                label: format!("{label} {name}"),
                unit: Unit::Micros,
                // Skip the warm-up run.
                samples: runs
                    .iter()
                    .skip(1)
                    .map(|l| percentile(&mut l.clone(), p))
                    .collect(),
            });
        }
    }
    drop(gateway);
    let ratio = series[0].median() / series[1].median();
    Outcome {
        scenario: if objects == 1 {
            "HTTP through the gateway, 16 connections, 1 object"
        } else {
            "HTTP through the gateway, 64 connections, 64 objects"
        },
        series,
        target: format!("report (ratio {ratio:.2} × plain hyper)"),
        met: None,
    }
}
