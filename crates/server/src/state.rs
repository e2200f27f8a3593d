//! The replicated state machine of a member: the MVCC key-value store and
//! the member registry, fed committed entries in log order by the applier,
//! and its snapshot image (the one format of a state snapshot's data).
//!
//! Readers (the client services) share it behind a `RwLock`: the applier
//! holds the write lock for one entry at a time, so reads interleave with
//! applies and never wait for a whole batch.
//!
//! Everything here is replicated: it must be a function of the applied log
//! alone, identical on every member at the same index. So the state only
//! ever comes from applying entries from index 1 (where the Raft core's
//! bootstrap wrote the initial membership as conf-change entries of term
//! one) or from a snapshot of such a state; nothing from a member's own
//! configuration may enter it (the transport keeps configured peer
//! addresses apart). Entries are applied strictly in order: an entry that
//! is not the applied index plus one stops the member with an error rather
//! than being applied.

use std::collections::BTreeMap;
use std::io::{self, BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;
use kv::Store;
use prost::Message as _;
use proto::internal::{
    internal_request, internal_response, ApplyError, InternalRequest, InternalResponse,
    MemberAttributes,
};
use raft::{ConfChange, ConfChangeKind, Entry, NodeId, SnapshotMetadata};
use wal::{SnapshotFiles, SnapshotReader, SnapshotWriter};

use crate::node::{ImageFixed, SnapshotJob, StateMachine, StorageError};

/// What the cluster knows of a member beyond its Raft id. A member enters
/// the registry when a conf-change entry adding it is applied (empty
/// attributes), and fills them with its own `Publish` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberInfo {
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
}

#[derive(Clone, Debug, Default)]
pub struct ReplicatedState {
    pub store: Store,
    pub members: BTreeMap<NodeId, MemberInfo>,
    pub applied_index: u64,
}

/// Shared handle to the state, for readers and the applier.
#[derive(Clone, Default)]
pub struct SharedState(Arc<RwLock<ReplicatedState>>);

impl SharedState {
    /// The state before index 1: empty store, empty registry. Applying the
    /// log from its start builds both (the bootstrap entries add the
    /// initial members).
    pub fn new() -> Self {
        SharedState::default()
    }

    /// A state restored from a snapshot.
    pub fn restored(state: ReplicatedState) -> Self {
        SharedState(Arc::new(RwLock::new(state)))
    }

    /// A poisoned lock means the applier panicked mid-entry: the state may be
    /// half-applied, and serving from it could show a state no member ever
    /// had. Refuse instead.
    pub fn read(&self) -> Result<RwLockReadGuard<'_, ReplicatedState>, StorageError> {
        self.0.read().map_err(|_| {
            StorageError("the state machine failed while applying an entry".to_string())
        })
    }

    fn write(&self) -> Result<RwLockWriteGuard<'_, ReplicatedState>, StorageError> {
        self.0.write().map_err(|_| {
            StorageError("the state machine failed while applying an entry".to_string())
        })
    }
}

/// The applier's view of the shared state.
pub struct KvStateMachine {
    state: SharedState,
    applied_index: u64,
    /// Where snapshots are written and read; `None` in tests that never
    /// snapshot.
    snapshots: Option<SnapshotFiles>,
}

impl KvStateMachine {
    pub fn new(state: SharedState, snapshots: Option<SnapshotFiles>) -> Result<Self, StorageError> {
        let applied_index = state.read()?.applied_index;
        Ok(KvStateMachine {
            state,
            applied_index,
            snapshots,
        })
    }

    fn snapshot_files(&self) -> Result<&SnapshotFiles, StorageError> {
        self.snapshots
            .as_ref()
            .ok_or_else(|| StorageError("this member keeps no snapshot files".to_string()))
    }
}

/// The one gate every applied entry passes: `index` must be the applied
/// index plus one. A gap or a repeat means the log handed out is damaged or
/// replayed wrongly; applying anyway would make this member diverge
/// silently, so it stops with both indexes named. Nothing of the entry is
/// applied.
fn advance(state: &mut ReplicatedState, index: u64) -> Result<(), StorageError> {
    let expected = state.applied_index.checked_add(1);
    if expected != Some(index) {
        return Err(StorageError(format!(
            "entry {index} was handed to the state machine after entry {}: entries must be \
             applied in order without gaps; the log or its replay is damaged, stopping rather \
             than diverging",
            state.applied_index
        )));
    }
    state.applied_index = index;
    Ok(())
}

