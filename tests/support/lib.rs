//! Objects and helpers shared by the behaviour tests in `spec/`.

pub mod objects;

use std::path::Path;

use do_runtime::Runtime;

pub use objects::*;

/// A runtime over `dir` with every test class registered.
pub fn runtime(dir: &Path) -> Runtime {
    Runtime::builder()
        .data_dir(dir)
        .workers(2)
        .register::<Counter>()
        .register::<Recorder>()
        .register::<Notes>()
        .register::<Cells>()
        .register::<Bank>()
        .register::<Kv>()
        .register::<Tally>()
        .register::<TxnLab>()
        .register::<Netter>()
        .build()
        .expect("the test runtime builds")
}
