//! Property test: the store against a naive model that keeps a full copy of
//! the key space at every revision and applies transactions as etcd 3.4
//! does (compares decided first, then checks, then the ops in order).
//!
//! Requests are mostly validated first, as the server does, and sometimes
//! applied without validation: the store must then either answer as the
//! model does or refuse the request and change nothing at all.
//!
//! The store runs on the engine in a temporary directory. Entries are
//! committed in batches of random length (reads and transactions then see
//! the pending writes of earlier entries of the batch), and the store is
//! sometimes closed and reopened: the reopened store must go on answering
//! exactly as the model, its index rebuilt from the engine alone. Every
//! case ends with a restart, after which every retained revision must read
//! as the model's and hash as before.
//!
//! `RAFTKV_KV_MODEL_CASES=10000 cargo test --release -p raftkv-mvcc --test model`
//! runs more cases than the default.

mod common;

use std::collections::BTreeMap;

use bytes::Bytes;
use common::store::TestStore as Store;
use mvcc::store::{ERR_COMPACTED, ERR_FUTURE_REV, ERR_KEY_NOT_FOUND};
use mvcc::validate_request;
use proptest::prelude::*;
use proto::etcdserverpb::{
    compare, request_op, response_op, CompactionRequest, Compare, DeleteRangeRequest, PutRequest,
    RangeRequest, RequestOp, TxnRequest, TxnResponse,
};
use proto::internal::{internal_request, internal_response, InternalRequest};
use proto::mvccpb::KeyValue;

#[derive(Clone, Debug, PartialEq, Eq)]
struct ModelValue {
    value: Vec<u8>,
    create: i64,
    modified: i64,
    version: i64,
}

type KeySpace = BTreeMap<Vec<u8>, ModelValue>;

#[derive(Clone, Debug)]
enum Op {
    Put(u8, u8),
    Delete(u8, u8),
    Compact(u8),
    Read(u8, u8, u8),
    /// A transaction; `true` applies it even if validation refuses it.
    Txn(TxnSpec, bool),
    /// Commit the entries applied since the last commit.
    Commit,
    /// Commit, close and reopen the store.
    Reopen,
}

#[derive(Clone, Debug)]
struct TxnSpec {
    compares: Vec<CompareSpec>,
    success: Vec<TxnOp>,
    failure: Vec<TxnOp>,
}

#[derive(Clone, Debug)]
struct CompareSpec {
    key: u8,
    target: u8,
    result: u8,
    operand: u8,
}

#[derive(Clone, Debug)]
enum TxnOp {
    Put(u8, u8),
    /// A put that keeps the key's value: fails if the key is missing.
    PutIgnoringValue(u8),
    /// A delete of `[key(a), key(b))`, of one key when `a == b`, or of
    /// every key from `key(a)` on when `b` is 255.
    Delete(u8, u8),
    /// A range at a revision chosen from the third number (may be in the
    /// future or compacted).
    Range(u8, u8, u8),
    Txn(TxnSpec),
}

fn key(n: u8) -> Vec<u8> {
    vec![b'k', b'0' + n % 8]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<u8>(), any::<u8>()).prop_map(|(k, v)| Op::Put(k, v)),
        2 => (any::<u8>(), any::<u8>()).prop_map(|(a, b)| Op::Delete(a, b)),
        1 => any::<u8>().prop_map(Op::Compact),
        3 => (any::<u8>(), any::<u8>(), any::<u8>()).prop_map(|(a, b, r)| Op::Read(a, b, r)),
        4 => (txn_spec(), prop::bool::weighted(0.3)).prop_map(|(txn, unvalidated)| Op::Txn(txn, unvalidated)),
        3 => Just(Op::Commit),
        1 => Just(Op::Reopen),
    ]
}

fn compare_spec() -> impl Strategy<Value = CompareSpec> {
    (any::<u8>(), 0u8..4, 0u8..4, 0u8..6).prop_map(|(key, target, result, operand)| CompareSpec {
        key,
        target,
        result,
        operand,
    })
}

