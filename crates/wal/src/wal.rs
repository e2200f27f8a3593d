//! The log writer: callers queue batches, one writer thread makes them
//! durable, many at a time, with one `fdatasync` per group.
//!
//! [`Wal::write`] (queue and wait) writes the group itself when no write is
//! in progress, instead of handing it to the writer thread and waiting to be
//! woken: for a caller that writes from one thread (the Raft loop) that saves
//! two thread switches per batch. Whoever holds the writer writes everything
//! queued, so group commit is the same either way.
//!
//! Group commit: while the writer is inside a sync, new batches pile up in
//! the queue; when it comes back it takes all of them, writes them in queue
//! order and syncs once. A caller holds a [`Ticket`] and learns its batch is
//! durable only when [`Wal::wait`] returns `Ok`, which happens after the sync
//! that covered it returned.
//!
//! Failure: the first failed write, sync, create or remove is kept; every
//! later call, and every waiter whose batch was not yet durable, gets it. The
//! writer never retries: after a failed fsync the kernel may have dropped the
//! dirty pages, and carrying on would acknowledge data that is not on disk.
//!
//! Segments: the writer rolls to a new segment once the active one reaches
//! the configured size. A segment opens with its start record, the current
//! snapshot marker and hard state (its prelude), so that segments before it
//! are needed only for their entries; that is what lets [`Wal::purge`] drop
//! every segment wholly at or below the durable snapshot.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use raft::{Entry, HardState, SnapshotMetadata};

use crate::fs::{FileSystem, StdFs, WritableFile};
use crate::record::{self, SnapshotMarkerKind};
use crate::recovery::{self, segment_name, RecoveredLog};
use crate::WalError;

pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// How far ahead of the appends a segment file is extended with zeros
/// (`FileSystem::create_log`). Measured on ext4 (2 KiB appends, each
/// followed by `fdatasync`): a file that grows with every append costs
/// 236 µs and 72 µs of CPU per sync; one extended 1 MiB at a time, 140 µs
/// and 49 µs. 4 MiB steps were slower (155 µs): each step's zeros are
/// written with the next sync.
const LOG_EXTENSION_BYTES: u64 = 1024 * 1024;

/// Syncs a test can switch off to prove the crash tests notice. Debug builds
/// only, like `raft::FaultSwitches`.
#[cfg(debug_assertions)]
#[derive(Clone, Copy, Debug, Default)]
pub struct WalFaults {
    /// Acknowledge batches without `fdatasync`.
    pub skip_data_sync: bool,
    /// Do not fsync the directory after creating a segment.
    pub skip_dir_sync_after_create: bool,
}

#[derive(Clone)]
pub struct WalOptions {
    /// A segment is closed once it holds at least this many bytes.
    pub segment_bytes: u64,
    pub fs: Arc<dyn FileSystem>,
    #[cfg(debug_assertions)]
    pub faults: WalFaults,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            fs: Arc::new(StdFs),
            #[cfg(debug_assertions)]
            faults: WalFaults::default(),
        }
    }
}

/// What one call writes, in this order: the snapshot marker, the entries
/// (replacing every stored entry at or after the first one's index), the
/// hard state. This is the order a Raft `Ready` needs.
#[derive(Clone, Copy, Debug, Default)]
pub struct WriteBatch<'a> {
    pub snapshot: Option<(&'a SnapshotMetadata, SnapshotMarkerKind)>,
    pub entries: &'a [Entry],
    pub hard_state: Option<&'a HardState>,
}

impl WriteBatch<'_> {
    pub fn is_empty(&self) -> bool {
        self.snapshot.is_none() && self.entries.is_empty() && self.hard_state.is_none()
    }
}

/// Names one queued batch; see [`Wal::wait`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[must_use = "a batch is durable only once its ticket has been waited for"]
pub struct Ticket(u64);

