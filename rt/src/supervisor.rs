//! Restart decisions, sans IO.
//!
//! This module owns *whether* and *when* a crashed actor is restarted: exponential backoff with a
//! cap, and restart intensity (more than `max_restarts` crashes inside `window` → give up). It is
//! plain data and plain functions over an explicit `now`, so every rule is unit-tested without a
//! runtime or a clock; the actor loop in [`crate::actor`] feeds it crashes and obeys its answers.
//!
//! Backoff reset: a run that lasted at least `backoff.max` counts as stable, and the next crash
//! starts again from `backoff.initial`. [`SupervisorState::on_healthy`] applies that rule when the
//! caller observes a healthy actor; [`SupervisorState::on_crash`] applies it too, so the actor
//! loop need not read the clock on every message.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Exponential backoff between a crash and the restart: `initial * multiplier^(attempt-1)`,
/// never more than `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first restart after a stable run.
    pub initial: Duration,
    /// Upper bound for any delay; also the uptime after which a run counts as stable.
    pub max: Duration,
    /// Growth factor per consecutive crash (0 and 1 both mean a constant delay).
    pub multiplier: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(10),
            max: Duration::from_secs(5),
            multiplier: 2,
        }
    }
}

impl Backoff {
    /// The delay before restart number `attempt` (1-based) of a crash streak.
    pub fn delay(&self, attempt: u32) -> Duration {
        let mut delay = self.initial.min(self.max);
        let factor = self.multiplier.max(1);
        // Multiply step by step so a long streak saturates at `max` instead of overflowing.
        for _ in 1..attempt {
            if factor == 1 || delay >= self.max {
                break;
            }
            delay = delay.checked_mul(factor).unwrap_or(self.max).min(self.max);
        }
        delay
    }
}

/// Restart intensity: more than `max_restarts` crashes inside `window` means give up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intensity {
    /// Crashes tolerated inside one window (0: the first crash gives up).
    pub max_restarts: u32,
    /// The sliding window the crashes are counted in.
    pub window: Duration,
}

impl Default for Intensity {
    fn default() -> Self {
        Self {
            max_restarts: 5,
            window: Duration::from_secs(30),
        }
    }
}

/// How an actor is restarted: backoff between attempts, intensity to decide when to stop trying.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RestartPolicy {
    /// Delay between a crash and the restart.
    pub backoff: Backoff,
    /// When to give up.
    pub intensity: Intensity,
}

/// What to do after a crash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Make a fresh actor after waiting `after`. `attempt` counts the crashes of the current
    /// streak (1 for the first crash after a stable run).
    Restart { after: Duration, attempt: u32 },
    /// Stop restarting: the actor is failed. `reason` says how many crashes in what window and
    /// what the last error was.
    GiveUp { reason: String },
}

/// The restart bookkeeping of one supervised actor.
#[derive(Debug, Clone)]
pub struct SupervisorState {
    policy: RestartPolicy,
    /// Crash times inside the intensity window, oldest first.
    crashes: VecDeque<Instant>,
    /// Crashes since the last stable run; drives the backoff.
    streak: u32,
    /// When the current run started (crash time + backoff), if it followed a crash.
    run_started: Option<Instant>,
    restarts: u32,
    gave_up: Option<String>,
}

impl SupervisorState {
    /// Fresh state: no crashes yet.
    pub fn new(policy: RestartPolicy) -> Self {
        Self {
            policy,
            crashes: VecDeque::new(),
            streak: 0,
            run_started: None,
            restarts: 0,
            gave_up: None,
        }
    }

    /// The policy this state applies.
    pub fn policy(&self) -> &RestartPolicy {
        &self.policy
    }

