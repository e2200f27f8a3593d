//! The MVCC store: etcd's key-value semantics over revisions, kept in the
//! fjall backend.
//!
//! Every write request that changes something raises the store's revision by
//! exactly one; all changes of one transaction share it (ordered by a sub
//! revision). Reads name a revision (or the current one) and see the store
//! exactly as of then, unless compaction has dropped that history.
//!
//! Application is deterministic: the same requests applied in the same order
//! give the same store and the same responses on every member. Requests are
//! validated twice: statelessly before they enter the log
//! ([`validate_request`]), and against the store
//! when applied, where a refusal is part of the replicated outcome
//! ([`ApplyError`]).
//!
//! # Where things live
//!
//! Values and history live in the engine, one version per engine key (see
//! [`crate::keys`] and `record.rs`). In memory: the [`KeyIndex`]
//! (keys and the revisions of their retained versions, no values), the
//! revision counters, and the *pending batch*: the writes of the entries
//! applied since the last [`Store::commit`]. Every read looks in the pending
//! batch first, then in the engine, so applies see the writes of earlier
//! entries of the same batch (and a transaction its own).
//!
//! # Cost of a plain put (no `prev_kv`, no `ignore_*`)
//!
//! One hash lookup in the index (the same lookup reads the previous version
//! and records the new one), no engine read, two allocations (the engine
//! key, and the engine value into which the value is copied once), one hash
//! insert into the pending batch. At commit, fjall copies each item once
//! into its journal buffer and once into its memtable; one `write` system
//! call per commit, no fsync.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use proto::etcdserverpb::{
    compare, range_request, request_op, response_op, CompactionRequest, CompactionResponse,
    Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest,
    RangeResponse, RequestOp, ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use proto::internal::{
    internal_request, internal_response, ApplyError as WireApplyError, InternalRequest,
    InternalResponse,
};
use proto::mvccpb::KeyValue;
use raft::{ConfState, SnapshotMetadata};

use crate::backend::{
    AppliedIndex, Backend, EngineCompactor, KeyspaceId, PendingVersion, SnapshotInstaller,
    SnapshotStream, WriteBatch, DEFAULT_CACHE_BYTES,
};
use crate::error::Error;
use crate::index::{KeyHistory, KeyIndex, RestoredVersion, VersionInfo};
use crate::keys::{decode_key, decode_value, encode_key, Revision};
use crate::record::{self, PutRecord};
// The refusals and checks, where the server also finds them.
pub use crate::validate::*;

/// How the store opens its engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreOptions {
    /// fjall's block cache: decompressed data and index blocks of its
    /// tables, shared by every keyspace.
    ///
    /// Default [`DEFAULT_CACHE_BYTES`] (64 MiB): the key index is in memory
    /// already, so the cache serves value reads only, and the newest
    /// versions (what reads mostly ask for) are in fjall's memtables until
    /// flushed. 64 MiB holds the whole of most etcd data sets (etcd's
    /// default quota is 2 GiB, typical databases are far smaller), costs
    /// little on a small member, and the operating system's page cache
    /// still holds the table files beyond it. fjall's own default is
    /// 32 MiB; it recommends 20–25% of memory for large data sets.
    pub cache_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_bytes: DEFAULT_CACHE_BYTES,
        }
    }
}

/// Why a read failed: etcd refused it, or the engine failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Refused(#[from] ApplyError),
    #[error(transparent)]
    Engine(#[from] Error),
}

impl ReadError {
    /// The refusal, if it was one.
    pub fn refusal(&self) -> Option<&ApplyError> {
        match self {
            ReadError::Refused(refusal) => Some(refusal),
            ReadError::Engine(_) => None,
        }
    }
}

/// The state machine's key-value store. Revisions start at 1 on a fresh
/// store.
///
/// Lifecycle: [`Store::open`] rebuilds the index from the engine; the
/// applier then calls [`Store::apply`] (and the membership setters) for each
/// entry and [`Store::commit`] after a batch of them. An engine failure
/// (an `Err` from `apply`, `commit` or `install`) leaves the store failed:
/// it refuses every later apply, commit and install, and must be dropped
/// and reopened (the member stops and recovers from its log).
pub struct Store {
    backend: Backend,
    /// Every key's retained versions; includes the pending batch's changes.
    index: KeyIndex,
    /// Writes of the entries applied since the last commit.
    pending: WriteBatch,
    /// Includes the pending batch's changes; committed with it.
    current_revision: i64,
    compacted_revision: i64,
    /// Bytes of keys and values of retained put versions (one key length
    /// per version). Deletions count nothing.
    stored_bytes: u64,
    /// The engine's size on disk as of the last commit (or open, install,
    /// refresh): asked of fjall once per commit, not per request, since the
    /// quota check reads it for every write.
    disk_bytes: AtomicU64,
    /// The part of it in tables (without the journal), as of the same time.
    table_bytes: AtomicU64,
    /// Set by an engine failure that may have left the index, the counters
    /// and the pending batch out of step; see the type's documentation.
    failed: bool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .field("keys", &self.index.key_count())
            .field("pending_writes", &self.pending.len())
            .field("current_revision", &self.current_revision)
            .field("compacted_revision", &self.compacted_revision)
            .field("stored_bytes", &self.stored_bytes)
            .field("failed", &self.failed)
            .finish()
    }
}

/// The engine's size on disk; 0, logged, if fjall cannot tell.
fn engine_disk_bytes(backend: &Backend) -> u64 {
    backend.disk_space().unwrap_or_else(|error| {
        tracing::warn!(%error, "engine disk space unknown");
        0
    })
}

/// What the engine holds, rebuilt in memory by [`rebuild`].
struct Rebuilt {
    index: KeyIndex,
    current_revision: i64,
    compacted_revision: i64,
    stored_bytes: u64,
}

