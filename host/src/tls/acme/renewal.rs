//! The renewal schedule of one certificate.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rand::Rng;

use super::{Inner, Issued, Managed};

/// The longest single sleep, so a changed wall clock is noticed.
const MAX_SLEEP: Duration = Duration::from_secs(60 * 60);

/// Orders `managed` whenever it is due, forever. A failed attempt keeps
/// the current certificate and is retried after a backoff that doubles up
/// to its bound.
pub(super) async fn run(inner: Arc<Inner>, managed: Arc<Managed>) {
    let mut backoff = inner.config.retry.initial;
    loop {
        loop {
            let next = managed.lock().next_attempt;
            match next.duration_since(SystemTime::now()) {
                Ok(wait) if !wait.is_zero() => tokio::time::sleep(wait.min(MAX_SLEEP)).await,
                _ => break,
            }
        }
        tracing::info!(names = ?managed.names, "ordering a certificate");
        let outcome = match inner.issuer.issue(&managed.names).await {
            Ok(issued) => inner.store.save(&managed.names, &issued).map(|()| issued),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(issued) => {
                inner.metrics.record_success(&issued);
                let next_attempt = due(&issued, inner.config.renew_before);
                tracing::info!(
                    names = ?managed.names,
                    serial = %issued.serial,
                    not_after = %humantime::format_rfc3339_seconds(issued.not_after),
                    renewal = %humantime::format_rfc3339_seconds(next_attempt),
                    "certificate issued"
                );
                {
                    let mut state = managed.lock();
                    state.current = Some(issued.clone());
                    state.next_attempt = next_attempt;
                    state.last_error = None;
                }
                backoff = inner.config.retry.initial;
                (inner.on_issued)(issued);
            }
            Err(e) => {
                inner.metrics.record_failure();
                let error = format!("{e:#}");
                let retry_at = SystemTime::now() + backoff;
                tracing::warn!(
                    names = ?managed.names,
                    error = %error,
                    retry_in = %humantime::format_duration(backoff),
                    "ordering a certificate failed; the current certificate stays"
                );
                let mut state = managed.lock();
                state.next_attempt = retry_at;
                state.last_error = Some(error);
                backoff = (backoff * 2).min(inner.config.retry.max);
            }
        }
    }
}

/// When `issued` is due for renewal: `renew_before` its expiry, capped at
/// half its lifetime, less a random tenth of that window.
pub(super) fn due(issued: &Issued, renew_before: Duration) -> SystemTime {
    let lifetime = issued
        .not_after
        .duration_since(issued.not_before)
        .unwrap_or_default();
    let window = renew_before.min(lifetime / 2);
    let jitter_millis = u64::try_from((window / 10).as_millis()).unwrap_or(u64::MAX);
    let jitter = Duration::from_millis(rand::thread_rng().gen_range(0..=jitter_millis));
    issued.not_after - window - jitter
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    fn certificate(lifetime_days: u64) -> Issued {
        let not_before = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        Issued {
            names: vec!["example.com".into()],
            chain_pem: String::new(),
            key_pem: String::new(),
            issuer: String::new(),
            serial: String::new(),
            not_before,
            not_after: not_before + days(lifetime_days),
        }
    }

    fn days(n: u64) -> Duration {
        Duration::from_secs(n * 86_400)
    }

    #[test]
    fn renews_before_expiry_with_bounded_jitter() {
        let issued = certificate(90);
        for _ in 0..100 {
            let due = due(&issued, days(30));
            assert!(due <= issued.not_after - days(30));
            assert!(due >= issued.not_after - days(33));
        }
    }

    #[test]
    fn the_window_is_capped_at_half_the_lifetime() {
        let issued = certificate(6);
        let due = due(&issued, days(30));
        assert!(due <= issued.not_after - days(3));
        assert!(due > issued.not_before + Duration::from_secs(2 * 86_400));
    }
}
