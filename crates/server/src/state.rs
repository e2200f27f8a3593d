//! The replicated state machine of a member: the MVCC key-value store on
//! the storage engine (`mvcc::Store`, in `<data-dir>/member/engine`) and the
//! member registry, fed committed entries in log order by the applier.
//!
//! Readers (the client services) share it behind a `RwLock`: the applier
//! holds the write lock for one entry at a time, so reads interleave with
//! applies and never wait for a whole batch; each batch is then committed
//! to the engine as one atomic step with its applied index.
//!
//! Everything here is replicated: it must be a function of the applied log
//! alone, identical on every member at the same index. So the state only
//! ever comes from applying entries from index 1 (where the Raft core's
//! bootstrap wrote the initial membership as conf-change entries of term
//! one) or from a snapshot of such a state; nothing from a member's own
//! configuration may enter it (the transport keeps configured peer
//! addresses apart). Entries are applied strictly in order: an entry that
//! is neither already reflected by the engine nor the applied index plus
//! one stops the member with an error rather than being applied.
//!
//! The engine may be ahead of the log Raft hands out: after a restart it
//! holds every batch committed before the crash (the log replays from its
//! last compaction point), and a snapshot from the leader is installed
//! before Raft records it. Entries it reflects are skipped
//! ([`StateMachine::reflects`]).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

use bytes::Bytes;
use mvcc::{SnapshotInstaller, SnapshotStream, Store, StoreOptions};
use prost::Message as _;
use proto::internal::{
    internal_request, internal_response, ApplyError, InternalRequest, InternalResponse,
    MemberAttributes,
};
use raft::{ConfChange, ConfChangeKind, Entry, NodeId, SnapshotMetadata};

use crate::node::{StateMachine, StorageError};

/// What the cluster knows of a member beyond its Raft id. A member enters
/// the registry when a conf-change entry adding it is applied (empty
/// attributes), and fills them with its own `Publish` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberInfo {
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
}

pub struct ReplicatedState {
    pub store: Store,
    /// The registry as the engine holds it (`Store::members`), decoded.
    pub members: BTreeMap<NodeId, MemberInfo>,
    /// The last entry applied (committed to the engine or pending in its
    /// current batch).
    pub applied_index: u64,
}

impl ReplicatedState {
    /// Opens the engine under `path` and reads the registry it holds.
    pub fn open(path: &Path, options: &StoreOptions) -> Result<ReplicatedState, StorageError> {
        let store = Store::open(path, options).map_err(|error| {
            StorageError(format!(
                "opening the state machine's engine in {}: {error}",
                path.display()
            ))
        })?;
        ReplicatedState::around(store)
    }

    fn around(store: Store) -> Result<ReplicatedState, StorageError> {
        let members = read_members(&store)?;
        let applied_index = store.applied().index;
        Ok(ReplicatedState {
            store,
            members,
            applied_index,
        })
    }
}

fn read_members(store: &Store) -> Result<BTreeMap<NodeId, MemberInfo>, StorageError> {
    let records = store
        .members()
        .map_err(|error| StorageError(format!("reading the member registry: {error}")))?;
    records
        .into_iter()
        .map(|(id, record)| {
            decode_member(&record)
                .map(|member| (id, member))
                .map_err(|error| {
                    StorageError(format!("the engine's record of member {id:x}: {error}"))
                })
        })
        .collect()
}

/// A snapshot received from the leader, stored aside until the applier
/// installs it (see [`StateMachine::install_received`]).
struct StagedSnapshot {
    metadata: SnapshotMetadata,
    installer: SnapshotInstaller,
}

/// Shared handle to the state, for readers, the applier and the peer side
/// (which streams snapshots out of it and stages received ones).
#[derive(Clone)]
pub struct SharedState {
    state: Arc<RwLock<ReplicatedState>>,
    /// At most one: a newer transfer replaces an older one not installed.
    staged: Arc<Mutex<Option<StagedSnapshot>>>,
}

