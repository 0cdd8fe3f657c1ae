//! Mailbox behaviour on a real tokio runtime.
#![allow(clippy::unwrap_used)]

use airssys_actor::{mailbox, Closed, TrySendError};

#[tokio::test]
async fn full_hands_the_message_back() {
    let (tx, mut rx) = mailbox::<String>(2);
    tx.try_send("a".into()).unwrap();
    tx.try_send("b".into()).unwrap();
    match tx.try_send("c".into()) {
        Err(TrySendError::Full(msg)) => assert_eq!(msg, "c"),
        other => panic!("expected Full, got {other:?}"),
    }
    assert_eq!(tx.len(), 2);
    assert_eq!(tx.capacity(), 2);
    assert_eq!(rx.recv().await.as_deref(), Some("a"));
    // One slot free again.
    tx.try_send("c".into()).unwrap();
    assert!(tx.try_send("d".into()).unwrap_err().is_full());
}

#[tokio::test]
async fn push_committed_exceeds_capacity() {
    let (tx, mut rx) = mailbox::<u32>(2);
    tx.try_send(1).unwrap();
    tx.try_send(2).unwrap();
    for n in 3..=10 {
        tx.push_committed(n).unwrap();
    }
    assert_eq!(rx.len(), 10);
    assert!(tx.try_send(11).unwrap_err().is_full());
    let mut got = Vec::new();
    while let Some(n) = rx.try_recv() {
        got.push(n);
    }
    assert_eq!(got, (1..=10).collect::<Vec<_>>());
    assert_eq!(tx.len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_across_tasks_under_backpressure() {
    const N: u32 = 20_000;
    let (tx, mut rx) = mailbox::<u32>(16);
    let producer = tokio::spawn(async move {
        for n in 0..N {
            let mut msg = n;
            loop {
                match tx.try_send(msg) {
                    Ok(()) => break,
                    Err(TrySendError::Full(m)) => {
                        msg = m;
                        tokio::task::yield_now().await;
                    }
                    Err(TrySendError::Closed(_)) => panic!("closed"),
                }
            }
        }
    });
    let mut expected = 0;
    while let Some(n) = rx.recv().await {
        assert_eq!(n, expected, "out of order");
        expected += 1;
    }
    assert_eq!(expected, N);
    producer.await.unwrap();
    assert_eq!(rx.len(), 0);
}

#[tokio::test]
async fn recv_ends_when_senders_are_gone() {
    let (tx, mut rx) = mailbox::<u32>(4);
    let tx2 = tx.clone();
    tx.try_send(1).unwrap();
    drop(tx);
    tx2.try_send(2).unwrap();
    drop(tx2);
    assert_eq!(rx.recv().await, Some(1));
    assert_eq!(rx.recv().await, Some(2));
    assert_eq!(rx.recv().await, None);
}

#[tokio::test]
async fn close_refuses_new_and_drain_returns_queued() {
    let (tx, mut rx) = mailbox::<u32>(4);
    tx.try_send(1).unwrap();
    tx.push_committed(2).unwrap();
    rx.close();
    assert!(tx.is_closed());
    assert_eq!(tx.try_send(3), Err(TrySendError::Closed(3)));
    assert_eq!(tx.push_committed(4), Err(Closed(4)));
    assert_eq!(rx.drain(), vec![1, 2]);
    assert_eq!(rx.recv().await, None);
}
