//! The state machine's storage: a fjall database holding the MVCC versions,
//! leases and metadata, with the applied index committed atomically with the
//! data it covers.
//!
//! # Keyspaces
//!
//! | keyspace | key                         | value                         |
//! |----------|-----------------------------|-------------------------------|
//! | `kv`     | [`crate::keys::encode_key`] | [`VersionRecord`] encoding    |
//! | `lease`  | lease id, sign-flipped BE   | opaque lease record           |
//! | `meta`   | see [`meta`]                | see [`meta`]                  |
//!
//! # Durability of a batch
//!
//! [`Backend::commit`] writes one fjall batch: one journal record framed
//! with a start marker, the items and an end marker with a checksum. fjall's
//! journal recovery drops a batch whose end marker or checksum is missing, so
//! after any crash either all of a batch is there or none of it is. Since the
//! applied index is an item of the batch, what [`Backend::applied`] reports
//! after reopening is exactly what the data reflects, never ahead of it.
//!
//! The commit does not fsync. It flushes the journal to the operating system
//! (fjall's `PersistMode::Buffer`), so a committed batch survives a process
//! crash (SIGKILL) but may be lost on power failure or kernel crash, together
//! with every later batch (the journal is a prefix). That is safe because the
//! Raft WAL is the durable source: the applied index goes back to an earlier
//! batch and the log re-delivers the entries after it. It is why
//! [`Backend::persist`] must be called (fsync) before the Raft log is
//! compacted below the applied index.
//!
//! Per committed batch: one `write` system call, no fsync; the batch's keys
//! and values are copied once into their encodings, once into fjall's
//! journal buffer and once into its memtable.
//!
//! # Snapshots and generations
//!
//! The database lives in a directory `db-<generation>` under the root, and
//! the root's `CURRENT` file names the live one (see `dir.rs`). Installing a
//! snapshot builds a new generation beside the live one and switches
//! `CURRENT` atomically; see [`Backend::install_observed`].

mod dir;
pub mod meta;
mod snapshot;

pub use meta::{AppliedIndex, FORMAT_VERSION};

/// fjall's block cache when none is asked for: see
/// [`crate::StoreOptions`] for why this size.
pub const DEFAULT_CACHE_BYTES: u64 = 64 * 1024 * 1024;
pub use snapshot::{
    InstallStep, PutCheck, SnapshotInstaller, SnapshotStream, CHUNK_BYTES_TARGET,
    CHUNK_FORMAT_VERSION,
};

use crate::error::{Error, Result};
use crate::keys::{
    decode_key, encode_key, encode_put_parts, versions_lower_bound, versions_of,
    versions_upper_bound, KeyRange, Revision, Version, VersionRecord,
};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Readable};
use raft::{ConfState, NodeId, SnapshotMetadata};
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// The keyspaces of a backend. The discriminants are part of the snapshot
/// format and must never be reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyspaceId {
    /// MVCC versions of user keys.
    Kv = 1,
    /// Leases, by id.
    Lease = 2,
    /// The applied index, membership, revision counters, format version.
    Meta = 3,
}

impl KeyspaceId {
    /// Every keyspace, in snapshot order.
    pub const ALL: [KeyspaceId; 3] = [KeyspaceId::Kv, KeyspaceId::Lease, KeyspaceId::Meta];

    fn name(self) -> &'static str {
        match self {
            KeyspaceId::Kv => "kv",
            KeyspaceId::Lease => "lease",
            KeyspaceId::Meta => "meta",
        }
    }

    pub fn to_byte(self) -> u8 {
        self as u8
    }

    pub fn from_byte(byte: u8) -> Option<Self> {
        KeyspaceId::ALL.into_iter().find(|id| id.to_byte() == byte)
    }
}

/// One open generation: a fjall database and its keyspaces.
///
/// Dropping it closes the database (fjall joins its background threads when
/// the last handle goes), which the install path relies on before fsyncing
/// the directory tree.
struct Engine {
    path: PathBuf,
    db: Database,
    kv: Keyspace,
    lease: Keyspace,
    meta: Keyspace,
}

/// Rewrites every table of a database into one sorted run per keyspace,
/// dropping what removals and overwrites left behind (fjall's major
/// compaction): after an MVCC compaction removed versions, this returns
/// their space at once instead of when fjall's own compactions get to it.
/// Writes go on meanwhile (fjall compacts concurrently with them); a
/// handle to a generation that an install replaced compacts that old
/// generation, harmlessly.
pub struct EngineCompactor {
    db: Database,
    keyspaces: Vec<Keyspace>,
}