enum RangeEnd<'a> {
    Single,
    Unbounded,
    Before(&'a [u8]),
}

/// etcd's range end: empty for just the key, `\0` for every key from it on.
fn range_end(end: &[u8]) -> RangeEnd<'_> {
    if end.is_empty() {
        RangeEnd::Single
    } else if end == [0] {
        RangeEnd::Unbounded
    } else {
        RangeEnd::Before(end)
    }
}

/// Changes made by one write request, collected as it runs.
///
/// Every change of one write carries the revision `main`, which no earlier
/// change has: undoing the write is removing what carries `main`, from the
/// keys it touched and from the pending batch ([`Store::roll_back`]).
struct WriteContext {
    main: i64,
    next_sub: i64,
    /// Versions written so far, kept only for writes that can still fail
    /// after changing something (transactions); a single put or delete
    /// checks everything first.
    touched: Option<Vec<(Bytes, Revision)>>,
    stored_bytes_before: u64,
}

impl WriteContext {
    fn next(&mut self) -> Revision {
        let revision = Revision::new(self.main, self.next_sub);
        self.next_sub += 1;
        revision
    }

    fn changed(&self) -> bool {
        self.next_sub > 0
    }

    fn record_touched(&mut self, key: &Bytes, revision: Revision) {
        if let Some(touched) = &mut self.touched {
            touched.push((key.clone(), revision));
        }
    }
}

/// Where values are read from: the pending batch first, then the engine.
/// Borrows only those two, so a put can read while it holds the index.
#[derive(Clone, Copy)]
struct Values<'a> {
    backend: &'a Backend,
    pending: &'a WriteBatch,
}

impl Values<'_> {
    /// Runs `read` on the record of put version `revision` of `key`: one
    /// lookup in the pending batch, at most one engine point get.
    fn with_put<T>(
        &self,
        key: &[u8],
        revision: Revision,
        read: impl FnOnce(PutRecord<'_>) -> T,
    ) -> Result<T, Error> {
        let encoded = encode_key(key, revision)?;
        let from_engine;
        let stored: &[u8] = match self.pending.get_encoded_version(&encoded) {
            Some(PendingVersion::Write(value)) => value,
            Some(PendingVersion::Remove) => {
                return Err(self.corrupt(key, revision, "read after its removal"))
            }
            None => match self.backend.kv_get_encoded(&encoded)? {
                Some(value) => {
                    from_engine = value;
                    &from_engine
                }
                None => {
                    return Err(self.corrupt(
                        key,
                        revision,
                        "the index holds this version, the engine does not",
                    ))
                }
            },
        };
        let payload = decode_value(stored)
            .map_err(|error| self.corrupt(key, revision, &error.to_string()))?
            .ok_or_else(|| {
                self.corrupt(
                    key,
                    revision,
                    "the index holds a put, the engine a deletion",
                )
            })?;
        let record =
            PutRecord::decode(payload).map_err(|detail| self.corrupt(key, revision, detail))?;
        Ok(read(record))
    }

    fn value_and_lease(&self, key: &[u8], revision: Revision) -> Result<(Bytes, i64), Error> {
        self.with_put(key, revision, |record| {
            (Bytes::copy_from_slice(record.value), record.lease)
        })
    }

    fn key_value(
        &self,
        key: &Bytes,
        info: VersionInfo,
        keys_only: bool,
    ) -> Result<KeyValue, Error> {
        // The lease is in the record: even a keys-only read reads it.
        let (value, lease) = self.value_and_lease(key, info.modified)?;
        Ok(KeyValue {
            key: key.clone(),
            create_revision: info.created.main,
            mod_revision: info.modified.main,
            version: info.version,
            value: if keys_only { Bytes::new() } else { value },
            lease,
        })
    }

    fn corrupt(&self, key: &[u8], revision: Revision, detail: &str) -> Error {
        version_corrupt(self.backend, key, revision, detail)
    }
}

fn version_corrupt(backend: &Backend, key: &[u8], revision: Revision, detail: &str) -> Error {
    Error::Corrupt {
        path: backend.db_path().to_path_buf(),
        detail: format!(
            "version ({}, {}) of key \"{}\": {detail}",
            revision.main,
            revision.sub,
            key.escape_ascii()
        ),
    }
}

/// Rebuilds the index, the revisions and the stored-bytes counter from the
/// backend's committed state. Every version is checked against the history
/// before it (see [`KeyHistory::restore`]); anything inconsistent is an
/// [`Error::Corrupt`] naming the database directory.
fn rebuild(backend: &Backend) -> Result<Rebuilt, Error> {
    let path = backend.db_path();
    let corrupt = |detail: String| Error::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    let view = backend.read();
    let mut index = KeyIndex::default();
    let mut stored_bytes = 0u64;
    let mut newest_main = 0i64;
    let mut building: Option<(Bytes, KeyHistory)> = None;
    for item in view.raw_iter(KeyspaceId::Kv) {
        let (engine_key, engine_value) = item.into_inner()?;
        let (user_key, revision) = decode_key(&engine_key)
            .map_err(|error| corrupt(format!("engine key {engine_key:?}: {error}")))?;
        let damaged = |detail: &str| version_corrupt(backend, &user_key, revision, detail);
        let restored =
            match decode_value(&engine_value).map_err(|error| damaged(&error.to_string()))? {
                None => RestoredVersion::Tombstone,
                Some(payload) => {
                    let record = PutRecord::decode(payload).map_err(damaged)?;
                    stored_bytes += (user_key.len() + record.value.len()) as u64;
                    RestoredVersion::Put {
                        created: record.created,
                        version: record.version,
                    }
                }
            };
        if revision.main < 1 || revision.sub < 0 {
            return Err(damaged("revision out of range"));
        }
        newest_main = newest_main.max(revision.main);
        match &mut building {
            Some((key, history)) if key[..] == user_key[..] => {
                history
                    .restore(revision, restored)
                    .map_err(|e| damaged(&e))?;
            }
            _ => {
                if let Some((key, history)) = building.take() {
                    index.insert_history(key, history);
                }
                let mut history = KeyHistory::default();
                history
                    .restore(revision, restored)
                    .map_err(|e| damaged(&e))?;
                building = Some((Bytes::from(user_key), history));
            }
        }
    }
    if let Some((key, history)) = building {
        index.insert_history(key, history);
    }
    // A fresh engine has no revision recorded: revision 1, the empty store.
    let current_revision = view.current_revision()?.max(1);
    let compacted_revision = view.compacted_revision()?;
    if newest_main > current_revision {
        return Err(corrupt(format!(
            "a version at revision {newest_main}, after the current revision {current_revision}"
        )));
    }
    if !(0..=current_revision).contains(&compacted_revision) {
        return Err(corrupt(format!(
            "compacted revision {compacted_revision} outside 0..={current_revision}"
        )));
    }
    Ok(Rebuilt {
        index,
        current_revision,
        compacted_revision,
        stored_bytes,
    })
}

