//! Snapshot files: one file per snapshot, named by term and index, written
//! in full under a temporary name, fsynced, renamed into place and the
//! directory fsynced. A reader verifies the whole file's checksum before
//! trusting any of it.
//!
//! Layout: `magic "RKVSNAP1" | metadata length u32 | metadata | data… |
//! data length u64 | crc32c u32`, the checksum covering everything between
//! the magic and the trailer. The data is written and read in pieces: a
//! snapshot never has to fit in memory.
//!
//! Who removes what. Several writers can be at work in one directory at
//! once (a member's own snapshot job and a snapshot arriving from the
//! leader), so each [`SnapshotWriter`] owns exactly one file, its own
//! uniquely named temporary, and removes only that one (when it is dropped
//! unfinished or fails). A writer never removes another file, finished or
//! not: a snapshot received but not yet installed must survive a later one
//! being written. Temporaries left by a crash are removed only by
//! [`SnapshotFiles::open`], when no writer of this process can exist yet.
//! Older finished snapshots are removed only by
//! [`SnapshotFiles::remove_older_than`], which the caller invokes once it
//! knows nothing can still need them (the newer snapshot is recorded in the
//! log or installed).
//!
//! This module stores bytes; what the data means (a state machine image) is
//! the caller's business, and so is deciding when a snapshot is no longer
//! needed.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use raft::SnapshotMetadata;

use crate::fs::{FileSystem, WritableFile};
use crate::record::{decode_snapshot_metadata, encode_snapshot_metadata};
use crate::WalError;

const MAGIC: &[u8; 8] = b"RKVSNAP1";
const SUFFIX: &str = ".snap";
const TEMP_SUFFIX: &str = ".snap.tmp";
const TRAILER_BYTES: u64 = 12;
const METADATA_BYTES_MAX: u32 = 16 * 1024 * 1024;

/// Makes temporary names unique, so that two writers of the same snapshot
/// (a member's own and one arriving from the leader) never share a file.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn file_name(metadata: &SnapshotMetadata) -> String {
    format!("{:016x}-{:016x}{SUFFIX}", metadata.term, metadata.index)
}

fn parse_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(SUFFIX)?;
    let (term, index) = stem.split_once('-')?;
    if term.len() != 16 || index.len() != 16 {
        return None;
    }
    Some((
        u64::from_str_radix(term, 16).ok()?,
        u64::from_str_radix(index, 16).ok()?,
    ))
}

/// The directory of snapshot files.
#[derive(Clone)]
pub struct SnapshotFiles {
    dir: PathBuf,
    fs: Arc<dyn FileSystem>,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> WalError {
    let path = path.to_path_buf();
    move |source| WalError::Io { path, source }
}

impl SnapshotFiles {
    /// Opens the directory, removing temporaries a crash left behind. Open a
    /// directory once per process, before any writer exists: a temporary
    /// found now belongs to no live writer.
    pub fn open(dir: &Path, fs: Arc<dyn FileSystem>) -> Result<Self, WalError> {
        fs.create_dir_all(dir).map_err(io_error(dir))?;
        let mut removed = false;
        for name in fs.list_dir(dir).map_err(io_error(dir))? {
            if name.ends_with(TEMP_SUFFIX) {
                let path = dir.join(&name);
                fs.remove_file(&path).map_err(io_error(&path))?;
                removed = true;
            }
        }
        if removed {
            fs.sync_dir(dir).map_err(io_error(dir))?;
        }
        Ok(SnapshotFiles {
            dir: dir.to_path_buf(),
            fs,
        })
    }

