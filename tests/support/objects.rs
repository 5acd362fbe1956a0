//! The test classes.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use do_runtime::{Ctx, Error, ListOptions, durable_object};
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
