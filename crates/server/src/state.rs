//! The replicated state machine of a member: the MVCC key-value store and
//! the member registry, fed committed entries in log order by the applier.
//!
//! Readers (the client services) share it behind a `RwLock`: the applier
//! holds the write lock for one entry at a time, so reads interleave with
//! applies and never wait for a whole batch.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;
use kv::Store;
use prost::Message as _;
use proto::internal::{
    internal_request, internal_response, InternalRequest, InternalResponse, MemberAttributes,
};
use raft::{Entry, NodeId, SnapshotMetadata};
use wal::{SnapshotFiles, SnapshotReader, SnapshotWriter};

use crate::node::{ImageFixed, SnapshotJob, StateMachine, StorageError};

/// What the cluster knows of a member beyond its Raft id.
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
    pub fn new(initial_members: BTreeMap<NodeId, MemberInfo>) -> Self {
        SharedState(Arc::new(RwLock::new(ReplicatedState {
            members: initial_members,
            ..ReplicatedState::default()
        })))
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

impl StateMachine for KvStateMachine {
    fn apply(&mut self, index: u64, _term: u64, payload: Bytes) -> Result<Bytes, StorageError> {
        let mut state = self.state.write()?;
        state.applied_index = index;
        self.applied_index = index;
        if payload.is_empty() {
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
        let response = match request.request {
            Some(internal_request::Request::Publish(attributes)) => {
                let member = state.members.entry(attributes.member_id).or_default();
                member.name = attributes.name.clone();
                member.client_urls = attributes.client_urls.clone();
                InternalResponse {
                    response: Some(internal_response::Response::Published(MemberAttributes {
                        ..attributes
                    })),
                }
            }
            _ => state.store.apply(&request),
        };
        Ok(Bytes::from(response.encode_to_vec()))
    }

    fn apply_conf_change(&mut self, entry: &Entry) -> Result<(), StorageError> {
        let mut state = self.state.write()?;
        state.applied_index = entry.index;
        self.applied_index = entry.index;
        Ok(())
    }

    fn install_snapshot(&mut self, snapshot: &SnapshotMetadata) -> Result<(), StorageError> {
        let files = self.snapshot_files()?;
        let path = files.path_for(snapshot);
        let error = |error: &dyn std::fmt::Display| {
            StorageError(format!(
                "installing the snapshot at index {}: {error}",
                snapshot.index
            ))
        };
        // Check the whole file before replacing anything: a damaged snapshot
        // must leave the current state untouched.
        files.verify(&path).map_err(|e| error(&e))?;
        let (_, data) = files.open_data(&path).map_err(|e| error(&e))?;
        let mut restored =
            ReplicatedState::read_image(&mut ChunkReader::new(data)).map_err(|e| error(&e))?;
        if restored.applied_index != snapshot.index {
            return Err(error(&format!(
                "the file holds the state at index {}",
                restored.applied_index
            )));
        }
        restored.applied_index = snapshot.index;
        *self.state.write()? = restored;
        self.applied_index = snapshot.index;
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
            let error = |error: &dyn std::fmt::Display| {
                StorageError(format!(
                    "writing the snapshot at index {}: {error}",
                    snapshot.index
                ))
            };
            let mut writer = files.create(&snapshot).map_err(|e| error(&e))?;
            image
                .write_image(&mut ChunkWriter(&mut writer))
                .map_err(|e| error(&e))?;
            writer.finish().map(|_| ()).map_err(|e| error(&e))
        }))
    }

    fn applied_index(&self) -> u64 {
        self.applied_index
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
}

impl ChunkReader {
    pub fn new(data: SnapshotReader) -> Self {
        ChunkReader {
            data,
            buffer: vec![0; 256 * 1024],
            position: 0,
            filled: 0,
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.position == self.filled {
            self.filled = self
                .data
                .read_chunk(&mut self.buffer)
                .map_err(io::Error::other)?;
            self.position = 0;
            if self.filled == 0 {
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
    /// The whole state as a snapshot image: `magic | applied index | members
    /// | store image` (see `kv::snapshot`).
    pub fn write_image(&self, out: &mut impl Write) -> io::Result<()> {
        out.write_all(IMAGE_MAGIC)?;
        out.write_all(&self.applied_index.to_le_bytes())?;
        out.write_all(&(self.members.len() as u32).to_le_bytes())?;
        for (id, member) in &self.members {
            out.write_all(&id.to_le_bytes())?;
            write_string(out, &member.name)?;
            write_strings(out, &member.peer_urls)?;
            write_strings(out, &member.client_urls)?;
        }
        self.store.write_snapshot(out)
    }

    pub fn read_image(input: &mut impl Read) -> Result<ReplicatedState, StorageError> {
        let malformed = |error: io::Error| StorageError(format!("snapshot image: {error}"));
        let mut magic = [0u8; 8];
        input.read_exact(&mut magic).map_err(malformed)?;
        if &magic != IMAGE_MAGIC {
            return Err(StorageError("snapshot image: bad magic".to_string()));
        }
        let applied_index = read_u64(input).map_err(malformed)?;
        let count = read_u32(input).map_err(malformed)?;
        let mut members = BTreeMap::new();
        for _ in 0..count {
            let id = read_u64(input).map_err(malformed)?;
            let name = read_string(input).map_err(malformed)?;
            let peer_urls = read_strings(input).map_err(malformed)?;
            let client_urls = read_strings(input).map_err(malformed)?;
            members.insert(
                id,
                MemberInfo {
                    name,
                    peer_urls,
                    client_urls,
                },
            );
        }
        let store = Store::read_snapshot(input)
            .map_err(|error| StorageError(format!("snapshot image: {error}")))?;
        Ok(ReplicatedState {
            store,
            members,
            applied_index,
        })
    }
}
