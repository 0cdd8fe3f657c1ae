//! The backup file format, over any `Write`/`Read` (no RocksDB, no Raft here):
//!
//! ```text
//! magic    b"AIRSSYS\0BACKUP\x01"                     16 bytes
//! header   u32 LE length, bincode BackupHeader        (format, Raft index and term, …)
//! records  tag u8, then
//!            1 sys       u32 LE key length, key, u32 LE value length, value
//!            2 component u16 LE name length, name
//!            3 pair      u32 LE key length, key, u32 LE value length, value
//! trailer  tag 0xFF, u64 LE record count, 32 bytes: SHA-256 of every byte before them
//! ```
//!
//! The reader checks each length against a cap before it allocates, and the checksum and the
//! end of the file before it reports the end: a truncated, garbled or extended file is an
//! error that says what is wrong and where.

use ring::digest::{Context, SHA256};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};

/// The first bytes of every backup file.
pub const MAGIC: &[u8; 16] = b"AIRSSYS\0BACKUP\x01\n";
/// The header format this build writes and reads.
pub const FORMAT: u32 = 1;
/// Largest key a record may carry.
pub const MAX_KEY_BYTES: usize = 1 << 20;
/// Largest value a record may carry (a component binary is at most 64 MiB).
pub const MAX_VALUE_BYTES: usize = 128 << 20;
const MAX_HEADER_BYTES: usize = 64 << 10;

const TAG_SYS: u8 = 1;
const TAG_COMPONENT: u8 = 2;
const TAG_PAIR: u8 = 3;
const TAG_END: u8 = 0xFF;

/// What a backup says about itself, before its records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    pub format: u32,
    /// The Raft log position the backup's state stands at (0: nothing applied yet).
    pub index: u64,
    pub term: u64,
    /// The node that wrote it.
    pub node_id: u64,
    pub taken_at_ms: u64,
}

/// Why a backup file cannot be read (or written).
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("not an airssys backup (its first bytes are not the backup magic)")]
    NotABackup,
    #[error("backup format {0} is not one this airssys reads (it reads format {FORMAT})")]
    UnsupportedFormat(u32),
    #[error("the backup is truncated: it ends at byte {at} in the middle of {what}")]
    Truncated { at: u64, what: &'static str },
    #[error("the backup is corrupt at byte {at}: {why}")]
    Corrupt { at: u64, why: String },
    #[error(
        "the backup's checksum does not match its content (SHA-256 {found}, the file says \
         {expected}): the file was changed or damaged"
    )]
    ChecksumMismatch { expected: String, found: String },
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One record, owned (as the reader returns it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Sys(Vec<u8>, Vec<u8>),
    Component(String),
    Pair(Vec<u8>, Vec<u8>),
}

/// Writes a backup, hashing as it goes.
pub struct BackupWriter<W: Write> {
    out: W,
    hash: Context,
    bytes: u64,
    records: u64,
}

impl<W: Write> BackupWriter<W> {
    /// Writes the magic and the header.
    pub fn new(out: W, header: &BackupHeader) -> Result<Self, FormatError> {
        let mut w = BackupWriter {
            out,
            hash: Context::new(&SHA256),
            bytes: 0,
            records: 0,
        };
        let encoded = crate::raft::codec::encode(header).map_err(|why| FormatError::Corrupt {
            at: 0,
            why: format!("cannot encode the header: {why}"),
        })?;
        w.put(MAGIC)?;
        w.put(&(encoded.len() as u32).to_le_bytes())?;
        w.put(&encoded)?;
        Ok(w)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), FormatError> {
        self.out.write_all(bytes)?;
        self.hash.update(bytes);
        self.bytes += bytes.len() as u64;
        Ok(())
    }

    fn put_pair(&mut self, tag: u8, key: &[u8], value: &[u8]) -> Result<(), FormatError> {
        if key.len() > MAX_KEY_BYTES || value.len() > MAX_VALUE_BYTES {
            return Err(FormatError::Corrupt {
                at: self.bytes,
                why: format!(
                    "a record of {} + {} bytes is over the format's caps",
                    key.len(),
                    value.len()
                ),
            });
        }
        self.put(&[tag])?;
        self.put(&(key.len() as u32).to_le_bytes())?;
        self.put(key)?;
        self.put(&(value.len() as u32).to_le_bytes())?;
        self.put(value)?;
        self.records += 1;
        Ok(())
    }

    pub fn sys(&mut self, key: &[u8], value: &[u8]) -> Result<(), FormatError> {
        self.put_pair(TAG_SYS, key, value)
    }

    pub fn pair(&mut self, key: &[u8], value: &[u8]) -> Result<(), FormatError> {
        self.put_pair(TAG_PAIR, key, value)
    }

