//! Streaming a backend out as chunks, and building a new generation from
//! such a stream.
//!
//! # Chunk format (version 1)
//!
//! Every chunk is self-contained and checksummed, so a receiver can verify
//! each as it arrives and the transport may split the stream anywhere
//! between chunks:
//!
//! ```text
//! offset  size  field
//! 0       4     magic "RKVS"
//! 4       1     format version (1)
//! 5       1     flags: bit 0 = last chunk; other bits zero
//! 6       2     reserved, zero
//! 8       8     chunk index, u64 BE, from 0, consecutive
//! 16      4     payload length n, u32 BE
//! 20      n     payload: records
//! 20+n    4     CRC32C (Castagnoli) of bytes [0, 20+n), u32 BE
//! ```
//!
//! A record is `tag u8 | body length u32 BE | body`:
//!
//! | tag | record | body                                                  |
//! |-----|--------|-------------------------------------------------------|
//! | 1   | header | applied index u64, term u64, conf state (meta codec)  |
//! | 2   | entry  | keyspace id u8, key length u32, key, value (the rest) |
//! | 3   | end    | number of entry records in the stream, u64            |
//!
//! The header is the first record of chunk 0 and appears once; the end
//! record is the last record of the last chunk. Entries come keyspace by
//! keyspace ([`KeyspaceId::ALL`] order), keys strictly ascending within a
//! keyspace: the receiver checks that order, which also catches duplicated
//! or reordered data that a per-chunk checksum cannot.
//!
//! Memory: the sender holds one chunk (about [`CHUNK_BYTES_TARGET`], more
//! only when a single entry is bigger); the receiver holds one chunk and
//! writes it as one fjall batch.

use super::{dir, meta, Engine, KeyspaceId, ReadView};
use crate::error::{Error, Result};
use crate::keys::{decode_key, decode_value};
use fjall::PersistMode;
use raft::SnapshotMetadata;
use std::path::{Path, PathBuf};

/// A check of a put version's payload: `Err` says what is wrong with it.
pub type PutCheck = fn(&[u8]) -> std::result::Result<(), &'static str>;

/// Chunks close once their payload reaches this many bytes.
pub const CHUNK_BYTES_TARGET: usize = 1024 * 1024;

/// The version byte of every chunk this build writes and the only one it
/// reads.
pub const CHUNK_FORMAT_VERSION: u8 = 1;

const MAGIC: &[u8; 4] = b"RKVS";
const CHUNK_HEADER_BYTES: usize = 20;
const CHUNK_TRAILER_BYTES: usize = 4;
const FLAG_LAST: u8 = 0x01;

const RECORD_HEADER: u8 = 1;
const RECORD_ENTRY: u8 = 2;
const RECORD_END: u8 = 3;

/// A snapshot of a backend as a stream of chunks, read from one consistent
/// fjall snapshot while the backend keeps accepting writes.
///
/// Yields `Ok(chunk)` until the last chunk, or one `Err` and then nothing.
pub struct SnapshotStream {
    view: ReadView,
    metadata: SnapshotMetadata,
    /// Keyspaces not started yet, in reverse (popped from the back).
    keyspaces_pending: Vec<KeyspaceId>,
    current: Option<(KeyspaceId, fjall::Iter)>,
    chunk_index: u64,
    entry_count: u64,
    chunk_bytes_target: usize,
    done: bool,
}

impl SnapshotStream {
    pub(super) fn new(view: ReadView, chunk_bytes_target: usize) -> Result<Self> {
        let metadata = view.snapshot_metadata()?;
        let mut keyspaces_pending = KeyspaceId::ALL.to_vec();
        keyspaces_pending.reverse();
        Ok(SnapshotStream {
            view,
            metadata,
            keyspaces_pending,
            current: None,
            chunk_index: 0,
            entry_count: 0,
            chunk_bytes_target,
            done: false,
        })
    }

    /// The log position and membership this snapshot reflects.
    pub fn metadata(&self) -> &SnapshotMetadata {
        &self.metadata
    }

    fn next_entry(&mut self) -> Result<Option<(KeyspaceId, fjall::Slice, fjall::Slice)>> {
        loop {
            if let Some((keyspace, iter)) = &mut self.current {
                if let Some(guard) = iter.next() {
                    let (key, value) = guard.into_inner()?;
                    return Ok(Some((*keyspace, key, value)));
                }
                self.current = None;
            }
            match self.keyspaces_pending.pop() {
                Some(keyspace) => self.current = Some((keyspace, self.view.raw_iter(keyspace))),
                None => return Ok(None),
            }
        }
    }

