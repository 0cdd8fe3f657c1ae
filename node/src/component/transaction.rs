//! The transaction a finished handler hands to its pipeline, as a pure function of what
//! the handler did: the commit batch (its storage writes, its durable messages in their
//! receivers' outboxes, the consumption of its input, its durable reply, its counters) and
//! the effects released once that batch is durable (messages, the reply, the requests to
//! wait for).
//!
//! No storage, clock, router or runtime here: the actor reads what is needed at the edge
//! (the pair counters through [`PairBook`], the time through [`Now`], whether the input was
//! a removed sender's last message) and passes it in, so every exactly-once rule of a
//! transaction is tested over plain data below. Submitting to the pipeline stays in
//! `actor.rs`.

use super::host_state::Outgoing;
use super::pipeline::{PendingReply, Release};
use super::shared::{is_durable_request, PairNumbering};
use crate::api::Delivery;
use crate::messaging::idempotency::{self, Record, ToRecord};
use crate::messaging::{keys, Address, Body, Envelope, RequestErr};
use airssys_storage::{CommitBatch, ComponentWrites};
use std::time::{Duration, Instant};

/// The parts of an incoming envelope the commit needs after the handler ran.
pub(super) struct Incoming {
    pub from: Address,
    /// The sender's incarnation (0: an external client, or an envelope of an earlier build).
    pub from_incarnation: u64,
    pub delivery: Delivery,
    pub seq: u64,
    /// `Some(id)` when the sender waits for a reply.
    pub request_id: Option<u64>,
    /// `Some(id)` when this is the callback of our own request `id`.
    pub callback_id: Option<u64>,
    /// An external request's idempotency key, to record its outcome under.
    pub keyed: Option<ToRecord>,
}

impl Incoming {
    /// What `init` runs as: no sender, nothing durable, nobody waiting.
    pub fn init() -> Incoming {
        Incoming {
            from: Address::External,
            from_incarnation: 0,
            delivery: Delivery::Fast,
            seq: 0,
            request_id: None,
            callback_id: None,
            keyed: None,
        }
    }
}

/// The component whose handler ran.
pub(super) struct Me<'a> {
    pub name: &'a str,
    pub incarnation: u64,
}

/// When the transaction is made, and the trace its messages carry.
pub(super) struct Now {
    pub ms: u64,
    pub instant: Instant,
    pub traceparent: String,
}

/// What the component knows of its pairs, commits in flight included.
pub(super) trait PairBook {
    /// The incarnation of `receiver` a durable message to it is numbered for now.
    fn receiver_incarnation(&self, receiver: &str) -> u64;
    /// The last number given on the pair to incarnation `incarnation` of `receiver`.
    fn last_pair_seq(&self, receiver: &str, incarnation: u64) -> u64;
}

/// The component's durable sequence number (durable request ids come from it) when the
/// handler began and now: a number handed out since must be persisted by this commit, or a
/// restart would hand it out again.
#[derive(Clone, Copy)]
pub(super) struct Seqs {
    pub at_start: u64,
    pub now: u64,
}

impl Seqs {
    /// Nothing handed out that must be kept (a failed handler's numbers went unused).
    pub fn unchanged(now: u64) -> Seqs {
        Seqs { at_start: now, now }
    }
}

/// What the handler did.
pub(super) struct Handled {
    /// Its storage writes and the store's usage once they apply; `None` when it wrote
    /// nothing (a failed handler never writes).
    pub writes: Option<(ComponentWrites, u64)>,
    /// The messages and requests it sent (a failed handler sends none).
    pub outgoing: Vec<Outgoing>,
    /// The answer for its requester, if it was asked.
    pub answer: Result<Vec<u8>, RequestErr>,
}

impl Handled {
    /// A handler that failed: nothing of it is kept but the error answer.
    pub fn failed(err: RequestErr) -> Handled {
        Handled {
            writes: None,
            outgoing: Vec::new(),
            answer: Err(err),
        }
    }
}

