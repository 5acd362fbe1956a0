//! The log itself: a JetStream stream, the shards this writer claimed, and
//! appending to and reading from it.
//!
//! **Fencing.** Each shard has an epoch subject. A writer claims a shard by
//! publishing its epoch there, on the condition (checked by the server)
//! that the subject's last message is still the one it read, and only if
//! that message holds an older epoch. Every append to the shard then
//! carries `Nats-Expected-Last-Subject-Sequence` = the sequence of its
//! marker, checked by the server against the epoch subject: once a newer
//! writer has published its marker, every append of the older one is
//! refused. A clustered stream refuses a second message with such a check
//! on the same subject while the first is in flight, so this writer has one
//! append in flight at a time: one atomic batch, which may hold messages of
//! many shards, each shard's first one carrying that shard's fence (the
//! server checks them all, and stores the batch only if all hold).
//!
//! **Atomicity.** One object's batch is in one atomic batch of messages (a
//! message per key, plus its alarm and name): JetStream stores all of them
//! or none. The objects' batches of one group share atomic batches of up to
//! [`MAX_ATOMIC`] messages. One object's batch of more is staged, then
//! committed by one message (see `staged.rs`).

mod staged;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream};
use futures_util::StreamExt;

use crate::config::ReplicaConfig;
use crate::error::ReplicaError;
use crate::record;
use crate::subjects::{Named, Subjects, check_class, shard_of};

#[cfg(feature = "testing")]
pub use staged::Interrupt;

/// The most messages one atomic append holds (JetStream's limit).
pub const MAX_ATOMIC: usize = 1000;

/// The header of an append's last message that names it, so that an
/// append whose acknowledgement was lost can be found (see `settle_doubt`).
const BATCH_HEADER: &str = "Do-Batch";
/// The header naming the writer of a fenced append (see
/// [`ReplicaConfig::writer`]).
pub const WRITER_HEADER: &str = "Do-Writer";

/// How an append no stream heard begins its error (see `publish_pack`).
const NOT_HEARD: &str = "no stream heard the append";

/// The stream's metadata key that records its shard count.
const SHARDS_KEY: &str = "do-shards";

/// One object's writes, appended together: all of them or none.
#[derive(Debug, Clone)]
pub struct ObjectWrites<'a> {
    /// The object's class.
    pub class: &'a str,
    /// The object's 16 id bytes.
    pub id: [u8; 16],
    /// Its keys' writes, in order: the stored value, or `None` to delete.
    pub writes: Vec<(&'a [u8], Option<&'a [u8]>)>,
    /// Its alarm, if the batch changes it: when it is due (ms since the
    /// Unix epoch) and its retries so far; `Some(None)`: deleted.
    pub alarm: Option<Option<(u64, u32)>>,
    /// The name its id was made from, if the batch records it.
    pub name: Option<&'a str>,
}

impl ObjectWrites<'_> {
    /// The messages this batch appends.
    pub fn messages(&self) -> usize {
        self.writes.len() + usize::from(self.alarm.is_some()) + usize::from(self.name.is_some())
    }
}

/// What the log holds for one object: a key's write, its alarm, its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A key's newest write (`None`: deleted).
    Write {
        /// The object's class.
        class: String,
        /// The object's 16 id bytes.
        id: [u8; 16],
        /// The key's bytes.
        key: Vec<u8>,
        /// The stored value, or `None` for a delete.
        value: Option<Vec<u8>>,
    },
    /// The object's alarm (`None`: deleted).
    Alarm {
        /// The object's class.
        class: String,
        /// The object's 16 id bytes.
        id: [u8; 16],
        /// When it is due (ms since the Unix epoch) and its retries so far.
        at: Option<(u64, u32)>,
    },
    /// The name the object's id was made from.
    Name {
        /// The object's class.
        class: String,
        /// The object's 16 id bytes.
        id: [u8; 16],
        /// The name.
        name: String,
    },
}

