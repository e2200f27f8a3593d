//! What the store owes to living on the engine: a restart rebuilds exactly
//! what was there (even after compaction dropped a generation's first
//! versions), an undone transaction leaves nothing for the next commit,
//! damaged records are errors naming the database, and a snapshot installed
//! from another store answers exactly as that store.

mod common;

use bytes::Bytes;
use common::store::{entry, TestStore};
use mvcc::{Backend, Error, Revision, Store, StoreOptions};
use proto::etcdserverpb::{
    request_op, CompactionRequest, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp,
    TxnRequest,
};
use proto::internal::{internal_request, internal_response, InternalRequest};

fn put(key: &str, value: &str) -> InternalRequest {
    entry(internal_request::Request::Put(PutRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(value.as_bytes()),
        ..PutRequest::default()
    }))
}

fn delete(key: &str) -> InternalRequest {
    entry(internal_request::Request::DeleteRange(DeleteRangeRequest {
        key: Bytes::copy_from_slice(key.as_bytes()),
        ..DeleteRangeRequest::default()
    }))
}

fn compact(revision: i64) -> InternalRequest {
    entry(internal_request::Request::Compaction(CompactionRequest {
        revision,
        physical: false,
    }))
}

fn is_refusal(response: &proto::internal::InternalResponse) -> bool {
    matches!(
        response.response,
        Some(internal_response::Response::Error(_))
    )
}

/// (key, value, create, mod, version) of every key at `revision`.
fn rows(store: &TestStore, revision: i64) -> Vec<(String, String, i64, i64, i64)> {
    store
        .everything_at(revision)
        .expect("readable")
        .kvs
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                String::from_utf8_lossy(&kv.value).into_owned(),
                kv.create_revision,
                kv.mod_revision,
                kv.version,
            )
        })
        .collect()
}

/// Compaction removes the creating put of `a`'s generation: after a
/// restart its creation and version can only come from the records of the
/// versions left.
#[test]
fn a_restart_after_compaction_keeps_creations_and_versions() {
    let mut store = TestStore::default();
    for request in [
        put("a", "1"), // 2
        put("a", "2"), // 3
        put("b", "1"), // 4
        delete("b"),   // 5
        put("a", "3"), // 6
        put("b", "2"), // 7
        put("a", "4"), // 8
        compact(6),
    ] {
        assert!(!is_refusal(&store.apply(&request)));
    }
    let expected_now = vec![
        ("a".to_string(), "4".to_string(), 2, 8, 4),
        ("b".to_string(), "2".to_string(), 7, 7, 1),
    ];
    let expected_at_6 = vec![("a".to_string(), "3".to_string(), 2, 6, 3)];
    assert_eq!(rows(&store, 0), expected_now);
    assert_eq!(rows(&store, 6), expected_at_6);
    let hashes: Vec<_> = (6..=8).map(|r| store.hash_kv(r)).collect();
    let stored_bytes = store.stored_bytes();
    // a@6 and a@8 (4 bytes), b@7 (2 bytes).
    assert_eq!(stored_bytes, 6);
    // Compaction removed the dropped versions (tombstone included) from
    // the engine, not only from the index.
    let versions: Vec<_> = store
        .dump()
        .into_keys()
        .filter(|(keyspace, _)| *keyspace == mvcc::KeyspaceId::Kv)
        .map(|(_, key)| mvcc::keys::decode_key(&key).unwrap())
        .collect();
    assert_eq!(
        versions,
        vec![
            (b"a".to_vec(), Revision::new(6, 0)),
            (b"a".to_vec(), Revision::new(8, 0)),
            (b"b".to_vec(), Revision::new(7, 0)),
        ]
    );
    assert!(store.inner().disk_bytes() > 0);

    store.reopen();
    assert_eq!(store.current_revision(), 8);
    assert_eq!(store.compacted_revision(), 6);
    assert_eq!(store.key_count(), 2);
    assert_eq!(store.stored_bytes(), stored_bytes);
    assert_eq!(rows(&store, 0), expected_now);
    assert_eq!(rows(&store, 6), expected_at_6);
    assert_eq!(
        rows(&store, 7),
        vec![
            ("a".to_string(), "3".to_string(), 2, 6, 3),
            ("b".to_string(), "2".to_string(), 7, 7, 1),
        ]
    );
    assert!(store.everything_at(5).is_err(), "compacted");
    assert_eq!(
        (6..=8).map(|r| store.hash_kv(r)).collect::<Vec<_>>(),
        hashes
    );
    // And it goes on: the next put of `a` is version 5 of the generation
    // created at 2.
    store.apply(&put("a", "5"));
    assert_eq!(
        rows(&store, 0)[0],
        ("a".to_string(), "5".to_string(), 2, 9, 5)
    );
}

