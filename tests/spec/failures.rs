//! C3, C4, L4 and overload: every failure reaches the caller promptly and typed.

use std::time::Duration;

use do_runtime::Error;
use do_tests::{Fragile, Gatekeeper, Notes, Recorder, Tally, builder, runtime};
use futures_util::FutureExt;

/// Generous bound for "promptly": only a hang would exceed it.
const HANG: Duration = Duration::from_secs(60);

#[test]
fn each_error_says_whether_to_retry_and_where_it_came_from() {
    let disconnected = Error::Disconnected("x".into());
    assert!(
        disconnected.is_retryable() && !disconnected.is_overloaded() && !disconnected.is_remote()
    );
    let overloaded = Error::Overloaded("x".into());
    assert!(!overloaded.is_retryable() && overloaded.is_overloaded() && !overloaded.is_remote());
    let panicked = Error::Panicked("x".into());
    assert!(!panicked.is_retryable() && !panicked.is_overloaded() && panicked.is_remote());
    let app = Error::app("x");
    assert!(!app.is_retryable() && app.is_remote());
    let storage = Error::KeyTooLarge {
        len: 3000,
        limit: 2048,
    };
    assert!(!storage.is_retryable() && !storage.is_remote());
    assert_eq!(panicked.to_string(), "the object panicked: x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_resets_the_instance_and_keeps_exactly_the_committed_writes() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let ns = rt.namespace::<Notes>();
    let stub = ns.get_by_name("p");
    stub.put("kept".into(), "1".into()).await.unwrap();
    let err = stub.write_then_panic("doomed".into()).await.unwrap_err();
    assert_eq!(err, Error::Panicked("after writing doomed".into()));
    let fresh = ns.get_by_name("p");
    assert_eq!(
        fresh.get("kept".into()).await.unwrap().as_deref(),
        Some("1")
    );
    assert_eq!(
        fresh.get("doomed".into()).await.unwrap(),
        None,
        "the uncommitted write was discarded"
    );
    // Tally's committed state survives a reset of another object untouched.
    let tally = rt.namespace::<Tally>().get_by_name("p");
    assert_eq!(tally.increment().await.unwrap(), 1);
    assert!(
        rt.namespace::<Recorder>()
            .get_by_name("p")
            .boom("x".into())
            .await
            .is_err()
    );
    assert_eq!(tally.increment().await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_calls_in_flight_at_a_reset_all_end_promptly() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let ns = rt.namespace::<Recorder>();
    let stub = ns.get_by_name("reset");
    let other_stub = ns.get_by_name("reset");
    other_stub.record(0).await.unwrap(); // bound to the instance that will reset

    let before: Vec<_> = (1..=5_000u64).map(|n| stub.record(n)).collect();
    let boom = stub.boom("mid-flight".into());
    let after: Vec<_> = (5_001..=10_000u64).map(|n| stub.record(n)).collect();

    let results = tokio::time::timeout(HANG, async {
        let mut ok = 0;
        for call in before {
            match call.await {
                Ok(_) => ok += 1,
                Err(Error::Disconnected(_)) => {}
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        let boom = boom.await;
        let mut after_errors = 0;
        for call in after {
            assert!(matches!(call.await, Err(Error::Disconnected(_))));
            after_errors += 1;
        }
        (ok, boom, after_errors)
    })
    .await
    .expect("no call hangs");
    let (ok, boom, after_errors) = results;
    assert!(ok > 0, "calls delivered before the panic completed");
    assert_eq!(boom, Err(Error::Panicked("mid-flight".into())));
    assert_eq!(after_errors, 5_000);
    assert!(stub.is_broken());
    // Every stub bound to the old instance is broken, at once.
    let err = other_stub
        .record(1)
        .now_or_never()
        .expect("fails without waiting");
    assert!(matches!(err, Err(Error::Disconnected(_))), "{err:?}");
    // A new stub reaches a fresh instance.
    assert_eq!(
        ns.get_by_name("reset").log().await.unwrap(),
        Vec::<u64>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stub_that_never_called_the_reset_instance_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let ns = rt.namespace::<Recorder>();
    let unbound = ns.get_by_name("r");
    let stub = ns.get_by_name("r");
    assert!(stub.boom("x".into()).await.is_err());
    assert_eq!(unbound.record(7).await.unwrap(), 7);
    assert!(!unbound.is_broken());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_constructor_fails_the_call_and_leaves_no_half_built_instance() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let ns = rt.namespace::<Fragile>();

    let always = ns.get_by_name("always-broken");
    for _ in 0..2 {
        match always.keys().await {
            Err(e @ Error::Panicked(_)) => {
                assert!(e.is_remote());
                assert!(
                    e.to_string()
                        .contains("constructor of always-broken failed"),
                    "{e}"
                );
            }
            other => panic!("gave {other:?}"),
        }
    }
    let id = ns.id_from_name("always-broken");
    let stored = ns
        .with_storage(&id, |s| async move { s.get::<bool>("half-built").await })
        .await
        .unwrap();
    assert_eq!(
        stored.unwrap(),
        None,
        "the failed constructor's write was discarded"
    );

    // Fails once, then builds; the same stub works, and only the good
    // construction's writes exist.
    let once = ns.get_by_name("once-flaky");
    assert!(matches!(once.keys().await, Err(Error::Panicked(_))));
    assert_eq!(once.keys().await.unwrap(), ["built", "half-built"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_past_the_queue_bound_fails_at_once_with_overloaded_and_the_stub_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let rt = builder()
        .data_dir(dir.path())
        .max_queued_calls(100)
        .build()
        .unwrap();
    let stub = rt.namespace::<Gatekeeper>().get_by_name("busy");
    stub.echo(vec![]).await.unwrap(); // constructed, its load done
    let hold = stub.hold(300); // closes the gate: calls queue up
    tokio::time::sleep(Duration::from_millis(50)).await;

    let mut accepted = Vec::new();
    let mut overloaded = 0;
    for _ in 0..1_000 {
        let mut call = stub.echo(vec![1]);
        match (&mut call).now_or_never() {
            Some(Err(e)) => {
                assert!(e.is_overloaded() && !e.is_retryable(), "{e:?}");
                overloaded += 1;
            }
            Some(Ok(_)) => panic!("a call completed while the gate was closed"),
            None => accepted.push(call),
        }
    }
    assert_eq!(accepted.len(), 100, "exactly the bound was queued");
    assert_eq!(overloaded, 900);
    assert!(!stub.is_broken(), "overload does not break the stub");
    hold.await.unwrap();
    for call in accepted {
        assert_eq!(call.await.unwrap(), 1);
    }
    assert_eq!(stub.echo(vec![1, 2]).await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_is_bounded_by_bytes_too() {
    let dir = tempfile::tempdir().unwrap();
    let rt = builder()
        .data_dir(dir.path())
        .max_queued_bytes(10_000)
        .build()
        .unwrap();
    let stub = rt.namespace::<Gatekeeper>().get_by_name("bytes");
    stub.echo(vec![]).await.unwrap();
    let hold = stub.hold(200);
    tokio::time::sleep(Duration::from_millis(30)).await;
    let first = stub.echo(vec![0; 6_000]);
    let second = stub.echo(vec![0; 6_000]).now_or_never();
    assert!(
        matches!(second, Some(Err(Error::Overloaded(ref m))) if m.contains("bytes")),
        "{second:?}"
    );
    hold.await.unwrap();
    assert_eq!(first.await.unwrap(), 6_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnected_error_says_why_the_stub_lost_its_object() {
    use do_runtime::DisconnectReason;
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let ns = rt.namespace::<Notes>();
    let stub = ns.get_by_name("why");
    stub.put("a".into(), "1".into()).await.unwrap();
    // Another stub bound to the instance sees the reset on its next call;
    // the stub whose call panicked is broken from then on.
    let other = ns.get_by_name("why");
    other.get("a".into()).await.unwrap();
    assert!(stub.write_then_panic("b".into()).await.is_err());
    let again = stub.get("a".into()).await.unwrap_err();
    assert!(
        matches!(
            again.disconnect_reason(),
            Some(DisconnectReason::Broken | DisconnectReason::Reset)
        ),
        "{again:?}"
    );
    let reset = other.get("a".into()).await.unwrap_err();
    assert!(
        matches!(
            reset.disconnect_reason(),
            Some(DisconnectReason::Reset | DisconnectReason::Broken)
        ),
        "{reset:?}"
    );
    assert!(reset.is_retryable());
    // A runtime shutting down says so.
    rt.shutdown().await;
    let late = ns.get_by_name("why").get("a".into()).await.unwrap_err();
    assert_eq!(
        late.disconnect_reason(),
        Some(DisconnectReason::Shutdown),
        "{late:?}"
    );
    // Other errors carry none; a bare message says `Other`.
    assert_eq!(Error::Overloaded("x".into()).disconnect_reason(), None);
    assert_eq!(
        Error::Disconnected("x".into()).disconnect_reason(),
        Some(DisconnectReason::Other)
    );
}

/// A tmpfs of `size` mounted on `at` for one test, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &std::path::Path, size: &str) -> Tmpfs {
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .unwrap_or_else(|e| panic!("cannot run mount ({e}): this test needs root"));
        assert!(
            status.success(),
            "mounting a tmpfs failed: this test needs root (CI runs as root)"
        );
        Tmpfs(at.to_owned())
    }

    /// Bytes free on it, as `df` reports them.
    fn free(&self) -> u64 {
        let out = std::process::Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.0)
            .output()
            .expect("df runs");
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .expect("df prints the free bytes")
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

async fn readyz(addr: std::net::SocketAddr) -> (u16, String) {
    let response = do_tests::client::get(addr, "/readyz").await;
    (
        response.status().as_u16(),
        String::from_utf8_lossy(response.body()).into_owned(),
    )
}

/// Waits (at most `HANG`) until `/readyz` answers `status`; returns its text.
async fn wait_ready(addr: std::net::SocketAddr, status: u16) -> String {
    let deadline = std::time::Instant::now() + HANG;
    loop {
        let (got, text) = readyz(addr).await;
        if got == status {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/readyz stayed {got} ({text}), never {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_writes_typed_reports_not_ready_and_recovers_without_a_restart() {
    let at = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(at.path(), "96m");
    let dir = at.path().join("data");
    let rt = builder().data_dir(&dir).build().unwrap();
    let gateway = rt.gateway().health(true).start().await.unwrap();
    let addr = gateway.local_addr();
    let kv = rt.namespace::<do_tests::Kv>();
    kv.get_by_name("before")
        .put_bytes("k".into(), vec![1; 10])
        .await
        .unwrap();
    assert_eq!(readyz(addr).await.0, 200);
    // An object waiting behind its closed input gate (nothing wakes it for
    // ten minutes) must let go of the store too, or it could not reopen.
    let held = rt.namespace::<do_tests::Gatekeeper>().get_by_name("held");
    assert_eq!(held.echo(vec![1]).await.unwrap(), 1);
    let holding = tokio::spawn(async move { held.hold(600_000).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Leave 3 MiB: less than one memtable's table.
    let ballast = at.path().join("ballast");
    let room = disk.free().saturating_sub(3 << 20) as usize;
    std::fs::write(&ballast, vec![0xa5u8; room]).unwrap();
    let filler = kv.get_by_name("filler");
    let mut acknowledged = Vec::new();
    let mut failure = None;
    for i in 0..4000u32 {
        match filler.put_bytes(format!("k{i}"), vec![7; 64 * 1024]).await {
            Ok(()) => acknowledged.push(i),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let failure = failure.expect("a write fails once the disk is full");
    // The write that met the full disk says so; one after it (fjall
    // refuses writes once one failed) says that.
    assert!(
        matches!(&failure, Error::Storage(m)
            if m.contains("No space left") || m.contains("a write or fsync failed")),
        "{failure:?}"
    );
    assert!(
        acknowledged.len() > 10,
        "writes succeeded before the disk filled"
    );
    // Not ready while writes cannot be made, and saying why.
    let why = wait_ready(addr, 503).await;
    assert!(why.contains("storage cannot write"), "{why}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let why = wait_ready(addr, 503).await;
    assert!(why.contains("waiting for free space"), "{why}");
    // Meanwhile every call is answered, typed: reads of committed data or
    // a retryable error.
    match kv.get_by_name("before").get_bytes("k".into()).await {
        Ok(value) => assert_eq!(value, Some(vec![1; 10])),
        Err(e) => assert!(e.is_retryable(), "{e:?}"),
    }
    let refused = kv.get_by_name("other").put_bytes("k".into(), vec![2]).await;
    assert!(
        refused.as_ref().is_err_and(Error::is_retryable),
        "{refused:?}"
    );
    // Space comes back: the runtime serves again, same process.
    std::fs::remove_file(&ballast).unwrap();
    wait_ready(addr, 200).await;
    let held = holding.await.unwrap();
    assert!(held.as_ref().is_err_and(Error::is_retryable), "{held:?}");
    let again = kv.get_by_name("after");
    again.put_bytes("k".into(), vec![3]).await.unwrap();
    assert_eq!(again.get_bytes("k".into()).await.unwrap(), Some(vec![3]));
    let filler = kv.get_by_name("filler");
    for i in &acknowledged {
        let value = filler.get_bytes(format!("k{i}")).await.unwrap();
        assert_eq!(
            value.map(|v| v.len()),
            Some(64 * 1024),
            "k{i} was acknowledged"
        );
    }
    assert_eq!(
        kv.get_by_name("before")
            .get_bytes("k".into())
            .await
            .unwrap(),
        Some(vec![1; 10])
    );
    // And a restart finds everything too.
    drop(gateway);
    rt.shutdown().await;
    drop(rt);
    let rt = builder().data_dir(&dir).build().unwrap();
    let kv = rt.namespace::<do_tests::Kv>();
    let filler = kv.get_by_name("filler");
    for i in &acknowledged {
        let value = filler.get_bytes(format!("k{i}")).await.unwrap();
        assert!(value.is_some(), "k{i} was acknowledged");
    }
    assert_eq!(
        kv.get_by_name("after").get_bytes("k".into()).await.unwrap(),
        Some(vec![3])
    );
    rt.shutdown().await;
    drop(rt);
    drop(disk);
}
