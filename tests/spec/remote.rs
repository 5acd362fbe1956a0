//! R1, R2, C2, C4 over TCP: same API, E-order, broken stubs on disconnect,
//! handshake checks, and hostile input.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use do_runtime::{Client, Ctx, Error, durable_object};
use do_tests::{Bank, BankError, Counter, Kv, Recorder, Slow, builder};

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
    // A fresh object reached through the client starts from nothing.
    let fresh = remote.get_by_name("x").increment(1).await;
    assert_eq!(fresh, Ok(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_keep_their_types_across_the_network() {
    let rt = builder().build_for_test().unwrap();
    let server = rt.server().start().await.unwrap();
    let client = Client::connect(server.local_addr()).await.unwrap();
    // The runtime's own error, raised by storage on the server.
    let kv = client.namespace::<Kv>().unwrap().get_by_name("limits");
    let err = kv.put_bytes("k".repeat(2049), vec![]).await.unwrap_err();
    assert_eq!(
        err,
        Error::KeyTooLarge {
            len: 2049,
            limit: 2048
        }
    );
    // A method's own error type.
    let bank = client.namespace::<Bank>().unwrap().get_by_name("acct");
    assert_eq!(
        bank.withdraw(500).await,
        Err(BankError::Insufficient {
            balance: 100,
            wanted: 500
        })
    );
    // A panic on the server.
    let recorder = client.namespace::<Recorder>().unwrap().get_by_name("p");
    assert_eq!(
        recorder.boom("far away".into()).await,
        Err(Error::Panicked("far away".into()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_breaks_a_remote_stub_as_it_breaks_a_local_one() {
    let rt = builder().build_for_test().unwrap();
    let server = rt.server().start().await.unwrap();
    let client = Client::connect(server.local_addr()).await.unwrap();
    let recorders = client.namespace::<Recorder>().unwrap();
    let stub = recorders.get_by_name("fragile");
    // Sent in this order, all in flight at once.
    let first = stub.record(1);
    // Suspends (7 yields): running still, and then dropped, if the panic
    // comes first.
    let suspended = stub.record(7);
    let boom = stub.boom("reset".into());
    let behind = [stub.record(2), stub.record(3)];
    assert_eq!(first.await, Ok(1));
    let suspended = suspended.await;
    assert!(
        matches!(suspended, Ok(7) | Err(Error::Disconnected(_))),
        "{suspended:?}"
    );
    assert_eq!(boom.await, Err(Error::Panicked("reset".into())));
    for call in behind {
        assert!(
            matches!(call.await, Err(Error::Disconnected(_))),
            "calls sent after the panic reach no instance"
        );
    }
    assert!(stub.is_broken());
    assert!(matches!(stub.record(4).await, Err(Error::Disconnected(_))));
    // A new stub reaches the new instance, which starts afresh.
    let fresh = recorders.get_by_name("fragile");
    assert_eq!(fresh.record(5).await, Ok(5));
    assert_eq!(fresh.log().await, Ok(vec![5]));
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

/// Hand-encodes frames, which pins the wire format: a little-endian `u32`
/// length, then postcard (varint integers, variant index first).
mod wire {
    pub fn varint(mut n: u64, out: &mut Vec<u8>) {
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }
    pub fn bytes(b: &[u8], out: &mut Vec<u8>) {
        varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }
    pub fn frame(body: &[u8]) -> Vec<u8> {
        let mut out = (body.len() as u32).to_le_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }
    pub fn hello() -> Vec<u8> {
        // Hello { version, token: None }; versions below 128 are one byte.
        frame(&[0, do_runtime::__private::PROTOCOL_VERSION as u8, 0])
    }
    pub fn call(call: u64, stub: u64, class: u32, id: &[u8], method: u32, args: &[u8]) -> Vec<u8> {
        let mut body = vec![1];
        varint(call, &mut body);
        varint(stub, &mut body);
        varint(class.into(), &mut body);
        bytes(id, &mut body);
        varint(method.into(), &mut body);
        bytes(args, &mut body);
        varint(0, &mut body); // trace: none
        body.push(0); // name: none
        frame(&body)
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Sends `bytes`, then reads until the server closes; true when it closed.
async fn server_closes_after(addr: std::net::SocketAddr, bytes: &[u8]) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    let _ = stream.write_all(bytes).await;
    let mut sink = vec![0u8; 4096];
    let closed = tokio::time::timeout(HANG, async {
        loop {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    closed.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_frames_close_only_their_connection_while_others_are_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let rt = builder().build_for_test().unwrap();
    let server = rt
        .server()
        .max_frame_bytes(64 * 1024)
        .handshake_timeout(Duration::from_millis(300))
        .frame_timeout(Duration::from_millis(300))
        .start()
        .await
        .unwrap();
    let addr = server.local_addr();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("server fuzz seed {seed}");
    let mut rng = Rng(seed);

    // A well-behaved client counts throughout; every reply must be exact.
    let client = Client::connect(addr).await.unwrap();
    let good = client.namespace::<Counter>().unwrap().get_by_name("steady");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let steady = {
        let (good, stop) = (good.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0i64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                assert_eq!(
                    good.increment(1).await.unwrap(),
                    n,
                    "the good client's count"
                );
            }
            n
        })
    };

    let valid_id = rt
        .namespace::<Counter>()
        .id_from_name("victim")
        .as_bytes()
        .to_vec();
    let increment = do_runtime::__private::method_id("increment");
    let mut frames = 0u64;

    // 1. Broken framing: each closes its connection.
    let mut oversized = wire::hello();
    oversized.extend_from_slice(&(1u32 << 30).to_le_bytes());
    let mut unknown_variant = wire::hello();
    unknown_variant.extend(wire::frame(&[9, 1, 2, 3]));
    let mut second_hello = wire::hello();
    second_hello.extend(wire::hello());
    let mut truncated = wire::hello();
    truncated.extend(&wire::call(1, 1, 0, &valid_id, increment, &[2])[..10]);
    let call_before_hello = wire::call(1, 1, 0, &valid_id, increment, &[2]);
    let mut bad_class = wire::hello();
    bad_class.extend(wire::call(1, 1, 999, &valid_id, increment, &[2]));
    for case in [
        &oversized,
        &unknown_variant,
        &second_hello,
        &call_before_hello,
        &bad_class,
    ] {
        assert!(
            server_closes_after(addr, case).await,
            "the server closed a hostile connection"
        );
        frames += 2;
    }
    // A truncated frame: closed once the frame timeout passes.
    assert!(
        server_closes_after(addr, &truncated).await,
        "a truncated frame is dropped"
    );
    frames += 2;
    // Silent: says nothing; closed after the handshake timeout.
    assert!(
        server_closes_after(addr, &[]).await,
        "a silent client is dropped"
    );
    // Noise, with and without a hello first.
    for round in 0..200 {
        let mut bytes = if round % 2 == 0 {
            wire::hello()
        } else {
            Vec::new()
        };
        // At least one byte: a hello alone is a valid, idle connection.
        let n = 1 + rng.below(200) as usize;
        bytes.extend(rng.bytes(n));
        assert!(server_closes_after(addr, &bytes).await);
        frames += 1;
    }

    // 2. Frames that parse but say nonsense: answered with errors, connection kept.
    const MUTATED: u64 = 1_000_000;
    const PER_CONNECTION: u64 = 100_000;
    for _ in 0..MUTATED / PER_CONNECTION {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut rd, mut wr) = stream.into_split();
        let drain = tokio::spawn(async move {
            let mut sink = vec![0u8; 64 * 1024];
            let mut total = 0usize;
            while let Ok(n) = rd.read(&mut sink).await {
                if n == 0 {
                    break;
                }
                total += n;
            }
            total
        });
        wr.write_all(&wire::hello()).await.unwrap();
        let mut batch = Vec::new();
        for call in 0..PER_CONNECTION {
            let stub = rng.below(1_000);
            let frame = match rng.below(100) {
                // A real object, a method that does not exist.
                0 => wire::call(call, stub, 0, &valid_id, rng.next() as u32, &rng.bytes(3)),
                // A real method, arguments that do not decode.
                1 => wire::call(call, 1_000 + stub, 0, &valid_id, increment, &rng.bytes(12)),
                // An id that is not one.
                _ => {
                    let len = if rng.below(10) == 0 {
                        rng.below(40) as usize
                    } else {
                        32
                    };
                    wire::call(
                        call,
                        2_000 + stub,
                        0,
                        &rng.bytes(len),
                        rng.next() as u32,
                        &rng.bytes(4),
                    )
                }
            };
            batch.extend(frame);
            if batch.len() > 32 * 1024 {
                wr.write_all(&batch).await.unwrap();
                batch.clear();
            }
            frames += 1;
        }
        wr.write_all(&batch).await.unwrap();
        // End with garbage: the server closes this connection.
        wr.write_all(&wire::frame(&[77, 77, 77])).await.unwrap();
        let replies = tokio::time::timeout(HANG, drain)
            .await
            .expect("the server closes")
            .unwrap();
        assert!(replies > 0, "the server answered the well-formed calls");
    }
    assert!(frames >= 1_000_000, "{frames} frames thrown");

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let counted = tokio::time::timeout(HANG, steady)
        .await
        .expect("the good client never hung")
        .unwrap();
    assert!(counted > 0);
    // The victim object was never touched by the garbage arguments.
    assert_eq!(
        rt.namespace::<Counter>()
            .get_by_name("victim")
            .value()
            .await
            .unwrap(),
        0
    );
    assert_eq!(good.increment(1).await.unwrap(), counted + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_replies_cannot_stall_the_server() {
    use tokio::io::AsyncWriteExt;
    let rt = builder().build_for_test().unwrap();
    let server = rt.server().max_in_flight(64).start().await.unwrap();
    let addr = server.local_addr();
    let id = rt
        .namespace::<Counter>()
        .id_from_name("flooded")
        .as_bytes()
        .to_vec();
    let increment = do_runtime::__private::method_id("increment");
    // Writes calls forever and never reads: the server stops reading it.
    let mut hog = tokio::net::TcpStream::connect(addr).await.unwrap();
    hog.write_all(&wire::hello()).await.unwrap();
    let flood = tokio::spawn(async move {
        let mut batch = Vec::new();
        for call in 0..1_000 {
            batch.extend(wire::call(call, 1, 0, &id, increment, &[2]));
        }
        loop {
            if hog.write_all(&batch).await.is_err() {
                break;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let client = Client::connect(addr).await.unwrap();
    let counter = client
        .namespace::<Counter>()
        .unwrap()
        .get_by_name("unaffected");
    for n in 1..=50 {
        let reply = tokio::time::timeout(HANG, counter.increment(1))
            .await
            .expect("served");
        assert_eq!(reply.unwrap(), n);
    }
    // The hog got at most a bounded number of calls in before the server
    // stopped reading it (its own replies are not being read).
    let flooded = rt
        .namespace::<Counter>()
        .get_by_name("flooded")
        .value()
        .await
        .unwrap();
    assert!(flooded < 1_000_000, "{flooded}");
    flood.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_that_never_say_hello_do_not_keep_a_client_out() {
    use tokio::io::AsyncReadExt;
    let rt = builder().build_for_test().unwrap();
    let server = rt
        .server()
        .token("s3cret")
        .max_connections(2)
        .max_handshakes(8, 4)
        .handshake_timeout(Duration::from_secs(3600))
        .start()
        .await
        .unwrap();
    let addr = server.local_addr();
    // Far more idle sockets than the pool holds, all from this address.
    let mut idle = Vec::new();
    for _ in 0..50 {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    // Once they have waited a second (younger ones are not evicted: a
    // burst of honest clients does not push itself out), a client gets in
    // while they would wait out an hour-long timeout.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let client = tokio::time::timeout(HANG, Client::builder().token("s3cret").connect(addr))
        .await
        .expect("the client was admitted")
        .unwrap();
    let counter = client
        .namespace::<Counter>()
        .unwrap()
        .get_by_name("admitted");
    assert_eq!(counter.increment(1).await.unwrap(), 1);
    // The oldest idle sockets were let go: reading one finds it closed.
    let mut oldest = idle.remove(0);
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(HANG, oldest.read(&mut byte))
        .await
        .expect("the oldest idle socket was closed");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    // Past max_connections, a client that said hello is refused, told why.
    let _second = Client::builder()
        .token("s3cret")
        .connect(addr)
        .await
        .unwrap();
    let third = Client::builder().token("s3cret").connect(addr).await;
    match third {
        Err(e) => assert!(e.to_string().contains("too many connections"), "{e}"),
        Ok(_) => panic!("a third connection was admitted past max_connections(2)"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_begun_by_many_clients_hold_no_more_than_the_client_memory_budget() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const BUDGET: usize = 16 * 1024 * 1024;
    const CLIENTS: usize = 100;
    const SENT: usize = 1024 * 1024;
    let rt = builder()
        .client_memory_bytes(BUDGET)
        .build_for_test()
        .unwrap();
    // Every client from this address is let through its handshake.
    let server = rt
        .server()
        .max_handshakes(CLIENTS, CLIENTS)
        .start()
        .await
        .unwrap();
    let addr = server.local_addr();
    let before = do_tests::resident_bytes();
    let chunk = std::sync::Arc::new(vec![0u8; SENT]);
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let chunk = chunk.clone();
        clients.push(tokio::spawn(async move {
            let mut tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
            tcp.write_all(&wire::hello()).await.ok()?;
            let mut welcome = [0u8; 4];
            tcp.read_exact(&mut welcome).await.ok()?;
            // A frame of 8 MiB begun, a megabyte of it sent, never finished.
            tcp.write_all(&(8u32 << 20).to_le_bytes()).await.ok()?;
            let _ = tcp.write_all(&chunk).await;
            Some(tcp)
        }));
    }
    let open = do_tests::clients_within_budget(&rt, BUDGET, before, clients).await;
    // The connections whose frame did not fit were closed (the others
    // wait for the rest of their frame: they are given a few seconds).
    let reads: Vec<_> = open
        .into_iter()
        .map(|mut tcp| {
            tokio::spawn(async move {
                let mut rest = Vec::new();
                // Ended (closed or reset) within the time, or not.
                tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut rest))
                    .await
                    .is_ok()
            })
        })
        .collect();
    let mut closed = 0;
    for read in reads {
        closed += usize::from(read.await.unwrap());
    }
    let fit = BUDGET / SENT;
    assert!(
        closed >= CLIENTS - 2 * fit,
        "{closed} of {CLIENTS} closed; about {fit} fit in the budget"
    );
}
