//! The layers of `do-runtime/src` (docs/ARCHITECTURE.md): each folder
//! imports only its own layer and those below it, and no layer imports the
//! crate root's re-exports or the macro's door (`__private`), which sit on
//! top of every layer.

use std::path::{Path, PathBuf};

/// The layers, lowest first.
const LAYERS: &[&str] = &["base", "engine", "api", "service", "tools", "net"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("the source folder is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `crate::…` path in the code of `text` (comments skipped), with
/// its line number: the word after `crate::`.
fn crate_paths(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        for (i, _) in code.match_indices("crate::") {
            // `do_runtime::…` and `self::…` paths are not `crate::` paths.
            if code[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let rest = &code[i + "crate::".len()..];
            let word: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            found.push((n + 1, word));
        }
    }
    found
}

#[test]
fn each_layer_imports_only_itself_and_the_layers_below() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../do-runtime/src");
    let mut wrong = Vec::new();
    let mut checked = 0;
    for (rank, layer) in LAYERS.iter().enumerate() {
        let mut files = Vec::new();
        rust_files(&src.join(layer), &mut files);
        assert!(!files.is_empty(), "no files in do-runtime/src/{layer}");
        for file in files {
            let text = std::fs::read_to_string(&file).expect("a source file is readable");
            for (line, word) in crate_paths(&text) {
                checked += 1;
                let ok = LAYERS[..=rank].contains(&word.as_str());
                if !ok {
                    wrong.push(format!(
                        "{}:{line}: the {layer} layer names crate::{word}",
                        file.strip_prefix(&src).unwrap_or(&file).display()
                    ));
                }
            }
        }
    }
    assert!(
        checked > 100,
        "only {checked} paths found: is the source there?"
    );
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_layer_check_sees_an_upward_import() {
    let upward = "use crate::api::stub::Stub; // fine in a comment: crate::net\n";
    assert_eq!(crate_paths(upward), vec![(1, "api".to_owned())]);
    assert!(crate_paths("use do_runtime::x; // crate::net").is_empty());
}