impl EngineCompactor {
    /// Blocks until done. Flushes the memtables first, so that what they
    /// hold is compacted too.
    pub fn major_compact(&self) -> Result<()> {
        for keyspace in &self.keyspaces {
            keyspace.rotate_memtable_and_wait()?;
            keyspace.major_compact()?;
        }
        Ok(())
    }

    /// The database's size on disk now.
    pub fn disk_space(&self) -> Result<u64> {
        Ok(self.db.disk_space()?)
    }
}

/// Size at which a keyspace's memtable is sealed and flushed to a table.
/// fjall keeps up to four sealed memtables waiting for their flush besides
/// the active one (it stalls writes beyond that), so this bounds the
/// engine's write buffers to about five times it: with fjall's default of
/// 64 MiB a put-heavy load held ~600 MiB of memtables per member (measured:
/// `crates/raftkv/tests/storage.rs`); 16 MiB bounds them to ~80 MiB at the
/// cost of more, smaller flushes.
const MEMTABLE_BYTES_MAX: u64 = 16 * 1024 * 1024;

impl Engine {
    fn open(path: &Path, cache_bytes: u64) -> Result<Engine> {
        let db = Database::builder(path).cache_size(cache_bytes).open()?;
        let open = |id: KeyspaceId| {
            db.keyspace(id.name(), || {
                KeyspaceCreateOptions::default().max_memtable_size(MEMTABLE_BYTES_MAX)
            })
        };
        Ok(Engine {
            path: path.to_path_buf(),
            kv: open(KeyspaceId::Kv)?,
            lease: open(KeyspaceId::Lease)?,
            meta: open(KeyspaceId::Meta)?,
            db,
        })
    }

    fn keyspace(&self, id: KeyspaceId) -> &Keyspace {
        match id {
            KeyspaceId::Kv => &self.kv,
            KeyspaceId::Lease => &self.lease,
            KeyspaceId::Meta => &self.meta,
        }
    }

    fn read(&self) -> ReadView {
        ReadView {
            snapshot: self.db.snapshot(),
            kv: self.kv.clone(),
            lease: self.lease.clone(),
            meta: self.meta.clone(),
        }
    }

    /// Checks the format marker and returns the applied index. A database
    /// without a format marker must be empty (a generation whose creation
    /// was interrupted); it is initialised when `initialize` is set.
    fn check_format(&self, initialize: bool) -> Result<AppliedIndex> {
        match self.meta.get(meta::KEY_FORMAT)? {
            Some(value) => {
                let found = meta::decode_u32(meta::KEY_FORMAT, &value)?;
                if found != FORMAT_VERSION {
                    return Err(Error::UnsupportedFormat {
                        found,
                        supported: FORMAT_VERSION,
                    });
                }
            }
            None => {
                let empty = KeyspaceId::ALL
                    .iter()
                    .all(|&id| self.keyspace(id).first_key_value().is_none());
                if !initialize || !empty {
                    return Err(Error::Corrupt {
                        path: self.path.clone(),
                        detail: "database has no format marker".into(),
                    });
                }
                let mut batch = self.db.batch();
                batch.insert(
                    &self.meta,
                    meta::KEY_FORMAT,
                    meta::encode_u32(FORMAT_VERSION),
                );
                batch.insert(
                    &self.meta,
                    meta::KEY_APPLIED,
                    meta::encode_applied(AppliedIndex::default()),
                );
                batch.commit()?;
                self.db.persist(PersistMode::SyncAll)?;
            }
        }
        self.read().applied()
    }
}

/// The storage of one member's state machine.
///
/// Reads and batches take `&self` (share it behind an `Arc`); installing a
/// snapshot takes `&mut self`, because it replaces the database under every
/// reader.
pub struct Backend {
    root: PathBuf,
    /// Held for the backend's lifetime; see [`dir::lock_root`].
    _lock: dir::RootLock,
    /// The generation CURRENT names and `engine` has open.
    generation: u64,
    /// Generation numbers for installers; above every directory seen.
    next_generation: AtomicU64,
    engine: Engine,
    /// fjall's block cache of every database this backend opens (the live
    /// one, and each installer's).
    cache_bytes: u64,
    /// The applied index of the last committed batch. The mutex is held
    /// across a commit, so checking that the index grows and committing
    /// are one step even if two threads commit (the apply loop is one
    /// thread, so it is never contended there).
    applied: Mutex<AppliedIndex>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("root", &self.root)
            .field("generation", &self.generation)
            .field("applied", &self.applied())
            .finish_non_exhaustive()
    }
}

