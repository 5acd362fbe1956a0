//! The test classes.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

use do_runtime::{AlarmInfo, Ctx, Error, ListOptions, durable_object};
use serde::{Deserialize, Serialize};

/// The seeds' counter.
pub struct Counter {
    ctx: Ctx,
}

#[durable_object]
impl Counter {
    pub fn new(ctx: Ctx) -> Self {
        Self { ctx }
    }

    pub async fn increment(&self, amount: i64) -> Result<i64, Error> {
        let value = self.ctx.storage().get::<i64>("value").await?.unwrap_or(0) + amount;
        self.ctx.storage().put("value", &value)?;
        Ok(value)
    }

    pub async fn value(&self) -> Result<i64, Error> {
        Ok(self.ctx.storage().get::<i64>("value").await?.unwrap_or(0))
    }
}

/// Records the order in which calls are delivered, in memory.
pub struct Recorder {
    seen: RefCell<Vec<u64>>,
}

#[durable_object]
impl Recorder {
    pub fn new(_ctx: Ctx) -> Self {
        Self {
            seen: RefCell::new(Vec::new()),
        }
    }

    /// Appends `n` on delivery, then sometimes yields, so later calls start
    /// while this one is suspended; returns `n`.
    pub async fn record(&self, n: u64) -> u64 {
        self.seen.borrow_mut().push(n);
        if n.is_multiple_of(7) {
            tokio::task::yield_now().await;
        }
        n
    }

    pub async fn log(&self) -> Vec<u64> {
        self.seen.borrow().clone()
    }

    /// The name of the thread the object runs on.
    pub async fn thread(&self) -> String {
        std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_owned()
    }

    /// Panics with `message`.
    pub async fn boom(&self, message: String) -> u64 {
        panic!("{message}")
    }
}

/// A thin typed view of storage, for the storage tests.
pub struct Notes {
    ctx: Ctx,
}

#[durable_object]
impl Notes {
    pub fn new(ctx: Ctx) -> Self {
        Self { ctx }
    }

    pub async fn put(&self, key: String, value: String) -> Result<(), Error> {
        self.ctx.storage().put(&key, &value)
    }

    pub async fn get(&self, key: String) -> Result<Option<String>, Error> {
        self.ctx.storage().get(&key).await
    }

    pub async fn get_number(&self, key: String) -> Result<Option<u64>, Error> {
        self.ctx.storage().get(&key).await
    }

    pub async fn delete(&self, key: String) -> Result<bool, Error> {
        self.ctx.storage().delete(&key).await
    }

    pub async fn delete_all(&self) -> Result<(), Error> {
        self.ctx.storage().delete_all().await
    }

    pub async fn list(&self, prefix: Option<String>) -> Result<Vec<(String, String)>, Error> {
        let mut options = ListOptions::new();
        options.prefix = prefix;
        self.ctx.storage().list(options).await
    }

    /// Writes, then reads back within the same call before any flush.
    pub async fn put_then_read(
        &self,
        key: String,
        value: String,
    ) -> Result<(Option<String>, Vec<String>), Error> {
        let storage = self.ctx.storage();
        storage.put(&key, &value)?;
        let read = storage.get::<String>(&key).await?;
        let keys = storage
            .list::<String>(ListOptions::new())
            .await?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        Ok((read, keys))
    }

    pub async fn fail(&self, message: String) -> Result<(), Error> {
        Err(Error::app(message))
    }

    /// Writes `key`, then panics before the write can commit.
    pub async fn write_then_panic(&self, key: String) -> Result<(), Error> {
        self.ctx.storage().put(&key, &"doomed".to_string())?;
        panic!("after writing {key}");
    }
}

/// In-memory state that is neither `Send` nor `Sync`.
pub struct Cells {
    hits: Rc<Cell<u32>>,
    names: RefCell<Vec<String>>,
}

#[durable_object]
impl Cells {
    pub fn new(_ctx: Ctx) -> Self {
        Self {
            hits: Rc::new(Cell::new(0)),
            names: RefCell::new(Vec::new()),
        }
    }

    pub async fn visit(&self, name: String) -> (u32, usize) {
        self.hits.set(self.hits.get() + 1);
        self.names.borrow_mut().push(name);
        (self.hits.get(), self.names.borrow().len())
    }

    /// Not exposed on the stub: private methods stay private.
    #[allow(dead_code)]
    async fn secret(&self) -> u32 {
        42
    }
}

/// A user error type that travels typed to the caller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum BankError {
    Insufficient { balance: u64, wanted: u64 },
    Runtime(String),
}

