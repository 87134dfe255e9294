//! A circuit breaker per endpoint: closed → open → half-open.
//!
//! - **Closed** admits everything. It opens after `consecutive_failures`
//!   failures in a row, or when, over the rolling `window`, at least
//!   `min_requests` outcomes were seen and the failure share reaches
//!   `failure_rate`.
//! - **Open** refuses everything for `open_for`. Each opening that follows a
//!   failed half-open doubles that time, up to `max_open_for`; a close
//!   resets it.
//! - **Half-open** admits at most `half_open_probes` requests at a time. A
//!   failed probe reopens the breaker; `close_after` successful probes close
//!   it.
//!
//! State sits behind one small mutex: every operation is a few comparisons
//! and counter updates, so an uncontended lock is the cheapest correct way
//! to keep the counters and the state consistent with each other.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Breaker settings of one placement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerSettings {
    /// Open after this many failures in a row (0 disables this trigger).
    pub consecutive_failures: u32,
    /// Open when the failure share over the window reaches this (0 disables).
    pub failure_rate: f64,
    /// The rolling window for the failure rate.
    pub window: Duration,
    /// Outcomes needed in the window before the rate is considered.
    pub min_requests: u32,
    /// How long the breaker stays open after its first opening.
    pub open_for: Duration,
    /// The longest it stays open after repeated openings.
    pub max_open_for: Duration,
    /// Requests admitted at once while half-open.
    pub half_open_probes: u32,
    /// Successful probes that close the breaker.
    pub close_after: u32,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_rate: 0.5,
            window: Duration::from_secs(10),
            min_requests: 20,
            open_for: Duration::from_secs(5),
            max_open_for: Duration::from_secs(60),
            half_open_probes: 1,
            close_after: 2,
        }
    }
}

/// The breaker's state, as reported in `X-Circuit-State` and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Admitting everything.
    Closed,
    /// Refusing everything until its open time is over.
    Open,
    /// Admitting a bounded number of probes.
    HalfOpen,
}

impl CircuitState {
    /// The header and label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }

    /// The value of the breaker-state gauge: 0 closed, 1 open, 2 half-open.
    pub fn gauge(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
        }
    }
}

/// What admission granted: a plain request, or one of the half-open probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Admitted while closed.
    Normal,
    /// Admitted as a half-open probe; it must be settled with
    /// [`Breaker::record`] or [`Breaker::release`].
    Probe,
}

/// A state change, reported so it can be logged and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The state before.
    pub from: CircuitState,
    /// The state after.
    pub to: CircuitState,
}

/// One endpoint's breaker.
#[derive(Debug)]
pub struct Breaker {
    inner: Mutex<Inner>,
    /// A copy of the state, written under the lock, so the common case (a
    /// closed breaker admitting a request) needs no lock.
    closed: AtomicBool,
}

#[derive(Debug)]
struct Inner {
    settings: BreakerSettings,
    state: CircuitState,
    consecutive_failures: u32,
    window: Window,
    open_until: Instant,
    current_open_for: Duration,
    probes_in_flight: u32,
    probe_successes: u32,
    /// When the breaker last left closed; `None` while closed.
    opened_at: Option<Instant>,
}

/// Outcome counts over a rolling window, in ten buckets.
#[derive(Debug)]
struct Window {
    bucket_nanos: u64,
    started: Instant,
    /// (bucket number since `started`, successes, failures)
    buckets: [(u64, u32, u32); WINDOW_BUCKETS],
}

const WINDOW_BUCKETS: usize = 10;

impl Window {
    fn new(span: Duration, now: Instant) -> Self {
        Self {
            // At least 1 ms, and never a truncation to zero for spans
            // past u64 nanoseconds: it divides every bucket lookup.
            bucket_nanos: u64::try_from(
                (span / WINDOW_BUCKETS as u32)
                    .max(Duration::from_millis(1))
                    .as_nanos(),
            )
            .unwrap_or(u64::MAX),
            started: now,
            buckets: [(u64::MAX, 0, 0); WINDOW_BUCKETS],
        }
    }

    fn bucket_number(&self, now: Instant) -> u64 {
        // u64 arithmetic: a u128 division would cost more than the rest of
        // the bookkeeping together.
        now.saturating_duration_since(self.started).as_nanos() as u64 / self.bucket_nanos
    }