impl Backend {
    /// Opens the backend under `root`, creating an empty one if there is
    /// none, and removes what an interrupted snapshot install left behind.
    /// fjall's block cache gets [`DEFAULT_CACHE_BYTES`].
    pub fn open(root: impl AsRef<Path>) -> Result<Backend> {
        Backend::open_with_cache_bytes(root, DEFAULT_CACHE_BYTES)
    }

    /// [`Backend::open`] with a block cache of `cache_bytes` (fjall's
    /// `cache_size`: decompressed data and index blocks of its tables).
    pub fn open_with_cache_bytes(root: impl AsRef<Path>, cache_bytes: u64) -> Result<Backend> {
        let root = root.as_ref().to_path_buf();
        std::fs::create_dir_all(&root).map_err(Error::io("create directory", &root))?;
        let lock = dir::lock_root(&root)?;
        let generation = match dir::read_current(&root)? {
            Some(generation) => generation,
            None => create_first_generation(&root, cache_bytes)?,
        };
        dir::remove_leftovers(&root, generation)?;
        let path = root.join(dir::generation_dir_name(generation));
        // fjall would create an empty database in a missing directory:
        // never let a lost directory read as an empty state.
        if !path.is_dir() {
            return Err(Error::Corrupt {
                path,
                detail: "CURRENT names this database directory, which does not exist".into(),
            });
        }
        let engine = Engine::open(&path, cache_bytes)?;
        let applied = engine.check_format(false)?;
        tracing::info!(root = %root.display(), generation, applied.index, applied.term, "backend open");
        Ok(Backend {
            root,
            _lock: lock,
            generation,
            next_generation: AtomicU64::new(generation + 1),
            engine,
            cache_bytes,
            applied: Mutex::new(applied),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of the live database.
    pub fn db_path(&self) -> &Path {
        &self.engine.path
    }

    fn lock_applied(&self) -> MutexGuard<'_, AppliedIndex> {
        // Poisoning means a panic while the lock was held; the guarded value
        // is only ever replaced after a successful commit, so it is still
        // what the data reflects.
        self.applied
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The index and term of the last entry whose effects the data reflects.
    pub fn applied(&self) -> AppliedIndex {
        *self.lock_applied()
    }

    /// A consistent, point-in-time view of every keyspace.
    pub fn read(&self) -> ReadView {
        self.engine.read()
    }

    /// Makes every committed batch durable (fsync of fjall's journal).
    /// Call it before the Raft log may be compacted up to the applied index.
    pub fn persist(&self) -> Result<()> {
        self.engine.db.persist(PersistMode::SyncAll)?;
        Ok(())
    }

    /// A handle that compacts the live database's tables fully (see
    /// [`EngineCompactor`]); it needs no lock on the backend.
    pub fn compactor(&self) -> EngineCompactor {
        EngineCompactor {
            db: self.engine.db.clone(),
            keyspaces: vec![
                self.engine.kv.clone(),
                self.engine.lease.clone(),
                self.engine.meta.clone(),
            ],
        }
    }

    /// What the live database's tables occupy on disk: the data flushed
    /// from memtables, without the journal.
    pub fn table_space(&self) -> u64 {
        self.engine.kv.disk_space() + self.engine.lease.disk_space() + self.engine.meta.disk_space()
    }

    /// What the live database occupies on disk: its tables and journals
    /// (fjall's `disk_space`).
    pub fn disk_space(&self) -> Result<u64> {
        Ok(self.engine.db.disk_space()?)
    }

    /// The engine value stored under an encoded version key, committed
    /// batches only (the MVCC store looks in its pending batch first).
    pub(crate) fn kv_get_encoded(&self, encoded_key: &[u8]) -> Result<Option<fjall::Slice>> {
        Ok(self.engine.kv.get(encoded_key)?)
    }

    pub fn conf_state(&self) -> Result<ConfState> {
        self.read().conf_state()
    }

    pub fn members(&self) -> Result<BTreeMap<NodeId, Vec<u8>>> {
        self.read().members()
    }

    pub fn compacted_revision(&self) -> Result<i64> {
        self.read().compacted_revision()
    }

    pub fn current_revision(&self) -> Result<i64> {
        self.read().current_revision()
    }

    /// Starts streaming a snapshot of the current state (see
    /// [`SnapshotStream`]); writes continue to be accepted meanwhile.
    pub fn snapshot(&self) -> Result<SnapshotStream> {
        SnapshotStream::new(self.read(), CHUNK_BYTES_TARGET)
    }

    /// Like [`Backend::snapshot`], with chunks of about `chunk_bytes_target`
    /// bytes (tests use small chunks to get many).
    pub fn snapshot_with_chunk_bytes(&self, chunk_bytes_target: usize) -> Result<SnapshotStream> {
        SnapshotStream::new(self.read(), chunk_bytes_target.max(1))
    }

    /// Prepares a fresh generation directory to receive a snapshot stream.
    /// Dropping the installer without installing it removes the directory.
    pub fn snapshot_installer(&self) -> Result<SnapshotInstaller> {
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        SnapshotInstaller::create(
            self.root.join(dir::generation_dir_name(generation)),
            generation,
            self.cache_bytes,
        )
    }

    /// Receives a whole chunk stream and installs it. On any error the old
    /// state stays live and the partial new one is removed.
    pub fn install_snapshot<I>(&mut self, chunks: I) -> Result<SnapshotMetadata>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let mut installer = self.snapshot_installer()?;
        for chunk in chunks {
            installer.push(chunk.as_ref())?;
        }
        self.install(installer)
    }

    /// Makes a completely received snapshot the live state.
    pub fn install(&mut self, installer: SnapshotInstaller) -> Result<SnapshotMetadata> {
        self.install_observed(installer, &mut |_| {})
    }

    /// [`Backend::install`], reporting each step to `observer` as it
    /// completes (for logs, and for crash tests that stop the process at a
    /// chosen step).
    ///
    /// The steps, and what a crash after each leaves:
    /// 1. the new generation is checked against the snapshot's header,
    ///    closed, and every file and directory in it fsynced, then reopened
    ///    to prove it opens ([`InstallStep::DataSynced`]) — old state;
    /// 2. `CURRENT.tmp` names the new generation and is fsynced
    ///    ([`InstallStep::CurrentTempSynced`]) — old state, the temp file is
    ///    removed at open;
    /// 3. `CURRENT.tmp` is renamed over `CURRENT` and the root fsynced
    ///    ([`InstallStep::CurrentSwitched`]) — new state; the old directory
    ///    is removed at open;
    /// 4. the old database is closed and its directory removed
    ///    ([`InstallStep::OldRemoved`]).
    ///
    /// An error before step 3 leaves the old state live and removes the new
    /// directory. Readers holding a [`ReadView`] or [`SnapshotStream`] of the
    /// old state should be dropped first: their reads fail once its files
    /// are gone.
    pub fn install_observed(
        &mut self,
        mut installer: SnapshotInstaller,
        observer: &mut dyn FnMut(InstallStep),
    ) -> Result<SnapshotMetadata> {
        if installer.path().parent() != Some(self.root.as_path()) {
            return Err(Error::ForeignInstaller {
                installer: installer.path().to_path_buf(),
                root: self.root.clone(),
            });
        }
        let (metadata, new_store) = installer.seal()?;
        observer(InstallStep::DataSynced);
        let generation = installer.generation();
        dir::write_current(&self.root, generation, &mut || {
            observer(InstallStep::CurrentTempSynced)
        })?;
        installer.disarm();
        observer(InstallStep::CurrentSwitched);

        let old_generation = std::mem::replace(&mut self.generation, generation);
        let old_store = std::mem::replace(&mut self.engine, new_store);
        *self.lock_applied() = AppliedIndex {
            index: metadata.index,
            term: metadata.term,
        };
        let old_path = old_store.path.clone();
        drop(old_store);
        // Failing to remove the old directory does not undo the install:
        // CURRENT already names the new one, and open removes leftovers.
        if let Err(error) = std::fs::remove_dir_all(&old_path)
            .map_err(Error::io("remove", &old_path))
            .and_then(|()| dir::fsync_dir(&self.root))
        {
            tracing::warn!(%error, "old database generation not removed; it will be at next open");
        }
        tracing::info!(
            generation,
            old_generation,
            index = metadata.index,
            term = metadata.term,
            "snapshot installed"
        );
        observer(InstallStep::OldRemoved);
        Ok(metadata)
    }
}

/// Creates generation 1 of a root that has no CURRENT, and then CURRENT.
///
/// The `INIT` marker, fsynced before the first directory exists and removed
/// after CURRENT is written, tells an interrupted creation (remove its
/// directories and start over) from a root whose CURRENT was lost (refuse:
/// its directories may hold the only copy of the data).
fn create_first_generation(root: &Path, cache_bytes: u64) -> Result<u64> {
    let marker = root.join(dir::INIT_MARKER);
    let existing = dir::generation_dirs(root)?;
    if marker.exists() {
        for (_, path) in &existing {
            tracing::info!(path = %path.display(), "removing database of an interrupted creation");
            std::fs::remove_dir_all(path).map_err(Error::io("remove", path))?;
        }
    } else if !existing.is_empty() {
        return Err(Error::Corrupt {
            path: root.join(dir::CURRENT),
            detail: "missing, but database directories exist".into(),
        });
    }
    dir::create_synced(&marker)?;
    let first = 1;
    let path = root.join(dir::generation_dir_name(first));
    let engine = Engine::open(&path, cache_bytes)?;
    engine.check_format(true)?;
    drop(engine);
    dir::fsync_tree(&path)?;
    dir::write_current(root, first, &mut || {})?;
    std::fs::remove_file(&marker).map_err(Error::io("remove", &marker))?;
    dir::fsync_dir(root)?;
    Ok(first)
}

/// An atomic set of writes, committed with the applied index it brings the
/// data to by [`Backend::commit`].
///
/// The applier sets the applied index on the batch of every entry it
/// applies; a batch without one changes data without moving the applied
/// index, which is only right for writes that no log entry describes.
///
/// A batch is a plain value, independent of the backend until committed:
/// the MVCC store keeps one open across many applied entries, reads its own
/// writes back from it ([`WriteBatch::get_version`]) and takes back the
/// writes of a transaction it undoes ([`WriteBatch::discard_version`]).
///
/// Writes to the same key within one batch: the last one wins (the batch
/// keeps one write per key, which also keeps fjall from seeing two items
/// with one key and one sequence number).
#[derive(Debug, Default)]
#[must_use = "a batch does nothing until committed"]
pub struct WriteBatch {
    /// Versions: encoded key → encoded [`VersionRecord`], `None` to remove.
    /// A hash map: a put is one insert whatever the batch's size, and the
    /// order of items in a fjall batch does not matter.
    versions: HashMap<Vec<u8>, Option<Vec<u8>>>,
    /// Every other keyspace: engine key → value, `None` to remove.
    others: BTreeMap<(KeyspaceId, Vec<u8>), Option<Vec<u8>>>,
    applied: Option<AppliedIndex>,
}

/// What a batch holds for one version of a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PendingVersion<'a> {
    /// The batch writes this engine value ([`VersionRecord`] encoding).
    Write(&'a [u8]),
    /// The batch removes the version.
    Remove,
}

impl WriteBatch {
    pub fn new() -> Self {
        WriteBatch::default()
    }

    /// Writes version `revision` of `key` with `value`.
    pub fn put(&mut self, key: &[u8], revision: Revision, value: &[u8]) -> Result<()> {
        self.put_parts(key, revision, &[value])
    }

    /// Writes version `revision` of `key` with the concatenation of
    /// `parts` as its value: the value's bytes are copied once, straight
    /// into the engine encoding.
    pub fn put_parts(&mut self, key: &[u8], revision: Revision, parts: &[&[u8]]) -> Result<()> {
        let encoded = encode_key(key, revision)?;
        self.versions.insert(encoded, Some(encode_put_parts(parts)));
        Ok(())
    }

    /// Writes version `revision` of `key` as a deletion.
    pub fn put_tombstone(&mut self, key: &[u8], revision: Revision) -> Result<()> {
        let encoded = encode_key(key, revision)?;
        self.versions
            .insert(encoded, Some(VersionRecord::Tombstone.encode()));
        Ok(())
    }

    /// Physically removes version `revision` of `key` (compaction).
    pub fn remove_version(&mut self, key: &[u8], revision: Revision) -> Result<()> {
        let encoded = encode_key(key, revision)?;
        self.versions.insert(encoded, None);
        Ok(())
    }

    /// What this batch does to version `revision` of `key`, `None` if
    /// nothing.
    pub fn get_version(
        &self,
        key: &[u8],
        revision: Revision,
    ) -> Result<Option<PendingVersion<'_>>> {
        Ok(self.get_encoded_version(&encode_key(key, revision)?))
    }

    pub(crate) fn get_encoded_version(&self, encoded_key: &[u8]) -> Option<PendingVersion<'_>> {
        self.versions.get(encoded_key).map(|write| match write {
            Some(value) => PendingVersion::Write(value),
            None => PendingVersion::Remove,
        })
    }

