//! Detecting a journal that lost acknowledged commit groups.
//!
//! fjall recovers its journal tolerantly: at the first damaged batch it
//! truncates the journal file and opens with what came before. One flipped
//! byte can so hand back a counter acknowledged at 10 as 7, with no error.
//! fjall has no stricter mode, so the store checks it itself, two ways:
//!
//! - **The chain.** Every commit group numbers itself: in the same atomic
//!   batch as its writes it inserts [`CHAIN`]`<n>` into the meta keyspace
//!   and removes the previous group's key; into each other keyspace it
//!   writes, it likewise inserts `<n>` and removes the number of the last
//!   group that wrote there; and the meta entry's value lists, for each
//!   keyspace, that last group. An intact store holds one such key per
//!   keyspace, and each agrees with the meta entry. When recovery drops
//!   groups from the middle of the journal (a sealed journal file cut,
//!   later files replayed), the last group before the gap keeps its key,
//!   because the group that removed it is gone: two keys, a gap. Keys in
//!   every keyspace written, because fjall flushes each keyspace on its own
//!   and replays the journal only into those that had not flushed it: a
//!   keyspace flushed past the damage keeps its writes while another loses
//!   them, and then one disagrees with the meta entry. The key starts with
//!   `0xff`, which no other key of any keyspace starts with (see `keys`),
//!   so it sorts after them and no object's range holds it. Only the
//!   keyspaces a group writes get its number, so a group of data writes
//!   alone touches two keyspaces (the chain in all five cost a single
//!   durable write about 30 µs, BENCHMARKS.md).
//! - **The high-water mark.** After each group's fsync (just after its
//!   replies leave), its number is written to the file `commit-mark` beside
//!   the journal (two slots written in turn, each with its complement, so a
//!   torn or flipped write spoils one slot and never both). A journal that
//!   ends before the mark lost its tail.
//!
//! Either finding refuses the open with [`StorageError::Damaged`].
//!
//! The mark is written without an fsync of its own (that would double the
//! cost of a commit); the commit thread syncs it at most once a second and
//! when it stops. So after a process crash (`kill -9`) the mark is exact,
//! and after a power loss or an OS crash it may lag by up to a second of
//! groups: damage confined to those last groups is then not detected. (A
//! process crash between a group's replies and its mark, a window of
//! microseconds, leaves the mark one group behind.)
//! What is also not detected: a write made outside the commit thread (the
//! namespace numbers, the runtime's secret) lost at the journal's very end,
//! and a change that keeps fjall's 64-bit batch checksum valid. Damage to
//! data already flushed to fjall's tables fails the reads that meet it
//! (block checksums): an error, never stale data.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fjall::Keyspace;

use crate::error::{Result, StorageError};
use crate::marker::io;

/// The file beside the journal.
pub(crate) const FILE: &str = "commit-mark";

/// The start of a group's number, in every keyspace.
pub(crate) const CHAIN: &[u8] = b"\xffcommit-group\0";

/// How often the commit thread syncs the mark.
const SYNC_EVERY: Duration = Duration::from_secs(1);

/// How many keyspaces besides `meta` carry the chain: data, the alarm
/// index, alarms by object, the registry.
pub(crate) const TRACKED: usize = 4;

/// Their names, as errors give them.
const TRACKED_NAMES: [&str; TRACKED] = ["objects", "alarms", "alarm_of", "known"];

/// Where the chain stands: the last commit group's number, and for each
/// tracked keyspace the number of the last group that wrote to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Numbers {
    pub last: u64,
    pub lasts: [u64; TRACKED],
}

/// The value of `meta`'s chain key: each tracked keyspace's last group.
pub(crate) fn encode_lasts(lasts: &[u64; TRACKED]) -> Vec<u8> {
    lasts.iter().flat_map(|n| n.to_be_bytes()).collect()
}

fn decode_lasts(value: &[u8]) -> Option<[u64; TRACKED]> {
    if value.len() != 8 * TRACKED {
        return None;
    }
    let mut lasts = [0; TRACKED];
    for (last, bytes) in lasts.iter_mut().zip(value.chunks_exact(8)) {
        *last = u64::from_be_bytes(bytes.try_into().ok()?);
    }
    Some(lasts)
}

