//! One object's batch too large for one atomic append (more than
//! [`MAX_ATOMIC`] messages: a `delete_all` of many keys, say), appended
//! all or nothing all the same.
//!
//! 1. **Stage.** Each message goes under a subject of the batch's own
//!    (`s.{shard}.{class}.{id}.{txn}.{n}`), holding the subject and payload
//!    it stands for, in atomic batches of up to [`MAX_ATOMIC`], each fenced
//!    like any append. Nothing reads a stage alone.
//! 2. **Commit.** One fenced message on the object's commit subject names
//!    the stage and its size: from its sequence on, the batch is in the
//!    log. A read that meets it takes the batch's messages from the stage.
//! 3. **Finish.** The messages are written to their own subjects (so the
//!    stream keeps only each key's newest write, as for any batch), the
//!    commit is marked finished (that mark expires like a tombstone), and
//!    the stage is purged.
//!
//! A writer that dies, or is fenced, in between leaves a stage behind:
//! whoever claims the shard next finishes a committed one (the same
//! messages again: writing them twice changes nothing) and purges one never
//! committed, before it appends anything (see [`Log::claim`]). The writer
//! itself does not write the object again before its batch is finished: if
//! it cannot finish, it claims the shard again, which finishes it, or lets
//! the shard go.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::Ordering;

use async_nats::jetstream::{self, stream};
use futures_util::StreamExt;

use super::{Log, MAX_ATOMIC, unavailable};
use crate::error::ReplicaError;
use crate::record::{self, Staged};
use crate::subjects::Named;

/// A message to append: its shard, subject and payload.
type Message = (u32, String, bytes::Bytes);

/// Where the next staged appends of a [`Log`] stop, to test what a writer
/// that dies in the middle of one leaves behind.
#[cfg(feature = "testing")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupt {
    /// Nowhere: they run whole.
    Never = 0,
    /// With the stage in the log, before the commit: the append fails.
    BeforeCommit = 1,
    /// With the commit in the log, before the messages are written to
    /// their own subjects: the append succeeds.
    AfterCommit = 2,
}

impl Log {
    /// Makes this writer's next staged appends stop at `at`, as if it died
    /// there (tests only).
    #[cfg(feature = "testing")]
    pub fn interrupt_staged(&self, at: Interrupt) {
        self.interrupt.store(at as u8, Ordering::Release);
    }

    #[cfg(feature = "testing")]
    fn stops_at(&self, at: Interrupt) -> bool {
        self.interrupt.load(Ordering::Acquire) == at as u8
    }

    /// Appends one object's `messages` (of `shard`, more than one atomic
    /// append holds), staged (see the module's documentation): the
    /// commit's sequence, or a later one, once the batch is in the log.
    pub(super) async fn append_staged(
        &self,
        shard: u32,
        class: &str,
        id: &[u8; 16],
        messages: &[Message],
    ) -> Result<u64, ReplicaError> {
        let txn = self.token();
        let stage: Vec<Message> = messages
            .iter()
            .enumerate()
            .map(|(n, (_, subject, payload))| {
                (
                    shard,
                    self.subjects.stage(shard, class, id, &txn, n + 1),
                    record::staged(subject, payload),
                )
            })
            .collect();
        for chunk in stage.chunks(MAX_ATOMIC) {
            if let Err(e) = self.publish_settled(chunk).await {
                // Never committed, so never read: garbage, gone now or at
                // the shard's next claim.
                self.purge_stage(shard, class, id, &txn).await;
                return Err(e);
            }
        }
        #[cfg(feature = "testing")]
        if self.stops_at(Interrupt::BeforeCommit) {
            return Err(ReplicaError::Unavailable(
                "interrupted before its commit (a test)".into(),
            ));
        }
        let commit = [(
            shard,
            self.subjects.commit(shard, class, id),
            record::commit(Staged::Committed, messages.len(), &txn),
        )];
        // When this fails, the stage stays: the commit's outcome may be
        // unknown, and the shard's next claim finishes or purges it.
        let committed = self.publish_settled(&commit).await?;
        #[cfg(feature = "testing")]
        if self.stops_at(Interrupt::AfterCommit) {
            return Ok(committed);
        }
        match self.finish(shard, class, id, &txn, messages).await {
            Ok(last) => Ok(last),
            Err(e) => {
                // The batch is in the log (reads find it through its
                // commit), but not all in its subjects: the object may not
                // be written again until it is. Claiming the shard anew
                // finishes it; if that fails too, the shard is let go.
                tracing::warn!(target: "do_replica", shard, error = %e, "a staged batch is committed but not finished: claiming its shard again");
                if let Err(e) = self.claim(&[shard]).await {
                    tracing::warn!(target: "do_replica", shard, error = %e, "the shard is let go until it is claimed again");
                    if let Ok(fence) = self.fence_of(shard) {
                        fence.store(0, Ordering::Release);
                    }
                }
                Ok(committed)
            }
        }
    }

