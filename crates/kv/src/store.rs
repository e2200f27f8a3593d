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

use std::collections::{BTreeMap, HashSet};

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
/// etcd has no depth limit of its own (only the request size); raftkv's
/// comes from protobuf decoding, see [`MAX_TXN_NESTING`].
pub const ERR_TXN_TOO_DEEP: ApplyError = ApplyError::new(
    code::INVALID_ARGUMENT,
    "etcdserver: transaction nested too deeply",
);
/// How many transactions deep one request may nest, the outermost counted.
///
/// Every committed entry must decode on every member, or their apply
/// threads stop at it for good. prost refuses messages nested more than 100
/// levels deep; a log entry wraps the client's transaction in one more
/// message than the client sent, and each level of nesting costs two (a
/// `TxnRequest` and its `RequestOp`), so 49 transactions deep is the most
/// that both a client request and its entry can hold. 32 keeps a margin
/// for the entry's framing to grow.
pub const MAX_TXN_NESTING: usize = 32;
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

/// Stateless checks done before a request enters the log, as etcd's API
/// layer does them (`checkPutRequest`, `checkTxnRequest`, `checkIntervals`
/// in etcd 3.4's `v3rpc/key.go`), with its errors.
pub fn validate_request(request: &InternalRequest, max_txn_ops: usize) -> Result<(), ApplyError> {
    match &request.request {
        Some(internal_request::Request::Put(put)) => validate_put(put),
        Some(internal_request::Request::DeleteRange(delete)) if delete.key.is_empty() => {
            Err(ERR_EMPTY_KEY)
        }
        Some(internal_request::Request::Txn(txn)) => {
            validate_txn(txn, max_txn_ops, 1)?;
            // After the per-op checks, which bound the number of ops, so the
            // overlap check below stays cheap (etcd's order).
            check_overlaps(&txn.success)?;
            check_overlaps(&txn.failure)?;
            Ok(())
        }
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

fn validate_put(put: &PutRequest) -> Result<(), ApplyError> {
    if put.key.is_empty() {
        return Err(ERR_EMPTY_KEY);
    }
    if put.ignore_value && !put.value.is_empty() {
        return Err(ERR_VALUE_PROVIDED);
    }
    if put.ignore_lease && put.lease != 0 {
        return Err(ERR_LEASE_PROVIDED);
    }
    Ok(())
}

/// `max_ops` bounds the compares and each branch of this transaction; a
/// nested transaction gets what its parent left (etcd passes
/// `maxTxnOps - opc` down). `depth` counts this transaction and those
/// around it.
fn validate_txn(txn: &TxnRequest, max_ops: usize, depth: usize) -> Result<(), ApplyError> {
    if depth > MAX_TXN_NESTING {
        return Err(ERR_TXN_TOO_DEEP);
    }
    let ops = txn
        .compare
        .len()
        .max(txn.success.len())
        .max(txn.failure.len());
    if ops > max_ops {
        return Err(ERR_TOO_MANY_OPS);
    }
    for compare in &txn.compare {
        if compare.key.is_empty() {
            return Err(ERR_EMPTY_KEY);
        }
    }
    for op in txn.success.iter().chain(&txn.failure) {
        match &op.request {
            Some(request_op::Request::RequestRange(range)) => validate_range(range)?,
            Some(request_op::Request::RequestPut(put)) => validate_put(put)?,
            Some(request_op::Request::RequestDeleteRange(delete)) if delete.key.is_empty() => {
                return Err(ERR_EMPTY_KEY)
            }
            Some(request_op::Request::RequestDeleteRange(_)) => {}
            Some(request_op::Request::RequestTxn(nested)) => {
                validate_txn(nested, max_ops - ops, depth + 1)?
            }
            // etcd answers an empty op with this text.
            None => return Err(ERR_KEY_NOT_FOUND),
        }
    }
    Ok(())
}

/// The writes one list of ops may make, across every transaction nested in
/// it: keys put, and keys deleted.
struct WriteSet<'a> {
    puts: HashSet<&'a [u8]>,
    deletes: DeletedKeys<'a>,
}

/// Keys covered by deletes, answering "is this key deleted" in O(log n):
/// single keys in a set, ranges merged into disjoint intervals (only
/// coverage matters, not which delete covers a key).
#[derive(Default)]
struct DeletedKeys<'a> {
    keys: HashSet<&'a [u8]>,
    /// Disjoint `[start, end)` intervals, by start; no two overlap or touch.
    ranges: BTreeMap<&'a [u8], &'a [u8]>,
}