/// The one chain number `keyspace` holds (with its value), if any; two or
/// more mean the journal lost the groups that removed the older ones.
fn one_number(keyspace: &Keyspace, name: &str) -> Result<Option<(u64, Vec<u8>)>> {
    let damaged = |what: String| StorageError::Damaged { what };
    let mut found: Option<(u64, Vec<u8>)> = None;
    for entry in keyspace.prefix(CHAIN) {
        let (key, value) = entry.into_inner()?;
        let n = key
            .get(CHAIN.len()..)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
            .ok_or_else(|| damaged("a commit group's number is damaged".into()))?;
        if let Some((first, _)) = found {
            return Err(damaged(format!(
                "the journal lost commit groups of keyspace `{name}`: group {first} is kept but some groups after it, up to {n}, are gone"
            )));
        }
        found = Some((n, value.to_vec()));
    }
    Ok(found)
}

/// The key that names commit group `n`.
pub(crate) fn chain_key(n: u64) -> Vec<u8> {
    [CHAIN, &n.to_be_bytes()].concat()
}

/// One slot: the number and its complement.
fn encode(n: u64) -> [u8; 16] {
    let mut slot = [0; 16];
    slot[..8].copy_from_slice(&n.to_le_bytes());
    slot[8..].copy_from_slice(&(!n).to_le_bytes());
    slot
}

fn decode(slot: &[u8]) -> Option<u64> {
    let n = u64::from_le_bytes(slot.get(..8)?.try_into().ok()?);
    let check = u64::from_le_bytes(slot.get(8..16)?.try_into().ok()?);
    (check == !n).then_some(n)
}

/// The open mark file, owned by the commit thread.
pub(crate) struct HighWater {
    file: File,
    path: PathBuf,
    /// The next slot to write (0 or 1).
    slot: u64,
    /// Written since the last sync.
    dirty: bool,
    synced: Instant,
}

impl HighWater {
    /// Checks the journal recovered by fjall against the chain (`meta` and
    /// the [`TRACKED`] keyspaces `others`, in that order) and the mark in
    /// `dir`. Returns the mark opened for writing and the numbers to go on
    /// from: the last commit group's, and each tracked keyspace's last.
    pub fn open(
        dir: &Path,
        meta: &Keyspace,
        others: [&Keyspace; TRACKED],
    ) -> Result<(HighWater, Numbers)> {
        let damaged = |what: String| StorageError::Damaged { what };
        let (stored, value) = match one_number(meta, "meta")? {
            Some((n, value)) => (n, value),
            None => (0, Vec::new()),
        };
        let lasts = if stored == 0 {
            [0; TRACKED]
        } else {
            decode_lasts(&value)
                .ok_or_else(|| damaged("the last commit group's entry is damaged".into()))?
        };
        for ((keyspace, name), last) in others.iter().zip(TRACKED_NAMES).zip(lasts) {
            let held = one_number(keyspace, name)?.map_or(0, |(n, _)| n);
            if held != last {
                return Err(damaged(format!(
                    "the journal lost commit groups: keyspace `{name}` holds group {held}, but group {stored} says it last wrote there in group {last}"
                )));
            }
        }
        let numbers = Numbers {
            last: stored,
            lasts,
        };
        let path = dir.join(FILE);
        let mut file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(file) => file,
            // New, or made before the mark existed: nothing was numbered.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && stored == 0 => {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&path)
                    .map_err(|e| io(&path, e))?;
                let mut mark = HighWater {
                    file,
                    path,
                    slot: 0,
                    dirty: false,
                    synced: Instant::now(),
                };
                mark.write(stored)?;
                mark.sync()?;
                // The file's name, too, is durable before any group is
                // numbered: else a power loss could lose the file but
                // not the numbers, and refuse a healthy store.
                std::fs::File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| io(dir, e))?;
                return Ok((mark, numbers));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(damaged(format!(
                    "the commit mark file `{FILE}` is gone (the journal holds commit group {stored})"
                )));
            }
            Err(e) => return Err(io(&path, e)),
        };
        let mut bytes = Vec::with_capacity(32);
        file.read_to_end(&mut bytes).map_err(|e| io(&path, e))?;
        let slots = [bytes.get(..16), bytes.get(16..32)].map(|s| s.and_then(decode));
        if slots == [None, None] {
            return Err(damaged(format!("the commit mark file `{FILE}` is damaged")));
        }
        let acknowledged = mark_value(slots);
        if stored < acknowledged {
            return Err(damaged(format!(
                "the journal lost its last acknowledged writes: it ends at commit group {stored}, but groups up to {acknowledged} were acknowledged"
            )));
        }
        // Write next over the older slot (or the spoilt one).
        let slot = match slots {
            [Some(a), Some(b)] if a > b => 1,
            [Some(_), Some(_)] | [None, _] => 0,
            [Some(_), None] => 1,
        };
        let mut mark = HighWater {
            file,
            path,
            slot,
            dirty: false,
            synced: Instant::now(),
        };
        if stored > acknowledged {
            mark.write(stored)?;
        }
        Ok((mark, numbers))
    }

    /// Records that commit group `n` is durable; syncs the file when a
    /// second has passed since the last sync.
    pub fn advance(&mut self, n: u64) -> Result<()> {
        self.write(n)?;
        if self.synced.elapsed() >= SYNC_EVERY {
            self.sync()?;
        }
        Ok(())
    }

    fn write(&mut self, n: u64) -> Result<()> {
        let at = SeekFrom::Start(self.slot * 16);
        (self
            .file
            .seek(at)
            .and_then(|_| self.file.write_all(&encode(n))))
        .map_err(|e| io(&self.path, e))?;
        self.slot ^= 1;
        self.dirty = true;
        Ok(())
    }

    /// Makes the last number written durable.
    pub fn sync(&mut self) -> Result<()> {
        if self.dirty {
            self.file.sync_data().map_err(|e| io(&self.path, e))?;
            self.dirty = false;
        }
        self.synced = Instant::now();
        Ok(())
    }
}

