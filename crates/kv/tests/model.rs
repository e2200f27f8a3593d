//! Property test: the store against a naive model that keeps a full copy of
//! the key space at every revision.

use std::collections::BTreeMap;

use bytes::Bytes;
use kv::Store;
use proptest::prelude::*;
use proto::etcdserverpb::{CompactionRequest, DeleteRangeRequest, PutRequest, RangeRequest};
use proto::internal::{internal_request, InternalRequest};

#[derive(Clone, Debug, PartialEq, Eq)]
struct ModelValue {
    value: Vec<u8>,
    create: i64,
    modified: i64,
    version: i64,
}

#[derive(Clone, Debug)]
enum Op {
    Put(u8, u8),
    Delete(u8, u8),
    Compact(u8),
    Read(u8, u8, u8),
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
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn store_matches_the_model(ops in proptest::collection::vec(op(), 1..120)) {
        let mut store = Store::default();
        // history[r] = the key space at revision r (index 0 unused).
        let mut history: Vec<BTreeMap<Vec<u8>, ModelValue>> = vec![BTreeMap::new(), BTreeMap::new()];
        let mut compacted = 0i64;
        for op in ops {
            let current = (history.len() - 1) as i64;
            match op {
                Op::Put(k, v) => {
                    let request = InternalRequest { request: Some(internal_request::Request::Put(PutRequest {
                        key: Bytes::from(key(k)), value: Bytes::from(vec![v]), ..PutRequest::default() })) };
                    store.apply(&request);
                    let mut next = history[current as usize].clone();
                    let revision = current + 1;
                    let entry = match next.get(&key(k)) {
                        Some(old) => ModelValue { value: vec![v], create: old.create, modified: revision, version: old.version + 1 },
                        None => ModelValue { value: vec![v], create: revision, modified: revision, version: 1 },
                    };
                    next.insert(key(k), entry);
                    history.push(next);
                }
                Op::Delete(a, b) => {
                    let (start, end) = (key(a).min(key(b)), key(a).max(key(b)));
                    let request = InternalRequest { request: Some(internal_request::Request::DeleteRange(DeleteRangeRequest {
                        key: Bytes::from(start.clone()), range_end: Bytes::from(end.clone()), prev_kv: false })) };
                    store.apply(&request);
                    let mut next = history[current as usize].clone();
                    let before = next.len();
                    next.retain(|k, _| !(k >= &start && k < &end));
                    if next.len() != before {
                        history.push(next);
                    }
                }
                Op::Compact(r) => {
                    let revision = 1 + i64::from(r) % current.max(1);
                    let request = InternalRequest { request: Some(internal_request::Request::Compaction(CompactionRequest { revision, physical: false })) };
                    store.apply(&request);
                    if revision > compacted && revision <= current {
                        compacted = revision;
                    }
                }
                Op::Read(a, b, r) => {
                    let (start, end) = (key(a).min(key(b)), key(a).max(key(b)).into_iter().chain([0xff]).collect::<Vec<u8>>());
                    let revision = i64::from(r) % (current + 1);
                    let response = store.range(&RangeRequest {
                        key: Bytes::from(start.clone()), range_end: Bytes::from(end.clone()), revision, ..RangeRequest::default() });
                    let at = if revision <= 0 { current } else { revision };
                    if revision > 0 && revision < compacted {
                        prop_assert!(response.is_err());
                        continue;
                    }
                    let response = response.expect("a readable revision");
                    let expected: Vec<(Vec<u8>, ModelValue)> = history[at as usize]
                        .range(start.clone()..end.clone())
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    let got: Vec<(Vec<u8>, ModelValue)> = response.kvs.iter().map(|kv| (kv.key.to_vec(), ModelValue {
                        value: kv.value.to_vec(), create: kv.create_revision, modified: kv.mod_revision, version: kv.version })).collect();
                    prop_assert_eq!(got, expected);
                    prop_assert_eq!(response.header.map(|h| h.revision), Some(current));
                }
            }
            prop_assert_eq!(store.current_revision(), (history.len() - 1) as i64);
        }
    }
}
