//! The replicated state machine of a member: the MVCC key-value store and
//! the member registry, fed committed entries in log order by the applier.
//!
//! Readers (the client services) share it behind a `RwLock`: the applier
//! holds the write lock for one entry at a time, so reads interleave with
//! applies and never wait for a whole batch.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bytes::Bytes;
use kv::Store;
use prost::Message as _;
use proto::internal::{
    internal_request, internal_response, InternalRequest, InternalResponse, MemberAttributes,
};
use raft::{Entry, NodeId, Snapshot};

use crate::node::{StateMachine, StorageError};

/// What the cluster knows of a member beyond its Raft id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberInfo {
    pub name: String,
    pub peer_urls: Vec<String>,
    pub client_urls: Vec<String>,
}

#[derive(Debug, Default)]
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
}

impl KvStateMachine {
    pub fn new(state: SharedState) -> Self {
        KvStateMachine {
            state,
            applied_index: 0,
        }
    }
}

impl StateMachine for KvStateMachine {
    fn apply(&mut self, index: u64, _term: u64, payload: &[u8]) -> Result<Bytes, StorageError> {
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

    fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        // Snapshot transfer between members arrives with the persistent
        // state machine; until then the transport never delivers one.
        Err(StorageError(format!(
            "cannot install the snapshot at index {}: snapshot transfer is not supported yet",
            snapshot.metadata.index
        )))
    }

    fn applied_index(&self) -> u64 {
        self.applied_index
    }
}