    /// Writes a committed staged batch's `messages` to their own subjects,
    /// marks its commit finished and purges its stage: the last sequence
    /// written.
    async fn finish(
        &self,
        shard: u32,
        class: &str,
        id: &[u8; 16],
        txn: &str,
        messages: &[Message],
    ) -> Result<u64, ReplicaError> {
        for chunk in messages.chunks(MAX_ATOMIC) {
            self.publish_settled(chunk).await?;
        }
        let finished = [(
            shard,
            self.subjects.commit(shard, class, id),
            record::commit(Staged::Applied, messages.len(), txn),
        )];
        let last = self.publish_settled(&finished).await?;
        self.purge_stage(shard, class, id, txn).await;
        Ok(last)
    }

    /// Purges staged batch `txn`'s messages; a failure is left to the
    /// shard's next claim.
    async fn purge_stage(&self, shard: u32, class: &str, id: &[u8; 16], txn: &str) {
        let filter = self.subjects.stage_of(shard, class, id, txn);
        if let Err(e) = self.stream.purge().filter(filter).await {
            tracing::debug!(target: "do_replica", shard, error = %e, "a stage is left for the shard's next claim");
        }
    }

    /// Finishes what writers before this one left staged in `shards` (see
    /// the module's documentation). Costs one read when nothing is staged.
    pub(super) async fn finish_staged(&self, shards: &[u32]) -> Result<(), ReplicaError> {
        let all = self.subjects.stages();
        match self.stream.get_last_raw_message_by_subject(&all).await {
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => return Ok(()),
            Err(e) => return Err(unavailable("cannot read the log's stages", e)),
            Ok(_) => {}
        }
        let ours: HashSet<u32> = shards.iter().copied().collect();
        let mut stages = BTreeSet::new();
        let mut subjects = self
            .stream
            .info_with_subjects(&all)
            .await
            .map_err(|e| unavailable("cannot list the log's stages", e))?;
        while let Some(subject) = subjects.next().await {
            let (subject, _) =
                subject.map_err(|e| unavailable("cannot list the log's stages", e))?;
            if let Some(Named::Stage {
                shard,
                class,
                id,
                txn,
            }) = self.subjects.parse(&subject)
                && ours.contains(&shard)
            {
                stages.insert((shard, class, id, txn));
            }
        }
        for (shard, class, id, txn) in stages {
            let commit = self.subjects.commit(shard, &class, &id);
            let committed = match self.stream.get_last_raw_message_by_subject(&commit).await {
                Ok(message) => match record::read_commit(&message.payload)? {
                    (Staged::Committed, count, named) if named == txn => Some(count),
                    _ => None,
                },
                Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => None,
                Err(e) => return Err(unavailable("cannot read a staged batch's commit", e)),
            };
            let Some(count) = committed else {
                self.purge_stage(shard, &class, &id, &txn).await;
                continue;
            };
            let Some(staged) = self.read_stage(shard, &class, &id, &txn, count).await? else {
                return Err(ReplicaError::Corrupt(format!(
                    "the committed staged batch {txn} lacks some of its {count} messages"
                )));
            };
            let messages: Vec<Message> = staged
                .into_iter()
                .map(|(subject, payload)| (shard, subject, payload))
                .collect();
            self.finish(shard, &class, &id, &txn, &messages).await?;
            tracing::info!(target: "do_replica", shard, messages = count, "finished a staged batch a writer before this one committed");
        }
        Ok(())
    }

    /// The messages staged batch `txn` stands for, in order, as subject
    /// and payload; `None` when its stage does not hold all `count` of them
    /// (it was finished and purged).
    pub(super) async fn read_stage(
        &self,
        shard: u32,
        class: &str,
        id: &[u8; 16],
        txn: &str,
        count: usize,
    ) -> Result<Option<Vec<(String, bytes::Bytes)>>, ReplicaError> {
        let filter = self.subjects.stage_of(shard, class, id, txn);
        let target = match self.stream.get_last_raw_message_by_subject(&filter).await {
            Ok(message) => message.sequence,
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {
                return Ok(None);
            }
            Err(e) => return Err(unavailable("cannot read a stage", e)),
        };
        let consumer = self
            .stream
            .create_consumer(jetstream::consumer::pull::OrderedConfig {
                filter_subject: filter,
                deliver_policy: jetstream::consumer::DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable("cannot read a stage", e))?;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| unavailable("cannot read a stage", e))?;
        let mut staged = Vec::with_capacity(count);
        loop {
            let message = match tokio::time::timeout(self.config.timeout, messages.next()).await {
                Ok(Some(Ok(message))) => message,
                Ok(Some(Err(e))) => return Err(unavailable("reading a stage broke off", e)),
                Ok(None) => break,
                // Purged while read: it was finished.
                Err(_) => return Ok(None),
            };
            let seq = message
                .info()
                .map_err(|e| ReplicaError::Corrupt(format!("a message without its place: {e}")))?
                .stream_sequence;
            let (subject, payload) = record::read_staged(&message.payload)?;
            let at = message.payload.len() - payload.len();
            staged.push((subject.to_owned(), message.payload.slice(at..)));
            if seq >= target {
                break;
            }
        }
        Ok((staged.len() == count).then_some(staged))
    }
}