/// A handler's transaction: what to commit and what to release once it is durable.
pub(super) struct Transaction {
    /// The fence is added by the pipeline to the merged commit, only when there is
    /// something to commit.
    pub batch: CommitBatch,
    /// The pair numbers it took (the actor adopts them as the current ones).
    pub numbering: PairNumbering,
    pub usage_after: Option<u64>,
    pub release: Release,
    /// The idempotency record it writes (key, record), for the component to remember
    /// while the commit is on its way.
    pub recorded: Option<(String, Record)>,
}

/// The transaction of a handler that ran on `incoming` and did `handled`.
/// `input_ends_former_sender`: the input is the last message waiting from a removed
/// sender's former name (so its de-dup mark can go).
pub(super) fn transaction(
    me: &Me,
    incoming: &Incoming,
    input_ends_former_sender: bool,
    handled: Handled,
    seqs: Seqs,
    book: &impl PairBook,
    now: &Now,
) -> Transaction {
    // Kept for the record: the reply itself goes to the requester.
    let keyed_outcome = incoming
        .keyed
        .as_ref()
        .filter(|_| idempotency::is_final(&handled.answer))
        .map(|_| handled.answer.clone());
    let mut batch = consumption(me, incoming, input_ends_former_sender);
    let usage_after = handled.writes.map(|(writes, usage)| {
        batch.components.push(writes);
        usage
    });
    let mut numbering = PairNumbering::default();
    let mut requests = Vec::new();
    let mut envelopes = Vec::with_capacity(handled.outgoing.len());
    for out in handled.outgoing {
        let env = outgoing_envelope(
            me,
            out,
            &mut batch,
            &mut numbering,
            &mut requests,
            book,
            now,
        );
        envelopes.push(env);
    }
    let reply = incoming.request_id.and_then(|id| {
        reply(
            me,
            incoming,
            id,
            handled.answer,
            &mut batch,
            &mut numbering,
            book,
            now,
        )
    });
    if seqs.now != seqs.at_start {
        batch
            .sys
            .push((keys::seq(me.name), Some(keys::encode_u64(seqs.now))));
    }
    batch.sys.extend(numbering.writes(me.name));
    let recorded = match (&incoming.keyed, keyed_outcome) {
        (Some(to), Some(outcome)) => record_outcome(me, to, outcome, &mut batch),
        _ => None,
    };
    Transaction {
        batch,
        numbering,
        usage_after,
        release: Release {
            requests,
            envelopes,
            reply,
        },
        recorded,
    }
}

/// Adds a keyed request's record (and the pruning of expired ones) to its batch: always
/// for a client's key; for a forwarding node's key only when the batch commits anything
/// anyway (a handler without effects may simply run again).
fn record_outcome(
    me: &Me,
    to: &ToRecord,
    outcome: Result<Vec<u8>, RequestErr>,
    batch: &mut CommitBatch,
) -> Option<(String, Record)> {
    if !to.key.client && batch.is_empty() {
        return None;
    }
    let record = to.record(outcome);
    let key = &to.key.key;
    batch.sys.extend(idempotency::record_writes(
        me.name,
        key,
        &record,
        &to.expired,
    ));
    Some((key.clone(), record))
}

/// A batch that consumes the incoming durable message (outbox entry deleted, de-dup mark
/// advanced to it) and, for the callback of a durable request, its pending record. Empty
/// for a fast input.
pub(super) fn consumption(
    me: &Me,
    incoming: &Incoming,
    input_ends_former_sender: bool,
) -> CommitBatch {
    let mut batch = CommitBatch::sys_only(Vec::new());
    if incoming.delivery == Delivery::Durable {
        let sender = incoming.from.key_segment();
        batch
            .sys
            .push((keys::outbox(me.name, sender, incoming.seq), None));
        let mark = if input_ends_former_sender {
            // A removed sender's last message: its mark goes with it (the in-memory one
            // stays, so a copy still on its way is known for a repeat).
            None
        } else {
            Some(keys::encode_mark(keys::Mark {
                incarnation: incoming.from_incarnation,
                seq: incoming.seq,
            }))
        };
        batch.sys.push((keys::dedup(me.name, sender), mark));
    }
    if let Some(id) = incoming.callback_id {
        if is_durable_request(id) {
            batch.sys.push((keys::pending(me.name, id), None));
        }
    }
    batch
}

