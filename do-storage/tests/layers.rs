//! The files of `src/` import one way only: each may use the files listed
//! before it in [`LAYERS`], never one listed after it, so the crate has no
//! import loop. A new file must be given its place in the list.
//!
//! What counts as an import: every `crate::NAME` path (including each name
//! of `use crate::{A, B::c}`) outside comments and outside the `mod tests`
//! at the end of a file, where tests may use anything. `NAME` must be a
//! module of the list: a name re-exported at the crate root
//! (`crate::Store`) would hide which file it comes from. A file in a
//! folder (`object/flush.rs`) has the place of the module it belongs to
//! (`object`) and may use that module's items through `super::`.

use std::path::{Path, PathBuf};

/// Lowest first.
const LAYERS: &[&str] = &[
    "error",        // the error type
    "keys",         // the key layout of every keyspace
    "values",       // the kind byte of stored values; migrating format 2
    "marker",       // the mark of a complete data directory
    "highwater",    // the commit groups' chain and high-water mark
    "limits",       // key, value and batch limits
    "list",         // list options, key ranges, the overlay merge
    "writes",       // a buffer of writes by key
    "queue",        // the commit thread's queue
    "cache",        // the per-thread value cache
    "signal",       // the commit thread's wake-up
    "alarm",        // alarms: values and their index writes
    "numbers",      // handing out object numbers; registry values
    "sync",         // an object's applied and durable watermarks
    "commit_stats", // what the commit thread reports
    "replica",      // the replicated log the commit thread appends to
    "committer",    // the commit thread
    "releases",     // replies held on a thread until durable
    "store",        // the database
    "object",       // one object's view
    "txn",          // transactions over a view
];

/// The module a file of `src/` belongs to: its first path component
/// without `.rs`.
fn module_of(relative: &Path) -> String {
    let first = relative.components().next().map_or_else(String::new, |c| {
        c.as_os_str().to_string_lossy().into_owned()
    });
    first.trim_end_matches(".rs").to_owned()
}

/// The code of a file without comments and without its final test module.
fn code(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let next_is_tests = lines
            .peek()
            .is_some_and(|l| l.trim_start().starts_with("mod tests"));
        if line.trim() == "#[cfg(test)]" && next_is_tests {
            break;
        }
        out.push_str(line.split("//").next().unwrap_or_default());
        out.push('\n');
    }
    out
}

/// Every module `code` names as `crate::NAME` (or, at the top level, as
/// `super::NAME`, which is the same).
fn imported(code: &str, top_level: bool) -> Vec<String> {
    let mut names = Vec::new();
    let mut prefixes = vec!["crate::"];
    if top_level {
        prefixes.push("super::");
    } else {
        prefixes.push("super::super::");
    }
    for prefix in prefixes {
        for (at, _) in code.match_indices(prefix) {
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let rest = &code[at + prefix.len()..];
            if let Some(group) = rest.strip_prefix('{') {
                names.extend(group_heads(group));
            } else {
                names.push(ident(rest));
            }
        }
    }
    names
}

/// The first path segment of each entry of a `{ ... }` use group.
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0usize;
    let mut entry_start = true;
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => entry_start = true,
            c if entry_start && !c.is_whitespace() => {
                heads.push(ident(&group[i..]));
                entry_start = false;
            }
            _ => {}
        }
    }
    heads
}

fn ident(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// What is wrong with the imports of the file of module `module` (at the
/// top level of `src/` or not) whose text is `text`.
fn violations(module: &str, top_level: bool, text: &str) -> Vec<String> {
    let Some(rank) = LAYERS.iter().position(|m| *m == module) else {
        return vec![format!("`{module}` has no place in LAYERS")];
    };
    let mut found = Vec::new();
    for name in imported(&code(text), top_level) {
        match LAYERS.iter().position(|m| *m == name) {
            None => found.push(format!(
                "`{module}` uses `crate::{name}`, which is no module of LAYERS: \
                 name the module it comes from"
            )),
            Some(r) if r > rank => found.push(format!(
                "`{module}` imports `{name}`, which is above it in LAYERS"
            )),
            Some(_) => {}
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_file_imports_a_file_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut problems = Vec::new();
    let mut seen = Vec::new();
    for path in &files {
        let relative = path.strip_prefix(&src).unwrap_or(path);
        if relative == Path::new("lib.rs") {
            continue;
        }
        let module = module_of(relative);
        let text =
            std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let top_level = relative.components().count() == 1;
        for problem in violations(&module, top_level, &text) {
            problems.push(format!("{}: {problem}", relative.display()));
        }
        seen.push(module);
    }
    for layer in LAYERS {
        if !seen.iter().any(|m| m == layer) {
            problems.push(format!("LAYERS names `{layer}`, which has no file"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn an_upward_import_is_caught_in_every_form() {
    let upward = [
        "use crate::store::Store;",
        "use crate::{error::Result, object::ObjectStore};",
        "fn f(s: &crate::store::Store) {}",
        "use super::committer::Commit;",
    ];
    for text in upward {
        assert_eq!(violations("numbers", true, text).len(), 1, "{text}");
    }
    // A root re-export hides where a name comes from.
    assert_eq!(violations("numbers", true, "use crate::Store;").len(), 1);
    // Downward imports, comments, and the test module are fine.
    let fine = "use crate::keys::{self, ObjectPrefix};\n\
                use crate::error::{Result, StorageError};\n\
                // crate::store::Store in a comment\n\
                /// [`crate::Store`] in a doc link\n\
                fn f() {}\n\
                #[cfg(test)]\n\
                mod tests {\n    use crate::{Store, object::ObjectStore};\n}\n";
    assert_eq!(violations("numbers", true, fine), Vec::<String>::new());
    // In a folder, `super::` is the module's own; `super::super::` is the crate.
    assert!(violations("object", false, "use super::State;").is_empty());
    assert_eq!(
        violations("object", false, "use super::super::txn::Txn;").len(),
        1
    );
}
