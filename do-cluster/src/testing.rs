//! A real `etcd` process for tests and benchmarks (feature `testing`): one
//! member on loopback ports picked here, with its data in a temporary
//! directory, killed when dropped. It can be killed (`kill -9`) and
//! started again on the same data and ports. A missing binary is a panic
//! naming the install script: never a silent skip.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How to install the server the tests need.
pub const INSTALL: &str =
    "run `scripts/install-servers.sh` (it runs `apt-get install etcd-server protobuf-compiler`)";

/// The `etcd` binary: `$ETCD`, or the first on `PATH`. Panics, naming the
/// install command, when there is none.
#[allow(clippy::panic)]
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("ETCD") {
        return path.into();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("etcd"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("etcd is not on PATH (nor in $ETCD): {INSTALL}"))
}

/// A one-member etcd cluster.
pub struct Etcd {
    binary: PathBuf,
    client_port: u16,
    peer_port: u16,
    log: PathBuf,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts etcd and waits until it answers its health check.
    pub fn start() -> Self {
        let binary = binary();
        let dir = tempfile::tempdir().expect("a temporary directory");
        let ports: Vec<TcpListener> = (0..2)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free loopback port"))
            .collect();
        let port = |i: usize| ports[i].local_addr().expect("a local address").port();
        let (client_port, peer_port) = (port(0), port(1));
        drop(ports);
        let mut etcd = Etcd {
            log: dir.path().join("etcd.log"),
            binary,
            client_port,
            peer_port,
            child: None,
            dir,
        };
        etcd.spawn();
        etcd.wait_ready();
        etcd
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("etcd's log opens");
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new(&self.binary)
            .arg("--name=test")
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log is shared"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}; {INSTALL}", self.binary.display()));
        self.child = Some(child);
    }

    /// Waits (at most 30 s) until etcd answers `/health` with health.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "etcd exited ({status}) while starting:\n{}",
                    tail(&self.log)
                );
            }
            if http_get(self.client_port, "/health").is_some_and(|body| body.contains("true")) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd is not ready after 30 s:\n{}",
                tail(&self.log)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its client endpoints.
    pub fn endpoints(&self) -> Vec<String> {
        vec![format!("http://127.0.0.1:{}", self.client_port)]
    }

    /// Kills it at once (`kill -9`).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on its data and ports, and waits until it is ready.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_ready();
    }

    /// The end of its log, for failure messages.
    pub fn log_tail(&self) -> String {
        tail(&self.log)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last lines of a log file.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// A plain HTTP GET on loopback: the body, if the server answered 200.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    tcp.write_all(format!("GET {path} HTTP/1.0\r\nhost: localhost\r\n\r\n").as_bytes())
        .ok()?;
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).ok()?;
    let code: u16 = answer.split(' ').nth(1)?.parse().ok()?;
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    (code == 200).then_some(body)
}
