//! R1, R2, C2, C4 over TCP: same API, E-order, broken stubs on disconnect,
//! handshake checks, and hostile input.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use do_runtime::{Client, Ctx, Error, durable_object};
use do_tests::{Counter, Recorder, Slow, builder};

/// Only a hang would exceed this.
const HANG: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_calls_keep_e_order_under_pipelining() {
    let rt = builder().build_for_test().unwrap();
    let server = rt.server().start().await.unwrap();
    let client = Client::connect(server.local_addr()).await.unwrap();
    let stub = client
        .namespace::<Recorder>()
        .unwrap()
        .get_by_name("remote-order");
    const N: u64 = 10_000;
    let calls: Vec<_> = (0..N).map(|n| stub.record(n)).collect();
    for (n, call) in calls.into_iter().enumerate().rev() {
        assert_eq!(call.await.unwrap(), n as u64);
    }
    assert_eq!(stub.log().await.unwrap(), (0..N).collect::<Vec<_>>());
    // The object is the one local stubs reach.
    let local = rt.namespace::<Recorder>().get_by_name("remote-order");
    assert_eq!(local.log().await.unwrap().len(), N as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_stubs_share_one_connection_each_in_order() {
    let rt = builder().build_for_test().unwrap();
    let server = rt.server().start().await.unwrap();
    let client = Client::connect(server.local_addr()).await.unwrap();
    let ns = client.namespace::<Recorder>().unwrap();
    let tasks: Vec<_> = (0..8u64)
        .map(|t| {
            let stub = ns.get_by_name("shared");
            tokio::spawn(async move {
                let calls: Vec<_> = (0..300u64).map(|i| stub.record(t * 1_000 + i)).collect();
                for call in calls {
                    call.await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let log = ns.get_by_name("shared").log().await.unwrap();
    for t in 0..8u64 {
        let mine: Vec<u64> = log.iter().copied().filter(|n| n / 1_000 == t).collect();
        assert_eq!(mine, (0..300).map(|i| t * 1_000 + i).collect::<Vec<_>>());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_made_by_the_client_and_the_server_agree() {
    let rt = builder().build_for_test().unwrap();
    let server = rt.server().start().await.unwrap();
    let client = Client::connect(server.local_addr()).await.unwrap();
    let remote = client.namespace::<Counter>().unwrap();
    let local = rt.namespace::<Counter>();
    assert_eq!(remote.id_from_name("alice"), local.id_from_name("alice"));
    let unique = remote.new_unique_id();
    assert_eq!(local.id_from_string(&unique.to_string()).unwrap(), unique);
    remote.get(unique.clone()).increment(5).await.unwrap();
    assert_eq!(local.get(unique).value().await.unwrap(), 5);
    // Errors keep their types across the network.
    let too_big = remote.get_by_name("x").increment(1).await;
    assert_eq!(too_big, Ok(1));
}

/// The same class name as `Counter`, defined differently.
pub struct CounterV2;

#[durable_object(name = "Counter")]
impl CounterV2 {
    pub fn new(_ctx: Ctx) -> Self {
        CounterV2
    }
    pub async fn increment(&self, amount: i32) -> i32 {
        amount
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_built_from_another_definition_gets_an_error_naming_the_class() {
    let rt = builder().build_for_test().unwrap();
    let server = rt.server().start().await.unwrap();
    let client = Client::connect(server.local_addr()).await.unwrap();
    match client.namespace::<CounterV2>() {
        Err(Error::SchemaMismatch {
            class,
            client,
            server,
        }) => {
            assert_eq!(class, "Counter");
            assert!(
                client.contains("i32") && server.contains("i64"),
                "{client} vs {server}"
            );
        }
        other => panic!("gave {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_missing_token_is_refused_clearly() {
    let rt = builder().build_for_test().unwrap();
    let server = rt.server().token("s3cret").start().await.unwrap();
    let addr = server.local_addr();
    for attempt in [Client::builder().token("guess"), Client::builder()] {
        match attempt.connect(addr).await {
            Err(Error::Refused(reason)) => assert!(reason.contains("token"), "{reason}"),
            other => panic!("gave {other:?}"),
        }
    }
    let client = Client::builder()
        .token("s3cret")
        .connect(addr)
        .await
        .unwrap();
    let counter = client.namespace::<Counter>().unwrap().get_by_name("t");
    assert_eq!(counter.increment(1).await.unwrap(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_binds_loopback_unless_told_otherwise() {
    let rt = builder().build_for_test().unwrap();
    let server = rt.server().start().await.unwrap();
    assert!(server.local_addr().ip().is_loopback());
}

struct ServerProcess {
    child: Child,
    port: u16,
}

fn start_server(dir: &std::path::Path, port: u16) -> ServerProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_do-tests-child"))
        .arg(dir)
        .args(["serve", &port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the server process starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the server prints its port");
    let port = line
        .trim()
        .strip_prefix("listening ")
        .expect("listening PORT")
        .parse()
        .unwrap();
    ServerProcess { child, port }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_server_fails_every_call_promptly_and_a_new_stub_works_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start_server(dir.path(), 0);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], server.port));
    let client = Client::connect(addr).await.unwrap();
    let slow = client.namespace::<Slow>().unwrap();
    let stub = slow.get_by_name("s");
    stub.write_after(0, "before".into()).await.unwrap();

    let in_flight: Vec<_> = (0..100)
        .map(|i| stub.write_after(30_000, format!("k{i}")))
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();

    let results = tokio::time::timeout(HANG, futures_util::future::join_all(in_flight))
        .await
        .expect("every call in flight ends promptly");
    for result in results {
        match result {
            Err(e @ Error::Disconnected(_)) => assert!(e.is_retryable()),
            other => panic!("gave {other:?}"),
        }
    }
    assert!(stub.is_broken());
    assert!(matches!(
        stub.write_after(0, "x".into()).await,
        Err(Error::Disconnected(_))
    ));

    // While the server is down, new stubs fail too, without hanging.
    let down = tokio::time::timeout(HANG, slow.get_by_name("s").write_after(0, "y".into()))
        .await
        .unwrap();
    assert!(matches!(down, Err(Error::Disconnected(_))), "{down:?}");

    // The server comes back on the same port: a new stub reconnects.
    let mut restarted = start_server(dir.path(), server.port);
    let fresh = slow.get_by_name("s");
    fresh.write_after(0, "after".into()).await.unwrap();
    let keys = fresh.keys().await.unwrap();
    assert!(
        keys.contains(&"before".to_string()) && keys.contains(&"after".to_string()),
        "{keys:?}"
    );
    restarted.child.kill().unwrap();
    restarted.child.wait().unwrap();
}
