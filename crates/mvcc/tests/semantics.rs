//! etcd's documented semantics, one behaviour per test, on a store in a
//! temporary directory (each request committed as its own entry, so reads
//! come from the engine; a transaction reads its own writes from the
//! pending batch).

mod common;

use bytes::Bytes;
use common::store::TestStore as Store;
use mvcc::store::{
    ERR_COMPACTED, ERR_DUPLICATE_KEY, ERR_EMPTY_KEY, ERR_FUTURE_REV, ERR_KEY_NOT_FOUND,
    ERR_KEY_TOO_LARGE, ERR_LEASE_NOT_FOUND, ERR_TOO_MANY_OPS, ERR_TXN_TOO_DEEP, MAX_KEY_BYTES,
    MAX_TXN_NESTING,
};
use mvcc::{validate_request, ApplyError};
use prost::Message;
use proto::etcdserverpb::{
    compare, range_request, request_op, response_op, CompactionRequest, Compare,
    DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse,
    RequestOp, TxnRequest, TxnResponse,
};
use proto::internal::{internal_request, internal_response, InternalRequest};

fn b(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

fn apply(
    store: &mut Store,
    request: internal_request::Request,
) -> Result<internal_response::Response, ApplyError> {
    let request = InternalRequest {
        request: Some(request),
    };
    match store.apply(&request).response {
        Some(internal_response::Response::Error(error)) => Err(ApplyError {
            grpc_code: error.grpc_code,
            message: Box::leak(error.message.into_boxed_str()),
        }),
        Some(response) => Ok(response),
        None => panic!("apply returned no response"),
    }
}

fn put_request(key: &str, value: &str) -> PutRequest {
    PutRequest {
        key: b(key),
        value: b(value),
        ..PutRequest::default()
    }
}

fn put(store: &mut Store, key: &str, value: &str) -> PutResponse {
    put_with(store, put_request(key, value)).expect("put succeeds")
}

fn put_with(store: &mut Store, request: PutRequest) -> Result<PutResponse, ApplyError> {
    match apply(store, internal_request::Request::Put(request))? {
        internal_response::Response::Put(response) => Ok(response),
        other => panic!("unexpected {other:?}"),
    }
}

fn delete(store: &mut Store, request: DeleteRangeRequest) -> DeleteRangeResponse {
    match apply(store, internal_request::Request::DeleteRange(request)) {
        Ok(internal_response::Response::DeleteRange(response)) => response,
        other => panic!("unexpected {other:?}"),
    }
}

fn txn(store: &mut Store, request: TxnRequest) -> Result<TxnResponse, ApplyError> {
    match apply(store, internal_request::Request::Txn(request))? {
        internal_response::Response::Txn(response) => Ok(response),
        other => panic!("unexpected {other:?}"),
    }
}

fn get(store: &Store, key: &str) -> RangeResponse {
    store
        .range(&RangeRequest {
            key: b(key),
            ..RangeRequest::default()
        })
        .expect("range succeeds")
}

fn prefix_end(prefix: &str) -> Bytes {
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    Bytes::from(end)
}

fn keys(response: &RangeResponse) -> Vec<String> {
    response
        .kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect()
}

fn op_put(key: &str, value: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(put_request(key, value))),
    }
}

fn op_get(key: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(RangeRequest {
            key: b(key),
            ..RangeRequest::default()
        })),
    }
}

fn compare_value(key: &str, result: compare::CompareResult, value: &str) -> Compare {
    Compare {
        result: result as i32,
        target: compare::CompareTarget::Value as i32,
        key: b(key),
        target_union: Some(compare::TargetUnion::Value(b(value))),
        range_end: Bytes::new(),
    }
}

#[test]
fn revisions_versions_and_recreation() {
    let mut store = Store::default();
    assert_eq!(
        store.current_revision(),
        1,
        "a fresh store is at revision 1"
    );
    assert_eq!(
        put(&mut store, "a", "1").header.map(|h| h.revision),
        Some(2)
    );
    put(&mut store, "a", "2");
    let kv = get(&store, "a").kvs[0].clone();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));

    let deleted = delete(
        &mut store,
        DeleteRangeRequest {
            key: b("a"),
            ..DeleteRangeRequest::default()
        },
    );
    assert_eq!(deleted.deleted, 1);
    assert_eq!(store.current_revision(), 4);
    assert!(get(&store, "a").kvs.is_empty(), "a deleted key is absent");

    put(&mut store, "a", "3");
    let kv = get(&store, "a").kvs[0].clone();
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (5, 5, 1),
        "created anew"
    );

    // A delete that deletes nothing does not raise the revision.
    let nothing = delete(
        &mut store,
        DeleteRangeRequest {
            key: b("missing"),
            ..DeleteRangeRequest::default()
        },
    );
    assert_eq!(nothing.deleted, 0);
    assert_eq!(store.current_revision(), 5);
    // Reads do not raise it either.
    get(&store, "a");
    assert_eq!(store.current_revision(), 5);
}