fn mark_value(slots: [Option<u64>; 2]) -> u64 {
    let [a, b] = slots;
    a.max(b).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_with_any_one_byte_flipped_is_refused() {
        let slot = encode(0x0102_0304_0506_0708);
        assert_eq!(decode(&slot), Some(0x0102_0304_0506_0708));
        for i in 0..slot.len() {
            let mut flipped = slot;
            flipped[i] ^= 0x10;
            assert_eq!(decode(&flipped), None, "byte {i}");
        }
        assert_eq!(decode(&slot[..15]), None);
    }

    /// Copies `from` to `to`, all but the file called `skip`.
    fn copy_dir(from: &Path, to: &Path, skip: &std::ffi::OsStr) {
        std::fs::create_dir_all(to).expect("mkdir");
        for entry in std::fs::read_dir(from).expect("read_dir") {
            let entry = entry.expect("entry");
            let target = to.join(entry.file_name());
            if entry.file_type().expect("type").is_dir() {
                copy_dir(&entry.path(), &target, skip);
            } else if entry.file_name() != skip {
                std::fs::copy(entry.path(), &target).expect("copy");
            }
        }
    }

    /// Writes a counter 1 to 10, one acknowledged commit group each, and
    /// returns the directory (store closed) and the object.
    fn counter_at_ten() -> (tempfile::TempDir, crate::ObjectPrefix) {
        let dir = tempfile::tempdir().expect("tempdir");
        let prefix = crate::ObjectPrefix::new(1, [9; 16]);
        let store = crate::Store::open(dir.path(), Default::default()).expect("open");
        let object = store.object(prefix);
        for n in 1..=10u8 {
            object.put("n", vec![n], true).expect("put");
            object.flush().expect("flush");
            while !object.is_settled() {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        drop(object);
        store.close();
        drop(store);
        (dir, prefix)
    }

    #[derive(Debug, Default)]
    struct Sweep {
        refused: usize,
        intact: usize,
        /// (offset, the value read instead of 10)
        stale: Vec<(u64, Option<u8>)>,
    }

    /// Flips one byte at every offset of every journal of `source` in turn
    /// and opens a copy of the store each time.
    fn sweep(source: &Path, prefix: crate::ObjectPrefix) -> Sweep {
        let mut journals: Vec<PathBuf> = std::fs::read_dir(source)
            .expect("read_dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "jnl"))
            .collect();
        journals.sort();
        assert!(!journals.is_empty(), "no journal was written");
        let mut sweep = Sweep::default();
        let scratch = tempfile::tempdir().expect("tempdir");
        for (i, journal) in journals.iter().enumerate() {
            let name = journal.file_name().expect("name");
            // fjall preallocates a journal; past what was written it is
            // zeros. The copies keep a page of them.
            let mut written = std::fs::read(journal).expect("read");
            let used = written.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1);
            written.truncate((used + 4096).min(written.len()));
            for offset in 0..(used + 16).min(written.len()) {
                let copy = scratch.path().join(format!("{i}-{offset}"));
                copy_dir(source, &copy, name);
                let mut bytes = written.clone();
                bytes[offset] ^= 0x5a;
                std::fs::write(copy.join(name), bytes).expect("write");
                let read = crate::Store::open(&copy, Default::default()).and_then(|store| {
                    let value = store.object(prefix).get("n");
                    store.close();
                    value
                });
                match read {
                    Err(_) => sweep.refused += 1,
                    Ok(Some(v)) if v[..] == [10] => sweep.intact += 1,
                    Ok(v) => sweep
                        .stale
                        .push((offset as u64, v.and_then(|v| v.first().copied()))),
                }
                std::fs::remove_dir_all(&copy).expect("rm");
            }
        }
        sweep
    }

    fn open_error(dir: &Path) -> String {
        match crate::Store::open(dir, Default::default()) {
            Ok(_) => "opened".into(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_gap_in_the_chain_of_commit_groups_refuses_the_open() {
        let (dir, _) = counter_at_ten();
        {
            // As if the group that removed group 4's key were lost.
            let store = crate::Store::open(dir.path(), Default::default()).expect("open");
            store.put_meta_durable(&chain_key(4), b"").expect("put");
            store.close();
        }
        let error = open_error(dir.path());
        assert!(
            error.contains("lost commit groups of keyspace `meta`: group 4 is kept"),
            "{error}"
        );
    }

    #[test]
    fn a_keyspace_behind_the_others_refuses_the_open() {
        let (dir, _) = counter_at_ten();
        {
            // As if the data keyspace lost the last group's writes while
            // the others had flushed them to their tables.
            let store = crate::Store::open(dir.path(), Default::default()).expect("open");
            store.data().remove(chain_key(10)).expect("remove");
            store.data().insert(chain_key(9), []).expect("insert");
            store.put_meta_durable(b"probe", b"").expect("persist");
            store.close();
        }
        let error = open_error(dir.path());
        assert!(
            error.contains("keyspace `objects` holds group 9, but group 10 says it last wrote there in group 10"),
            "{error}"
        );
        // The registry was written only by the first group (registering
        // the object): losing that write shows too.
        let (dir, _) = counter_at_ten();
        {
            let store = crate::Store::open(dir.path(), Default::default()).expect("open");
            store.known().remove(chain_key(1)).expect("remove");
            store.put_meta_durable(b"probe", b"").expect("persist");
            store.close();
        }
        let error = open_error(dir.path());
        assert!(
            error.contains(
                "keyspace `known` holds group 0, but group 10 says it last wrote there in group 1"
            ),
            "{error}"
        );
    }

    #[test]
    fn a_lost_or_spoilt_commit_mark_is_refused_and_one_spoilt_slot_is_not() {
        let (dir, _) = counter_at_ten();
        let mark = dir.path().join(FILE);
        let bytes = std::fs::read(&mark).expect("read");
        assert_eq!(bytes.len(), 32);
        // One slot spoilt: the other (one group older) still holds.
        let mut one = bytes.clone();
        one[3] ^= 1;
        std::fs::write(&mark, &one).expect("write");
        assert_eq!(open_error(dir.path()), "opened");
        let mut both = std::fs::read(&mark).expect("read");
        both[3] ^= 1;
        both[19] ^= 1;
        std::fs::write(&mark, &both).expect("write");
        let error = open_error(dir.path());
        assert!(error.contains("`commit-mark` is damaged"), "{error}");
        std::fs::remove_file(&mark).expect("rm");
        let error = open_error(dir.path());
        assert!(error.contains("`commit-mark` is gone"), "{error}");
    }

    #[test]
    fn a_mark_ahead_of_the_journal_refuses_the_open() {
        let (dir, _) = counter_at_ten();
        let mark = dir.path().join(FILE);
        let mut ahead = encode(11).to_vec();
        ahead.extend(encode(12));
        std::fs::write(&mark, ahead).expect("write");
        let error = open_error(dir.path());
        assert!(
            error.contains("ends at commit group") && error.contains("up to 12 were acknowledged"),
            "{error}"
        );
    }

    #[test]
    fn a_journal_with_any_one_byte_flipped_never_opens_with_older_values() {
        let (dir, prefix) = counter_at_ten();
        let sweep = sweep(dir.path(), prefix);
        eprintln!(
            "byte-flip sweep: {} refused, {} intact, {} stale",
            sweep.refused,
            sweep.intact,
            sweep.stale.len()
        );
        assert!(
            sweep.stale.is_empty(),
            "served older values: {:?}",
            sweep.stale
        );
        assert!(sweep.refused > 0, "no flip was noticed at all");
    }
}