    /// Takes back whatever this batch does to version `revision` of `key`
    /// (undoing a write that must not happen). Returns whether there was
    /// anything.
    pub fn discard_version(&mut self, key: &[u8], revision: Revision) -> Result<bool> {
        let encoded = encode_key(key, revision)?;
        Ok(self.versions.remove(&encoded).is_some())
    }

    pub fn put_lease(&mut self, id: i64, record: &[u8]) {
        self.others.insert(
            (KeyspaceId::Lease, lease_key(id).to_vec()),
            Some(record.to_vec()),
        );
    }

    pub fn remove_lease(&mut self, id: i64) {
        self.others
            .insert((KeyspaceId::Lease, lease_key(id).to_vec()), None);
    }

    /// The log position this batch brings the data to. Must be above the
    /// current applied index, or the commit fails with
    /// [`Error::AppliedRegression`] and writes nothing.
    pub fn set_applied(&mut self, index: u64, term: u64) {
        self.applied = Some(AppliedIndex { index, term });
    }

    pub fn set_conf_state(&mut self, conf_state: &ConfState) {
        self.put_meta(meta::KEY_CONF_STATE, meta::encode_conf_state(conf_state));
    }

    /// Stores the opaque record of member `id` (the server keeps its name
    /// and URLs there).
    pub fn put_member(&mut self, id: NodeId, record: &[u8]) {
        self.others.insert(
            (KeyspaceId::Meta, meta::member_key(id)),
            Some(record.to_vec()),
        );
    }

