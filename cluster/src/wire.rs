//! The frame codec of the node-to-node transport, sans IO.
//!
//! A frame is `u32` big-endian length of the rest, one version byte ([`WIRE_VERSION`]) and a
//! bincode-2 body (`bincode::serde`, `config::standard()` with a byte limit). The length counts
//! the version byte and the body and never exceeds [`MAX_FRAME_BYTES`]. [`encode_frame`] builds
//! one frame; [`FrameDecoder`] takes a byte stream in arbitrary pieces and yields messages.
//! Every malformed input is a [`WireError`] (the caller closes that stream), never a panic:
//! an announced length over the cap is refused from the 4-byte header alone, before any
//! allocation, and a wrong version from the 5th byte. After its first error a decoder is
//! poisoned: it drops further input and repeats the error, because the stream is to be closed.
//! A peer is admitted by its certificate (mutual TLS, signed by the cluster's CA), never by
//! what a frame claims.

use bincode::config::{self, Config};
use bincode::enc::write::Writer;
use bincode::error::EncodeError;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The version byte of every frame this build writes and the only one it reads.
pub const WIRE_VERSION: u8 = 1;

/// Bytes of the length prefix.
pub const HEADER_BYTES: usize = 4;

/// The largest value the length prefix may announce (version byte + body): a Raft entry that
/// carries the largest component binary (64 MiB) with room for its envelope. Every frame comes
/// from a peer that passed mutual TLS; the cap guards against garbled or hostile length
/// prefixes. Raft batches that would exceed it are split (the network answers
/// `PayloadTooLarge` and openraft retries with fewer entries).
pub const MAX_FRAME_BYTES: usize = 72 * 1024 * 1024;

/// The largest body (the bincode part); also bincode's decode limit.
pub const MAX_BODY_BYTES: usize = MAX_FRAME_BYTES - 1;

fn bincode_config() -> impl Config {
    config::standard().with_limit::<MAX_BODY_BYTES>()
}

/// Why a frame could not be written or read. Any of them on a received stream means: close
/// that stream (the peer and the connection may live on).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The frame (version byte + body) is larger than the cap.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    /// The peer speaks another wire version.
    #[error("wire version {got}, expected {expected}")]
    Version { got: u8, expected: u8 },
    /// The frame's bytes are not a valid message.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The input ended inside a frame.
    #[error("input ended inside a frame")]
    Truncated,
    /// The message could not be serialized (a local bug, not the peer's fault).
    #[error("cannot encode message: {0}")]
    Encode(String),
}

/// A bincode writer that stores at most `MAX_FRAME_BYTES` of frame but counts everything, so an
/// oversized message is refused with its true size without buffering all of it.
struct CappedWriter {
    out: Vec<u8>,
    /// Frame bytes after the length prefix that the message needs (stored or not).
    len: usize,
}

impl Writer for CappedWriter {
    fn write(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        self.len = self.len.saturating_add(bytes.len());
        if self.len <= MAX_FRAME_BYTES {
            self.out.extend_from_slice(bytes);
        }
        Ok(())
    }
}

/// One complete frame for `msg`: length prefix, version byte, body.
pub fn encode_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&[0; HEADER_BYTES]);
    out.push(WIRE_VERSION);
    let mut writer = CappedWriter { out, len: 1 };
    bincode::serde::encode_into_writer(msg, &mut writer, bincode_config())
        .map_err(|e| WireError::Encode(e.to_string()))?;
    let CappedWriter { mut out, len } = writer;
    if len > MAX_FRAME_BYTES {
        return Err(WireError::TooLarge {
            len,
            max: MAX_FRAME_BYTES,
        });
    }
    let prefix = u32::try_from(len).map_err(|_| WireError::TooLarge {
        len,
        max: MAX_FRAME_BYTES,
    })?;
    out[..HEADER_BYTES].copy_from_slice(&prefix.to_be_bytes());
    Ok(out)
}

