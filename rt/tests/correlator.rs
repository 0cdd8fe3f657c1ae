//! Request correlation with a real timer task. Time-based tests use a paused clock: sleeping
//! in the test jumps the clock forward once every task is idle, so deadlines fire
//! deterministically and nothing depends on wall-clock speed.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use airssys_actor::{Correlator, RequestIdGen};
use tokio::sync::mpsc;

fn now() -> Instant {
    // Deadlines must come from tokio's (pausable) clock.
    tokio::time::Instant::now().into_std()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn with_timer<K: std::hash::Hash + Eq + Clone + Send + 'static>() -> (
    Correlator<K>,
    mpsc::UnboundedReceiver<K>,
    tokio::task::JoinHandle<()>,
) {
    let corr = Correlator::new();
    let (tx, rx) = mpsc::unbounded_channel();
    let task = corr.spawn_timeouts(move |k| {
        let _ = tx.send(k);
    });
    (corr, rx, task)
}

#[tokio::test(start_paused = true)]
async fn complete_before_deadline_means_no_timeout() {
    let (corr, mut timeouts, _task) = with_timer::<u64>();
    corr.register(1, now() + ms(100));
    tokio::time::sleep(ms(50)).await;
    assert!(corr.complete(&1));
    assert!(!corr.complete(&1), "second completion must lose");
    tokio::time::sleep(ms(500)).await;
    assert!(timeouts.try_recv().is_err(), "completed request timed out");
    assert!(corr.is_empty());
}

#[tokio::test(start_paused = true)]
async fn no_completion_means_exactly_one_timeout() {
    let (corr, mut timeouts, _task) = with_timer::<u64>();
    corr.register(7, now() + ms(100));
    tokio::time::sleep(ms(99)).await;
    assert!(timeouts.try_recv().is_err(), "fired before its deadline");
    tokio::time::sleep(ms(10)).await;
    assert_eq!(timeouts.try_recv().ok(), Some(7));
    tokio::time::sleep(ms(10_000)).await;
    assert!(timeouts.try_recv().is_err(), "fired twice");
    // The late reply loses.
    assert!(!corr.complete(&7));
    assert!(corr.is_empty());
}

#[tokio::test(start_paused = true)]
async fn earlier_deadline_registered_later_wakes_the_timer() {
    let (corr, mut timeouts, _task) = with_timer::<&'static str>();
    corr.register("slow", now() + Duration::from_secs(3600));
    // Let the timer task go to sleep on the one-hour deadline.
    tokio::task::yield_now().await;
    corr.register("fast", now() + ms(10));
    tokio::time::sleep(ms(20)).await;
    assert_eq!(timeouts.try_recv().ok(), Some("fast"));
    assert!(timeouts.try_recv().is_err());
    assert_eq!(corr.len(), 1);
    assert!(corr.complete(&"slow"));
}

#[tokio::test(start_paused = true)]
async fn many_keys_mixed_deadlines() {
    let (corr, mut timeouts, _task) = with_timer::<u64>();
    let t0 = now();
    // Deadlines spread over 0..=990 ms, registered out of order.
    for k in 0..1000u64 {
        corr.register(k, t0 + ms((k * 7919) % 100 * 10));
    }
    // Complete every even key whose deadline has not passed yet at the moment we complete it.
    let mut completed = HashSet::new();
    for step in 0..100u64 {
        for k in (0..1000u64).filter(|k| (k * 7919) % 100 == step && k % 2 == 0) {
            if step > 0 {
                // Deadline step*10 ms is still ahead (we are at (step-1)*10 + 5 ms).
                assert!(corr.complete(&k), "key {k} should still be pending");
                completed.insert(k);
            }
        }
        tokio::time::sleep_until((t0 + ms(step * 10 + 5)).into()).await;
    }
    tokio::time::sleep(ms(1000)).await;
    let mut fired = Vec::new();
    while let Ok(k) = timeouts.try_recv() {
        fired.push(k);
    }
    let fired_set: HashSet<u64> = fired.iter().copied().collect();
    assert_eq!(fired.len(), fired_set.len(), "a key timed out twice");
    let expected: HashSet<u64> = (0..1000u64).filter(|k| !completed.contains(k)).collect();
    assert_eq!(fired_set, expected);
    // Exactly one outcome per key: the timed-out ones can no longer complete.
    for k in 0..1000u64 {
        assert!(!corr.complete(&k));
    }
    assert!(corr.is_empty());
}

#[tokio::test(start_paused = true)]
async fn on_timeout_may_reenter_the_correlator() {
    let corr = Correlator::<u64>::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let inner = corr.clone();
    let _task = corr.spawn_timeouts(move |k| {
        // A retry policy registering again from inside the callback must not deadlock.
        if k < 3 {
            inner.register(k + 1, now() + ms(10));
        }
        let _ = tx.send(k);
    });
    corr.register(0, now() + ms(10));
    tokio::time::sleep(ms(100)).await;
    let mut got = Vec::new();
    while let Ok(k) = rx.try_recv() {
        got.push(k);
    }
    assert_eq!(got, vec![0, 1, 2, 3]);
}

#[tokio::test(start_paused = true)]
async fn timer_task_ends_when_correlator_is_dropped() {
    let (corr, _timeouts, task) = with_timer::<u64>();
    corr.register(1, now() + Duration::from_secs(3600));
    let clone = corr.clone();
    drop(corr);
    tokio::task::yield_now().await;
    assert!(!task.is_finished(), "a clone still exists");
    drop(clone);
    // If the task did not end, the paused clock would jump to the 1 s timeout and fail this.
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("timer task kept running")
        .unwrap();
}

/// Completions racing with expiry on two threads: every key gets exactly one outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_outcome_under_races() {
    const N: u64 = 20_000;
    let corr = Correlator::<u64>::new();
    let timed_out = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = Arc::clone(&timed_out);
    let task = corr.spawn_timeouts(move |k| sink.lock().unwrap().push(k));
    let ids = Arc::new(RequestIdGen::new());
    let won = Arc::new(AtomicU64::new(0));
    let mut keys = Vec::new();
    for _ in 0..N {
        let id = ids.next_id();
        // Deadlines right around "now" so many of them race with their completion.
        corr.register(id, Instant::now() + Duration::from_micros(id % 500));
        keys.push(id);
    }
    let completer = {
        let corr = corr.clone();
        let won = Arc::clone(&won);
        tokio::spawn(async move {
            let mut wins = Vec::new();
            for k in keys {
                if corr.complete(&k) {
                    won.fetch_add(1, Ordering::Relaxed);
                    wins.push(k);
                }
                if k % 256 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            wins
        })
    };
    let wins = completer.await.unwrap();
    // Wait (on the real clock, but asserting no duration) until every key has an outcome.
    while !corr.is_empty() {
        tokio::time::sleep(ms(1)).await;
    }
    // The timer calls `on_timeout` outside the lock; once the last correlator is gone it
    // finishes those calls and ends, so awaiting it makes the outcome list complete.
    drop(corr);
    task.await.unwrap();
    let timed_out = timed_out.lock().unwrap().clone();
    let mut all: Vec<u64> = wins.iter().chain(timed_out.iter()).copied().collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=N).collect::<Vec<_>>(),
        "a key had zero or two outcomes"
    );
    assert_eq!(won.load(Ordering::Relaxed) as usize, wins.len());
}