impl Store {
    /// Opens (or creates) the store under `root` and rebuilds its index
    /// from the engine: O(retained versions) engine reads, once.
    ///
    /// Damaged data is an [`Error::Corrupt`] naming the database directory,
    /// never a panic.
    pub fn open(root: &Path, options: &StoreOptions) -> Result<Store, Error> {
        let backend = Backend::open_with_cache_bytes(root, options.cache_bytes)?;
        let rebuilt = rebuild(&backend)?;
        tracing::info!(
            root = %root.display(),
            keys = rebuilt.index.key_count(),
            current_revision = rebuilt.current_revision,
            compacted_revision = rebuilt.compacted_revision,
            "store open"
        );
        let disk_bytes = engine_disk_bytes(&backend);
        let table_bytes = backend.table_space();
        Ok(Store {
            backend,
            index: rebuilt.index,
            pending: WriteBatch::new(),
            current_revision: rebuilt.current_revision,
            compacted_revision: rebuilt.compacted_revision,
            stored_bytes: rebuilt.stored_bytes,
            disk_bytes: AtomicU64::new(disk_bytes),
            table_bytes: AtomicU64::new(table_bytes),
            failed: false,
        })
    }

    /// The backend under the store (read views, paths). Writing to it
    /// directly bypasses the index: only tests of damaged data should.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The last entry whose effects the engine's committed data reflects.
    pub fn applied(&self) -> AppliedIndex {
        self.backend.applied()
    }

    pub fn current_revision(&self) -> i64 {
        self.current_revision
    }

    pub fn compacted_revision(&self) -> i64 {
        self.compacted_revision
    }

    pub fn key_count(&self) -> usize {
        self.index.key_count()
    }

    /// Logical bytes of the retained versions: key and value of every put
    /// version not compacted away (etcd's `dbSizeInUse` analogue).
    pub fn stored_bytes(&self) -> u64 {
        self.stored_bytes
    }

    /// What the engine occupies on disk (etcd's `dbSize`: its tables and
    /// journal), as of the last commit or [`Store::refresh_disk_bytes`].
    pub fn disk_bytes(&self) -> u64 {
        self.disk_bytes.load(Ordering::Relaxed)
    }

    /// What `--quota-backend-bytes` is checked against: the engine's data
    /// on disk, that is its tables, or the bytes of the versions it keeps
    /// when that is more (writes not yet flushed from fjall's memtables to
    /// tables). Not its journal: a bounded write-ahead buffer (fjall
    /// preallocates it in 64 MiB files and deletes them once flushed) that
    /// no compaction of history frees. A compaction of history lowers the
    /// versions' bytes at once; the tables shrink once fjall compacts them,
    /// or at once by `Defragment` ([`EngineCompactor`]): etcd's way out of
    /// a full quota (compact, defragment) works here too.
    pub fn quota_bytes(&self) -> u64 {
        self.table_bytes
            .load(Ordering::Relaxed)
            .max(self.stored_bytes)
    }

    /// Asks the engine its size on disk again (after its files changed
    /// without a commit: a major compaction).
    pub fn refresh_disk_bytes(&self) {
        self.disk_bytes
            .store(engine_disk_bytes(&self.backend), Ordering::Relaxed);
        self.table_bytes
            .store(self.backend.table_space(), Ordering::Relaxed);
    }

    /// A handle that compacts the engine's files fully, without holding
    /// the store (see [`EngineCompactor`]).
    pub fn compactor(&self) -> EngineCompactor {
        self.backend.compactor()
    }

    /// Writes waiting for the next commit (a bound for the applier's
    /// batches, and a check that a refused request left none).
    pub fn pending_write_count(&self) -> usize {
        self.pending.len()
    }