/// Entries applied and not yet committed are lost with the process; the
/// store reopens at its last commit and the log re-applies them.
#[test]
fn uncommitted_entries_are_not_in_the_engine() {
    let dir = tempfile::tempdir().unwrap();
    let all = RangeRequest {
        key: Bytes::from_static(b"\0"),
        range_end: Bytes::from_static(b"\0"),
        ..RangeRequest::default()
    };
    {
        let mut store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
        store.apply(&put("a", "1")).unwrap();
        store.commit(1, 1).unwrap();
        store.apply(&put("a", "2")).unwrap();
        store.apply(&put("b", "1")).unwrap();
        assert_eq!(store.current_revision(), 4);
        assert_eq!(store.pending_write_count(), 2);
        // Reads see the pending writes of every entry of the batch.
        let now = store.range(&all).unwrap();
        assert_eq!(now.kvs.len(), 2);
        assert_eq!(now.kvs[0].value, Bytes::from_static(b"2"));
        assert_eq!(now.kvs[0].version, 2);
        assert_eq!(store.applied().index, 1);
    }
    let reopened = Store::open(dir.path(), &StoreOptions::default()).unwrap();
    assert_eq!(reopened.current_revision(), 2);
    assert_eq!(reopened.applied().index, 1);
    assert_eq!(reopened.key_count(), 1);
    assert_eq!(
        reopened.range(&all).unwrap().kvs[0].value,
        Bytes::from_static(b"1")
    );
}

fn op(request: request_op::Request) -> RequestOp {
    RequestOp {
        request: Some(request),
    }
}

/// A transaction refused after it wrote (an unvalidated one: it puts a key
/// and then puts with `ignore_value` a key it deleted) takes its writes
/// back out of the pending batch: the next commit writes what it would
/// have written without it.
#[test]
fn an_undone_transaction_leaves_no_pending_write() {
    let mut store = TestStore::default();
    store.apply(&put("d", "v"));
    let before = store.dump();
    store.commit_each = false;
    let failing = entry(internal_request::Request::Txn(TxnRequest {
        compare: vec![],
        success: vec![
            op(request_op::Request::RequestPut(PutRequest {
                key: Bytes::from_static(b"new"),
                value: Bytes::from_static(b"1"),
                ..PutRequest::default()
            })),
            op(request_op::Request::RequestDeleteRange(
                DeleteRangeRequest {
                    key: Bytes::from_static(b"d"),
                    ..DeleteRangeRequest::default()
                },
            )),
            op(request_op::Request::RequestPut(PutRequest {
                key: Bytes::from_static(b"d"),
                ignore_value: true,
                ..PutRequest::default()
            })),
        ],
        failure: vec![],
    }));
    assert!(is_refusal(&store.apply(&failing)));
    assert_eq!(store.pending_write_count(), 0);
    assert_eq!(store.current_revision(), 2);
    store.commit();
    assert_eq!(store.dump(), before);
    store.reopen();
    assert_eq!(
        rows(&store, 0),
        vec![("d".to_string(), "v".to_string(), 2, 2, 1)]
    );
}

/// Writes damage into a batch of the raw backend.
type Damage = dyn Fn(&mut mvcc::WriteBatch);

/// A version whose value is not a store record (written through the
/// backend, as damage would leave it) fails `open` with an error naming the
/// database directory; so do a tombstone of a key that does not exist and
/// a version after the current revision.
#[test]
fn open_refuses_damaged_records_with_the_path() {
    let cases: [(&str, &Damage); 3] = [
        ("garbage put", &|batch| {
            batch.put(b"a", Revision::new(2, 0), b"garbage").unwrap()
        }),
        ("orphan tombstone", &|batch| {
            batch.put_tombstone(b"zz", Revision::new(2, 1)).unwrap()
        }),
        ("version from the future", &|batch| {
            batch
                .put_parts(
                    b"a",
                    Revision::new(99, 0),
                    &[&valid_record_header(99, 1), b"x"],
                )
                .unwrap()
        }),
    ];
    for (name, damage) in cases {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
            store.apply(&put("a", "1")).unwrap();
            store.commit(1, 1).unwrap();
        }
        {
            let backend = Backend::open(dir.path()).unwrap();
            let mut batch = backend.write_batch();
            damage(&mut batch);
            backend.commit(batch).unwrap();
        }
        let error = Store::open(dir.path(), &StoreOptions::default()).expect_err(name);
        assert!(matches!(error, Error::Corrupt { .. }), "{name}: {error}");
        let text = error.to_string();
        assert!(
            text.contains(&dir.path().display().to_string()),
            "{name}: {text}"
        );
    }
}

/// The record layout (see `record.rs`): format 1, created (main, sub),
/// version, lease.
fn valid_record_header(created_main: i64, version: i64) -> Vec<u8> {
    let mut out = vec![1u8];
    out.extend_from_slice(&created_main.to_be_bytes());
    out.extend_from_slice(&0i64.to_be_bytes());
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&0i64.to_be_bytes());
    out
}