fn leaf_op() -> impl Strategy<Value = TxnOp> {
    prop_oneof![
        4 => (any::<u8>(), any::<u8>()).prop_map(|(k, v)| TxnOp::Put(k, v)),
        2 => any::<u8>().prop_map(TxnOp::PutIgnoringValue),
        2 => (any::<u8>(), any::<u8>()).prop_map(|(a, b)| TxnOp::Delete(a, b)),
        2 => (any::<u8>(), any::<u8>(), any::<u8>()).prop_map(|(a, b, r)| TxnOp::Range(a, b, r)),
    ]
}

fn txn_spec() -> impl Strategy<Value = TxnSpec> {
    let leaf = (
        prop::collection::vec(compare_spec(), 0..3),
        prop::collection::vec(leaf_op(), 0..4),
        prop::collection::vec(leaf_op(), 0..4),
    )
        .prop_map(|(compares, success, failure)| TxnSpec {
            compares,
            success,
            failure,
        });
    leaf.prop_recursive(2, 24, 4, |inner| {
        let op = prop_oneof![3 => leaf_op(), 1 => inner.prop_map(TxnOp::Txn)];
        (
            prop::collection::vec(compare_spec(), 0..3),
            prop::collection::vec(op.clone(), 0..4),
            prop::collection::vec(op, 0..4),
        )
            .prop_map(|(compares, success, failure)| TxnSpec {
                compares,
                success,
                failure,
            })
    })
}

/// The requests a spec stands for, built against the current revision (a
/// range's revision is chosen relative to it).
fn txn_request(spec: &TxnSpec, current: i64) -> TxnRequest {
    TxnRequest {
        compare: spec.compares.iter().map(compare_request).collect(),
        success: spec
            .success
            .iter()
            .map(|op| op_request(op, current))
            .collect(),
        failure: spec
            .failure
            .iter()
            .map(|op| op_request(op, current))
            .collect(),
    }
}

fn compare_request(spec: &CompareSpec) -> Compare {
    use compare::{CompareResult, CompareTarget, TargetUnion};
    let operand = i64::from(spec.operand);
    let (target, union) = match spec.target {
        0 => (
            CompareTarget::Value,
            TargetUnion::Value(Bytes::from(vec![spec.operand * 40])),
        ),
        1 => (CompareTarget::Version, TargetUnion::Version(operand)),
        2 => (CompareTarget::Mod, TargetUnion::ModRevision(operand * 3)),
        _ => (
            CompareTarget::Create,
            TargetUnion::CreateRevision(operand * 3),
        ),
    };
    let result = [
        CompareResult::Equal,
        CompareResult::NotEqual,
        CompareResult::Greater,
        CompareResult::Less,
    ][spec.result as usize % 4];
    Compare {
        result: result as i32,
        target: target as i32,
        key: Bytes::from(key(spec.key)),
        range_end: Bytes::new(),
        target_union: Some(union),
    }
}

fn delete_bounds(a: u8, b: u8) -> (Vec<u8>, Vec<u8>) {
    if b == 255 {
        (key(a), vec![0])
    } else if a % 8 == b % 8 {
        (key(a), Vec::new())
    } else {
        (key(a).min(key(b)), key(a).max(key(b)))
    }
}

fn range_revision(selector: u8, current: i64) -> i64 {
    i64::from(selector) % (current + 2)
}

fn op_request(op: &TxnOp, current: i64) -> RequestOp {
    let request = match op {
        TxnOp::Put(k, v) => request_op::Request::RequestPut(PutRequest {
            key: Bytes::from(key(*k)),
            value: Bytes::from(vec![*v]),
            ..PutRequest::default()
        }),
        TxnOp::PutIgnoringValue(k) => request_op::Request::RequestPut(PutRequest {
            key: Bytes::from(key(*k)),
            ignore_value: true,
            ..PutRequest::default()
        }),
        TxnOp::Delete(a, b) => {
            let (start, end) = delete_bounds(*a, *b);
            request_op::Request::RequestDeleteRange(DeleteRangeRequest {
                key: Bytes::from(start),
                range_end: Bytes::from(end),
                prev_kv: false,
            })
        }
        TxnOp::Range(a, b, r) => {
            let (start, end) = read_bounds(*a, *b);
            request_op::Request::RequestRange(RangeRequest {
                key: Bytes::from(start),
                range_end: Bytes::from(end),
                revision: range_revision(*r, current),
                ..RangeRequest::default()
            })
        }
        TxnOp::Txn(nested) => request_op::Request::RequestTxn(txn_request(nested, current)),
    };
    RequestOp {
        request: Some(request),
    }
}