    /// Where the finished snapshot `metadata` describes lives.
    pub fn path_for(&self, metadata: &SnapshotMetadata) -> PathBuf {
        self.dir.join(file_name(metadata))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Removes every finished snapshot file whose index is below `keep`'s,
    /// durably (directory fsync), and returns how many went. Files at or
    /// above that index and every temporary (a writer at work) are left
    /// alone. The caller guarantees nothing still needs the removed ones:
    /// `keep` is recorded in the log or installed, and no install of an
    /// older snapshot is pending. A file another remover took first is not
    /// an error.
    pub fn remove_older_than(&self, keep: &SnapshotMetadata) -> Result<usize, WalError> {
        let mut removed = 0;
        for name in self.fs.list_dir(&self.dir).map_err(io_error(&self.dir))? {
            let Some((_, index)) = parse_name(&name) else {
                continue;
            };
            if index >= keep.index {
                continue;
            }
            let path = self.dir.join(&name);
            match self.fs.remove_file(&path) {
                Ok(()) => removed += 1,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(io_error(&path)(error)),
            }
        }
        if removed > 0 {
            self.fs.sync_dir(&self.dir).map_err(io_error(&self.dir))?;
        }
        Ok(removed)
    }

    /// Starts writing the snapshot `metadata` describes. Nothing is visible
    /// until [`SnapshotWriter::finish`].
    pub fn create(&self, metadata: &SnapshotMetadata) -> Result<SnapshotWriter, WalError> {
        let final_path = self.dir.join(file_name(metadata));
        let temp_path = self.dir.join(format!(
            "{:016x}-{:016x}.{}-{}{TEMP_SUFFIX}",
            metadata.term,
            metadata.index,
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let mut file = self
            .fs
            .create_new(&temp_path)
            .map_err(io_error(&temp_path))?;
        let mut encoded = Vec::new();
        encode_snapshot_metadata(&mut encoded, metadata);
        let mut head = Vec::with_capacity(12 + encoded.len());
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&(encoded.len() as u32).to_le_bytes());
        head.extend_from_slice(&encoded);
        file.append(&head).map_err(io_error(&temp_path))?;
        Ok(SnapshotWriter {
            files: self.clone(),
            file,
            checksum: crc32c::crc32c(&head[MAGIC.len()..]),
            data_len: 0,
            temp_path,
            final_path,
            metadata: metadata.clone(),
            finished: false,
        })
    }

    /// The newest snapshot file, checked end to end, or `None` if there is
    /// none. A damaged newest file is an error naming it, not a reason to
    /// fall back silently to an older one.
    pub fn latest(&self) -> Result<Option<(SnapshotMetadata, PathBuf)>, WalError> {
        let mut newest: Option<((u64, u64), String)> = None;
        for name in self.fs.list_dir(&self.dir).map_err(io_error(&self.dir))? {
            if let Some((term, index)) = parse_name(&name) {
                if newest
                    .as_ref()
                    .is_none_or(|(best, _)| (index, term) > *best)
                {
                    newest = Some(((index, term), name));
                }
            }
        }
        let Some(((index, term), name)) = newest else {
            return Ok(None);
        };
        let path = self.dir.join(name);
        let metadata = self.verify(&path)?;
        if (metadata.index, metadata.term) != (index, term) {
            // Renamed by hand, or damage a checksum cannot see: callers find
            // a snapshot by its name, so the two must agree.
            return Err(WalError::Corrupt {
                path,
                offset: 12,
                reason: format!(
                    "holds the snapshot at index {} (term {}), not the one its name says",
                    metadata.index, metadata.term
                ),
            });
        }
        Ok(Some((metadata, path)))
    }

    /// Reads the whole file once, checking its framing and checksum.
    pub fn verify(&self, path: &Path) -> Result<SnapshotMetadata, WalError> {
        let (metadata, mut reader) = self.open_data(path)?;
        let mut sink = vec![0u8; 256 * 1024];
        while reader.read_chunk(&mut sink)? > 0 {}
        Ok(metadata)
    }

    /// Opens a snapshot file for reading its data in pieces. The checksum is
    /// checked when the last piece has been read: a caller that must not act
    /// on damaged data calls [`SnapshotFiles::verify`] first.
    pub fn open_data(&self, path: &Path) -> Result<(SnapshotMetadata, SnapshotReader), WalError> {
        let corrupt = |offset: u64, reason: &str| WalError::Corrupt {
            path: path.to_path_buf(),
            offset,
            reason: reason.to_string(),
        };
        let file_len = self.fs.file_len(path).map_err(io_error(path))?;
        let mut reader = self.fs.open_read(path).map_err(io_error(path))?;
        let mut head = [0u8; 12];
        reader
            .read_exact(&mut head)
            .map_err(|_| corrupt(0, "snapshot file too short for its header"))?;
        if &head[..8] != MAGIC {
            return Err(corrupt(0, "not a snapshot file (bad magic)"));
        }
        let metadata_len = u32::from_le_bytes([head[8], head[9], head[10], head[11]]);
        if metadata_len > METADATA_BYTES_MAX {
            return Err(corrupt(8, "impossible metadata length"));
        }
        let mut encoded = vec![0u8; metadata_len as usize];
        reader
            .read_exact(&mut encoded)
            .map_err(|_| corrupt(12, "snapshot file cut short in its metadata"))?;
        let data_start = 12 + metadata_len as u64;
        if file_len < data_start + TRAILER_BYTES {
            return Err(corrupt(data_start, "snapshot file cut short (no trailer)"));
        }
        let metadata = match decode_snapshot_metadata(&encoded) {
            Some((metadata, used)) if used == encoded.len() => metadata,
            _ => return Err(corrupt(12, "malformed snapshot metadata")),
        };
        let checksum = crc32c::crc32c_append(crc32c::crc32c(&head[8..]), &encoded);
        Ok((
            metadata,
            SnapshotReader {
                path: path.to_path_buf(),
                reader,
                checksum,
                data_start,
                offset: data_start,
                data_end: file_len - TRAILER_BYTES,
            },
        ))
    }
}

/// A snapshot file being written.
pub struct SnapshotWriter {
    files: SnapshotFiles,
    file: Box<dyn WritableFile>,
    checksum: u32,
    data_len: u64,
    temp_path: PathBuf,
    final_path: PathBuf,
    metadata: SnapshotMetadata,
    finished: bool,
}

impl Drop for SnapshotWriter {
    /// An abandoned snapshot (a transfer cut off) leaves no temporary behind.
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.files.fs.remove_file(&self.temp_path);
        }
    }
}

impl SnapshotWriter {
    pub fn write(&mut self, data: &[u8]) -> Result<(), WalError> {
        self.file.append(data).map_err(io_error(&self.temp_path))?;
        self.checksum = crc32c::crc32c_append(self.checksum, data);
        self.data_len += data.len() as u64;
        Ok(())
    }

