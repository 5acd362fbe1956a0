//! Handing a view's buffered writes to the commit thread: one atomic batch
//! of its data, its alarm's change and, until one is durable, its registry
//! entry.

use fjall::Slice;

use super::{ObjectStore, Registration, State};
use crate::alarm;
use crate::committer::{Commit, Ops};
use crate::error::{Result, StorageError};
use crate::keys::{DataPrefix, Space};
use crate::numbers;

impl ObjectStore {
    /// Whether writes are buffered that were not yet handed to the commit thread.
    pub fn has_unflushed(&self) -> bool {
        !self.state.borrow().is_clean()
    }

    /// Forgets the writes not yet handed to the commit thread (used when the
    /// object is reset after a panic). Handed-over batches still commit.
    pub fn discard_unflushed(&self) {
        drop_unflushed(self.state.borrow_mut(), StorageError::Discarded);
    }

    /// Hands the buffered writes to the commit thread as one atomic batch and
    /// returns the sequence number of the last batch handed over.
    pub fn flush(&self) -> Result<u64> {
        let mut state = self.state.borrow_mut();
        // Releases queue only behind a buffered confirmed write, so an
        // empty buffer has none waiting.
        if state.is_clean() {
            return Ok(state.submitted);
        }
        let seq = state.submitted + 1;
        // A name read back from a replicated log is registered again if the
        // object has data (its number).
        let renamed = std::mem::take(&mut state.renamed) && self.data_prefix()?.is_some();
        let stores_something = renamed
            || state.dirty.values().any(Option::is_some)
            || matches!(state.alarm_dirty, Some(Some(_)));
        // Data needs the object's number; deletes alone do not give it one
        // (without a number it has nothing stored to delete).
        let numbering = if stores_something {
            self.numbered().map(Some)
        } else {
            self.data_prefix()
        };
        let numbering = numbering.and_then(|prefix| match (stores_something, prefix) {
            (true, Some(p)) => Ok((prefix, self.registration(&mut state, seq, p)?)),
            _ => Ok((prefix, None)),
        });
        let (prefix, register) = match numbering {
            Ok(found) => found,
            Err(e) => {
                // The batch cannot be handed over: it is dropped whole and
                // whoever waits for it is told, as if the commit had failed.
                drop_unflushed(state, e.clone());
                return Err(e);
            }
        };
        let writes = std::mem::take(&mut state.dirty);
        let ops = match prefix {
            Some(p) => writes
                .iter()
                .map(|(k, v)| (p.with_key(k, |full| Slice::from(full)), v.clone()))
                .collect(),
            None => Ops::default(),
        };
        let stale = std::mem::take(&mut state.alarm_stale);
        let mut extra = match state.alarm_dirty.take() {
            Some(new) => {
                let old = state.alarm_handed.flatten();
                state.alarm_handed = Some(new);
                alarm::change(&self.prefix, old, new, &stale)
            }
            None => alarm::change(&self.prefix, None, None, &stale),
        };
        if let Some((number, name)) = &register {
            extra.push((
                Space::Known,
                self.prefix.as_bytes().to_vec().into(),
                Some(numbers::encode_known(*number, name)),
            ));
        }
        state.submitted = seq;
        if std::mem::take(&mut state.dirty_confirmed) {
            state.last_confirmed = seq;
        }
        state.inflight.push_back((seq, writes));
        let waiting = std::mem::take(&mut state.dirty_releases);
        // Held on this thread when it keeps its own; sent with the batch
        // to the commit thread otherwise.
        let (held, sent) = match &self.releases {
            Some(_) => (waiting, Vec::new()),
            None => (Vec::new(), waiting),
        };
        let commit = Commit {
            ops,
            extra,
            seq,
            sync: self.sync.clone(),
            releases: sent,
            registers: register.map(|(number, _)| Box::new((self.prefix, number))),
        };
        drop(state);
        if let Err(commit) = self.store.submit(commit) {
            // Nobody will commit this batch: fail whoever waits for it.
            let e = StorageError::Closed;
            self.sync.settle(seq, Some(&e));
            for release in commit.releases.into_iter().chain(held) {
                release(Err(e.clone()));
            }
            return Err(e);
        }
        if let Some(releases) = &self.releases {
            for release in held {
                releases.push(self.sync.clone(), seq, release);
            }
        }
        Ok(seq)
    }

    /// The registry entry batch `seq` must write, if any: until one is
    /// durable, every batch that stores something writes it again.
    fn registration(
        &self,
        state: &mut State,
        seq: u64,
        prefix: DataPrefix,
    ) -> Result<Option<(u64, String)>> {
        if let Registration::Pending(at) = state.registration
            && let Some(Ok(())) = self.sync.outcome(at)
        {
            state.registration = Registration::Done;
        }
        if state.registration == Registration::Done {
            return Ok(None);
        }
        let number = prefix.number();
        let name = state.name.clone().unwrap_or_default();
        if state.registration == Registration::Unknown {
            // One read per object lifetime: is it listed, with its name?
            if let Some(known) = self.store.known_name(&self.prefix)?
                && (known == name || name.is_empty())
            {
                state.registration = Registration::Done;
                return Ok(None);
            }
        }
        state.registration = Registration::Pending(seq);
        Ok(Some((number, name)))
    }
}

/// Drops the writes not yet handed over and tells their waiters `error`
/// (after letting go of the state, which a release may need).
fn drop_unflushed(mut state: std::cell::RefMut<'_, State>, error: StorageError) {
    state.dirty.clear();
    state.alarm_dirty = None;
    state.alarm_stale.clear();
    state.dirty_confirmed = false;
    let releases = std::mem::take(&mut state.dirty_releases);
    drop(state);
    for release in releases {
        release(Err(error.clone()));
    }
}
