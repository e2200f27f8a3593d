//! Found by adversarial review (issue #12), kept: which keys a range names, for keys that
//! share a prefix of zero bytes with the range's bounds.

mod common;

use bytes::Bytes;
use common::store::{entry, TestStore};
use proto::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest};
use proto::internal::internal_request;

fn put(store: &mut TestStore, key: &[u8]) {
    store.apply(&entry(internal_request::Request::Put(PutRequest {
        key: Bytes::copy_from_slice(key),
        value: Bytes::from_static(b"v"),
        ..PutRequest::default()
    })));
}

fn keys_in(store: &TestStore, key: &[u8], end: &[u8]) -> Vec<Vec<u8>> {
    store
        .range(&RangeRequest {
            key: Bytes::copy_from_slice(key),
            range_end: Bytes::copy_from_slice(end),
            ..RangeRequest::default()
        })
        .expect("range")
        .kvs
        .into_iter()
        .map(|kv| kv.key.to_vec())
        .collect()
}

/// etcd compares keys as byte strings: `[0; 3]` sorts before `[0; 5]` (a
/// proper prefix), so a range starting at `[0; 5]` does not hold it.
#[test]
fn a_key_that_is_a_zero_prefix_of_the_range_start_is_outside_the_range() {
    let mut store = TestStore::default();
    for key in [
        &[0u8; 3][..],
        &[0u8; 5][..],
        &[0u8; 6][..],
        &[0u8; 9][..],
        &[0u8; 12][..],
        b"a",
    ] {
        put(&mut store, key);
    }
    for (start, end) in [
        (vec![0u8; 5], vec![0xFFu8; 5]),
        (vec![0u8; 5], vec![0u8]), // from [0;5] to the end
        (vec![0u8; 10], vec![0xFFu8]),
        (vec![0u8; 10], vec![0u8]),
    ] {
        let mut expected: Vec<Vec<u8>> = [
            &[0u8; 3][..],
            &[0u8; 5][..],
            &[0u8; 6][..],
            &[0u8; 9][..],
            &[0u8; 12][..],
            b"a",
        ]
        .iter()
        .map(|key| key.to_vec())
        .filter(|key| {
            key.as_slice() >= start.as_slice() && (end == [0u8] || key.as_slice() < end.as_slice())
        })
        .collect();
        expected.sort();
        assert_eq!(
            keys_in(&store, &start, &end),
            expected,
            "range [{start:?}, {end:?})"
        );
    }
}

/// The same through a delete: a key outside the range must survive it.
#[test]
fn a_delete_range_leaves_a_shorter_zero_key_before_its_start() {
    let mut store = TestStore::default();
    put(&mut store, &[0u8; 3]);
    put(&mut store, &[0u8; 20]);
    store.apply(&entry(internal_request::Request::DeleteRange(
        DeleteRangeRequest {
            key: Bytes::from(vec![0u8; 10]),
            range_end: Bytes::from(vec![0xFFu8; 10]),
            ..DeleteRangeRequest::default()
        },
    )));
    assert_eq!(
        keys_in(&store, &[0u8; 3], &[]),
        vec![vec![0u8; 3]],
        "[0;3] was deleted"
    );
    assert!(
        keys_in(&store, &[0u8; 20], &[]).is_empty(),
        "[0;20] survived"
    );
}

/// The delete of the server test, at the store: keys at the size limit.
#[test]
fn a_delete_range_with_long_bounds_leaves_a_long_zero_key_before_its_start() {
    const MAX_KEY: usize = 32_758;
    let mut store = TestStore::default();
    let zeros = vec![0u8; MAX_KEY];
    let ones = vec![0xFFu8; MAX_KEY];
    let mut k_zeros = vec![0u8; MAX_KEY];
    k_zeros[0] = b'k';
    for key in [&zeros, &ones, &k_zeros] {
        put(&mut store, key);
    }
    store.apply(&entry(internal_request::Request::DeleteRange(
        DeleteRangeRequest {
            key: Bytes::from(vec![0u8; 70_000]),
            range_end: Bytes::from(vec![0xFFu8; 70_000]),
            prev_kv: true,
        },
    )));
    assert_eq!(
        keys_in(&store, &zeros, &[]).len(),
        1,
        "[0; MAX] was deleted"
    );
    assert!(keys_in(&store, &ones, &[]).is_empty(), "[FF; MAX] survived");
    assert!(
        keys_in(&store, &k_zeros, &[]).is_empty(),
        "k[0; MAX-1] survived"
    );
}

