//! A transaction builder: `Txn::new().when(..).and_then(..).or_else(..)`.

use bytes::Bytes;
use proto::etcdserverpb as pb;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareOp {
    Equal,
    NotEqual,
    Greater,
    Less,
}

impl CompareOp {
    fn result(self) -> i32 {
        (match self {
            CompareOp::Equal => pb::compare::CompareResult::Equal,
            CompareOp::NotEqual => pb::compare::CompareResult::NotEqual,
            CompareOp::Greater => pb::compare::CompareResult::Greater,
            CompareOp::Less => pb::compare::CompareResult::Less,
        }) as i32
    }
}

/// One guard of a transaction.
#[derive(Clone, Debug)]
pub struct Compare(pb::Compare);

impl Compare {
    fn new(
        key: Bytes,
        op: CompareOp,
        target: pb::compare::CompareTarget,
        operand: pb::compare::TargetUnion,
    ) -> Self {
        Compare(pb::Compare {
            result: op.result(),
            target: target as i32,
            key,
            target_union: Some(operand),
            range_end: Bytes::new(),
        })
    }

    pub fn value(key: impl Into<Bytes>, op: CompareOp, value: impl Into<Bytes>) -> Self {
        Compare::new(
            key.into(),
            op,
            pb::compare::CompareTarget::Value,
            pb::compare::TargetUnion::Value(value.into()),
        )
    }

    pub fn version(key: impl Into<Bytes>, op: CompareOp, version: i64) -> Self {
        Compare::new(
            key.into(),
            op,
            pb::compare::CompareTarget::Version,
            pb::compare::TargetUnion::Version(version),
        )
    }

    /// `create_revision(key) op revision`; `Equal 0` means "key absent".
    pub fn create_revision(key: impl Into<Bytes>, op: CompareOp, revision: i64) -> Self {
        Compare::new(
            key.into(),
            op,
            pb::compare::CompareTarget::Create,
            pb::compare::TargetUnion::CreateRevision(revision),
        )
    }

    /// A guard built directly from the generated message.
    pub fn from_proto(compare: pb::Compare) -> Self {
        Compare(compare)
    }

    pub fn mod_revision(key: impl Into<Bytes>, op: CompareOp, revision: i64) -> Self {
        Compare::new(
            key.into(),
            op,
            pb::compare::CompareTarget::Mod,
            pb::compare::TargetUnion::ModRevision(revision),
        )
    }
}

/// One operation of a transaction branch.
#[derive(Clone, Debug)]
pub struct TxnOp(pb::RequestOp);

impl TxnOp {
    pub fn put(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        TxnOp(pb::RequestOp {
            request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
                key: key.into(),
                value: value.into(),
                ..pb::PutRequest::default()
            })),
        })
    }

    pub fn get(key: impl Into<Bytes>) -> Self {
        TxnOp(pb::RequestOp {
            request: Some(pb::request_op::Request::RequestRange(pb::RangeRequest {
                key: key.into(),
                ..pb::RangeRequest::default()
            })),
        })
    }

    pub fn delete(key: impl Into<Bytes>) -> Self {
        TxnOp(pb::RequestOp {
            request: Some(pb::request_op::Request::RequestDeleteRange(
                pb::DeleteRangeRequest {
                    key: key.into(),
                    ..pb::DeleteRangeRequest::default()
                },
            )),
        })
    }

    /// An operation built directly from the generated message.
    pub fn from_proto(op: pb::RequestOp) -> Self {
        TxnOp(op)
    }

    pub fn txn(txn: Txn) -> Self {
        TxnOp(pb::RequestOp {
            request: Some(pb::request_op::Request::RequestTxn(txn.into_request())),
        })
    }
}

/// A transaction: if every `when` guard holds, `and_then` runs, else
/// `or_else`.
#[derive(Clone, Debug, Default)]
pub struct Txn {
    request: pb::TxnRequest,
}

impl Txn {
    pub fn new() -> Self {
        Txn::default()
    }

    pub fn when(mut self, compares: impl IntoIterator<Item = Compare>) -> Self {
        self.request
            .compare
            .extend(compares.into_iter().map(|compare| compare.0));
        self
    }

    pub fn and_then(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.request.success.extend(ops.into_iter().map(|op| op.0));
        self
    }

    pub fn or_else(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Self {
        self.request.failure.extend(ops.into_iter().map(|op| op.0));
        self
    }

    pub fn into_request(self) -> pb::TxnRequest {
        self.request
    }
}

/// Whether no branch (nested ones too) writes.
pub(crate) fn is_read_only(request: &pb::TxnRequest) -> bool {
    request
        .success
        .iter()
        .chain(&request.failure)
        .all(|op| match &op.request {
            Some(pb::request_op::Request::RequestRange(_)) | None => true,
            Some(pb::request_op::Request::RequestTxn(nested)) => is_read_only(nested),
            _ => false,
        })
}
