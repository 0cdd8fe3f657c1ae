//! Bounded per-actor mailboxes.
//!
//! This module owns the queue between the senders of an actor and its task. The bound is
//! enforced by [`MailboxSender::try_send`]: a full mailbox hands the message back in
//! [`TrySendError::Full`] so the caller can report `mailbox-full` — a message is never dropped
//! silently and the queue never grows without limit through `try_send`.
//!
//! The one deliberate exception is [`MailboxSender::push_committed`]: messages that are already
//! durably committed (durable messages, request timeouts) must not be refused, so they bypass the
//! bound. They are few and already paid for, so they cannot grow the queue unboundedly on their
//! own, and they still count towards the depth, so ordinary senders see `Full` until it drains.
//!
//! Implementation: a tokio unbounded mpsc channel plus a shared depth counter. `try_send`
//! reserves a slot with one `fetch_add` and backs off if that went over capacity; the receiver
//! releases the slot when it takes a message out. This is cheaper than tokio's bounded channel
//! (no semaphore, no permit) and exact: the depth never exceeds `capacity` through `try_send`.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

/// Why [`MailboxSender::try_send`] refused a message. The message is handed back.
#[derive(thiserror::Error, PartialEq, Eq)]
pub enum TrySendError<T> {
    /// The mailbox holds `capacity` messages already (the caller reports `mailbox-full`).
    #[error("mailbox full")]
    Full(T),
    /// The receiving side is closed: the actor stopped.
    #[error("mailbox closed")]
    Closed(T),
}

impl<T> TrySendError<T> {
    /// Take the refused message back.
    pub fn into_inner(self) -> T {
        match self {
            TrySendError::Full(msg) | TrySendError::Closed(msg) => msg,
        }
    }

    /// True for [`TrySendError::Full`].
    pub fn is_full(&self) -> bool {
        matches!(self, TrySendError::Full(_))
    }
}

// Manual Debug so that `T` need not be Debug (payloads are opaque bytes, reply channels, ...).
impl<T> fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("Full(..)"),
            TrySendError::Closed(_) => f.write_str("Closed(..)"),
        }
    }
}

/// The mailbox is closed; the message is handed back.
#[derive(thiserror::Error, PartialEq, Eq)]
#[error("mailbox closed")]
pub struct Closed<T>(pub T);

impl<T> Closed<T> {
    /// Take the refused message back.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for Closed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Closed(..)")
    }
}

/// Create a mailbox that accepts at most `capacity` messages through `try_send`.
///
/// A capacity of 0 refuses every `try_send` (only `push_committed` gets through).
pub fn mailbox<T>(capacity: usize) -> (MailboxSender<T>, MailboxReceiver<T>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let depth = Arc::new(AtomicUsize::new(0));
    (
        MailboxSender {
            tx,
            depth: Arc::clone(&depth),
            capacity,
        },
        MailboxReceiver {
            rx,
            depth,
            capacity,
        },
    )
}

/// The sending side of a mailbox. Cheap to clone; all clones share the same bound.
pub struct MailboxSender<T> {
    tx: mpsc::UnboundedSender<T>,
    depth: Arc<AtomicUsize>,
    capacity: usize,
}

impl<T> Clone for MailboxSender<T> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            depth: Arc::clone(&self.depth),
            capacity: self.capacity,
        }
    }
}

