//! The stream's subjects. Each key of each object has a subject of its
//! own, and the stream keeps one message per subject, so the log holds
//! each key's newest write and nothing older: compaction by the server,
//! per key, as JetStream's key-value buckets do. An object's alarm and its
//! name have a subject each too, and each shard one for its epoch.
//!
//! ```text
//! {prefix}.k.{shard}.{class}.{id}.{key}   a key's newest write
//! {prefix}.a.{shard}.{class}.{id}         the object's alarm
//! {prefix}.n.{shard}.{class}.{id}         the name the object's id was made from
//! {prefix}.e.{shard}                      the shard's epoch marker
//! {prefix}.c.{shard}.{class}.{id}         its staged batch's commit (see below)
//! {prefix}.s.{shard}.{class}.{id}.{txn}.{n}  message n of a staged batch
//! ```
//!
//! An object's batch too large for one atomic append is staged: its
//! messages go first under `s` subjects of their own (each holding the
//! subject and payload it stands for), then a commit under `c` makes them
//! count, then they are written to their own subjects and the stage is
//! purged (see `log/staged.rs`).
//!
//! `prefix` is `do.` and the stream's name; `id` is the object's 16 id
//! bytes in hex; `key` is `k` and the key's bytes in unpadded URL-safe
//! base64 (subject tokens cannot hold `.`, `*`, `>` or spaces, and may not
//! be empty).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::ReplicaError;

/// Which shard an object belongs to: its id's first four bytes (random,
/// or a MAC of its name: uniform either way) modulo the shard count.
pub fn shard_of(id: &[u8; 16], shards: u32) -> u32 {
    u32::from_be_bytes([id[0], id[1], id[2], id[3]]) % shards.max(1)
}

/// Whether `class` can be a subject token as it is.
pub(crate) fn check_class(class: &str) -> Result<(), ReplicaError> {
    let ok = !class.is_empty()
        && class
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ReplicaError::Config(format!(
            "the class name {class:?} cannot name a subject: letters, digits, `_` and `-` only"
        )))
    }
}

