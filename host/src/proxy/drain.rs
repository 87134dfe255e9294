//! The requests the proxy services are handling, counted so that a server
//! told to stop can exit as soon as the last one ends instead of waiting
//! out its whole grace period.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Requests between their head being read and their context being dropped
/// (after the response ended and the request was logged), across every
/// proxy service sharing it.
#[derive(Debug, Clone, Default)]
pub struct RequestsInFlight(Arc<AtomicUsize>);

impl RequestsInFlight {
    /// Counts one request until the returned guard drops.
    pub fn enter(&self) -> InFlight {
        self.0.fetch_add(1, Ordering::AcqRel);
        InFlight(self.0.clone())
    }

    /// How many requests are in flight now.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

/// One request in flight; dropping it ends the request's count.
#[derive(Debug)]
pub struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_counts_until_its_guard_drops() {
        let requests = RequestsInFlight::default();
        let first = requests.enter();
        let second = requests.clone().enter();
        assert_eq!(requests.count(), 2);
        drop(first);
        assert_eq!(requests.count(), 1);
        drop(second);
        assert_eq!(requests.count(), 0);
    }
}