/// A connection to the replicated log.
pub struct Log {
    config: ReplicaConfig,
    client: async_nats::Client,
    js: jetstream::Context,
    stream: stream::Stream,
    subjects: Subjects,
    /// Each shard's epoch marker's stream sequence, once claimed (0: not
    /// claimed by this writer).
    fences: Vec<AtomicU64>,
    /// Each shard's epoch, as this writer last claimed it.
    epochs: Vec<AtomicU64>,
    /// Shards let go after an append whose outcome could not be known
    /// (see [`Log::doubtful`]).
    doubtful: Vec<std::sync::atomic::AtomicBool>,
    /// This writer's own random id, in its epoch markers.
    incarnation: String,
    /// An append's outcome could not be known (see `settle_doubt`): it may
    /// still be stored, so this writer's copy may miss it from now on.
    in_doubt: std::sync::atomic::AtomicBool,
    /// Where the next staged append stops, for tests (see
    /// [`Log::interrupt_staged`]).
    #[cfg(feature = "testing")]
    interrupt: std::sync::atomic::AtomicU8,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("stream", &self.config.stream)
            .field("epoch", &self.config.epoch)
            .field("shards", &self.config.shards)
            .finish()
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> ReplicaError {
    ReplicaError::Unavailable(format!("{what}: {e}"))
}

impl Log {
    /// Connects to the servers and opens the stream, creating it (with
    /// the configured replicas and shards) if it does not exist. A stream
    /// that exists must have the layout this crate writes.
    pub async fn open(config: ReplicaConfig) -> Result<Log, ReplicaError> {
        config.check()?;
        let addrs = config
            .servers
            .iter()
            .map(|s| {
                s.parse::<async_nats::ServerAddr>()
                    .map_err(|e| ReplicaError::Config(format!("the server address {s:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(config.timeout)
            .connect(addrs)
            .await
            .map_err(|e| unavailable(&format!("cannot connect to {:?}", config.servers), e))?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(config.timeout);
        let subjects = Subjects::new(config.subject_prefix());
        let wanted = stream::Config {
            name: config.stream.clone(),
            subjects: vec![subjects.all()],
            max_messages_per_subject: 1,
            num_replicas: config.replicas,
            allow_atomic_publish: true,
            allow_message_ttl: true,
            allow_direct: true,
            storage: stream::StorageType::File,
            metadata: [(SHARDS_KEY.to_owned(), config.shards.to_string())]
                .into_iter()
                .collect(),
            ..Default::default()
        };
        // The servers may be electing a leader (one was just lost): keep
        // asking for a while.
        let stream = again(&config, || async {
            let mut stream = js
                .get_or_create_stream(wanted.clone())
                .await
                .map_err(|e| unavailable("cannot open the stream", e))?;
            let info = stream
                .info()
                .await
                .map_err(|e| unavailable("cannot read the stream's settings", e))?;
            check_stream(&info.config, &config, &subjects)?;
            Ok(stream)
        })
        .await?;
        let fences = (0..config.shards).map(|_| AtomicU64::new(0)).collect();
        let epochs = (0..config.shards).map(|_| AtomicU64::new(0)).collect();
        let doubtful = (0..config.shards)
            .map(|_| std::sync::atomic::AtomicBool::new(false))
            .collect();
        let incarnation = client.new_inbox();
        let incarnation = incarnation
            .rsplit('.')
            .next()
            .unwrap_or(&incarnation)
            .to_owned();
        Ok(Log {
            #[cfg(feature = "testing")]
            interrupt: std::sync::atomic::AtomicU8::new(0),
            in_doubt: std::sync::atomic::AtomicBool::new(false),
            incarnation,
            config,
            client,
            js,
            stream,
            subjects,
            fences,
            epochs,
            doubtful,
        })
    }

    /// The settings this log was opened with.
    pub fn config(&self) -> &ReplicaConfig {
        &self.config
    }

    /// The shard of object `id`.
    pub fn shard_of(&self, id: &[u8; 16]) -> u32 {
        shard_of(id, self.config.shards)
    }

    /// Whether this writer holds `shard` (has claimed it, and no refused
    /// append has shown a newer epoch since) and may append to it (it is
    /// not waiting to be read back, see [`Log::doubtful`]).
    pub fn holds(&self, shard: u32) -> bool {
        self.fences
            .get(shard as usize)
            .is_some_and(|f| f.load(Ordering::Acquire) != 0)
            && !self
                .doubtful
                .get(shard as usize)
                .is_some_and(|d| d.load(Ordering::Acquire))
    }

    /// Whether an append's outcome could not be known (the log stayed
    /// unreachable while it was settled): it may still be stored, so a copy
    /// of the log kept by this writer may miss it, and should not record
    /// its position past it (a restart then reads it back).
    pub fn in_doubt(&self) -> bool {
        self.in_doubt.load(Ordering::Acquire)
    }

    /// Claims every shard for this writer's epoch (see [`Log::claim`]).
    pub async fn claim_all(&self) -> Result<(), ReplicaError> {
        let shards: Vec<u32> = (0..self.config.shards).collect();
        self.claim(&shards).await
    }

    /// Claims `shards` for this writer's epoch: from now on, appends of any
    /// older epoch to them are refused by the server. Fails with
    /// [`ReplicaError::StaleEpoch`] when a shard belongs to a newer epoch
    /// (this writer may never write it). A shard held by this same epoch
    /// (a restart, the process before this one) is taken over too: a new
    /// marker, so that the other process's appends are refused from now on.
    ///
    /// Then what writers before it left unfinished in these shards is
    /// finished: a staged batch committed but not all written to its
    /// subjects is written, a stage never committed is purged.
    pub async fn claim(&self, shards: &[u32]) -> Result<(), ReplicaError> {
        let epoch = self.config.epoch;
        let shards: Vec<(u32, u64)> = shards.iter().map(|&shard| (shard, epoch)).collect();
        self.claim_at(&shards).await
    }

    /// Claims each shard for an epoch of its own, as [`Log::claim`] does for
    /// the configured one: in a cluster, each shard's epoch is the revision
    /// of its owner key in etcd.
    pub async fn claim_at(&self, shards: &[(u32, u64)]) -> Result<(), ReplicaError> {
        for chunk in shards.chunks(64) {
            let claims = chunk
                .iter()
                .map(|&(shard, epoch)| again(&self.config, move || self.claim_one(shard, epoch)));
            for claimed in futures_util::future::join_all(claims).await {
                claimed?;
            }
        }
        let shards: Vec<u32> = shards.iter().map(|(shard, _)| *shard).collect();
        again(&self.config, || self.finish_staged(&shards)).await
    }

    /// Why an append to `shard`, which this writer does not hold, fails:
    /// fenced by a newer epoch, or let go after an append whose outcome
    /// could not be known (retryable: see [`Log::doubtful`]).
    fn not_held(&self, shard: u32) -> ReplicaError {
        if self
            .doubtful
            .get(shard as usize)
            .is_some_and(|d| d.load(Ordering::Acquire))
        {
            ReplicaError::Unavailable(format!(
                "shard {shard} was let go after an append whose outcome could not be known, until its objects are read back from the log"
            ))
        } else {
            ReplicaError::Fenced { shard }
        }
    }

    /// The shards let go after an append whose outcome could not be known
    /// (the log stayed unreachable while it was settled), with the epoch
    /// each was held at. The append may be in the log and not in this
    /// writer's copy. To take appends again, a shard is claimed again
    /// ([`Log::claim_at`]: nothing sent before can land after), its
    /// objects' copy is read back from the log, and then it is resumed
    /// ([`Log::resume`]).
    pub fn doubtful(&self) -> Vec<(u32, u64)> {
        self.doubtful
            .iter()
            .enumerate()
            .filter(|(_, d)| d.load(Ordering::Acquire))
            .map(|(shard, _)| {
                let epoch = self.epochs[shard].load(Ordering::Acquire);
                (shard as u32, epoch)
            })
            .collect()
    }

    /// The shards this writer holds (claimed, and not fenced since), with
    /// the epoch each was claimed at.
    pub fn held(&self) -> Vec<(u32, u64)> {
        (0..self.config.shards)
            .filter(|&shard| {
                self.fences
                    .get(shard as usize)
                    .is_some_and(|f| f.load(Ordering::Acquire) != 0)
            })
            .map(|shard| (shard, self.epochs[shard as usize].load(Ordering::Acquire)))
            .collect()
    }

    /// Lets `shards` take appends again once their copy was read back
    /// (see [`Log::doubtful`]).
    pub fn resume(&self, shards: &[u32]) {
        for &shard in shards {
            if let Some(doubt) = self.doubtful.get(shard as usize) {
                doubt.store(false, Ordering::Release);
            }
        }
    }

    /// Stops appending to `shards` (they moved to another writer, which
    /// fences them in the log anyway): their appends fail with
    /// [`ReplicaError::Fenced`] until they are claimed again.
    pub fn release(&self, shards: &[u32]) {
        for &shard in shards {
            if let Ok(fence) = self.fence_of(shard) {
                fence.store(0, Ordering::Release);
            }
            if let Some(doubt) = self.doubtful.get(shard as usize) {
                doubt.store(false, Ordering::Release);
            }
        }
    }

    /// The epoch this writer claimed `shard` at, while it holds it.
    pub fn epoch_of(&self, shard: u32) -> Option<u64> {
        if !self.holds(shard) {
            return None;
        }
        self.epochs
            .get(shard as usize)
            .map(|e| e.load(Ordering::Acquire))
    }

    async fn claim_one(&self, shard: u32, ours: u64) -> Result<(), ReplicaError> {
        let fence = self.fence_of(shard)?;
        let subject = self.subjects.epoch(shard);
        loop {
            let (last, current) = match self.stream.get_last_raw_message_by_subject(&subject).await
            {
                Ok(marker) => (marker.sequence, record::read_epoch(&marker.payload)?.0),
                Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => (0, 0),
                Err(e) => return Err(unavailable("cannot read a shard's epoch", e)),
            };
            if current > ours {
                fence.store(0, Ordering::Release);
                if let Some(doubt) = self.doubtful.get(shard as usize) {
                    doubt.store(false, Ordering::Release);
                }
                return Err(ReplicaError::StaleEpoch {
                    shard,
                    ours,
                    current,
                });
            }
            // Even a marker of this epoch is replaced: it may be another
            // process's (this one's predecessor, or a zombie given the same
            // epoch), whose appends in flight must be refused from now on.
            let marker = record::epoch(ours, &self.incarnation);
            let published = self
                .publish_if_last(&subject, last, marker, "cannot claim a shard")
                .await?;
            match published {
                Ok(ack) => {
                    if let Some(epoch) = self.epochs.get(shard as usize) {
                        epoch.store(ours, Ordering::Release);
                    }
                    fence.store(ack.sequence, Ordering::Release);
                    return Ok(());
                }
                // Another writer claimed it meanwhile: look again.
                Err(e) if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence => {
                    continue;
                }
                Err(e) => return Err(unavailable("cannot claim a shard", e)),
            }
        }
    }

    /// Agrees a value `name` with every writer of the log (the deployment
    /// secret ids are derived from, say): the first to propose one sets
    /// it, by the server's compare-and-set; everyone gets that one back.
    pub async fn agree(&self, name: &str, proposal: &[u8]) -> Result<Vec<u8>, ReplicaError> {
        check_class(name)?;
        // A server that just made the stream may not route to it yet.
        again(&self.config, || self.agree_once(name, proposal)).await
    }

    async fn agree_once(&self, name: &str, proposal: &[u8]) -> Result<Vec<u8>, ReplicaError> {
        let subject = format!("{}.m.{name}", self.config.subject_prefix());
        let proposed = bytes::Bytes::copy_from_slice(proposal);
        let published = self
            .publish_if_last(&subject, 0, proposed, "cannot agree a value")
            .await?;
        match published {
            Ok(_) => Ok(proposal.to_vec()),
            Err(e) if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence => {
                let agreed = self
                    .stream
                    .get_last_raw_message_by_subject(&subject)
                    .await
                    .map_err(|e| unavailable("cannot read an agreed value", e))?;
                Ok(agreed.payload.to_vec())
            }
            Err(e) => Err(unavailable("cannot agree a value", e)),
        }
    }

    /// The value `name` agreed through [`Log::agree`], if one was.
    pub async fn agreed(&self, name: &str) -> Result<Option<Vec<u8>>, ReplicaError> {
        again(&self.config, || self.agreed_once(name)).await
    }

    async fn agreed_once(&self, name: &str) -> Result<Option<Vec<u8>>, ReplicaError> {
        let subject = format!("{}.m.{name}", self.config.subject_prefix());
        match self.stream.get_last_raw_message_by_subject(&subject).await {
            Ok(message) => Ok(Some(message.payload.to_vec())),
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(unavailable("cannot read an agreed value", e)),
        }
    }

    fn fence_of(&self, shard: u32) -> Result<&AtomicU64, ReplicaError> {
        self.fences.get(shard as usize).ok_or_else(|| {
            ReplicaError::Config(format!(
                "shard {shard}: the log has {} shards",
                self.config.shards
            ))
        })
    }

    /// Appends each object's batch, all of it or none: its outcome, in the
    /// order given, is the stream sequence that made it durable (on a
    /// majority of the stream's replicas), or why it is not.
    ///
    /// The batches go out as few atomic batches as fit (up to
    /// [`MAX_ATOMIC`] messages each, one after another), whatever their
    /// shards: each shard's first message in one carries that shard's
    /// fence, so one atomic batch is checked against every shard it
    /// touches. When a fence refuses one, the shards that moved are found
    /// (by reading their markers), their batches fail, and the rest goes
    /// again without them. Within a shard, batches keep their order, and
    /// once one fails none of the later ones is tried (they may build on it).
    ///
    /// One object's batch of more than [`MAX_ATOMIC`] messages (a
    /// `delete_all` of many keys, say) is staged: its messages go out in
    /// atomic batches under subjects of their own, then one commit message
    /// makes them count (its sequence is the batch's), then they are
    /// written to their own subjects and the stage is purged. A read that
    /// meets a commit whose messages are not all written yet takes them
    /// from the stage; a stage never committed is never read.
    pub async fn append(&self, batches: &[ObjectWrites<'_>]) -> Vec<Result<u64, ReplicaError>> {
        #[cfg(feature = "testing")]
        if crate::testing::refused(&self.config.stream) {
            return batches
                .iter()
                .map(|_| Err(ReplicaError::Unavailable("refused by the test".into())))
                .collect();
        }
        let mut outcomes: Vec<Result<u64, ReplicaError>> = batches
            .iter()
            .map(|_| Err(ReplicaError::Unavailable("not appended".into())))
            .collect();
        // (shard, batch), by shard, each shard's in the order given.
        let mut items: Vec<(u32, usize)> = Vec::with_capacity(batches.len());
        // Objects with a batch refused before anything was sent: their
        // later batches build on it, and are refused too.
        let mut refused: std::collections::HashMap<(&str, [u8; 16]), ReplicaError> =
            std::collections::HashMap::new();
        for (i, batch) in batches.iter().enumerate() {
            let object = (batch.class, batch.id);
            let outcome = if let Some(e) = refused.get(&object) {
                Err(e.clone())
            } else if let Err(e) = check_class(batch.class) {
                Err(e)
            } else {
                Ok(())
            };
            match outcome {
                Ok(()) => items.push((self.shard_of(&batch.id), i)),
                Err(e) => {
                    refused.insert(object, e.clone());
                    outcomes[i] = Err(e);
                }
            }
        }
        items.sort_by_key(|(shard, _)| *shard);
        // Shards that failed: their later batches fail the same way.
        let mut failed: BTreeMap<u32, ReplicaError> = BTreeMap::new();
        let mut packs: Vec<Vec<(u32, usize)>> = Vec::new();
        let mut size = 0;
        for item in items {
            let messages = batches[item.1].messages();
            // A batch past one atomic append is staged (see `staged.rs`),
            // alone.
            match packs.last_mut() {
                Some(pack) if size + messages <= MAX_ATOMIC => pack.push(item),
                _ => {
                    packs.push(vec![item]);
                    size = 0;
                }
            }
            size += messages;
        }
        for mut pack in packs {
            loop {
                pack.retain(|&(shard, i)| {
                    let refused = match failed.get(&shard) {
                        Some(e) => Some(e.clone()),
                        None if !self.holds(shard) => Some(self.not_held(shard)),
                        None => None,
                    };
                    match refused {
                        Some(e) => {
                            outcomes[i] = Err(e);
                            false
                        }
                        None => true,
                    }
                });
                if pack.is_empty() {
                    break;
                }
                match self.append_pack(batches, &pack).await {
                    Ok(at) => {
                        for &(_, i) in &pack {
                            outcomes[i] = Ok(at);
                        }
                        break;
                    }
                    Err(ReplicaError::Fenced { .. }) => {
                        let moved = self.moved(&pack).await;
                        if moved.is_empty() {
                            // Refused by a fence, yet none moved: the log's
                            // answer cannot be trusted; fail them all.
                            let e = ReplicaError::Unavailable(
                                "an append was refused by a fence that did not move".into(),
                            );
                            for &(shard, _) in &pack {
                                failed.insert(shard, e.clone());
                            }
                            continue;
                        }
                        for shard in moved {
                            failed.insert(shard, ReplicaError::Fenced { shard });
                        }
                    }
                    Err(e) => {
                        for &(shard, _) in &pack {
                            failed.insert(shard, e.clone());
                        }
                    }
                }
            }
        }
        outcomes
    }

    /// The shards of `pack` whose epoch markers are no longer this
    /// writer's (a newer epoch claimed them): this writer lets them go.
    async fn moved(&self, pack: &[(u32, usize)]) -> Vec<u32> {
        let mut shards: Vec<u32> = pack.iter().map(|(shard, _)| *shard).collect();
        shards.dedup();
        let looks = shards.iter().map(|&shard| async move {
            let ours = self.fence_of(shard).ok()?.load(Ordering::Acquire);
            let subject = self.subjects.epoch(shard);
            let last = match self.stream.get_last_raw_message_by_subject(&subject).await {
                Ok(marker) => marker.sequence,
                Err(_) => return None,
            };
            (last != ours).then_some(shard)
        });
        let moved: Vec<u32> = futures_util::future::join_all(looks)
            .await
            .into_iter()
            .flatten()
            .collect();
        for &shard in &moved {
            if let Ok(fence) = self.fence_of(shard) {
                fence.store(0, Ordering::Release);
            }
        }
        moved
    }

    /// One atomic append of the batches `pack` (by shard), each shard
    /// fenced by its marker.
    async fn append_pack(
        &self,
        batches: &[ObjectWrites<'_>],
        pack: &[(u32, usize)],
    ) -> Result<u64, ReplicaError> {
        let mut messages: Vec<(u32, String, bytes::Bytes)> = Vec::new();
        for &(shard, i) in pack {
            let batch = &batches[i];
            for (key, value) in &batch.writes {
                messages.push((
                    shard,
                    self.subjects.key(shard, batch.class, &batch.id, key),
                    record::write(*value),
                ));
            }
            if let Some(at) = batch.alarm {
                messages.push((
                    shard,
                    self.subjects.alarm(shard, batch.class, &batch.id),
                    record::alarm(at),
                ));
            }
            if let Some(name) = batch.name {
                messages.push((
                    shard,
                    self.subjects.name(shard, batch.class, &batch.id),
                    bytes::Bytes::copy_from_slice(name.as_bytes()),
                ));
            }
        }
        // One atomic batch: only each subject's last message matters (the
        // stream keeps no other), so the others are not sent at all.
        let keep: Vec<bool> = {
            let mut last = std::collections::HashMap::with_capacity(messages.len());
            for (n, (_, subject, _)) in messages.iter().enumerate() {
                last.insert(subject.as_str(), n);
            }
            (0..messages.len())
                .map(|n| last.get(messages[n].1.as_str()) == Some(&n))
                .collect()
        };
        let mut keep = keep.into_iter();
        messages.retain(|_| keep.next().unwrap_or(true));
        match (messages.len(), pack) {
            (0, _) => Ok(0),
            (n, [(shard, i)]) if n > MAX_ATOMIC => {
                let batch = &batches[*i];
                self.append_staged(*shard, batch.class, &batch.id, &messages)
                    .await
            }
            _ => self.publish_settled(&messages).await,
        }
    }

    /// A token unique to this call: an atomic batch's id, a staged batch's.
    fn token(&self) -> String {
        let inbox = self.client.new_inbox();
        inbox.rsplit('.').next().unwrap_or(&inbox).to_owned()
    }

    /// Publishes `messages` (at most [`MAX_ATOMIC`], by shard) as one
    /// atomic batch, each shard's first message carrying its fence, and
    /// makes its outcome known (see `settle_doubt`).
    async fn publish_settled(
        &self,
        messages: &[(u32, String, bytes::Bytes)],
    ) -> Result<u64, ReplicaError> {
        let deadline = tokio::time::Instant::now() + self.config.timeout;
        loop {
            let batch_id = self.token();
            match self.publish_pack(messages, &batch_id).await {
                // The stream's open atomic batches (every writer's) are at
                // their cap: this one was refused whole; it goes again.
                Err(ReplicaError::Unavailable(why))
                    if why.contains("10210") && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                }
                // Heard by no stream: certainly not stored; it goes again.
                Err(ReplicaError::Unavailable(why))
                    if why.starts_with(NOT_HEARD) && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(ReplicaError::Unavailable(why)) => {
                    return self.settle_doubt(messages, &batch_id, why).await;
                }
                done => return done,
            }
        }
    }

    /// An append whose outcome is not known (no acknowledgement in time, a
    /// lost connection), made known: each shard it touched is claimed again
    /// by this writer (a new marker, on the condition that the last is still
    /// its own), after which nothing sent before can be stored; then the
    /// batch's last subject says whether it was (its last message carries
    /// the batch's id). The answer is then certain either way: `Ok` only if
    /// the log holds the batch, an error only if it never will. When even
    /// that cannot be done in four timeouts, the shards are let go (their
    /// appends fail until a new claim, which reads the log back).
    async fn settle_doubt(
        &self,
        messages: &[(u32, String, bytes::Bytes)],
        batch_id: &str,
        why: String,
    ) -> Result<u64, ReplicaError> {
        let mut shards: Vec<u32> = messages.iter().map(|(shard, _, _)| *shard).collect();
        shards.sort_unstable();
        shards.dedup();
        let give_up = |shards: &[u32], e: ReplicaError| {
            self.in_doubt.store(true, Ordering::Release);
            for &shard in shards {
                if let Ok(fence) = self.fence_of(shard) {
                    fence.store(0, Ordering::Release);
                }
            }
            for &shard in shards {
                if let Some(doubt) = self.doubtful.get(shard as usize) {
                    doubt.store(true, Ordering::Release);
                }
            }
            tracing::warn!(target: "do_replica", %why, error = %e, "an append's outcome could not be known: its shards are let go until they are read back");
            e
        };
        for &shard in &shards {
            match again(&self.config, || self.refence(shard)).await {
                Ok(()) => {}
                Err(e) => return Err(give_up(&shards, e)),
            }
        }
        let Some((_, last_subject, _)) = messages.last() else {
            return Err(ReplicaError::Unavailable(why));
        };
        let found = again(&self.config, || async {
            match self
                .stream
                .get_last_raw_message_by_subject(last_subject)
                .await
            {
                Ok(message) => Ok(Some(message)),
                Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
                Err(e) => Err(unavailable("cannot read the log", e)),
            }
        })
        .await;
        match found {
            Ok(Some(message))
                if message
                    .headers
                    .get(BATCH_HEADER)
                    .is_some_and(|id| id.as_str() == batch_id) =>
            {
                tracing::info!(target: "do_replica", %why, "an append whose acknowledgement was lost is in the log");
                Ok(message.sequence)
            }
            Ok(_) => Err(ReplicaError::Unavailable(format!(
                "{why} (it is not in the log, and never will be)"
            ))),
            Err(e) => Err(give_up(&shards, e)),
        }
    }

    /// Claims `shard` again for this writer's epoch, with a new marker:
    /// nothing this writer sent with the old one can be stored after.
    async fn refence(&self, shard: u32) -> Result<(), ReplicaError> {
        let fence = self.fence_of(shard)?;
        let current = fence.load(Ordering::Acquire);
        if current == 0 {
            return Err(ReplicaError::Fenced { shard });
        }
        let ours = self
            .epochs
            .get(shard as usize)
            .map_or(self.config.epoch, |e| e.load(Ordering::Acquire));
        let subject = self.subjects.epoch(shard);
        let marker = record::epoch(ours, &self.incarnation);
        let published = self
            .publish_if_last(&subject, current, marker, "cannot claim a shard again")
            .await?;
        match published {
            Ok(ack) => {
                fence.store(ack.sequence, Ordering::Release);
                Ok(())
            }
            Err(e) if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence => {
                // Ours, from a try whose answer was lost; or another's.
                let marker = self
                    .stream
                    .get_last_raw_message_by_subject(&subject)
                    .await
                    .map_err(|e| unavailable("cannot read a shard's epoch", e))?;
                let (epoch, incarnation) = record::read_epoch(&marker.payload)?;
                if epoch == ours && incarnation == self.incarnation.as_bytes() {
                    fence.store(marker.sequence, Ordering::Release);
                    Ok(())
                } else {
                    fence.store(0, Ordering::Release);
                    Err(ReplicaError::Fenced { shard })
                }
            }
            Err(e) => Err(unavailable("cannot claim a shard again", e)),
        }
    }

    /// Publishes `payload` on `subject` on the condition, checked by the
    /// server, that the subject's last message is still `last` (0: it has
    /// none): the outer error if it could not be sent, the inner one the
    /// server's answer (`WrongLastSequence` when another got there first).
    async fn publish_if_last(
        &self,
        subject: &str,
        last: u64,
        payload: bytes::Bytes,
        what: &str,
    ) -> Result<
        Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
        ReplicaError,
    > {
        let mut headers = HeaderMap::new();
        headers.insert(
            "Nats-Expected-Last-Subject-Sequence",
            last.to_string().as_str(),
        );
        Ok(self
            .js
            .publish_with_headers(subject.to_owned(), headers, payload)
            .await
            .map_err(|e| unavailable(what, e))?
            .await)
    }

    /// Publishes `messages` (by shard) as one atomic batch, or one message;
    /// each shard's first message carries its fence.
    async fn publish_pack(
        &self,
        messages: &[(u32, String, bytes::Bytes)],
        batch_id: &str,
    ) -> Result<u64, ReplicaError> {
        let count = messages.len();
        let key_prefix = format!("{}.k.", self.config.subject_prefix());
        let commit_prefix = format!("{}.c.", self.config.subject_prefix());
        let mut ack = None;
        let mut fenced_shard = None;
        for (n, (shard, subject, payload)) in messages.iter().cloned().enumerate() {
            let mut headers = HeaderMap::new();
            if fenced_shard != Some(shard) {
                fenced_shard = Some(shard);
                let fence = self.fence_of(shard)?.load(Ordering::Acquire);
                headers.insert(
                    "Nats-Expected-Last-Subject-Sequence",
                    fence.to_string().as_str(),
                );
                headers.insert(
                    "Nats-Expected-Last-Subject-Sequence-Subject",
                    self.subjects.epoch(shard).as_str(),
                );
                if let Some(writer) = &self.config.writer {
                    headers.insert(WRITER_HEADER, writer.as_str());
                }
            }
            // A deleted key's mark is removed by the server after a while:
            // deletes do not grow the log with history. So is the commit
            // of a staged batch written to its subjects.
            if (payload.as_ref() == [0] && subject.starts_with(&key_prefix))
                || (payload.first() == Some(&2) && subject.starts_with(&commit_prefix))
            {
                headers.insert(
                    "Nats-TTL",
                    format!("{}s", self.config.tombstone_ttl.as_secs()).as_str(),
                );
            }
            if count > 1 {
                headers.insert("Nats-Batch-Id", batch_id);
                headers.insert("Nats-Batch-Sequence", (n + 1).to_string().as_str());
            }
            if n + 1 == count {
                if count > 1 {
                    headers.insert("Nats-Batch-Commit", "1");
                }
                // How a lost acknowledgement is told from a lost append.
                headers.insert(BATCH_HEADER, batch_id);
                ack = Some(
                    self.js
                        .publish_with_headers(subject, headers, payload)
                        .await
                        .map_err(|e| unavailable("cannot append", e))?,
                );
            } else {
                self.client
                    .publish_with_headers(subject, headers, payload)
                    .await
                    .map_err(|e| unavailable("cannot append", e))?;
            }
        }
        let Some(ack) = ack else {
            return Ok(0);
        };
        match ack.await {
            Ok(ack) => Ok(ack.sequence),
            Err(e) if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence => {
                let shard = messages.first().map_or(0, |(shard, _, _)| *shard);
                Err(ReplicaError::Fenced { shard })
            }
            // No stream heard it (a server that just joined or restarted
            // has not learnt the stream's subjects yet): nothing is stored.
            Err(e) if e.kind() == jetstream::context::PublishErrorKind::StreamNotFound => {
                Err(ReplicaError::Unavailable(format!("{NOT_HEARD}: {e}")))
            }
            Err(e) => Err(unavailable("an append was not acknowledged", e)),
        }
    }

    /// Reads what the log holds of objects' state (keys, alarms, names),
    /// of every shard or of `shards`, from stream sequence `after + 1` on,
    /// handing each entry with its sequence to `each`, in stream order;
    /// returns the last sequence read (`after` if none). Each key's newest
    /// write is all the log keeps, so a read costs in proportion to the
    /// objects' size, not to how often they were written.
    ///
    /// A read the servers break off (an election, a lost server) starts
    /// again after the last entry handed over, up to four times.
    pub async fn read(
        &self,
        after: u64,
        shards: Option<&[u32]>,
        mut each: impl FnMut(u64, Entry) -> Result<(), ReplicaError>,
    ) -> Result<u64, ReplicaError> {
        let mut last = after;
        let mut attempts = 0;
        loop {
            match self.read_once(&mut last, shards, &mut each).await {
                Err(ReplicaError::Unavailable(why)) if attempts < 4 => {
                    attempts += 1;
                    tracing::debug!(target: "do_replica", %why, attempts, "reading the log again");
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                done => return done,
            }
        }
    }

    /// One try of [`Log::read`], from `*last + 1`, moving `*last` on as
    /// entries are handed over.
    async fn read_once(
        &self,
        last: &mut u64,
        shards: Option<&[u32]>,
        each: &mut impl FnMut(u64, Entry) -> Result<(), ReplicaError>,
    ) -> Result<u64, ReplicaError> {
        let after = *last;
        let filter_subjects = match shards {
            None => self.subjects.state(),
            Some(shards) => self.subjects.state_of(shards),
        };
        let deliver_policy = match after {
            0 => jetstream::consumer::DeliverPolicy::All,
            after => jetstream::consumer::DeliverPolicy::ByStartSequence {
                start_sequence: after + 1,
            },
        };
        // How far to read: the last message of the filters now, as the
        // stream's leader has it. The consumer may live on a replica that
        // has not applied everything yet: its count of what is pending is
        // not trusted alone.
        let mut target = 0;
        for filter in &filter_subjects {
            match self.stream.get_last_raw_message_by_subject(filter).await {
                Ok(message) => target = target.max(message.sequence),
                Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => {}
                Err(e) => return Err(unavailable("cannot read the log", e)),
            }
        }
        if target <= after {
            return Ok(after);
        }
        let consumer = self
            .stream
            .create_consumer(jetstream::consumer::pull::OrderedConfig {
                filter_subjects,
                deliver_policy,
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable("cannot read the log", e))?;
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| unavailable("cannot read the log", e))?;
        loop {
            let message = match tokio::time::timeout(self.config.timeout, messages.next()).await {
                Ok(Some(Ok(message))) => message,
                Ok(Some(Err(e))) => return Err(unavailable("reading the log broke off", e)),
                Ok(None) => return Ok(*last),
                Err(_) => {
                    return Err(ReplicaError::Unavailable("reading the log stalled".into()));
                }
            };
            let info = message
                .info()
                .map_err(|e| ReplicaError::Corrupt(format!("a message without its place: {e}")))?;
            let seq = info.stream_sequence;
            match self.subjects.parse(&message.subject) {
                // A staged batch's commit: its messages count from here, as
                // if they were here. Those not yet written to their own
                // subjects are only in the stage.
                Some(Named::Commit { shard, class, id }) => {
                    let (state, count, txn) = record::read_commit(&message.payload)?;
                    if state == record::Staged::Committed {
                        let Some(staged) = self.read_stage(shard, &class, &id, txn, count).await?
                        else {
                            // Finished and purged meanwhile: its messages
                            // are in their own subjects, further on.
                            return Err(ReplicaError::Unavailable(
                                "a staged batch was finished while it was read".into(),
                            ));
                        };
                        for (subject, payload) in &staged {
                            each(seq, self.entry(subject, payload)?)?;
                        }
                    }
                }
                _ => each(seq, self.entry(&message.subject, &message.payload)?)?,
            }
            *last = seq;
            if seq >= target {
                return Ok(seq);
            }
        }
    }

    /// What the message `payload` of `subject` says of an object's state.
    fn entry(&self, subject: &str, payload: &[u8]) -> Result<Entry, ReplicaError> {
        Ok(match self.subjects.parse(subject) {
            Some(Named::Key { class, id, key }) => Entry::Write {
                class,
                id,
                key,
                value: record::read_write(payload)?,
            },
            Some(Named::Alarm { class, id }) => Entry::Alarm {
                class,
                id,
                at: record::read_alarm(payload)?,
            },
            Some(Named::Name { class, id }) => Entry::Name {
                class,
                id,
                name: record::read_name(payload)?,
            },
            _ => {
                return Err(ReplicaError::Corrupt(format!(
                    "the subject {subject} is not one of an object's state"
                )));
            }
        })
    }

    /// The stream's last sequence now.
    pub async fn last_sequence(&self) -> Result<u64, ReplicaError> {
        Ok(self.state().await?.last_sequence)
    }

    /// How many messages the stream holds now (its size after compaction).
    pub async fn message_count(&self) -> Result<u64, ReplicaError> {
        Ok(self.state().await?.messages)
    }

    async fn state(&self) -> Result<stream::State, ReplicaError> {
        let mut stream = self.stream.clone();
        let info = stream
            .info()
            .await
            .map_err(|e| unavailable("cannot read the stream's state", e))?;
        Ok(info.state.clone())
    }
}

/// Runs `attempt` until it succeeds, fails for another reason than the
/// servers being unavailable, or four of the configured timeouts have
/// passed: an election after the loss of a server takes a few seconds.
async fn again<T, F, Fut>(config: &ReplicaConfig, mut attempt: F) -> Result<T, ReplicaError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ReplicaError>>,
{
    let deadline = tokio::time::Instant::now() + 4 * config.timeout;
    loop {
        match attempt().await {
            Err(ReplicaError::Unavailable(why)) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(target: "do_replica", %why, "the log is unavailable: trying again");
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            done => return done,
        }
    }
}

/// Refuses a stream laid out otherwise than this crate writes.
fn check_stream(
    found: &stream::Config,
    config: &ReplicaConfig,
    subjects: &Subjects,
) -> Result<(), ReplicaError> {
    let refuse = |why: String| Err(ReplicaError::Stream(format!("{}: {why}", config.stream)));
    if !found.subjects.contains(&subjects.all()) {
        return refuse(format!(
            "its subjects {:?} do not include {}",
            found.subjects,
            subjects.all()
        ));
    }
    if found.max_messages_per_subject != 1 {
        return refuse(format!(
            "it keeps {} messages per subject; the log needs 1 (per-key compaction)",
            found.max_messages_per_subject
        ));
    }
    if !found.allow_atomic_publish {
        return refuse("it does not allow atomic batches (nats-server 2.12 or later)".into());
    }
    if !found.allow_message_ttl {
        return refuse("it does not allow per-message TTLs (for tombstones)".into());
    }
    let shards = found.metadata.get(SHARDS_KEY).map(String::as_str);
    if shards != Some(config.shards.to_string().as_str()) {
        return refuse(format!(
            "it was made with {} shards; this writer has {}",
            shards.unwrap_or("no"),
            config.shards
        ));
    }
    Ok(())
}
