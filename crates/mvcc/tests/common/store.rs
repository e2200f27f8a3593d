//! A store in a temporary directory, driven as the applier drives one:
//! each applied request is a log entry, committed with its index.

use bytes::Bytes;
use mvcc::store::ApplyError;
use mvcc::{KeyspaceId, ReadError, Store, StoreOptions};
use proto::etcdserverpb::{RangeRequest, RangeResponse};
use proto::internal::{internal_request, InternalRequest, InternalResponse};
use std::collections::BTreeMap;

/// Every committed entry of the `kv` and `meta` keyspaces but the applied
/// index: what a commit wrote, to compare "down to the byte".
pub type EngineDump = BTreeMap<(KeyspaceId, Vec<u8>), Vec<u8>>;

pub struct TestStore {
    /// `None` only while reopening. Declared before `dir`: fields drop in
    /// order, and the store must close before its directory goes.
    store: Option<Store>,
    dir: tempfile::TempDir,
    /// The index of the last entry applied (committed or not).
    last_index: u64,
    /// Every request applied, refused ones included, for [`TestStore::twin`].
    log: Vec<InternalRequest>,
    /// Commit after every apply (the default), or only on
    /// [`TestStore::commit`].
    pub commit_each: bool,
}

impl Default for TestStore {
    fn default() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), &small_options()).expect("open");
        TestStore {
            dir,
            store: Some(store),
            last_index: 0,
            log: Vec::new(),
            commit_each: true,
        }
    }
}

/// A small cache: many stores are open at once in the tests.
fn small_options() -> StoreOptions {
    StoreOptions {
        cache_bytes: 1024 * 1024,
    }
}

/// The refusal of a read; panics on an engine failure.
pub fn refusal(error: ReadError) -> ApplyError {
    match error {
        ReadError::Refused(refusal) => refusal,
        ReadError::Engine(error) => panic!("engine failure: {error}"),
    }
}

impl TestStore {
    pub fn inner(&self) -> &Store {
        self.store.as_ref().expect("store open")
    }

    pub fn inner_mut(&mut self) -> &mut Store {
        self.store.as_mut().expect("store open")
    }

    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Applies one entry; commits it unless `commit_each` is off.
    pub fn apply(&mut self, request: &InternalRequest) -> InternalResponse {
        self.log.push(request.clone());
        self.last_index += 1;
        let response = self.inner_mut().apply(request).expect("engine");
        if self.commit_each {
            self.commit();
        }
        response
    }

    /// Commits what is pending with the last entry's index (nothing if
    /// that index is committed already).
    pub fn commit(&mut self) {
        let index = self.last_index;
        if index > self.inner().applied().index {
            self.inner_mut().commit(index, 1).expect("commit");
        }
    }

    /// Whether every entry applied is committed.
    pub fn all_committed(&self) -> bool {
        self.inner().applied().index == self.last_index
    }

    /// Commits, closes and reopens the store from its directory.
    pub fn reopen(&mut self) {
        self.commit();
        drop(self.store.take());
        let store = Store::open(self.dir.path(), &small_options()).expect("reopen");
        assert_eq!(store.applied().index, self.last_index);
        self.store = Some(store);
    }

    /// Installs a snapshot of `source`'s committed state; the log goes on
    /// from the snapshot's index.
    pub fn install_from(&mut self, source: &TestStore) -> mvcc::SnapshotMetadata {
        let mut installer = self.inner().snapshot_installer().expect("installer");
        for chunk in source.inner().snapshot().expect("snapshot") {
            installer.push(&chunk.expect("chunk")).expect("push");
        }
        let metadata = self.inner_mut().install(installer).expect("install");
        self.last_index = metadata.index;
        self.log = source.log.clone();
        metadata
    }

    /// Another store that applied the same requests.
    pub fn twin(&self) -> TestStore {
        let mut twin = TestStore::default();
        for request in &self.log {
            twin.apply(request);
        }
        twin
    }

    pub fn range(&self, request: &RangeRequest) -> Result<RangeResponse, ApplyError> {
        self.inner().range(request).map_err(refusal)
    }

    pub fn hash_kv(&self, revision: i64) -> Result<(u32, i64), ApplyError> {
        self.inner().hash_kv(revision).map_err(refusal)
    }

    pub fn current_revision(&self) -> i64 {
        self.inner().current_revision()
    }

    pub fn compacted_revision(&self) -> i64 {
        self.inner().compacted_revision()
    }

    pub fn key_count(&self) -> usize {
        self.inner().key_count()
    }

    pub fn stored_bytes(&self) -> u64 {
        self.inner().stored_bytes()
    }

    pub fn pending_write_count(&self) -> usize {
        self.inner().pending_write_count()
    }

    /// What the commits wrote (call after a commit).
    pub fn dump(&self) -> EngineDump {
        let view = self.inner().backend().read();
        let mut out = EngineDump::new();
        for keyspace in [KeyspaceId::Kv, KeyspaceId::Meta] {
            for entry in view.raw_entries(keyspace) {
                let (key, value) = entry.expect("read");
                if keyspace == KeyspaceId::Meta && key == b"applied" {
                    continue;
                }
                out.insert((keyspace, key), value);
            }
        }
        out
    }

    /// Everything visible at `revision` (0: now), as key-value pairs.
    pub fn everything_at(&self, revision: i64) -> Result<RangeResponse, ApplyError> {
        self.range(&RangeRequest {
            key: Bytes::from_static(b"\0"),
            range_end: Bytes::from_static(b"\0"),
            revision,
            ..RangeRequest::default()
        })
    }
}

/// An `InternalRequest` around `request`.
pub fn entry(request: internal_request::Request) -> InternalRequest {
    InternalRequest {
        request: Some(request),
    }
}