    fn values(&self) -> Values<'_> {
        Values {
            backend: &self.backend,
            pending: &self.pending,
        }
    }

    fn check_not_failed(&self) -> Result<(), Error> {
        if self.failed {
            return Err(Error::StoreFailed);
        }
        Ok(())
    }

    /// Stores the record of member `id` in the pending batch.
    pub fn put_member(&mut self, id: u64, record: &[u8]) {
        self.pending.put_member(id, record);
    }

    pub fn remove_member(&mut self, id: u64) {
        self.pending.remove_member(id);
    }

    /// The committed member records.
    pub fn members(&self) -> Result<BTreeMap<u64, Vec<u8>>, Error> {
        self.backend.members()
    }

    pub fn set_conf_state(&mut self, conf_state: &ConfState) {
        self.pending.set_conf_state(conf_state);
    }

    /// Commits the pending batch, the revision counters and the applied
    /// index `(index, term)` as one atomic engine batch: after any crash
    /// the engine holds all of it or none. Not fsynced (see
    /// [`crate::backend`]); [`Store::persist`] is.
    pub fn commit(&mut self, index: u64, term: u64) -> Result<(), Error> {
        self.check_not_failed()?;
        let mut batch = std::mem::take(&mut self.pending);
        batch.set_current_revision(self.current_revision);
        batch.set_compacted_revision(self.compacted_revision);
        batch.set_applied(index, term);
        self.backend
            .commit(batch)
            .inspect_err(|_| self.failed = true)?;
        self.refresh_disk_bytes();
        Ok(())
    }

    /// Makes every commit durable (the only fsync of applied data).
    pub fn persist(&self) -> Result<(), Error> {
        self.backend.persist()
    }

    /// Streams the committed state (pending writes are not in it: commit
    /// first) in checksummed chunks, from one consistent engine view.
    pub fn snapshot(&self) -> Result<SnapshotStream, Error> {
        self.backend.snapshot()
    }

    /// An installer for a snapshot stream from another store; every put
    /// version it receives is checked to be a store record.
    pub fn snapshot_installer(&self) -> Result<SnapshotInstaller, Error> {
        Ok(self
            .backend
            .snapshot_installer()?
            .with_put_check(record::check))
    }

    /// Makes a received snapshot the store's state: switches the engine to
    /// it, drops the pending batch (entries the snapshot covers), and
    /// rebuilds the index and counters from it.
    pub fn install(&mut self, installer: SnapshotInstaller) -> Result<SnapshotMetadata, Error> {
        self.check_not_failed()?;
        // An error here leaves the old generation live and the store as it
        // was (see `Backend::install_observed`).
        let metadata = self.backend.install(installer)?;
        // The new generation is live: until the rebuild succeeds, the index
        // describes neither.
        self.failed = true;
        let rebuilt = rebuild(&self.backend)?;
        self.index = rebuilt.index;
        self.pending = WriteBatch::new();
        self.current_revision = rebuilt.current_revision;
        self.compacted_revision = rebuilt.compacted_revision;
        self.stored_bytes = rebuilt.stored_bytes;
        self.refresh_disk_bytes();
        self.failed = false;
        Ok(metadata)
    }

    /// A checksum of the history up to `revision` (0: the current one): every
    /// retained version's key, revision and value, and the compaction
    /// point. Members that applied the same log agree on it; operators
    /// compare it across members (`etcdctl endpoint hashkv`). Returns the
    /// hash and the compacted revision.
    ///
    /// Reads every retained version's value up to `revision` in one scan
    /// of the engine.
    pub fn hash_kv(&self, revision: i64) -> Result<(u32, i64), ReadError> {
        let at = if revision <= 0 {
            self.current_revision
        } else {
            revision
        };
        if at > self.current_revision {
            return Err(ERR_FUTURE_REV.into());
        }
        if revision > 0 && at < self.compacted_revision {
            return Err(ERR_COMPACTED.into());
        }
        // The index walks the versions in (key, revision) order, which is
        // the engine's key order: one forward scan of the engine (sequential
        // reads) finds every committed value, instead of a point get each
        // (which took minutes with 800,000 versions). Values written since
        // the last commit come from the pending batch.
        let view = self.backend.read();
        let mut engine = view.raw_iter(KeyspaceId::Kv);
        let mut engine_at: Option<(fjall::Slice, fjall::Slice)> = None;
        let mut hash = crc32c::crc32c(&self.compacted_revision.to_be_bytes());
        for (key, version, deleted) in self.index.changes_until(at) {
            hash = crc32c::crc32c_append(hash, key);
            hash = crc32c::crc32c_append(hash, &version.main.to_be_bytes());
            hash = crc32c::crc32c_append(hash, &version.sub.to_be_bytes());
            if deleted {
                hash = crc32c::crc32c_append(hash, b"\0deleted");
                continue;
            }
            let encoded = encode_key(key, version)?;
            let stored: &[u8] = match self.pending.get_encoded_version(&encoded) {
                Some(PendingVersion::Write(value)) => value,
                Some(PendingVersion::Remove) => {
                    return Err(self
                        .values()
                        .corrupt(key, version, "read after its removal")
                        .into())
                }
                None => {
                    while engine_at
                        .as_ref()
                        .is_none_or(|(engine_key, _)| engine_key.as_ref() < encoded.as_slice())
                    {
                        match engine.next() {
                            Some(guard) => {
                                engine_at = Some(guard.into_inner().map_err(Error::from)?)
                            }
                            None => {
                                engine_at = None;
                                break;
                            }
                        }
                    }
                    match &engine_at {
                        Some((engine_key, value)) if engine_key.as_ref() == encoded.as_slice() => {
                            value
                        }
                        _ => {
                            return Err(self
                                .values()
                                .corrupt(
                                    key,
                                    version,
                                    "the index holds this version, the engine does not",
                                )
                                .into())
                        }
                    }
                }
            };
            let record = decode_value(stored)
                .map_err(|error| self.values().corrupt(key, version, &error.to_string()))?
                .ok_or_else(|| {
                    self.values().corrupt(
                        key,
                        version,
                        "the index holds a put, the engine a deletion",
                    )
                })
                .and_then(|payload| {
                    PutRecord::decode(payload)
                        .map_err(|detail| self.values().corrupt(key, version, detail))
                })?;
            hash = crc32c::crc32c_append(hash, record.value);
            hash = crc32c::crc32c_append(hash, &record.lease.to_be_bytes());
        }
        Ok((hash, self.compacted_revision))
    }

    /// Applies one committed request into the pending batch. Refusals are
    /// returned inside the response, as they are part of the replicated
    /// outcome, and change nothing. `Err` is an engine failure: the store
    /// is then failed (see [`Store`]).
    pub fn apply(&mut self, request: &InternalRequest) -> Result<InternalResponse, Error> {
        self.check_not_failed()?;
        let response = match &request.request {
            Some(internal_request::Request::Put(put)) => self
                .apply_write(|store, ctx| store.put(put, ctx))
                .map(|(mut response, revision)| {
                    response.header = Some(header(revision));
                    internal_response::Response::Put(response)
                }),
            Some(internal_request::Request::DeleteRange(delete)) => self
                .apply_write(|store, ctx| store.delete_range(delete, ctx))
                .map(|(mut response, revision)| {
                    response.header = Some(header(revision));
                    internal_response::Response::DeleteRange(response)
                }),
            Some(internal_request::Request::Txn(txn)) => self
                .apply_write(|store, ctx| store.txn(txn, ctx))
                .map(|(mut response, revision)| {
                    // The ops' own headers say what each saw (`run_path`).
                    response.header = Some(header(revision));
                    internal_response::Response::Txn(response)
                }),
            Some(internal_request::Request::Compaction(compaction)) => self
                .compact(compaction)
                .map(internal_response::Response::Compaction),
            Some(internal_request::Request::Publish(_)) => Err(ApplyError::new(
                code::INVALID_ARGUMENT,
                "etcdserver: member attributes are not a key-value request",
            )
            .into()),
            Some(internal_request::Request::LeaseGrant(_))
            | Some(internal_request::Request::LeaseRevoke(_)) => Err(ApplyError::new(
                code::FAILED_PRECONDITION,
                "etcdserver: leases are not supported yet",
            )
            .into()),
            None => Err(ERR_EMPTY_REQUEST.into()),
        };
        let response = match response {
            Ok(response) => response,
            Err(ReadError::Refused(error)) => internal_response::Response::Error(WireApplyError {
                grpc_code: error.grpc_code,
                message: error.message.to_string(),
            }),
            Err(ReadError::Engine(error)) => {
                self.failed = true;
                return Err(error);
            }
        };
        Ok(InternalResponse {
            response: Some(response),
        })
    }

    /// Runs a write; the revision moves only if it changed something, and a
    /// refused write changes nothing.
    fn apply_write<T>(
        &mut self,
        write: impl FnOnce(&mut Store, &mut WriteContext) -> Result<T, ReadError>,
    ) -> Result<(T, i64), ReadError> {
        let mut ctx = WriteContext {
            main: self.current_revision + 1,
            next_sub: 0,
            touched: None,
            stored_bytes_before: self.stored_bytes,
        };
        match write(self, &mut ctx) {
            Ok(value) => {
                if ctx.changed() {
                    self.current_revision = ctx.main;
                }
                Ok((value, self.current_revision))
            }
            Err(error) => {
                if ctx.changed() {
                    self.roll_back(ctx, &error)?;
                }
                Err(error)
            }
        }
    }

    /// Undoes a write that failed after changing something: from the index,
    /// and from the pending batch, so that the next commit writes exactly
    /// what it would have without the write. Every write path checks what
    /// can fail before it changes anything, so this runs only when those
    /// checks missed a case (or for a request that skipped
    /// [`validate_request`](crate::validate_request)), or when the engine
    /// failed in the middle of a transaction; then the write is refused as
    /// a whole rather than half applied.
    ///
    /// # Panics
    /// If a write refused by etcd's rules changed something without
    /// recording what it touched: a write path that can fail after a
    /// change must track it. (An engine failure there only fails the
    /// store.)
    fn roll_back(&mut self, ctx: WriteContext, error: &ReadError) -> Result<(), Error> {
        let Some(touched) = ctx.touched else {
            if matches!(error, ReadError::Engine(_)) {
                // Nothing to undo with: the store fails, and the engine's
                // error goes up as it is.
                self.failed = true;
                return Ok(());
            }
            panic!(
                "a write at revision {} failed after changing the store without tracking its keys",
                ctx.main
            );
        };
        for (key, revision) in &touched {
            self.index.forget_changes_at(key, ctx.main);
            let discarded = self.pending.discard_version(key, *revision)?;
            debug_assert!(discarded, "an undone version was not pending");
        }
        self.stored_bytes = ctx.stored_bytes_before;
        Ok(())
    }

    /// The revision reads inside the write see: their own earlier changes.
    fn read_revision_in(&self, ctx: &WriteContext) -> i64 {
        if ctx.changed() {
            ctx.main
        } else {
            self.current_revision
        }
    }

    fn put(&mut self, put: &PutRequest, ctx: &mut WriteContext) -> Result<PutResponse, ReadError> {
        let at = self.read_revision_in(ctx);
        if put.key.len() > MAX_KEY_BYTES {
            return Err(ERR_KEY_TOO_LARGE.into());
        }
        // One index lookup serves both the read of the previous version and
        // the record of the new one (the lookup is most of a put's cost).
        let history = self.index.history_mut(&put.key);
        let previous = history.as_deref().and_then(|history| history.visible(at));
        if put.ignore_value && !put.value.is_empty() {
            return Err(ERR_VALUE_PROVIDED.into());
        }
        if put.ignore_lease && put.lease != 0 {
            return Err(ERR_LEASE_PROVIDED.into());
        }
        // The lease before the key, as etcd's `Put` checks them (inside a
        // transaction `check_put_op` has already checked both, key first).
        // No lease can exist until leases are implemented.
        if put.lease != 0 {
            return Err(ERR_LEASE_NOT_FOUND.into());
        }
        if (put.ignore_value || put.ignore_lease) && previous.is_none() {
            return Err(ERR_KEY_NOT_FOUND.into());
        }
        // Reading the previous value is an engine read: only when asked.
        let values = Values {
            backend: &self.backend,
            pending: &self.pending,
        };
        let needs_previous = put.prev_kv || put.ignore_value || put.ignore_lease;
        let previous_kv = match previous.filter(|_| needs_previous) {
            Some(info) => Some(values.key_value(&put.key, info, false)?),
            None => None,
        };
        let value = if put.ignore_value {
            previous_kv
                .as_ref()
                .map_or_else(Bytes::new, |kv| kv.value.clone())
        } else {
            put.value.clone()
        };
        let lease = if put.ignore_lease {
            previous_kv.as_ref().map_or(0, |kv| kv.lease)
        } else {
            put.lease
        };
        let revision = ctx.next();
        let info = match history {
            Some(history) => history.record_put(revision),
            None => self.index.insert_created(put.key.clone(), revision),
        };
        ctx.record_touched(&put.key, revision);
        let record = PutRecord {
            created: info.created,
            version: info.version,
            lease,
            value: &value,
        };
        self.pending
            .put_parts(&put.key, revision, &[&record.header(), &value])?;
        self.stored_bytes += (put.key.len() + value.len()) as u64;
        Ok(PutResponse {
            header: None,
            prev_kv: if put.prev_kv { previous_kv } else { None },
        })
    }

    fn delete_range(
        &mut self,
        delete: &DeleteRangeRequest,
        ctx: &mut WriteContext,
    ) -> Result<DeleteRangeResponse, ReadError> {
        let at = self.read_revision_in(ctx);
        let victims: Vec<(Bytes, VersionInfo)> = self
            .matching(&delete.key, &delete.range_end, at)
            .map(|(key, info)| (key.clone(), info))
            .collect();
        // Every read before the first change: a failed read changes nothing.
        let mut prev_kvs = Vec::new();
        if delete.prev_kv {
            let values = self.values();
            for (key, info) in &victims {
                prev_kvs.push(values.key_value(key, *info, false)?);
            }
        }
        for (key, _) in &victims {
            let revision = ctx.next();
            self.index.delete(key, revision);
            ctx.record_touched(key, revision);
            self.pending.put_tombstone(key, revision)?;
        }
        Ok(DeleteRangeResponse {
            header: None,
            deleted: victims.len() as i64,
            prev_kvs,
        })
    }

    fn matching<'a>(
        &'a self,
        key: &'a [u8],
        end: &'a [u8],
        at: i64,
    ) -> Box<dyn Iterator<Item = (&'a Bytes, VersionInfo)> + 'a> {
        match range_end(end) {
            RangeEnd::Single => Box::new(self.index.get_entry(key, at).into_iter()),
            RangeEnd::Unbounded => Box::new(self.index.range(key, None, at)),
            RangeEnd::Before(end) => Box::new(self.index.range(key, Some(end), at)),
        }
    }

    /// A read at the current revision (or `request.revision`), pending
    /// writes included. One engine point get per key returned (none for
    /// `count_only`).
    pub fn range(&self, request: &RangeRequest) -> Result<RangeResponse, ReadError> {
        validate_range(request)?;
        self.range_at(request, self.current_revision)
    }

    fn range_at(&self, request: &RangeRequest, current: i64) -> Result<RangeResponse, ReadError> {
        let at = if request.revision <= 0 {
            current
        } else {
            request.revision
        };
        if at > current {
            return Err(ERR_FUTURE_REV.into());
        }
        if request.revision > 0 && at < self.compacted_revision {
            return Err(ERR_COMPACTED.into());
        }
        let matched = self.matching(&request.key, &request.range_end, at);
        let sort_order = range_request::SortOrder::try_from(request.sort_order)
            .unwrap_or(range_request::SortOrder::None);
        let sort_target = range_request::SortTarget::try_from(request.sort_target)
            .unwrap_or(range_request::SortTarget::Key);
        let filtered = request.min_mod_revision != 0
            || request.max_mod_revision != 0
            || request.min_create_revision != 0
            || request.max_create_revision != 0;

        if request.count_only && !filtered {
            return Ok(RangeResponse {
                header: Some(header(current)),
                kvs: Vec::new(),
                more: false,
                count: matched.count() as i64,
            });
        }
        let values = self.values();
        let mut count = 0i64;
        let mut kvs: Vec<KeyValue> = Vec::new();
        // Without sorting or filtering the key order is the answer's order,
        // so stop reading after limit + 1 (the extra one sets `more`).
        let streaming_limit =
            if sort_order == range_request::SortOrder::None && !filtered && request.limit > 0 {
                Some(request.limit as usize + 1)
            } else {
                None
            };
        for (key, info) in matched {
            count += 1;
            if streaming_limit.is_some_and(|limit| kvs.len() >= limit) {
                continue;
            }
            kvs.push(values.key_value(key, info, request.keys_only)?);
        }
        if filtered {
            kvs.retain(|kv| {
                (request.min_mod_revision == 0 || kv.mod_revision >= request.min_mod_revision)
                    && (request.max_mod_revision == 0
                        || kv.mod_revision <= request.max_mod_revision)
                    && (request.min_create_revision == 0
                        || kv.create_revision >= request.min_create_revision)
                    && (request.max_create_revision == 0
                        || kv.create_revision <= request.max_create_revision)
            });
        }
        // etcd sorts ascending by default when the target is not the key.
        let sort_order = if sort_target != range_request::SortTarget::Key
            && sort_order == range_request::SortOrder::None
        {
            range_request::SortOrder::Ascend
        } else {
            sort_order
        };
        if sort_order != range_request::SortOrder::None {
            kvs.sort_by(|a, b| {
                let ordering = match sort_target {
                    range_request::SortTarget::Key => a.key.cmp(&b.key),
                    range_request::SortTarget::Version => a.version.cmp(&b.version),
                    range_request::SortTarget::Create => a.create_revision.cmp(&b.create_revision),
                    range_request::SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
                    range_request::SortTarget::Value => a.value.cmp(&b.value),
                };
                if sort_order == range_request::SortOrder::Descend {
                    ordering.reverse()
                } else {
                    ordering
                }
            });
        }
        let mut more = false;
        if request.limit > 0 && kvs.len() > request.limit as usize {
            kvs.truncate(request.limit as usize);
            more = true;
        }
        if request.count_only {
            kvs.clear();
        }
        Ok(RangeResponse {
            header: Some(header(current)),
            kvs,
            more,
            count,
        })
    }

    /// A transaction, as etcd 3.4 applies one: every compare, nested ones
    /// included, is decided against the store as the transaction found it
    /// (the path through the nested transactions is fixed before any op
    /// runs); then every op on that path that could fail is checked (puts
    /// first, then ranges, as etcd orders them); only then do the ops run,
    /// in order, each seeing the changes of those before it.
    fn txn(&mut self, txn: &TxnRequest, ctx: &mut WriteContext) -> Result<TxnResponse, ReadError> {
        let found_at = self.current_revision;
        let mut path = Vec::new();
        self.decide_path(txn, found_at, &mut path)?;
        self.check_path(txn, &path, &mut 0, &|store, op| {
            store.check_put_op(op, found_at)
        })?;
        self.check_path(txn, &path, &mut 0, &|store, op| {
            store.check_range_op(op, found_at)
        })?;
        // Should an op fail anyway (a request that skipped validation, or
        // the engine), the versions written so far let `apply_write` undo
        // the whole transaction.
        ctx.touched.get_or_insert_with(Vec::new);
        self.run_path(txn, &path, &mut 0, ctx)
    }

    /// Appends, in pre-order, whether each transaction on the path taken
    /// runs its success branch (etcd's `compareToPath`).
    fn decide_path(&self, txn: &TxnRequest, at: i64, path: &mut Vec<bool>) -> Result<(), Error> {
        let mut succeeded = true;
        for compare in &txn.compare {
            if !self.compare_holds(compare, at)? {
                succeeded = false;
                break;
            }
        }
        path.push(succeeded);
        for op in branch(txn, succeeded) {
            if let Some(request_op::Request::RequestTxn(nested)) = &op.request {
                self.decide_path(nested, at, path)?;
            }
        }
        Ok(())
    }

    /// Runs `check` on every non-transaction op of the path, in order.
    /// `step` is the position of `txn`'s own decision in `path`.
    fn check_path(
        &self,
        txn: &TxnRequest,
        path: &[bool],
        step: &mut usize,
        check: &dyn Fn(&Store, &RequestOp) -> Result<(), ApplyError>,
    ) -> Result<(), ApplyError> {
        let succeeded = path_step(path, step);
        for op in branch(txn, succeeded) {
            match &op.request {
                Some(request_op::Request::RequestTxn(nested)) => {
                    self.check_path(nested, path, step, check)?
                }
                _ => check(self, op)?,
            }
        }
        Ok(())
    }

    /// What a put can hit when applied, against the store as the
    /// transaction found it: a missing key for `ignore_value` /
    /// `ignore_lease`, a lease that does not exist, a key too large.
    /// Validation has made sure no earlier op of the transaction touches
    /// the key.
    fn check_put_op(&self, op: &RequestOp, found_at: i64) -> Result<(), ApplyError> {
        let Some(request_op::Request::RequestPut(put)) = &op.request else {
            return Ok(());
        };
        crate::validate::check_put_fields(put)?;
        if (put.ignore_value || put.ignore_lease) && self.index.get(&put.key, found_at).is_none() {
            return Err(ERR_KEY_NOT_FOUND);
        }
        // No lease can exist until leases are implemented.
        if put.lease != 0 {
            return Err(ERR_LEASE_NOT_FOUND);
        }
        Ok(())
    }

    /// A read of history the transaction cannot see: compacted, or after the
    /// revision it found. As etcd's `checkRequestRange`, which compares with
    /// its compaction revision, -1 until the first compaction: a negative
    /// revision reads the current one until then.
    fn check_range_op(&self, op: &RequestOp, found_at: i64) -> Result<(), ApplyError> {
        let Some(request_op::Request::RequestRange(range)) = &op.request else {
            return Ok(());
        };
        let first_readable = if self.compacted_revision == 0 {
            -1
        } else {
            self.compacted_revision
        };
        if range.revision == 0 {
            Ok(())
        } else if range.revision > found_at {
            Err(ERR_FUTURE_REV)
        } else if range.revision < first_readable {
            Err(ERR_COMPACTED)
        } else {
            Ok(())
        }
    }

    fn run_path(
        &mut self,
        txn: &TxnRequest,
        path: &[bool],
        step: &mut usize,
        ctx: &mut WriteContext,
    ) -> Result<TxnResponse, ReadError> {
        let succeeded = path_step(path, step);
        let ops = branch(txn, succeeded);
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match &op.request {
                Some(request_op::Request::RequestRange(range)) => {
                    let current = self.read_revision_in(ctx);
                    response_op::Response::ResponseRange(self.range_at(range, current)?)
                }
                Some(request_op::Request::RequestPut(put)) => {
                    let mut response = self.put(put, ctx)?;
                    response.header = Some(header(ctx.main));
                    response_op::Response::ResponsePut(response)
                }
                Some(request_op::Request::RequestDeleteRange(delete)) => {
                    let mut response = self.delete_range(delete, ctx)?;
                    response.header = Some(header(self.read_revision_in(ctx)));
                    response_op::Response::ResponseDeleteRange(response)
                }
                Some(request_op::Request::RequestTxn(nested)) => {
                    let mut response = self.run_path(nested, path, step, ctx)?;
                    // etcd leaves a nested transaction's header empty.
                    response.header = Some(ResponseHeader::default());
                    response_op::Response::ResponseTxn(response)
                }
                None => return Err(ERR_KEY_NOT_FOUND.into()),
            };
            responses.push(ResponseOp {
                response: Some(response),
            });
        }
        Ok(TxnResponse {
            header: None,
            succeeded,
            responses,
        })
    }

    /// Whether `compare` holds for every key it names at `at`. Values are
    /// read from the engine only for value and lease compares.
    fn compare_holds(&self, compare: &Compare, at: i64) -> Result<bool, Error> {
        // An unknown target compares as equal, as in etcd's `compareKV`.
        let target = compare::CompareTarget::try_from(compare.target).ok();
        let reads_record = matches!(
            target,
            Some(compare::CompareTarget::Value) | Some(compare::CompareTarget::Lease)
        );
        let values = self.values();
        let mut any = false;
        for (key, info) in self.matching(&compare.key, &compare.range_end, at) {
            any = true;
            let kv = if reads_record {
                values.key_value(key, info, false)?
            } else {
                KeyValue {
                    key: key.clone(),
                    create_revision: info.created.main,
                    mod_revision: info.modified.main,
                    version: info.version,
                    ..KeyValue::default()
                }
            };
            if !compare_one(compare, target, &kv) {
                return Ok(false);
            }
        }
        if !any {
            // A missing key has version, revisions and lease 0, but no value
            // at all: a value comparison on it always fails.
            if target == Some(compare::CompareTarget::Value) {
                return Ok(false);
            }
            return Ok(compare_one(compare, target, &KeyValue::default()));
        }
        Ok(true)
    }

    /// Drops every version no read at `request.revision` or later can see,
    /// from the index and (in the pending batch) from the engine. Reads the
    /// record of each dropped put, for the stored-bytes count.
    fn compact(&mut self, request: &CompactionRequest) -> Result<CompactionResponse, ReadError> {
        if request.revision <= self.compacted_revision {
            return Err(ERR_COMPACTED.into());
        }
        if request.revision > self.current_revision {
            return Err(ERR_FUTURE_REV.into());
        }
        // From here on a failure is the engine's, and fails the store.
        let dropped = self.index.compact(request.revision);
        let mut freed_bytes = 0u64;
        let values = self.values();
        for version in &dropped {
            if !version.tombstone {
                let value_bytes =
                    values.with_put(&version.key, version.revision, |record| record.value.len())?;
                freed_bytes += (version.key.len() + value_bytes) as u64;
            }
        }
        for version in &dropped {
            // A version written since the last commit is not in the engine
            // (revisions after the committed one never are): taking it out
            // of the batch is enough.
            let pending = self.pending.get_version(&version.key, version.revision)?;
            if matches!(pending, Some(PendingVersion::Write(_))) {
                self.pending
                    .discard_version(&version.key, version.revision)?;
            } else {
                self.pending
                    .remove_version(&version.key, version.revision)?;
            }
        }
        debug_assert!(freed_bytes <= self.stored_bytes);
        self.stored_bytes = self.stored_bytes.saturating_sub(freed_bytes);
        self.compacted_revision = request.revision;
        Ok(CompactionResponse {
            header: Some(header(self.current_revision)),
        })
    }
}