    fn build_chunk(&mut self) -> Result<Vec<u8>> {
        let mut payload = Vec::with_capacity(self.chunk_bytes_target + 4096);
        if self.chunk_index == 0 {
            let mut body = Vec::with_capacity(16);
            body.extend_from_slice(&self.metadata.index.to_be_bytes());
            body.extend_from_slice(&self.metadata.term.to_be_bytes());
            body.extend_from_slice(&meta::encode_conf_state(&self.metadata.conf_state));
            push_record(&mut payload, RECORD_HEADER, &[&body])?;
        }
        while payload.len() < self.chunk_bytes_target {
            match self.next_entry()? {
                Some((keyspace, key, value)) => {
                    let key_len = u32::try_from(key.len()).map_err(|_| Error::KeyTooLarge {
                        encoded_bytes: key.len(),
                        max_bytes: u32::MAX as usize,
                    })?;
                    push_record(
                        &mut payload,
                        RECORD_ENTRY,
                        &[&[keyspace.to_byte()], &key_len.to_be_bytes(), &key, &value],
                    )?;
                    self.entry_count += 1;
                }
                None => {
                    push_record(&mut payload, RECORD_END, &[&self.entry_count.to_be_bytes()])?;
                    self.done = true;
                    break;
                }
            }
        }
        let chunk = frame_chunk(self.chunk_index, self.done, &payload)?;
        self.chunk_index += 1;
        Ok(chunk)
    }
}

impl Iterator for SnapshotStream {
    type Item = Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let chunk = self.build_chunk();
        if chunk.is_err() {
            self.done = true;
        }
        Some(chunk)
    }
}

fn push_record(out: &mut Vec<u8>, tag: u8, parts: &[&[u8]]) -> Result<()> {
    let body_len: usize = parts.iter().map(|part| part.len()).sum();
    let body_len = u32::try_from(body_len).map_err(|_| Error::SnapshotMalformed {
        chunk_index: 0,
        detail: format!("record of {body_len} bytes does not fit a u32 length"),
    })?;
    out.push(tag);
    out.extend_from_slice(&body_len.to_be_bytes());
    for part in parts {
        out.extend_from_slice(part);
    }
    Ok(())
}

fn frame_chunk(chunk_index: u64, last: bool, payload: &[u8]) -> Result<Vec<u8>> {
    let payload_len = u32::try_from(payload.len()).map_err(|_| Error::SnapshotMalformed {
        chunk_index,
        detail: format!(
            "payload of {} bytes does not fit a u32 length",
            payload.len()
        ),
    })?;
    let mut chunk = Vec::with_capacity(CHUNK_HEADER_BYTES + payload.len() + CHUNK_TRAILER_BYTES);
    chunk.extend_from_slice(MAGIC);
    chunk.push(CHUNK_FORMAT_VERSION);
    chunk.push(if last { FLAG_LAST } else { 0 });
    chunk.extend_from_slice(&[0, 0]);
    chunk.extend_from_slice(&chunk_index.to_be_bytes());
    chunk.extend_from_slice(&payload_len.to_be_bytes());
    chunk.extend_from_slice(payload);
    let crc = crc32c::crc32c(&chunk);
    chunk.extend_from_slice(&crc.to_be_bytes());
    Ok(chunk)
}

/// A step of [`super::Backend::install_observed`], reported once done.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InstallStep {
    /// The new generation is complete, checked, fsynced and reopened.
    DataSynced,
    /// `CURRENT.tmp` names the new generation and is fsynced.
    CurrentTempSynced,
    /// `CURRENT` names the new generation (durably): the install happened.
    CurrentSwitched,
    /// The old generation is closed and removed.
    OldRemoved,
}

impl InstallStep {
    pub const ALL: [InstallStep; 4] = [
        InstallStep::DataSynced,
        InstallStep::CurrentTempSynced,
        InstallStep::CurrentSwitched,
        InstallStep::OldRemoved,
    ];
}