/// A snapshot of one store installed into another: the same answers at
/// every retained revision, the same hashes and counters, and both go on
/// identically. The target's own uncommitted entries are dropped.
#[test]
fn an_installed_snapshot_answers_as_its_source() {
    let mut source = TestStore::default();
    for i in 0..200 {
        let key = format!("k{:03}", i % 37);
        let request = match i % 11 {
            3 => delete(&key),
            _ => put(&key, &format!("{i}").repeat(1 + i % 5)),
        };
        source.apply(&request);
        if i == 120 {
            source.apply(&compact(source.current_revision() - 20));
        }
    }
    source.inner_mut().set_conf_state(&raft::ConfState {
        voters: vec![1, 2, 3],
        learners: vec![],
    });
    source.inner_mut().put_member(7, b"member seven");
    source.apply(&put("last", "x"));

    let mut target = TestStore::default();
    target.apply(&put("other", "y"));
    target.commit_each = false;
    target.apply(&put("uncommitted", "z"));

    let metadata = target.install_from(&source);
    target.commit_each = true;
    assert_eq!(metadata.index, source.inner().applied().index);
    assert_eq!(metadata.conf_state.voters, vec![1, 2, 3]);
    assert_eq!(target.pending_write_count(), 0);
    assert_eq!(
        target.inner().members().unwrap(),
        source.inner().members().unwrap()
    );
    let check = |target: &TestStore, source: &TestStore| {
        assert_eq!(target.current_revision(), source.current_revision());
        assert_eq!(target.compacted_revision(), source.compacted_revision());
        assert_eq!(target.key_count(), source.key_count());
        assert_eq!(target.stored_bytes(), source.stored_bytes());
        for revision in source.compacted_revision()..=source.current_revision() {
            assert_eq!(target.hash_kv(revision), source.hash_kv(revision));
            assert_eq!(rows(target, revision), rows(source, revision));
        }
    };
    check(&target, &source);
    // The installed state survives a restart, and both go on identically.
    target.reopen();
    check(&target, &source);
    for store in [&mut source, &mut target] {
        store.apply(&put("after", "1"));
        store.apply(&compact(store.current_revision() - 1));
    }
    check(&target, &source);
    assert!(target.dump() == source.dump(), "engines differ");
}

/// An installer from a store refuses a stream whose put versions are not
/// store records (a raw backend's, here).
#[test]
fn a_store_installer_refuses_foreign_records() {
    let source_dir = tempfile::tempdir().unwrap();
    let source = Backend::open(source_dir.path()).unwrap();
    let mut batch = source.write_batch();
    batch
        .put(b"a", Revision::new(2, 0), b"not a record")
        .unwrap();
    batch.set_current_revision(2);
    batch.set_applied(1, 1);
    source.commit(batch).unwrap();

    let target = TestStore::default();
    let mut installer = target.inner().snapshot_installer().unwrap();
    let pushed: Result<(), Error> = source
        .snapshot()
        .unwrap()
        .try_for_each(|chunk| installer.push(&chunk?));
    assert!(pushed.is_err());
}

/// Not a check: the cost of applying plain puts (pending batch, commit
/// every 64 entries) and of reading them back, printed.
/// `cargo test -p raftkv-mvcc --release --test store_engine -- --ignored --nocapture`
#[test]
#[ignore]
fn put_path_cost() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), &StoreOptions::default()).unwrap();
    let keys = 100_000u64;
    let value = Bytes::from(vec![b'v'; 100]);
    let requests: Vec<InternalRequest> = (0..keys)
        .map(|i| {
            entry(internal_request::Request::Put(PutRequest {
                key: Bytes::from(format!("key/{:08}", i * 7919 % keys)),
                value: value.clone(),
                ..PutRequest::default()
            }))
        })
        .collect();
    for round in 0..2 {
        let started = std::time::Instant::now();
        let mut apply_time = std::time::Duration::ZERO;
        for (i, request) in requests.iter().enumerate() {
            let applying = std::time::Instant::now();
            store.apply(request).unwrap();
            apply_time += applying.elapsed();
            if i % 64 == 63 {
                let index = store.applied().index + 1;
                store.commit(index, 1).unwrap();
            }
        }
        let elapsed = started.elapsed();
        eprintln!(
            "round {round}: {keys} puts: apply {:.0} ns/put, with commits {:.0} ns/put",
            apply_time.as_nanos() as f64 / keys as f64,
            elapsed.as_nanos() as f64 / keys as f64
        );
    }
    let started = std::time::Instant::now();
    for i in 0..keys {
        let response = store
            .range(&RangeRequest {
                key: Bytes::from(format!("key/{i:08}")),
                ..RangeRequest::default()
            })
            .unwrap();
        assert_eq!(response.kvs.len(), 1);
    }
    eprintln!(
        "point reads: {:.0} ns/get",
        started.elapsed().as_nanos() as f64 / keys as f64
    );
}