#[test]
fn range_options() {
    let mut store = Store::default();
    for (key, value) in [("foo1", "c"), ("foo2", "b"), ("foo3", "a"), ("zoo", "z")] {
        put(&mut store, key, value);
    }
    put(&mut store, "foo1", "cc");

    let prefix = |extra: fn(&mut RangeRequest)| {
        let mut request = RangeRequest {
            key: b("foo"),
            range_end: prefix_end("foo"),
            ..RangeRequest::default()
        };
        extra(&mut request);
        store.range(&request).expect("range")
    };

    let all = prefix(|_| {});
    assert_eq!(keys(&all), ["foo1", "foo2", "foo3"]);
    assert_eq!((all.count, all.more), (3, false));

    let limited = prefix(|r| r.limit = 2);
    assert_eq!(keys(&limited), ["foo1", "foo2"]);
    assert_eq!(
        (limited.count, limited.more),
        (3, true),
        "count counts every match"
    );

    let counted = prefix(|r| r.count_only = true);
    assert!(counted.kvs.is_empty());
    assert_eq!(counted.count, 3);

    let keys_only = prefix(|r| r.keys_only = true);
    assert!(keys_only.kvs.iter().all(|kv| kv.value.is_empty()));

    let by_value = prefix(|r| r.sort_target = range_request::SortTarget::Value as i32);
    assert_eq!(
        keys(&by_value),
        ["foo3", "foo2", "foo1"],
        "a non-key target sorts ascending by default"
    );
    let descending = prefix(|r| r.sort_order = range_request::SortOrder::Descend as i32);
    assert_eq!(keys(&descending), ["foo3", "foo2", "foo1"]);
    let newest_first = prefix(|r| {
        r.sort_target = range_request::SortTarget::Mod as i32;
        r.sort_order = range_request::SortOrder::Descend as i32;
        r.limit = 1;
    });
    assert_eq!(keys(&newest_first), ["foo1"]);
    assert!(newest_first.more);

    let modified_late = prefix(|r| r.min_mod_revision = 4);
    assert_eq!(keys(&modified_late), ["foo1", "foo3"]);
    let created_early = prefix(|r| r.max_create_revision = 3);
    assert_eq!(keys(&created_early), ["foo1", "foo2"]);

    let from_key = store
        .range(&RangeRequest {
            key: b("foo2"),
            range_end: Bytes::from_static(b"\0"),
            ..RangeRequest::default()
        })
        .expect("range");
    assert_eq!(keys(&from_key), ["foo2", "foo3", "zoo"]);
    let everything = store
        .range(&RangeRequest {
            key: Bytes::from_static(b"\0"),
            range_end: Bytes::from_static(b"\0"),
            ..RangeRequest::default()
        })
        .expect("range");
    assert_eq!(everything.count, 4);

    let historical = store
        .range(&RangeRequest {
            key: b("foo1"),
            revision: 2,
            ..RangeRequest::default()
        })
        .expect("range");
    assert_eq!(historical.kvs[0].value, b("c"));
    assert_eq!(
        historical.header.map(|h| h.revision),
        Some(6),
        "the header carries the current revision"
    );

    assert_eq!(
        store.range(&RangeRequest {
            key: b("foo1"),
            revision: 99,
            ..RangeRequest::default()
        }),
        Err(ERR_FUTURE_REV)
    );
    assert_eq!(store.range(&RangeRequest::default()), Err(ERR_EMPTY_KEY));
}

#[test]
fn put_options_and_their_errors() {
    let mut store = Store::default();
    put(&mut store, "k", "v1");
    let with_prev = put_with(
        &mut store,
        PutRequest {
            prev_kv: true,
            ..put_request("k", "v2")
        },
    )
    .expect("put");
    assert_eq!(with_prev.prev_kv.map(|kv| kv.value), Some(b("v1")));

    let ignore_value = put_with(
        &mut store,
        PutRequest {
            key: b("k"),
            ignore_value: true,
            ..PutRequest::default()
        },
    )
    .expect("put");
    assert!(ignore_value.prev_kv.is_none());
    assert_eq!(
        get(&store, "k").kvs[0].value,
        b("v2"),
        "ignore_value keeps the value"
    );
    assert_eq!(get(&store, "k").kvs[0].version, 3);

    let missing = put_with(
        &mut store,
        PutRequest {
            key: b("nope"),
            ignore_value: true,
            ..PutRequest::default()
        },
    );
    assert_eq!(missing, Err(ERR_KEY_NOT_FOUND));
    let missing_lease = put_with(
        &mut store,
        PutRequest {
            lease: 42,
            ..put_request("k", "v")
        },
    );
    assert_eq!(missing_lease, Err(ERR_LEASE_NOT_FOUND));
    assert_eq!(store.current_revision(), 4, "refused puts change nothing");
}