impl<'a> DeletedKeys<'a> {
    /// A delete of `[start, end)` by bytes (end empty: one key). etcd's
    /// "from key" end (`\0`) and an end before its start cover nothing
    /// here: etcd's interval check reads them that way too (etcd 3.4.23
    /// accepts `del a --from-key; put a x` in one transaction).
    fn insert(&mut self, start: &'a [u8], end: &'a [u8]) {
        if end.is_empty() {
            self.keys.insert(start);
            return;
        }
        if start >= end {
            return;
        }
        let (mut start, mut end) = (start, end);
        if let Some((&before, &before_end)) = self.ranges.range(..=start).next_back() {
            if before_end >= start {
                start = before;
                end = end.max(before_end);
                self.ranges.remove(before);
            }
        }
        while let Some((&next, &next_end)) = self.ranges.range(start..).next() {
            if next > end {
                break;
            }
            end = end.max(next_end);
            self.ranges.remove(next);
        }
        self.ranges.insert(start, end);
    }

    fn covers(&self, key: &[u8]) -> bool {
        self.keys.contains(key)
            || self
                .ranges
                .range(..=key)
                .next_back()
                .is_some_and(|(_, end)| key < *end)
    }

    fn extend(&mut self, other: DeletedKeys<'a>) {
        self.keys.extend(other.keys);
        for (start, end) in other.ranges {
            self.insert(start, end);
        }
    }
}

/// A key written twice, or put and deleted, on any path through a branch
/// and the transactions nested in it is ambiguous: refused as etcd's
/// `checkIntervals` refuses it. The two branches of one nested transaction
/// exclude each other, so each may put the same key.
fn check_overlaps(ops: &[RequestOp]) -> Result<(), ApplyError> {
    collect_overlap_free_writes(ops).map(|_| ())
}

fn collect_overlap_free_writes(ops: &[RequestOp]) -> Result<WriteSet<'_>, ApplyError> {
    let mut writes = WriteSet {
        puts: HashSet::new(),
        deletes: DeletedKeys::default(),
    };
    for op in ops {
        if let Some(request_op::Request::RequestDeleteRange(delete)) = &op.request {
            writes
                .deletes
                .insert(delete.key.as_ref(), delete.range_end.as_ref());
        }
    }
    for op in ops {
        let Some(request_op::Request::RequestTxn(nested)) = &op.request else {
            continue;
        };
        let then = collect_overlap_free_writes(&nested.success)?;
        let otherwise = collect_overlap_free_writes(&nested.failure)?;
        for key in &then.puts {
            if writes.puts.contains(key) || writes.deletes.covers(key) {
                return Err(ERR_DUPLICATE_KEY);
            }
            writes.puts.insert(key);
        }
        for key in &otherwise.puts {
            if (writes.puts.contains(key) && !then.puts.contains(key)) || writes.deletes.covers(key)
            {
                return Err(ERR_DUPLICATE_KEY);
            }
            writes.puts.insert(key);
        }
        writes.deletes.extend(then.deletes);
        writes.deletes.extend(otherwise.deletes);
    }
    for op in ops {
        if let Some(request_op::Request::RequestPut(put)) = &op.request {
            let key = put.key.as_ref();
            if writes.puts.contains(key) || writes.deletes.covers(key) {
                return Err(ERR_DUPLICATE_KEY);
            }
            writes.puts.insert(key);
        }
    }
    Ok(writes)
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
/// keys it touched ([`Store::roll_back`]).
struct WriteContext {
    main: i64,
    next_sub: i64,
    /// Keys changed so far, kept only for writes that can still fail after
    /// changing something (transactions); a single put or delete checks
    /// everything first.
    touched: Option<Vec<Bytes>>,
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

    fn record_touched(&mut self, key: &Bytes) {
        if let Some(touched) = &mut self.touched {
            touched.push(key.clone());
        }
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
    /// refused write changes nothing.
    fn apply_write<T>(
        &mut self,
        write: impl FnOnce(&mut Store, &mut WriteContext) -> Result<T, ApplyError>,
    ) -> Result<(T, i64), ApplyError> {
        let mut ctx = WriteContext {
            main: self.current_revision + 1,
            next_sub: 0,
            touched: None,
            stored_bytes_before: self.stored_bytes,
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
                if ctx.changed() {
                    self.roll_back(ctx);
                }
                Err(error)
            }
        }
    }

