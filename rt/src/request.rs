//! Request correlation: every request gets exactly one answer.
//!
//! This module owns the bookkeeping between "a request was sent" and "its reply arrived or its
//! deadline passed". [`RequestTracker`] is the sans-IO core: pending keys indexed by deadline,
//! where a key leaves exactly once — either through [`RequestTracker::complete`] (the reply won)
//! or through [`RequestTracker::expire`] (the timeout won). [`Correlator`] shares a tracker
//! between tasks and runs the timer that fires the timeouts, so for every registered key exactly
//! one of {`complete` returned true, `on_timeout` was called} happens. A late reply finds the key
//! gone (`complete` → false) and is dropped by the caller.
//!
//! [`RequestIdGen`] hands out request ids.
//!
//! Time: deadlines are `std::time::Instant`s. The correlator reads "now" through tokio's clock so
//! tests can pause and advance time; under a paused clock, compute deadlines from
//! `tokio::time::Instant::now()` as well.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Instant;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Pending requests by key and by deadline. Every operation is O(log n); both indexes are kept
/// exact (no lazy deletion), so memory follows the number of pending requests, not the traffic.
#[derive(Debug, Clone)]
pub struct RequestTracker<K> {
    /// key → (deadline, sequence); the sequence disambiguates equal deadlines.
    pending: HashMap<K, (Instant, u64)>,
    by_deadline: BTreeMap<(Instant, u64), K>,
    seq: u64,
}

impl<K: Hash + Eq + Clone> Default for RequestTracker<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Hash + Eq + Clone> RequestTracker<K> {
    /// An empty tracker.
    pub fn new() -> Self {
        Self {
            pending: HashMap::new(),
            by_deadline: BTreeMap::new(),
            seq: 0,
        }
    }

    /// Track `key` until `deadline`. Returns false if `key` was already pending; its deadline is
    /// then replaced (it still completes or expires only once).
    pub fn insert(&mut self, key: K, deadline: Instant) -> bool {
        self.seq = self.seq.wrapping_add(1);
        let slot = (deadline, self.seq);
        let fresh = match self.pending.insert(key.clone(), slot) {
            Some(old) => {
                self.by_deadline.remove(&old);
                false
            }
            None => true,
        };
        self.by_deadline.insert(slot, key);
        fresh
    }

    /// The answer for `key` arrived. True only the first time, and only if it had not expired.
    pub fn complete(&mut self, key: &K) -> bool {
        match self.pending.remove(key) {
            Some(slot) => {
                self.by_deadline.remove(&slot);
                true
            }
            None => false,
        }
    }

    /// The earliest deadline still pending.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.by_deadline.first_key_value().map(|((d, _), _)| *d)
    }

    /// Remove and return every key whose deadline is at or before `now`, earliest first. Each key
    /// expires once, and an expired key can no longer complete.
    pub fn expire(&mut self, now: Instant) -> Vec<K> {
        let mut out = Vec::new();
        while let Some(entry) = self.by_deadline.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            self.pending.remove(&key);
            out.push(key);
        }
        out
    }

    /// True while `key` is pending.
    pub fn contains(&self, key: &K) -> bool {
        self.pending.contains_key(key)
    }

    /// Pending requests.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// True when nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

struct Shared<K> {
    tracker: Mutex<RequestTracker<K>>,
    /// The deadline the timeout task sleeps toward (`None`: it waits for a wake-up).
    /// Registering a later deadline needs no wake-up, so a steady stream of requests
    /// answered in time costs the timer nothing. Kept beside the tracker and only
    /// touched under the tracker's lock, so a register and a re-arm cannot interleave.
    armed: Mutex<Option<Instant>>,
    /// Wakes the timeout task: an earlier deadline arrived, or the last correlator went away.
    wake: Arc<Notify>,
}

