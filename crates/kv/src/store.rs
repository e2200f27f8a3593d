//! The MVCC store: etcd's key-value semantics over revisions.
//!
//! Every write request that changes something raises the store's revision by
//! exactly one; all changes of one transaction share it (ordered by a sub
//! revision). Reads name a revision (or the current one) and see the store
//! exactly as of then, unless compaction has dropped that history.
//!
//! Application is deterministic: the same requests applied in the same order
//! give the same store and the same responses on every member. Requests are
//! validated twice: statelessly before they enter the log
//! ([`validate_request`]), and against the store when applied, where a refusal
//! is part of the replicated outcome ([`ApplyError`]).

use std::collections::BTreeMap;

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

use crate::index::{KeyIndex, Revision, VersionInfo};

/// gRPC status codes used by etcd's errors.
pub mod code {
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const NOT_FOUND: i32 = 5;
    pub const FAILED_PRECONDITION: i32 = 9;
    pub const OUT_OF_RANGE: i32 = 11;
}

/// A request refused, with etcd's gRPC code and message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApplyError {
    pub grpc_code: i32,
    pub message: &'static str,
}

impl ApplyError {
    const fn new(grpc_code: i32, message: &'static str) -> Self {
        ApplyError { grpc_code, message }
    }
}

pub const ERR_EMPTY_KEY: ApplyError =
    ApplyError::new(code::INVALID_ARGUMENT, "etcdserver: key is not provided");
pub const ERR_KEY_NOT_FOUND: ApplyError =
    ApplyError::new(code::INVALID_ARGUMENT, "etcdserver: key not found");
pub const ERR_VALUE_PROVIDED: ApplyError =
    ApplyError::new(code::INVALID_ARGUMENT, "etcdserver: value is provided");
pub const ERR_LEASE_PROVIDED: ApplyError =
    ApplyError::new(code::INVALID_ARGUMENT, "etcdserver: lease is provided");
pub const ERR_TOO_MANY_OPS: ApplyError = ApplyError::new(
    code::INVALID_ARGUMENT,
    "etcdserver: too many operations in txn request",
);
pub const ERR_DUPLICATE_KEY: ApplyError = ApplyError::new(
    code::INVALID_ARGUMENT,
    "etcdserver: duplicate key given in txn request",
);
pub const ERR_COMPACTED: ApplyError = ApplyError::new(
    code::OUT_OF_RANGE,
    "etcdserver: mvcc: required revision has been compacted",
);
pub const ERR_FUTURE_REV: ApplyError = ApplyError::new(
    code::OUT_OF_RANGE,
    "etcdserver: mvcc: required revision is a future revision",
);
pub const ERR_LEASE_NOT_FOUND: ApplyError =
    ApplyError::new(code::NOT_FOUND, "etcdserver: requested lease not found");
pub const ERR_EMPTY_REQUEST: ApplyError =
    ApplyError::new(code::INVALID_ARGUMENT, "etcdserver: empty request");

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StoredValue {
    pub(crate) value: Bytes,
    pub(crate) lease: i64,
}

/// The store. Revisions start at 1 on a fresh store.
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) index: KeyIndex,
    pub(crate) values: BTreeMap<Revision, StoredValue>,
    pub(crate) current_revision: i64,
    pub(crate) compacted_revision: i64,
    /// Bytes of keys and values held, every version counted (what etcd
    /// reports as the database size in use).
    pub(crate) stored_bytes: u64,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            index: KeyIndex::default(),
            values: BTreeMap::new(),
            current_revision: 1,
            compacted_revision: 0,
            stored_bytes: 0,
        }
    }
}

/// Stateless checks done before a request enters the log, as etcd does.
pub fn validate_request(request: &InternalRequest, max_txn_ops: usize) -> Result<(), ApplyError> {
    match &request.request {
        Some(internal_request::Request::Put(put)) if put.key.is_empty() => Err(ERR_EMPTY_KEY),
        Some(internal_request::Request::DeleteRange(delete)) if delete.key.is_empty() => {
            Err(ERR_EMPTY_KEY)
        }
        Some(internal_request::Request::Txn(txn)) => validate_txn(txn, max_txn_ops),
        Some(_) => Ok(()),
        None => Err(ERR_EMPTY_REQUEST),
    }
}