/// A durable message handled before (a replay or a resend): only its leftover outbox entry
/// is cleared. The de-dup mark stays where it is: writing this older number would move it
/// back.
pub(super) fn duplicate_cleared(me: &Me, incoming: &Incoming) -> CommitBatch {
    CommitBatch::sys_only(vec![(
        keys::outbox(me.name, incoming.from.key_segment(), incoming.seq),
        None,
    )])
}

/// One message or request the handler sent, numbered (durable: next on its pair, for the
/// receiver's incarnation now) and, when durable, written to the receiver's outbox in this
/// commit; a durable request also leaves a pending record with its deadline.
fn outgoing_envelope(
    me: &Me,
    out: Outgoing,
    batch: &mut CommitBatch,
    numbering: &mut PairNumbering,
    requests: &mut Vec<(u64, Instant)>,
    book: &impl PairBook,
    now: &Now,
) -> Envelope {
    let seq = match out.delivery {
        Delivery::Durable => numbering.take(
            &out.target,
            |r| book.receiver_incarnation(r),
            |r, inc| book.last_pair_seq(r, inc),
        ),
        Delivery::Fast => 0,
    };
    let body = match out.request {
        Some((id, timeout_ms)) => {
            let deadline_ms = now.ms + u64::from(timeout_ms);
            requests.push((id, now.instant + Duration::from_millis(timeout_ms.into())));
            if out.delivery == Delivery::Durable {
                batch.sys.push((
                    keys::pending(me.name, id),
                    Some(keys::encode_u64(deadline_ms)),
                ));
            }
            Body::Request {
                id,
                payload: out.payload,
                deadline_ms,
            }
        }
        None => Body::Message {
            payload: out.payload,
        },
    };
    let env = Envelope {
        from: Address::Component(me.name.to_string()),
        from_incarnation: me.incarnation,
        to: out.target,
        delivery: out.delivery,
        seq,
        origin: 0,
        trace: now.traceparent.clone(),
        body,
    };
    if env.is_durable() {
        batch
            .sys
            .push((keys::outbox(&env.to, me.name, seq), Some(env.encode())));
    }
    env
}