impl<K> Shared<K> {
    fn armed(&self) -> MutexGuard<'_, Option<Instant>> {
        self.armed.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock(&self) -> MutexGuard<'_, RequestTracker<K>> {
        // The tracker's operations do not leave it half-updated on a panic elsewhere, so a
        // poisoned lock is still safe to use; refusing would turn one panic into a hang.
        self.tracker.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<K> Drop for Shared<K> {
    fn drop(&mut self) {
        // Let the timeout task notice that nobody can register or complete any more.
        self.wake.notify_one();
    }
}

/// A [`RequestTracker`] shared between tasks, plus the timer that fires its timeouts.
/// Cheap to clone; all clones share the same requests.
pub struct Correlator<K> {
    shared: Arc<Shared<K>>,
}

impl<K> Clone for Correlator<K> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<K> std::fmt::Debug for Correlator<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Correlator").finish_non_exhaustive()
    }
}

impl<K: Hash + Eq + Clone + Send + 'static> Default for Correlator<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Hash + Eq + Clone + Send + 'static> Correlator<K> {
    /// An empty correlator. Call [`spawn_timeouts`](Self::spawn_timeouts) once to fire timeouts.
    pub fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                tracker: Mutex::new(RequestTracker::new()),
                armed: Mutex::new(None),
                wake: Arc::new(Notify::new()),
            }),
        }
    }

    /// Track `key` until `deadline`. Returns false if `key` was already pending (its deadline is
    /// replaced).
    pub fn register(&self, key: K, deadline: Instant) -> bool {
        let (fresh, earlier_than_armed) = {
            let mut tracker = self.shared.lock();
            let mut armed = self.shared.armed();
            let earlier = armed.is_none_or(|a| deadline < a);
            if earlier {
                *armed = Some(deadline);
            }
            (tracker.insert(key, deadline), earlier)
        };
        // Only a deadline earlier than the one the timer sleeps toward changes when it
        // must fire; otherwise stay quiet so registration costs no wake-up on the hot
        // path. (The timer re-arms to the earliest pending deadline whenever it wakes.)
        if earlier_than_armed {
            self.shared.wake.notify_one();
        }
        fresh
    }

    /// Track `key` until `deadline` unless it is pending already (its deadline is then kept).
    /// True when it was registered.
    pub fn register_if_absent(&self, key: K, deadline: Instant) -> bool {
        if self.shared.lock().contains(&key) {
            return false;
        }
        self.register(key, deadline)
    }

    /// The answer for `key` arrived. True exactly when this call wins: the key was pending and
    /// neither completed nor timed out before. On false, drop the late answer.
    pub fn complete(&self, key: &K) -> bool {
        self.shared.lock().complete(key)
    }

    /// Pending requests.
    pub fn len(&self) -> usize {
        self.shared.lock().len()
    }

    /// True when nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.shared.lock().is_empty()
    }

    /// The earliest pending deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.shared.lock().next_deadline()
    }

    /// Spawn the timer task: it sleeps until the earliest deadline and calls `on_timeout` once
    /// for every key that expired without completing. `on_timeout` runs outside the lock (it may
    /// register or complete). The task ends when every clone of this correlator is dropped; abort
    /// the handle to end it sooner. Spawn it once: two timers would split the timeouts between
    /// them (each key still fires only once).
    pub fn spawn_timeouts(&self, mut on_timeout: impl FnMut(K) + Send + 'static) -> JoinHandle<()> {
        // Hold the state weakly so the task does not keep it alive forever.
        let weak: Weak<Shared<K>> = Arc::downgrade(&self.shared);
        let wake = Arc::clone(&self.shared.wake);
        tokio::spawn(async move {
            loop {
                let (expired, next) = {
                    let Some(shared) = weak.upgrade() else {
                        return;
                    };
                    let mut tracker = shared.lock();
                    let expired = tracker.expire(tokio::time::Instant::now().into_std());
                    let next = tracker.next_deadline();
                    *shared.armed() = next;
                    (expired, next)
                };
                for key in expired {
                    on_timeout(key);
                }
                match next {
                    Some(deadline) => {
                        tokio::select! {
                            _ = tokio::time::sleep_until(deadline.into()) => {}
                            _ = wake.notified() => {}
                        }
                    }
                    None => wake.notified().await,
                }
            }
        })
    }
}

