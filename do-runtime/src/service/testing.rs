//! Helpers for testing objects (feature `testing`).
//!
//! ```
//! # fn main() -> Result<(), do_runtime::Error> {
//! # let tokio = tokio::runtime::Runtime::new().unwrap();
//! # tokio.block_on(async {
//! use do_runtime::{durable_object, Ctx, Error, Runtime};
//!
//! pub struct Counter { ctx: Ctx }
//!
//! #[durable_object]
//! impl Counter {
//!     pub fn new(ctx: Ctx) -> Self { Self { ctx } }
//!     pub async fn increment(&self) -> Result<i64, Error> {
//!         let n = self.ctx.storage().get::<i64>("n").await?.unwrap_or(0) + 1;
//!         self.ctx.storage().put("n", &n)?;
//!         Ok(n)
//!     }
//! }
//!
//! let mut rt = Runtime::builder().register::<Counter>().build_for_test()?;
//! let counters = rt.namespace::<Counter>();
//! let id = counters.id_from_name("c");
//! counters.get(id.clone()).increment().await?;
//!
//! // Force a new instance: it must find its state in storage.
//! rt.evict(&id).await?;
//! assert_eq!(counters.get(id.clone()).increment().await?, 2);
//!
//! // Peek at (or seed) the object's storage directly.
//! let n = counters.with_storage(&id, |s| async move { s.get::<i64>("n").await }).await??;
//! assert_eq!(n, Some(2));
//!
//! // Restart the whole runtime on the same data.
//! rt.restart()?;
//! let counters = rt.namespace::<Counter>();
//! assert_eq!(counters.get(id).increment().await?, 3);
//! # Ok::<_, Error>(()) })?;
//! # Ok(()) }
//! ```

use std::ops::Deref;
use std::path::Path;

use crate::base::error::{Error, Result};
use crate::service::runtime::{Runtime, RuntimeBuilder};

/// A [`Runtime`] in a temporary directory that is removed when it is dropped.
/// Dereferences to the runtime.
pub struct TestRuntime {
    runtime: Option<Runtime>,
    builder: RuntimeBuilder,
    dir: tempfile::TempDir,
}

impl RuntimeBuilder {
    /// Builds the runtime in a fresh temporary directory (any `data_dir` is
    /// ignored), for tests.
    pub fn build_for_test(self) -> Result<TestRuntime> {
        let dir = tempfile::tempdir()
            .map_err(|e| Error::Setup(format!("cannot create a temporary directory: {e}")))?;
        let runtime = self.clone().data_dir(dir.path()).build()?;
        Ok(TestRuntime {
            runtime: Some(runtime),
            builder: self,
            dir,
        })
    }
}

impl TestRuntime {
    /// The temporary data directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the runtime (as a drop would) and starts a new one on the same
    /// data. Namespaces and stubs taken before must be taken again.
    pub fn restart(&mut self) -> Result<()> {
        drop(self.runtime.take());
        self.runtime = Some(self.builder.clone().data_dir(self.dir.path()).build()?);
        Ok(())
    }
}

impl Deref for TestRuntime {
    type Target = Runtime;
    fn deref(&self) -> &Runtime {
        match &self.runtime {
            Some(rt) => rt,
            // `restart` puts a runtime back before returning, or returns an
            // error and leaves the test failing anyway.
            None => panic!("the test runtime failed to restart"),
        }
    }
}

impl Drop for TestRuntime {
    fn drop(&mut self) {
        // The runtime goes before its directory.
        drop(self.runtime.take());
    }
}