/// The answer to request `id` of `incoming`'s sender. A component's reply travels as the
/// request did; a durable one is numbered for the incarnation that asked and is part of
/// this commit (exactly once end to end).
#[allow(clippy::too_many_arguments)] // the parts of one transaction, each distinct
fn reply(
    me: &Me,
    incoming: &Incoming,
    id: u64,
    answer: Result<Vec<u8>, RequestErr>,
    batch: &mut CommitBatch,
    numbering: &mut PairNumbering,
    book: &impl PairBook,
    now: &Now,
) -> Option<PendingReply> {
    match &incoming.from {
        Address::External => Some(PendingReply::External {
            id,
            outcome: answer,
        }),
        // Asked by a component since removed (its request outlived it under its former
        // name): no one can take the answer, and nothing is left waiting for one.
        Address::Component(requester) if !keys::is_live_name(requester) => None,
        Address::Component(requester) => {
            let seq = match incoming.delivery {
                Delivery::Durable => numbering.take(
                    requester,
                    |_| incoming.from_incarnation,
                    |r, inc| book.last_pair_seq(r, inc),
                ),
                Delivery::Fast => 0,
            };
            let env = Envelope {
                from: Address::Component(me.name.to_string()),
                from_incarnation: me.incarnation,
                to: requester.clone(),
                delivery: incoming.delivery,
                seq,
                origin: 0,
                trace: now.traceparent.clone(),
                body: Body::Reply {
                    id,
                    outcome: answer,
                },
            };
            if env.is_durable() {
                batch
                    .sys
                    .push((keys::outbox(requester, me.name, seq), Some(env.encode())));
            }
            Some(PendingReply::Component(env))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::component::shared::FAST_REQUEST_BIT;
    use std::collections::HashMap;

    /// Pairs as plain data: receiver → (incarnation now, last number given to it).
    #[derive(Default)]
    struct Book(HashMap<String, (u64, u64)>);

    impl PairBook for Book {
        fn receiver_incarnation(&self, receiver: &str) -> u64 {
            self.0.get(receiver).map_or(0, |p| p.0)
        }
        fn last_pair_seq(&self, receiver: &str, incarnation: u64) -> u64 {
            self.0
                .get(receiver)
                .filter(|p| p.0 == incarnation)
                .map_or(0, |p| p.1)
        }
    }

    const ME: Me = Me {
        name: "a",
        incarnation: 7,
    };

    fn now() -> Now {
        Now {
            ms: 1_000,
            instant: Instant::now(),
            traceparent: String::new(),
        }
    }

    fn from(sender: &str, delivery: Delivery, seq: u64, request_id: Option<u64>) -> Incoming {
        Incoming {
            from: Address::Component(sender.into()),
            from_incarnation: 3,
            delivery,
            seq,
            request_id,
            callback_id: None,
            keyed: None,
        }
    }

    fn send(target: &str, delivery: Delivery, request: Option<(u64, u32)>) -> Outgoing {
        Outgoing {
            target: target.into(),
            delivery,
            payload: b"p".to_vec(),
            request,
        }
    }

    fn ok(outgoing: Vec<Outgoing>) -> Handled {
        Handled {
            writes: None,
            outgoing,
            answer: Ok(b"r".to_vec()),
        }
    }

    fn run(incoming: &Incoming, handled: Handled, book: &Book) -> Transaction {
        transaction(
            &ME,
            incoming,
            false,
            handled,
            Seqs::unchanged(5),
            book,
            &now(),
        )
    }

    fn value<'b>(batch: &'b CommitBatch, key: &[u8]) -> Option<&'b Option<Vec<u8>>> {
        batch.sys.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    #[test]
    fn a_fast_message_that_did_nothing_commits_and_releases_nothing() {
        let t = run(
            &from("b", Delivery::Fast, 0, None),
            ok(Vec::new()),
            &Book::default(),
        );
        assert!(t.batch.is_empty());
        assert!(t.release.envelopes.is_empty() && t.release.reply.is_none());
        assert!(t.usage_after.is_none());
    }

    #[test]
    fn a_durable_input_is_consumed_and_its_mark_carries_the_senders_incarnation() {
        let incoming = from("b", Delivery::Durable, 4, None);
        let t = run(&incoming, ok(Vec::new()), &Book::default());
        assert_eq!(value(&t.batch, &keys::outbox("a", "b", 4)), Some(&None));
        let mark = value(&t.batch, &keys::dedup("a", "b")).unwrap().as_ref();
        assert_eq!(
            keys::decode_mark(mark.unwrap()),
            Some(keys::Mark {
                incarnation: 3,
                seq: 4
            })
        );
    }

    #[test]
    fn a_removed_senders_last_message_takes_its_mark_with_it() {
        let incoming = from("b~2", Delivery::Durable, 4, None);
        let t = transaction(
            &ME,
            &incoming,
            true,
            ok(Vec::new()),
            Seqs::unchanged(5),
            &Book::default(),
            &now(),
        );
        assert_eq!(value(&t.batch, &keys::outbox("a", "b~2", 4)), Some(&None));
        assert_eq!(value(&t.batch, &keys::dedup("a", "b~2")), Some(&None));
    }

    #[test]
    fn durable_sends_are_numbered_on_from_the_pairs_last_number_and_stored_in_outboxes() {
        let book = Book(HashMap::from([("b".to_string(), (9, 41))]));
        let out = vec![
            send("b", Delivery::Durable, None),
            send("b", Delivery::Durable, None),
            send("c", Delivery::Durable, None),
            send("b", Delivery::Fast, None),
        ];
        let t = run(&from("x", Delivery::Fast, 0, None), ok(out), &book);
        let seqs: Vec<(String, u64)> = t
            .release
            .envelopes
            .iter()
            .map(|e| (e.to.clone(), e.seq))
            .collect();
        assert_eq!(
            seqs,
            [
                ("b".into(), 42),
                ("b".into(), 43),
                ("c".into(), 1),
                ("b".into(), 0)
            ]
        );
        for env in &t.release.envelopes[..3] {
            let stored = value(&t.batch, &keys::outbox(&env.to, "a", env.seq))
                .unwrap()
                .as_ref()
                .unwrap();
            assert_eq!(&Envelope::decode(stored).unwrap(), env);
            assert_eq!(env.from_incarnation, 7);
        }
        // The fast one leaves nothing in storage: four sys writes for three outboxes
        // would mean it did.
        let outboxes = t
            .batch
            .sys
            .iter()
            .filter(|(k, _)| {
                k.starts_with(&keys::outbox_pair("b", "a"))
                    || k.starts_with(&keys::outbox_pair("c", "a"))
            })
            .count();
        assert_eq!(outboxes, 3);
        // The counters persist, each for the incarnation numbered for.
        let b = value(&t.batch, &keys::pair_seq("a", "b")).unwrap().as_ref();
        assert_eq!(
            keys::decode_mark(b.unwrap()),
            Some(keys::Mark {
                incarnation: 9,
                seq: 43
            })
        );
        let mut peers = t.numbering.peers();
        peers.sort();
        assert_eq!(peers, [("b".to_string(), 9), ("c".to_string(), 0)]);
    }

    #[test]
    fn a_durable_request_leaves_a_pending_record_with_its_deadline_and_a_fast_one_does_not() {
        let durable_id = 12;
        let fast_id = FAST_REQUEST_BIT | 3;
        let out = vec![
            send("b", Delivery::Durable, Some((durable_id, 500))),
            send("b", Delivery::Fast, Some((fast_id, 500))),
        ];
        let at = now();
        let t = transaction(
            &ME,
            &from("x", Delivery::Fast, 0, None),
            false,
            ok(out),
            Seqs::unchanged(5),
            &Book::default(),
            &at,
        );
        let pending = value(&t.batch, &keys::pending("a", durable_id))
            .unwrap()
            .as_ref();
        assert_eq!(keys::decode_u64(pending.unwrap()), Some(1_500));
        assert_eq!(value(&t.batch, &keys::pending("a", fast_id)), None);
        let waits: Vec<u64> = t.release.requests.iter().map(|r| r.0).collect();
        assert_eq!(waits, [durable_id, fast_id]);
        assert_eq!(
            t.release.requests[0].1,
            at.instant + Duration::from_millis(500)
        );
    }

    #[test]
    fn a_durable_reply_is_numbered_for_the_incarnation_that_asked_and_committed() {
        // The book says b is incarnation 9 now; the request came from incarnation 3.
        let book = Book(HashMap::from([("b".to_string(), (9, 41))]));
        let t = run(
            &from("b", Delivery::Durable, 4, Some(77)),
            ok(Vec::new()),
            &book,
        );
        let Some(PendingReply::Component(env)) = &t.release.reply else {
            panic!("a component's request is answered with a component reply");
        };
        assert_eq!((env.to.as_str(), env.seq), ("b", 1));
        assert!(matches!(&env.body, Body::Reply { id: 77, outcome: Ok(r) } if r == b"r"));
        let stored = value(&t.batch, &keys::outbox("b", "a", 1))
            .unwrap()
            .as_ref()
            .unwrap();
        assert_eq!(&Envelope::decode(stored).unwrap(), env);
        assert_eq!(t.numbering.peers(), [("b".to_string(), 3)]);
    }

    #[test]
    fn a_fast_reply_is_not_stored() {
        let t = run(
            &from("b", Delivery::Fast, 0, Some(FAST_REQUEST_BIT | 1)),
            ok(Vec::new()),
            &Book::default(),
        );
        assert!(matches!(&t.release.reply, Some(PendingReply::Component(e)) if e.seq == 0));
        assert!(t.batch.is_empty());
    }

    #[test]
    fn a_removed_requester_gets_no_reply_and_nothing_waits_for_it() {
        let t = run(
            &from("b~2", Delivery::Durable, 4, Some(77)),
            ok(Vec::new()),
            &Book::default(),
        );
        assert!(t.release.reply.is_none());
        assert!(!t
            .batch
            .sys
            .iter()
            .any(|(k, _)| k.starts_with(&keys::outbox_pair("b~2", "a"))));
        assert!(t.numbering.peers().is_empty());
    }

    #[test]
    fn an_external_request_is_answered_directly_with_the_handlers_outcome() {
        let incoming = Incoming {
            request_id: Some(5),
            ..Incoming::init()
        };
        let t = run(
            &incoming,
            Handled::failed(RequestErr::Rejected("no".into())),
            &Book::default(),
        );
        assert!(matches!(
            &t.release.reply,
            Some(PendingReply::External { id: 5, outcome: Err(RequestErr::Rejected(why)) }) if why == "no"
        ));
        assert!(t.batch.is_empty());
    }

    #[test]
    fn a_failed_handler_still_consumes_its_input_and_answers_with_the_error() {
        let t = run(
            &from("b", Delivery::Durable, 4, Some(77)),
            Handled::failed(RequestErr::Trapped("boom".into())),
            &Book::default(),
        );
        assert!(t.batch.components.is_empty());
        assert_eq!(value(&t.batch, &keys::outbox("a", "b", 4)), Some(&None));
        let Some(PendingReply::Component(env)) = &t.release.reply else {
            panic!("the requester hears the failure");
        };
        assert!(matches!(
            &env.body,
            Body::Reply {
                outcome: Err(RequestErr::Trapped(_)),
                ..
            }
        ));
        assert!(value(&t.batch, &keys::outbox("b", "a", env.seq)).is_some());
    }

    #[test]
    fn the_callback_of_a_durable_request_clears_its_pending_record_only() {
        let mut incoming = from("b", Delivery::Durable, 4, None);
        incoming.callback_id = Some(12);
        let t = run(&incoming, ok(Vec::new()), &Book::default());
        assert_eq!(value(&t.batch, &keys::pending("a", 12)), Some(&None));
        incoming.callback_id = Some(FAST_REQUEST_BIT | 12);
        let t = run(&incoming, ok(Vec::new()), &Book::default());
        assert_eq!(
            value(&t.batch, &keys::pending("a", FAST_REQUEST_BIT | 12)),
            None
        );
    }

    #[test]
    fn storage_writes_and_numbers_handed_out_are_committed() {
        let writes = ComponentWrites {
            component: "a".into(),
            writes: vec![(b"k".to_vec(), Some(b"v".to_vec()))],
            usage_delta: 2,
        };
        let handled = Handled {
            writes: Some((writes, 40)),
            ..ok(Vec::new())
        };
        let t = transaction(
            &ME,
            &from("x", Delivery::Fast, 0, None),
            false,
            handled,
            Seqs {
                at_start: 5,
                now: 8,
            },
            &Book::default(),
            &now(),
        );
        assert_eq!(t.usage_after, Some(40));
        assert_eq!(t.batch.components.len(), 1);
        let seq = value(&t.batch, &keys::seq("a")).unwrap().as_ref();
        assert_eq!(keys::decode_u64(seq.unwrap()), Some(8));
    }

    #[test]
    fn a_duplicate_only_clears_its_leftover_entry() {
        let batch = duplicate_cleared(&ME, &from("b", Delivery::Durable, 4, None));
        assert_eq!(batch.sys, [(keys::outbox("a", "b", 4), None)]);
    }
}
