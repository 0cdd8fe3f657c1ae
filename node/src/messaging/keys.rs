//! Layout of the node's system keyspace. Every key names the component it belongs to
//! (so a future split into several Raft groups by component can route each key).
//!
//! | key | value |
//! |---|---|
//! | `ob/<receiver>/<sender>/<seq:be64>` | a committed durable message not yet consumed |
//! | `dd/<receiver>/<sender>` | highest durable seq consumed from sender, with the sender's incarnation (de-dup mark, [`encode_mark`]) |
//! | `seq/<sender>` | the sender's last used durable request id |
//! | `ps/<sender>/<receiver>` | last durable sequence number committed on that pair (gapless per pair), with the receiver's incarnation ([`encode_mark`]) |
//! | `pend/<requester>/<id:be64>` | a durable request awaiting its callback: deadline ms |
//! | `init/<name>` | the incarnation's `init` ran |
//! | `ik/<name>/<key>` | a keyed external request's outcome ([`super::idempotency::Record`]) |
//! | `ix/<name>/<expires:be64><key>` | the same record's place in expiry order (empty value) |
//!
//! The registry and the binaries are the Raft state machine's (`raft/…` keys, in
//! `airssys-cluster`).

pub const OUTBOX: &[u8] = b"ob/";
pub const DEDUP: &[u8] = b"dd/";
pub const SEQ: &[u8] = b"seq/";
pub const PENDING: &[u8] = b"pend/";
pub const PAIR_SEQ: &[u8] = b"ps/";
pub const INIT: &[u8] = b"init/";
pub const IDEM: &[u8] = b"ik/";
pub const IDEM_EXPIRY: &[u8] = b"ix/";

fn join(prefix: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut key = prefix.to_vec();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            key.push(b'/');
        }
        key.extend_from_slice(part);
    }
    key
}

/// Marks that a component's `init` ran (replicated with the component's state).
pub fn init_ran(name: &str) -> Vec<u8> {
    join(INIT, &[name.as_bytes()])
}