/// A handle that does not keep the state open: the peer side's. Its
/// connections can outlive the member that accepted them (until the
/// process ends), and the engine must close when the member stops, so that
/// a member restarted in the same process can open it again.
#[derive(Clone)]
pub struct WeakState {
    state: Weak<RwLock<ReplicatedState>>,
    staged: Weak<Mutex<Option<StagedSnapshot>>>,
}

impl WeakState {
    /// The state, unless the member stopped.
    pub fn upgrade(&self) -> Option<SharedState> {
        Some(SharedState {
            state: self.state.upgrade()?,
            staged: self.staged.upgrade()?,
        })
    }
}

impl SharedState {
    /// Waits up to `within` until this is the last handle that keeps the
    /// state open (requests and transfers still running hold one for a
    /// moment after the member stopped), then drops it: the engine is
    /// closed when this returns true, and may be opened again.
    pub async fn close_within(self, within: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + within;
        while Arc::strong_count(&self.state) > 1 {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        true
    }

    pub fn downgrade(&self) -> WeakState {
        WeakState {
            state: Arc::downgrade(&self.state),
            staged: Arc::downgrade(&self.staged),
        }
    }

    pub fn new(state: ReplicatedState) -> Self {
        SharedState {
            state: Arc::new(RwLock::new(state)),
            staged: Arc::new(Mutex::new(None)),
        }
    }

    /// Opens the engine under `path` (see [`ReplicatedState::open`]).
    pub fn open(path: &Path, options: &StoreOptions) -> Result<Self, StorageError> {
        Ok(SharedState::new(ReplicatedState::open(path, options)?))
    }

    /// A poisoned lock means the applier panicked mid-entry: the state may be
    /// half-applied, and serving from it could show a state no member ever
    /// had. Refuse instead.
    pub fn read(&self) -> Result<RwLockReadGuard<'_, ReplicatedState>, StorageError> {
        self.state.read().map_err(|_| {
            StorageError("the state machine failed while applying an entry".to_string())
        })
    }

    fn write(&self) -> Result<RwLockWriteGuard<'_, ReplicatedState>, StorageError> {
        self.state.write().map_err(|_| {
            StorageError("the state machine failed while applying an entry".to_string())
        })
    }

    /// A consistent view of the committed state, streamed in checksummed
    /// chunks; the lock is held only to open the view, applying goes on
    /// while it streams.
    pub fn snapshot_stream(&self) -> Result<SnapshotStream, StorageError> {
        self.read()?
            .store
            .snapshot()
            .map_err(|error| StorageError(format!("opening a snapshot of the engine: {error}")))
    }

    /// Compacts the engine's files fully, so that the space of versions an
    /// MVCC compaction removed is returned now (etcd's Defragment). Applying
    /// goes on meanwhile: the lock is held only to take the engine's handle
    /// and to note its new size.
    pub fn defragment(&self) -> Result<(), StorageError> {
        let compactor = self.read()?.store.compactor();
        compactor
            .major_compact()
            .map_err(|error| StorageError(format!("compacting the engine's files: {error}")))?;
        self.read()?.store.refresh_disk_bytes();
        Ok(())
    }

    /// Somewhere to receive a snapshot from the leader.
    pub fn snapshot_installer(&self) -> Result<SnapshotInstaller, StorageError> {
        self.read()?
            .store
            .snapshot_installer()
            .map_err(|error| StorageError(format!("preparing to receive a snapshot: {error}")))
    }

    /// Keeps a completely received snapshot for the Raft message
    /// `metadata` describes, replacing one not yet installed.
    pub fn stage_received(&self, metadata: SnapshotMetadata, installer: SnapshotInstaller) {
        let mut staged = self
            .staged
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *staged = Some(StagedSnapshot {
            metadata,
            installer,
        });
    }

    fn take_staged(&self, metadata: &SnapshotMetadata) -> Option<SnapshotInstaller> {
        let mut staged = self
            .staged
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match staged.take() {
            Some(found)
                if (found.metadata.index, found.metadata.term)
                    == (metadata.index, metadata.term) =>
            {
                Some(found.installer)
            }
            other => {
                *staged = other;
                None
            }
        }
    }
}