/// Builds a new database generation from a chunk stream.
///
/// Feed every chunk to [`SnapshotInstaller::push`], in order, then hand the
/// installer to [`super::Backend::install`]. A chunk that fails its checks
/// fails the installer for good. Dropping an installer that was not
/// installed removes its directory.
pub struct SnapshotInstaller {
    path: PathBuf,
    generation: u64,
    /// fjall's block cache of the new database, as the backend's.
    cache_bytes: u64,
    store: Option<Engine>,
    /// Checks the payload of every put version received (the MVCC store's
    /// record format, which the backend does not know).
    put_check: Option<PutCheck>,
    next_chunk_index: u64,
    header: Option<SnapshotMetadata>,
    /// The last entry written, for the order check.
    last_entry: Option<(KeyspaceId, Vec<u8>)>,
    entry_count: u64,
    complete: bool,
    failed: bool,
    /// Cleared once CURRENT names this generation: from then on the
    /// directory is the live state and must outlive the installer.
    remove_on_drop: bool,
}

impl std::fmt::Debug for SnapshotInstaller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotInstaller")
            .field("path", &self.path)
            .field("next_chunk_index", &self.next_chunk_index)
            .field("entry_count", &self.entry_count)
            .field("complete", &self.complete)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl SnapshotInstaller {
    pub(super) fn create(path: PathBuf, generation: u64, cache_bytes: u64) -> Result<Self> {
        // A directory of this generation can only be a leftover of an
        // earlier attempt in this process; it holds nothing live.
        if path.exists() {
            std::fs::remove_dir_all(&path).map_err(Error::io("remove", &path))?;
        }
        let mut installer = SnapshotInstaller {
            path,
            generation,
            cache_bytes,
            store: None,
            put_check: None,
            next_chunk_index: 0,
            header: None,
            last_entry: None,
            entry_count: 0,
            complete: false,
            failed: false,
            remove_on_drop: true,
        };
        installer.store = Some(Engine::open(&installer.path, cache_bytes)?);
        Ok(installer)
    }

    /// Checks the payload of every put version pushed from now on with
    /// `check`; a payload it refuses fails the chunk (and the installer).
    pub fn with_put_check(mut self, check: PutCheck) -> Self {
        self.put_check = Some(check);
        self
    }

    pub(super) fn generation(&self) -> u64 {
        self.generation
    }

    /// Where the new generation is being built.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True once the end record has been received.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// The log position and membership the received state reflects, once
    /// the first chunk (which carries it) was pushed.
    pub fn header(&self) -> Option<&SnapshotMetadata> {
        self.header.as_ref()
    }

    /// Verifies and writes one chunk.
    pub fn push(&mut self, chunk: &[u8]) -> Result<()> {
        if self.failed {
            return Err(Error::SnapshotMalformed {
                chunk_index: self.next_chunk_index,
                detail: "an earlier chunk was rejected".into(),
            });
        }
        let result = self.push_checked(chunk);
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    fn push_checked(&mut self, chunk: &[u8]) -> Result<()> {
        let chunk_index = self.next_chunk_index;
        let malformed = |detail: String| Error::SnapshotMalformed {
            chunk_index,
            detail,
        };
        if self.complete {
            return Err(malformed("chunk after the last one".into()));
        }
        let (payload, last) = parse_chunk(chunk, chunk_index)?;
        let store = self
            .store
            .as_ref()
            .ok_or_else(|| malformed("installer already sealed".into()))?;
        let mut batch = store.db.batch().durability(None);
        let mut records = payload;
        while !records.is_empty() {
            if self.complete {
                return Err(malformed("records after the end record".into()));
            }
            let (tag, body, rest) =
                split_record(records).ok_or_else(|| malformed("truncated record".into()))?;
            records = rest;
            if self.header.is_none() && tag != RECORD_HEADER {
                return Err(malformed("stream does not start with a header".into()));
            }
            match tag {
                RECORD_HEADER => {
                    if self.header.is_some() || chunk_index != 0 {
                        return Err(malformed("second header".into()));
                    }
                    self.header = Some(decode_header(body).map_err(malformed)?);
                }
                RECORD_ENTRY => {
                    let (keyspace, key, value) = decode_entry(body).map_err(malformed)?;
                    if let Some((last_keyspace, last_key)) = &self.last_entry {
                        if (keyspace, key) <= (*last_keyspace, last_key.as_slice()) {
                            return Err(malformed("entries out of order".into()));
                        }
                    }
                    if keyspace == KeyspaceId::Kv {
                        decode_key(key)?;
                        let payload = decode_value(value)?;
                        if let (Some(check), Some(payload)) = (self.put_check, payload) {
                            check(payload).map_err(|detail| {
                                malformed(format!(
                                    "version record of entry {}: {detail}",
                                    self.entry_count
                                ))
                            })?;
                        }
                    }
                    batch.insert(store.keyspace(keyspace), key, value);
                    self.last_entry = Some((keyspace, key.to_vec()));
                    self.entry_count += 1;
                }
                RECORD_END => {
                    let count: [u8; 8] = body
                        .try_into()
                        .map_err(|_| malformed("end record is not 8 bytes".into()))?;
                    let count = u64::from_be_bytes(count);
                    if count != self.entry_count {
                        return Err(malformed(format!(
                            "end record counts {count} entries, received {}",
                            self.entry_count
                        )));
                    }
                    if !last {
                        return Err(malformed("end record in a chunk not flagged last".into()));
                    }
                    self.complete = true;
                }
                other => return Err(malformed(format!("unknown record tag {other}"))),
            }
        }
        if last && !self.complete {
            return Err(malformed("last chunk without an end record".into()));
        }
        batch.commit()?;
        self.next_chunk_index += 1;
        Ok(())
    }

    /// Checks the new generation against the header, makes it durable, and
    /// reopens it: the state [`super::Backend::install_observed`] switches to.
    pub(super) fn seal(&mut self) -> Result<(SnapshotMetadata, Engine)> {
        if self.failed {
            return Err(Error::SnapshotIncomplete(
                "a chunk of the stream was rejected".into(),
            ));
        }
        if !self.complete {
            return Err(Error::SnapshotIncomplete(format!(
                "{} chunks received, no end record",
                self.next_chunk_index
            )));
        }
        let header = self
            .header
            .clone()
            .ok_or_else(|| Error::SnapshotIncomplete("no header".into()))?;
        let store = self
            .store
            .take()
            .ok_or_else(|| Error::SnapshotIncomplete("installer already sealed".into()))?;
        let corrupt = |detail: String| Error::SnapshotMalformed {
            chunk_index: 0,
            detail,
        };
        store.check_format(false)?;
        let stored = store.read().snapshot_metadata()?;
        if stored != header {
            return Err(corrupt(format!(
                "header says {header:?}, the metadata keyspace says {stored:?}"
            )));
        }
        store.db.persist(PersistMode::SyncAll)?;
        drop(store);
        dir::fsync_tree(&self.path)?;
        if let Some(parent) = self.path.parent() {
            dir::fsync_dir(parent)?;
        }
        let reopened = Engine::open(&self.path, self.cache_bytes)?;
        let applied = reopened.check_format(false)?;
        if (applied.index, applied.term) != (header.index, header.term) {
            return Err(corrupt(format!(
                "reopened database is at {applied:?}, header says {header:?}"
            )));
        }
        Ok((header, reopened))
    }

    /// The directory now belongs to the live backend.
    pub(super) fn disarm(&mut self) {
        self.remove_on_drop = false;
    }
}

impl Drop for SnapshotInstaller {
    fn drop(&mut self) {
        // Close the database before removing its files.
        drop(self.store.take());
        if self.remove_on_drop {
            if let Err(error) = std::fs::remove_dir_all(&self.path) {
                if error.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %self.path.display(), %error, "abandoned snapshot install not removed; it will be at next open");
                }
            }
        }
    }
}