    /// Undoes a write that failed after changing something. Every write path
    /// checks what can fail before it changes anything, so this runs only
    /// when those checks missed a case (or for a request that skipped
    /// [`validate_request`]); then the write is refused as a whole rather
    /// than half applied.
    ///
    /// # Panics
    /// If the write changed something without recording the keys it
    /// touched: a write path that can fail after a change must track them.
    fn roll_back(&mut self, ctx: WriteContext) {
        let touched = ctx.touched.unwrap_or_else(|| {
            panic!(
                "a write at revision {} failed after changing the store without tracking its keys",
                ctx.main
            )
        });
        for key in &touched {
            self.index.forget_changes_at(key, ctx.main);
        }
        // The write's values are the newest: they sort after everything else.
        drop(self.values.split_off(&Revision::new(ctx.main, 0)));
        self.stored_bytes = ctx.stored_bytes_before;
        debug_assert!(
            self.values
                .last_key_value()
                .is_none_or(|(revision, _)| revision.main < ctx.main),
            "a rolled-back write left a value behind"
        );
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
        // The lease before the key, as etcd's `Put` checks them (inside a
        // transaction `check_put_op` has already checked both, key first).
        // No lease can exist until leases are implemented.
        if put.lease != 0 {
            return Err(ERR_LEASE_NOT_FOUND);
        }
        if (put.ignore_value || put.ignore_lease) && previous.is_none() {
            return Err(ERR_KEY_NOT_FOUND);
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
        ctx.record_touched(&put.key);
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
            ctx.record_touched(key);
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

    /// A transaction, as etcd 3.4 applies one: every compare, nested ones
    /// included, is decided against the store as the transaction found it
    /// (the path through the nested transactions is fixed before any op
    /// runs); then every op on that path that could fail is checked (puts
    /// first, then ranges, as etcd orders them); only then do the ops run,
    /// in order, each seeing the changes of those before it.
    fn txn(&mut self, txn: &TxnRequest, ctx: &mut WriteContext) -> Result<TxnResponse, ApplyError> {
        let found_at = self.current_revision;
        let mut path = Vec::new();
        self.decide_path(txn, found_at, &mut path);
        self.check_path(txn, &path, &mut 0, &|store, op| {
            store.check_put_op(op, found_at)
        })?;
        self.check_path(txn, &path, &mut 0, &|store, op| {
            store.check_range_op(op, found_at)
        })?;
        // Should an op fail anyway (a request that skipped validation), the
        // keys changed so far let `apply_write` undo the whole transaction.
        ctx.touched.get_or_insert_with(Vec::new);
        self.run_path(txn, &path, &mut 0, ctx)
    }

    /// Appends, in pre-order, whether each transaction on the path taken
    /// runs its success branch (etcd's `compareToPath`).
    fn decide_path(&self, txn: &TxnRequest, at: i64, path: &mut Vec<bool>) {
        let succeeded = txn
            .compare
            .iter()
            .all(|compare| self.compare_holds(compare, at));
        path.push(succeeded);
        for op in branch(txn, succeeded) {
            if let Some(request_op::Request::RequestTxn(nested)) = &op.request {
                self.decide_path(nested, at, path);
            }
        }
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
    /// `ignore_lease`, a lease that does not exist. Validation has made sure
    /// no earlier op of the transaction touches the key.
    fn check_put_op(&self, op: &RequestOp, found_at: i64) -> Result<(), ApplyError> {
        let Some(request_op::Request::RequestPut(put)) = &op.request else {
            return Ok(());
        };
        if put.ignore_value && !put.value.is_empty() {
            return Err(ERR_VALUE_PROVIDED);
        }
        if put.ignore_lease && put.lease != 0 {
            return Err(ERR_LEASE_PROVIDED);
        }
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
    ) -> Result<TxnResponse, ApplyError> {
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
                None => return Err(ERR_KEY_NOT_FOUND),
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

    fn compare_holds(&self, compare: &Compare, at: i64) -> bool {
        // An unknown target compares as equal, as in etcd's `compareKV`.
        let target = compare::CompareTarget::try_from(compare.target).ok();
        let matched: Vec<KeyValue> = self
            .matching(&compare.key, &compare.range_end, at)
            .map(|(key, info)| self.key_value(key, info, false))
            .collect();
        if matched.is_empty() {
            // A missing key has version, revisions and lease 0, but no value
            // at all: a value comparison on it always fails.
            if target == Some(compare::CompareTarget::Value) {
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