impl From<Error> for BankError {
    fn from(e: Error) -> Self {
        BankError::Runtime(e.to_string())
    }
}

pub struct Bank {
    balance: Cell<u64>,
}

#[durable_object]
impl Bank {
    pub fn new(_ctx: Ctx) -> Self {
        Self {
            balance: Cell::new(100),
        }
    }

    pub async fn withdraw(&self, amount: u64) -> Result<u64, BankError> {
        let balance = self.balance.get();
        if amount > balance {
            return Err(BankError::Insufficient {
                balance,
                wanted: amount,
            });
        }
        self.balance.set(balance - amount);
        Ok(balance - amount)
    }
}

/// The whole storage API, for the storage tests.
pub struct Kv {
    ctx: Ctx,
}

#[durable_object]
impl Kv {
    pub fn new(ctx: Ctx) -> Self {
        Self { ctx }
    }

    pub async fn get_many(&self, keys: Vec<String>) -> Result<BTreeMap<String, String>, Error> {
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        self.ctx.storage().get_many(&keys).await
    }

    pub async fn put_many(&self, entries: Vec<(String, String)>) -> Result<(), Error> {
        self.ctx.storage().put_many(&entries)
    }

    pub async fn put_bytes(&self, key: String, value: Vec<u8>) -> Result<(), Error> {
        self.ctx.storage().put(&key, &value)
    }

    pub async fn get_bytes(&self, key: String) -> Result<Option<Vec<u8>>, Error> {
        self.ctx.storage().get(&key).await
    }

    pub async fn delete_many(&self, keys: Vec<String>) -> Result<usize, Error> {
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        self.ctx.storage().delete_many(&keys).await
    }

    pub async fn delete_all(&self) -> Result<(), Error> {
        self.ctx.storage().delete_all().await
    }

    pub async fn keys(&self, options: ListOptions) -> Result<Vec<String>, Error> {
        let entries = self.ctx.storage().list::<String>(options).await?;
        Ok(entries.into_iter().map(|(k, _)| k).collect())
    }

    /// Puts and deletes without flushing, then lists in the same call.
    pub async fn write_then_keys(
        &self,
        puts: Vec<String>,
        deletes: Vec<String>,
        options: ListOptions,
    ) -> Result<Vec<String>, Error> {
        let storage = self.ctx.storage();
        for key in &puts {
            storage.put(key, key)?;
        }
        for key in &deletes {
            storage.delete(key).await?;
        }
        let entries = storage.list::<String>(options).await?;
        Ok(entries.into_iter().map(|(k, _)| k).collect())
    }

    pub async fn put_unconfirmed(&self, key: String, value: String) -> Result<(), Error> {
        let options = do_runtime::WriteOptions::new().allow_unconfirmed(true);
        self.ctx.storage().put_with(&key, &value, options)
    }

    pub async fn put_and_sync(&self, key: String, value: String) -> Result<(), Error> {
        self.ctx.storage().put(&key, &value)?;
        self.ctx.storage().sync().await
    }
}

/// A read-modify-write counter with a slow reader that yields mid-call.
pub struct Tally {
    ctx: Ctx,
}

#[durable_object]
impl Tally {
    pub fn new(ctx: Ctx) -> Self {
        Self { ctx }
    }

    pub async fn increment(&self) -> Result<i64, Error> {
        let storage = self.ctx.storage();
        let n = storage.get::<i64>("n").await?.unwrap_or(0) + 1;
        storage.put("n", &n)?;
        Ok(n)
    }

    /// Yields several times, so other calls run while this one is suspended.
    pub async fn peek_slowly(&self) -> Result<i64, Error> {
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        Ok(self.ctx.storage().get::<i64>("n").await?.unwrap_or(0))
    }
}

/// Transactions, with conflicts forced by calls back into the same object.
pub struct TxnLab {
    ctx: Ctx,
    runs: Cell<u32>,
}

#[durable_object]
impl TxnLab {
    pub fn new(ctx: Ctx) -> Self {
        Self {
            ctx,
            runs: Cell::new(0),
        }
    }

    fn me(&self) -> do_runtime::Stub<TxnLab> {
        self.ctx
            .env()
            .namespace::<TxnLab>()
            .get(self.ctx.id().clone())
    }

    pub async fn get(&self, key: String) -> Result<Option<i64>, Error> {
        self.ctx.storage().get(&key).await
    }

