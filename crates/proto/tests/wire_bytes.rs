//! Exact encodings of etcd messages, worked out by hand from the protobuf
//! wire format and etcd's field numbers. A wrong field number or type (say
//! sint64 for int64, or Compare.range_end at 9 instead of 64) changes these
//! bytes, so these tests pin the wire, not just our own round trip.
//!
//! Reminder of the format: each field is `tag = (number << 3) | wire_type`
//! as a varint, then the value. Wire type 0 = varint (int64, uint64, bool,
//! enum), 2 = length-delimited (bytes, string, message, packed repeated).
//! proto3 omits scalar fields equal to their default, except inside a oneof.
//! A negative int64 is a 10-byte varint (two's complement, no zigzag).

use bytes::Bytes;
use prost::Message;
use proto::etcdserverpb as pb;
use proto::mvccpb;

/// Encodes `message`, checks the bytes, and checks they decode back to it.
fn assert_wire<M: Message + Default + PartialEq + std::fmt::Debug>(message: &M, expected: &[u8]) {
    let encoded = message.encode_to_vec();
    assert_eq!(
        hex(&encoded),
        hex(expected),
        "encoding of {message:?} (left: got, right: expected)"
    );
    assert_eq!(&M::decode(expected).unwrap(), message, "decoding");
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn b(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

#[test]
fn put_request() {
    let put = pb::PutRequest {
        key: b("foo"),
        value: b("bar"),
        lease: 300,
        prev_kv: true,
        ignore_value: true,
        ignore_lease: true,
    };
    #[rustfmt::skip]
    let expected = [
        0x0a, 3, b'f', b'o', b'o', // 1 key
        0x12, 3, b'b', b'a', b'r', // 2 value
        0x18, 0xac, 0x02,          // 3 lease = 300 (0b10_0101100)
        0x20, 1,                   // 4 prev_kv
        0x28, 1,                   // 5 ignore_value
        0x30, 1,                   // 6 ignore_lease
    ];
    assert_wire(&put, &expected);
}

#[test]
fn range_request_every_field() {
    let range = pb::RangeRequest {
        key: b("a"),
        range_end: b("b"),
        limit: 10,
        revision: 5,
        sort_order: pb::range_request::SortOrder::Descend as i32,
        sort_target: pb::range_request::SortTarget::Mod as i32,
        serializable: true,
        keys_only: true,
        count_only: true,
        min_mod_revision: 1,
        max_mod_revision: 2,
        min_create_revision: 3,
        max_create_revision: 4,
    };
    #[rustfmt::skip]
    let expected = [
        0x0a, 1, b'a', // 1 key
        0x12, 1, b'b', // 2 range_end
        0x18, 10,      // 3 limit
        0x20, 5,       // 4 revision
        0x28, 2,       // 5 sort_order = DESCEND
        0x30, 3,       // 6 sort_target = MOD
        0x38, 1,       // 7 serializable
        0x40, 1,       // 8 keys_only
        0x48, 1,       // 9 count_only
        0x50, 1,       // 10 min_mod_revision
        0x58, 2,       // 11 max_mod_revision
        0x60, 3,       // 12 min_create_revision
        0x68, 4,       // 13 max_create_revision
    ];
    assert_wire(&range, &expected);
}

#[test]
fn enum_values() {
    use pb::compare::{CompareResult, CompareTarget};
    use pb::range_request::{SortOrder, SortTarget};
    assert_eq!(
        [SortOrder::None, SortOrder::Ascend, SortOrder::Descend].map(|v| v as i32),
        [0, 1, 2]
    );
    assert_eq!(
        [
            SortTarget::Key,
            SortTarget::Version,
            SortTarget::Create,
            SortTarget::Mod,
            SortTarget::Value
        ]
        .map(|v| v as i32),
        [0, 1, 2, 3, 4]
    );
    assert_eq!(
        [
            CompareResult::Equal,
            CompareResult::Greater,
            CompareResult::Less,
            CompareResult::NotEqual
        ]
        .map(|v| v as i32),
        [0, 1, 2, 3]
    );
    assert_eq!(
        [
            CompareTarget::Version,
            CompareTarget::Create,
            CompareTarget::Mod,
            CompareTarget::Value,
            CompareTarget::Lease
        ]
        .map(|v| v as i32),
        [0, 1, 2, 3, 4]
    );
    assert_eq!(
        [
            mvccpb::event::EventType::Put,
            mvccpb::event::EventType::Delete
        ]
        .map(|v| v as i32),
        [0, 1]
    );
    assert_eq!(
        [
            pb::AlarmType::None,
            pb::AlarmType::Nospace,
            pb::AlarmType::Corrupt
        ]
        .map(|v| v as i32),
        [0, 1, 2]
    );
    use pb::alarm_request::AlarmAction;
    assert_eq!(
        [
            AlarmAction::Get,
            AlarmAction::Activate,
            AlarmAction::Deactivate
        ]
        .map(|v| v as i32),
        [0, 1, 2]
    );
    use pb::watch_create_request::FilterType;
    assert_eq!(
        [FilterType::Noput, FilterType::Nodelete].map(|v| v as i32),
        [0, 1]
    );
    use proto::authpb::permission::Type;
    assert_eq!(
        [Type::Read, Type::Write, Type::Readwrite].map(|v| v as i32),
        [0, 1, 2]
    );
}

#[test]
fn txn_with_every_compare_target_and_a_nested_txn() {
    use pb::compare::{CompareResult, CompareTarget, TargetUnion};
    use pb::request_op::Request;

    let compare =
        |result: CompareResult, target: CompareTarget, operand: TargetUnion| pb::Compare {
            result: result as i32,
            target: target as i32,
            key: b("k"),
            target_union: Some(operand),
            range_end: Bytes::new(),
        };
    let txn = pb::TxnRequest {
        compare: vec![
            // A oneof member is written even when it holds the default (0).
            compare(
                CompareResult::Equal,
                CompareTarget::Version,
                TargetUnion::Version(0),
            ),
            compare(
                CompareResult::Greater,
                CompareTarget::Create,
                TargetUnion::CreateRevision(3),
            ),
            compare(
                CompareResult::Less,
                CompareTarget::Mod,
                TargetUnion::ModRevision(4),
            ),
            compare(
                CompareResult::NotEqual,
                CompareTarget::Value,
                TargetUnion::Value(b("v")),
            ),
            pb::Compare {
                range_end: b("l"),
                ..compare(
                    CompareResult::Equal,
                    CompareTarget::Lease,
                    TargetUnion::Lease(5),
                )
            },
        ],
        success: vec![
            pb::RequestOp {
                request: Some(Request::RequestPut(pb::PutRequest {
                    key: b("k"),
                    value: b("v"),
                    ..Default::default()
                })),
            },
            pb::RequestOp {
                request: Some(Request::RequestTxn(pb::TxnRequest {
                    compare: vec![],
                    success: vec![pb::RequestOp {
                        request: Some(Request::RequestRange(pb::RangeRequest {
                            key: b("k"),
                            ..Default::default()
                        })),
                    }],
                    failure: vec![pb::RequestOp {
                        request: Some(Request::RequestDeleteRange(pb::DeleteRangeRequest {
                            key: b("k"),
                            range_end: b("l"),
                            prev_kv: true,
                        })),
                    }],
                })),
            },
        ],
        failure: vec![],
    };
    #[rustfmt::skip]
    let expected = [
        // 1 compare: EQUAL(0, omitted) VERSION(0, omitted) "k", version = 0
        0x0a, 5,
            0x1a, 1, b'k',             // 3 key
            0x20, 0,                   // 4 version (oneof: written although 0)
        // 1 compare: GREATER CREATE "k" create_revision = 3
        0x0a, 9,
            0x08, 1, 0x10, 1, 0x1a, 1, b'k',
            0x28, 3,                   // 5 create_revision
        // 1 compare: LESS MOD "k" mod_revision = 4
        0x0a, 9,
            0x08, 2, 0x10, 2, 0x1a, 1, b'k',
            0x30, 4,                   // 6 mod_revision
        // 1 compare: NOT_EQUAL VALUE "k" value = "v"
        0x0a, 10,
            0x08, 3, 0x10, 3, 0x1a, 1, b'k',
            0x3a, 1, b'v',             // 7 value
        // 1 compare: EQUAL LEASE "k" lease = 5, range_end = "l"
        0x0a, 11,
            0x10, 4, 0x1a, 1, b'k',
            0x40, 5,                   // 8 lease
            0x82, 0x04, 1, b'l',       // 64 range_end: tag 514 = varint 82 04
        // 2 success: RequestOp { 2 request_put: PutRequest { key, value } }
        0x12, 8,
            0x12, 6,
                0x0a, 1, b'k', 0x12, 1, b'v',
        // 2 success: RequestOp { 4 request_txn: TxnRequest { .. } }
        0x12, 21,
            0x22, 19,
                // 2 success: RequestOp { 1 request_range: RangeRequest { key } }
                0x12, 5,
                    0x0a, 3,
                        0x0a, 1, b'k',
                // 3 failure: RequestOp { 3 request_delete_range: { key, range_end, prev_kv } }
                0x1a, 10,
                    0x1a, 8,
                        0x0a, 1, b'k', 0x12, 1, b'l', 0x18, 1,
    ];
    assert_wire(&txn, &expected);
}

#[test]
fn txn_response_with_each_response_kind() {
    use pb::response_op::Response;
    let header = pb::ResponseHeader {
        revision: 9,
        ..Default::default()
    };
    let txn = pb::TxnResponse {
        header: Some(header),
        succeeded: true,
        responses: vec![
            pb::ResponseOp {
                response: Some(Response::ResponseRange(pb::RangeResponse {
                    count: 2,
                    more: true,
                    ..Default::default()
                })),
            },
            pb::ResponseOp {
                response: Some(Response::ResponsePut(pb::PutResponse::default())),
            },
            pb::ResponseOp {
                response: Some(Response::ResponseDeleteRange(pb::DeleteRangeResponse {
                    deleted: 1,
                    ..Default::default()
                })),
            },
            pb::ResponseOp {
                response: Some(Response::ResponseTxn(pb::TxnResponse::default())),
            },
        ],
    };
    #[rustfmt::skip]
    let expected = [
        0x0a, 2, 0x18, 9,          // 1 header { 3 revision }
        0x10, 1,                   // 2 succeeded
        0x1a, 6, 0x0a, 4,          // 3 responses { 1 response_range {
            0x18, 1, 0x20, 2,      //   3 more, 4 count } }
        0x1a, 2, 0x12, 0,          // 3 responses { 2 response_put {} }
        0x1a, 4, 0x1a, 2, 0x10, 1, // 3 responses { 3 response_delete_range { 2 deleted } }
        0x1a, 2, 0x22, 0,          // 3 responses { 4 response_txn {} }
    ];
    assert_wire(&txn, &expected);
}

#[test]
fn watch_request_each_oneof_member() {
    use pb::watch_create_request::FilterType;
    use pb::watch_request::RequestUnion;

    let create = pb::WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(pb::WatchCreateRequest {
            key: b("a"),
            range_end: b("b"),
            start_revision: 7,
            progress_notify: true,
            filters: vec![FilterType::Noput as i32, FilterType::Nodelete as i32],
            prev_kv: true,
            watch_id: 9,
            fragment: true,
        })),
    };
    #[rustfmt::skip]
    let expected = [
        0x0a, 20,              // 1 create_request
            0x0a, 1, b'a',     // 1 key
            0x12, 1, b'b',     // 2 range_end
            0x18, 7,           // 3 start_revision
            0x20, 1,           // 4 progress_notify
            0x2a, 2, 0, 1,     // 5 filters, packed: NOPUT, NODELETE
            0x30, 1,           // 6 prev_kv
            0x38, 9,           // 7 watch_id
            0x40, 1,           // 8 fragment
    ];
    assert_wire(&create, &expected);

    let cancel = pb::WatchRequest {
        request_union: Some(RequestUnion::CancelRequest(pb::WatchCancelRequest {
            watch_id: 9,
        })),
    };
    assert_wire(&cancel, &[0x12, 2, 0x08, 9]);

    let progress = pb::WatchRequest {
        request_union: Some(RequestUnion::ProgressRequest(pb::WatchProgressRequest {})),
    };
    assert_wire(&progress, &[0x1a, 0]);
}