impl StateMachine for KvStateMachine {
    fn apply(&mut self, index: u64, _term: u64, payload: Bytes) -> Result<Bytes, StorageError> {
        let mut state = self.state.write()?;
        if payload.is_empty() {
            advance(&mut state, index)?;
            self.applied_index = index;
            return Ok(Bytes::new());
        }
        let request = InternalRequest::decode(payload).map_err(|error| {
            // Every member proposed only what it could encode; an entry we
            // cannot decode comes from a newer member or is corrupt, and
            // skipping it would make this member diverge.
            StorageError(format!(
                "committed entry {index} is not a request this member understands: {error}"
            ))
        })?;
        advance(&mut state, index)?;
        self.applied_index = index;
        let response = match request.request {
            Some(internal_request::Request::Publish(attributes)) => {
                publish(&mut state.members, attributes)
            }
            _ => state.store.apply(&request),
        };
        Ok(Bytes::from(response.encode_to_vec()))
    }

    fn apply_conf_change(&mut self, entry: &Entry) -> Result<(), StorageError> {
        let change = ConfChange::decode(&entry.data).map_err(|error| {
            StorageError(format!(
                "committed conf-change entry {}: {error}",
                entry.index
            ))
        })?;
        let mut state = self.state.write()?;
        advance(&mut state, entry.index)?;
        self.applied_index = entry.index;
        // The registry follows Raft's membership entry by entry. Raft
        // ignores adding a learner that is already a voter and removing a
        // stranger; so does this (the member is already there / absent).
        // A runtime member-add will carry the new member's peer URLs in the
        // change's context; the bootstrap entries carry none (they must be
        // byte-identical on every member, whatever its configuration).
        match change.change {
            ConfChangeKind::AddVoter | ConfChangeKind::AddLearner => {
                state.members.entry(change.node_id).or_default();
            }
            ConfChangeKind::Remove => {
                state.members.remove(&change.node_id);
            }
        }
        Ok(())
    }

    fn install_snapshot(&mut self, snapshot: &SnapshotMetadata) -> Result<(), StorageError> {
        let files = self.snapshot_files()?.clone();
        let path = files.path_for(snapshot);
        let current = self.state.read()?.applied_index;
        if snapshot.index <= current {
            // Raft hands out only snapshots beyond its commit index, which
            // is at least what was applied: this would roll the state back.
            return Err(StorageError(format!(
                "asked to install {} (index {}) over a state already at index {current}",
                path.display(),
                snapshot.index
            )));
        }
        // Read and checked to its last byte before anything is replaced: a
        // damaged snapshot leaves the current state untouched.
        let restored = ReplicatedState::load(&files, &path, snapshot)?;
        *self.state.write()? = restored;
        self.applied_index = snapshot.index;
        // Raft records snapshots in increasing order and this thread
        // installs them in that order, so no install still pending can need
        // an older file; the log's marker is already durable.
        files.remove_older_than(snapshot).map_err(|error| {
            StorageError(format!(
                "removing snapshots older than the one installed at index {}: {error}",
                snapshot.index
            ))
        })?;
        Ok(())
    }

    fn snapshot_job(&mut self, snapshot: &SnapshotMetadata) -> Result<SnapshotJob, StorageError> {
        let files = self.snapshot_files()?.clone();
        let state = self.state.clone();
        let snapshot = snapshot.clone();
        Ok(Box::new(move |fixed: ImageFixed| {
            // A copy of the structure (values are shared `Bytes`) is the
            // image: applying goes on while it is written.
            let image = {
                let state = state.read()?;
                debug_assert_eq!(
                    state.applied_index, snapshot.index,
                    "a snapshot is taken exactly at the applied index"
                );
                state.clone()
            };
            fixed.done();
            // Older snapshot files stay: they go once this one is recorded
            // in the log (`storage::WalLog::compacted`).
            image.save(&files, &snapshot).map(|_| ())
        }))
    }