/// Hands out request ids: unique per generator, increasing, starting at 1 (0 is never issued,
/// so it can mean "no request").
#[derive(Debug)]
pub struct RequestIdGen {
    next: AtomicU64,
}

impl Default for RequestIdGen {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestIdGen {
    /// A generator whose first id is 1.
    pub const fn new() -> Self {
        Self::starting_at(1)
    }

    /// A generator whose first id is `first` (e.g. to continue after ids persisted earlier).
    pub const fn starting_at(first: u64) -> Self {
        Self {
            next: AtomicU64::new(first),
        }
    }

    /// The next id.
    #[inline]
    pub fn next_id(&self) -> u64 {
        // Relaxed: uniqueness comes from the atomic RMW itself; no data is published.
        self.next.fetch_add(1, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn complete_once() {
        let mut t = RequestTracker::new();
        let t0 = Instant::now();
        assert!(t.insert(1u64, t0 + ms(10)));
        assert_eq!(t.len(), 1);
        assert!(t.complete(&1));
        assert!(!t.complete(&1));
        assert!(t.is_empty());
        assert_eq!(t.next_deadline(), None);
        assert!(t.expire(t0 + ms(100)).is_empty());
    }

    #[test]
    fn expire_once_then_cannot_complete() {
        let mut t = RequestTracker::new();
        let t0 = Instant::now();
        t.insert("a", t0 + ms(10));
        t.insert("b", t0 + ms(20));
        assert!(t.expire(t0 + ms(9)).is_empty());
        assert_eq!(t.expire(t0 + ms(10)), vec!["a"]);
        assert!(t.expire(t0 + ms(10)).is_empty());
        assert!(!t.complete(&"a"));
        assert_eq!(t.next_deadline(), Some(t0 + ms(20)));
        assert!(t.complete(&"b"));
        assert!(t.expire(t0 + ms(1000)).is_empty());
    }

    #[test]
    fn expire_in_deadline_order_with_ties() {
        let mut t = RequestTracker::new();
        let t0 = Instant::now();
        t.insert(3, t0 + ms(30));
        t.insert(1, t0 + ms(10));
        t.insert(2, t0 + ms(10));
        t.insert(4, t0 + ms(40));
        assert_eq!(t.next_deadline(), Some(t0 + ms(10)));
        assert_eq!(t.expire(t0 + ms(35)), vec![1, 2, 3]);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn reinsert_replaces_deadline() {
        let mut t = RequestTracker::new();
        let t0 = Instant::now();
        assert!(t.insert(1, t0 + ms(10)));
        assert!(!t.insert(1, t0 + ms(50)));
        assert_eq!(t.len(), 1);
        assert!(t.expire(t0 + ms(20)).is_empty());
        assert_eq!(t.next_deadline(), Some(t0 + ms(50)));
        assert_eq!(t.expire(t0 + ms(50)), vec![1]);
        assert!(t.is_empty());
    }

    #[test]
    fn completing_the_earliest_moves_next_deadline() {
        let mut t = RequestTracker::new();
        let t0 = Instant::now();
        t.insert(1, t0 + ms(10));
        t.insert(2, t0 + ms(20));
        assert!(t.complete(&1));
        assert_eq!(t.next_deadline(), Some(t0 + ms(20)));
        // Unknown keys never complete.
        assert!(!t.complete(&99));
    }

    #[test]
    fn id_gen_is_unique_and_starts_at_one() {
        let g = RequestIdGen::new();
        assert_eq!(g.next_id(), 1);
        assert_eq!(g.next_id(), 2);
        let g = RequestIdGen::starting_at(100);
        assert_eq!(g.next_id(), 100);
    }

    #[test]
    fn id_gen_unique_across_threads() {
        let g = Arc::new(RequestIdGen::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let g = Arc::clone(&g);
                std::thread::spawn(move || (0..1000).map(|_| g.next_id()).collect::<Vec<_>>())
            })
            .collect();
        let mut all: Vec<u64> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 4000);
    }
}
