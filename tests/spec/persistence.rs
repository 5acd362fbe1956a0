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

/// Copies directory `from` into `to`, recursively.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The files in `dir` whose names end with `suffix`.
fn files_ending(dir: &std::path::Path, suffix: &str) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_or_foreign_data_directory_is_refused_never_started_over() {
    let original = tempfile::tempdir().unwrap();
    let id = {
        let rt = runtime(original.path());
        let counter = rt.namespace::<Counter>().get_by_name("alice");
        counter.increment(10).await.unwrap();
        rt.shutdown().await;
        counter.id().to_string()
    };
    type Damage = fn(&std::path::Path);
    let damages: [(&str, Damage, &str); 8] = [
        (
            "journal deleted",
            |d| {
                for f in files_ending(d, ".jnl") {
                    std::fs::remove_file(f).unwrap();
                }
            },
            "journal",
        ),
        (
            "journal emptied",
            |d| {
                for f in files_ending(d, ".jnl") {
                    std::fs::write(f, b"").unwrap();
                }
            },
            "format mark is gone",
        ),
        (
            "journal overwritten",
            |d| {
                for f in files_ending(d, ".jnl") {
                    let junk: Vec<u8> = (0..4096u32)
                        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                        .collect();
                    std::fs::write(f, junk).unwrap();
                }
            },
            "format mark is gone",
        ),
        (
            "objects keyspace deleted",
            |d| {
                std::fs::remove_dir_all(d.join("keyspaces/1")).unwrap();
            },
            "keyspace `objects`",
        ),
        (
            "meta keyspace deleted",
            |d| {
                std::fs::remove_dir_all(d.join("keyspaces/2")).unwrap();
            },
            "keyspace `meta`",
        ),
        (
            "known keyspace deleted",
            |d| {
                std::fs::remove_dir_all(d.join("keyspaces/5")).unwrap();
            },
            "keyspace `known`",
        ),
        (
            "fjall's version file deleted",
            |d| {
                std::fs::remove_file(d.join("version")).unwrap();
            },
            "version",
        ),
        (
            "the mark and the journal deleted",
            |d| {
                std::fs::remove_file(d.join("do-storage.mark")).unwrap();
                for f in files_ending(d, ".jnl") {
                    std::fs::remove_file(f).unwrap();
                }
            },
            "mark",
        ),
    ];
    for (what, damage, named) in damages {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(original.path(), dir.path());
        damage(dir.path());
        let refused = do_tests::builder().data_dir(dir.path()).build();
        match refused {
            Err(do_runtime::Error::Setup(message)) => {
                assert!(message.contains("damaged"), "{what}: {message}");
                assert!(message.contains(named), "{what}: {message}");
            }
            Err(e) => panic!("{what}: not a setup error: {e:?}"),
            Ok(_) => panic!("{what}: the runtime started on a damaged directory"),
        }
        // Refused again: nothing was initialised by the first attempt.
        assert!(
            do_tests::builder().data_dir(dir.path()).build().is_err(),
            "{what}: the second attempt started"
        );
    }
    // A directory that is not empty and not a store is left alone.
    let foreign = tempfile::tempdir().unwrap();
    std::fs::write(foreign.path().join("notes.txt"), b"mine").unwrap();
    match do_tests::builder().data_dir(foreign.path()).build() {
        Err(do_runtime::Error::Setup(message)) => {
            assert!(message.contains("not a data directory"), "{message}");
        }
        other => panic!("a foreign directory: {:?}", other.err()),
    }
    assert_eq!(
        std::fs::read_dir(foreign.path()).unwrap().count(),
        1,
        "nothing was written into it"
    );
    // Without its mark alone a directory is one from before marks: it
    // opens whole, and is marked again.
    let unmarked = tempfile::tempdir().unwrap();
    copy_dir(original.path(), unmarked.path());
    std::fs::remove_file(unmarked.path().join("do-storage.mark")).unwrap();
    {
        let rt = runtime(unmarked.path());
        let counter = rt.namespace::<Counter>().get_by_name("alice");
        assert_eq!(counter.id().to_string(), id);
        assert_eq!(counter.value().await.unwrap(), 10);
        rt.shutdown().await;
    }
    assert!(unmarked.path().join("do-storage.mark").is_file());
    // The undamaged directory still opens, with its ids and data.
    let rt = runtime(original.path());
    let counter = rt.namespace::<Counter>().get_by_name("alice");
    assert_eq!(counter.id().to_string(), id);
    assert_eq!(counter.value().await.unwrap(), 10);
}