    fn applied_index(&self) -> u64 {
        self.applied_index
    }
}

/// A member announces its name and URLs. Only a member the registry holds
/// (added by a conf-change entry) is updated: a late publish from a
/// removed member must not bring it back. An empty `peer_urls` (an entry
/// written before publishes carried them) leaves the known ones.
fn publish(
    members: &mut BTreeMap<NodeId, MemberInfo>,
    attributes: MemberAttributes,
) -> InternalResponse {
    let Some(member) = members.get_mut(&attributes.member_id) else {
        return InternalResponse {
            response: Some(internal_response::Response::Error(ApplyError {
                grpc_code: tonic::Code::NotFound as i32,
                message: "etcdserver: member not found".to_string(),
            })),
        };
    };
    member.name = attributes.name.clone();
    member.client_urls = attributes.client_urls.clone();
    if !attributes.peer_urls.is_empty() {
        member.peer_urls = attributes.peer_urls.clone();
    }
    InternalResponse {
        response: Some(internal_response::Response::Published(attributes)),
    }
}

/// `io::Write` over a snapshot file being written.
struct ChunkWriter<'a>(&'a mut SnapshotWriter);

impl Write for ChunkWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.0.write(data).map_err(io::Error::other)?;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `io::Read` over a snapshot file's data; the file's checksum is checked
/// when the data runs out.
pub struct ChunkReader {
    data: SnapshotReader,
    buffer: Vec<u8>,
    position: usize,
    filled: usize,
    /// The data ran out (and the checksum matched): the file's trailer is
    /// read only once.
    ended: bool,
}

impl ChunkReader {
    pub fn new(data: SnapshotReader) -> Self {
        ChunkReader {
            data,
            buffer: vec![0; 256 * 1024],
            position: 0,
            filled: 0,
            ended: false,
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.position == self.filled {
            if self.ended {
                return Ok(0);
            }
            self.filled = self
                .data
                .read_chunk(&mut self.buffer)
                .map_err(io::Error::other)?;
            self.position = 0;
            if self.filled == 0 {
                self.ended = true;
                return Ok(0);
            }
        }
        let count = out.len().min(self.filled - self.position);
        out[..count].copy_from_slice(&self.buffer[self.position..self.position + count]);
        self.position += count;
        Ok(count)
    }
}

const IMAGE_MAGIC: &[u8; 8] = b"RKVMS001";

fn write_string(out: &mut impl Write, text: &str) -> io::Result<()> {
    out.write_all(&(text.len() as u32).to_le_bytes())?;
    out.write_all(text.as_bytes())
}

fn read_u32(input: &mut impl Read) -> io::Result<u32> {
    let mut bytes = [0u8; 4];
    input.read_exact(&mut bytes)?;
    Ok(u32::from_le_bytes(bytes))
}

fn read_u64(input: &mut impl Read) -> io::Result<u64> {
    let mut bytes = [0u8; 8];
    input.read_exact(&mut bytes)?;
    Ok(u64::from_le_bytes(bytes))
}

fn read_string(input: &mut impl Read) -> io::Result<String> {
    let len = read_u32(input)?;
    if len > 1 << 20 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "impossible string length",
        ));
    }
    let mut bytes = vec![0u8; len as usize];
    input.read_exact(&mut bytes)?;
    String::from_utf8(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "string is not UTF-8"))
}

fn write_strings(out: &mut impl Write, items: &[String]) -> io::Result<()> {
    out.write_all(&(items.len() as u32).to_le_bytes())?;
    items.iter().try_for_each(|item| write_string(out, item))
}

fn read_strings(input: &mut impl Read) -> io::Result<Vec<String>> {
    let count = read_u32(input)?;
    if count > 1 << 16 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "impossible list length",
        ));
    }
    (0..count).map(|_| read_string(input)).collect()
}

impl ReplicatedState {
    /// The whole state as a snapshot image: `magic | applied index |
    /// registry | store image` (see [`ReplicatedState::write_registry`] and
    /// `kv::snapshot`).
    pub fn write_image(&self, out: &mut impl Write) -> io::Result<()> {
        out.write_all(IMAGE_MAGIC)?;
        out.write_all(&self.applied_index.to_le_bytes())?;
        self.write_registry(out)?;
        self.store.write_snapshot(out)
    }

