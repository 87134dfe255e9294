//! Time stamps as logs and the admin API write them.

use std::time::{SystemTime, UNIX_EPOCH};

/// Whole seconds since the Unix epoch, as Prometheus gauges of times hold
/// them; 0 for a time before it.
pub fn unix_seconds(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Formats a request start time. A clock set before 1970 gives the epoch,
/// and one past what RFC 3339 can write (year 9999) an empty string: never
/// a panic.
pub fn timestamp(at: SystemTime) -> String {
    use std::fmt::Write as _;
    let mut text = String::new();
    let at = at.max(SystemTime::UNIX_EPOCH);
    if write!(text, "{}", humantime::format_rfc3339_millis(at)).is_err() {
        text.clear();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn clocks_outside_rfc_3339_give_an_empty_time_not_a_panic() {
        let before = SystemTime::UNIX_EPOCH - Duration::from_secs(10);
        assert_eq!(timestamp(before), "1970-01-01T00:00:00.000Z");
        let far = SystemTime::UNIX_EPOCH + Duration::from_secs(300_000_000_000);
        assert_eq!(timestamp(far), "");
    }
}
