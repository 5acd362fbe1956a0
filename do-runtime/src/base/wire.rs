//! What the wire knows of methods: their ids, and what the runtime keeps
//! about each for spans and metrics.

/// What the runtime knows of a method by its id: for spans and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodInfo {
    /// The wire id.
    pub id: u32,
    /// The name.
    pub name: &'static str,
    /// Whether it returns `Result` (its reply's first byte tells `Ok` from `Err`).
    pub fallible: bool,
}

/// The wire id of a method: 32-bit FNV-1a of its name. Derived from the name
/// alone, so reordering methods never changes the wire format.
pub const fn method_id(name: &str) -> u32 {
    let bytes = name.as_bytes();
    let mut hash: u32 = 0x811c_9dc5;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u32;
        hash = hash.wrapping_mul(0x0100_0193);
        i += 1;
    }
    hash
}
