//! Whether a request that failed on its way to the component's owner is sent again
//! (to the owner as the registry now names it), as a plain decision.
//!
//! Only a keyed request is sent again: its key makes a second attempt return the first
//! one's outcome if the first was applied after all, so a retry cannot double it. The
//! key is the client's, or one the node that took the request chose when it forwarded
//! it. Without a key (a request this node ran itself), an attempt whose fate is unknown
//! is reported as such.

use crate::api::{ApiError, ErrorKind};
use std::time::Duration;

/// First pause before another attempt when the owner has not changed.
pub const FIRST_PAUSE: Duration = Duration::from_millis(20);
/// Longest pause between attempts.
pub const MAX_PAUSE: Duration = Duration::from_millis(500);

/// Whether the failed attempt `err` is tried again, with `left` of the request's time.
pub fn try_again(err: &ApiError, keyed: bool, left: Duration) -> bool {
    keyed && !left.is_zero() && matches!(err.error, ErrorKind::Unavailable | ErrorKind::NotLeader)
}

/// The pause after attempt `attempt` (1, 2, …) when the owner is the same: doubling
/// from [`FIRST_PAUSE`] to [`MAX_PAUSE`], never past what is left.
pub fn pause(attempt: u32, left: Duration) -> Duration {
    let doubled = FIRST_PAUSE.saturating_mul(1u32 << attempt.saturating_sub(1).min(8));
    doubled.min(MAX_PAUSE).min(left)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(kind: ErrorKind) -> ApiError {
        ApiError::new(kind, "x")
    }

    #[test]
    fn only_keyed_requests_that_may_work_elsewhere_are_sent_again() {
        let left = Duration::from_secs(1);
        assert!(try_again(&err(ErrorKind::Unavailable), true, left));
        assert!(try_again(&err(ErrorKind::NotLeader), true, left));
        assert!(!try_again(&err(ErrorKind::Unavailable), false, left));
        assert!(!try_again(
            &err(ErrorKind::Unavailable),
            true,
            Duration::ZERO
        ));
        for final_kind in [
            ErrorKind::Timeout,
            ErrorKind::Rejected,
            ErrorKind::Trapped,
            ErrorKind::NotFound,
            ErrorKind::KeyReused,
            ErrorKind::MailboxFull,
        ] {
            assert!(!try_again(&err(final_kind), true, left), "{final_kind}");
        }
    }

    #[test]
    fn pauses_double_up_to_a_cap_and_fit_the_time_left() {
        let left = Duration::from_secs(10);
        assert_eq!(pause(1, left), FIRST_PAUSE);
        assert_eq!(pause(2, left), FIRST_PAUSE * 2);
        assert_eq!(pause(30, left), MAX_PAUSE);
        assert_eq!(pause(3, Duration::from_millis(7)), Duration::from_millis(7));
    }
}
