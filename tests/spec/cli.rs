//! The command-line tool on a real data directory (offline) and against a
//! running server's admin API: list, show, export, import round trip,
//! delete with confirmation, bad arguments.

use do_tests::{Alarmed, Counter, Kv, builder};

/// Runs `do-cli` with `args` and `input` on standard input; returns the
/// exit code, standard output and standard error.
fn cli(args: &[&str], input: &str) -> (i32, String, String) {
    let mut argv = vec!["do-cli"];
    argv.extend_from_slice(args);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = do_cli::run(argv, &mut input.as_bytes(), &mut out, &mut err);
    (
        code,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

async fn seed(dir: &std::path::Path) {
    let rt = builder().data_dir(dir).build().unwrap();
    for i in 0..5 {
        rt.namespace::<Counter>()
            .get_by_name(&format!("n{i}"))
            .increment(i + 1)
            .await
            .unwrap();
    }
    rt.namespace::<Kv>()
        .get_by_name("doc")
        .put_many(vec![
            ("title".into(), "Hello".into()),
            ("body".into(), "World".into()),
        ])
        .await
        .unwrap();
    rt.namespace::<Alarmed>()
        .get_by_name("bell")
        .set_in(60_000)
        .await
        .unwrap();
    rt.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_works_on_a_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    seed(dir.path()).await;
    let data = dir.path().to_str().unwrap();
    tokio::task::spawn_blocking({
        let data = data.to_owned();
        move || offline(&data)
    })
    .await
    .unwrap();
}

fn offline(data: &str) {
    let (code, out, err) = cli(&["--data", data, "namespaces"], "");
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines().any(|l| l == "Counter") && out.lines().any(|l| l == "Kv"),
        "{out}"
    );

    let (code, out, _) = cli(&["--data", data, "list", "Counter", "--limit", "2"], "");
    assert_eq!(code, 0);
    assert_eq!(out.lines().filter(|l| !l.starts_with('#')).count(), 2);
    let cursor = out
        .lines()
        .last()
        .unwrap()
        .strip_prefix("# more: --cursor ")
        .unwrap()
        .to_owned();
    let (_, rest, _) = cli(
        &[
            "--data", data, "list", "Counter", "--limit", "2", "--cursor", &cursor,
        ],
        "",
    );
    assert!(
        !rest.contains(out.lines().next().unwrap()),
        "the next page starts after the cursor"
    );
    let (_, all, _) = cli(
        &["--data", data, "list", "Counter", "--all", "--limit", "2"],
        "",
    );
    assert_eq!(all.lines().count(), 5, "{all}");
    assert!(all.lines().all(|l| l.ends_with("  data")));

    let (code, shown, _) = cli(&["--data", data, "show", "Kv", "doc"], "");
    assert_eq!(code, 0);
    assert!(shown.contains("name: doc"), "{shown}");
    assert!(shown.contains("  title = \"Hello\""), "{shown}");
    let (_, bell, _) = cli(&["--data", data, "show", "Alarmed", "bell"], "");
    assert!(
        bell.lines()
            .any(|l| l.starts_with("alarm: ") && l != "alarm: none"),
        "{bell}"
    );

    // Export the namespace, delete one object (confirming), import back.
    let file = std::path::Path::new(data).join("export.jsonl");
    let file = file.to_str().unwrap();
    let (code, _, err) = cli(&["--data", data, "export", "Kv", "--out", file], "");
    assert_eq!(code, 0, "{err}");
    let exported = std::fs::read_to_string(file).unwrap();
    assert_eq!(exported.lines().count(), 2);
    let (_, out, _) = cli(&["--data", data, "delete", "Kv", "doc"], "n\n");
    assert!(out.contains("not deleted"));
    let (_, still, _) = cli(&["--data", data, "show", "Kv", "doc"], "");
    assert!(still.contains("keys: 2"));
    let (code, out, _) = cli(&["--data", data, "delete", "Kv", "doc"], "y\n");
    assert_eq!(code, 0);
    assert!(out.contains("deleted 2 keys"), "{out}");
    let (_, gone, _) = cli(&["--data", data, "show", "Kv", "doc"], "");
    assert!(gone.contains("keys: 0"), "{gone}");
    let (code, out, err) = cli(&["--data", data, "import", file], "");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("imported 2"), "{out}");
    let (_, back, _) = cli(&["--data", data, "show", "Kv", "doc"], "");
    assert_eq!(back, shown, "the round trip restores the object");
    // From standard input too.
    let (code, _, err) = cli(&["--data", data, "import", "-"], &exported);
    assert_eq!(code, 0, "{err}");

    // Bad arguments: non-zero exit and a one-line message.
    let counter_id = all
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    for (args, input) in [
        (vec!["--data", data, "show", "Kv", counter_id.as_str()], ""),
        (vec!["--data", data, "list", "Nope"], ""),
        (vec!["--data", "/nonexistent/dir", "namespaces"], ""),
        (vec!["namespaces"], ""),
        (vec!["--data", data, "list", "Counter", "--limit", "0"], ""),
        (vec!["--data", data, "import", "-"], "{not json}\n"),
    ] {
        let (code, _, err) = cli(&args, input);
        assert_eq!(code, 1, "{args:?}");
        assert!(
            err.starts_with("error: ") && err.trim_end().lines().count() == 1,
            "{args:?}: {err}"
        );
    }
    let (code, _, err) = cli(&["--data", data, "frobnicate"], "");
    assert_eq!(code, 2, "clap's usage error");
    assert!(err.contains("Usage"), "{err}");
    let (code, help, _) = cli(&["--help"], "");
    assert_eq!(code, 0);
    for command in ["namespaces", "list", "show", "export", "import", "delete"] {
        assert!(help.contains(command), "{help}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_works_against_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    seed(dir.path()).await;
    let rt = builder().data_dir(dir.path()).build().unwrap();
    let gateway = rt.gateway().admin("tok").start().await.unwrap();
    let url = format!("http://{}", gateway.local_addr());
    tokio::task::spawn_blocking(move || {
        let (code, out, err) = cli(&["--server", &url, "--token", "tok", "namespaces"], "");
        assert_eq!(code, 0, "{err}");
        assert!(out.lines().any(|l| l == "Counter"));
        let (_, all, _) = cli(
            &[
                "--server", &url, "--token", "tok", "list", "Counter", "--all", "--limit", "2",
            ],
            "",
        );
        assert_eq!(all.lines().count(), 5, "{all}");
        let (_, shown, _) = cli(
            &["--server", &url, "--token", "tok", "show", "Kv", "doc"],
            "",
        );
        assert!(shown.contains("  body = \"World\""), "{shown}");
        let (code, exported, _) = cli(
            &["--server", &url, "--token", "tok", "export", "Kv", "doc"],
            "",
        );
        assert_eq!(code, 0);
        let (code, out, _) = cli(
            &[
                "--server", &url, "--token", "tok", "delete", "Kv", "doc", "--yes",
            ],
            "",
        );
        assert_eq!(code, 0);
        assert!(out.contains("deleted 2"));
        let (code, _, err) = cli(
            &["--server", &url, "--token", "tok", "import", "-"],
            &exported,
        );
        assert_eq!(code, 0, "{err}");
        let (_, back, _) = cli(
            &["--server", &url, "--token", "tok", "show", "Kv", "doc"],
            "",
        );
        assert_eq!(back, shown);
        let (code, _, err) = cli(&["--server", &url, "--token", "wrong", "namespaces"], "");
        assert_eq!(code, 1);
        assert!(err.contains("token"), "{err}");
    })
    .await
    .unwrap();
}

/// A read-only bind mount of a directory, unmounted when dropped.
struct ReadOnlyMount(std::path::PathBuf);

impl ReadOnlyMount {
    fn of(source: &std::path::Path, at: &std::path::Path) -> ReadOnlyMount {
        let run = |args: &[&str]| {
            let status = std::process::Command::new("mount")
                .args(args)
                .status()
                .unwrap_or_else(|e| panic!("cannot run mount ({e}): this test needs root"));
            assert!(
                status.success(),
                "mount {args:?} failed: this test needs root (CI runs as root)"
            );
        };
        let (source, target) = (source.to_str().unwrap(), at.to_str().unwrap());
        run(&["--bind", source, target]);
        let mount = ReadOnlyMount(at.to_owned());
        run(&["-o", "remount,bind,ro", target]);
        mount
    }
}

impl Drop for ReadOnlyMount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reads_a_read_only_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    seed(dir.path()).await;
    let at = tempfile::tempdir().unwrap();
    let mount = ReadOnlyMount::of(dir.path(), at.path());
    assert!(
        std::fs::write(at.path().join("probe"), b"x").is_err(),
        "the mount is read-only"
    );
    let data = at.path().to_str().unwrap().to_owned();
    let out_dir = tempfile::tempdir().unwrap();
    let file = out_dir.path().join("kv.jsonl");
    let file = file.to_str().unwrap().to_owned();
    tokio::task::spawn_blocking(move || {
        let (code, out, err) = cli(&["--data", &data, "namespaces"], "");
        assert_eq!(code, 0, "{err}");
        assert!(out.lines().any(|l| l == "Kv"), "{out}");
        let (code, all, err) = cli(&["--data", &data, "list", "Counter", "--all"], "");
        assert_eq!(code, 0, "{err}");
        assert_eq!(all.lines().count(), 5, "{all}");
        let (code, shown, err) = cli(&["--data", &data, "show", "Kv", "doc"], "");
        assert_eq!(code, 0, "{err}");
        assert!(shown.contains("  title = \"Hello\""), "{shown}");
        let (code, _, err) = cli(&["--data", &data, "export", "Kv", "--out", &file], "");
        assert_eq!(code, 0, "{err}");
        assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 2);
        // Writing is refused, clearly.
        let (code, out, err) = cli(&["--data", &data, "delete", "Kv", "doc"], "y\n");
        assert_ne!(code, 0, "{out}");
        assert!(err.contains("read-only"), "{err}");
    })
    .await
    .unwrap();
    drop(mount);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_imports_into_a_new_directory_of_another_deployment() {
    let dir = tempfile::tempdir().unwrap();
    {
        let rt = builder().data_dir(dir.path()).build().unwrap();
        let counters = rt.namespace::<Counter>();
        counters.get_by_name("named").increment(4).await.unwrap();
        let unnamed = counters.new_unique_id();
        counters.get(unnamed).increment(9).await.unwrap();
        rt.shutdown().await;
    }
    let path = dir.path().to_owned();
    tokio::task::spawn_blocking(move || restore_elsewhere(&path))
        .await
        .unwrap();
}

fn restore_elsewhere(dir: &std::path::Path) {
    let data = dir.to_str().unwrap();
    let file = dir.join("backup.jsonl");
    let file = file.to_str().unwrap();
    let (code, _, err) = cli(&["--data", data, "export", "Counter", "--out", file], "");
    assert_eq!(code, 0, "{err}");
    let fresh = tempfile::tempdir().unwrap();
    let restored = fresh.path().join("restored");
    let restored = restored.to_str().unwrap();
    // The object without a name cannot keep its id text here: refused,
    // saying how to import it.
    let (code, _, err) = cli(&["--data", restored, "import", file], "");
    assert_ne!(code, 0);
    assert!(err.contains("--keep-unique-ids"), "{err}");
    let (code, out, err) = cli(
        &["--data", restored, "import", "--keep-unique-ids", file],
        "",
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("imported 2"), "{out}");
    let (_, shown, _) = cli(&["--data", restored, "show", "Counter", "named"], "");
    assert!(shown.contains("name: named"), "{shown}");
    assert!(shown.contains("keys: 1"), "{shown}");
    let (_, listed, _) = cli(&["--data", restored, "list", "Counter"], "");
    assert_eq!(listed.lines().count(), 2, "{listed}");
    // With the deployment secret, a new directory makes the very same ids.
    let (code, _, err) = cli(&["--data", data, "secret"], "");
    assert_ne!(code, 0);
    assert!(err.contains("--reveal"), "{err}");
    let (code, secret, err) = cli(&["--data", data, "secret", "--reveal"], "");
    assert_eq!(code, 0, "{err}");
    assert_eq!(secret.trim().len(), 64, "{secret}");
    let secret_file = dir.join("secret.hex");
    std::fs::write(&secret_file, &secret).unwrap();
    let secret_file = secret_file.to_str().unwrap();
    let same = fresh.path().join("same");
    let same = same.to_str().unwrap();
    let (code, _, err) = cli(
        &["--data", same, "--secret-file", secret_file, "import", file],
        "",
    );
    assert_eq!(code, 0, "{err}");
    let (_, original, _) = cli(&["--data", data, "list", "Counter"], "");
    let (_, copied, _) = cli(&["--data", same, "list", "Counter"], "");
    assert_eq!(copied, original, "the same ids, names and data");
    // A directory of another deployment is not taken for this one.
    let (code, _, err) = cli(
        &[
            "--data",
            restored,
            "--secret-file",
            secret_file,
            "import",
            file,
        ],
        "",
    );
    assert_ne!(code, 0);
    assert!(err.contains("another deployment secret"), "{err}");
}
