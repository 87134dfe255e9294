//! Keeps a panic in one request's phase from killing its connection's task.
//!
//! Each phase runs inside [`catch`] (async) or [`catch_sync`]. A panic there
//! is caught and handed back as a [`Panicked`], which the proxy logs once
//! with the request id, counts, and turns into an internal error (a 500 when
//! nothing was sent yet). The process's panic hook, installed by
//! [`install_panic_hook`], stays quiet for panics caught this way and keeps
//! their message and location for that one log line; every other panic is
//! reported as before.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::pin;
use std::sync::Once;
use std::task::Poll;

thread_local! {
    /// How many guarded calls this thread is inside.
    static GUARD_DEPTH: Cell<u32> = const { Cell::new(0) };
    /// The last panic caught under a guard on this thread: message and location.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// A panic caught in a phase: its message and where it happened.
#[derive(Debug)]
pub struct Panicked(pub String);

impl std::fmt::Display for Panicked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Makes the process's panic hook leave guarded panics to the guard. Panics
/// anywhere else go to the hook that was installed before. Runs once.
pub fn install_panic_hook() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if GUARD_DEPTH.with(Cell::get) == 0 {
                previous(info);
                return;
            }
            let message = payload_text(info.payload());
            let described = match info.location() {
                Some(at) => format!("{message} at {}:{}", at.file(), at.line()),
                None => message,
            };
            LAST_PANIC.with(|last| *last.borrow_mut() = Some(described));
        }));
    });
}

/// Runs `f`; a panic in it comes back as `Err`.
pub fn catch_sync<R>(f: impl FnOnce() -> R) -> Result<R, Panicked> {
    GUARD_DEPTH.with(|depth| depth.set(depth.get() + 1));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    GUARD_DEPTH.with(|depth| depth.set(depth.get() - 1));
    result.map_err(|payload| caught(payload.as_ref()))
}

/// Runs `future` to completion; a panic in any of its polls comes back as
/// `Err`, after the future has been dropped.
pub async fn catch<F: Future>(future: F) -> Result<F::Output, Panicked> {
    let mut future = pin!(future);
    std::future::poll_fn(|cx| match catch_sync(|| future.as_mut().poll(cx)) {
        Ok(Poll::Pending) => Poll::Pending,
        Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
        Err(panicked) => Poll::Ready(Err(panicked)),
    })
    .await
}

/// The description the hook kept for this payload, or the payload's text
/// when the hook was not installed.
fn caught(payload: &(dyn std::any::Any + Send)) -> Panicked {
    let kept = LAST_PANIC.with(|last| last.borrow_mut().take());
    Panicked(kept.unwrap_or_else(|| payload_text(payload)))
}

/// The text a panic was raised with.
fn payload_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|text| (*text).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

/// Test-only: panics in `phase` when the request asks for it with the
/// `x-sluice-test-panic: PHASE` header and the process was started with
/// `SLUICE_TEST_PANIC=1`. Compiled into debug builds only, so a release
/// binary has no way to be made to panic on purpose.
#[cfg(debug_assertions)]
pub fn test_trigger(request: &pingora::http::RequestHeader, phase: &str) {
    static ARMED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if !*ARMED.get_or_init(|| std::env::var_os("SLUICE_TEST_PANIC").is_some_and(|v| v == "1")) {
        return;
    }
    if request
        .headers
        .get("x-sluice-test-panic")
        .is_some_and(|value| value.as_bytes() == phase.as_bytes())
    {
        panic!("test panic requested in {phase}");
    }
}

/// Release builds: no trigger.
#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn test_trigger(_request: &pingora::http::RequestHeader, _phase: &str) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sync_panic_comes_back_with_its_message_and_location() {
        install_panic_hook();
        let caught = catch_sync(|| -> u32 { panic!("boom {}", 7) }).unwrap_err();
        assert!(caught.0.starts_with("boom 7 at "), "{caught}");
        assert!(caught.0.contains("guard.rs"), "{caught}");
        assert_eq!(catch_sync(|| 5).unwrap(), 5);
    }

    #[tokio::test]
    async fn a_panic_after_an_await_is_caught_and_the_guard_unwinds() {
        install_panic_hook();
        let caught = catch(async {
            tokio::task::yield_now().await;
            let items: Vec<u8> = Vec::new();
            items[3]
        })
        .await
        .unwrap_err();
        assert!(caught.0.contains("index out of bounds"), "{caught}");
        assert_eq!(GUARD_DEPTH.with(Cell::get), 0);
        assert_eq!(catch(async { 1 }).await.unwrap(), 1);
    }
}