#[test]
fn watch_response_with_an_event() {
    let response = pb::WatchResponse {
        header: None,
        watch_id: 1,
        created: false,
        canceled: true,
        compact_revision: 3,
        cancel_reason: "x".into(),
        fragment: true,
        events: vec![mvccpb::Event {
            r#type: mvccpb::event::EventType::Delete as i32,
            kv: Some(mvccpb::KeyValue {
                key: b("k"),
                create_revision: 1,
                mod_revision: 2,
                version: 3,
                value: b("v"),
                lease: 4,
            }),
            prev_kv: Some(mvccpb::KeyValue::default()),
        }],
    };
    #[rustfmt::skip]
    let expected = [
        0x10, 1,                   // 2 watch_id
        0x20, 1,                   // 4 canceled
        0x28, 3,                   // 5 compact_revision
        0x32, 1, b'x',             // 6 cancel_reason
        0x38, 1,                   // 7 fragment
        0x5a, 20,                  // 11 events (tag 88 | 2 = 0x5a)
            0x08, 1,               // 1 type = DELETE
            0x12, 14,              // 2 kv
                0x0a, 1, b'k',     // 1 key
                0x10, 1,           // 2 create_revision
                0x18, 2,           // 3 mod_revision
                0x20, 3,           // 4 version
                0x2a, 1, b'v',     // 5 value
                0x30, 4,           // 6 lease
            0x1a, 0,               // 3 prev_kv (present, empty)
    ];
    assert_wire(&response, &expected);
}