    pub fn remove_member(&mut self, id: NodeId) {
        self.others
            .insert((KeyspaceId::Meta, meta::member_key(id)), None);
    }

    pub fn set_compacted_revision(&mut self, revision: i64) {
        self.put_meta(meta::KEY_COMPACTED_REVISION, meta::encode_i64(revision));
    }

    pub fn set_current_revision(&mut self, revision: i64) {
        self.put_meta(meta::KEY_CURRENT_REVISION, meta::encode_i64(revision));
    }

    fn put_meta(&mut self, key: &[u8], value: Vec<u8>) {
        self.others
            .insert((KeyspaceId::Meta, key.to_vec()), Some(value));
    }

    /// Number of distinct keys written (the applied index not counted).
    pub fn len(&self) -> usize {
        self.versions.len() + self.others.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0 && self.applied.is_none()
    }
}

impl Backend {
    /// Starts an atomic batch; nothing is visible until
    /// [`Backend::commit`].
    pub fn write_batch(&self) -> WriteBatch {
        WriteBatch::new()
    }

    /// Commits every write of `batch` and its applied index atomically, as
    /// one fjall batch (one journal record). See the module documentation
    /// for durability: flushed to the OS, not fsynced.
    pub fn commit(&self, batch: WriteBatch) -> Result<()> {
        let engine = &self.engine;
        let mut applied = self.lock_applied();
        if let Some(new) = batch.applied {
            if new.index <= applied.index {
                return Err(Error::AppliedRegression {
                    applied: applied.index,
                    attempted: new.index,
                });
            }
        }
        let mut fjall_batch =
            fjall::OwnedWriteBatch::with_capacity(engine.db.clone(), batch.len() + 1)
                .durability(Some(PersistMode::Buffer));
        for (key, value) in batch.versions {
            match value {
                Some(value) => fjall_batch.insert(&engine.kv, key, value),
                None => fjall_batch.remove(&engine.kv, key),
            }
        }
        for ((keyspace, key), value) in batch.others {
            let keyspace = engine.keyspace(keyspace);
            match value {
                Some(value) => fjall_batch.insert(keyspace, key, value),
                None => fjall_batch.remove(keyspace, key),
            }
        }
        if let Some(new) = batch.applied {
            fjall_batch.insert(&engine.meta, meta::KEY_APPLIED, meta::encode_applied(new));
        }
        fjall_batch.commit()?;
        if let Some(new) = batch.applied {
            *applied = new;
        }
        Ok(())
    }
}

