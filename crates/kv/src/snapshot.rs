//! The store's image as bytes: what a snapshot file holds and what a member
//! far behind receives instead of the log.
//!
//! Layout (integers little-endian): `magic "RKVKVS01" | current revision
//! i64 | compacted revision i64 | stored bytes u64 | key count u64 | keys… |
//! value count u64 | values… | end magic "RKVKVEND"`. A key is `length u32 |
//! bytes | generations u32 | generations…`; a generation is `created rev |
//! first version i64 | revisions u32 | revs… | deleted u8 [| rev]`; a rev is
//! `main i64 | sub i64`; a value is `rev | lease i64 | length u32 | bytes`.
//!
//! Written through any `io::Write` and read through any `io::Read`, so a
//! snapshot is streamed, not built in memory. Integrity (checksums) is the
//! container's job (the snapshot file); this module only refuses what
//! cannot be a store.

use std::io::{self, BufRead, Read, Write};

use bytes::Bytes;

use crate::index::{Generation, KeyHistory, KeyIndex, Revision};
use crate::store::{Store, StoredValue};

const MAGIC: &[u8; 8] = b"RKVKVS01";
const END_MAGIC: &[u8; 8] = b"RKVKVEND";
/// Bound on one key or value: etcd's request limit is far below it, so a
/// larger length can only be damage.
const BLOB_BYTES_MAX: u32 = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotDecodeError {
    #[error("reading the store snapshot: {0}")]
    Io(#[from] io::Error),
    #[error("store snapshot is malformed: {0}")]
    Malformed(String),
}

fn write_rev(out: &mut impl Write, revision: Revision) -> io::Result<()> {
    out.write_all(&revision.main.to_le_bytes())?;
    out.write_all(&revision.sub.to_le_bytes())
}

fn write_blob(out: &mut impl Write, blob: &[u8]) -> io::Result<()> {
    out.write_all(&(blob.len() as u32).to_le_bytes())?;
    out.write_all(blob)
}

impl Store {
    /// Writes the whole store to `out`.
    pub fn write_snapshot(&self, out: &mut impl Write) -> io::Result<()> {
        let mut out = io::BufWriter::with_capacity(256 * 1024, out);
        out.write_all(MAGIC)?;
        out.write_all(&self.current_revision.to_le_bytes())?;
        out.write_all(&self.compacted_revision.to_le_bytes())?;
        out.write_all(&self.stored_bytes.to_le_bytes())?;
        out.write_all(&(self.index.key_count() as u64).to_le_bytes())?;
        for (key, history) in self.index.histories_in_order() {
            write_blob(&mut out, key)?;
            out.write_all(&(history.generations.len() as u32).to_le_bytes())?;
            for generation in &history.generations {
                write_rev(&mut out, generation.created)?;
                out.write_all(&generation.first_version.to_le_bytes())?;
                out.write_all(&(generation.revisions.len() as u32).to_le_bytes())?;
                for &revision in &generation.revisions {
                    write_rev(&mut out, revision)?;
                }
                match generation.deleted {
                    Some(revision) => {
                        out.write_all(&[1])?;
                        write_rev(&mut out, revision)?;
                    }
                    None => out.write_all(&[0])?,
                }
            }
        }
        out.write_all(&(self.values.len() as u64).to_le_bytes())?;
        for (&revision, stored) in &self.values {
            write_rev(&mut out, revision)?;
            out.write_all(&stored.lease.to_le_bytes())?;
            write_blob(&mut out, &stored.value)?;
        }
        out.write_all(END_MAGIC)?;
        out.flush()
    }

    /// Reads a store written by [`Store::write_snapshot`], consuming exactly
    /// its bytes: the caller buffers (a buffer of our own would read past
    /// the end and hide what follows).
    pub fn read_snapshot(input: &mut impl BufRead) -> Result<Store, SnapshotDecodeError> {
        let mut input = Decoder(input);
        if &input.array::<8>()? != MAGIC {
            return Err(malformed("not a store snapshot (bad magic)"));
        }
        let current_revision = input.i64()?;
        let compacted_revision = input.i64()?;
        let stored_bytes = input.u64()?;
        let mut index = KeyIndex::default();
        let key_count = input.u64()?;
        let mut previous_key: Option<Bytes> = None;
        for _ in 0..key_count {
            let key = input.blob()?;
            if previous_key
                .as_ref()
                .is_some_and(|previous| *previous >= key)
            {
                return Err(malformed("keys out of order"));
            }
            let generation_count = input.u32()?;
            let mut history = KeyHistory::default();
            for _ in 0..generation_count {
                let created = input.rev()?;
                let first_version = input.i64()?;
                let revision_count = input.u32()?;
                let mut revisions = Vec::new();
                for _ in 0..revision_count {
                    revisions.push(input.rev()?);
                }
                let deleted = match input.array::<1>()?[0] {
                    0 => None,
                    1 => Some(input.rev()?),
                    _ => return Err(malformed("bad deletion flag")),
                };
                history.generations.push(Generation {
                    created,
                    first_version,
                    revisions,
                    deleted,
                });
            }
            index.insert_history(key.clone(), history);
            previous_key = Some(key);
        }
        let mut store = Store {
            index,
            current_revision,
            compacted_revision,
            stored_bytes,
            ..Store::default()
        };
        let value_count = input.u64()?;
        for _ in 0..value_count {
            let revision = input.rev()?;
            let lease = input.i64()?;
            let value = input.blob()?;
            store.values.insert(revision, StoredValue { value, lease });
        }
        if &input.array::<8>()? != END_MAGIC {
            return Err(malformed("store snapshot does not end where it should"));
        }
        Ok(store)
    }
}

fn malformed(reason: &str) -> SnapshotDecodeError {
    SnapshotDecodeError::Malformed(reason.to_string())
}

struct Decoder<R: Read>(R);

impl<R: Read> Decoder<R> {
    fn array<const N: usize>(&mut self) -> Result<[u8; N], SnapshotDecodeError> {
        let mut bytes = [0u8; N];
        self.0.read_exact(&mut bytes)?;
        Ok(bytes)
    }
    fn u32(&mut self) -> Result<u32, SnapshotDecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, SnapshotDecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, SnapshotDecodeError> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    fn rev(&mut self) -> Result<Revision, SnapshotDecodeError> {
        Ok(Revision::new(self.i64()?, self.i64()?))
    }
    fn blob(&mut self) -> Result<Bytes, SnapshotDecodeError> {
        let len = self.u32()?;
        if len > BLOB_BYTES_MAX {
            return Err(malformed("impossible key or value length"));
        }
        let mut bytes = vec![0u8; len as usize];
        self.0.read_exact(&mut bytes)?;
        Ok(Bytes::from(bytes))
    }
}