/// A segment as the writer and purge see it.
#[derive(Clone, Debug)]
pub struct SegmentInfo {
    pub sequence: u64,
    pub path: PathBuf,
    /// Highest entry index written into this segment (0 if none).
    pub max_entry_index: u64,
}

/// Everything queued and not yet taken by the writer, and the log's shape as
/// of the last queued batch (used to validate the next one).
struct Queue {
    buffer: Vec<u8>,
    /// A cleared buffer the writer hands back, so steady state allocates
    /// nothing.
    spare: Vec<u8>,
    buffer_max_entry_index: u64,
    buffer_snapshot_index: Option<u64>,
    /// Last entry index (or snapshot index) once every queued batch applies.
    last_index: u64,
    snapshot: Option<SnapshotMetadata>,
    hard_state: HardState,
    queued: u64,
    /// Every batch with a ticket at or below this is durable.
    durable: u64,
    /// Highest snapshot index whose marker is durable; purge goes no higher.
    durable_snapshot_index: u64,
    failure: Option<Arc<WalError>>,
    closing: bool,
    stats: WalStats,
}

/// Counters since open, for benchmarks and status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Groups written, each made durable by one `fdatasync`.
    pub syncs: u64,
    pub batches: u64,
    pub bytes: u64,
}

struct Shared {
    queue: Mutex<Queue>,
    /// The file side. Lock order: `writer` before `queue`; a thread holding
    /// `queue` may only `try_lock` the writer.
    writer: Mutex<Writer>,
    /// Signalled when work is queued or the log closes.
    work: Condvar,
    /// Signalled when `durable` advances or the log fails.
    done: Condvar,
    /// Never held together with `queue`: each is taken alone, so no lock
    /// order can be violated.
    segments: Mutex<Vec<SegmentInfo>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks is a broken invariant of this module
    // that already aborted the writer or a caller; the data under the lock is
    // plain bookkeeping and stays readable for the error path.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub struct Wal {
    shared: Arc<Shared>,
    dir: PathBuf,
    fs: Arc<dyn FileSystem>,
    writer: Option<JoinHandle<()>>,
}

impl Wal {
    /// Opens (creating if needed) the log in `dir` and recovers it. A torn
    /// record at the end of the last segment is cut off with a warning;
    /// anything else wrong is an error naming the file and offset.
    pub fn open(dir: &Path, options: WalOptions) -> Result<(Wal, RecoveredLog), WalError> {
        let fs = options.fs.clone();
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| WalError::Io { path, source }
        };
        fs.create_dir_all(dir).map_err(io(dir))?;
        let (recovered, mut scanned) = recovery::recover(fs.as_ref(), dir)?;

        if let Some(last) = scanned.last() {
            if last.torn_tail {
                tracing::warn!(
                    file = %last.path.display(),
                    offset = last.valid_len,
                    dropped_bytes = last.file_len - last.valid_len,
                    "cutting a torn record off the end of the log"
                );
            }
            if last.valid_len == 0 {
                // Not even its start record survived (a crash right after
                // the segment was created): nothing of it is needed, and an
                // empty segment must not stay behind.
                fs.remove_file(&last.path).map_err(io(&last.path))?;
                fs.sync_dir(dir).map_err(io(dir))?;
                scanned.pop();
            } else if last.valid_len < last.file_len {
                let mut file = fs.open_append(&last.path).map_err(io(&last.path))?;
                file.truncate(last.valid_len)
                    .and_then(|()| file.sync_data())
                    .map_err(io(&last.path))?;
            }
        }

        let segments: Vec<SegmentInfo> = scanned
            .into_iter()
            .map(|segment| SegmentInfo {
                sequence: segment.sequence,
                path: segment.path,
                max_entry_index: segment.max_entry_index,
            })
            .collect();
        let next_sequence = segments.last().map_or(0, |segment| segment.sequence + 1);