pub fn outbox(receiver: &str, sender: &str, seq: u64) -> Vec<u8> {
    let mut key = outbox_pair(receiver, sender);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// Prefix of every durable message from `sender` waiting for `receiver`.
pub fn outbox_pair(receiver: &str, sender: &str) -> Vec<u8> {
    let mut key = outbox_for_receiver(receiver);
    key.extend_from_slice(sender.as_bytes());
    key.push(b'/');
    key
}

/// The sequence number at the end of an `ob/<receiver>/<sender>/<seq>` key.
pub fn outbox_seq(key: &[u8]) -> Option<u64> {
    trailing_u64(key)
}

/// The big-endian number in a key's last 8 bytes.
fn trailing_u64(key: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = key.get(key.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}

/// Prefix of every durable message waiting for `receiver`.
pub fn outbox_for_receiver(receiver: &str) -> Vec<u8> {
    let mut key = join(OUTBOX, &[receiver.as_bytes()]);
    key.push(b'/');
    key
}

pub fn dedup(receiver: &str, sender: &str) -> Vec<u8> {
    join(DEDUP, &[receiver.as_bytes(), sender.as_bytes()])
}

/// Prefix of every de-dup mark of `receiver`.
pub fn dedup_for_receiver(receiver: &str) -> Vec<u8> {
    let mut key = join(DEDUP, &[receiver.as_bytes()]);
    key.push(b'/');
    key
}

pub fn seq(sender: &str) -> Vec<u8> {
    join(SEQ, &[sender.as_bytes()])
}

pub fn pair_seq(sender: &str, receiver: &str) -> Vec<u8> {
    join(PAIR_SEQ, &[sender.as_bytes(), receiver.as_bytes()])
}

/// Prefix of every pair counter of `sender`.
pub fn pair_seqs_of(sender: &str) -> Vec<u8> {
    let mut key = join(PAIR_SEQ, &[sender.as_bytes()]);
    key.push(b'/');
    key
}

pub fn pending(requester: &str, id: u64) -> Vec<u8> {
    let mut key = pending_for(requester);
    key.extend_from_slice(&id.to_be_bytes());
    key
}

pub fn pending_for(requester: &str) -> Vec<u8> {
    let mut key = join(PENDING, &[requester.as_bytes()]);
    key.push(b'/');
    key
}

/// The sender named in an `ob/<receiver>/<sender>/<seq>` key.
pub fn outbox_sender(key: &[u8]) -> Option<&[u8]> {
    let rest = key.strip_prefix(OUTBOX)?;
    let rest = rest.get(..rest.len().checked_sub(9)?)?;
    let slash = rest.iter().position(|&b| b == b'/')?;
    Some(&rest[slash + 1..])
}

/// The receiver named in an `ob/<receiver>/<sender>/<seq>` key.
pub fn outbox_receiver(key: &[u8]) -> Option<String> {
    let rest = key.strip_prefix(OUTBOX)?;
    let slash = rest.iter().position(|&b| b == b'/')?;
    String::from_utf8(rest[..slash].to_vec()).ok()
}

/// Where the outcome of `name`'s request keyed `key` is kept.
pub fn idem(name: &str, key: &str) -> Vec<u8> {
    let mut out = idem_for(name);
    out.extend_from_slice(key.as_bytes());
    out
}

/// Prefix of every idempotency record of `name`.
pub fn idem_for(name: &str) -> Vec<u8> {
    let mut key = join(IDEM, &[name.as_bytes()]);
    key.push(b'/');
    key
}

/// The record of `key` in `name`'s expiry order.
pub fn idem_expiry(name: &str, expires_ms: u64, key: &str) -> Vec<u8> {
    let mut out = idem_expiry_for(name);
    out.extend_from_slice(&expires_ms.to_be_bytes());
    out.extend_from_slice(key.as_bytes());
    out
}

/// Prefix of `name`'s expiry order.
pub fn idem_expiry_for(name: &str) -> Vec<u8> {
    let mut key = join(IDEM_EXPIRY, &[name.as_bytes()]);
    key.push(b'/');
    key
}

/// The expiry and the key an `ix/<name>/…` key holds.
pub fn idem_expiry_parts<'a>(name: &str, key: &'a [u8]) -> Option<(u64, &'a str)> {
    let rest = key.strip_prefix(idem_expiry_for(name).as_slice())?;
    let expires: [u8; 8] = rest.get(..8)?.try_into().ok()?;
    let k = std::str::from_utf8(rest.get(8..)?).ok()?;
    Some((u64::from_be_bytes(expires), k))
}

/// The id at the end of a `pend/` key.
pub fn pending_id(key: &[u8]) -> Option<u64> {
    trailing_u64(key)
}

/// The sender name a durable message keeps after its sender was removed: `NAME~N`, N the
/// removed incarnation. `~` is in no component name, so it clashes with no component, and
/// a new component under the name numbers its pairs apart from it.
pub fn former_sender(name: &str, incarnation: u64) -> String {
    format!("{name}~{incarnation}")
}

pub fn encode_u64(v: u64) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}

pub fn decode_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// A pair's number and the incarnation of the other end it belongs to: the value of a
/// `ps/` counter or a `dd/` mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mark {
    /// The incarnation of the other end (0: not known, as written by earlier builds).
    pub incarnation: u64,
    pub seq: u64,
}

pub fn encode_mark(mark: Mark) -> Vec<u8> {
    let mut out = mark.incarnation.to_be_bytes().to_vec();
    out.extend_from_slice(&mark.seq.to_be_bytes());
    out
}

/// A stored mark; the 8-byte values earlier builds wrote read as incarnation 0.
pub fn decode_mark(bytes: &[u8]) -> Option<Mark> {
    match bytes.len() {
        8 => Some(Mark {
            incarnation: 0,
            seq: decode_u64(bytes)?,
        }),
        16 => Some(Mark {
            incarnation: decode_u64(&bytes[..8])?,
            seq: decode_u64(&bytes[8..])?,
        }),
        _ => None,
    }
}

/// True for a name a live component can have: not a removed sender's former name.
pub fn is_live_name(name: &str) -> bool {
    !name.contains('~')
}

/// The sender segment of an external client's messages (`Address::External`).
const EXTERNAL: &[u8] = b"@external";

