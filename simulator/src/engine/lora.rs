//! LoRA adapters: interned names, running/waiting counts, and GPU slot residency (LRU).

use std::collections::HashMap;
use std::time::Duration;

/// Adapter bookkeeping of one engine. Adapter ids are indices into `names`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Loras {
    ids: HashMap<String, u32>,
    names: Vec<String>,
    running: Vec<u32>,
    waiting: Vec<u32>,
    /// Adapters in GPU slots with their last use, at most `max_loras`.
    resident: Vec<(u32, Duration)>,
    /// Distinct adapters with at least one running request.
    distinct_running: u32,
}

impl Loras {
    /// The id of adapter `name`, interning it on first sight.
    pub fn intern(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.names.len() as u32;
        self.ids.insert(name.to_owned(), id);
        self.names.push(name.to_owned());
        self.running.push(0);
        self.waiting.push(0);
        id
    }

    pub fn add_waiting(&mut self, id: u32) {
        self.waiting[id as usize] += 1;
    }

    pub fn remove_waiting(&mut self, id: u32) {
        self.waiting[id as usize] -= 1;
    }

    pub fn add_running(&mut self, id: u32) {
        if self.running[id as usize] == 0 {
            self.distinct_running += 1;
        }
        self.running[id as usize] += 1;
    }

    pub fn remove_running(&mut self, id: u32) {
        self.running[id as usize] -= 1;
        if self.running[id as usize] == 0 {
            self.distinct_running -= 1;
        }
    }

    /// Whether a request with adapter `id` may join the batch without exceeding `max_loras`.
    pub fn can_run(&self, id: u32, max_loras: u32) -> bool {
        self.running[id as usize] > 0 || self.distinct_running < max_loras
    }

    /// Marks adapter `id` used at `now`; returns true when it had to be loaded into a slot
    /// (evicting the least recently used adapter with no running request).
    pub fn ensure_resident(&mut self, id: u32, now: Duration, max_loras: u32) -> bool {
        if let Some(entry) = self.resident.iter_mut().find(|(r, _)| *r == id) {
            entry.1 = now;
            return false;
        }
        if self.resident.len() as u32 >= max_loras {
            let victim = self
                .resident
                .iter()
                .enumerate()
                .filter(|(_, (r, _))| *r != id && self.running[*r as usize] == 0)
                .min_by_key(|(_, (_, used))| *used)
                .map(|(i, _)| i);
            if let Some(i) = victim {
                self.resident.swap_remove(i);
            }
        }
        self.resident.push((id, now));
        true
    }

    /// Names of adapters with running requests, in first-seen order.
    pub fn running_names(&self) -> Vec<String> {
        self.names_where(&self.running)
    }

    /// Names of adapters with waiting requests, in first-seen order.
    pub fn waiting_names(&self) -> Vec<String> {
        self.names_where(&self.waiting)
    }

    /// Names of adapters loaded in GPU slots, in first-seen order.
    pub fn resident_names(&self) -> Vec<String> {
        let mut ids: Vec<u32> = self.resident.iter().map(|(id, _)| *id).collect();
        ids.sort_unstable();
        ids.iter()
            .map(|&id| self.names[id as usize].clone())
            .collect()
    }

    fn names_where(&self, counts: &[u32]) -> Vec<String> {
        counts
            .iter()
            .zip(&self.names)
            .filter(|(c, _)| **c > 0)
            .map(|(_, n)| n.clone())
            .collect()
    }
}
