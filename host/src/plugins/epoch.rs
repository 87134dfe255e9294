//! The epoch ticker: the clock every plugin call's deadline is counted on,
//! running only while a call may need it.
//!
//! wasmtime interrupts a guest once the engine's epoch passes the deadline
//! its store was given, so something must advance the epoch. A thread that
//! did so every millisecond woke an idle proxy a thousand times a second,
//! about 2% of a core spent on nothing. This one falls asleep once no call
//! has started for longer than the longest deadline any call was given, so
//! that every call it could interrupt has ended or passed its deadline, and
//! the next call wakes it.
//!
//! Costs on a call: one atomic swap, and a wake-up (one system call) for
//! the first call after the ticker fell asleep.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use wasmtime::Engine;

/// How often the epoch advances: the unit of the per-call deadline.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// How often a sleeping ticker checks that its engine still exists, so
/// that it ends with the engine instead of sleeping for ever.
const ENGINE_CHECK: Duration = Duration::from_secs(1);

/// No call has started since the ticker last looked.
const IDLE: u8 = 0;
/// A call has started since the ticker last looked.
const CALLED: u8 = 1;
/// The ticker sleeps until a call wakes it.
const ASLEEP: u8 = 2;

/// Advances an engine's epoch every [`EPOCH_TICK`] while calls may run.
pub struct EpochTicker {
    state: AtomicU8,
    /// The longest deadline a call has been given, in ticks.
    longest_deadline: AtomicU64,
    thread: OnceLock<Thread>,
}

impl EpochTicker {
    /// Starts the ticker of `engine`; it ends once the engine is dropped.
    pub fn start(engine: &Engine) -> std::io::Result<Arc<EpochTicker>> {
        let ticker = Arc::new(EpochTicker {
            state: AtomicU8::new(IDLE),
            longest_deadline: AtomicU64::new(0),
            thread: OnceLock::new(),
        });
        let running = ticker.clone();
        let engine = engine.weak();
        let handle = std::thread::Builder::new()
            .name("sluice-epoch".into())
            .spawn(move || running.run(&engine))?;
        let _ = ticker.thread.set(handle.thread().clone());
        Ok(ticker)
    }

    /// Notes that a call whose deadline is `deadline_ticks` ticks away
    /// starts now, and wakes the ticker if it sleeps.
    pub fn call_starts(&self, deadline_ticks: u64) {
        // Read first: the read-modify-write is paid only when a deadline
        // grows, not on every call.
        if deadline_ticks > self.longest_deadline.load(Ordering::Relaxed) {
            self.longest_deadline
                .fetch_max(deadline_ticks, Ordering::Relaxed);
        }
        // Sequentially consistent with the ticker's own swap and
        // compare-exchange: either the ticker sees this call and stays
        // awake, or this call sees it asleep and wakes it.
        if self.state.swap(CALLED, Ordering::SeqCst) == ASLEEP {
            if let Some(thread) = self.thread.get() {
                thread.unpark();
            }
        }
    }

    /// Whether the ticker sleeps.
    #[cfg(test)]
    fn is_asleep(&self) -> bool {
        self.state.load(Ordering::SeqCst) == ASLEEP
    }

    fn run(&self, engine: &wasmtime::EngineWeak) {
        let mut idle_ticks = 0u64;
        while let Some(strong) = engine.upgrade() {
            strong.increment_epoch();
            drop(strong);
            if self.state.swap(IDLE, Ordering::SeqCst) == CALLED {
                idle_ticks = 0;
            } else {
                idle_ticks += 1;
            }
            // Idle ticks are counted from the tick that saw the last call
            // start, at most one tick after it started, and `longest` is
            // the deadline itself in ticks (what the store was given): with
            // more idle ticks than that plus one, the epoch has passed the
            // last call's deadline, so it has ended or traps at its next
            // check of the epoch.
            let quiet = idle_ticks > self.longest_deadline.load(Ordering::Relaxed) + 1;
            if quiet
                && self
                    .state
                    .compare_exchange(IDLE, ASLEEP, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                while self.state.load(Ordering::SeqCst) == ASLEEP {
                    std::thread::park_timeout(ENGINE_CHECK);
                    if engine.upgrade().is_none() {
                        return;
                    }
                }
                idle_ticks = 0;
            }
            std::thread::sleep(EPOCH_TICK);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use wasmtime::{Config, Instance, Module, Store, Trap};

    /// `(module (func (export "spin") (loop (br 0))))`: a call that never
    /// ends by itself.
    const SPIN: &[u8] = &[
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
        0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type: () -> ()
        0x03, 0x02, 0x01, 0x00, // one function of that type
        0x07, 0x08, 0x01, 0x04, b's', b'p', b'i', b'n', 0x00, 0x00, // export "spin"
        0x0a, 0x09, 0x01, 0x07, 0x00, 0x03, 0x40, 0x0c, 0x00, 0x0b, 0x0b, // loop { br 0 }
    ];

    fn engine() -> Engine {
        let mut config = Config::new();
        config.epoch_interruption(true);
        Engine::new(&config).unwrap()
    }

    fn wait_until(what: &str, condition: impl Fn() -> bool) {
        let started = Instant::now();
        while !condition() {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "waited 5 s for {what}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_ticker_with_no_calls_falls_asleep() {
        let engine = engine();
        let ticker = EpochTicker::start(&engine).unwrap();
        wait_until("the ticker to fall asleep", || ticker.is_asleep());
    }

    #[test]
    fn calls_starting_keep_it_awake() {
        let engine = engine();
        let ticker = EpochTicker::start(&engine).unwrap();
        ticker.call_starts(50);
        for _ in 0..20 {
            std::thread::sleep(EPOCH_TICK * 2);
            ticker.call_starts(50);
            assert!(!ticker.is_asleep());
        }
    }

    #[test]
    fn a_call_made_while_it_sleeps_still_meets_its_deadline() {
        let engine = engine();
        let ticker = EpochTicker::start(&engine).unwrap();
        let module = Module::new(&engine, SPIN).unwrap();
        let mut store = Store::new(&engine, ());
        let instance = Instance::new(&mut store, &module, &[]).unwrap();
        let spin = instance
            .get_typed_func::<(), ()>(&mut store, "spin")
            .unwrap();
        for _ in 0..3 {
            wait_until("the ticker to fall asleep", || ticker.is_asleep());
            let started = Instant::now();
            store.set_epoch_deadline(6);
            ticker.call_starts(5);
            let error = spin.call(&mut store, ()).unwrap_err();
            assert_eq!(error.downcast_ref::<Trap>(), Some(&Trap::Interrupt));
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "interrupted after {:?}",
                started.elapsed()
            );
        }
    }

    #[test]
    fn it_ends_with_its_engine() {
        let engine = engine();
        let ticker = EpochTicker::start(&engine).unwrap();
        wait_until("the ticker to fall asleep", || ticker.is_asleep());
        drop(engine);
        // The ticker holds its own reference to the state; once its thread
        // ends only the test's remains.
        wait_until("the ticker thread to end", || {
            Arc::strong_count(&ticker) == 1
        });
    }
}
