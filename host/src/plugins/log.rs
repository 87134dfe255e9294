//! A plugin's log lines: rate-limited per plugin, so a plugin logging in a
//! loop cannot flood the proxy's log, and escaped, so a line it writes can
//! never pass for a line of the proxy's own.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::metrics::PluginMetrics;

/// Lines a plugin may log per second; the rest of that second's are dropped
/// and counted.
pub const LINES_PER_SECOND: u32 = 50;

/// The longest line kept, in bytes; a longer one is cut at a character
/// boundary and marked.
pub const MAX_LINE: usize = 2048;

/// One plugin's log rate, shared by all its instances.
#[derive(Debug, Default)]
pub struct LogBudget {
    /// The second (since the Unix epoch) the count is for.
    second: AtomicU64,
    /// Lines logged in that second.
    lines: AtomicU32,
    /// Lines dropped since the last report.
    dropped: AtomicU32,
}

impl LogBudget {
    /// The line to log for `message`, escaped and bounded, or `None` when
    /// the plugin is over its rate; a dropped line is counted, and the
    /// first line of a new second reports how many were dropped before it.
    pub fn admit(&self, metrics: &PluginMetrics, plugin: &str, message: &str) -> Option<String> {
        let now = crate::support::time::unix_seconds(std::time::SystemTime::now());
        self.admit_at(now as u64, metrics, plugin, message)
    }

    fn admit_at(
        &self,
        now: u64,
        metrics: &PluginMetrics,
        plugin: &str,
        message: &str,
    ) -> Option<String> {
        if self.second.swap(now, Ordering::Relaxed) != now {
            self.lines.store(0, Ordering::Relaxed);
            let dropped = self.dropped.swap(0, Ordering::Relaxed);
            if dropped > 0 {
                tracing::warn!(%plugin, dropped, "the plugin logged faster than {LINES_PER_SECOND} lines a second; lines were dropped");
            }
        }
        if self.lines.fetch_add(1, Ordering::Relaxed) >= LINES_PER_SECOND {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            metrics.log_lines_dropped.with_label_values(&[plugin]).inc();
            return None;
        }
        Some(escape(message))
    }
}

/// `message` with control characters escaped (a newline becomes `\n`) and
/// cut to [`MAX_LINE`] bytes.
pub fn escape(message: &str) -> String {
    let mut line = String::with_capacity(message.len().min(MAX_LINE) + 16);
    for c in message.chars() {
        if line.len() >= MAX_LINE {
            line.push_str("… (cut)");
            break;
        }
        if c.is_control() {
            line.extend(c.escape_default());
        } else {
            line.push(c);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            escape("ok\r\n2026-12-06 INFO forged\u{1b}[31m"),
            "ok\\r\\n2026-12-06 INFO forged\\u{1b}[31m"
        );
        assert_eq!(escape("naïve ✓"), "naïve ✓");
    }

    #[test]
    fn long_lines_are_cut() {
        let line = escape(&"é".repeat(MAX_LINE));
        assert!(line.len() <= MAX_LINE + "… (cut)".len() + 2);
        assert!(line.ends_with("… (cut)"));
    }

    #[test]
    fn lines_over_the_rate_are_dropped_and_counted() {
        let (budget, metrics) = (LogBudget::default(), PluginMetrics::new());
        let admitted = (0..LINES_PER_SECOND + 30)
            .filter(|_| budget.admit_at(100, &metrics, "p", "line").is_some())
            .count();
        assert_eq!(admitted, LINES_PER_SECOND as usize);
        let dropped = metrics.log_lines_dropped.with_label_values(&["p"]).get();
        assert_eq!(dropped, 30);
        assert!(budget.admit_at(101, &metrics, "p", "line").is_some());
        assert_eq!(budget.dropped.load(Ordering::Relaxed), 0);
    }
}
