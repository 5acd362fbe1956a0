//! Data and ids survive a restart, in process and across real processes.

use std::process::Command;

use do_tests::{Counter, Notes, runtime};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_survive_a_restart_of_the_runtime() {
    let dir = tempfile::tempdir().unwrap();
    {
        let rt = runtime(dir.path());
        let counter = rt.namespace::<Counter>().get_by_name("c");
        for _ in 0..3 {
            counter.increment(1).await.unwrap();
        }
        let notes = rt.namespace::<Notes>().get_by_name("n");
        notes.put("k".into(), "v".into()).await.unwrap();
    }
    let rt = runtime(dir.path());
    assert_eq!(
        rt.namespace::<Counter>()
            .get_by_name("c")
            .value()
            .await
            .unwrap(),
        3
    );
    let notes = rt.namespace::<Notes>().get_by_name("n");
    assert_eq!(notes.get("k".into()).await.unwrap().as_deref(), Some("v"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_are_the_same_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (named, unique) = {
        let rt = runtime(dir.path());
        let ns = rt.namespace::<Counter>();
        let unique = ns.new_unique_id();
        ns.get(unique.clone()).increment(7).await.unwrap();
        (ns.id_from_name("alice").to_string(), unique.to_string())
    };
    let rt = runtime(dir.path());
    let ns = rt.namespace::<Counter>();
    assert_eq!(ns.id_from_name("alice").to_string(), named);
    let unique = ns
        .id_from_string(&unique)
        .expect("an id made before the restart parses");
    assert_eq!(ns.get(unique).value().await.unwrap(), 7);
}

fn child(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_do-tests-child"))
        .arg(dir)
        .args(args)
        .output()
        .expect("the child process starts");
    assert!(
        out.status.success(),
        "child {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn a_counter_continues_across_process_restarts() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(child(dir.path(), &["increment", "visits", "1"]), "1");
    assert_eq!(child(dir.path(), &["increment", "visits", "1"]), "2");
    assert_eq!(child(dir.path(), &["increment", "visits", "40"]), "42");
    assert_eq!(child(dir.path(), &["value", "visits"]), "42");
    assert_eq!(
        child(dir.path(), &["id", "visits"]),
        child(dir.path(), &["id", "visits"])
    );
}
