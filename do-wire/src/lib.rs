//! What `#[durable_object]` (do-macros) and do-runtime must agree on, in one
//! place: how a method's wire id is derived from its name, the methods the
//! runtime calls itself (and the `__private` function that decodes each
//! one's arguments), and the names a stub already uses. Not a public API:
//! do-runtime pins do-macros and this crate to one exact version.

/// The wire id of a method: 32-bit FNV-1a of its name. Derived from the name
/// alone, so reordering methods never changes the wire format.
///
/// ```
/// assert_eq!(do_wire::method_id(""), 0x811c_9dc5);
/// assert_eq!(do_wire::method_id("a"), 0xe40c_292c);
/// ```
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

/// The HTTP handler: on the stub as `fetch(request)`.
pub const FETCH: &str = "fetch";

/// A method the runtime calls itself, never on the stub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handler {
    /// The method's name.
    pub name: &'static str,
    /// The function of `do_runtime::__private` that decodes its arguments.
    pub args_fn: &'static str,
}

/// Runs when the object's alarm is due.
pub const ALARM: Handler = Handler {
    name: "alarm",
    args_fn: "alarm_args",
};
/// A message arrived on one of the object's WebSockets.
pub const WEBSOCKET_MESSAGE: Handler = Handler {
    name: "websocket_message",
    args_fn: "websocket_message_args",
};
/// One of the object's WebSockets closed.
pub const WEBSOCKET_CLOSE: Handler = Handler {
    name: "websocket_close",
    args_fn: "websocket_close_args",
};
/// One of the object's WebSockets failed.
pub const WEBSOCKET_ERROR: Handler = Handler {
    name: "websocket_error",
    args_fn: "websocket_error_args",
};

/// Every handler, in the order the macro documents them.
pub const HANDLERS: [Handler; 4] = [ALARM, WEBSOCKET_MESSAGE, WEBSOCKET_CLOSE, WEBSOCKET_ERROR];

/// Names the stub itself uses: a method with one of these names would be
/// shadowed by the stub's own item.
pub const RESERVED: &[&str] = &[
    "id",
    "name",
    "is_broken",
    "clone",
    "clone_from",
    "fmt",
    "deref",
    "raw",
    "from_raw",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_method_id_is_fnv1a_of_the_name() {
        // Reference values of 32-bit FNV-1a.
        assert_eq!(method_id("foobar"), 0xbf9c_f968);
        assert_ne!(method_id("increment"), method_id("decrement"));
    }

    #[test]
    fn no_handler_is_reserved_and_names_are_distinct() {
        for h in HANDLERS {
            assert!(!RESERVED.contains(&h.name), "{}", h.name);
            assert_ne!(h.name, FETCH);
        }
        let mut ids: Vec<u32> = HANDLERS.iter().map(|h| method_id(h.name)).collect();
        ids.push(method_id(FETCH));
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), HANDLERS.len() + 1);
    }
}