pub fn validate_range(range: &RangeRequest) -> Result<(), ApplyError> {
    if range.key.is_empty() {
        return Err(ERR_EMPTY_KEY);
    }
    Ok(())
}

fn validate_txn(txn: &TxnRequest, max_txn_ops: usize) -> Result<(), ApplyError> {
    let ops = txn
        .compare
        .len()
        .max(txn.success.len())
        .max(txn.failure.len());
    if ops > max_txn_ops {
        return Err(ERR_TOO_MANY_OPS);
    }
    for compare in &txn.compare {
        if compare.key.is_empty() {
            return Err(ERR_EMPTY_KEY);
        }
    }
    for branch in [&txn.success, &txn.failure] {
        for op in branch {
            match &op.request {
                Some(request_op::Request::RequestRange(range)) => validate_range(range)?,
                Some(request_op::Request::RequestPut(put)) if put.key.is_empty() => {
                    return Err(ERR_EMPTY_KEY)
                }
                Some(request_op::Request::RequestDeleteRange(delete)) if delete.key.is_empty() => {
                    return Err(ERR_EMPTY_KEY)
                }
                Some(request_op::Request::RequestTxn(nested)) => validate_txn(nested, max_txn_ops)?,
                Some(_) => {}
                None => return Err(ERR_EMPTY_REQUEST),
            }
        }
        check_no_duplicate_writes(branch)?;
    }
    Ok(())
}

/// A key put twice in one branch, or put and deleted, is ambiguous: etcd
/// refuses it, and so do we.
fn check_no_duplicate_writes(ops: &[RequestOp]) -> Result<(), ApplyError> {
    let mut puts: Vec<&Bytes> = Vec::new();
    let mut deletes: Vec<(&Bytes, &Bytes)> = Vec::new();
    collect_writes(ops, &mut puts, &mut deletes);
    let mut sorted = puts.clone();
    sorted.sort();
    if sorted.windows(2).any(|pair| pair[0] == pair[1]) {
        return Err(ERR_DUPLICATE_KEY);
    }
    for key in puts {
        for (start, end) in &deletes {
            if key_in_range(key, start, end) {
                return Err(ERR_DUPLICATE_KEY);
            }
        }
    }
    Ok(())
}

fn collect_writes<'a>(
    ops: &'a [RequestOp],
    puts: &mut Vec<&'a Bytes>,
    deletes: &mut Vec<(&'a Bytes, &'a Bytes)>,
) {
    for op in ops {
        match &op.request {
            Some(request_op::Request::RequestPut(put)) => puts.push(&put.key),
            Some(request_op::Request::RequestDeleteRange(delete)) => {
                deletes.push((&delete.key, &delete.range_end))
            }
            // A nested transaction's branches are checked on their own (in
            // `validate_txn`): only one of them runs.
            _ => {}
        }
    }
}

/// Whether `key` falls in etcd's range (`end` empty: just `start`; `end` =
/// "\0": everything from `start` on).
fn key_in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    match range_end(end) {
        RangeEnd::Single => key == start,
        RangeEnd::Unbounded => key >= start,
        RangeEnd::Before(end) => key >= start && key < end,
    }
}

enum RangeEnd<'a> {
    Single,
    Unbounded,
    Before(&'a [u8]),
}

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
struct WriteContext {
    main: i64,
    next_sub: i64,
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
}

impl Store {
    pub fn current_revision(&self) -> i64 {
        self.current_revision
    }

    pub fn compacted_revision(&self) -> i64 {
        self.compacted_revision
    }

    pub fn key_count(&self) -> usize {
        self.index.key_count()
    }

    pub fn stored_bytes(&self) -> u64 {
        self.stored_bytes
    }