/// Whether a commit fenced on `component` may write (`put`) or delete (`!put`) the sys
/// record `key`: only records of its own side of the messaging state. A commit comes from
/// the component's owner node, as a peer of the cluster, so this is checked where it is
/// applied, on every node alike; a record of another component (its marks, its counters,
/// messages another component sent) is never touched by it.
///
/// - `ob/R/S/n`: put by the sender (`S`), or by `R` for an external client's message to it;
///   deleted by the receiver (`R`) that consumed it.
/// - `dd/R/S`, `pend/R/…`: the receiver's / requester's.
/// - `seq/S`, `init/N`: the component's own.
/// - `ps/S/R`: the sender's, or `R`'s for the external client's pair to it.
pub fn commit_may_write(component: &str, key: &[u8], put: bool) -> bool {
    let me = component.as_bytes();
    if let Some(rest) = key.strip_prefix(OUTBOX) {
        // `R/S/` then 8 bytes of sequence number (which may hold any byte, '/' too).
        let Some(pair) = rest.len().checked_sub(8).map(|end| &rest[..end]) else {
            return false;
        };
        let Some(pair) = pair.strip_suffix(b"/") else {
            return false;
        };
        let Some((receiver, sender)) = split_once(pair) else {
            return false;
        };
        return if put {
            sender == me || (receiver == me && sender == EXTERNAL)
        } else {
            receiver == me
        };
    }
    if let Some(rest) = key.strip_prefix(DEDUP) {
        return split_once(rest).is_some_and(|(receiver, sender)| {
            receiver == me && !sender.is_empty() && !sender.contains(&b'/')
        });
    }
    if let Some(rest) = key.strip_prefix(PENDING) {
        return rest.len() == me.len() + 1 + 8 && rest.starts_with(me) && rest[me.len()] == b'/';
    }
    if let Some(rest) = key.strip_prefix(PAIR_SEQ) {
        return split_once(rest).is_some_and(|(sender, receiver)| {
            !receiver.contains(&b'/')
                && !receiver.is_empty()
                && (sender == me || (sender == EXTERNAL && receiver == me))
        });
    }
    if let Some(rest) = key.strip_prefix(SEQ) {
        return rest == me;
    }
    if let Some(rest) = key.strip_prefix(INIT) {
        return rest == me;
    }
    if let Some(rest) = key.strip_prefix(IDEM) {
        return own_key(rest, me, 0);
    }
    if let Some(rest) = key.strip_prefix(IDEM_EXPIRY) {
        return own_key(rest, me, 8);
    }
    false
}

/// `me/` then `skip` bytes of any value, then a non-empty key without `/`.
fn own_key(rest: &[u8], me: &[u8], skip: usize) -> bool {
    let Some(tail) = rest
        .strip_prefix(me)
        .and_then(|r| r.strip_prefix(b"/".as_slice()))
    else {
        return false;
    };
    tail.get(skip..)
        .is_some_and(|k| !k.is_empty() && !k.contains(&b'/'))
}

