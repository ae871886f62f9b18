//! The event queue: events in time order, ties in the order they were scheduled, so a run is a
//! pure function of its inputs.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use switchyard::scheduling::Timestamp;

/// What happens at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The next request of the trace reaches the EPP.
    Arrival,
    /// Request `id` reaches its pod's engine (after the API server's overhead).
    Deliver(usize),
    /// Pod `p`'s engine step ends; its events happen now.
    StepDone(usize),
    /// The EPP scrapes pod `p`'s metrics page.
    Scrape(usize),
    /// The admission stage asked to be polled again.
    Wake,
}

#[derive(Debug, PartialEq, Eq)]
struct Entry {
    at: u64,
    seq: u64,
    event: Event,
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap and we want the earliest first.
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Debug, Default)]
pub struct EventQueue {
    heap: BinaryHeap<Entry>,
    seq: u64,
}

impl EventQueue {
    pub fn push(&mut self, at: Timestamp, event: Event) {
        self.seq += 1;
        self.heap.push(Entry {
            at: at.as_nanos(),
            seq: self.seq,
            event,
        });
    }

    pub fn pop(&mut self) -> Option<(Timestamp, Event)> {
        self.heap
            .pop()
            .map(|e| (Timestamp::from_nanos(e.at), e.event))
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_first_then_scheduling_order() {
        let mut q = EventQueue::default();
        q.push(Timestamp::from_millis(5), Event::Scrape(1));
        q.push(Timestamp::from_millis(1), Event::Arrival);
        q.push(Timestamp::from_millis(5), Event::StepDone(0));
        q.push(Timestamp::from_millis(5), Event::Wake);
        let order: Vec<Event> = std::iter::from_fn(|| q.pop().map(|(_, e)| e)).collect();
        assert_eq!(
            order,
            vec![
                Event::Arrival,
                Event::Scrape(1),
                Event::StepDone(0),
                Event::Wake
            ]
        );
        assert!(q.is_empty());
    }
}