    pub async fn bump(&self, key: String) -> Result<i64, Error> {
        let n = self.ctx.storage().get::<i64>(&key).await?.unwrap_or(0) + 1;
        self.ctx.storage().put(&key, &n)?;
        Ok(n)
    }

    /// In a transaction: reads `key`, and on the first `interleave_runs` runs
    /// has another call write it (through its own stub) while suspended; then
    /// writes the value read plus 100. Returns (runs, value written).
    pub async fn add_hundred(
        &self,
        key: String,
        interleave_runs: u32,
    ) -> Result<(u32, i64), Error> {
        self.runs.set(0);
        let written = self
            .ctx
            .storage()
            .transaction(|txn| {
                let run = self.runs.get() + 1;
                self.runs.set(run);
                let key = key.clone();
                async move {
                    let v: i64 = txn.get(&key).await?.unwrap_or(0);
                    if run <= interleave_runs {
                        self.me().bump(key.clone()).await?;
                    }
                    txn.put(&key, &(v + 100))?;
                    Ok::<_, Error>(v + 100)
                }
            })
            .await?;
        Ok((self.runs.get(), written))
    }

    /// In a transaction: counts the keys under `prefix`; on the first run a
    /// call adds a key under it meanwhile. Writes the count to `count`.
    pub async fn count_prefix(&self, prefix: String) -> Result<(u32, usize), Error> {
        self.runs.set(0);
        let n = self
            .ctx
            .storage()
            .transaction(|txn| {
                let run = self.runs.get() + 1;
                self.runs.set(run);
                let prefix = prefix.clone();
                async move {
                    let n = txn
                        .list::<i64>(ListOptions::new().prefix(prefix.clone()))
                        .await?
                        .len();
                    if run == 1 {
                        self.me().bump(format!("{prefix}new")).await?;
                    }
                    txn.put("count", &(n as i64))?;
                    Ok::<_, Error>(n)
                }
            })
            .await?;
        Ok((self.runs.get(), n))
    }

    /// Moves `amount` from `from` to `to` in one transaction, with a
    /// read-your-writes check inside it.
    pub async fn transfer(&self, from: String, to: String, amount: i64) -> Result<bool, Error> {
        self.ctx
            .storage()
            .transaction(|txn| {
                let (from, to) = (from.clone(), to.clone());
                async move {
                    let a: i64 = txn.get(&from).await?.unwrap_or(0);
                    if a < amount {
                        txn.rollback();
                        return Ok(false);
                    }
                    let b: i64 = txn.get(&to).await?.unwrap_or(0);
                    txn.put(&from, &(a - amount))?;
                    txn.put(&to, &(b + amount))?;
                    assert_eq!(txn.get::<i64>(&from).await?, Some(a - amount));
                    Ok(true)
                }
            })
            .await
    }

    /// Writes in a transaction, then fails with `message`.
    pub async fn write_then_fail(&self, key: String, message: String) -> Result<(), Error> {
        self.ctx
            .storage()
            .transaction(|txn| {
                let (key, message) = (key.clone(), message.clone());
                async move {
                    txn.put(&key, &1i64)?;
                    Err::<(), _>(Error::app(message))
                }
            })
            .await
    }

    /// Writes in a transaction, rolls back; returns how often the closure ran.
    pub async fn write_then_rollback(&self, key: String) -> Result<u32, Error> {
        self.runs.set(0);
        self.ctx
            .storage()
            .transaction(|txn| {
                self.runs.set(self.runs.get() + 1);
                let key = key.clone();
                async move {
                    txn.put(&key, &1i64)?;
                    txn.rollback();
                    Ok::<_, Error>(())
                }
            })
            .await?;
        Ok(self.runs.get())
    }
}

/// Uses tokio's I/O inside a method.
pub struct Netter;

#[durable_object]
impl Netter {
    pub fn new(_ctx: Ctx) -> Self {
        Netter
    }

    /// Binds a loopback listener, connects to it, and echoes one byte.
    pub async fn echo(&self, byte: u8) -> Result<u8, Error> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let io = |e: std::io::Error| Error::app(e.to_string());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(io)?;
        let addr = listener.local_addr().map_err(io)?;
        let mut client = tokio::net::TcpStream::connect(addr).await.map_err(io)?;
        let (mut server, _) = listener.accept().await.map_err(io)?;
        client.write_all(&[byte]).await.map_err(io)?;
        let mut buf = [0u8; 1];
        server.read_exact(&mut buf).await.map_err(io)?;
        Ok(buf[0])
    }
}

