//! `airssys request --idempotency-key K` and `airssys send --idempotency-key K`: one
//! request or message, tried again on the failures that leave its outcome open
//! (`unavailable`, `not-leader`, a timeout, a lost connection) until its time is up. The
//! node answers every attempt under the same key with the first applied attempt's
//! outcome, so it is applied at most once however many attempts reach the cluster; with
//! the retries, exactly once unless time runs out.

use crate::api::{Delivery, ErrorKind};
use crate::client::{AdminClient, ClientError};
use std::time::Duration;
use tokio::time::Instant;

/// Pause before the second attempt; doubled each time up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(50);
const MAX_PAUSE: Duration = Duration::from_secs(1);
/// The least time an attempt is given (an attempt with less would only time out).
const MIN_ATTEMPT: Duration = Duration::from_millis(50);

/// Whether an attempt that failed with `err` may be made again.
pub fn retryable(err: &ClientError) -> bool {
    match err {
        ClientError::Api(e) => matches!(
            e.error,
            ErrorKind::Unavailable | ErrorKind::NotLeader | ErrorKind::Timeout
        ),
        ClientError::Connect { .. } | ClientError::Timeout { .. } => true,
        ClientError::Transport { .. } => true,
        // A proxy's 502/503/504 between the client and the node.
        ClientError::Http { status, .. } => matches!(status, 502..=504),
        ClientError::Tls { .. }
        | ClientError::InvalidEndpoint { .. }
        | ClientError::Decode { .. } => false,
    }
}

/// The pause after failed attempt `attempt` (1, 2, …).
pub fn pause(attempt: u32) -> Duration {
    FIRST_PAUSE
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(8))
        .min(MAX_PAUSE)
}

/// Makes `attempt` (given the time left) until it succeeds, fails for good, or `timeout`
/// is spent. Each attempt's failure is told on stderr when `verbose`.
async fn until_settled<T, F, Fut>(
    timeout: Duration,
    verbose: bool,
    mut attempt: F,
) -> Result<T, ClientError>
where
    F: FnMut(Duration) -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let deadline = Instant::now() + timeout;
    let mut tries = 0u32;
    loop {
        tries += 1;
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(MIN_ATTEMPT);
        let err = match attempt(left).await {
            Ok(done) => return Ok(done),
            Err(e) => e,
        };
        let pause = pause(tries);
        if !retryable(&err) || Instant::now() + pause + MIN_ATTEMPT > deadline {
            return Err(err);
        }
        if verbose {
            eprintln!("attempt {tries} failed ({err}); trying again under the same key");
        }
        tokio::time::sleep(pause).await;
    }
}

/// Sends the request under `key` until it has an outcome or `timeout` is spent.
pub async fn request(
    client: &AdminClient,
    name: &str,
    payload: Vec<u8>,
    timeout: Duration,
    delivery: Delivery,
    key: &str,
    verbose: bool,
) -> Result<Vec<u8>, ClientError> {
    until_settled(timeout, verbose, |left| {
        client.request_with_key(
            name,
            payload.clone(),
            left.as_millis() as u64,
            delivery,
            Some(key),
        )
    })
    .await
}

/// Sends the durable message under `key` until it is accepted or `timeout` is spent.
pub async fn send(
    client: &AdminClient,
    name: &str,
    payload: Vec<u8>,
    timeout: Duration,
    key: &str,
    verbose: bool,
) -> Result<(), ClientError> {
    until_settled(timeout, verbose, |_| {
        client.send_with_key(name, payload.clone(), Delivery::Durable, Some(key))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ApiError;

    #[test]
    fn open_outcomes_are_retried_and_final_ones_are_not() {
        let api = |k| ClientError::Api(ApiError::new(k, "x"));
        for k in [
            ErrorKind::Unavailable,
            ErrorKind::NotLeader,
            ErrorKind::Timeout,
        ] {
            assert!(retryable(&api(k)), "{k}");
        }
        for k in [
            ErrorKind::Rejected,
            ErrorKind::Trapped,
            ErrorKind::KeyReused,
            ErrorKind::NotFound,
            ErrorKind::Unauthorized,
            ErrorKind::BadRequest,
        ] {
            assert!(!retryable(&api(k)), "{k}");
        }
        let timeout = ClientError::Timeout {
            endpoint: "e".into(),
            after: Duration::from_secs(1),
        };
        assert!(retryable(&timeout));
        let http = |status| ClientError::Http {
            endpoint: "e".into(),
            status,
            body: String::new(),
        };
        assert!(retryable(&http(503)));
        assert!(!retryable(&http(404)));
    }

    #[test]
    fn pauses_double_to_a_cap() {
        assert_eq!(pause(1), FIRST_PAUSE);
        assert_eq!(pause(3), FIRST_PAUSE * 4);
        assert_eq!(pause(40), MAX_PAUSE);
    }
}