    pub fn component(&mut self, name: &str) -> Result<(), FormatError> {
        let len = u16::try_from(name.len()).map_err(|_| FormatError::Corrupt {
            at: self.bytes,
            why: "a component name over 65535 bytes".into(),
        })?;
        self.put(&[TAG_COMPONENT])?;
        self.put(&len.to_le_bytes())?;
        self.put(name.as_bytes())?;
        self.records += 1;
        Ok(())
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Writes the trailer; answers the writer, the file's size and its SHA-256 (hex).
    pub fn finish(mut self) -> Result<(W, u64, String), FormatError> {
        let records = self.records;
        self.put(&[TAG_END])?;
        self.put(&records.to_le_bytes())?;
        let digest = self.hash.clone().finish();
        self.out.write_all(digest.as_ref())?;
        self.out.flush()?;
        Ok((self.out, self.bytes + 32, hex(digest.as_ref())))
    }
}

/// Reads a backup, checking it as it goes.
pub struct BackupReader<R: Read> {
    input: R,
    hash: Context,
    at: u64,
    records: u64,
    header: BackupHeader,
    ended: bool,
}

impl<R: Read> BackupReader<R> {
    /// Reads and checks the magic and the header.
    pub fn open(input: R) -> Result<Self, FormatError> {
        let mut r = BackupReader {
            input,
            hash: Context::new(&SHA256),
            at: 0,
            records: 0,
            header: BackupHeader {
                format: 0,
                index: 0,
                term: 0,
                node_id: 0,
                taken_at_ms: 0,
            },
            ended: false,
        };
        let mut magic = [0u8; 16];
        match r.take(&mut magic, "the magic") {
            Ok(()) if &magic == MAGIC => {}
            Ok(()) | Err(FormatError::Truncated { .. }) => return Err(FormatError::NotABackup),
            Err(e) => return Err(e),
        }
        let len = r.u32("the header")? as usize;
        if len > MAX_HEADER_BYTES {
            return Err(r.corrupt(format!("a header of {len} bytes")));
        }
        let bytes = r.vec(len, "the header")?;
        let header: BackupHeader = crate::raft::codec::decode(&bytes)
            .map_err(|why| r.corrupt(format!("unreadable header: {why}")))?;
        if header.format != FORMAT {
            return Err(FormatError::UnsupportedFormat(header.format));
        }
        r.header = header;
        Ok(r)
    }

    pub fn header(&self) -> &BackupHeader {
        &self.header
    }

    /// Bytes read so far.
    pub fn bytes(&self) -> u64 {
        self.at
    }

    fn corrupt(&self, why: String) -> FormatError {
        FormatError::Corrupt { at: self.at, why }
    }

    fn take(&mut self, buf: &mut [u8], what: &'static str) -> Result<(), FormatError> {
        match self.input.read_exact(buf) {
            Ok(()) => {
                self.hash.update(&*buf);
                self.at += buf.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                Err(FormatError::Truncated { at: self.at, what })
            }
            Err(e) => Err(e.into()),
        }
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, FormatError> {
        let mut b = [0u8; 4];
        self.take(&mut b, what)?;
        Ok(u32::from_le_bytes(b))
    }

    fn vec(&mut self, len: usize, what: &'static str) -> Result<Vec<u8>, FormatError> {
        let mut v = vec![0u8; len];
        self.take(&mut v, what)?;
        Ok(v)
    }

    fn pair(&mut self) -> Result<(Vec<u8>, Vec<u8>), FormatError> {
        let klen = self.u32("a record's key length")? as usize;
        if klen > MAX_KEY_BYTES {
            return Err(self.corrupt(format!("a key of {klen} bytes")));
        }
        let key = self.vec(klen, "a record's key")?;
        let vlen = self.u32("a record's value length")? as usize;
        if vlen > MAX_VALUE_BYTES {
            return Err(self.corrupt(format!("a value of {vlen} bytes")));
        }
        let value = self.vec(vlen, "a record's value")?;
        Ok((key, value))
    }

    /// The next record; `None` once the trailer was read and the checksum and the file's
    /// end verified.
    pub fn next_item(&mut self) -> Result<Option<Item>, FormatError> {
        if self.ended {
            return Ok(None);
        }
        let mut tag = [0u8; 1];
        self.take(&mut tag, "a record's tag")?;
        let item = match tag[0] {
            TAG_SYS => {
                let (k, v) = self.pair()?;
                Item::Sys(k, v)
            }
            TAG_PAIR => {
                let (k, v) = self.pair()?;
                Item::Pair(k, v)
            }
            TAG_COMPONENT => {
                let mut len = [0u8; 2];
                self.take(&mut len, "a component's name length")?;
                let name = self.vec(u16::from_le_bytes(len) as usize, "a component's name")?;
                let name = String::from_utf8(name)
                    .map_err(|_| self.corrupt("a component name that is not UTF-8".into()))?;
                Item::Component(name)
            }
            TAG_END => {
                self.end()?;
                return Ok(None);
            }
            other => return Err(self.corrupt(format!("unknown record tag {other:#04x}"))),
        };
        self.records += 1;
        Ok(Some(item))
    }

    fn end(&mut self) -> Result<(), FormatError> {
        let mut count = [0u8; 8];
        self.take(&mut count, "the trailer")?;
        let found = hex(self.hash.clone().finish().as_ref());
        let mut digest = [0u8; 32];
        match self.input.read_exact(&mut digest) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(FormatError::Truncated {
                    at: self.at,
                    what: "the checksum",
                })
            }
            Err(e) => return Err(e.into()),
        }
        let expected = hex(&digest);
        if expected != found {
            return Err(FormatError::ChecksumMismatch { expected, found });
        }
        let count = u64::from_le_bytes(count);
        if count != self.records {
            return Err(self.corrupt(format!(
                "the trailer counts {count} records, the file holds {}",
                self.records
            )));
        }
        let mut extra = [0u8; 1];
        if self.input.read(&mut extra)? != 0 {
            return Err(FormatError::Corrupt {
                at: self.at + 32,
                why: "bytes after the checksum".into(),
            });
        }
        self.ended = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> BackupHeader {
        BackupHeader {
            format: FORMAT,
            index: 42,
            term: 3,
            node_id: 2,
            taken_at_ms: 1_700_000_000_000,
        }
    }

