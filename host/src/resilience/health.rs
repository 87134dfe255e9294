//! Endpoint health: active checks (HTTP or TCP) and passive failure counting.
//!
//! An endpoint is healthy when its active check says up (or it has none) and
//! it is not passively marked down. Passive marking happens after
//! `failures` consecutive failed requests and lasts `cooldown`; a successful
//! active check ends it early. Every field is atomic: the request path reads
//! and writes health without locks, and the checker task writes alone.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How an endpoint is probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    /// `GET path`; healthy when the status is within `expect`.
    Http {
        /// The path requested.
        path: String,
        /// Inclusive range of healthy statuses.
        expect: (u16, u16),
    },
    /// A TCP connect.
    Tcp,
    /// `grpc.health.v1.Health/Check` for `service` (empty for the server
    /// as a whole); healthy when it answers `SERVING`.
    Grpc {
        /// The service asked about.
        service: String,
    },
}

/// Active check settings of one placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveCheck {
    /// What to probe.
    pub kind: CheckKind,
    /// Time between probes.
    pub interval: Duration,
    /// Time allowed for one probe.
    pub timeout: Duration,
    /// Successful probes in a row that bring a down endpoint up.
    pub rise: u32,
    /// Failed probes in a row that take an up endpoint down.
    pub fall: u32,
}

/// Passive health settings of one placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassiveSettings {
    /// Consecutive failed requests that mark an endpoint down (0 disables).
    pub failures: u32,
    /// How long a passively downed endpoint stays down.
    pub cooldown: Duration,
}

impl Default for PassiveSettings {
    fn default() -> Self {
        Self {
            failures: 5,
            cooldown: Duration::from_secs(10),
        }
    }
}

/// One endpoint's health.
#[derive(Debug)]
pub struct Health {
    active_up: AtomicBool,
    active_streak: AtomicU32,
    passive_failures: AtomicU32,
    /// Nanoseconds since [`epoch`] until which the endpoint is passively down.
    passive_down_until: AtomicU64,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            active_up: AtomicBool::new(true),
            active_streak: AtomicU32::new(0),
            passive_failures: AtomicU32::new(0),
            passive_down_until: AtomicU64::new(0),
        }
    }
}

/// The process-wide reference instant for compact atomic timestamps.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn nanos_since_epoch(now: Instant) -> u64 {
    now.saturating_duration_since(epoch()).as_nanos() as u64
}

/// Why an endpoint is down, for the admin status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Down {
    /// Its active check failed `fall` times in a row.
    Active,
    /// Real traffic failed `failures` times in a row.
    Passive,
}

impl Health {
    /// Whether requests may go to this endpoint now.
    pub fn is_healthy(&self, now: Instant) -> bool {
        self.down_reason(now).is_none()
    }

    /// Why the endpoint is down, if it is.
    pub fn down_reason(&self, now: Instant) -> Option<Down> {
        if !self.active_up.load(Ordering::Relaxed) {
            return Some(Down::Active);
        }
        let until = self.passive_down_until.load(Ordering::Relaxed);
        (until != 0 && nanos_since_epoch(now) < until).then_some(Down::Passive)
    }

    /// Records a request's outcome. Returns true when this failure marked
    /// the endpoint down.
    pub fn record_request(&self, success: bool, settings: PassiveSettings, now: Instant) -> bool {
        if success {
            if self.passive_failures.load(Ordering::Relaxed) != 0 {
                self.passive_failures.store(0, Ordering::Relaxed);
            }
            return false;
        }
        if settings.failures == 0 {
            return false;
        }
        let failures = self.passive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= settings.failures {
            self.passive_failures.store(0, Ordering::Relaxed);
            let cooldown = u64::try_from(settings.cooldown.as_nanos()).unwrap_or(u64::MAX);
            let until = nanos_since_epoch(now).saturating_add(cooldown).max(1);
            self.passive_down_until.store(until, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Records an active probe. Returns `Some(up)` when the active state changed.
    pub fn record_probe(&self, success: bool, check: &ActiveCheck) -> Option<bool> {
        let up = self.active_up.load(Ordering::Relaxed);
        if success {
            self.passive_down_until.store(0, Ordering::Relaxed);
        }
        if success == up {
            self.active_streak.store(0, Ordering::Relaxed);
            return None;
        }
        let streak = self.active_streak.fetch_add(1, Ordering::Relaxed) + 1;
        let needed = if success { check.rise } else { check.fall }.max(1);
        if streak >= needed {
            self.active_streak.store(0, Ordering::Relaxed);
            self.active_up.store(success, Ordering::Relaxed);
            return Some(success);
        }
        None
    }

    /// Forgets active results, for an endpoint whose check was removed.
    pub fn clear_active(&self) {
        self.active_up.store(true, Ordering::Relaxed);
        self.active_streak.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(rise: u32, fall: u32) -> ActiveCheck {
        ActiveCheck {
            kind: CheckKind::Tcp,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            rise,
            fall,
        }
    }

    #[test]
    fn active_rise_and_fall() {
        let h = Health::default();
        let c = check(2, 3);
        let now = Instant::now();
        assert_eq!(h.record_probe(false, &c), None);
        assert_eq!(h.record_probe(false, &c), None);
        assert_eq!(h.record_probe(false, &c), Some(false));
        assert!(!h.is_healthy(now));
        assert_eq!(h.down_reason(now), Some(Down::Active));
        assert_eq!(h.record_probe(true, &c), None);
        assert_eq!(
            h.record_probe(false, &c),
            None,
            "a failure breaks the rising streak"
        );
        assert_eq!(h.record_probe(true, &c), None);
        assert_eq!(h.record_probe(true, &c), Some(true));
        assert!(h.is_healthy(now));
    }

    #[test]
    fn passive_failures_mark_down_for_the_cooldown() {
        let h = Health::default();
        let settings = PassiveSettings {
            failures: 2,
            cooldown: Duration::from_secs(5),
        };
        let now = Instant::now();
        assert!(!h.record_request(false, settings, now));
        assert!(
            !h.record_request(true, settings, now),
            "success resets the count"
        );
        assert!(!h.record_request(false, settings, now));
        assert!(h.record_request(false, settings, now));
        assert_eq!(h.down_reason(now), Some(Down::Passive));
        assert!(h.is_healthy(now + Duration::from_secs(5)));
    }

    #[test]
    fn an_active_success_ends_passive_down() {
        let h = Health::default();
        let settings = PassiveSettings {
            failures: 1,
            cooldown: Duration::from_secs(60),
        };
        let now = Instant::now();
        h.record_request(false, settings, now);
        assert!(!h.is_healthy(now));
        h.record_probe(true, &check(1, 1));
        assert!(h.is_healthy(now));
    }

    #[test]
    fn disabled_passive_never_marks_down() {
        let h = Health::default();
        let settings = PassiveSettings {
            failures: 0,
            cooldown: Duration::from_secs(60),
        };
        for _ in 0..100 {
            h.record_request(false, settings, Instant::now());
        }
        assert!(h.is_healthy(Instant::now()));
    }
}