    /// Record a crash at `now` with the error `reason` and decide what happens next.
    /// Once it has given up, every later call gives up again with the same reason.
    pub fn on_crash(&mut self, now: Instant, reason: &str) -> Decision {
        if let Some(reason) = &self.gave_up {
            return Decision::GiveUp {
                reason: reason.clone(),
            };
        }
        self.reset_if_stable(now);

        let window = self.policy.intensity.window;
        self.crashes.push_back(now);
        // Forget crashes that left the window (strictly older than `window`).
        while let Some(&oldest) = self.crashes.front() {
            if now.saturating_duration_since(oldest) > window {
                self.crashes.pop_front();
            } else {
                break;
            }
        }

        let in_window = self.crashes.len();
        if in_window > self.policy.intensity.max_restarts as usize {
            let reason = format!(
                "crashed {in_window} times within {window:?} (limit {} restarts); last error: {reason}",
                self.policy.intensity.max_restarts
            );
            self.gave_up = Some(reason.clone());
            return Decision::GiveUp { reason };
        }

        self.streak = self.streak.saturating_add(1);
        self.restarts = self.restarts.saturating_add(1);
        let after = self.policy.backoff.delay(self.streak);
        self.run_started = Some(now + after);
        Decision::Restart {
            after,
            attempt: self.streak,
        }
    }

    /// The actor is running fine at `now`: if its current run has lasted at least
    /// `backoff.max`, reset the backoff so the next crash restarts quickly. Returns true when it
    /// reset. Does not touch the intensity window, which ages by time alone.
    pub fn on_healthy(&mut self, now: Instant) -> bool {
        self.reset_if_stable(now)
    }

    fn reset_if_stable(&mut self, now: Instant) -> bool {
        match self.run_started {
            Some(started) if now.saturating_duration_since(started) >= self.policy.backoff.max => {
                self.streak = 0;
                self.run_started = None;
                true
            }
            _ => false,
        }
    }

    /// Restarts decided so far (not counting the first start).
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// Crashes since the last stable run.
    pub fn streak(&self) -> u32 {
        self.streak
    }