/// Checks a chunk's frame and checksum; returns its payload and last flag.
fn parse_chunk(chunk: &[u8], expected_index: u64) -> Result<(&[u8], bool)> {
    let malformed = |detail: String| Error::SnapshotMalformed {
        chunk_index: expected_index,
        detail,
    };
    if chunk.len() < CHUNK_HEADER_BYTES + CHUNK_TRAILER_BYTES {
        return Err(malformed(format!(
            "{} bytes is shorter than a frame",
            chunk.len()
        )));
    }
    let (framed, trailer) = chunk.split_at(chunk.len() - CHUNK_TRAILER_BYTES);
    let (header, payload) = framed.split_at(CHUNK_HEADER_BYTES);
    if &header[0..4] != MAGIC {
        return Err(malformed("bad magic".into()));
    }
    let stored = u32::from_be_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    let computed = crc32c::crc32c(framed);
    if stored != computed {
        return Err(Error::SnapshotChecksum {
            chunk_index: expected_index,
            stored,
            computed,
        });
    }
    if header[4] != CHUNK_FORMAT_VERSION {
        return Err(malformed(format!("unsupported chunk format {}", header[4])));
    }
    let flags = header[5];
    if flags & !FLAG_LAST != 0 || header[6..8] != [0, 0] {
        return Err(malformed(format!(
            "unknown flags {flags:#04x} or reserved bytes set"
        )));
    }
    let mut index = [0u8; 8];
    index.copy_from_slice(&header[8..16]);
    let index = u64::from_be_bytes(index);
    if index != expected_index {
        return Err(malformed(format!(
            "chunk index {index}, expected {expected_index}"
        )));
    }
    let payload_len = u32::from_be_bytes([header[16], header[17], header[18], header[19]]);
    if payload_len as usize != payload.len() {
        return Err(malformed(format!(
            "payload length field {payload_len}, frame holds {}",
            payload.len()
        )));
    }
    Ok((payload, flags & FLAG_LAST != 0))
}