/// Decode exactly one complete frame (no bytes before or after it).
pub fn decode_frame<T: DeserializeOwned>(frame: &[u8]) -> Result<T, WireError> {
    let mut decoder = FrameDecoder::new();
    decoder.push(frame);
    let msg = decoder.next_frame()?.ok_or(WireError::Truncated)?;
    if decoder.buffered() != 0 {
        return Err(WireError::Malformed(format!(
            "{} bytes after the frame",
            decoder.buffered()
        )));
    }
    Ok(msg)
}

/// The length a frame's header announces (version byte and body), checked against the cap:
/// what a reader may reserve before it reads the rest.
pub fn announced_len(header: [u8; HEADER_BYTES]) -> Result<usize, WireError> {
    check_header(&header)?.ok_or(WireError::Truncated)
}

/// Checks what the start of a frame says, as soon as the bytes are there: the length prefix
/// against the cap (4 bytes), then the version (5th byte). Returns the announced length once
/// the prefix is complete.
fn check_header(bytes: &[u8]) -> Result<Option<usize>, WireError> {
    let Some(prefix) = bytes.first_chunk::<HEADER_BYTES>() else {
        return Ok(None);
    };
    // A u32 always fits in usize on the targets we build for; saturate to stay total.
    let len = usize::try_from(u32::from_be_bytes(*prefix)).unwrap_or(usize::MAX);
    if len > MAX_FRAME_BYTES {
        return Err(WireError::TooLarge {
            len,
            max: MAX_FRAME_BYTES,
        });
    }
    if len == 0 {
        return Err(WireError::Malformed(
            "empty frame (no version byte)".to_owned(),
        ));
    }
    if let Some(&got) = bytes.get(HEADER_BYTES) {
        if got != WIRE_VERSION {
            return Err(WireError::Version {
                got,
                expected: WIRE_VERSION,
            });
        }
    }
    Ok(Some(len))
}

/// Incremental decoder for one stream. Feed bytes with [`push`](FrameDecoder::push) as they
/// arrive, then call [`next_frame`](FrameDecoder::next_frame) until it returns `Ok(None)`;
/// done that way the buffer never holds more than one partial frame plus the last push.
/// Nothing is allocated from an announced length: the buffer grows only with bytes received.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Bytes of `buf` already consumed (compacted away on the next push).
    start: usize,
    /// The first error; once set, input is dropped and the error repeats.
    failed: Option<WireError>,
}

impl FrameDecoder {
    pub fn new() -> FrameDecoder {
        FrameDecoder::default()
    }