        let writer = Writer {
            fs: fs.clone(),
            dir: dir.to_path_buf(),
            segment_bytes: options.segment_bytes.max(1),
            active: None,
            active_sequence: next_sequence,
            unlisted_segment: None,
            written_snapshot: recovered.snapshot.clone(),
            written_hard_state: recovered.hard_state,
            #[cfg(debug_assertions)]
            faults: options.faults,
        };
        // Appends always go to a fresh segment: the recovered ones stay
        // exactly as they were checked.
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                buffer: Vec::new(),
                spare: Vec::new(),
                buffer_max_entry_index: 0,
                buffer_snapshot_index: None,
                last_index: recovered.last_index(),
                snapshot: recovered.snapshot.clone(),
                hard_state: recovered.hard_state,
                queued: 0,
                durable: 0,
                durable_snapshot_index: recovered.snapshot_index(),
                failure: None,
                closing: false,
                stats: WalStats::default(),
            }),
            writer: Mutex::new(writer),
            work: Condvar::new(),
            done: Condvar::new(),
            segments: Mutex::new(segments),
        });
        {
            let mut writer = lock(&shared.writer);
            writer.start_segment(next_sequence)?;
            let path = writer.active_path();
            if let Some(file) = writer.active.as_mut() {
                file.sync_data().map_err(io(&path))?;
            }
            if let Some(synced) = writer.unlisted_segment.take() {
                lock(&shared.segments).push(synced);
            }
        }

        let thread_shared = shared.clone();
        let handle = std::thread::Builder::new()
            .name("wal-writer".into())
            .spawn(move || run_writer(&thread_shared))
            .map_err(io(dir))?;
        Ok((
            Wal {
                shared,
                dir: dir.to_path_buf(),
                fs,
                writer: Some(handle),
            },
            recovered,
        ))
    }

    /// Queues `batch` and returns at once. The batch must continue the log:
    /// its first entry at most one past the last queued index and after the
    /// snapshot; a `Compacted` marker no further than the last index.
    pub fn append(&self, batch: WriteBatch<'_>) -> Result<Ticket, WalError> {
        let mut queue = lock(&self.shared.queue);
        let ticket = queue_batch(&mut queue, batch)?;
        self.shared.work.notify_one();
        Ok(ticket)
    }

    /// Queues `batch` without asking for a write: it reaches the disk with
    /// the next group anyone writes (or when the log closes), and a crash
    /// before that loses it. Only for records whose loss is harmless, such
    /// as a hard state that moved only the commit index.
    pub fn append_unsynced(&self, batch: WriteBatch<'_>) -> Result<(), WalError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut queue = lock(&self.shared.queue);
        queue_batch(&mut queue, batch).map(|_| ())
    }

    /// Blocks until the batch behind `ticket` is durable, or the log failed.
    pub fn wait(&self, ticket: Ticket) -> Result<(), WalError> {
        let mut queue = lock(&self.shared.queue);
        loop {
            if queue.durable >= ticket.0 {
                return Ok(());
            }
            if let Some(failure) = &queue.failure {
                return Err(WalError::Failed(failure.clone()));
            }
            queue = self
                .shared
                .done
                .wait(queue)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    /// [`Wal::append`] then [`Wal::wait`]; writes in the calling thread when
    /// no write is in progress.
    pub fn write(&self, batch: WriteBatch<'_>) -> Result<(), WalError> {
        if batch.is_empty() {
            return Ok(());
        }
        let (ticket, writer) = {
            let mut queue = lock(&self.shared.queue);
            let ticket = queue_batch(&mut queue, batch)?;
            let writer = match self.shared.writer.try_lock() {
                Ok(writer) => Some(writer),
                Err(std::sync::TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => {
                    // A write is in progress: its writer comes back for
                    // this batch (the thread loops while work is queued).
                    self.shared.work.notify_one();
                    None
                }
            };
            (ticket, writer)
        };
        if let Some(mut writer) = writer {
            flush_queued(&self.shared, &mut writer);
        }
        self.wait(ticket)
    }

    /// Removes the oldest segments whose entries all lie at or below the
    /// latest durable snapshot marker (never the active segment), then
    /// fsyncs the directory. Returns how many were removed.
    pub fn purge(&self) -> Result<usize, WalError> {
        let durable_snapshot_index = {
            let queue = lock(&self.shared.queue);
            if let Some(failure) = &queue.failure {
                return Err(WalError::Failed(failure.clone()));
            }
            queue.durable_snapshot_index
        };
        let result = self.purge_to(durable_snapshot_index);
        if let Err(error) = &result {
            self.fail(error);
        }
        result
    }

    fn purge_to(&self, snapshot_index: u64) -> Result<usize, WalError> {
        let mut segments = lock(&self.shared.segments);
        let mut removed = 0;
        // Only a prefix: a hole in the sequence reads as a missing segment.
        while segments.len() > 1 && segments[0].max_entry_index <= snapshot_index {
            let segment = segments.remove(0);
            self.fs
                .remove_file(&segment.path)
                .map_err(|source| WalError::Io {
                    path: segment.path.clone(),
                    source,
                })?;
            removed += 1;
        }
        if removed > 0 {
            self.fs.sync_dir(&self.dir).map_err(|source| WalError::Io {
                path: self.dir.clone(),
                source,
            })?;
        }
        Ok(removed)
    }

    fn fail(&self, error: &WalError) {
        let mut queue = lock(&self.shared.queue);
        if queue.failure.is_none() {
            queue.failure = Some(Arc::new(WalError::Io {
                path: self.dir.clone(),
                source: std::io::Error::other(error.to_string()),
            }));
        }
        self.shared.done.notify_all();
        self.shared.work.notify_all();
    }

    pub fn stats(&self) -> WalStats {
        lock(&self.shared.queue).stats
    }

    /// The segments on disk, oldest first; a new segment appears after its
    /// first sync.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        lock(&self.shared.segments).clone()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Wal {
    /// Writes what is queued, then stops the writer.
    fn drop(&mut self) {
        {
            let mut queue = lock(&self.shared.queue);
            queue.closing = true;
            self.shared.work.notify_all();
        }
        if let Some(handle) = self.writer.take() {
            if handle.join().is_err() {
                tracing::error!(dir = %self.dir.display(), "the log writer thread panicked");
            }
        }
    }
}

/// Encodes `batch` into the queue's buffer and gives it a ticket. The batch
/// must continue the log: its first entry at most one past the last queued
/// index and after the snapshot; a `Compacted` marker no further than the
/// last index.
fn queue_batch(queue: &mut Queue, batch: WriteBatch<'_>) -> Result<Ticket, WalError> {
    if let Some(failure) = &queue.failure {
        return Err(WalError::Failed(failure.clone()));
    }
    if queue.closing {
        return Err(WalError::Closed);
    }
    validate(queue, &batch)?;
    if let Some((metadata, kind)) = batch.snapshot {
        record::push_snapshot(&mut queue.buffer, metadata, kind);
        if kind == SnapshotMarkerKind::Installed {
            queue.last_index = metadata.index;
        }
        queue.snapshot = Some(metadata.clone());
        queue.buffer_snapshot_index = Some(metadata.index);
    }
    for entry in batch.entries {
        record::push_entry(&mut queue.buffer, entry);
    }
    if let Some(last) = batch.entries.last() {
        queue.last_index = last.index;
        queue.buffer_max_entry_index = queue.buffer_max_entry_index.max(last.index);
    }
    if let Some(hard_state) = batch.hard_state {
        record::push_hard_state(&mut queue.buffer, hard_state);
        queue.hard_state = *hard_state;
    }
    queue.queued += 1;
    Ok(Ticket(queue.queued))
}

/// The writer thread: writes whatever is queued whenever nobody else does,
/// until the log closes (after writing what is queued) or fails.
fn run_writer(shared: &Shared) {
    loop {
        {
            let mut queue = lock(&shared.queue);
            while queue.buffer.is_empty() && !queue.closing && queue.failure.is_none() {
                queue = shared
                    .work
                    .wait(queue)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            if queue.failure.is_some() || queue.buffer.is_empty() {
                return;
            }
        }
        let mut writer = lock(&shared.writer);
        if !flush_queued(shared, &mut writer) {
            return;
        }
    }
}

/// With the writer held: takes everything queued, writes it with one sync
/// and publishes the outcome to the waiters. Returns false once the log has
/// failed.
fn flush_queued(shared: &Shared, writer: &mut Writer) -> bool {
    let group = {
        let mut queue = lock(&shared.queue);
        if queue.failure.is_some() {
            return false;
        }
        if queue.buffer.is_empty() {
            // Another holder of the writer took it first.
            return true;
        }
        let spare = std::mem::take(&mut queue.spare);
        Group {
            bytes: std::mem::replace(&mut queue.buffer, spare),
            last_ticket: queue.queued,
            max_entry_index: std::mem::take(&mut queue.buffer_max_entry_index),
            snapshot_index: queue.buffer_snapshot_index.take(),
            snapshot_after: queue.snapshot.clone(),
            hard_state_after: queue.hard_state,
        }
    };
    let result = writer.write_group(shared, &group);
    let mut queue = lock(&shared.queue);
    match result {
        Ok(()) => {
            queue.stats.syncs += 1;
            queue.stats.batches += group.last_ticket - queue.durable;
            queue.stats.bytes += group.bytes.len() as u64;
            queue.durable = group.last_ticket;
            if let Some(index) = group.snapshot_index {
                queue.durable_snapshot_index = queue.durable_snapshot_index.max(index);
            }
            let mut bytes = group.bytes;
            bytes.clear();
            queue.spare = bytes;
            shared.done.notify_all();
            true
        }
        Err(error) => {
            tracing::error!(%error, "the log failed; it takes no more writes");
            queue.failure = Some(Arc::new(error));
            shared.done.notify_all();
            false
        }
    }
}

fn validate(queue: &Queue, batch: &WriteBatch<'_>) -> Result<(), WalError> {
    let invalid = |reason: String| Err(WalError::InvalidAppend(reason));
    let mut snapshot_index = queue.snapshot.as_ref().map_or(0, |snapshot| snapshot.index);
    let mut last_index = queue.last_index;
    if let Some((metadata, kind)) = batch.snapshot {
        if metadata.index < snapshot_index {
            return invalid(format!(
                "snapshot at {} is behind the current one at {snapshot_index}",
                metadata.index
            ));
        }
        if kind == SnapshotMarkerKind::Compacted && metadata.index > last_index {
            return invalid(format!(
                "compaction to {} is beyond the last index {last_index}",
                metadata.index
            ));
        }
        if kind == SnapshotMarkerKind::Installed {
            last_index = metadata.index;
        }
        snapshot_index = metadata.index;
    }
    if let Some(first) = batch.entries.first() {
        if first.index <= snapshot_index || first.index > last_index + 1 {
            return invalid(format!(
                "entry {} does not continue the log (snapshot {snapshot_index}, last {last_index})",
                first.index
            ));
        }
        for pair in batch.entries.windows(2) {
            if pair[1].index != pair[0].index + 1 || pair[1].term < pair[0].term {
                return invalid(format!(
                    "entries {} (term {}) and {} (term {}) are not consecutive",
                    pair[0].index, pair[0].term, pair[1].index, pair[1].term
                ));
            }
        }
    }
    Ok(())
}

/// The file side of the log, used by whoever holds `Shared::writer`.
struct Writer {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    segment_bytes: u64,
    active: Option<Box<dyn WritableFile>>,
    active_sequence: u64,
    /// The active segment until its first sync: it joins `Shared::segments`
    /// (which `purge` reads) only once its prelude is durable, because the
    /// prelude is then the only durable copy of the hard state and snapshot
    /// marker that the purged segments held.
    unlisted_segment: Option<SegmentInfo>,
    /// As of the end of the last batch written: what a new segment's
    /// prelude must say.
    written_snapshot: Option<SnapshotMetadata>,
    written_hard_state: HardState,
    #[cfg(debug_assertions)]
    faults: WalFaults,
}

/// One group of batches taken off the queue.
struct Group {
    bytes: Vec<u8>,
    last_ticket: u64,
    max_entry_index: u64,
    snapshot_index: Option<u64>,
    snapshot_after: Option<SnapshotMetadata>,
    hard_state_after: HardState,
}

impl Writer {
    fn active_path(&self) -> PathBuf {
        self.dir.join(segment_name(self.active_sequence))
    }

    fn io(&self, path: PathBuf) -> impl FnOnce(std::io::Error) -> WalError {
        move |source| WalError::Io { path, source }
    }

    /// Creates segment `sequence`, makes its name durable, and writes (not
    /// syncs) its prelude.
    fn start_segment(&mut self, sequence: u64) -> Result<(), WalError> {
        self.active_sequence = sequence;
        let path = self.active_path();
        let mut file = self
            .fs
            .create_log(&path, self.segment_bytes.min(LOG_EXTENSION_BYTES))
            .map_err(self.io(path.clone()))?;
        #[cfg(debug_assertions)]
        let skip_dir_sync = self.faults.skip_dir_sync_after_create;
        #[cfg(not(debug_assertions))]
        let skip_dir_sync = false;
        if !skip_dir_sync {
            self.fs
                .sync_dir(&self.dir)
                .map_err(self.io(self.dir.clone()))?;
        }
        let mut prelude = Vec::with_capacity(128);
        record::push_segment_start(&mut prelude, sequence);
        if let Some(snapshot) = &self.written_snapshot {
            record::push_snapshot(&mut prelude, snapshot, SnapshotMarkerKind::Compacted);
        }
        record::push_hard_state(&mut prelude, &self.written_hard_state);
        file.append(&prelude).map_err(self.io(path.clone()))?;
        self.active = Some(file);
        self.unlisted_segment = Some(SegmentInfo {
            sequence,
            path,
            max_entry_index: 0,
        });
        Ok(())
    }

    fn write_group(&mut self, shared: &Shared, group: &Group) -> Result<(), WalError> {
        let full = self
            .active
            .as_ref()
            .is_none_or(|file| file.len() >= self.segment_bytes);
        if full {
            // The active segment was synced with the last group. Its zeros
            // past the last record are cut off (durably) before the next
            // segment exists: only the last segment may end in zeros, so
            // recovery can hold every other one to ending at a record.
            let path = self.active_path();
            if let Some(file) = self.active.as_mut() {
                let len = file.len();
                file.truncate(len)
                    .and_then(|()| file.sync_data())
                    .map_err(|source| WalError::Io { path, source })?;
            }
            self.start_segment(self.active_sequence + 1)?;
        }
        let path = self.active_path();
        let Some(file) = self.active.as_mut() else {
            unreachable!("start_segment sets the active segment or fails");
        };
        file.append(&group.bytes).map_err(|source| WalError::Io {
            path: path.clone(),
            source,
        })?;
        #[cfg(debug_assertions)]
        let skip_sync = self.faults.skip_data_sync;
        #[cfg(not(debug_assertions))]
        let skip_sync = false;
        if !skip_sync {
            file.sync_data().map_err(|source| WalError::Io {
                path: path.clone(),
                source,
            })?;
        }
        self.written_snapshot = group.snapshot_after.clone();
        self.written_hard_state = group.hard_state_after;
        let mut segments = lock(&shared.segments);
        if let Some(synced) = self.unlisted_segment.take() {
            segments.push(synced);
        }
        if group.max_entry_index > 0 {
            if let Some(active) = segments.last_mut() {
                active.max_entry_index = active.max_entry_index.max(group.max_entry_index);
            }
        }
        Ok(())
    }
}