    fn add(&mut self, now: Instant, failure: bool) {
        let number = self.bucket_number(now);
        let slot = &mut self.buckets[(number % WINDOW_BUCKETS as u64) as usize];
        if slot.0 != number {
            *slot = (number, 0, 0);
        }
        if failure {
            slot.2 = slot.2.saturating_add(1);
        } else {
            slot.1 = slot.1.saturating_add(1);
        }
    }

    /// (outcomes, failures) within the window ending at `now`.
    fn totals(&self, now: Instant) -> (u32, u32) {
        let current = self.bucket_number(now);
        self.buckets
            .iter()
            .filter(|(number, _, _)| {
                *number != u64::MAX && current.saturating_sub(*number) < WINDOW_BUCKETS as u64
            })
            .fold((0u32, 0u32), |(total, failures), (_, s, f)| {
                (
                    total.saturating_add(*s).saturating_add(*f),
                    failures.saturating_add(*f),
                )
            })
    }

    fn clear(&mut self) {
        self.buckets = [(u64::MAX, 0, 0); WINDOW_BUCKETS];
    }
}

impl Breaker {
    /// A closed breaker.
    pub fn new(settings: BreakerSettings) -> Self {
        let now = Instant::now();
        Self {
            inner: Mutex::new(Inner {
                settings,
                state: CircuitState::Closed,
                consecutive_failures: 0,
                window: Window::new(settings.window, now),
                open_until: now,
                current_open_for: settings.open_for,
                probes_in_flight: 0,
                probe_successes: 0,
                opened_at: None,
            }),
            closed: AtomicBool::new(true),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the counters in a state
        // worse than stale, so a poisoned lock is still used.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Applies new settings (on reload) without resetting the state.
    pub fn update_settings(&self, settings: BreakerSettings) {
        let mut inner = self.lock();
        if inner.settings.window != settings.window {
            inner.window = Window::new(settings.window, Instant::now());
        }
        inner.settings = settings;
    }

    /// The state now, moving open to half-open once its time is over.
    pub fn state(&self, now: Instant) -> CircuitState {
        if self.closed.load(Ordering::Acquire) {
            return CircuitState::Closed;
        }
        let inner = self.lock();
        match inner.state {
            CircuitState::Open if now >= inner.open_until => CircuitState::HalfOpen,
            state => state,
        }
    }

    /// How long the breaker has been away from closed (open or half-open),
    /// or `None` while it is closed.
    pub fn open_since(&self, now: Instant) -> Option<Duration> {
        self.lock()
            .opened_at
            .map(|at| now.saturating_duration_since(at))
    }

    /// Whether a request would be admitted now, without taking a probe slot.
    pub fn would_admit(&self, now: Instant) -> bool {
        if self.closed.load(Ordering::Acquire) {
            return true;
        }
        let inner = self.lock();
        match inner.state {
            CircuitState::Closed => true,
            CircuitState::Open => now >= inner.open_until && inner.settings.half_open_probes > 0,
            CircuitState::HalfOpen => inner.probes_in_flight < inner.settings.half_open_probes,
        }
    }

    /// Admits a request, or refuses it. Also returns the transition to
    /// half-open when this call made it.
    pub fn try_admit(&self, now: Instant) -> (Option<Admission>, Option<Transition>) {
        if self.closed.load(Ordering::Acquire) {
            return (Some(Admission::Normal), None);
        }
        let mut inner = self.lock();
        let mut transition = None;
        if inner.state == CircuitState::Open && now >= inner.open_until {
            inner.state = CircuitState::HalfOpen;
            inner.probes_in_flight = 0;
            inner.probe_successes = 0;
            transition = Some(Transition {
                from: CircuitState::Open,
                to: CircuitState::HalfOpen,
            });
        }
        let admission = match inner.state {
            CircuitState::Closed => Some(Admission::Normal),
            CircuitState::Open => None,
            CircuitState::HalfOpen if inner.probes_in_flight < inner.settings.half_open_probes => {
                inner.probes_in_flight += 1;
                Some(Admission::Probe)
            }
            CircuitState::HalfOpen => None,
        };
        (admission, transition)
    }

    /// Gives back a probe slot without an outcome (the request ended before
    /// the upstream could judge it, e.g. the client went away).
    pub fn release(&self, admission: Admission) {
        if admission == Admission::Probe {
            let mut inner = self.lock();
            inner.probes_in_flight = inner.probes_in_flight.saturating_sub(1);
        }
    }

    /// Records the outcome of an admitted request; returns the transition it caused.
    pub fn record(&self, admission: Admission, success: bool, now: Instant) -> Option<Transition> {
        let mut inner = self.lock();
        let transition = inner.record(admission, success, now);
        self.closed
            .store(inner.state == CircuitState::Closed, Ordering::Release);
        transition
    }
}

impl Inner {
    fn record(&mut self, admission: Admission, success: bool, now: Instant) -> Option<Transition> {
        let inner = self;
        if admission == Admission::Probe {
            inner.probes_in_flight = inner.probes_in_flight.saturating_sub(1);
        }
        match inner.state {
            CircuitState::Closed => {
                inner.window.add(now, !success);
                if success {
                    inner.consecutive_failures = 0;
                    return None;
                }
                inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
                let settings = inner.settings;
                let by_count = settings.consecutive_failures > 0
                    && inner.consecutive_failures >= settings.consecutive_failures;
                let (total, failures) = inner.window.totals(now);
                let by_rate = settings.failure_rate > 0.0
                    && total >= settings.min_requests.max(1)
                    && f64::from(failures) / f64::from(total) >= settings.failure_rate;
                if by_count || by_rate {
                    inner.current_open_for = settings.open_for;
                    return Some(inner.open(now, CircuitState::Closed));
                }
                None
            }
            CircuitState::HalfOpen if admission == Admission::Probe => {
                if success {
                    inner.probe_successes += 1;
                    if inner.probe_successes >= inner.settings.close_after.max(1) {
                        inner.state = CircuitState::Closed;
                        inner.consecutive_failures = 0;
                        inner.window.clear();
                        inner.current_open_for = inner.settings.open_for;
                        inner.opened_at = None;
                        return Some(Transition {
                            from: CircuitState::HalfOpen,
                            to: CircuitState::Closed,
                        });
                    }
                    None
                } else {
                    let doubled = inner.current_open_for.saturating_mul(2);
                    inner.current_open_for =
                        doubled.min(inner.settings.max_open_for.max(inner.settings.open_for));
                    Some(inner.open(now, CircuitState::HalfOpen))
                }
            }
            // Outcomes of requests admitted before the breaker opened do not
            // move an open or half-open breaker.
            CircuitState::HalfOpen | CircuitState::Open => None,
        }
    }
}

impl Inner {
    fn open(&mut self, now: Instant, from: CircuitState) -> Transition {
        self.state = CircuitState::Open;
        self.opened_at.get_or_insert(now);
        // Durations are bounded by the config; a sum past the clock's range
        // still leaves the breaker open for as long as it can represent.
        self.open_until = now
            .checked_add(self.current_open_for)
            .unwrap_or(now + Duration::from_secs(365 * 24 * 3600));
        self.probes_in_flight = 0;
        self.probe_successes = 0;
        self.consecutive_failures = 0;
        Transition {
            from,
            to: CircuitState::Open,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BreakerSettings {
        BreakerSettings {
            consecutive_failures: 3,
            failure_rate: 0.0,
            window: Duration::from_secs(10),
            min_requests: 10,
            open_for: Duration::from_secs(1),
            max_open_for: Duration::from_secs(4),
            half_open_probes: 2,
            close_after: 2,
        }
    }

    fn fail(b: &Breaker, now: Instant) -> Option<Transition> {
        let (admission, _) = b.try_admit(now);
        b.record(admission.expect("admitted"), false, now)
    }

    #[test]
    fn opens_after_consecutive_failures_and_successes_reset_the_count() {
        let b = Breaker::new(settings());
        let t = Instant::now();
        assert_eq!(fail(&b, t), None);
        assert_eq!(fail(&b, t), None);
        b.record(Admission::Normal, true, t);
        assert_eq!(fail(&b, t), None);
        assert_eq!(fail(&b, t), None);
        let transition = fail(&b, t).unwrap();
        assert_eq!(
            (transition.from, transition.to),
            (CircuitState::Closed, CircuitState::Open)
        );
        assert_eq!(b.try_admit(t).0, None);
        assert!(!b.would_admit(t));
    }

    #[test]
    fn opens_on_failure_rate_once_enough_requests_were_seen() {
        let b = Breaker::new(BreakerSettings {
            consecutive_failures: 0,
            failure_rate: 0.5,
            ..settings()
        });
        let t = Instant::now();
        for i in 0..9 {
            b.record(Admission::Normal, i % 2 == 0, t);
        }
        assert_eq!(b.state(t), CircuitState::Closed, "below min_requests");
        assert!(
            b.record(Admission::Normal, false, t).is_some(),
            "10 requests, 5 failures"
        );
        assert_eq!(b.state(t), CircuitState::Open);
    }

    #[test]
    fn old_outcomes_leave_the_window() {
        let b = Breaker::new(BreakerSettings {
            consecutive_failures: 0,
            failure_rate: 0.5,
            min_requests: 4,
            ..settings()
        });
        let t = Instant::now();
        for _ in 0..3 {
            b.record(Admission::Normal, false, t);
        }
        let later = t + Duration::from_secs(11);
        assert!(
            b.record(Admission::Normal, false, later).is_none(),
            "earlier failures expired"
        );
        assert_eq!(b.state(later), CircuitState::Closed);
    }

    #[test]
    fn half_open_admits_a_bounded_number_of_probes_and_closes_after_successes() {
        let b = Breaker::new(settings());
        let t = Instant::now();
        for _ in 0..3 {
            fail(&b, t);
        }
        let later = t + Duration::from_secs(1);
        assert_eq!(b.state(later), CircuitState::HalfOpen);
        let (first, transition) = b.try_admit(later);
        assert_eq!(first, Some(Admission::Probe));
        assert_eq!(transition.unwrap().to, CircuitState::HalfOpen);
        assert_eq!(b.try_admit(later).0, Some(Admission::Probe));
        assert_eq!(b.try_admit(later).0, None, "only two probes at once");
        assert_eq!(b.record(Admission::Probe, true, later), None);
        assert_eq!(
            b.try_admit(later).0,
            Some(Admission::Probe),
            "a settled probe frees its slot"
        );
        let closed = b.record(Admission::Probe, true, later).unwrap();
        assert_eq!(closed.to, CircuitState::Closed);
        assert_eq!(b.try_admit(later).0, Some(Admission::Normal));
    }

    #[test]
    fn failed_probe_reopens_for_longer_up_to_the_cap() {
        let b = Breaker::new(settings());
        let mut t = Instant::now();
        for _ in 0..3 {
            fail(&b, t);
        }
        let mut expected = Duration::from_secs(1);
        for _ in 0..4 {
            t += expected;
            let (admission, _) = b.try_admit(t);
            assert_eq!(admission, Some(Admission::Probe));
            assert_eq!(
                b.record(Admission::Probe, false, t).unwrap().to,
                CircuitState::Open
            );
            expected = (expected * 2).min(Duration::from_secs(4));
            assert_eq!(
                b.state(t + expected - Duration::from_millis(1)),
                CircuitState::Open
            );
            assert_eq!(b.state(t + expected), CircuitState::HalfOpen);
        }
    }

    #[test]
    fn released_probes_free_their_slot() {
        let b = Breaker::new(BreakerSettings {
            half_open_probes: 1,
            ..settings()
        });
        let t = Instant::now();
        for _ in 0..3 {
            fail(&b, t);
        }
        let t = t + Duration::from_secs(1);
        let (probe, _) = b.try_admit(t);
        assert_eq!(b.try_admit(t).0, None);
        b.release(probe.unwrap());
        assert_eq!(b.try_admit(t).0, Some(Admission::Probe));
    }

    #[test]
    fn settings_update_keeps_state() {
        let b = Breaker::new(settings());
        let t = Instant::now();
        for _ in 0..3 {
            fail(&b, t);
        }
        b.update_settings(BreakerSettings {
            open_for: Duration::from_secs(30),
            ..settings()
        });
        assert_eq!(b.state(t), CircuitState::Open);
    }
}