    /// Seals, syncs and renames the file into place and fsyncs the
    /// directory. Removes nothing else: older snapshots may still be needed
    /// (see the module comment). A snapshot of the same term and index that
    /// is already in place is replaced (both hold the same committed state).
    pub fn finish(mut self) -> Result<PathBuf, WalError> {
        let mut trailer = [0u8; 12];
        trailer[..8].copy_from_slice(&self.data_len.to_le_bytes());
        trailer[8..].copy_from_slice(&self.checksum.to_le_bytes());
        let fs = self.files.fs.clone();
        let dir = self.files.dir.clone();
        // On any failure before the rename, `drop` removes the temporary.
        self.file
            .append(&trailer)
            .and_then(|()| self.file.sync_data())
            .map_err(io_error(&self.temp_path))?;
        fs.rename(&self.temp_path, &self.final_path)
            .map_err(io_error(&self.final_path))?;
        self.finished = true;
        fs.sync_dir(&dir).map_err(io_error(&dir))?;
        Ok(self.final_path.clone())
    }

    /// The temporary file this writer owns until `finish`.
    pub fn temp_path(&self) -> &Path {
        &self.temp_path
    }

    pub fn metadata(&self) -> &SnapshotMetadata {
        &self.metadata
    }
}

/// Reads a snapshot file's data in pieces; fails on the last piece if the
/// checksum does not match.
pub struct SnapshotReader {
    path: PathBuf,
    reader: Box<dyn Read + Send>,
    checksum: u32,
    data_start: u64,
    offset: u64,
    data_end: u64,
}

impl SnapshotReader {
    /// Fills up to `buffer.len()` bytes of data; 0 means the end, reached
    /// with a matching checksum.
    pub fn read_chunk(&mut self, buffer: &mut [u8]) -> Result<usize, WalError> {
        let left = self.data_end - self.offset;
        if left == 0 {
            self.check_trailer()?;
            return Ok(0);
        }
        let want = buffer.len().min(left as usize);
        self.reader
            .read_exact(&mut buffer[..want])
            .map_err(io_error(&self.path))?;
        self.checksum = crc32c::crc32c_append(self.checksum, &buffer[..want]);
        self.offset += want as u64;
        Ok(want)
    }

    fn check_trailer(&mut self) -> Result<(), WalError> {
        let mut trailer = [0u8; 12];
        self.reader
            .read_exact(&mut trailer)
            .map_err(io_error(&self.path))?;
        let data_len = u64::from_le_bytes(trailer[..8].try_into().unwrap_or([0; 8]));
        let stored = u32::from_le_bytes(trailer[8..].try_into().unwrap_or([0; 4]));
        let corrupt = |reason: String| WalError::Corrupt {
            path: self.path.clone(),
            offset: self.data_end,
            reason,
        };
        if data_len != self.data_end - self.data_start {
            return Err(corrupt(format!("trailer claims {data_len} data bytes")));
        }
        if stored != self.checksum {
            return Err(corrupt(format!(
                "checksum mismatch (stored {stored:#010x}, computed {:#010x})",
                self.checksum
            )));
        }
        Ok(())
    }
}
