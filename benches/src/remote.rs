//! Remote calls over loopback beside a raw framed-TCP baseline: the same
//! length-prefixed postcard request and reply, an in-memory counter, and no
//! object model on either side.

use std::cell::Cell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use do_runtime::{Client, Ctx, Runtime, durable_object};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use crate::harness::{Config, Outcome, Unit, interleave, percentile};

/// An in-memory counter: measures the way there and back, not storage.
#[allow(dead_code)] // built by the runtime, never by name
pub struct Tally {
    n: Cell<i64>,
}

#[durable_object]
impl Tally {
    pub fn new(_ctx: Ctx) -> Self {
        Tally { n: Cell::new(0) }
    }

    pub async fn add(&self, amount: i64) -> i64 {
        self.n.set(self.n.get() + amount);
        self.n.get()
    }
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

async fn read_frame(rd: &mut (impl AsyncReadExt + Unpin), buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    rd.read_exact(&mut len).await.ok()?;
    buf.resize(u32::from_le_bytes(len) as usize, 0);
    rd.read_exact(buf).await.ok()?;
    Some(buf.clone())
}

/// The raw server: requests `(id, amount)`, replies `(id, total)`.
async fn raw_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let total = Arc::new(AtomicU64::new(0));
        while let Ok((stream, _)) = listener.accept().await {
            let total = total.clone();
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let (mut rd, wr) = stream.into_split();
                let mut wr = BufWriter::new(wr);
                let mut buf = Vec::new();
                while let Some(req) = read_frame(&mut rd, &mut buf).await {
                    let Ok((id, amount)) = postcard::from_bytes::<(u64, i64)>(&req) else {
                        break;
                    };
                    let n = total.fetch_add(amount as u64, Ordering::Relaxed) as i64 + amount;
                    let reply = postcard::to_allocvec(&(id, n)).expect("encode");
                    if wr.write_all(&frame(&reply)).await.is_err() || wr.flush().await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// The raw client, pipelined: a writer task, a reader task, a map of waiters.
struct RawClient {
    out: mpsc::UnboundedSender<Vec<u8>>,
    waiting: Arc<Mutex<HashMap<u64, oneshot::Sender<i64>>>>,
    next: AtomicU64,
}

impl RawClient {
    async fn connect(addr: SocketAddr) -> RawClient {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let _ = stream.set_nodelay(true);
        let (mut rd, wr) = stream.into_split();
        let (out, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        tokio::spawn(async move {
            let mut wr = BufWriter::new(wr);
            while let Some(f) = rx.recv().await {
                let _ = wr.write_all(&f).await;
                while let Ok(f) = rx.try_recv() {
                    let _ = wr.write_all(&f).await;
                }
                if wr.flush().await.is_err() {
                    break;
                }
            }
        });
        let waiting: Arc<Mutex<HashMap<u64, oneshot::Sender<i64>>>> = Arc::default();
        let w = waiting.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            while let Some(reply) = read_frame(&mut rd, &mut buf).await {
                let Ok((id, n)) = postcard::from_bytes::<(u64, i64)>(&reply) else {
                    break;
                };
                if let Some(tx) = w.lock().expect("lock").remove(&id) {
                    let _ = tx.send(n);
                }
            }
        });
        RawClient {
            out,
            waiting,
            next: AtomicU64::new(0),
        }
    }

    async fn add(&self, amount: i64) -> i64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.waiting.lock().expect("lock").insert(id, tx);
        let body = postcard::to_allocvec(&(id, amount)).expect("encode");
        self.out.send(frame(&body)).expect("writer alive");
        rx.await.expect("reply")
    }
}

/// Runs one task per handle, each calling `op` in a loop for `d`; returns
/// calls per second and the p50 latency in microseconds.
async fn callers_for<H, F, Fut>(d: std::time::Duration, handles: Vec<H>, op: F) -> (f64, f64)
where
    H: Clone + Send + 'static,
    F: Fn(H) -> Fut + Copy + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = handles
        .into_iter()
        .map(|handle| {
            let done = done.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while start.elapsed() < d {
                    let t = Instant::now();
                    op(handle.clone()).await;
                    lat.push(t.elapsed());
                    done.fetch_add(1, Ordering::Relaxed);
                }
                lat
            })
        })
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("task"));
    }
    (
        done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64(),
        percentile(&mut lat, 50.0),
    )
}

