//! Backtraces of handler panics: a panic hook, installed once and chained to the
//! one before it, captures the backtrace of a panic raised while a handler runs
//! on this thread, for the panic's failure record.
//!
//! Invariants:
//! - Only panics inside [`catch_with_backtrace`] are captured (a thread-local
//!   flag); every other panic goes to the previous hook untouched, and so do these.
//! - The flag is restored when the call returns or unwinds, so nesting works and
//!   no captured text outlives its call.

use std::any::Any;
use std::backtrace::Backtrace;
use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;

thread_local! {
    static CAPTURING: Cell<bool> = const { Cell::new(false) };
    static CAPTURED: RefCell<Option<String>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

fn install_hook() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if CAPTURING.with(Cell::get) {
                let trace = Backtrace::force_capture().to_string();
                CAPTURED.with(|c| *c.borrow_mut() = Some(trace));
            }
            previous(info);
        }));
    });
}

/// A panic caught by [`catch_with_backtrace`]: its payload and, when the hook
/// saw it, its backtrace.
pub(crate) struct CaughtPanic {
    pub(crate) payload: Box<dyn Any + Send>,
    pub(crate) backtrace: Option<String>,
}

/// Runs `f`, catching a panic with its backtrace.
pub(crate) fn catch_with_backtrace<R>(f: impl FnOnce() -> R) -> Result<R, CaughtPanic> {
    install_hook();
    let was = CAPTURING.with(|c| c.replace(true));
    CAPTURED.with(|c| c.borrow_mut().take());
    let result = catch_unwind(AssertUnwindSafe(f));
    CAPTURING.with(|c| c.set(was));
    let backtrace = CAPTURED.with(|c| c.borrow_mut().take());
    result.map_err(|payload| CaughtPanic { payload, backtrace })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caught_panic_carries_the_backtrace_of_its_origin() {
        fn deep_in_the_handler() -> u32 {
            panic!("boom")
        }
        let caught = catch_with_backtrace(deep_in_the_handler).expect_err("it panicked");
        assert_eq!(caught.payload.downcast_ref::<&str>(), Some(&"boom"));
        let trace = caught.backtrace.expect("a backtrace");
        assert!(trace.contains("deep_in_the_handler"), "{trace}");
        // Nothing is left for a call that does not panic.
        assert_eq!(catch_with_backtrace(|| 7).ok(), Some(7));
        assert!(!CAPTURING.with(Cell::get));
    }
}