impl<T> fmt::Debug for MailboxSender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MailboxSender")
            .field("len", &self.len())
            .field("capacity", &self.capacity)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl<T> MailboxSender<T> {
    /// Queue `msg` if the mailbox has room. Never blocks.
    #[inline]
    pub fn try_send(&self, msg: T) -> Result<(), TrySendError<T>> {
        // Reserve a slot first; Relaxed is enough because the counter publishes no data
        // (the channel itself synchronises the message).
        let prev = self.depth.fetch_add(1, Ordering::Relaxed);
        if prev >= self.capacity {
            self.depth.fetch_sub(1, Ordering::Relaxed);
            // A closed mailbox is the more useful answer (the actor is gone, not just busy).
            return Err(if self.tx.is_closed() {
                TrySendError::Closed(msg)
            } else {
                TrySendError::Full(msg)
            });
        }
        self.tx.send(msg).map_err(|mpsc::error::SendError(msg)| {
            self.depth.fetch_sub(1, Ordering::Relaxed);
            TrySendError::Closed(msg)
        })
    }

    /// Queue `msg` regardless of capacity. Only for messages that are already durably
    /// committed (durable messages, request timeouts) and therefore must not be refused.
    pub fn push_committed(&self, msg: T) -> Result<(), Closed<T>> {
        self.depth.fetch_add(1, Ordering::Relaxed);
        self.tx.send(msg).map_err(|mpsc::error::SendError(msg)| {
            self.depth.fetch_sub(1, Ordering::Relaxed);
            Closed(msg)
        })
    }

    /// Messages currently queued (a snapshot; it may change at once).
    #[inline]
    pub fn len(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bound enforced by `try_send`.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// True once the receiver is closed or dropped: every send will fail with `Closed`.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// True when both senders feed the same mailbox.
    pub fn same_mailbox(&self, other: &Self) -> bool {
        self.tx.same_channel(&other.tx)
    }
}

/// The receiving side of a mailbox, owned by the actor's task.
pub struct MailboxReceiver<T> {
    rx: mpsc::UnboundedReceiver<T>,
    depth: Arc<AtomicUsize>,
    capacity: usize,
}

impl<T> fmt::Debug for MailboxReceiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MailboxReceiver")
            .field("len", &self.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl<T> MailboxReceiver<T> {
    /// Wait for the next message. `None` once every sender is gone (or the mailbox was closed)
    /// and the queue is empty.
    #[inline]
    pub async fn recv(&mut self) -> Option<T> {
        let msg = self.rx.recv().await;
        if msg.is_some() {
            self.depth.fetch_sub(1, Ordering::Relaxed);
        }
        msg
    }

    /// Take the next message if one is queued, without waiting.
    #[inline]
    pub fn try_recv(&mut self) -> Option<T> {
        let msg = self.rx.try_recv().ok();
        if msg.is_some() {
            self.depth.fetch_sub(1, Ordering::Relaxed);
        }
        msg
    }

    /// Refuse further messages: senders get `Closed` from now on. Messages already queued stay
    /// and can still be received (or drained).
    pub fn close(&mut self) {
        self.rx.close();
    }

    /// Take everything queued right now (for rejecting). A send racing with this call may land
    /// just after it; after [`close`](Self::close), `recv().await` until `None` collects those
    /// too.
    pub fn drain(&mut self) -> Vec<T> {
        let mut out = Vec::with_capacity(self.len());
        while let Some(msg) = self.try_recv() {
            out.push(msg);
        }
        out
    }

    /// Messages currently queued.
    pub fn len(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bound enforced on senders.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_hands_message_back() {
        let (tx, _rx) = mailbox::<u32>(2);
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)));
        assert_eq!(tx.len(), 2);
    }

    #[test]
    fn receiving_frees_a_slot() {
        let (tx, mut rx) = mailbox::<u32>(1);
        tx.try_send(1).unwrap();
        assert!(tx.try_send(2).unwrap_err().is_full());
        assert_eq!(rx.try_recv(), Some(1));
        tx.try_send(2).unwrap();
        assert_eq!(rx.try_recv(), Some(2));
        assert_eq!(rx.try_recv(), None);
        assert_eq!(rx.len(), 0);
    }

    #[test]
    fn push_committed_exceeds_capacity_and_blocks_try_send() {
        let (tx, mut rx) = mailbox::<u32>(1);
        tx.try_send(1).unwrap();
        tx.push_committed(2).unwrap();
        tx.push_committed(3).unwrap();
        assert_eq!(tx.len(), 3);
        assert_eq!(tx.try_send(4), Err(TrySendError::Full(4)));
        assert_eq!(rx.drain(), vec![1, 2, 3]);
        tx.try_send(4).unwrap();
        assert_eq!(rx.len(), 1);
    }

    #[test]
    fn capacity_zero_refuses_try_send() {
        let (tx, mut rx) = mailbox::<u32>(0);
        assert_eq!(tx.try_send(1), Err(TrySendError::Full(1)));
        tx.push_committed(2).unwrap();
        assert_eq!(rx.try_recv(), Some(2));
    }

    #[test]
    fn close_refuses_and_keeps_queued() {
        let (tx, mut rx) = mailbox::<u32>(4);
        tx.try_send(1).unwrap();
        rx.close();
        assert!(tx.is_closed());
        assert_eq!(tx.try_send(2), Err(TrySendError::Closed(2)));
        assert_eq!(tx.push_committed(3), Err(Closed(3)));
        assert_eq!(rx.drain(), vec![1]);
        assert_eq!(tx.len(), 0);
    }

    #[test]
    fn closed_and_full_reports_closed() {
        let (tx, mut rx) = mailbox::<u32>(1);
        tx.try_send(1).unwrap();
        rx.close();
        assert_eq!(tx.try_send(2), Err(TrySendError::Closed(2)));
    }

    #[test]
    fn dropped_receiver_is_closed() {
        let (tx, rx) = mailbox::<u32>(1);
        drop(rx);
        assert!(tx.is_closed());
        assert_eq!(tx.try_send(7).unwrap_err().into_inner(), 7);
        assert_eq!(tx.len(), 0);
    }

    #[test]
    fn clones_share_the_bound() {
        let (a, _rx) = mailbox::<u32>(1);
        let b = a.clone();
        assert!(a.same_mailbox(&b));
        a.try_send(1).unwrap();
        assert!(b.try_send(2).unwrap_err().is_full());
    }
}