#[test]
fn delete_range_with_prev_kvs() {
    let mut store = Store::default();
    for key in ["a", "b", "c"] {
        put(&mut store, key, key);
    }
    let response = delete(
        &mut store,
        DeleteRangeRequest {
            key: b("a"),
            range_end: b("c"),
            prev_kv: true,
        },
    );
    assert_eq!(response.deleted, 2);
    assert_eq!(response.prev_kvs.len(), 2);
    assert_eq!(
        store.current_revision(),
        5,
        "one revision for the whole delete"
    );
    assert_eq!(
        keys(
            &store
                .range(&RangeRequest {
                    key: b("a"),
                    range_end: Bytes::from_static(b"\0"),
                    ..RangeRequest::default()
                })
                .expect("range")
        ),
        ["c"]
    );
}

#[test]
fn transactions_compare_every_target_and_share_one_revision() {
    let mut store = Store::default();
    put(&mut store, "x", "1");
    let success = txn(
        &mut store,
        TxnRequest {
            compare: vec![
                compare_value("x", compare::CompareResult::Equal, "1"),
                Compare {
                    result: compare::CompareResult::Equal as i32,
                    target: compare::CompareTarget::Version as i32,
                    key: b("x"),
                    target_union: Some(compare::TargetUnion::Version(1)),
                    range_end: Bytes::new(),
                },
                Compare {
                    result: compare::CompareResult::Less as i32,
                    target: compare::CompareTarget::Create as i32,
                    key: b("x"),
                    target_union: Some(compare::TargetUnion::CreateRevision(3)),
                    range_end: Bytes::new(),
                },
                Compare {
                    result: compare::CompareResult::Greater as i32,
                    target: compare::CompareTarget::Mod as i32,
                    key: b("x"),
                    target_union: Some(compare::TargetUnion::ModRevision(1)),
                    range_end: Bytes::new(),
                },
                Compare {
                    result: compare::CompareResult::Equal as i32,
                    target: compare::CompareTarget::Lease as i32,
                    key: b("x"),
                    target_union: Some(compare::TargetUnion::Lease(0)),
                    range_end: Bytes::new(),
                },
            ],
            success: vec![op_put("y", "2"), op_put("z", "3"), op_get("y")],
            failure: vec![op_put("failed", "!")],
        },
    )
    .expect("txn");
    assert!(success.succeeded);
    assert_eq!(
        store.current_revision(),
        3,
        "every write of a txn shares one revision"
    );
    assert_eq!(get(&store, "y").kvs[0].mod_revision, 3);
    assert_eq!(get(&store, "z").kvs[0].mod_revision, 3);
    match &success.responses[2].response {
        Some(response_op::Response::ResponseRange(range)) => {
            assert_eq!(
                range.kvs[0].value,
                b("2"),
                "a read in a txn sees the txn's earlier writes"
            )
        }
        other => panic!("unexpected {other:?}"),
    }

    let failure = txn(
        &mut store,
        TxnRequest {
            compare: vec![compare_value("x", compare::CompareResult::NotEqual, "1")],
            success: vec![op_put("never", "!")],
            failure: vec![op_get("x")],
        },
    )
    .expect("txn");
    assert!(!failure.succeeded);
    assert_eq!(
        store.current_revision(),
        3,
        "a read-only txn does not raise the revision"
    );

    // A value compare on a missing key always fails.
    let missing = txn(
        &mut store,
        TxnRequest {
            compare: vec![compare_value(
                "missing",
                compare::CompareResult::NotEqual,
                "x",
            )],
            ..TxnRequest::default()
        },
    )
    .expect("txn");
    assert!(!missing.succeeded);
}

#[test]
fn nested_compares_see_the_store_as_the_transaction_found_it() {
    let mut store = Store::default();
    let nested = TxnRequest {
        compare: vec![compare_value("a", compare::CompareResult::Equal, "1")],
        success: vec![op_put("b", "from nested success")],
        failure: vec![op_put("c", "from nested failure")],
    };
    let outer = txn(
        &mut store,
        TxnRequest {
            compare: vec![],
            success: vec![op_put("a", "1"), op_txn(nested)],
            failure: vec![],
        },
    )
    .expect("txn");
    assert!(outer.succeeded);
    // etcd decides every compare before any op runs: `a` did not exist
    // then, so the nested transaction takes its failure branch.
    match &outer.responses[1].response {
        Some(response_op::Response::ResponseTxn(nested)) => assert!(!nested.succeeded),
        other => panic!("unexpected {other:?}"),
    }
    assert!(get(&store, "b").kvs.is_empty());
    assert_eq!(get(&store, "c").kvs[0].value, b("from nested failure"));
    assert_eq!(store.current_revision(), 2);
}

fn op_txn(txn: TxnRequest) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestTxn(txn)),
    }
}

fn op_delete(key: &str, range_end: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(
            DeleteRangeRequest {
                key: b(key),
                range_end: b(range_end),
                prev_kv: false,
            },
        )),
    }
}

fn op_put_ignoring_value(key: &str) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: b(key),
            ignore_value: true,
            ..PutRequest::default()
        })),
    }
}

