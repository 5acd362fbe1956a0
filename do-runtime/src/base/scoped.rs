//! Thread-local values set for the length of one call: the object whose
//! code runs now (its output gate), the sockets a `fetch` accepts.

/// Runs `f` with `value` in the thread-local `slot`; the previous value
/// comes back however `f` ends (a panic included).
pub(crate) fn with_local<T: 'static, R>(
    slot: &'static std::thread::LocalKey<std::cell::RefCell<Option<T>>>,
    value: T,
    f: impl FnOnce() -> R,
) -> R {
    struct Restore<T: 'static> {
        slot: &'static std::thread::LocalKey<std::cell::RefCell<Option<T>>>,
        previous: Option<T>,
    }
    impl<T: 'static> Drop for Restore<T> {
        fn drop(&mut self) {
            let previous = self.previous.take();
            self.slot.with(|c| *c.borrow_mut() = previous);
        }
    }
    let _restore = Restore {
        slot,
        previous: slot.with(|c| c.replace(Some(value))),
    };
    f()
}