/// The applier's view of the shared state.
pub struct KvStateMachine {
    state: SharedState,
    /// The last entry applied, committed to the engine or not.
    applied: (u64, u64),
    /// Whether entries were applied since the last commit.
    uncommitted: bool,
}

impl KvStateMachine {
    pub fn new(state: SharedState) -> Result<Self, StorageError> {
        let applied = state.read()?.store.applied();
        Ok(KvStateMachine {
            state,
            applied: (applied.index, applied.term),
            uncommitted: false,
        })
    }
}

/// The one gate every applied entry passes: `index` must be the applied
/// index (`applied.0`) plus one. A gap or a repeat means the log handed out
/// is damaged or replayed wrongly; applying anyway would make this member
/// diverge silently, so it stops with both indexes named. Nothing of the
/// entry is applied.
fn advance(
    applied: &mut (u64, u64),
    uncommitted: &mut bool,
    state: &mut ReplicatedState,
    index: u64,
    term: u64,
) -> Result<(), StorageError> {
    let expected = applied.0.checked_add(1);
    if expected != Some(index) {
        return Err(StorageError(format!(
            "entry {index} was handed to the state machine after entry {}: entries must be \
             applied in order without gaps; the log or its replay is damaged, stopping \
             rather than diverging",
            applied.0
        )));
    }
    *applied = (index, term);
    state.applied_index = index;
    *uncommitted = true;
    Ok(())
}

fn engine_failure(index: u64) -> impl FnOnce(mvcc::Error) -> StorageError {
    move |error| StorageError(format!("applying entry {index} to the engine: {error}"))
}

impl StateMachine for KvStateMachine {
    fn reflects(&self, index: u64) -> bool {
        index <= self.applied.0
    }