/// The transaction found by the review: a nested delete of `d`, then a put
/// of `d` that needs its old value. etcd refuses it before the log; and if
/// it reaches the store anyway, the store must refuse it whole, leaving no
/// trace (before the fix `d` was gone and the delete surfaced at the next
/// write's revision).
#[test]
fn a_transaction_failing_after_a_write_leaves_no_trace() {
    let request = TxnRequest {
        compare: vec![],
        success: vec![
            op_txn(TxnRequest {
                compare: vec![],
                success: vec![op_delete("d", "")],
                failure: vec![],
            }),
            op_put_ignoring_value("d"),
        ],
        failure: vec![],
    };
    let internal = InternalRequest {
        request: Some(internal_request::Request::Txn(request.clone())),
    };
    assert_eq!(validate_request(&internal, 128), Err(ERR_DUPLICATE_KEY));

    let mut store = Store::default();
    let mut untouched = Store::default();
    for store in [&mut store, &mut untouched] {
        put(store, "d", "v");
        put(store, "other", "x");
    }
    let revision = store.current_revision();
    assert_eq!(txn(&mut store, request), Err(ERR_KEY_NOT_FOUND));
    assert_eq!(store.current_revision(), revision);
    assert_eq!(get(&store, "d").kvs[0].value, b("v"));
    assert_eq!(store.hash_kv(0), untouched.hash_kv(0));
    assert_eq!(store.key_count(), untouched.key_count());
    assert_eq!(store.stored_bytes(), untouched.stored_bytes());
    // The next write gets the next revision and nothing else shows up in it.
    for store in [&mut store, &mut untouched] {
        put(store, "e", "1");
    }
    assert_eq!(store.current_revision(), revision + 1);
    assert_eq!(store.hash_kv(0), untouched.hash_kv(0));
    let at_next = store
        .range(&RangeRequest {
            key: b("a"),
            range_end: b("z"),
            revision: revision + 1,
            ..RangeRequest::default()
        })
        .expect("range");
    assert_eq!(keys(&at_next), ["d", "e", "other"]);

    // A key the failed transaction created is forgotten again.
    let creating = TxnRequest {
        compare: vec![],
        success: vec![
            op_put("new", "1"),
            op_txn(TxnRequest {
                compare: vec![],
                success: vec![op_delete("e", "")],
                failure: vec![],
            }),
            op_put_ignoring_value("e"),
        ],
        failure: vec![],
    };
    assert_eq!(txn(&mut store, creating), Err(ERR_KEY_NOT_FOUND));
    assert!(get(&store, "new").kvs.is_empty());
    assert_eq!(store.key_count(), untouched.key_count());
    assert_eq!(store.hash_kv(0), untouched.hash_kv(0));
}

/// etcd checks every put on the path before any range, and both before
/// anything runs.
#[test]
fn a_transaction_checks_puts_then_ranges_before_running_anything() {
    let mut store = Store::default();
    put(&mut store, "a", "1");
    let revision = store.current_revision();
    let future_range = RequestOp {
        request: Some(request_op::Request::RequestRange(RangeRequest {
            key: b("a"),
            revision: revision + 1,
            ..RangeRequest::default()
        })),
    };
    let both = TxnRequest {
        compare: vec![],
        success: vec![
            op_put("b", "1"),
            future_range.clone(),
            op_txn(TxnRequest {
                compare: vec![],
                success: vec![op_put_ignoring_value("missing")],
                failure: vec![],
            }),
        ],
        failure: vec![],
    };
    assert_eq!(txn(&mut store, both), Err(ERR_KEY_NOT_FOUND));
    let range_only = TxnRequest {
        compare: vec![],
        success: vec![op_put("b", "1"), future_range],
        failure: vec![],
    };
    assert_eq!(txn(&mut store, range_only), Err(ERR_FUTURE_REV));
    assert!(get(&store, "b").kvs.is_empty());
    assert_eq!(store.current_revision(), revision);
}