#[test]
fn lease_grant_ttl_and_id() {
    let request = pb::LeaseGrantRequest {
        ttl: 60,
        id: 0x1234,
    };
    // 1 TTL = 60; 2 ID = 0x1234 = 4660 = varint b4 24
    assert_wire(&request, &[0x08, 60, 0x10, 0xb4, 0x24]);

    let response = pb::LeaseGrantResponse {
        header: Some(pb::ResponseHeader {
            cluster_id: 1,
            member_id: 2,
            revision: 3,
            raft_term: 4,
        }),
        id: 0x1234,
        ttl: 60,
        error: "no".into(),
    };
    #[rustfmt::skip]
    let expected = [
        0x0a, 8, 0x08, 1, 0x10, 2, 0x18, 3, 0x20, 4, // 1 header {cluster, member, revision, raft_term}
        0x10, 0xb4, 0x24,                            // 2 ID
        0x18, 60,                                    // 3 TTL
        0x22, 2, b'n', b'o',                         // 4 error
    ];
    assert_wire(&response, &expected);
}

#[test]
fn lease_ttl_is_int64_not_sint64() {
    // A missing lease reports TTL = -1: ten bytes of two's complement varint.
    let response = pb::LeaseTimeToLiveResponse {
        header: None,
        id: 5,
        ttl: -1,
        granted_ttl: 30,
        keys: vec![b("k")],
    };
    #[rustfmt::skip]
    let expected = [
        0x10, 5,                                                      // 2 ID
        0x18, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, // 3 TTL = -1
        0x20, 30,                                                     // 4 grantedTTL
        0x2a, 1, b'k',                                                // 5 keys
    ];
    assert_wire(&response, &expected);
}

#[test]
fn member_and_status() {
    let member = pb::Member {
        id: 1,
        name: "n".into(),
        peer_ur_ls: vec!["p".into()],
        client_ur_ls: vec!["c".into()],
        is_learner: true,
    };
    assert_wire(
        &member,
        &[
            0x08, 1, 0x12, 1, b'n', 0x1a, 1, b'p', 0x22, 1, b'c', 0x28, 1,
        ],
    );

    let status = pb::StatusResponse {
        header: None,
        version: "3".into(),
        db_size: 1,
        leader: 2,
        raft_index: 3,
        raft_term: 4,
        raft_applied_index: 5,
        errors: vec!["e".into()],
        db_size_in_use: 6,
        is_learner: true,
    };
    #[rustfmt::skip]
    let expected = [
        0x12, 1, b'3', // 2 version
        0x18, 1,       // 3 dbSize
        0x20, 2,       // 4 leader
        0x28, 3,       // 5 raftIndex
        0x30, 4,       // 6 raftTerm
        0x38, 5,       // 7 raftAppliedIndex
        0x42, 1, b'e', // 8 errors
        0x48, 6,       // 9 dbSizeInUse
        0x50, 1,       // 10 isLearner
    ];
    assert_wire(&status, &expected);
}