/// The same delete inside a transaction, as the server test sends it.
#[test]
fn a_txn_delete_range_with_long_bounds_leaves_a_long_zero_key_before_its_start() {
    use proto::etcdserverpb::{compare, request_op, Compare, RequestOp, TxnRequest};
    const MAX_KEY: usize = 32_758;
    let mut store = TestStore::default();
    let zeros = vec![0u8; MAX_KEY];
    let ones = vec![0xFFu8; MAX_KEY];
    for key in [&zeros, &ones] {
        put(&mut store, key);
    }
    let response = store.apply(&entry(internal_request::Request::Txn(TxnRequest {
        compare: vec![Compare {
            key: vec![0u8; 70_000].into(),
            result: compare::CompareResult::Equal as i32,
            target: compare::CompareTarget::Version as i32,
            target_union: Some(compare::TargetUnion::Version(0)),
            ..Compare::default()
        }],
        success: vec![RequestOp {
            request: Some(request_op::Request::RequestDeleteRange(
                DeleteRangeRequest {
                    key: vec![0u8; 70_000].into(),
                    range_end: vec![0xFFu8; 70_000].into(),
                    prev_kv: true,
                },
            )),
        }],
        ..TxnRequest::default()
    })));
    eprintln!("{response:?}");
    assert_eq!(
        keys_in(&store, &zeros, &[]).len(),
        1,
        "[0; MAX] was deleted"
    );
    assert!(keys_in(&store, &ones, &[]).is_empty(), "[FF; MAX] survived");
}

/// The server test's sequence, at the store.
#[test]
fn server_sequence_at_the_store() {
    use proto::etcdserverpb::CompactionRequest;
    const MAX_KEY: usize = 32_758;
    let mut store = TestStore::default();
    let zeros = vec![0u8; MAX_KEY];
    let ones = vec![0xFFu8; MAX_KEY];
    let mut k_zeros = vec![0u8; MAX_KEY];
    k_zeros[0] = b'k';
    for _round in 0..6u8 {
        for key in [&zeros, &ones, &k_zeros] {
            put(&mut store, key);
        }
    }
    {
        use proto::etcdserverpb::{compare, request_op, Compare, RequestOp, TxnRequest};
        store.apply(&entry(internal_request::Request::Txn(TxnRequest {
            compare: vec![Compare {
                key: vec![0u8; 70_000].into(),
                result: compare::CompareResult::Equal as i32,
                target: compare::CompareTarget::Version as i32,
                target_union: Some(compare::TargetUnion::Version(0)),
                ..Compare::default()
            }],
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestDeleteRange(
                    DeleteRangeRequest {
                        key: vec![0u8; 70_000].into(),
                        range_end: vec![0xFFu8; 70_000].into(),
                        prev_kv: true,
                    },
                )),
            }],
            ..TxnRequest::default()
        })));
        assert_eq!(
            keys_in(&store, &zeros, &[]).len(),
            1,
            "[0; MAX] gone after txn"
        );
    }
    store.apply(&entry(internal_request::Request::DeleteRange(
        DeleteRangeRequest {
            key: Bytes::from(ones.clone()),
            ..DeleteRangeRequest::default()
        },
    )));
    let revision = store.current_revision();
    store.apply(&entry(internal_request::Request::Compaction(
        CompactionRequest {
            revision,
            physical: true,
        },
    )));
    assert_eq!(
        keys_in(&store, &zeros, &[]).len(),
        1,
        "[0; MAX] gone after compaction"
    );
    for _ in 0..8 {
        put(&mut store, b"k/small");
    }
    assert_eq!(keys_in(&store, &zeros, &[]).len(), 1, "[0; MAX] gone");
    store.reopen();
    assert_eq!(
        keys_in(&store, &zeros, &[]).len(),
        1,
        "[0; MAX] gone after reopen"
    );
}