    /// A checksum of the history up to `revision` (0: the current one): every
    /// retained version's key, revision and value, and the compaction
    /// point. Members that applied the same log agree on it; operators
    /// compare it across members (`etcdctl endpoint hashkv`). Returns the
    /// hash and the compacted revision.
    pub fn hash_kv(&self, revision: i64) -> Result<(u32, i64), ApplyError> {
        let at = if revision <= 0 {
            self.current_revision
        } else {
            revision
        };
        if at > self.current_revision {
            return Err(ERR_FUTURE_REV);
        }
        if revision > 0 && at < self.compacted_revision {
            return Err(ERR_COMPACTED);
        }
        let mut hash = crc32c::crc32c(&self.compacted_revision.to_be_bytes());
        for (key, version, deleted) in self.index.changes_until(at) {
            hash = crc32c::crc32c_append(hash, key);
            hash = crc32c::crc32c_append(hash, &version.main.to_be_bytes());
            hash = crc32c::crc32c_append(hash, &version.sub.to_be_bytes());
            if deleted {
                hash = crc32c::crc32c_append(hash, b"\0deleted");
            } else if let Some(stored) = self.values.get(&version) {
                hash = crc32c::crc32c_append(hash, &stored.value);
                hash = crc32c::crc32c_append(hash, &stored.lease.to_be_bytes());
            }
        }
        Ok((hash, self.compacted_revision))
    }