    /// Append bytes received from the stream. Ignored once the decoder has failed.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_some() || bytes.is_empty() {
            return;
        }
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet returned as a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next complete message, `Ok(None)` if more bytes are needed. An error poisons the
    /// decoder (its buffer is released) and is returned again by every later call.
    pub fn next_frame<T: DeserializeOwned>(&mut self) -> Result<Option<T>, WireError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.decode_next() {
            Ok(msg) => Ok(msg),
            Err(e) => {
                self.failed = Some(e.clone());
                self.buf = Vec::new();
                self.start = 0;
                Err(e)
            }
        }
    }

    /// At the end of the stream: `Ok` on a frame boundary, `Truncated` inside a frame, or the
    /// error the decoder already failed with.
    pub fn finish(&self) -> Result<(), WireError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.buffered() == 0 {
            Ok(())
        } else {
            Err(WireError::Truncated)
        }
    }

    fn decode_next<T: DeserializeOwned>(&mut self) -> Result<Option<T>, WireError> {
        let pending = self.buf.get(self.start..).unwrap_or_default();
        let Some(len) = check_header(pending)? else {
            return Ok(None);
        };
        let Some(frame) = pending.get(HEADER_BYTES..HEADER_BYTES + len) else {
            return Ok(None);
        };
        // `check_header` saw the version byte; the body follows it.
        let body = frame.get(1..).unwrap_or_default();
        let (msg, used) = bincode::serde::decode_from_slice::<T, _>(body, bincode_config())
            .map_err(|e| WireError::Malformed(e.to_string()))?;
        if used != body.len() {
            return Err(WireError::Malformed(format!(
                "{} unused bytes at the end of the body",
                body.len() - used
            )));
        }
        self.start += HEADER_BYTES + len;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        Ok(Some(msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Msg {
        Ping(u64),
        Data { to: String, payload: Vec<u8> },
        Empty,
    }

    fn samples() -> Vec<Msg> {
        vec![
            Msg::Ping(7),
            Msg::Data {
                to: "counter".to_owned(),
                payload: (0..=255).collect(),
            },
            Msg::Empty,
            Msg::Ping(u64::MAX),
        ]
    }

    /// A tiny xorshift64 PRNG, enough to vary test inputs without a new crate.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn header(len: u32) -> [u8; 4] {
        len.to_be_bytes()
    }

    #[test]
    fn roundtrip() {
        for msg in samples() {
            let frame = encode_frame(&msg).unwrap();
            let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
            assert_eq!(len, frame.len() - 4);
            assert_eq!(frame[4], WIRE_VERSION);
            assert_eq!(decode_frame::<Msg>(&frame).unwrap(), msg);
        }
    }

    #[test]
    fn byte_by_byte_feeding() {
        let mut stream = Vec::new();
        for msg in samples() {
            stream.extend(encode_frame(&msg).unwrap());
        }
        let mut dec = FrameDecoder::new();
        let mut got = Vec::new();
        for b in &stream {
            dec.push(std::slice::from_ref(b));
            while let Some(m) = dec.next_frame::<Msg>().unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got, samples());
        assert_eq!(dec.buffered(), 0);
        dec.finish().unwrap();
    }

    #[test]
    fn many_frames_in_one_push_and_random_splits() {
        let mut stream = Vec::new();
        let mut want = Vec::new();
        for i in 0..100 {
            let m = samples()[i % 4].clone();
            stream.extend(encode_frame(&m).unwrap());
            want.push(m);
        }
        let mut dec = FrameDecoder::new();
        dec.push(&stream);
        let mut got = Vec::new();
        while let Some(m) = dec.next_frame::<Msg>().unwrap() {
            got.push(m);
        }
        assert_eq!(got, want);

        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut dec = FrameDecoder::new();
        let mut got = Vec::new();
        let mut rest = &stream[..];
        while !rest.is_empty() {
            let n = (rng.below(300) as usize + 1).min(rest.len());
            dec.push(&rest[..n]);
            rest = &rest[n..];
            while let Some(m) = dec.next_frame::<Msg>().unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got, want);
    }

    #[test]
    fn oversized_announced_length_is_refused_from_the_header_alone() {
        let mut dec = FrameDecoder::new();
        dec.push(&header(u32::MAX));
        // Only the 4 header bytes are held; nothing was sized from the announced length.
        assert!(dec.buf.capacity() < 64);
        assert_eq!(
            dec.next_frame::<Msg>(),
            Err(WireError::TooLarge {
                len: u32::MAX as usize,
                max: MAX_FRAME_BYTES
            })
        );
        // The buffer is released and the decoder stays failed.
        assert_eq!(dec.buf.capacity(), 0);
        dec.push(&[1, 2, 3]);
        assert_eq!(dec.buffered(), 0);
        assert!(matches!(
            dec.next_frame::<Msg>(),
            Err(WireError::TooLarge { .. })
        ));
        assert!(dec.finish().is_err());

        let mut dec = FrameDecoder::new();
        dec.push(&header(MAX_FRAME_BYTES as u32 + 1));
        assert!(matches!(
            dec.next_frame::<Msg>(),
            Err(WireError::TooLarge { .. })
        ));
        // Exactly at the cap is only "need more bytes".
        let mut dec = FrameDecoder::new();
        dec.push(&header(MAX_FRAME_BYTES as u32));
        dec.push(&[WIRE_VERSION]);
        assert_eq!(dec.next_frame::<Msg>(), Ok(None));
    }

    #[test]
    fn encode_refuses_over_the_cap_and_accepts_a_full_chunk() {
        let big = Msg::Data {
            to: "x".to_owned(),
            payload: vec![0; MAX_FRAME_BYTES],
        };
        match encode_frame(&big) {
            Err(WireError::TooLarge { len, max }) => {
                assert!(len > MAX_FRAME_BYTES);
                assert_eq!(max, MAX_FRAME_BYTES);
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        let chunk = Msg::Data {
            to: "install".to_owned(),
            payload: vec![0xAB; 8 * 1024 * 1024],
        };
        let frame = encode_frame(&chunk).unwrap();
        assert_eq!(decode_frame::<Msg>(&frame).unwrap(), chunk);
    }

    #[test]
    fn wrong_version_is_refused_at_the_fifth_byte() {
        let mut frame = encode_frame(&Msg::Ping(1)).unwrap();
        frame[4] = 2;
        let mut dec = FrameDecoder::new();
        dec.push(&frame[..5]);
        assert_eq!(
            dec.next_frame::<Msg>(),
            Err(WireError::Version {
                got: 2,
                expected: WIRE_VERSION
            })
        );
    }

    #[test]
    fn garbage_body_is_malformed() {
        // Enum discriminant 200 does not exist.
        let mut frame = header(3).to_vec();
        frame.extend([WIRE_VERSION, 200, 0]);
        assert!(matches!(
            decode_frame::<Msg>(&frame),
            Err(WireError::Malformed(_))
        ));
        // A valid message followed by junk inside the same frame.
        let mut frame = encode_frame(&Msg::Empty).unwrap();
        frame.push(0);
        let len = (frame.len() - 4) as u32;
        frame[..4].copy_from_slice(&header(len));
        assert!(matches!(
            decode_frame::<Msg>(&frame),
            Err(WireError::Malformed(_))
        ));
        // A length prefix of zero has no version byte.
        assert!(matches!(
            decode_frame::<Msg>(&header(0)),
            Err(WireError::Malformed(_))
        ));
        // A byte vector claiming more elements than the frame holds.
        let mut frame = header(12).to_vec();
        frame.extend([
            WIRE_VERSION,
            1,
            1,
            b'a',
            0xFC,
            0xFF,
            0xFF,
            0xFF,
            0x7F,
            0,
            0,
            0,
        ]);
        assert!(matches!(
            decode_frame::<Msg>(&frame),
            Err(WireError::Malformed(_))
        ));
    }

    #[test]
    fn truncated_input() {
        let frame = encode_frame(&Msg::Ping(9)).unwrap();
        assert_eq!(
            decode_frame::<Msg>(&frame[..frame.len() - 1]),
            Err(WireError::Truncated)
        );
        assert_eq!(decode_frame::<Msg>(&frame[..2]), Err(WireError::Truncated));
        let mut dec = FrameDecoder::new();
        dec.push(&frame[..3]);
        assert_eq!(dec.next_frame::<Msg>(), Ok(None));
        assert_eq!(dec.finish(), Err(WireError::Truncated));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
        let valid: Vec<Vec<u8>> = samples().iter().map(|m| encode_frame(m).unwrap()).collect();
        for round in 0..5_000 {
            // Pure noise, or a valid frame with a few bytes flipped, fed in random pieces.
            let mut bytes: Vec<u8> = if round % 2 == 0 {
                let n = rng.below(64) as usize;
                (0..n).map(|_| rng.next() as u8).collect()
            } else {
                let mut f = valid[rng.below(valid.len() as u64) as usize].clone();
                for _ in 0..=rng.below(3) {
                    let i = rng.below(f.len() as u64) as usize;
                    f[i] = rng.next() as u8;
                }
                f
            };
            if round % 3 == 0 {
                // Keep the announced length small and the version right, so bodies get decoded.
                let len = bytes.len().saturating_sub(4) as u32;
                if bytes.len() >= 5 {
                    bytes[..4].copy_from_slice(&header(len));
                    bytes[4] = WIRE_VERSION;
                }
            }
            let mut dec = FrameDecoder::new();
            let mut rest = &bytes[..];
            loop {
                let n = (rng.below(8) as usize + 1).min(rest.len());
                dec.push(&rest[..n]);
                rest = &rest[n..];
                let mut failed = false;
                loop {
                    match dec.next_frame::<Msg>() {
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(_) => {
                            failed = true;
                            break;
                        }
                    }
                }
                if failed || rest.is_empty() {
                    break;
                }
            }
            let _ = dec.finish();
            let _ = decode_frame::<crate::peer::PeerRequest>(&bytes);
            assert!(dec.buffered() <= bytes.len());
        }
    }
}
