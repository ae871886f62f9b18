//! The process clock the adapters pass into the pure core as [`Timestamp`]s.

use std::time::Instant;

use crate::scheduling::Timestamp;

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }

    pub fn now(&self) -> Timestamp {
        self.at(Instant::now())
    }

    /// The timestamp of an instant taken from the same process clock.
    pub fn at(&self, instant: Instant) -> Timestamp {
        let nanos = instant.saturating_duration_since(self.origin).as_nanos();
        Timestamp::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

impl Clock {
    /// The same clock as the closure the data layer takes.
    pub fn as_fn(&self) -> crate::datalayer::collector::Clock {
        let c = *self;
        std::sync::Arc::new(move || c.now())
    }
}