    /// Applies one committed request. Refusals are returned inside the
    /// response, as they are part of the replicated outcome.
    pub fn apply(&mut self, request: &InternalRequest) -> InternalResponse {
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
                    set_txn_headers(&mut response, revision);
                    internal_response::Response::Txn(response)
                }),
            Some(internal_request::Request::Compaction(compaction)) => self
                .compact(compaction)
                .map(internal_response::Response::Compaction),
            Some(internal_request::Request::Publish(_)) => Err(ApplyError::new(
                code::INVALID_ARGUMENT,
                "etcdserver: member attributes are not a key-value request",
            )),
            Some(internal_request::Request::LeaseGrant(_))
            | Some(internal_request::Request::LeaseRevoke(_)) => Err(ApplyError::new(
                code::FAILED_PRECONDITION,
                "etcdserver: leases are not supported yet",
            )),
            None => Err(ERR_EMPTY_REQUEST),
        };
        InternalResponse {
            response: Some(response.unwrap_or_else(|error| {
                internal_response::Response::Error(WireApplyError {
                    grpc_code: error.grpc_code,
                    message: error.message.to_string(),
                })
            })),
        }
    }

    /// Runs a write; the revision moves only if it changed something, and a
    /// refused write changes nothing (its partial changes are undone).
    fn apply_write<T>(
        &mut self,
        write: impl FnOnce(&mut Store, &mut WriteContext) -> Result<T, ApplyError>,
    ) -> Result<(T, i64), ApplyError> {
        let mut ctx = WriteContext {
            main: self.current_revision + 1,
            next_sub: 0,
        };
        let result = write(self, &mut ctx);
        match result {
            Ok(value) => {
                if ctx.changed() {
                    self.current_revision = ctx.main;
                }
                Ok((value, self.current_revision))
            }
            Err(error) => {
                // Validation happens before any change in every write path,
                // so nothing is left to undo; assert it.
                debug_assert!(
                    !ctx.changed(),
                    "a refused write must not have changed the store"
                );
                Err(error)
            }
        }
    }

    /// The revision reads inside the write see: their own earlier changes.
    fn read_revision_in(&self, ctx: &WriteContext) -> i64 {
        if ctx.changed() {
            ctx.main
        } else {
            self.current_revision
        }
    }

    fn key_value(&self, key: &Bytes, info: VersionInfo, keys_only: bool) -> KeyValue {
        key_value_in(&self.values, key, info, keys_only)
    }

    fn put(&mut self, put: &PutRequest, ctx: &mut WriteContext) -> Result<PutResponse, ApplyError> {
        let at = self.read_revision_in(ctx);
        // One index lookup serves both the read of the previous version and
        // the record of the new one (the lookup is most of a put's cost).
        let history = self.index.history_mut(&put.key);
        let previous = history.as_deref().and_then(|history| history.visible(at));
        if put.ignore_value && !put.value.is_empty() {
            return Err(ERR_VALUE_PROVIDED);
        }
        if put.ignore_lease && put.lease != 0 {
            return Err(ERR_LEASE_PROVIDED);
        }
        if (put.ignore_value || put.ignore_lease) && previous.is_none() {
            return Err(ERR_KEY_NOT_FOUND);
        }
        // No lease can exist until leases are implemented.
        if put.lease != 0 {
            return Err(ERR_LEASE_NOT_FOUND);
        }
        // Reading the previous value costs another lookup: only when asked.
        let needs_previous = put.prev_kv || put.ignore_value || put.ignore_lease;
        let previous_kv = previous
            .filter(|_| needs_previous)
            .map(|info| key_value_in(&self.values, &put.key, info, false));
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
        match history {
            Some(history) => history.record_put(revision),
            None => self.index.insert_created(put.key.clone(), revision),
        }
        self.stored_bytes += (put.key.len() + value.len()) as u64;
        self.values.insert(revision, StoredValue { value, lease });
        Ok(PutResponse {
            header: None,
            prev_kv: if put.prev_kv { previous_kv } else { None },
        })
    }

    fn delete_range(
        &mut self,
        delete: &DeleteRangeRequest,
        ctx: &mut WriteContext,
    ) -> Result<DeleteRangeResponse, ApplyError> {
        let at = self.read_revision_in(ctx);
        let victims: Vec<(Bytes, VersionInfo)> = self
            .matching(&delete.key, &delete.range_end, at)
            .map(|(key, info)| (key.clone(), info))
            .collect();
        let mut prev_kvs = Vec::new();
        for (key, info) in &victims {
            if delete.prev_kv {
                prev_kvs.push(self.key_value(key, *info, false));
            }
            let revision = ctx.next();
            self.index.delete(key, revision);
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
            RangeEnd::Single => Box::new(
                self.index
                    .range(key, None, at)
                    .take_while(move |(k, _)| k.as_ref() == key),
            ),
            RangeEnd::Unbounded => Box::new(self.index.range(key, None, at)),
            RangeEnd::Before(end) => Box::new(self.index.range(key, Some(end), at)),
        }
    }

    /// A read at the current revision (or `request.revision`).
    pub fn range(&self, request: &RangeRequest) -> Result<RangeResponse, ApplyError> {
        validate_range(request)?;
        self.range_at(request, self.current_revision)
    }

    fn range_at(&self, request: &RangeRequest, current: i64) -> Result<RangeResponse, ApplyError> {
        let at = if request.revision <= 0 {
            current
        } else {
            request.revision
        };
        if at > current {
            return Err(ERR_FUTURE_REV);
        }
        if request.revision > 0 && at < self.compacted_revision {
            return Err(ERR_COMPACTED);
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
        let mut count = 0i64;
        let mut kvs: Vec<KeyValue> = Vec::new();
        // Without sorting or filtering the key order is the answer's order,
        // so stop after limit + 1 (the extra one sets `more`).
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
            kvs.push(self.key_value(key, info, request.keys_only));
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

    fn txn(&mut self, txn: &TxnRequest, ctx: &mut WriteContext) -> Result<TxnResponse, ApplyError> {
        let at = self.read_revision_in(ctx);
        let succeeded = txn
            .compare
            .iter()
            .all(|compare| self.compare_holds(compare, at));
        let branch = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        // Check everything that can fail before changing anything, so a
        // refused transaction leaves no trace.
        self.precheck_ops(branch, at)?;
        let mut responses = Vec::with_capacity(branch.len());
        for op in branch {
            let response = match &op.request {
                Some(request_op::Request::RequestRange(range)) => {
                    let current = self.read_revision_in(ctx);
                    response_op::Response::ResponseRange(self.range_at(range, current)?)
                }
                Some(request_op::Request::RequestPut(put)) => {
                    response_op::Response::ResponsePut(self.put(put, ctx)?)
                }
                Some(request_op::Request::RequestDeleteRange(delete)) => {
                    response_op::Response::ResponseDeleteRange(self.delete_range(delete, ctx)?)
                }
                Some(request_op::Request::RequestTxn(nested)) => {
                    response_op::Response::ResponseTxn(self.txn(nested, ctx)?)
                }
                None => return Err(ERR_EMPTY_REQUEST),
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

    /// The failures a branch can hit when applied: a put needing an
    /// existing key or a lease, a read of compacted or future history.
    fn precheck_ops(&self, ops: &[RequestOp], at: i64) -> Result<(), ApplyError> {
        for op in ops {
            match &op.request {
                Some(request_op::Request::RequestPut(put)) => {
                    if put.ignore_value && !put.value.is_empty() {
                        return Err(ERR_VALUE_PROVIDED);
                    }
                    if put.ignore_lease && put.lease != 0 {
                        return Err(ERR_LEASE_PROVIDED);
                    }
                    if put.lease != 0 {
                        return Err(ERR_LEASE_NOT_FOUND);
                    }
                    // Like etcd, checked against the store as the transaction
                    // found it.
                    if (put.ignore_value || put.ignore_lease)
                        && self.index.get(&put.key, at).is_none()
                    {
                        return Err(ERR_KEY_NOT_FOUND);
                    }
                }
                Some(request_op::Request::RequestRange(range)) => {
                    if range.revision > 0 && range.revision < self.compacted_revision {
                        return Err(ERR_COMPACTED);
                    }
                    if range.revision > at {
                        return Err(ERR_FUTURE_REV);
                    }
                }
                Some(request_op::Request::RequestTxn(nested)) => {
                    let succeeded = nested
                        .compare
                        .iter()
                        .all(|compare| self.compare_holds(compare, at));
                    self.precheck_ops(
                        if succeeded {
                            &nested.success
                        } else {
                            &nested.failure
                        },
                        at,
                    )?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn compare_holds(&self, compare: &Compare, at: i64) -> bool {
        let target = compare::CompareTarget::try_from(compare.target)
            .unwrap_or(compare::CompareTarget::Version);
        let matched: Vec<KeyValue> = self
            .matching(&compare.key, &compare.range_end, at)
            .map(|(key, info)| self.key_value(key, info, false))
            .collect();
        if matched.is_empty() {
            // A missing key has version, revisions and lease 0, but no value
            // at all: a value comparison on it always fails.
            if target == compare::CompareTarget::Value {
                return false;
            }
            return compare_one(compare, target, &KeyValue::default());
        }
        matched.iter().all(|kv| compare_one(compare, target, kv))
    }

    fn compact(&mut self, request: &CompactionRequest) -> Result<CompactionResponse, ApplyError> {
        if request.revision <= self.compacted_revision {
            return Err(ERR_COMPACTED);
        }
        if request.revision > self.current_revision {
            return Err(ERR_FUTURE_REV);
        }
        for revision in self.index.compact(request.revision) {
            if let Some(removed) = self.values.remove(&revision) {
                // The key's length is not kept with the value; count the
                // value only, so the figure never goes below zero.
                self.stored_bytes = self.stored_bytes.saturating_sub(removed.value.len() as u64);
            }
        }
        self.compacted_revision = request.revision;
        Ok(CompactionResponse {
            header: Some(header(self.current_revision)),
        })
    }
}

fn compare_one(compare: &Compare, target: compare::CompareTarget, kv: &KeyValue) -> bool {
    use compare::TargetUnion;
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
    match compare::CompareResult::try_from(compare.result).unwrap_or(compare::CompareResult::Equal)
    {
        compare::CompareResult::Equal => ordering.is_eq(),
        compare::CompareResult::NotEqual => !ordering.is_eq(),
        compare::CompareResult::Greater => ordering.is_gt(),
        compare::CompareResult::Less => ordering.is_lt(),
    }
}

fn header(revision: i64) -> ResponseHeader {
    ResponseHeader {
        revision,
        ..ResponseHeader::default()
    }
}

fn set_txn_headers(response: &mut TxnResponse, revision: i64) {
    response.header = Some(header(revision));
    for op in &mut response.responses {
        match &mut op.response {
            Some(response_op::Response::ResponseRange(range)) => {
                range.header = Some(header(revision))
            }
            Some(response_op::Response::ResponsePut(put)) => put.header = Some(header(revision)),
            Some(response_op::Response::ResponseDeleteRange(delete)) => {
                delete.header = Some(header(revision))
            }
            Some(response_op::Response::ResponseTxn(nested)) => set_txn_headers(nested, revision),
            None => {}
        }
    }
}

fn key_value_in(
    values: &BTreeMap<Revision, StoredValue>,
    key: &Bytes,
    info: VersionInfo,
    keys_only: bool,
) -> KeyValue {
    let stored = values.get(&info.modified);
    debug_assert!(
        stored.is_some(),
        "index points at revision {:?} with no value",
        info.modified
    );
    let (value, lease) = stored.map_or((Bytes::new(), 0), |stored| {
        (stored.value.clone(), stored.lease)
    });
    KeyValue {
        key: key.clone(),
        create_revision: info.created.main,
        mod_revision: info.modified.main,
        version: info.version,
        value: if keys_only { Bytes::new() } else { value },
        lease,
    }
}