/// `(tag, body, rest)`, or `None` if the record is cut short.
fn split_record(records: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = records.split_first()?;
    let (len, rest) = rest.split_first_chunk::<4>()?;
    let len = u32::from_be_bytes(*len) as usize;
    if rest.len() < len {
        return None;
    }
    let (body, rest) = rest.split_at(len);
    Some((tag, body, rest))
}

fn decode_header(body: &[u8]) -> Result<SnapshotMetadata, String> {
    let (index, rest) = body
        .split_first_chunk::<8>()
        .ok_or("header shorter than 16 bytes")?;
    let (term, conf_state) = rest
        .split_first_chunk::<8>()
        .ok_or("header shorter than 16 bytes")?;
    Ok(SnapshotMetadata {
        index: u64::from_be_bytes(*index),
        term: u64::from_be_bytes(*term),
        conf_state: meta::decode_conf_state(conf_state).map_err(|error| error.to_string())?,
    })
}

fn decode_entry(body: &[u8]) -> Result<(KeyspaceId, &[u8], &[u8]), String> {
    let (&keyspace, rest) = body.split_first().ok_or("empty entry")?;
    let keyspace =
        KeyspaceId::from_byte(keyspace).ok_or_else(|| format!("unknown keyspace {keyspace}"))?;
    let (key_len, rest) = rest
        .split_first_chunk::<4>()
        .ok_or("entry cut inside the key length")?;
    let key_len = u32::from_be_bytes(*key_len) as usize;
    if key_len > rest.len() {
        return Err("entry cut inside the key".into());
    }
    let (key, value) = rest.split_at(key_len);
    Ok((keyspace, key, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse_back() {
        let chunk = frame_chunk(3, true, b"payload").unwrap();
        assert_eq!(parse_chunk(&chunk, 3).unwrap(), (&b"payload"[..], true));
        assert!(matches!(
            parse_chunk(&chunk, 4),
            Err(Error::SnapshotMalformed { .. })
        ));
        for position in 0..chunk.len() {
            let mut flipped = chunk.clone();
            flipped[position] ^= 0x10;
            assert!(parse_chunk(&flipped, 3).is_err(), "flip at {position}");
        }
        for cut in 0..chunk.len() {
            assert!(parse_chunk(&chunk[..cut], 3).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn records_split_and_entries_decode() {
        let mut payload = Vec::new();
        push_record(
            &mut payload,
            RECORD_ENTRY,
            &[&[1], &3u32.to_be_bytes(), b"key", b"value"],
        )
        .unwrap();
        let (tag, body, rest) = split_record(&payload).unwrap();
        assert_eq!((tag, rest), (RECORD_ENTRY, &[][..]));
        assert_eq!(
            decode_entry(body).unwrap(),
            (KeyspaceId::Kv, &b"key"[..], &b"value"[..])
        );
        assert!(split_record(&payload[..payload.len() - 1]).is_none());
        assert!(decode_entry(&[9, 0, 0, 0, 0]).is_err());
        assert!(decode_entry(&[1, 0, 0, 0, 9, b'k']).is_err());
    }
}
