//! How much a component may log: a token bucket per component, shared by its stdout,
//! stderr and the `log` import, that survives its instance restarts. Lines past it are
//! dropped and counted (`describe`, `/metrics`), so a component that logs in a loop cannot
//! flood the node's log or its disk.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lines a component may log per second, sustained.
pub const LOG_LINES_PER_SECOND: f64 = 100.0;
/// Lines it may log at once after a quiet spell.
pub const LOG_BURST_LINES: f64 = 500.0;

/// One component's logging allowance and what it dropped.
pub struct LogBudget {
    bucket: Mutex<Bucket>,
    dropped: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The tokens a bucket holds `elapsed` after it held `tokens`: refilled at the rate, up to
/// the burst.
fn refilled(tokens: f64, elapsed: Duration) -> f64 {
    (tokens + elapsed.as_secs_f64() * LOG_LINES_PER_SECOND).min(LOG_BURST_LINES)
}

impl Default for LogBudget {
    fn default() -> Self {
        LogBudget {
            bucket: Mutex::new(Bucket {
                tokens: LOG_BURST_LINES,
                at: Instant::now(),
            }),
            dropped: AtomicU64::new(0),
        }
    }
}

impl LogBudget {
    /// Whether one more line may be logged now; a line that may not is counted as dropped.
    pub fn take(&self) -> bool {
        self.take_at(Instant::now())
    }

    fn take_at(&self, now: Instant) -> bool {
        let allowed = match self.bucket.lock() {
            Ok(mut b) => {
                b.tokens = refilled(b.tokens, now.saturating_duration_since(b.at));
                b.at = now;
                if b.tokens >= 1.0 {
                    b.tokens -= 1.0;
                    true
                } else {
                    false
                }
            }
            Err(_) => false,
        };
        if !allowed {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        allowed
    }

    /// Lines dropped since the component started on this node.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_lines_are_dropped_and_counted() {
        let budget = LogBudget::default();
        let start = Instant::now();
        let passed = (0..1_000).filter(|_| budget.take_at(start)).count();
        assert_eq!(passed, LOG_BURST_LINES as usize);
        assert_eq!(budget.dropped(), 1_000 - LOG_BURST_LINES as u64);
    }

    #[test]
    fn the_allowance_comes_back_at_the_rate_up_to_the_burst() {
        let budget = LogBudget::default();
        let start = Instant::now();
        while budget.take_at(start) {}
        let later = start + Duration::from_secs(1);
        let passed = (0..1_000).filter(|_| budget.take_at(later)).count();
        assert_eq!(passed, LOG_LINES_PER_SECOND as usize);
        assert_eq!(refilled(0.0, Duration::from_secs(3600)), LOG_BURST_LINES);
    }
}
