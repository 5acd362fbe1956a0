//! The mark of a complete data directory: a small file, written once the
//! directory holds everything a store needs (its keyspaces, its format, and
//! whatever its user keeps in the meta keyspace, such as a runtime's
//! secret), that lists the keyspace folders fjall made for it.
//!
//! fjall opens a directory whose journal was deleted, emptied or
//! overwritten, or whose keyspace folder was deleted, as if it were new (or
//! recreates the folder empty). With the mark, a directory is one of four
//! things before it is opened: new (missing or empty, the only kind a store
//! is created in: it is marked "creating" before fjall writes anything),
//! creating (a creation that did not finish: it may start again while
//! nothing is stored), unmarked (fjall's files but no mark: a store made
//! before marks existed, accepted only with its format mark), or complete,
//! in which case every part the mark lists must be there.
//!
//! The mark tells missing files, and a lost format mark (the journal or the
//! meta keyspace of a young store). It cannot tell a journal that lost only
//! its newest entries, or one emptied after fjall flushed the meta keyspace
//! to its own files: those lose writes without losing a part.

use std::path::Path;

use crate::error::{Result, StorageError};

/// The mark's file name, in the data directory.
pub(crate) const MARK_FILE: &str = "do-storage.mark";
/// fjall's own version file: present in every directory fjall opened.
const FJALL_VERSION_FILE: &str = "version";
/// The file fjall writes in a keyspace folder once the keyspace exists.
const KEYSPACE_CURRENT_FILE: &str = "current";
/// The mark's first line.
const MARK_HEADER: &str = "do-storage data directory";
/// The second line of the mark of a directory being created.
const CREATING: &str = "creating";

/// What a directory was before the store opened it.
#[derive(Debug)]
pub(crate) enum Found {
    /// Missing or empty: a store may be created in it.
    New,
    /// Marked as being created: a creation that did not finish.
    Creating,
    /// fjall's files without a mark.
    Unmarked,
    /// A complete store: these keyspaces (name, folder relative to the
    /// directory) must be there.
    Marked(Vec<(String, String)>),
}

impl Found {
    pub(crate) fn is_marked(&self) -> bool {
        matches!(self, Found::Marked(_))
    }
}

/// An I/O failure on `path` (not damage: the directory may be fine).
pub(crate) fn io(path: &Path, e: std::io::Error) -> StorageError {
    StorageError::Engine(format!("{}: {e}", path.display()).into())
}

/// Looks at `dir` before the store opens it, and refuses a directory that
/// is neither new nor a store, and a marked one with a part missing.
pub(crate) fn inspect(dir: &Path) -> Result<Found> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Found::New),
        Err(e) => return Err(io(dir, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // A mark being written when the process stopped: never whole.
        if name == format!("{MARK_FILE}.new") {
            continue;
        }
        names.push(name);
    }
    if names.is_empty() {
        return Ok(Found::New);
    }
    let mark_path = dir.join(MARK_FILE);
    let mark = match std::fs::read_to_string(&mark_path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if dir.join(FJALL_VERSION_FILE).is_file() {
                return Ok(Found::Unmarked);
            }
            names.sort();
            names.truncate(5);
            return Err(StorageError::NotAStore {
                path: dir.display().to_string(),
                found: names.join(", "),
            });
        }
        Err(e) => return Err(io(&mark_path, e)),
    };
    if mark.lines().nth(1) == Some(CREATING) && mark.starts_with(MARK_HEADER) {
        return Ok(Found::Creating);
    }
    let keyspaces = parse(&mark).ok_or_else(|| StorageError::Damaged {
        what: format!("{} is not a mark this version wrote", mark_path.display()),
    })?;
    if !dir.join(FJALL_VERSION_FILE).is_file() {
        return Err(StorageError::Damaged {
            what: format!("fjall's `{FJALL_VERSION_FILE}` file is missing"),
        });
    }
    for (name, folder) in &keyspaces {
        if !dir.join(folder).join(KEYSPACE_CURRENT_FILE).is_file() {
            return Err(StorageError::Damaged {
                what: format!("the keyspace `{name}` ({folder}) is missing"),
            });
        }
    }
    let journals = names.iter().filter(|n| n.ends_with(".jnl")).count();
    if journals == 0 {
        return Err(StorageError::Damaged {
            what: "no journal (`*.jnl`) is left".into(),
        });
    }
    Ok(Found::Marked(keyspaces))
}