    /// The give-up reason, once the supervisor has given up.
    pub fn gave_up(&self) -> Option<&str> {
        self.gave_up.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn policy(max_restarts: u32, window: Duration) -> RestartPolicy {
        RestartPolicy {
            backoff: Backoff {
                initial: ms(10),
                max: ms(100),
                multiplier: 2,
            },
            intensity: Intensity {
                max_restarts,
                window,
            },
        }
    }

    fn after(d: Decision) -> (Duration, u32) {
        match d {
            Decision::Restart { after, attempt } => (after, attempt),
            Decision::GiveUp { reason } => panic!("unexpected give up: {reason}"),
        }
    }

    #[test]
    fn defaults_are_sensible() {
        let p = RestartPolicy::default();
        assert_eq!(p.backoff.initial, ms(10));
        assert_eq!(p.backoff.max, Duration::from_secs(5));
        assert_eq!(p.backoff.multiplier, 2);
        assert_eq!(p.intensity.max_restarts, 5);
        assert_eq!(p.intensity.window, Duration::from_secs(30));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Backoff {
            initial: ms(10),
            max: ms(100),
            multiplier: 2,
        };
        let delays: Vec<_> = (1..=7).map(|n| b.delay(n)).collect();
        assert_eq!(
            delays,
            vec![ms(10), ms(20), ms(40), ms(80), ms(100), ms(100), ms(100)]
        );
        // A huge attempt number saturates instead of overflowing.
        assert_eq!(b.delay(u32::MAX), ms(100));
    }

    #[test]
    fn backoff_odd_inputs() {
        let constant = Backoff {
            initial: ms(7),
            max: ms(100),
            multiplier: 0,
        };
        assert_eq!(constant.delay(5), ms(7));
        let initial_above_max = Backoff {
            initial: ms(500),
            max: ms(100),
            multiplier: 3,
        };
        assert_eq!(initial_above_max.delay(1), ms(100));
        let huge = Backoff {
            initial: Duration::from_secs(u64::MAX / 2),
            max: Duration::MAX,
            multiplier: u32::MAX,
        };
        assert_eq!(huge.delay(3), Duration::MAX);
    }

    #[test]
    fn on_crash_follows_backoff() {
        let mut s = SupervisorState::new(policy(100, Duration::from_secs(60)));
        let t0 = Instant::now();
        let mut got = Vec::new();
        for i in 0..6 {
            got.push(after(s.on_crash(t0 + ms(i), "x")));
        }
        assert_eq!(
            got,
            vec![
                (ms(10), 1),
                (ms(20), 2),
                (ms(40), 3),
                (ms(80), 4),
                (ms(100), 5),
                (ms(100), 6)
            ]
        );
        assert_eq!(s.restarts(), 6);
    }

    #[test]
    fn intensity_gives_up_with_reason() {
        let mut s = SupervisorState::new(policy(3, Duration::from_secs(10)));
        let t0 = Instant::now();
        for i in 0..3 {
            after(s.on_crash(t0 + Duration::from_secs(i), "boom"));
        }
        match s.on_crash(t0 + Duration::from_secs(3), "last straw") {
            Decision::GiveUp { reason } => {
                assert!(reason.contains("4 times"), "{reason}");
                assert!(reason.contains("10s"), "{reason}");
                assert!(reason.contains("last straw"), "{reason}");
            }
            d => panic!("expected give up, got {d:?}"),
        }
        assert_eq!(s.restarts(), 3);
        assert!(s.gave_up().is_some());
        // Sticky: later crashes give up with the same reason.
        assert!(matches!(
            s.on_crash(t0 + Duration::from_secs(1000), "other"),
            Decision::GiveUp { reason } if reason.contains("last straw")
        ));
    }

    #[test]
    fn zero_restarts_gives_up_at_once() {
        let mut s = SupervisorState::new(policy(0, Duration::from_secs(10)));
        assert!(matches!(
            s.on_crash(Instant::now(), "e"),
            Decision::GiveUp { .. }
        ));
        assert_eq!(s.restarts(), 0);
    }

    #[test]
    fn crashes_outside_window_are_forgotten() {
        let mut s = SupervisorState::new(policy(2, Duration::from_secs(10)));
        let t0 = Instant::now();
        // Two crashes per 11 s never reach three inside a 10 s window.
        for i in 0..10u64 {
            let t = t0 + Duration::from_secs(11 * i);
            after(s.on_crash(t, "a"));
            after(s.on_crash(t + Duration::from_secs(1), "b"));
        }
        assert_eq!(s.restarts(), 20);
        // Three quick ones do.
        let t = t0 + Duration::from_secs(1000);
        after(s.on_crash(t, "a"));
        after(s.on_crash(t + ms(1), "b"));
        assert!(matches!(
            s.on_crash(t + ms(2), "c"),
            Decision::GiveUp { .. }
        ));
    }

    #[test]
    fn stable_run_resets_backoff_on_next_crash() {
        let mut s = SupervisorState::new(policy(100, Duration::from_secs(60)));
        let t0 = Instant::now();
        assert_eq!(after(s.on_crash(t0, "a")), (ms(10), 1));
        assert_eq!(after(s.on_crash(t0 + ms(20), "a")), (ms(20), 2));
        assert_eq!(after(s.on_crash(t0 + ms(50), "a")), (ms(40), 3));
        // Restarted at 90 ms; ran for 100 ms (= backoff.max) → stable.
        assert_eq!(after(s.on_crash(t0 + ms(190), "a")), (ms(10), 1));
        // Restarted at 200 ms; 99 ms is not long enough.
        assert_eq!(after(s.on_crash(t0 + ms(299), "a")), (ms(20), 2));
    }

    #[test]
    fn on_healthy_resets_only_after_stable_run() {
        let mut s = SupervisorState::new(policy(100, Duration::from_secs(60)));
        let t0 = Instant::now();
        after(s.on_crash(t0, "a"));
        after(s.on_crash(t0 + ms(10), "a"));
        assert_eq!(s.streak(), 2);
        // Restart at 30 ms; healthy at 50 ms is too early.
        assert!(!s.on_healthy(t0 + ms(50)));
        assert_eq!(s.streak(), 2);
        assert!(s.on_healthy(t0 + ms(130)));
        assert_eq!(s.streak(), 0);
        assert_eq!(after(s.on_crash(t0 + ms(131), "a")), (ms(10), 1));
        // Restarts keep counting across resets.
        assert_eq!(s.restarts(), 3);
    }

    #[test]
    fn on_healthy_does_not_clear_intensity() {
        let mut s = SupervisorState::new(policy(2, Duration::from_secs(10)));
        let t0 = Instant::now();
        after(s.on_crash(t0, "a"));
        assert!(s.on_healthy(t0 + Duration::from_secs(1)));
        after(s.on_crash(t0 + Duration::from_secs(2), "a"));
        assert!(s.on_healthy(t0 + Duration::from_secs(3)));
        assert!(matches!(
            s.on_crash(t0 + Duration::from_secs(4), "a"),
            Decision::GiveUp { .. }
        ));
    }
}