    fn sample() -> Vec<u8> {
        let mut w = BackupWriter::new(Vec::new(), &header()).unwrap();
        w.sys(b"raft/sm/c/a", b"entry").unwrap();
        w.component("a").unwrap();
        w.pair(b"count", b"7").unwrap();
        w.pair(b"empty", b"").unwrap();
        let (bytes, size, digest) = w.finish().unwrap();
        assert_eq!(size, bytes.len() as u64);
        assert_eq!(digest.len(), 64);
        bytes
    }

    fn read_all(bytes: &[u8]) -> Result<(BackupHeader, Vec<Item>), FormatError> {
        let mut r = BackupReader::open(bytes)?;
        let mut items = Vec::new();
        while let Some(item) = r.next_item()? {
            items.push(item);
        }
        Ok((r.header().clone(), items))
    }

    #[test]
    fn what_is_written_reads_back() {
        let (h, items) = read_all(&sample()).unwrap();
        assert_eq!(h, header());
        assert_eq!(
            items,
            vec![
                Item::Sys(b"raft/sm/c/a".to_vec(), b"entry".to_vec()),
                Item::Component("a".into()),
                Item::Pair(b"count".to_vec(), b"7".to_vec()),
                Item::Pair(b"empty".to_vec(), Vec::new()),
            ]
        );
    }

    #[test]
    fn every_truncation_is_refused() {
        let bytes = sample();
        for cut in 0..bytes.len() {
            let err = read_all(&bytes[..cut]).unwrap_err();
            assert!(
                matches!(err, FormatError::Truncated { .. } | FormatError::NotABackup),
                "cut at {cut}: {err}"
            );
        }
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let bytes = sample();
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x20;
            assert!(read_all(&bad).is_err(), "a flip at byte {at} went unseen");
        }
    }

    #[test]
    fn a_value_is_flipped_then_the_checksum_names_it() {
        let mut bytes = sample();
        let at = bytes.windows(5).position(|w| w == b"entry").unwrap();
        bytes[at] = b'E';
        assert!(matches!(
            read_all(&bytes).unwrap_err(),
            FormatError::ChecksumMismatch { .. }
        ));
    }

    #[test]
    fn extra_bytes_garbage_and_other_formats_are_refused() {
        let mut longer = sample();
        longer.push(0);
        assert!(matches!(
            read_all(&longer).unwrap_err(),
            FormatError::Corrupt { .. }
        ));
        assert!(matches!(
            read_all(b"hello, this is not a backup at all").unwrap_err(),
            FormatError::NotABackup
        ));
        let future = BackupHeader {
            format: FORMAT + 1,
            ..header()
        };
        let (bytes, _, _) = BackupWriter::new(Vec::new(), &future)
            .unwrap()
            .finish()
            .unwrap();
        assert!(matches!(
            read_all(&bytes).unwrap_err(),
            FormatError::UnsupportedFormat(2)
        ));
    }

    #[test]
    fn a_huge_announced_length_is_refused_before_it_is_allocated() {
        let mut bytes = BackupWriter::new(Vec::new(), &header())
            .unwrap()
            .out
            .clone();
        bytes.push(TAG_PAIR);
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            read_all(&bytes).unwrap_err(),
            FormatError::Corrupt { .. }
        ));
    }
}
