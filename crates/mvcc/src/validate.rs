//! What etcd refuses, and the checks it makes before a request enters the
//! log: etcd's gRPC codes and error texts, [`validate_request`] (stateless,
//! as etcd's API layer checks), [`validate_range`].
//!
//! Refusals at apply time ([`crate::Store::apply`]) use the same errors;
//! they are part of the replicated outcome.

use std::collections::{BTreeMap, HashSet};

use proto::etcdserverpb::{request_op, PutRequest, RangeRequest, RequestOp, TxnRequest};
use proto::internal::{internal_request, InternalRequest};

use crate::keys::USER_KEY_BYTES_MAX;

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
    pub(crate) const fn new(grpc_code: i32, message: &'static str) -> Self {
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

/// raftkv's own limit (etcd has none but the request size): a key must fit
/// the engine's key, escaped, with its revision (see
/// [`crate::keys::USER_KEY_BYTES_MAX`]).
pub const ERR_KEY_TOO_LARGE: ApplyError =
    ApplyError::new(code::INVALID_ARGUMENT, "etcdserver: key is too large");
/// The longest key a put may write.
pub const MAX_KEY_BYTES: usize = USER_KEY_BYTES_MAX;

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
    check_put_fields(put)
}

/// What a put's own fields can be refused for once its key is there: a key
/// too large, `ignore_value` with a value, `ignore_lease` with a lease (in
/// etcd's order). Before the log, and again at apply for puts inside a
/// transaction.
pub(crate) fn check_put_fields(put: &PutRequest) -> Result<(), ApplyError> {
    if put.key.len() > MAX_KEY_BYTES {
        return Err(ERR_KEY_TOO_LARGE);
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