/// etcd 3.4's `checkIntervals`, case by case (the etcdctl cases were run
/// against etcd 3.4.23).
#[test]
fn overlapping_writes_are_refused_as_etcd_refuses_them() {
    let check = |success: Vec<RequestOp>, failure: Vec<RequestOp>| {
        validate_request(
            &InternalRequest {
                request: Some(internal_request::Request::Txn(TxnRequest {
                    compare: vec![],
                    success,
                    failure,
                })),
            },
            128,
        )
    };
    let nested = |success: Vec<RequestOp>, failure: Vec<RequestOp>| {
        op_txn(TxnRequest {
            compare: vec![],
            success,
            failure,
        })
    };
    // etcdctl: `put c 1; del c` is refused.
    assert_eq!(
        check(vec![op_put("c", "1"), op_delete("c", "")], vec![]),
        Err(ERR_DUPLICATE_KEY)
    );
    // etcdctl: a delete from a key (end "\0") or with its end before its
    // start overlaps nothing, even the key it starts at.
    assert_eq!(
        check(vec![op_delete("a", "\0"), op_put("a", "x")], vec![]),
        Ok(())
    );
    assert_eq!(
        check(vec![op_delete("a", "\0"), op_put("b", "x")], vec![]),
        Ok(())
    );
    assert_eq!(
        check(vec![op_delete("b", "a"), op_put("b", "x")], vec![]),
        Ok(())
    );
    // etcdctl: the same key in the two branches is fine.
    assert_eq!(
        check(vec![op_put("c", "1")], vec![op_put("c", "2")]),
        Ok(())
    );
    // Ranges are half open.
    assert_eq!(
        check(vec![op_delete("a", "c"), op_put("c", "x")], vec![]),
        Ok(())
    );
    assert_eq!(
        check(vec![op_delete("a", "c"), op_put("a", "x")], vec![]),
        Err(ERR_DUPLICATE_KEY)
    );
    // Across levels: a nested delete covers an outer put, in either order.
    assert_eq!(
        check(
            vec![nested(vec![op_delete("d", "")], vec![]), op_put("d", "v")],
            vec![]
        ),
        Err(ERR_DUPLICATE_KEY)
    );
    assert_eq!(
        check(
            vec![op_delete("a", "z"), nested(vec![], vec![op_put("d", "v")])],
            vec![]
        ),
        Err(ERR_DUPLICATE_KEY)
    );
    // The two branches of one nested transaction exclude each other...
    assert_eq!(
        check(
            vec![nested(vec![op_put("k", "1")], vec![op_put("k", "2")])],
            vec![]
        ),
        Ok(())
    );
    // ...but two nested transactions may both run, and so may a nested one
    // and its parent.
    assert_eq!(
        check(
            vec![
                nested(vec![op_put("k", "1")], vec![]),
                nested(vec![op_put("k", "2")], vec![]),
            ],
            vec![]
        ),
        Err(ERR_DUPLICATE_KEY)
    );
    assert_eq!(
        check(
            vec![nested(vec![], vec![op_put("k", "1")]), op_put("k", "2")],
            vec![]
        ),
        Err(ERR_DUPLICATE_KEY)
    );
    // A nested delete and a later nested put overlap too.
    assert_eq!(
        check(
            vec![
                nested(vec![op_delete("a", "z")], vec![]),
                nested(vec![op_put("k", "2")], vec![]),
            ],
            vec![]
        ),
        Err(ERR_DUPLICATE_KEY)
    );
    // Deletes may overlap each other.
    assert_eq!(
        check(vec![op_delete("a", "z"), op_delete("k", "")], vec![]),
        Ok(())
    );
    // An empty op is answered as etcd answers it.
    assert_eq!(
        check(vec![RequestOp { request: None }], vec![]),
        Err(ERR_KEY_NOT_FOUND)
    );
}

/// A nested transaction gets the op budget its parent left, as in etcd.
#[test]
fn nested_transactions_share_the_op_budget() {
    let request = |outer_ops: usize, nested_ops: usize| {
        let mut success: Vec<RequestOp> = (0..outer_ops - 1)
            .map(|n| op_put(&format!("outer{n}"), "v"))
            .collect();
        success.push(op_txn(TxnRequest {
            compare: vec![],
            success: (0..nested_ops)
                .map(|n| op_put(&format!("nested{n}"), "v"))
                .collect(),
            failure: vec![],
        }));
        InternalRequest {
            request: Some(internal_request::Request::Txn(TxnRequest {
                compare: vec![],
                success,
                failure: vec![],
            })),
        }
    };
    assert_eq!(validate_request(&request(100, 28), 128), Ok(()));
    assert_eq!(
        validate_request(&request(100, 29), 128),
        Err(ERR_TOO_MANY_OPS)
    );
}

fn op_txn_of(success: Vec<RequestOp>) -> RequestOp {
    op_txn(TxnRequest {
        compare: vec![],
        success,
        failure: vec![],
    })
}

fn op_get_at(key: &str, revision: i64) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::RequestRange(RangeRequest {
            key: b(key),
            revision,
            ..RangeRequest::default()
        })),
    }
}

fn txn_request(success: Vec<RequestOp>) -> TxnRequest {
    TxnRequest {
        compare: vec![],
        success,
        failure: vec![],
    }
}

/// Found in review: a transaction nested 49 deep passed gRPC decoding and
/// validation, but its log entry (one message deeper) could not be decoded
/// by prost, so every member's apply thread stopped at it, again after
/// every restart. Validation now bounds the depth well inside what decodes.
#[test]
fn every_transaction_validation_accepts_decodes_from_the_log() {
    // The deepest accepted: every kind of op and a compare at the bottom.
    let mut deepest = TxnRequest {
        compare: vec![compare_value("a", compare::CompareResult::Equal, "1")],
        success: vec![op_put("p", "1"), op_get("g"), op_delete("d", "")],
        failure: vec![op_get("f")],
    };
    for _ in 1..MAX_TXN_NESTING {
        deepest = txn_request(vec![op_txn(deepest)]);
    }
    let proposal = |txn: TxnRequest| InternalRequest {
        request: Some(internal_request::Request::Txn(txn)),
    };
    let accepted = proposal(deepest.clone());
    assert_eq!(validate_request(&accepted, 128), Ok(()));
    let entry = accepted.encode_to_vec();
    assert_eq!(
        InternalRequest::decode(entry.as_slice()).map_err(|error| error.to_string()),
        Ok(accepted)
    );
    let too_deep = proposal(txn_request(vec![op_txn(deepest)]));
    assert_eq!(validate_request(&too_deep, 128), Err(ERR_TXN_TOO_DEEP));
}