/// Closes its input gate on demand, and loads state in its constructor.
pub struct Gatekeeper {
    ctx: Ctx,
    loaded: Rc<Cell<bool>>,
    flag: Rc<Cell<bool>>,
}

#[durable_object]
impl Gatekeeper {
    pub fn new(ctx: Ctx) -> Self {
        let loaded = Rc::new(Cell::new(false));
        let slot = loaded.clone();
        // A slow load: no call may run before it is done.
        ctx.block_concurrency_while(async move {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            slot.set(true);
        });
        Self {
            ctx,
            loaded,
            flag: Rc::new(Cell::new(false)),
        }
    }

    /// Whether the constructor's load had finished when this call ran.
    pub async fn loaded(&self) -> bool {
        self.loaded.get()
    }

    /// Holds the gate closed for `ms`, then sets the flag.
    pub async fn hold(&self, ms: u64) {
        let flag = self.flag.clone();
        self.ctx
            .block_concurrency_while(async move {
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                flag.set(true);
            })
            .await;
    }

    pub async fn flag(&self) -> bool {
        self.flag.get()
    }

    pub async fn echo(&self, payload: Vec<u8>) -> usize {
        payload.len()
    }

    /// Panics inside a blocking future.
    pub async fn poison(&self) {
        let _ = self
            .ctx
            .block_concurrency_while(async { panic!("poisoned load") });
    }
}

/// A constructor that fails: always for names starting with `always-`, on
/// the first attempt only for names starting with `once-` (it writes a key
/// first, which must not survive).
pub struct Fragile {
    ctx: Ctx,
}

static FAILED_ONCE: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

#[durable_object]
impl Fragile {
    pub fn new(ctx: Ctx) -> Self {
        let name = ctx.id().name().unwrap_or_default().to_owned();
        ctx.storage().put("half-built", &true).expect("put");
        if name.starts_with("always-") {
            panic!("constructor of {name} failed");
        }
        if name.starts_with("once-") {
            let first = {
                let mut failed = FAILED_ONCE.lock().unwrap();
                let first = !failed.contains(&name);
                if first {
                    failed.push(name.clone());
                }
                first
            };
            if first {
                panic!("constructor of {name} failed once");
            }
        }
        ctx.storage().put("built", &true).expect("put");
        Self { ctx }
    }

    pub async fn keys(&self) -> Result<Vec<String>, Error> {
        let entries = self.ctx.storage().list::<bool>(ListOptions::new()).await?;
        Ok(entries.into_iter().map(|(k, _)| k).collect())
    }
}

/// Calls a peer (or itself) recursively: A ↔ B and self calls.
pub struct Relay {
    ctx: Ctx,
    hops: Cell<u32>,
}

#[durable_object]
impl Relay {
    pub fn new(ctx: Ctx) -> Self {
        Self {
            ctx,
            hops: Cell::new(0),
        }
    }

    /// Returns `depth` after bouncing `depth` times between this object and `peer`.
    pub async fn bounce(&self, depth: u32, peer: String) -> Result<u32, Error> {
        self.hops.set(self.hops.get() + 1);
        if depth == 0 {
            return Ok(0);
        }
        let me = self.ctx.id().name().unwrap_or_default().to_owned();
        let next = self.ctx.env().namespace::<Relay>().get_by_name(&peer);
        Ok(next.bounce(depth - 1, me).await? + 1)
    }

    pub async fn hops(&self) -> u32 {
        self.hops.get()
    }
}

/// Slow calls that write, for shutdown tests.
pub struct Slow {
    ctx: Ctx,
}

#[durable_object]
impl Slow {
    pub fn new(ctx: Ctx) -> Self {
        Self { ctx }
    }

    /// Sleeps `ms`, then writes `key`.
    pub async fn write_after(&self, ms: u64, key: String) -> Result<(), Error> {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        self.ctx.storage().put(&key, &ms)
    }

    pub async fn keys(&self) -> Result<Vec<String>, Error> {
        let entries = self.ctx.storage().list::<u64>(ListOptions::new()).await?;
        Ok(entries.into_iter().map(|(k, _)| k).collect())
    }
}

/// How many times each named `Alarmed` object was constructed.
static ALARMED_BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// How many `Alarmed` objects named `name` were constructed.
pub fn alarmed_constructions(name: &str) -> usize {
    ALARMED_BUILT
        .lock()
        .map(|b| b.iter().filter(|n| *n == name).count())
        .unwrap_or(0)
}

/// An object with an alarm handler that records its runs, and can be made
/// to fail (by error or by panic) or to set the next alarm itself.
pub struct Alarmed {
    ctx: Ctx,
}