/// The keyspaces a mark lists, or `None` for text that is not a mark.
fn parse(text: &str) -> Option<Vec<(String, String)>> {
    let mut lines = text.lines();
    if lines.next()? != MARK_HEADER {
        return None;
    }
    let mut keyspaces = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let rest = line.strip_prefix("keyspace ")?;
        let (name, folder) = rest.split_once(' ')?;
        keyspaces.push((name.to_owned(), folder.to_owned()));
    }
    (!keyspaces.is_empty()).then_some(keyspaces)
}

/// Creates `dir` if need be and marks it as being created, before fjall
/// writes anything in it.
pub(crate) fn write_creating(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    put(dir, format!("{MARK_HEADER}\n{CREATING}\n"))
}

/// Writes the mark of a complete directory, listing `keyspaces` (name,
/// folder relative to `dir`).
pub(crate) fn write(dir: &Path, keyspaces: &[(&str, &Path)]) -> Result<()> {
    let mut text = format!("{MARK_HEADER}\n");
    for (name, folder) in keyspaces {
        text.push_str(&format!("keyspace {name} {}\n", relative(dir, folder)));
    }
    put(dir, text)
}

/// Writes the mark: to a temporary file first, then renamed over, then the
/// directory synced, so a crash leaves the old mark or the new one whole.
fn put(dir: &Path, text: String) -> Result<()> {
    use std::io::Write;
    let temporary = dir.join(format!("{MARK_FILE}.new"));
    let failed = |e: std::io::Error| io(&dir.join(MARK_FILE), e);
    let mut file = std::fs::File::create(&temporary).map_err(failed)?;
    file.write_all(text.as_bytes()).map_err(failed)?;
    file.sync_all().map_err(failed)?;
    std::fs::rename(&temporary, dir.join(MARK_FILE)).map_err(failed)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(failed)
}

/// `folder` as the mark names it: relative to `dir`, with `/` separators.
fn relative(dir: &Path, folder: &Path) -> String {
    let relative = folder.strip_prefix(dir).unwrap_or(folder);
    relative.to_string_lossy().replace('\\', "/")
}

/// Checks that fjall opened each keyspace where the mark says it was: a
/// keyspace it made anew would live in another folder.
pub(crate) fn check_folders(
    dir: &Path,
    marked: &[(String, String)],
    opened: &[(&str, &Path)],
) -> Result<()> {
    for (name, folder) in opened {
        let relative = relative(dir, folder);
        let expected = marked.iter().find(|(n, _)| n == name);
        match expected {
            Some((_, f)) if *f == relative => {}
            Some((_, f)) => {
                return Err(StorageError::Damaged {
                    what: format!("the keyspace `{name}` was at {f} and is now at {relative}"),
                });
            }
            None => {
                return Err(StorageError::Damaged {
                    what: format!("the mark does not list the keyspace `{name}`"),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_reads_back_what_was_written() {
        let text =
            format!("{MARK_HEADER}\nkeyspace objects keyspaces/1\nkeyspace meta keyspaces/2\n");
        assert_eq!(
            parse(&text),
            Some(vec![
                ("objects".to_owned(), "keyspaces/1".to_owned()),
                ("meta".to_owned(), "keyspaces/2".to_owned())
            ])
        );
        assert_eq!(parse("something else\nkeyspace a b\n"), None);
        assert_eq!(parse(&format!("{MARK_HEADER}\n")), None);
        assert_eq!(
            parse(&format!("{MARK_HEADER}\nnot a keyspace line\n")),
            None
        );
    }

    #[test]
    fn only_a_missing_or_empty_directory_is_new() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(matches!(inspect(&dir.path().join("nope")), Ok(Found::New)));
        assert!(matches!(inspect(dir.path()), Ok(Found::New)));
        std::fs::write(dir.path().join("notes.txt"), b"mine").expect("write");
        assert!(matches!(
            inspect(dir.path()),
            Err(StorageError::NotAStore { .. })
        ));
        std::fs::write(dir.path().join(FJALL_VERSION_FILE), b"3").expect("write");
        assert!(matches!(inspect(dir.path()), Ok(Found::Unmarked)));
    }
}