/// Lease ids sort by value (sign bit flipped, big-endian).
fn lease_key(id: i64) -> [u8; 8] {
    ((id as u64) ^ (1 << 63)).to_be_bytes()
}

fn lease_id(key: &[u8]) -> Result<i64> {
    let bytes: [u8; 8] = key
        .try_into()
        .map_err(|_| Error::KeyDecode("lease key is not 8 bytes"))?;
    Ok((u64::from_be_bytes(bytes) ^ (1 << 63)) as i64)
}

/// A consistent point-in-time view of the whole backend (a fjall snapshot
/// across keyspaces): every read through one view sees the same batches.
///
/// Holding a view keeps fjall from dropping the versions it can see, and
/// keeps the database open (reopening the same root fails with fjall's
/// `Locked` until every view of a closed backend is dropped), so keep
/// views short-lived.
#[derive(Clone)]
pub struct ReadView {
    snapshot: fjall::Snapshot,
    kv: Keyspace,
    lease: Keyspace,
    meta: Keyspace,
}

impl ReadView {
    fn keyspace(&self, id: KeyspaceId) -> &Keyspace {
        match id {
            KeyspaceId::Kv => &self.kv,
            KeyspaceId::Lease => &self.lease,
            KeyspaceId::Meta => &self.meta,
        }
    }