/// Found in review: etcd 3.4.23 fills each op's header from what the op
/// saw (a range or delete before any change: the revision found; after a
/// change, or a put: the new one) and leaves a nested transaction's header
/// empty. Checked on etcd 3.4.23: store at revision 2,
/// `txn [get a, del zz, put b, get a, del zz]` answers 2, 2, 3, 3, 3.
#[test]
fn inner_headers_carry_the_revision_each_op_saw() {
    let mut store = Store::default();
    put(&mut store, "a", "1");
    let response = txn(
        &mut store,
        txn_request(vec![
            op_get("a"),
            op_delete("zz", ""),
            op_put("b", "1"),
            op_get("a"),
            op_delete("zz", ""),
            op_txn_of(vec![op_get("a")]),
        ]),
    )
    .expect("txn");
    assert_eq!(response.header.map(|h| h.revision), Some(3));
    let revisions: Vec<i64> = response
        .responses
        .iter()
        .map(|op| match &op.response {
            Some(response_op::Response::ResponseRange(r)) => r.header.map_or(-1, |h| h.revision),
            Some(response_op::Response::ResponsePut(r)) => r.header.map_or(-1, |h| h.revision),
            Some(response_op::Response::ResponseDeleteRange(r)) => {
                r.header.map_or(-1, |h| h.revision)
            }
            Some(response_op::Response::ResponseTxn(r)) => r.header.map_or(-1, |h| h.revision),
            None => -1,
        })
        .collect();
    assert_eq!(revisions, [2, 2, 3, 3, 3, 0]);
}

/// Found in review: etcd's `checkRequestRange` compares with its
/// compaction revision, which is -1 until the first compaction, so a range
/// at revision -1 in a transaction reads the current revision until then
/// (etcd 3.4.23: `txn [get a rev=-1, put zz 1]` succeeds; rev=-2 is refused
/// as compacted).
#[test]
fn a_negative_range_revision_in_a_transaction_answers_as_etcd() {
    let mut store = Store::default();
    put(&mut store, "a", "1");
    assert!(txn(
        &mut store,
        txn_request(vec![op_get_at("a", -1), op_put("zz", "1")])
    )
    .is_ok());
    assert_eq!(
        txn(&mut store, txn_request(vec![op_get_at("a", -2)])).err(),
        Some(ERR_COMPACTED)
    );
}

/// Found in review: etcd's `compareKV` reads an unknown target as equal and
/// an unknown result as holding (etcd 3.4.23, key `a` missing: both
/// compares below succeed).
#[test]
fn compares_with_unknown_enums_answer_as_etcd() {
    let mut store = Store::default();
    let unknown_result = Compare {
        result: 7,
        target: compare::CompareTarget::Version as i32,
        key: b("a"),
        target_union: Some(compare::TargetUnion::Version(5)),
        range_end: Bytes::new(),
    };
    let unknown_target = Compare {
        result: compare::CompareResult::Equal as i32,
        target: 9,
        ..unknown_result.clone()
    };
    for compare in [unknown_result, unknown_target] {
        let response = txn(
            &mut store,
            TxnRequest {
                compare: vec![compare.clone()],
                success: vec![op_get("a")],
                failure: vec![],
            },
        )
        .expect("txn");
        assert!(response.succeeded, "{compare:?}");
    }
}

/// Found in review: etcd's `Put` outside a transaction looks the lease up
/// before the key (etcd 3.4.23: `put missing --ignore-value --lease=1234`
/// answers "requested lease not found").
#[test]
fn a_plain_put_checks_the_lease_before_the_key() {
    let mut store = Store::default();
    let refused = put_with(
        &mut store,
        PutRequest {
            key: b("missing"),
            ignore_value: true,
            lease: 1234,
            ..PutRequest::default()
        },
    );
    assert_eq!(refused.err(), Some(ERR_LEASE_NOT_FOUND));
}

/// A transaction whose branch holds `n` ops of `leaf(i)`, spread over a
/// tree of nested transactions eight wide (each level within the op
/// budget).
fn spread(n: usize, leaf: &dyn Fn(usize) -> RequestOp) -> RequestOp {
    const FAN: usize = 8;
    fn build(range: std::ops::Range<usize>, leaf: &dyn Fn(usize) -> RequestOp) -> Vec<RequestOp> {
        if range.len() <= FAN {
            return range.map(leaf).collect();
        }
        let chunk = range.len().div_ceil(FAN);
        (range.start..range.end)
            .step_by(chunk)
            .map(|start| op_txn_of(build(start..(start + chunk).min(range.end), leaf)))
            .collect()
    }
    op_txn_of(build(0..n, leaf))
}