/// `a/b` split at its first `/` (neither side empty).
fn split_once(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let slash = bytes.iter().position(|&b| b == b'/')?;
    let (a, b) = (&bytes[..slash], &bytes[slash + 1..]);
    (!a.is_empty() && !b.is_empty()).then_some((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outbox_key_splits_into_its_pair_and_number() {
        let key = outbox("b", "a~5", 42);
        assert!(key.starts_with(&outbox_pair("b", "a~5")));
        assert!(!key.starts_with(&outbox_pair("b", "a")));
        assert_eq!(outbox_seq(&key), Some(42));
        assert_eq!(outbox_receiver(&key).as_deref(), Some("b"));
        assert_eq!(outbox_sender(&key), Some(b"a~5".as_slice()));
    }

    #[test]
    fn marks_roundtrip_and_read_the_old_layout() {
        let m = Mark {
            incarnation: 41,
            seq: 7,
        };
        assert_eq!(decode_mark(&encode_mark(m)), Some(m));
        assert_eq!(
            decode_mark(&encode_u64(9)),
            Some(Mark {
                incarnation: 0,
                seq: 9
            })
        );
        assert_eq!(decode_mark(b"bad"), None);
        assert!(is_live_name("counter"));
        assert!(!is_live_name(&former_sender("counter", 3)));
    }

    #[test]
    fn outbox_keys_sort_by_receiver_sender_then_seq() {
        let a = outbox("b", "a", 2);
        let b = outbox("b", "a", 10);
        let c = outbox("b", "c", 1);
        assert!(a < b && b < c);
        assert!(a.starts_with(&outbox_for_receiver("b")));
        assert!(!outbox("bb", "a", 1).starts_with(&outbox_for_receiver("b")));
    }

    #[test]
    fn the_sender_of_an_outbox_key() {
        assert_eq!(
            outbox_sender(&outbox("b", "a-1", 7)),
            Some(b"a-1".as_slice())
        );
        // A seq whose bytes contain '/' does not confuse it.
        assert_eq!(
            outbox_sender(&outbox("b", "a", 0x2f2f)),
            Some(b"a".as_slice())
        );
        assert_eq!(outbox_sender(b"ob/x"), None);
        assert_eq!(
            outbox_receiver(&outbox("b-2", "a", 7)).as_deref(),
            Some("b-2")
        );
        assert_eq!(outbox_sender(b"dd/b/a/12345678"), None);
    }

    #[test]
    fn idempotency_keys_sort_by_expiry_and_split_back() {
        let a = idem_expiry("c", 5, "zz");
        let b = idem_expiry("c", 0x2f00, "aa");
        assert!(a < b && a.starts_with(&idem_expiry_for("c")));
        assert_eq!(idem_expiry_parts("c", &b), Some((0x2f00, "aa")));
        assert_eq!(idem_expiry_parts("cc", &b), None);
        assert!(idem("c", "k").starts_with(&idem_for("c")));
        assert!(!idem("cc", "k").starts_with(&idem_for("c")));
    }

    #[test]
    fn pending_id_roundtrip() {
        assert_eq!(pending_id(&pending("ping", 42)), Some(42));
        assert_eq!(pending_id(b"x"), None);
        assert_eq!(decode_u64(&encode_u64(9)), Some(9));
        assert_eq!(decode_u64(b"123"), None);
    }

    #[test]
    fn a_commit_may_write_only_its_own_side_of_the_messaging_state() {
        let may = |key: &[u8], put| commit_may_write("a", key, put);
        // Sending: a message into b's outbox, its pair counter.
        assert!(may(&outbox("b", "a", 7), true));
        assert!(may(&pair_seq("a", "b"), true));
        // Consuming: a message from b, the mark, a pending request's record.
        assert!(may(&outbox("a", "b", 0x2f2f), false));
        assert!(may(&dedup("a", "b~3"), true));
        assert!(may(&dedup("a", "b~3"), false));
        assert!(may(&pending("a", 9), true));
        assert!(may(&seq("a"), true));
        assert!(may(&init_ran("a"), true));
        assert!(may(&idem("a", "k-1"), true));
        assert!(may(&idem_expiry("a", 0x2f2f, "k-1"), false));
        // An external client's message to it, and that pair's counter.
        assert!(may(&outbox("a", "@external", 3), true));
        assert!(may(&pair_seq("@external", "a"), true));

        // Never another component's records.
        assert!(!may(&outbox("b", "c", 7), true), "a message forged from c");
        assert!(
            !may(&outbox("b", "a", 7), false),
            "taking back a message b has not consumed"
        );
        assert!(!may(&outbox("a", "b", 7), true), "a message forged from b");
        assert!(!may(&outbox("b", "@external", 7), true));
        assert!(!may(&dedup("b", "a"), true));
        assert!(!may(&pair_seq("b", "a"), true));
        assert!(!may(&pair_seq("@external", "b"), true));
        assert!(!may(&pending("ab", 9), true));
        assert!(!may(&pending("b", 9), false));
        assert!(!may(&seq("b"), true));
        assert!(!may(&seq("ab"), true));
        assert!(!may(&init_ran("b"), false));
        assert!(!may(&idem("b", "k"), true));
        assert!(!may(&idem("ab", "k"), true));
        assert!(!may(&idem_expiry("b", 1, "k"), false));
        assert!(!may(b"ik/a/", true), "no key");
        assert!(!may(b"ik/a/x/y", true), "a key with a slash");
        assert!(!may(b"ix/a/1234567", true), "a torn expiry");
        // Nor anything outside the layout, nor a torn key.
        for key in [
            &b"raft/sm/c/a"[..],
            b"zz/a",
            b"ob/a",
            b"ob/a/b/",
            b"dd/a",
            b"dd/a/",
            b"",
        ] {
            assert!(!may(key, true), "{key:?}");
        }
    }
}