    fn apply(&mut self, index: u64, term: u64, payload: Bytes) -> Result<Bytes, StorageError> {
        let mut guard = self.state.write()?;
        let state = &mut *guard;
        if payload.is_empty() {
            advance(&mut self.applied, &mut self.uncommitted, state, index, term)?;
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
        advance(&mut self.applied, &mut self.uncommitted, state, index, term)?;
        let response = match request.request {
            Some(internal_request::Request::Publish(attributes)) => publish(state, attributes),
            _ => state.store.apply(&request).map_err(engine_failure(index))?,
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
        let mut guard = self.state.write()?;
        let state = &mut *guard;
        advance(
            &mut self.applied,
            &mut self.uncommitted,
            state,
            entry.index,
            entry.term,
        )?;
        // The registry follows Raft's membership entry by entry. Raft
        // ignores adding a learner that is already a voter and removing a
        // stranger; so does this (the member is already there / absent).
        // A runtime member-add will carry the new member's peer URLs in the
        // change's context; the bootstrap entries carry none (they must be
        // byte-identical on every member, whatever its configuration).
        match change.change {
            ConfChangeKind::AddVoter | ConfChangeKind::AddLearner => {
                if !state.members.contains_key(&change.node_id) {
                    let member = MemberInfo::default();
                    state
                        .store
                        .put_member(change.node_id, &encode_member(&member));
                    state.members.insert(change.node_id, member);
                }
            }
            ConfChangeKind::Remove => {
                if state.members.remove(&change.node_id).is_some() {
                    state.store.remove_member(change.node_id);
                }
            }
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<(), StorageError> {
        if !self.uncommitted {
            return Ok(());
        }
        let (index, term) = self.applied;
        self.state
            .write()?
            .store
            .commit(index, term)
            .map_err(|error| {
                StorageError(format!(
                    "committing the entries up to {index} to the engine: {error}"
                ))
            })?;
        self.uncommitted = false;
        Ok(())
    }

    fn persist(&mut self) -> Result<(), StorageError> {
        self.state
            .read()?
            .store
            .persist()
            .map_err(|error| StorageError(format!("syncing the engine: {error}")))
    }

    fn install_received(&mut self, snapshot: &SnapshotMetadata) -> Result<bool, StorageError> {
        debug_assert!(!self.uncommitted, "installs come between batches");
        let Some(installer) = self.state.take_staged(snapshot) else {
            tracing::info!(
                index = snapshot.index,
                "a received snapshot was replaced by a newer one before it could be installed"
            );
            return Ok(false);
        };
        let covers = installer.header().map(|header| (header.index, header.term));
        match covers {
            Some((index, _)) if index >= snapshot.index => {}
            _ => {
                // The leader streams its engine as of when it sends, which
                // is never behind the snapshot it told Raft about.
                tracing::warn!(
                    raft_index = snapshot.index,
                    data = ?covers,
                    "a received snapshot's data is older than its Raft message; dropping it"
                );
                return Ok(false);
            }
        }
        if self.applied.0 >= snapshot.index {
            // Already as far: nothing to replace (Raft decides whether to
            // record the snapshot; the state holds it either way).
            return Ok(true);
        }
        let mut guard = self.state.write()?;
        let installed = guard.store.install(installer).map_err(|error| {
            StorageError(format!(
                "installing the snapshot at index {} received from the leader: {error}",
                snapshot.index
            ))
        })?;
        guard.members = read_members(&guard.store)?;
        guard.applied_index = installed.index;
        self.applied = (installed.index, installed.term);
        tracing::info!(
            index = installed.index,
            term = installed.term,
            raft_index = snapshot.index,
            "installed a snapshot received from the leader"
        );
        Ok(true)
    }

    fn install_snapshot(&mut self, snapshot: &SnapshotMetadata) -> Result<(), StorageError> {
        if self.applied.0 < snapshot.index {
            // The peer side installs a received snapshot before Raft sees
            // its message (`install_received`): Raft recording one the
            // state does not hold means that order was broken.
            return Err(StorageError(format!(
                "Raft recorded the snapshot at index {} (term {}), but the state machine holds \
                 only index {}",
                snapshot.index, snapshot.term, self.applied.0
            )));
        }
        Ok(())
    }

    fn applied_index(&self) -> u64 {
        self.applied.0
    }
}

/// A member announces its name and URLs. Only a member the registry holds
/// (added by a conf-change entry) is updated: a late publish from a
/// removed member must not bring it back. An empty `peer_urls` (an entry
/// written before publishes carried them) leaves the known ones.
fn publish(state: &mut ReplicatedState, attributes: MemberAttributes) -> InternalResponse {
    let Some(member) = state.members.get_mut(&attributes.member_id) else {
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
    state
        .store
        .put_member(attributes.member_id, &encode_member(member));
    InternalResponse {
        response: Some(internal_response::Response::Published(attributes)),
    }
}

/// A member's registry record in the engine: `name | peer URLs | client
/// URLs` (strings length-prefixed, lists counted, little-endian).
fn encode_member(member: &MemberInfo) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = write_string(&mut out, &member.name)
        .and_then(|()| write_strings(&mut out, &member.peer_urls))
        .and_then(|()| write_strings(&mut out, &member.client_urls));
    out
}

fn decode_member(record: &[u8]) -> io::Result<MemberInfo> {
    let mut input = record;
    let member = MemberInfo {
        name: read_string(&mut input)?,
        peer_urls: read_strings(&mut input)?,
        client_urls: read_strings(&mut input)?,
    };
    if !input.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bytes after the member record",
        ));
    }
    Ok(member)
}

fn write_string(out: &mut impl Write, text: &str) -> io::Result<()> {
    out.write_all(&(text.len() as u32).to_le_bytes())?;
    out.write_all(text.as_bytes())
}

fn read_u32(input: &mut impl Read) -> io::Result<u32> {
    let mut bytes = [0u8; 4];
    input.read_exact(&mut bytes)?;
    Ok(u32::from_le_bytes(bytes))
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