    /// The registry part of the image: `count u32 | (id u64 | name |
    /// peer URLs | client URLs)*` in id order. Members that applied the
    /// same log write the same bytes.
    pub fn write_registry(&self, out: &mut impl Write) -> io::Result<()> {
        out.write_all(&(self.members.len() as u32).to_le_bytes())?;
        for (id, member) in &self.members {
            out.write_all(&id.to_le_bytes())?;
            write_string(out, &member.name)?;
            write_strings(out, &member.peer_urls)?;
            write_strings(out, &member.client_urls)?;
        }
        Ok(())
    }

    fn read_registry(input: &mut impl Read) -> io::Result<BTreeMap<NodeId, MemberInfo>> {
        let count = read_u32(input)?;
        let mut members = BTreeMap::new();
        for _ in 0..count {
            let id = read_u64(input)?;
            let name = read_string(input)?;
            let peer_urls = read_strings(input)?;
            let client_urls = read_strings(input)?;
            members.insert(
                id,
                MemberInfo {
                    name,
                    peer_urls,
                    client_urls,
                },
            );
        }
        Ok(members)
    }

    pub fn read_image(input: &mut impl BufRead) -> Result<ReplicatedState, StorageError> {
        let malformed = |error: io::Error| StorageError(format!("snapshot image: {error}"));
        let mut magic = [0u8; 8];
        input.read_exact(&mut magic).map_err(malformed)?;
        if &magic != IMAGE_MAGIC {
            return Err(StorageError("snapshot image: bad magic".to_string()));
        }
        let applied_index = read_u64(input).map_err(malformed)?;
        let members = Self::read_registry(input).map_err(malformed)?;
        let store = Store::read_snapshot(input)
            .map_err(|error| StorageError(format!("snapshot image: {error}")))?;
        Ok(ReplicatedState {
            store,
            members,
            applied_index,
        })
    }

    /// Writes this state as the snapshot `metadata` describes (durable when
    /// this returns) and returns the file's path.
    pub fn save(
        &self,
        files: &SnapshotFiles,
        metadata: &SnapshotMetadata,
    ) -> Result<PathBuf, StorageError> {
        let error = |error: &dyn std::fmt::Display| {
            StorageError(format!(
                "writing the snapshot at index {}: {error}",
                metadata.index
            ))
        };
        let mut writer = files.create(metadata).map_err(|e| error(&e))?;
        self.write_image(&mut ChunkWriter(&mut writer))
            .map_err(|e| error(&e))?;
        writer.finish().map_err(|e| error(&e))
    }

    /// Reads the state from the snapshot file at `path`, which must be the
    /// one `expected` describes. The whole file is read and its checksum
    /// checked before the state is returned; every error names the file.
    pub fn load(
        files: &SnapshotFiles,
        path: &Path,
        expected: &SnapshotMetadata,
    ) -> Result<ReplicatedState, StorageError> {
        let named =
            |reason: &dyn std::fmt::Display| StorageError(format!("{}: {reason}", path.display()));
        let (metadata, data) = files.open_data(path).map_err(|e| named(&e))?;
        if (metadata.index, metadata.term) != (expected.index, expected.term) {
            return Err(named(&format!(
                "holds the snapshot at index {} (term {}), expected index {} (term {})",
                metadata.index, metadata.term, expected.index, expected.term
            )));
        }
        // One buffer for the image and the check after it, so that nothing
        // the image's decoder read ahead escapes the check.
        let mut reader = io::BufReader::with_capacity(256 * 1024, ChunkReader::new(data));
        let state = Self::read_image(&mut reader).map_err(|e| named(&e))?;
        // Reading on to the end checks the file's checksum (and that the
        // image is all the file holds).
        let mut rest = [0u8; 1];
        match reader.read(&mut rest) {
            Ok(0) => {}
            Ok(_) => return Err(named(&"bytes after the end of the state image")),
            Err(error) => return Err(named(&error)),
        }
        if state.applied_index != expected.index {
            return Err(named(&format!(
                "is named for index {} but holds the state at index {}",
                expected.index, state.applied_index
            )));
        }
        Ok(state)
    }
}
