//! A deadline set keyed by timer kind: each component keeps one, reports its earliest entry from
//! `poll_timeout`, and pops the due ones on `Input::Timeout`. Ordered collections only, so two
//! timers due at once always fire in the same order.

use crate::proto::Millis;
use std::collections::{BTreeMap, BTreeSet};

/// Timers of kind `K`, at most one pending per key.
#[derive(Clone, Debug, Hash)]
pub struct Timers<K: Ord + Clone> {
    /// Deadlines in firing order (ties by key, so firing order is deterministic).
    by_time: BTreeSet<(Millis, K)>,
    /// Each key's deadline: at most one per key.
    by_key: BTreeMap<K, Millis>,
}

impl<K: Ord + Clone> Default for Timers<K> {
    fn default() -> Self {
        Timers {
            by_time: BTreeSet::new(),
            by_key: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Clone> Timers<K> {
    /// Arm `key` at `at`, replacing its previous deadline.
    pub fn set(&mut self, key: K, at: Millis) {
        if let Some(old) = self.by_key.insert(key.clone(), at) {
            self.by_time.remove(&(old, key.clone()));
        }
        self.by_time.insert((at, key));
    }

    /// Arm `key` at `at` unless it is already armed earlier.
    pub fn set_min(&mut self, key: K, at: Millis) {
        match self.by_key.get(&key) {
            Some(&old) if old <= at => {}
            _ => self.set(key, at),
        }
    }

    /// Disarm `key`.
    pub fn cancel(&mut self, key: &K) {
        if let Some(old) = self.by_key.remove(key) {
            self.by_time.remove(&(old, key.clone()));
        }
    }

    /// Whether `key` is armed.
    pub fn is_set(&self, key: &K) -> bool {
        self.by_key.contains_key(key)
    }

    /// When `key` fires, if armed.
    pub fn at(&self, key: &K) -> Option<Millis> {
        self.by_key.get(key).copied()
    }

    /// Whether any armed key satisfies `f`.
    pub fn any(&self, f: impl Fn(&K) -> bool) -> bool {
        self.by_key.keys().any(f)
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Millis> {
        self.by_time.first().map(|(at, _)| *at)
    }

    /// Remove and return one timer due at or before `now`, earliest first.
    pub fn pop_due(&mut self, now: Millis) -> Option<K> {
        let (at, key) = self.by_time.first()?.clone();
        if at > now {
            return None;
        }
        self.by_time.remove(&(at, key.clone()));
        self.by_key.remove(&key);
        Some(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Re-arming must move a timer, not duplicate it, or a retry would fire twice.
    #[test]
    fn rearming_moves_the_deadline_and_due_timers_pop_in_order() {
        let mut t = Timers::default();
        t.set("b", 20);
        t.set("a", 10);
        t.set("b", 5);
        t.set_min("a", 30);
        assert_eq!(t.next(), Some(5));
        assert_eq!(t.pop_due(4), None);
        assert_eq!(t.pop_due(10), Some("b"));
        assert_eq!(t.pop_due(10), Some("a"));
        assert_eq!(t.pop_due(100), None);
        t.set("c", 1);
        t.cancel(&"c");
        assert!(!t.is_set(&"c"));
        assert_eq!(t.next(), None);
    }
}
