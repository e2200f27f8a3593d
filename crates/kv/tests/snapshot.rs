//! A store written to a snapshot and read back answers every read at every
//! retained revision exactly as the original, and goes on identically.

use bytes::Bytes;
use kv::Store;
use proptest::prelude::*;
use prost::Message as _;
use proto::etcdserverpb::{CompactionRequest, DeleteRangeRequest, PutRequest, RangeRequest};
use proto::internal::{internal_request, InternalRequest};

fn put(key: u8, value: u8, lease: i64) -> InternalRequest {
    InternalRequest {
        request: Some(internal_request::Request::Put(PutRequest {
            key: Bytes::from(vec![b'k', key % 6]),
            value: Bytes::from(vec![value; 1 + (value % 5) as usize]),
            lease,
            ..PutRequest::default()
        })),
    }
}

fn delete(a: u8, b: u8) -> InternalRequest {
    let (start, end) = (a.min(b) % 6, a.max(b) % 6 + 1);
    InternalRequest {
        request: Some(internal_request::Request::DeleteRange(DeleteRangeRequest {
            key: Bytes::from(vec![b'k', start]),
            range_end: Bytes::from(vec![b'k', end]),
            prev_kv: false,
        })),
    }
}

fn everything_at(store: &Store, revision: i64) -> Vec<u8> {
    let request = RangeRequest {
        key: Bytes::from_static(b"\0"),
        range_end: Bytes::from_static(b"\0"),
        revision,
        ..RangeRequest::default()
    };
    match store.range(&request) {
        Ok(response) => response.encode_to_vec(),
        Err(error) => format!("{error:?}").into_bytes(),
    }
}

fn round_trip(store: &Store) -> Store {
    let mut bytes = Vec::new();
    store.write_snapshot(&mut bytes).expect("write");
    Store::read_snapshot(&mut bytes.as_slice()).expect("read")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]
    #[test]
    fn a_restored_store_is_indistinguishable(ops in prop::collection::vec((0u8..10, any::<u8>(), any::<u8>()), 1..80)) {
        let mut store = Store::default();
        for (kind, a, b) in &ops {
            let request = match kind {
                0..=5 => put(*a, *b, 0),
                6 | 7 => delete(*a, *b),
                _ => InternalRequest {
                    request: Some(internal_request::Request::Compaction(CompactionRequest {
                        revision: 1 + i64::from(*a) % store.current_revision().max(1),
                        physical: false,
                    })),
                },
            };
            store.apply(&request);
        }
        let mut restored = round_trip(&store);
        prop_assert_eq!(restored.current_revision(), store.current_revision());
        prop_assert_eq!(restored.compacted_revision(), store.compacted_revision());
        prop_assert_eq!(restored.stored_bytes(), store.stored_bytes());
        prop_assert_eq!(restored.hash_kv(0).ok(), store.hash_kv(0).ok());
        for revision in 0..=store.current_revision() + 1 {
            prop_assert_eq!(everything_at(&restored, revision), everything_at(&store, revision));
        }
        // Both go on the same way.
        let next = put(1, 9, 0);
        prop_assert_eq!(restored.apply(&next), store.apply(&next));
        prop_assert_eq!(restored.hash_kv(0).ok(), store.hash_kv(0).ok());
    }
}

#[test]
fn damage_is_refused_not_misread() {
    let mut store = Store::default();
    for i in 0..20u8 {
        store.apply(&put(i, i, 0));
    }
    let mut bytes = Vec::new();
    store.write_snapshot(&mut bytes).expect("write");
    for cut in [0, 7, 8, 30, bytes.len() / 2, bytes.len() - 1] {
        assert!(
            Store::read_snapshot(&mut &bytes[..cut]).is_err(),
            "cut at {cut}"
        );
    }
    let mut bad_magic = bytes.clone();
    bad_magic[0] ^= 1;
    assert!(Store::read_snapshot(&mut bad_magic.as_slice()).is_err());
}