fn read_bounds(a: u8, b: u8) -> (Vec<u8>, Vec<u8>) {
    (
        key(a).min(key(b)),
        key(a).max(key(b)).into_iter().chain([0xff]).collect(),
    )
}

fn in_delete(k: &[u8], start: &[u8], end: &[u8]) -> bool {
    if end.is_empty() {
        k == start
    } else if end == [0] {
        k >= start
    } else {
        k >= start && k < end
    }
}

/// What a transaction answered, reduced to what the model predicts.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Range(Vec<(Vec<u8>, ModelValue)>),
    Put,
    Deleted(i64),
    Txn(bool, Vec<Answer>),
}

fn answer_of(response: &TxnResponse) -> Answer {
    let answers = response
        .responses
        .iter()
        .map(|op| match &op.response {
            Some(response_op::Response::ResponseRange(range)) => {
                Answer::Range(range.kvs.iter().map(model_entry).collect())
            }
            Some(response_op::Response::ResponsePut(_)) => Answer::Put,
            Some(response_op::Response::ResponseDeleteRange(delete)) => {
                Answer::Deleted(delete.deleted)
            }
            Some(response_op::Response::ResponseTxn(nested)) => answer_of(nested),
            None => panic!("an op answered nothing"),
        })
        .collect();
    Answer::Txn(response.succeeded, answers)
}

struct Model {
    /// `history[r]` is the key space at revision r (index 0 unused).
    history: Vec<KeySpace>,
    compacted: i64,
}

/// One transaction being applied by the model.
struct TxnRun<'a> {
    model: &'a Model,
    working: KeySpace,
    revision: i64,
    changed: bool,
}

impl Model {
    fn current(&self) -> i64 {
        (self.history.len() - 1) as i64
    }

    fn found(&self) -> &KeySpace {
        &self.history[self.history.len() - 1]
    }

    fn compare_holds(space: &KeySpace, spec: &CompareSpec) -> bool {
        let request = compare_request(spec);
        let Some(value) = space.get(&key(spec.key)) else {
            // A missing key has zero version and revisions, and no value.
            return match spec.target {
                0 => false,
                _ => compare_ordering(&request, 0),
            };
        };
        match spec.target {
            0 => {
                let Some(compare::TargetUnion::Value(operand)) = &request.target_union else {
                    unreachable!("a value compare has a value")
                };
                result_holds(&request, value.value.as_slice().cmp(operand.as_ref()))
            }
            1 => compare_ordering(&request, value.version),
            2 => compare_ordering(&request, value.modified),
            _ => compare_ordering(&request, value.create),
        }
    }

    /// etcd's `compareToPath`: one decision per transaction, in pre-order.
    fn decide_path(&self, spec: &TxnSpec, path: &mut Vec<bool>) {
        let succeeded = spec
            .compares
            .iter()
            .all(|compare| Self::compare_holds(self.found(), compare));
        path.push(succeeded);
        for op in if succeeded {
            &spec.success
        } else {
            &spec.failure
        } {
            if let TxnOp::Txn(nested) = op {
                self.decide_path(nested, path);
            }
        }
    }