/// One run of `Alarmed::alarm`: its retry count, whether it was a retry,
/// and the clock's time (ms since the epoch) when it ran.
pub type AlarmRun = (u32, bool, u64);

fn millis(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[durable_object]
impl Alarmed {
    pub fn new(ctx: Ctx) -> Self {
        if let Ok(mut built) = ALARMED_BUILT.lock() {
            built.push(ctx.id().name().unwrap_or_default().to_owned());
        }
        Self { ctx }
    }

    /// Sets the alarm `ms` milliseconds from the runtime's now.
    pub async fn set_in(&self, ms: u64) -> Result<(), Error> {
        let at = self.ctx.now() + std::time::Duration::from_millis(ms);
        self.ctx.storage().set_alarm(at)
    }

    /// When the alarm is due (ms since the epoch).
    pub async fn alarm_at(&self) -> Result<Option<u64>, Error> {
        Ok(self.ctx.storage().get_alarm().await?.map(millis))
    }

    pub async fn delete_alarm(&self) -> Result<(), Error> {
        self.ctx.storage().delete_alarm()
    }

    /// The next `n` runs fail with an error.
    pub async fn fail_next(&self, n: u32) -> Result<(), Error> {
        self.ctx.storage().put("fail", &n)
    }

    /// The next `n` runs panic (their writes are lost, so they are counted
    /// in memory: see `panics`).
    pub async fn panic_next(&self, n: u32) -> Result<(), Error> {
        self.ctx.storage().put("panic", &n)
    }

    /// The next `n` runs each set the alarm again, `ms` later.
    pub async fn chain(&self, n: u32, ms: u64) -> Result<(), Error> {
        self.ctx.storage().put("chain", &(n, ms))
    }

    pub async fn runs(&self) -> Result<Vec<AlarmRun>, Error> {
        Ok(self.ctx.storage().get("runs").await?.unwrap_or_default())
    }

    pub async fn put(&self, key: String, value: String) -> Result<(), Error> {
        self.ctx.storage().put(&key, &value)
    }

    pub async fn clear(&self) -> Result<(), Error> {
        self.ctx.storage().delete_all().await?;
        Ok(())
    }

    pub async fn alarm(&self, info: AlarmInfo) -> Result<(), Error> {
        let storage = self.ctx.storage();
        let panics: u32 = storage.get("panic").await?.unwrap_or(0);
        if panics > 0 {
            // Counted outside storage: the panic discards this run's writes.
            storage.put("panic", &(panics - 1))?;
            storage.sync().await?;
            panic!("alarm handler panics on purpose");
        }
        let mut runs: Vec<AlarmRun> = storage.get("runs").await?.unwrap_or_default();
        runs.push((info.retry_count, info.is_retry, millis(self.ctx.now())));
        storage.put("runs", &runs)?;
        let fails: u32 = storage.get("fail").await?.unwrap_or(0);
        if fails > 0 {
            storage.put("fail", &(fails - 1))?;
            return Err(Error::app("alarm fails on purpose"));
        }
        let chain: Option<(u32, u64)> = storage.get("chain").await?;
        if let Some((n, ms)) = chain.filter(|(n, _)| *n > 0) {
            storage.put("chain", &(n - 1, ms))?;
            storage.set_alarm(self.ctx.now() + std::time::Duration::from_millis(ms))?;
        }
        Ok(())
    }
}

/// A typed binding for the binding tests: the limits of a rate limiter.
pub struct Limits {
    pub per_minute: u32,
}

/// Reads the runtime's bindings (SPEC B1).
pub struct Configured {
    ctx: Ctx,
}

#[durable_object]
impl Configured {
    pub fn new(ctx: Ctx) -> Self {
        Self { ctx }
    }

    pub async fn var(&self, name: String) -> Result<String, Error> {
        Ok(self.ctx.env().var(&name)?.to_owned())
    }

    /// Whether the secret `name` is `guess`: the secret itself never leaves.
    pub async fn secret_is(&self, name: String, guess: String) -> Result<bool, Error> {
        Ok(self.ctx.env().secret(&name)? == guess)
    }

    pub async fn per_minute(&self) -> Result<u32, Error> {
        Ok(self.ctx.env().get::<Limits>()?.per_minute)
    }

    /// Reads the secret and stores something derived from it (its length),
    /// so a call touching it leaves spans, metrics and stored data behind.
    pub async fn remember_secret_length(&self, name: String) -> Result<usize, Error> {
        let length = self.ctx.env().secret(&name)?.len();
        self.ctx.storage().put("length", &length)?;
        Ok(length)
    }
}

/// Aborts itself on demand (SPEC B3, `Ctx::abort`).
pub struct Aborter {
    ctx: Ctx,
}

#[durable_object]
impl Aborter {
    pub fn new(ctx: Ctx) -> Self {
        Self { ctx }
    }

    pub async fn put(&self, key: String) -> Result<(), Error> {
        self.ctx.storage().put(&key, &1u8)
    }

    pub async fn has(&self, key: String) -> Result<bool, Error> {
        Ok(self.ctx.storage().get::<u8>(&key).await?.is_some())
    }

    /// Writes `key` (not committed before the call ends), then aborts.
    pub async fn write_then_abort(&self, key: String) -> Result<(), Error> {
        self.ctx.storage().put(&key, &1u8)?;
        Err(self.ctx.abort("bad state"))
    }

    /// Waits `ms`, then answers.
    pub async fn wait(&self, ms: u64) -> u64 {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        ms
    }
}

/// Uses the lifecycle controls beside its calls: background work,
/// blocking futures, a count kept in memory and in storage, and a method
/// that blocks its thread.
pub struct Chores {
    ctx: Ctx,
    /// Tells instances apart: a new one gets a new token.
    token: u64,
    /// The stored count, as this instance believes it.
    count: Rc<Cell<i64>>,
}

#[durable_object]
impl Chores {
    pub fn new(ctx: Ctx) -> Self {
        static TOKENS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let count = Rc::new(Cell::new(0));
        let (storage, slot) = (ctx.storage().clone(), count.clone());
        ctx.block_concurrency_while(async move {
            slot.set(
                storage
                    .get::<i64>("count")
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or(0),
            );
        });
        let token = TOKENS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self { ctx, token, count }
    }

    pub async fn token(&self) -> u64 {
        self.token
    }

    /// Answers at once; `ms` later, in the background, writes `key`.
    pub async fn later(&self, key: String, ms: u64) {
        let storage = self.ctx.storage().clone();
        self.ctx.wait_until(async move {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            let _ = storage.put(&key, &1u8);
        });
    }

    /// Answers at once; `ms` later, the background work panics.
    pub async fn panic_later(&self, ms: u64) {
        self.ctx.wait_until(async move {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            panic!("the background work failed");
        });
    }

    pub async fn has(&self, key: String) -> Result<bool, Error> {
        Ok(self.ctx.storage().get::<u8>(&key).await?.is_some())
    }

    /// Holds the input gate for `ms`.
    pub async fn block_for(&self, ms: u64) {
        self.ctx
            .block_concurrency_while(tokio::time::sleep(std::time::Duration::from_millis(ms)))
            .await;
    }

    /// Adds one to the count in memory, and stores it.
    pub async fn increment(&self) -> Result<i64, Error> {
        self.count.set(self.count.get() + 1);
        self.ctx.storage().put("count", &self.count.get())?;
        Ok(self.count.get())
    }

    /// The count as this instance believes it.
    pub async fn count(&self) -> i64 {
        self.count.get()
    }

    /// Blocks its worker thread for `ms`, as a synchronous loop would.
    pub async fn hog(&self, ms: u64) {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// Takes and returns ids and stubs of other objects (SPEC B2).
pub struct Passer {
    ctx: Ctx,
}

#[durable_object]
impl Passer {
    pub fn new(ctx: Ctx) -> Self {
        Self { ctx }
    }

    /// Returns the id it was given, as it arrived.
    pub async fn echo_id(&self, id: do_runtime::DurableObjectId) -> do_runtime::DurableObjectId {
        id
    }

    /// Calls the counter it was given.
    pub async fn bump(&self, counter: do_runtime::Stub<Counter>, by: i64) -> Result<i64, Error> {
        counter.increment(by).await
    }

    /// A stub of the counter called `name`, for the caller to call.
    pub async fn counter_for(&self, name: String) -> do_runtime::Stub<Counter> {
        self.ctx.env().namespace::<Counter>().get_by_name(&name)
    }

    /// Keeps `id` in storage.
    pub async fn remember(&self, id: do_runtime::DurableObjectId) -> Result<(), Error> {
        self.ctx.storage().put("id", &id)
    }

    /// The id kept, read back from storage.
    pub async fn recall(&self) -> Result<Option<do_runtime::DurableObjectId>, Error> {
        self.ctx.storage().get("id").await
    }

    /// Reads an id in its JSON form from the body and answers its text
    /// form, or 400 with why it was refused.
    pub async fn fetch(&self, request: do_runtime::Request) -> do_runtime::Response {
        match serde_json::from_slice::<do_runtime::DurableObjectId>(request.body()) {
            Ok(id) => do_runtime::Response::new(id.to_string().into()),
            Err(e) => {
                let mut response = do_runtime::Response::new(e.to_string().into());
                *response.status_mut() = do_runtime::http::StatusCode::BAD_REQUEST;
                response
            }
        }
    }
}

/// Raw values beside serde values, keys without values, alarms in
/// transactions, and write options on deletes and alarms.
pub struct Blobs {
    ctx: Ctx,
}

/// `allow_unconfirmed` when `confirm` is false.
fn options(confirm: bool) -> do_runtime::WriteOptions {
    do_runtime::WriteOptions::new().allow_unconfirmed(!confirm)
}

#[durable_object]
impl Blobs {
    pub fn new(ctx: Ctx) -> Self {
        Self { ctx }
    }

    pub async fn put_raw(&self, key: String, bytes: Vec<u8>) -> Result<(), Error> {
        self.ctx.storage().put_bytes(&key, bytes)
    }

    pub async fn get_raw(&self, key: String) -> Result<Option<Vec<u8>>, Error> {
        self.ctx.storage().get_bytes(&key).await
    }

    pub async fn put_text(&self, key: String, value: String) -> Result<(), Error> {
        self.ctx.storage().put(&key, &value)
    }

    pub async fn get_text(&self, key: String) -> Result<Option<String>, Error> {
        self.ctx.storage().get(&key).await
    }

    pub async fn texts(&self) -> Result<Vec<(String, String)>, Error> {
        self.ctx.storage().list(ListOptions::new()).await
    }

    pub async fn keys(&self, options: ListOptions) -> Result<Vec<String>, Error> {
        self.ctx.storage().list_keys(options).await
    }

    /// Writes `key` (raw), then lists the keys in the same call.
    pub async fn write_then_keys(&self, key: String) -> Result<Vec<String>, Error> {
        self.ctx.storage().put_bytes(&key, [1u8])?;
        self.ctx.storage().list_keys(ListOptions::new()).await
    }

    /// Every entry undecoded: key, whether raw, bytes.
    pub async fn raw_entries(&self) -> Result<Vec<(String, bool, Vec<u8>)>, Error> {
        Ok(self
            .ctx
            .storage()
            .list_raw(ListOptions::new())
            .await?
            .into_iter()
            .map(|(k, v)| (k, v.is_bytes(), v.as_bytes().to_vec()))
            .collect())
    }

    /// In one transaction: writes `key` (raw) and sets the alarm `in_ms`
    /// from now; reads both back inside; rolls back if asked.
    pub async fn txn_alarm(&self, key: String, in_ms: u64, rollback: bool) -> Result<bool, Error> {
        let at = self.ctx.now() + std::time::Duration::from_millis(in_ms);
        self.ctx
            .storage()
            .transaction(|txn| {
                let key = key.clone();
                async move {
                    txn.put_bytes(&key, [7u8])?;
                    txn.set_alarm(at)?;
                    let seen = txn.get_alarm().await? == Some(at)
                        && txn.get_bytes(&key).await? == Some(vec![7u8])
                        && txn.list_keys(ListOptions::new()).await?.contains(&key);
                    if rollback {
                        txn.rollback();
                    }
                    Ok::<_, Error>(seen)
                }
            })
            .await
    }

    /// Deletes the alarm in a transaction.
    pub async fn txn_delete_alarm(&self) -> Result<(), Error> {
        self.ctx
            .storage()
            .transaction(|txn| async move { txn.delete_alarm() })
            .await
    }

    /// When the alarm is due, in ms since the Unix epoch.
    pub async fn alarm_ms(&self) -> Result<Option<u64>, Error> {
        Ok(self.ctx.storage().get_alarm().await?.map(|at| {
            at.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
        }))
    }

    pub async fn alarm(&self, _info: AlarmInfo) -> Result<(), Error> {
        let rang = self.ctx.storage().get::<u32>("rang").await?.unwrap_or(0);
        self.ctx.storage().put("rang", &(rang + 1))
    }

    pub async fn rang(&self) -> Result<u32, Error> {
        Ok(self.ctx.storage().get::<u32>("rang").await?.unwrap_or(0))
    }

    pub async fn delete_keys(&self, keys: Vec<String>, confirm: bool) -> Result<usize, Error> {
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        self.ctx
            .storage()
            .delete_many_with(&keys, options(confirm))
            .await
    }

    pub async fn delete_everything(&self, confirm: bool) -> Result<(), Error> {
        self.ctx.storage().delete_all_with(options(confirm)).await
    }

    pub async fn set_alarm_in(&self, in_ms: u64, confirm: bool) -> Result<(), Error> {
        let at = self.ctx.now() + std::time::Duration::from_millis(in_ms);
        self.ctx.storage().set_alarm_with(at, options(confirm))
    }
}

/// Streams response bodies (issue 26 item 5).
pub struct Streamer {
    ctx: Ctx,
    /// Lets the server-sent events' last event go.
    release: Rc<tokio::sync::Notify>,
    /// How the last streamed download ended: `None` while it runs.
    ended: Rc<RefCell<Option<String>>>,
    /// Chunks of the last download sent so far.
    sent: Rc<Cell<usize>>,
    /// Chunks of the last upload read so far.
    seen: Rc<Cell<usize>>,
}

#[durable_object]
impl Streamer {
    pub fn new(ctx: Ctx) -> Self {
        Self {
            ctx,
            release: Rc::default(),
            ended: Rc::default(),
            sent: Rc::default(),
            seen: Rc::default(),
        }
    }

    pub async fn fetch(&self, request: do_runtime::Request) -> do_runtime::Response {
        let mut request = request;
        if request.uri().path() == "/upload" {
            return self.upload(&mut request).await;
        }
        let (mut response, body) = do_runtime::streaming_response();
        match request.uri().path() {
            // Server-sent events: the first now, the last once released.
            "/sse" => {
                response.headers_mut().insert(
                    "content-type",
                    do_runtime::http::HeaderValue::from_static("text/event-stream"),
                );
                let release = self.release.clone();
                self.ctx.wait_until(async move {
                    if body.send("data: first\n\n").await.is_ok() {
                        release.notified().await;
                        if body.send("data: last\n\n").await.is_ok() {
                            body.finish();
                        }
                    }
                });
            }
            // One chunk, then the sender goes without `finish`.
            "/broken" => {
                self.ctx.wait_until(async move {
                    let _ = body.send("partial").await;
                });
            }
            // `mib` chunks of 1 MiB.
            _ => {
                let mib: usize = request
                    .uri()
                    .query()
                    .and_then(|q| q.strip_prefix("mib="))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1);
                let (ended, sent) = (self.ended.clone(), self.sent.clone());
                *ended.borrow_mut() = None;
                sent.set(0);
                self.ctx.wait_until(async move {
                    let mut outcome = "complete".to_owned();
                    for _ in 0..mib {
                        if let Err(e) = body.send(vec![b'x'; 1 << 20]).await {
                            outcome = format!("stopped: {e}");
                            break;
                        }
                        sent.set(sent.get() + 1);
                    }
                    if outcome == "complete" {
                        body.finish();
                    }
                    *ended.borrow_mut() = Some(outcome);
                });
            }
        }
        response
    }

    /// Lets the last server-sent event go.
    pub async fn release(&self) {
        self.release.notify_one();
    }

    /// Chunks of the last upload read so far.
    pub async fn seen(&self) -> usize {
        self.seen.get()
    }

    /// Chunks of the last download sent so far.
    pub async fn sent(&self) -> usize {
        self.sent.get()
    }

    /// How the last download ended, if it did.
    pub async fn ended(&self) -> Option<String> {
        self.ended.borrow().clone()
    }
}

impl Streamer {
    /// Reads a streamed request body chunk by chunk: `bytes=<n>`, or 400
    /// with the error that ended it.
    async fn upload(&self, request: &mut do_runtime::Request) -> do_runtime::Response {
        let Some(mut body) = do_runtime::body_stream(request) else {
            return do_runtime::Response::new(format!("whole:{}", request.body().len()).into());
        };
        self.seen.set(0);
        let mut bytes = 0;
        while let Some(chunk) = body.next_chunk().await {
            match chunk {
                Ok(chunk) => {
                    bytes += chunk.len();
                    self.seen.set(self.seen.get() + 1);
                }
                Err(e) => {
                    let mut response = do_runtime::Response::new(e.to_string().into());
                    *response.status_mut() = do_runtime::http::StatusCode::BAD_REQUEST;
                    return response;
                }
            }
        }
        do_runtime::Response::new(format!("bytes={bytes}").into())
    }
}