fn hex(id: &[u8; 16]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(32);
    for byte in id {
        text.push(char::from(DIGITS[usize::from(byte >> 4)]));
        text.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    text
}

fn unhex(text: &str) -> Option<[u8; 16]> {
    if text.len() != 32 {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(id)
}

/// The subjects of one stream.
#[derive(Debug, Clone)]
pub(crate) struct Subjects {
    prefix: String,
}

/// What a subject of the stream names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Named {
    Key {
        class: String,
        id: [u8; 16],
        key: Vec<u8>,
    },
    Alarm {
        class: String,
        id: [u8; 16],
    },
    Name {
        class: String,
        id: [u8; 16],
    },
    /// A staged batch's commit.
    Commit {
        shard: u32,
        class: String,
        id: [u8; 16],
    },
    /// One message of a staged batch.
    Stage {
        shard: u32,
        class: String,
        id: [u8; 16],
        txn: String,
    },
    Epoch,
}

impl Subjects {
    pub fn new(prefix: String) -> Self {
        Subjects { prefix }
    }

    /// Every subject of the stream.
    pub fn all(&self) -> String {
        format!("{}.>", self.prefix)
    }

    /// The kinds of subjects that make up objects' state: keys, alarms,
    /// names, and staged batches' commits.
    const STATE: [&'static str; 4] = ["k", "a", "n", "c"];

    /// The subjects of objects' state, of every shard.
    pub fn state(&self) -> Vec<String> {
        Self::STATE
            .iter()
            .map(|kind| format!("{}.{kind}.>", self.prefix))
            .collect()
    }

    /// The subjects of objects' state in `shards`.
    pub fn state_of(&self, shards: &[u32]) -> Vec<String> {
        shards
            .iter()
            .flat_map(|shard| Self::STATE.map(|kind| format!("{}.{kind}.{shard}.>", self.prefix)))
            .collect()
    }

    /// Every staged batch's messages, of every shard.
    pub fn stages(&self) -> String {
        format!("{}.s.>", self.prefix)
    }

    /// The messages of staged batch `txn` of an object.
    pub fn stage_of(&self, shard: u32, class: &str, id: &[u8; 16], txn: &str) -> String {
        format!("{}.s.{shard}.{class}.{}.{txn}.>", self.prefix, hex(id))
    }

    /// Message `n` of staged batch `txn` of an object.
    pub fn stage(&self, shard: u32, class: &str, id: &[u8; 16], txn: &str, n: usize) -> String {
        format!("{}.s.{shard}.{class}.{}.{txn}.{n}", self.prefix, hex(id))
    }

    /// The commit of an object's staged batch (one per object: the stream
    /// keeps its latest).
    pub fn commit(&self, shard: u32, class: &str, id: &[u8; 16]) -> String {
        format!("{}.c.{shard}.{class}.{}", self.prefix, hex(id))
    }

    pub fn key(&self, shard: u32, class: &str, id: &[u8; 16], key: &[u8]) -> String {
        format!(
            "{}.k.{shard}.{class}.{}.k{}",
            self.prefix,
            hex(id),
            URL_SAFE_NO_PAD.encode(key)
        )
    }

    pub fn alarm(&self, shard: u32, class: &str, id: &[u8; 16]) -> String {
        format!("{}.a.{shard}.{class}.{}", self.prefix, hex(id))
    }

    pub fn name(&self, shard: u32, class: &str, id: &[u8; 16]) -> String {
        format!("{}.n.{shard}.{class}.{}", self.prefix, hex(id))
    }

    pub fn epoch(&self, shard: u32) -> String {
        format!("{}.e.{shard}", self.prefix)
    }

    /// What `subject` names; `None` for a subject this crate does not write.
    pub fn parse(&self, subject: &str) -> Option<Named> {
        let rest = subject.strip_prefix(&self.prefix)?.strip_prefix('.')?;
        let mut tokens = rest.split('.');
        let kind = tokens.next()?;
        let shard: u32 = tokens.next()?.parse().ok()?;
        if kind == "e" {
            return tokens.next().is_none().then_some(Named::Epoch);
        }
        let class = tokens.next()?.to_owned();
        let id = unhex(tokens.next()?)?;
        let named = match kind {
            "k" => {
                let token = tokens.next()?.strip_prefix('k')?;
                let key = URL_SAFE_NO_PAD.decode(token).ok()?;
                Named::Key { class, id, key }
            }
            "a" => Named::Alarm { class, id },
            "n" => Named::Name { class, id },
            "c" => Named::Commit { shard, class, id },
            "s" => {
                let txn = tokens.next()?.to_owned();
                let _n: usize = tokens.next()?.parse().ok()?;
                Named::Stage {
                    shard,
                    class,
                    id,
                    txn,
                }
            }
            _ => return None,
        };
        tokens.next().is_none().then_some(named)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subject_names_what_it_was_made_from_and_keys_may_hold_any_bytes() {
        let subjects = Subjects::new("do.DO".into());
        let id = [0xab; 16];
        for key in [&b""[..], b"a.b c*>", "ключ".as_bytes(), &[0xff, 0, 0x2e]] {
            let subject = subjects.key(7, "Counter", &id, key);
            assert!(!subject.contains(' '), "{subject}");
            assert_eq!(subject.matches('.').count(), 6, "{subject}");
            assert_eq!(
                subjects.parse(&subject),
                Some(Named::Key {
                    class: "Counter".into(),
                    id,
                    key: key.to_vec()
                })
            );
        }
        assert_eq!(
            subjects.parse(&subjects.alarm(1, "C", &id)),
            Some(Named::Alarm {
                class: "C".into(),
                id
            })
        );
        assert_eq!(
            subjects.parse(&subjects.name(1, "C", &id)),
            Some(Named::Name {
                class: "C".into(),
                id
            })
        );
        assert_eq!(subjects.parse(&subjects.epoch(3)), Some(Named::Epoch));
        assert_eq!(
            subjects.parse(&subjects.commit(2, "C", &id)),
            Some(Named::Commit {
                shard: 2,
                class: "C".into(),
                id
            })
        );
        let stage = subjects.stage(2, "C", &id, "T1", 7);
        assert_eq!(
            subjects.parse(&stage),
            Some(Named::Stage {
                shard: 2,
                class: "C".into(),
                id,
                txn: "T1".into()
            })
        );
        let filter = subjects.stage_of(2, "C", &id, "T1");
        assert!(stage.starts_with(filter.trim_end_matches('>')), "{filter}");
        for foreign in [
            "do.other.k.1.C",
            "do.DO.x.1.C.00",
            "do.DO.k.1.C.zz.k",
            "elsewhere",
        ] {
            assert_eq!(subjects.parse(foreign), None, "{foreign}");
        }
        // The longest key fits a subject well inside the default control
        // line of 4 KiB.
        let long = subjects.key(1023, "Counter", &id, &[b'x'; 2048]);
        assert!(long.len() < 3000, "{}", long.len());
    }

    #[test]
    fn shards_come_from_the_id_and_stay_below_the_count() {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&1025u32.to_be_bytes());
        assert_eq!(shard_of(&id, 1024), 1);
        assert_eq!(shard_of(&id, 1), 0);
        assert!(check_class("Counter_2-x").is_ok());
        assert!(check_class("a.b").is_err());
        assert!(check_class("").is_err());
    }
}