    fn meta_value(&self, key: &[u8]) -> Result<Option<fjall::Slice>> {
        Ok(self.snapshot.get(&self.meta, key)?)
    }

    pub fn applied(&self) -> Result<AppliedIndex> {
        self.meta_value(meta::KEY_APPLIED)?
            .map_or(Ok(AppliedIndex::default()), |value| {
                meta::decode_applied(&value)
            })
    }

    pub fn conf_state(&self) -> Result<ConfState> {
        self.meta_value(meta::KEY_CONF_STATE)?
            .map_or(Ok(ConfState::default()), |value| {
                meta::decode_conf_state(&value)
            })
    }

    pub fn compacted_revision(&self) -> Result<i64> {
        self.meta_value(meta::KEY_COMPACTED_REVISION)?
            .map_or(Ok(0), |value| {
                meta::decode_i64(meta::KEY_COMPACTED_REVISION, &value)
            })
    }

    pub fn current_revision(&self) -> Result<i64> {
        self.meta_value(meta::KEY_CURRENT_REVISION)?
            .map_or(Ok(0), |value| {
                meta::decode_i64(meta::KEY_CURRENT_REVISION, &value)
            })
    }

    pub fn members(&self) -> Result<BTreeMap<NodeId, Vec<u8>>> {
        let mut members = BTreeMap::new();
        for guard in self.snapshot.prefix(&self.meta, meta::MEMBER_PREFIX) {
            let (key, value) = guard.into_inner()?;
            members.insert(meta::decode_member_key(&key)?, value.to_vec());
        }
        Ok(members)
    }

    /// Raft's view of this state: the applied position and membership.
    pub fn snapshot_metadata(&self) -> Result<SnapshotMetadata> {
        let applied = self.applied()?;
        Ok(SnapshotMetadata {
            index: applied.index,
            term: applied.term,
            conf_state: self.conf_state()?,
        })
    }

    pub fn lease(&self, id: i64) -> Result<Option<Vec<u8>>> {
        Ok(self
            .snapshot
            .get(&self.lease, lease_key(id))?
            .map(|value| value.to_vec()))
    }

    /// Every lease, by id.
    pub fn leases(&self) -> impl Iterator<Item = Result<(i64, Vec<u8>)>> + use<> {
        self.snapshot.iter(&self.lease).map(|guard| {
            let (key, value) = guard.into_inner()?;
            Ok((lease_id(&key)?, value.to_vec()))
        })
    }

    /// Exactly version `revision` of `key`.
    pub fn get(&self, key: &[u8], revision: Revision) -> Result<Option<VersionRecord>> {
        let encoded = encode_key(key, revision)?;
        match self.snapshot.get(&self.kv, encoded)? {
            Some(value) => Ok(Some(VersionRecord::decode(&value)?)),
            None => Ok(None),
        }
    }

    /// The latest version of `key` at main revision `≤ at`, tombstone
    /// included.
    pub fn latest(&self, key: &[u8], at: i64) -> Result<Option<Version>> {
        let (lower, _) = versions_of(key);
        let upper = Bound::Included(encode_key(key, Revision::last_of(at))?);
        match self.snapshot.range(&self.kv, (lower, upper)).next_back() {
            Some(guard) => {
                let (key, value) = guard.into_inner()?;
                Ok(Some(Version::decode(&key, &value)?))
            }
            None => Ok(None),
        }
    }