    /// Every leaf op on the path, in order.
    fn path_ops<'s>(spec: &'s TxnSpec, path: &[bool], step: &mut usize, out: &mut Vec<&'s TxnOp>) {
        let succeeded = path[*step];
        *step += 1;
        for op in if succeeded {
            &spec.success
        } else {
            &spec.failure
        } {
            match op {
                TxnOp::Txn(nested) => Self::path_ops(nested, path, step, out),
                leaf => out.push(leaf),
            }
        }
    }

    /// The answer etcd gives, or its refusal, and the key space after.
    fn apply_txn(&self, spec: &TxnSpec) -> Result<(Answer, Option<KeySpace>), &'static str> {
        let mut path = Vec::new();
        self.decide_path(spec, &mut path);
        let mut leaves = Vec::new();
        Self::path_ops(spec, &path, &mut 0, &mut leaves);
        let current = self.current();
        for op in &leaves {
            if let TxnOp::PutIgnoringValue(k) = op {
                if !self.found().contains_key(&key(*k)) {
                    return Err(ERR_KEY_NOT_FOUND.message);
                }
            }
        }
        for op in &leaves {
            if let TxnOp::Range(_, _, r) = op {
                let revision = range_revision(*r, current);
                if revision > current {
                    return Err(ERR_FUTURE_REV.message);
                }
                if revision > 0 && revision < self.compacted {
                    return Err(ERR_COMPACTED.message);
                }
            }
        }
        let mut run = TxnRun {
            model: self,
            working: self.found().clone(),
            revision: current + 1,
            changed: false,
        };
        let answer = run.run(spec, &path, &mut 0)?;
        Ok((answer, run.changed.then_some(run.working)))
    }
}

impl TxnRun<'_> {
    fn run(
        &mut self,
        spec: &TxnSpec,
        path: &[bool],
        step: &mut usize,
    ) -> Result<Answer, &'static str> {
        let succeeded = path[*step];
        *step += 1;
        let mut answers = Vec::new();
        for op in if succeeded {
            &spec.success
        } else {
            &spec.failure
        } {
            answers.push(match op {
                TxnOp::Put(k, v) => {
                    self.put(key(*k), vec![*v]);
                    Answer::Put
                }
                TxnOp::PutIgnoringValue(k) => {
                    // Only reachable without validation (an earlier op of
                    // the transaction deleted the key): etcd would panic,
                    // the store refuses.
                    let value = self
                        .working
                        .get(&key(*k))
                        .ok_or(ERR_KEY_NOT_FOUND.message)?
                        .value
                        .clone();
                    self.put(key(*k), value);
                    Answer::Put
                }
                TxnOp::Delete(a, b) => {
                    let (start, end) = delete_bounds(*a, *b);
                    let before = self.working.len();
                    self.working.retain(|k, _| !in_delete(k, &start, &end));
                    let deleted = (before - self.working.len()) as i64;
                    self.changed |= deleted > 0;
                    Answer::Deleted(deleted)
                }
                TxnOp::Range(a, b, r) => {
                    let (start, end) = read_bounds(*a, *b);
                    let revision = range_revision(*r, self.model.current());
                    let space = if revision == 0 {
                        &self.working
                    } else {
                        &self.model.history[revision as usize]
                    };
                    Answer::Range(
                        space
                            .range(start..end)
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect(),
                    )
                }
                TxnOp::Txn(nested) => self.run(nested, path, step)?,
            });
        }
        Ok(Answer::Txn(succeeded, answers))
    }

    fn put(&mut self, k: Vec<u8>, value: Vec<u8>) {
        let revision = self.revision;
        let entry = match self.working.get(&k) {
            Some(old) => ModelValue {
                value,
                create: old.create,
                modified: revision,
                version: old.version + 1,
            },
            None => ModelValue {
                value,
                create: revision,
                modified: revision,
                version: 1,
            },
        };
        self.working.insert(k, entry);
        self.changed = true;
    }
}

fn compare_ordering(request: &Compare, actual: i64) -> bool {
    use compare::TargetUnion;
    let operand = match &request.target_union {
        Some(TargetUnion::Version(n))
        | Some(TargetUnion::ModRevision(n))
        | Some(TargetUnion::CreateRevision(n)) => *n,
        other => unreachable!("not a number compare: {other:?}"),
    };
    result_holds(request, actual.cmp(&operand))
}