/// 1 caller sequential (p50 latency and throughput) and 64 callers in
/// flight (throughput), ours beside raw.
pub fn remote(config: &Config, callers: usize) -> Outcome {
    let tokio = crate::harness::callers();
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = Runtime::builder()
        .data_dir(dir.path())
        .register::<Tally>()
        .build()
        .expect("runtime");
    let (client, raw) = tokio.block_on(async {
        let server = rt.server().start().await.expect("server");
        let client = Client::connect(server.local_addr()).await.expect("client");
        std::mem::forget(server); // lives for the whole process
        let raw = Arc::new(RawClient::connect(raw_server().await).await);
        (client, raw)
    });
    let ns = client.namespace::<Tally>().expect("namespace");
    let d = config.duration;
    let ours = || {
        let stubs: Vec<_> = (0..callers).map(|_| ns.get_by_name("remote")).collect();
        tokio.block_on(callers_for(d, stubs, |stub| async move {
            stub.add(1).await.expect("add");
        }))
    };
    let raw_run = || {
        let raws = vec![raw.clone(); callers];
        tokio.block_on(callers_for(d, raws, |raw| async move {
            raw.add(1).await;
        }))
    };
    #[cfg(feature = "peers")]
    let tarpc = Arc::new(
        tokio.block_on(async { crate::peers::connect(crate::peers::serve().await).await }),
    );
    #[cfg(feature = "peers")]
    let mut tarpc_rate = || {
        let clients = vec![(*tarpc).clone(); callers];
        let (rate, _) = tokio.block_on(callers_for(d, clients, |client| async move {
            crate::peers::add(&client, 1).await;
        }));
        rate
    };
    let latencies = std::cell::RefCell::new((Vec::new(), Vec::new()));
    let mut ours_rate = || {
        let (rate, p50) = ours();
        latencies.borrow_mut().0.push(p50);
        rate
    };
    let mut raw_rate = || {
        let (rate, p50) = raw_run();
        latencies.borrow_mut().1.push(p50);
        rate
    };
    let mut variants: Vec<(&str, Unit, &mut dyn FnMut() -> f64)> = vec![
        ("do-runtime remote", Unit::OpsPerSec, &mut ours_rate),
        ("raw framed TCP", Unit::OpsPerSec, &mut raw_rate),
    ];
    #[cfg(feature = "peers")]
    variants.push(("tarpc (bincode)", Unit::OpsPerSec, &mut tarpc_rate));
    let mut series = interleave(config, &mut variants);
    let (ours_lat, raw_lat) = latencies.into_inner();
    // Drop the warm-up sample of each.
    series.push(crate::harness::Series {
        label: "do-runtime remote p50".into(),
        unit: Unit::Micros,
        samples: ours_lat.into_iter().skip(1).collect(),
    });
    series.push(crate::harness::Series {
        label: "raw framed TCP p50".into(),
        unit: Unit::Micros,
        samples: raw_lat.into_iter().skip(1).collect(),
    });
    let ratio = series[0].median() / series[1].median();
    let tarpc_ratio = series
        .iter()
        .find(|s| s.label.starts_with("tarpc"))
        .map(|t| series[0].median() / t.median());
    let (scenario, target, met) = if callers == 1 {
        (
            "remote call, 1 caller, sequential",
            "≥ 0.7 × raw".to_owned(),
            ratio >= 0.7,
        )
    } else {
        match tarpc_ratio {
            Some(t) => (
                "remote calls, 64 in flight",
                "≥ 0.5 × raw and ≥ 2 × tarpc".to_owned(),
                ratio >= 0.5 && t >= 2.0,
            ),
            None => (
                "remote calls, 64 in flight",
                "≥ 0.5 × raw (and ≥ 2 × tarpc: build with --features peers)".to_owned(),
                ratio >= 0.5,
            ),
        }
    };
    Outcome {
        scenario,
        series,
        target,
        met: Some(met),
    }
}