    /// For each key in `range` that has a version at main revision `≤ at`,
    /// its latest such version (tombstones included: a key whose latest
    /// version is a tombstone did not exist at `at`), in key order.
    ///
    /// Seek-based: per key returned it positions two iterators (one to find
    /// the key, one backwards from `(key, at)`), so the cost does not grow
    /// with the number of versions a key has. Lazy: `take(n)` reads about
    /// `n` keys.
    pub fn latest_at(&self, range: &KeyRange, at: i64) -> LatestVersions {
        let (lower, upper) = range.encoded_bounds();
        LatestVersions {
            snapshot: self.snapshot.clone(),
            kv: self.kv.clone(),
            next_lower: (!range.is_empty()).then_some(lower),
            upper,
            at: Revision::last_of(at),
        }
    }

    /// [`ReadView::latest_at`] without the keys that were deleted at `at`.
    pub fn live_at(
        &self,
        range: &KeyRange,
        at: i64,
    ) -> impl Iterator<Item = Result<Version>> + use<> {
        self.latest_at(range, at)
            .filter(|version| !matches!(version, Ok(version) if version.is_tombstone()))
    }

    /// Every version of every key in `range`, in `(key, revision)` order.
    pub fn versions(&self, range: &KeyRange) -> impl Iterator<Item = Result<Version>> + use<> {
        let iter = if range.is_empty() {
            None
        } else {
            Some(self.snapshot.range(&self.kv, range.encoded_bounds()))
        };
        iter.into_iter().flatten().map(|guard| {
            let (key, value) = guard.into_inner()?;
            Version::decode(&key, &value)
        })
    }

    /// The raw engine entries of one keyspace, in key order (snapshots,
    /// consistency checks, tests).
    pub fn raw_entries(
        &self,
        keyspace: KeyspaceId,
    ) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>)>> + Send + use<> {
        self.snapshot.iter(self.keyspace(keyspace)).map(|guard| {
            let (key, value) = guard.into_inner()?;
            Ok((key.to_vec(), value.to_vec()))
        })
    }

    pub(crate) fn raw_iter(&self, keyspace: KeyspaceId) -> fjall::Iter {
        self.snapshot.iter(self.keyspace(keyspace))
    }
}

/// Iterator of [`ReadView::latest_at`].
pub struct LatestVersions {
    snapshot: fjall::Snapshot,
    kv: Keyspace,
    /// Where the next key's versions start; `None` when done.
    next_lower: Option<Bound<Vec<u8>>>,
    upper: Bound<Vec<u8>>,
    at: Revision,
}

impl LatestVersions {
    fn step(&mut self, lower: Bound<Vec<u8>>) -> Result<Option<Version>> {
        let mut lower = lower;
        loop {
            // Seek to the first version of the next key in range.
            let Some(guard) = self
                .snapshot
                .range(&self.kv, (lower, self.upper.clone()))
                .next()
            else {
                return Ok(None);
            };
            let (user_key, oldest) = decode_key(&guard.key()?)?;
            lower = Bound::Included(versions_upper_bound(&user_key));
            if oldest > self.at {
                // Every version of this key is newer than `at`.
                continue;
            }
            // Seek backwards from (key, at) to the latest version ≤ at.
            let upper = Bound::Included(encode_key(&user_key, self.at)?);
            let found = self
                .snapshot
                .range(
                    &self.kv,
                    (Bound::Included(versions_lower_bound(&user_key)), upper),
                )
                .next_back();
            self.next_lower = Some(lower);
            return match found {
                Some(guard) => {
                    let (key, value) = guard.into_inner()?;
                    Ok(Some(Version::decode(&key, &value)?))
                }
                // The forward seek saw a version ≤ at in the same snapshot.
                None => Err(Error::Corrupt {
                    path: self.kv.path().to_path_buf(),
                    detail: "version seen forwards is missing backwards".into(),
                }),
            };
        }
    }
}

impl Iterator for LatestVersions {
    type Item = Result<Version>;

    fn next(&mut self) -> Option<Self::Item> {
        let lower = self.next_lower.take()?;
        // On error `next_lower` stays `None`, ending the iteration.
        self.step(lower).transpose()
    }
}