fn result_holds(request: &Compare, ordering: std::cmp::Ordering) -> bool {
    match compare::CompareResult::try_from(request.result) {
        Ok(compare::CompareResult::Equal) => ordering.is_eq(),
        Ok(compare::CompareResult::NotEqual) => !ordering.is_eq(),
        Ok(compare::CompareResult::Greater) => ordering.is_gt(),
        Ok(compare::CompareResult::Less) => ordering.is_lt(),
        Err(_) => unreachable!("compare results are generated in range"),
    }
}

/// Everything the store holds at `revision`, as the model keeps it.
fn store_space(store: &Store, revision: i64) -> Vec<(Vec<u8>, ModelValue)> {
    store
        .range(&RangeRequest {
            key: Bytes::from_static(b"\0"),
            range_end: Bytes::from_static(b"\0"),
            revision,
            ..RangeRequest::default()
        })
        .expect("a readable revision")
        .kvs
        .iter()
        .map(model_entry)
        .collect()
}

/// A key-value pair the store answered, as the model keeps it.
fn model_entry(kv: &KeyValue) -> (Vec<u8>, ModelValue) {
    (
        kv.key.to_vec(),
        ModelValue {
            value: kv.value.to_vec(),
            create: kv.create_revision,
            modified: kv.mod_revision,
            version: kv.version,
        },
    )
}