/// The branch a transaction runs.
fn branch(txn: &TxnRequest, succeeded: bool) -> &[RequestOp] {
    if succeeded {
        &txn.success
    } else {
        &txn.failure
    }
}

/// The next decision of a path made by `decide_path`, which visits the same
/// transactions in the same order as every walk that reads it.
fn path_step(path: &[bool], step: &mut usize) -> bool {
    let succeeded = *path.get(*step).unwrap_or_else(|| {
        panic!(
            "transaction path has {} decisions, step {} asked for: walks disagree",
            path.len(),
            step
        )
    });
    *step += 1;
    succeeded
}

fn compare_one(compare: &Compare, target: Option<compare::CompareTarget>, kv: &KeyValue) -> bool {
    use compare::TargetUnion;
    let Some(target) = target else {
        return result_holds(compare, std::cmp::Ordering::Equal);
    };
    let ordering = match (target, &compare.target_union) {
        (compare::CompareTarget::Version, Some(TargetUnion::Version(version))) => {
            kv.version.cmp(version)
        }
        (compare::CompareTarget::Create, Some(TargetUnion::CreateRevision(revision))) => {
            kv.create_revision.cmp(revision)
        }
        (compare::CompareTarget::Mod, Some(TargetUnion::ModRevision(revision))) => {
            kv.mod_revision.cmp(revision)
        }
        (compare::CompareTarget::Value, Some(TargetUnion::Value(value))) => {
            kv.value.as_ref().cmp(value.as_ref())
        }
        (compare::CompareTarget::Lease, Some(TargetUnion::Lease(lease))) => kv.lease.cmp(lease),
        // A target without its operand compares against the zero value, as
        // protobuf's defaults would in etcd.
        (compare::CompareTarget::Version, _) => kv.version.cmp(&0),
        (compare::CompareTarget::Create, _) => kv.create_revision.cmp(&0),
        (compare::CompareTarget::Mod, _) => kv.mod_revision.cmp(&0),
        (compare::CompareTarget::Value, _) => kv.value.as_ref().cmp(&[][..]),
        (compare::CompareTarget::Lease, _) => kv.lease.cmp(&0),
    };
    result_holds(compare, ordering)
}

/// Whether `ordering` (the key's side against the operand) satisfies the
/// compare's result; an unknown result holds, as in etcd's `compareKV`.
fn result_holds(compare: &Compare, ordering: std::cmp::Ordering) -> bool {
    match compare::CompareResult::try_from(compare.result) {
        Ok(compare::CompareResult::Equal) => ordering.is_eq(),
        Ok(compare::CompareResult::NotEqual) => !ordering.is_eq(),
        Ok(compare::CompareResult::Greater) => ordering.is_gt(),
        Ok(compare::CompareResult::Less) => ordering.is_lt(),
        Err(_) => true,
    }
}

fn header(revision: i64) -> ResponseHeader {
    ResponseHeader {
        revision,
        ..ResponseHeader::default()
    }
}
