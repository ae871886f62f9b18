//! How each endpoint's scrapes are going — the last success, the current failure streak and its
//! reason — for the admin API's `GetState`. Kept next to the scrape metrics and shared across
//! collector restarts; an endpoint's entry goes when its scrape task stops.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::metrics::ScrapeErrorReason;
use crate::scheduling::Timestamp;

/// Longest error detail kept (an HTTP client's error chain can be long).
const MAX_DETAIL: usize = 300;

/// One endpoint's scrape record.
#[derive(Debug, Clone, PartialEq)]
pub struct ScrapeStatus {
    pub last_attempt: Timestamp,
    pub last_success: Option<Timestamp>,
    /// Failed scrapes since the last success (0 while healthy).
    pub consecutive_failures: u64,
    /// The most recent failure's reason and detail, kept after a recovery.
    pub last_error: Option<(ScrapeErrorReason, String)>,
}

/// Every scraped endpoint's record, by endpoint name. Clone-cheap and shared.
#[derive(Debug, Clone, Default)]
pub struct ScrapeHealth {
    inner: Arc<Mutex<HashMap<String, ScrapeStatus>>>,
}

impl ScrapeHealth {
    pub fn succeeded(&self, endpoint: &str, at: Timestamp) {
        let mut m = self.inner.lock();
        let s = Self::entry(&mut m, endpoint, at);
        s.last_attempt = at;
        s.last_success = Some(at);
        s.consecutive_failures = 0;
    }

    pub fn failed(&self, endpoint: &str, at: Timestamp, reason: ScrapeErrorReason, detail: &str) {
        let mut m = self.inner.lock();
        let s = Self::entry(&mut m, endpoint, at);
        s.last_attempt = at;
        s.consecutive_failures += 1;
        let mut detail = detail.to_string();
        if detail.len() > MAX_DETAIL {
            let mut cut = MAX_DETAIL;
            while !detail.is_char_boundary(cut) {
                cut -= 1;
            }
            detail.truncate(cut);
            detail.push('…');
        }
        s.last_error = Some((reason, detail));
    }

    /// Drops the record of an endpoint that is no longer scraped.
    pub fn forget(&self, endpoint: &str) {
        self.inner.lock().remove(endpoint);
    }

    pub fn get(&self, endpoint: &str) -> Option<ScrapeStatus> {
        self.inner.lock().get(endpoint).cloned()
    }

    /// Endpoints with a record.
    pub fn len(&self) -> usize {
        self.inner.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn entry<'a>(
        m: &'a mut HashMap<String, ScrapeStatus>,
        endpoint: &str,
        at: Timestamp,
    ) -> &'a mut ScrapeStatus {
        m.entry(endpoint.to_string()).or_insert(ScrapeStatus {
            last_attempt: at,
            last_success: None,
            consecutive_failures: 0,
            last_error: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streak_counts_failures_until_a_success_and_keeps_the_last_error() {
        let h = ScrapeHealth::default();
        let t = Timestamp::from_millis;
        assert_eq!(h.get("a"), None);
        h.failed("a", t(1), ScrapeErrorReason::Connect, "refused");
        h.failed("a", t(2), ScrapeErrorReason::Timeout, &"x".repeat(1000));
        let s = h.get("a").unwrap();
        assert_eq!(s.consecutive_failures, 2);
        assert_eq!(s.last_success, None);
        let (reason, detail) = s.last_error.unwrap();
        assert_eq!(reason, ScrapeErrorReason::Timeout);
        assert!(detail.chars().count() <= MAX_DETAIL + 1);
        h.succeeded("a", t(3));
        let s = h.get("a").unwrap();
        assert_eq!((s.consecutive_failures, s.last_success), (0, Some(t(3))));
        assert_eq!(s.last_error.unwrap().0, ScrapeErrorReason::Timeout);
        h.forget("a");
        assert!(h.is_empty());
    }
}