fn cases() -> u32 {
    std::env::var("RAFTKV_KV_MODEL_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]
    #[test]
    fn store_matches_the_model(ops in proptest::collection::vec(op(), 1..120)) {
        let mut store = Store::default();
        store.commit_each = false;
        let mut model = Model { history: vec![BTreeMap::new(), BTreeMap::new()], compacted: 0 };
        for op in ops {
            let current = model.current();
            match op {
                Op::Put(k, v) => {
                    let request = InternalRequest { request: Some(internal_request::Request::Put(PutRequest {
                        key: Bytes::from(key(k)), value: Bytes::from(vec![v]), ..PutRequest::default() })) };
                    store.apply(&request);
                    let mut run = TxnRun { model: &model, working: model.found().clone(), revision: current + 1, changed: false };
                    run.put(key(k), vec![v]);
                    let next = run.working;
                    model.history.push(next);
                }
                Op::Delete(a, b) => {
                    let (start, end) = (key(a).min(key(b)), key(a).max(key(b)));
                    let request = InternalRequest { request: Some(internal_request::Request::DeleteRange(DeleteRangeRequest {
                        key: Bytes::from(start.clone()), range_end: Bytes::from(end.clone()), prev_kv: false })) };
                    store.apply(&request);
                    let mut next = model.found().clone();
                    let before = next.len();
                    next.retain(|k, _| !(k >= &start && k < &end));
                    if next.len() != before {
                        model.history.push(next);
                    }
                }
                Op::Compact(r) => {
                    let revision = 1 + i64::from(r) % current.max(1);
                    let request = InternalRequest { request: Some(internal_request::Request::Compaction(CompactionRequest { revision, physical: false })) };
                    store.apply(&request);
                    if revision > model.compacted && revision <= current {
                        model.compacted = revision;
                    }
                }
                Op::Read(a, b, r) => {
                    let (start, end) = read_bounds(a, b);
                    let revision = i64::from(r) % (current + 1);
                    let response = store.range(&RangeRequest {
                        key: Bytes::from(start.clone()), range_end: Bytes::from(end.clone()), revision, ..RangeRequest::default() });
                    let at = if revision <= 0 { current } else { revision };
                    if revision > 0 && revision < model.compacted {
                        prop_assert!(response.is_err());
                        continue;
                    }
                    let response = response.expect("a readable revision");
                    let expected: Vec<(Vec<u8>, ModelValue)> = model.history[at as usize]
                        .range(start.clone()..end.clone())
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    let got: Vec<(Vec<u8>, ModelValue)> = response.kvs.iter().map(model_entry).collect();
                    prop_assert_eq!(got, expected);
                    prop_assert_eq!(response.header.map(|h| h.revision), Some(current));
                }
                Op::Txn(spec, unvalidated) => {
                    let request = InternalRequest { request: Some(internal_request::Request::Txn(txn_request(&spec, current))) };
                    let validated = validate_request(&request, 128).is_ok();
                    if !validated && !unvalidated {
                        // The server answers the refusal; nothing reaches the store.
                        continue;
                    }
                    let pending_before = store.pending_write_count();
                    // With every entry committed, what the next commit writes
                    // can be compared with what the last one wrote.
                    // (The first commit also writes the revision counters.)
                    let committed_before = (store.all_committed() && store.inner().applied().index > 0)
                        .then(|| store.dump());
                    let stored_bytes_before = store.stored_bytes();
                    let hash_before = store.hash_kv(0);
                    let response = store.apply(&request).response;
                    match response {
                        Some(internal_response::Response::Txn(response)) => {
                            let expected = model.apply_txn(&spec);
                            let (answer, next) = match expected {
                                Ok(expected) => expected,
                                Err(refusal) => {
                                    prop_assert!(false, "the store applied what the model refuses ({refusal}): {response:?}");
                                    unreachable!()
                                }
                            };
                            prop_assert_eq!(answer_of(&response), answer);
                            if let Some(next) = next {
                                model.history.push(next);
                            }
                            prop_assert_eq!(response.header.map(|h| h.revision), Some(model.current()));
                        }
                        Some(internal_response::Response::Error(error)) => {
                            // A refused request changes nothing, ever.
                            prop_assert_eq!(store.current_revision(), current);
                            prop_assert_eq!(store.stored_bytes(), stored_bytes_before);
                            prop_assert_eq!(store.hash_kv(0), hash_before);
                            prop_assert_eq!(store.pending_write_count(), pending_before);
                            if let Some(committed_before) = committed_before {
                                store.commit();
                                prop_assert_eq!(store.dump(), committed_before);
                            }
                            // etcd refuses in its checks only; the store also
                            // refuses an unvalidated op that fails while it runs.
                            prop_assert_eq!(Err(error.message.as_str()), model.apply_txn(&spec).map(|_| ()));
                        }
                        other => prop_assert!(false, "unexpected answer {other:?}"),
                    }
                }
                Op::Commit => store.commit(),
                Op::Reopen => {
                    let hash = store.hash_kv(0);
                    let stored_bytes = store.stored_bytes();
                    store.reopen();
                    prop_assert_eq!(store.hash_kv(0), hash);
                    prop_assert_eq!(store.stored_bytes(), stored_bytes);
                    prop_assert_eq!(store.compacted_revision(), model.compacted);
                }
            }
            prop_assert_eq!(store.current_revision(), model.current());
            let space: Vec<(Vec<u8>, ModelValue)> = model.found().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            prop_assert_eq!(store_space(&store, 0), space);
        }
        // Restart: every retained revision reads as the model's and hashes
        // as before, the index rebuilt from the engine alone (after
        // compaction, creations and versions come from the records).
        let first_readable = model.compacted.max(1);
        let hashes: Vec<_> = (first_readable..=model.current()).map(|r| store.hash_kv(r)).collect();
        let stored_bytes = store.stored_bytes();
        let key_count = store.key_count();
        store.reopen();
        prop_assert_eq!(store.current_revision(), model.current());
        prop_assert_eq!(store.compacted_revision(), model.compacted);
        prop_assert_eq!(store.stored_bytes(), stored_bytes);
        prop_assert_eq!(store.key_count(), key_count);
        for (revision, hash) in (first_readable..=model.current()).zip(hashes) {
            prop_assert_eq!(store.hash_kv(revision), hash, "hash at {}", revision);
            let space: Vec<(Vec<u8>, ModelValue)> = model.history[revision as usize]
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            prop_assert_eq!(store_space(&store, revision), space, "space at {}", revision);
        }
        if model.compacted > 1 {
            prop_assert_eq!(
                store.everything_at(model.compacted - 1).map(|_| ()),
                Err(ERR_COMPACTED)
            );
        }
    }
}
