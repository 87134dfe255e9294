//! The renewal schedule of one certificate, and each renewal under the
//! certificate's lock.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use rand::Rng;

use super::storage::certificate_lock;
use super::{Inner, Issued, Managed};

/// The longest single sleep, so a changed wall clock is noticed.
const MAX_SLEEP: Duration = Duration::from_secs(60 * 60);

/// How many times a certificate just issued is offered to the storage
/// before it is served here alone, a second apart.
const SAVE_ATTEMPTS: u32 = 3;

/// What one turn of a due certificate came to.
enum Renewed {
    /// This instance ordered and stored a new certificate.
    Issued(Issued),
    /// This instance ordered a certificate the storage refused to keep:
    /// it serves it alone, and says why.
    Unshared(Issued, anyhow::Error),
    /// Another instance had stored one while this one waited for the lock.
    Adopted(Issued),
}

/// Orders `managed` whenever it is due, forever, each time under its lock
/// in the storage. A failed attempt keeps the current certificate and is
/// retried after a backoff that doubles up to its bound.
pub(super) async fn run(inner: Arc<Inner>, managed: Arc<Managed>) {
    let mut backoff = inner.config.retry.initial;
    loop {
        // The certificate found due, read with the schedule: one stored
        // later differs from it, even once the watch has served it.
        let due_serial = loop {
            let (next, serial) = {
                let state = managed.lock();
                let serial = state.current.as_ref().map(|c| c.serial.clone());
                (state.next_attempt, serial)
            };
            match next.duration_since(SystemTime::now()) {
                Ok(wait) if !wait.is_zero() => tokio::time::sleep(wait.min(MAX_SLEEP)).await,
                _ => break serial,
            }
        };
        match renew(&inner, &managed, due_serial).await {
            Ok(Renewed::Unshared(issued, error)) => {
                inner.metrics.record_success(&issued);
                let error = format!("issued, but not stored for the other instances: {error:#}");
                tracing::warn!(names = ?managed.names, serial = %issued.serial, %error, "serving a certificate only this instance has");
                backoff = inner.config.retry.initial;
                inner.serve(&managed, issued);
                managed.lock().last_error = Some(error);
            }
            Ok(Renewed::Issued(issued)) => {
                inner.metrics.record_success(&issued);
                backoff = inner.config.retry.initial;
                let (serial, not_after) = (issued.serial.clone(), issued.not_after);
                let next_attempt = inner.serve(&managed, issued);
                tracing::info!(
                    names = ?managed.names,
                    serial = %serial,
                    not_after = %humantime::format_rfc3339_seconds(not_after),
                    renewal = %humantime::format_rfc3339_seconds(next_attempt),
                    "certificate issued"
                );
            }
            Ok(Renewed::Adopted(issued)) => {
                backoff = inner.config.retry.initial;
                tracing::info!(names = ?managed.names, serial = %issued.serial, "another instance renewed this certificate; serving theirs");
                inner.serve(&managed, issued);
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

/// Takes the certificate's lock, waiting for another instance that holds
/// it, and orders it unless the storage has meanwhile got another
/// certificate that is not due.
async fn renew(
    inner: &Inner,
    managed: &Managed,
    due_serial: Option<String>,
) -> anyhow::Result<Renewed> {
    let lock = inner
        .storage
        .lock(&certificate_lock(&managed.names))
        .await
        .context("cannot take the lock to order this certificate; nothing is ordered without it")?;
    if let Some(stored) = inner
        .storage
        .load_certificate_to_decide(&managed.names)
        .await?
        .filter(|stored| stored.covers(&managed.names))
    {
        let fresh = due(&stored, inner.config.renew_before) > SystemTime::now();
        if fresh && due_serial.as_ref() != Some(&stored.serial) {
            return Ok(Renewed::Adopted(stored));
        }
    }
    tracing::info!(names = ?managed.names, "ordering a certificate");
    let issued = inner.issuer.issue(&managed.names, &lock).await?;
    let mut attempt = 1;
    loop {
        match inner
            .storage
            .save_certificate(&managed.names, &issued, &lock)
            .await
        {
            Ok(()) => return Ok(Renewed::Issued(issued)),
            Err(error) => {
                // A later certificate stored meanwhile wins over this one.
                if let Ok(Some(stored)) = inner
                    .storage
                    .load_certificate_to_decide(&managed.names)
                    .await
                {
                    if stored.not_after > issued.not_after && stored.covers(&managed.names) {
                        return Ok(Renewed::Adopted(stored));
                    }
                }
                if attempt == SAVE_ATTEMPTS {
                    return Ok(Renewed::Unshared(issued, error));
                }
                tracing::warn!(names = ?managed.names, error = %format!("{error:#}"), "cannot store the certificate just issued; trying again");
                attempt += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
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