/// Found in review: the overlap check scanned every delete for every put,
/// so one request within the 1.5 MiB limit (45,000 single-key deletes in
/// one nested transaction, as many puts in another) took ~28 s to validate
/// on the API thread. A complexity guard, not a speed measurement: the
/// bound is far above the O(n log n) check and far below the quadratic one.
#[test]
fn the_overlap_check_is_not_quadratic() {
    let n = 45_000;
    let short_key =
        |prefix: u8, i: usize| Bytes::from(vec![prefix, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
    let deletes = spread(n, &|i| RequestOp {
        request: Some(request_op::Request::RequestDeleteRange(
            DeleteRangeRequest {
                key: short_key(b'd', i),
                ..DeleteRangeRequest::default()
            },
        )),
    });
    let puts = spread(n, &|i| RequestOp {
        request: Some(request_op::Request::RequestPut(PutRequest {
            key: short_key(b'p', i),
            ..PutRequest::default()
        })),
    });
    let request = InternalRequest {
        request: Some(internal_request::Request::Txn(txn_request(vec![
            deletes, puts,
        ]))),
    };
    assert!(request.encoded_len() <= 1536 * 1024);
    let started = std::time::Instant::now();
    assert_eq!(validate_request(&request, 128), Ok(()));
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(5),
        "validating {n} puts against {n} deletes took {took:?}"
    );
}

/// Ranges merge in the overlap check: a put is refused exactly when some
/// delete covers it, however the deletes overlap or touch.
#[test]
fn overlapping_and_touching_deletes_cover_exactly_their_union() {
    let deletes = [("b", "d"), ("c", "f"), ("f", "h"), ("m", "n"), ("x", "")];
    for key in [
        "a", "b", "c", "e", "f", "g", "h", "l", "m", "m\0", "n", "x", "x\0",
    ] {
        let covered = deletes.iter().any(|(start, end)| {
            if end.is_empty() {
                key == *start
            } else {
                *start <= key && key < *end
            }
        });
        let mut success: Vec<RequestOp> = deletes
            .iter()
            .map(|(start, end)| op_delete(start, end))
            .collect();
        success.push(op_put(key, "v"));
        let request = InternalRequest {
            request: Some(internal_request::Request::Txn(txn_request(success))),
        };
        let expected = if covered {
            Err(ERR_DUPLICATE_KEY)
        } else {
            Ok(())
        };
        assert_eq!(validate_request(&request, 128), expected, "put {key:?}");
    }
}

/// Held in review: etcd 3.4.23 accepts `put n; del a --from-key; put a
/// ignore_value` and then panics applying it (the put finds no key). The
/// store refuses it whole: identical to its copy down to the snapshot
/// bytes, across a compacted history, and both go on identically.
#[test]
fn a_validated_transaction_failing_mid_run_is_undone_to_the_byte() {
    let mut store = Store::default();
    put(&mut store, "a", "1");
    put(&mut store, "a", "2");
    put(&mut store, "b", "1");
    delete(
        &mut store,
        DeleteRangeRequest {
            key: b("b"),
            ..DeleteRangeRequest::default()
        },
    );
    put(&mut store, "c", "1");
    let compact = |store: &mut Store, revision| {
        apply(
            store,
            internal_request::Request::Compaction(CompactionRequest {
                revision,
                physical: false,
            }),
        )
        .expect("compact")
    };
    compact(&mut store, 4);
    let before = store.twin();
    let request = txn_request(vec![
        op_put("n", "new"),
        op_delete("a", "\0"),
        op_put_ignoring_value("a"),
    ]);
    let proposal = InternalRequest {
        request: Some(internal_request::Request::Txn(request.clone())),
    };
    assert_eq!(validate_request(&proposal, 128), Ok(()));
    assert_eq!(txn(&mut store, request).err(), Some(ERR_KEY_NOT_FOUND));
    assert_eq!(store.current_revision(), before.current_revision());
    assert_eq!(store.key_count(), before.key_count());
    assert_eq!(store.stored_bytes(), before.stored_bytes());
    assert_eq!(store.dump(), before.dump());
    assert_eq!(store.hash_kv(0), before.hash_kv(0));
    let mut twin = before.twin();
    for store in [&mut store, &mut twin] {
        txn(
            store,
            txn_request(vec![op_delete("a", "\0"), op_put("a", "3")]),
        )
        .expect("txn");
        let current = store.current_revision();
        compact(store, current);
    }
    assert_eq!(store.dump(), twin.dump());
    assert_eq!(store.hash_kv(0), twin.hash_kv(0));
}

#[test]
fn compaction_drops_history_and_guards_reads() {
    let mut store = Store::default();
    put(&mut store, "k", "v1"); // 2
    put(&mut store, "k", "v2"); // 3
    put(&mut store, "k", "v3"); // 4
    let compact = |store: &mut Store, revision| {
        apply(
            store,
            internal_request::Request::Compaction(CompactionRequest {
                revision,
                physical: false,
            }),
        )
    };
    assert!(compact(&mut store, 3).is_ok());
    assert_eq!(store.compacted_revision(), 3);
    let old = store.range(&RangeRequest {
        key: b("k"),
        revision: 2,
        ..RangeRequest::default()
    });
    assert_eq!(old, Err(ERR_COMPACTED));
    let at_compaction = store
        .range(&RangeRequest {
            key: b("k"),
            revision: 3,
            ..RangeRequest::default()
        })
        .expect("the compaction revision itself stays readable");
    assert_eq!(at_compaction.kvs[0].value, b("v2"));
    assert_eq!(compact(&mut store, 3), Err(ERR_COMPACTED));
    assert_eq!(compact(&mut store, 9), Err(ERR_FUTURE_REV));
    assert_eq!(
        get(&store, "k").kvs[0].version,
        3,
        "versions survive compaction"
    );
}

#[test]
fn requests_are_validated_before_the_log() {
    let txn_of = |success: Vec<RequestOp>| InternalRequest {
        request: Some(internal_request::Request::Txn(TxnRequest {
            compare: vec![],
            success,
            failure: vec![],
        })),
    };
    let too_many = txn_of((0..129).map(|n| op_put(&format!("k{n}"), "v")).collect());
    assert_eq!(validate_request(&too_many, 128), Err(ERR_TOO_MANY_OPS));
    let duplicate = txn_of(vec![op_put("k", "1"), op_put("k", "2")]);
    assert_eq!(validate_request(&duplicate, 128), Err(ERR_DUPLICATE_KEY));
    let put_and_delete = txn_of(vec![
        op_put("k", "1"),
        RequestOp {
            request: Some(request_op::Request::RequestDeleteRange(
                DeleteRangeRequest {
                    key: b("a"),
                    range_end: b("z"),
                    prev_kv: false,
                },
            )),
        },
    ]);
    assert_eq!(
        validate_request(&put_and_delete, 128),
        Err(ERR_DUPLICATE_KEY)
    );
    let empty_key = InternalRequest {
        request: Some(internal_request::Request::Put(PutRequest::default())),
    };
    assert_eq!(validate_request(&empty_key, 128), Err(ERR_EMPTY_KEY));
    assert_eq!(
        validate_request(&txn_of(vec![op_put("a", "1"), op_put("b", "2")]), 128),
        Ok(())
    );
}

#[test]
fn hash_kv_agrees_for_equal_histories_and_differs_otherwise() {
    let mut first = Store::default();
    let mut second = Store::default();
    for store in [&mut first, &mut second] {
        put(store, "k", "1");
        put(store, "k", "2");
        delete(
            store,
            DeleteRangeRequest {
                key: b("k"),
                ..DeleteRangeRequest::default()
            },
        );
    }
    assert_eq!(first.hash_kv(0), second.hash_kv(0));
    assert_eq!(first.hash_kv(2), second.hash_kv(2));
    assert_ne!(
        first.hash_kv(2),
        first.hash_kv(3),
        "a later revision covers more history"
    );
    put(&mut second, "other", "x");
    assert_ne!(
        first.hash_kv(0).map(|h| h.0),
        second.hash_kv(0).map(|h| h.0)
    );
    assert_eq!(
        first.hash_kv(3),
        second.hash_kv(3),
        "history up to a shared revision still agrees"
    );
    assert_eq!(first.hash_kv(99), Err(ERR_FUTURE_REV));
}

/// A key longer than the engine can hold every version of is refused
/// before the log and, should one reach the store, at apply (alone or in
/// a transaction), changing nothing; the longest allowed key is stored.
#[test]
fn keys_beyond_the_engine_limit_are_refused() {
    let longest = "\0".repeat(MAX_KEY_BYTES);
    let too_long = "k".repeat(MAX_KEY_BYTES + 1);
    let proposal = InternalRequest {
        request: Some(internal_request::Request::Put(put_request(&too_long, "v"))),
    };
    assert_eq!(validate_request(&proposal, 128), Err(ERR_KEY_TOO_LARGE));
    let in_txn = InternalRequest {
        request: Some(internal_request::Request::Txn(txn_request(vec![op_put(
            &too_long, "v",
        )]))),
    };
    assert_eq!(validate_request(&in_txn, 128), Err(ERR_KEY_TOO_LARGE));

    let mut store = Store::default();
    put(&mut store, &longest, "v");
    assert_eq!(get(&store, &longest).kvs[0].value, b("v"));
    let revision = store.current_revision();
    let before = store.dump();
    assert_eq!(
        put_with(&mut store, put_request(&too_long, "v")).err(),
        Some(ERR_KEY_TOO_LARGE)
    );
    assert_eq!(
        txn(
            &mut store,
            txn_request(vec![op_put("a", "1"), op_put(&too_long, "v")])
        )
        .err(),
        Some(ERR_KEY_TOO_LARGE)
    );
    assert_eq!(store.current_revision(), revision);
    assert_eq!(store.dump(), before);
}
