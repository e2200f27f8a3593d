//! The .proto files, compiled here with protox and read back as descriptors,
//! compared with etcd 3.4's API as a table: every service and method with its
//! streaming shape, and the fields (name, number, type, label, oneof) of the
//! messages etcd clients use. This is an independent restatement of the
//! contract: a typo in a .proto file has to be repeated here to pass.

use std::collections::BTreeMap;

use prost::Message as _;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};

const FILES: &[&str] = &[
    "mvccpb/kv.proto",
    "authpb/auth.proto",
    "etcdserverpb/rpc.proto",
    "raftkvpb/peer.proto",
    "raftkvpb/internal.proto",
];

fn compile() -> FileDescriptorSet {
    protox::compile(FILES, [concat!(env!("CARGO_MANIFEST_DIR"), "/proto")])
        .expect("the .proto files compile")
}

/// Every message (nested ones too) by full name, without the leading dot.
fn messages(set: &FileDescriptorSet) -> BTreeMap<String, DescriptorProto> {
    fn walk(prefix: &str, message: &DescriptorProto, out: &mut BTreeMap<String, DescriptorProto>) {
        let name = format!("{prefix}.{}", message.name());
        for nested in &message.nested_type {
            walk(&name, nested, out);
        }
        out.insert(name, message.clone());
    }
    let mut out = BTreeMap::new();
    for file in &set.file {
        for message in &file.message_type {
            walk(file.package(), message, &mut out);
        }
    }
    out
}

/// `name=number:type` per field, in declaration order; `repeated ` before
/// repeated types, `@oneof` after oneof members.
fn render_fields(message: &DescriptorProto) -> String {
    message
        .field
        .iter()
        .map(|field| {
            let type_name = match field.r#type() {
                Type::Message | Type::Enum => field.type_name().trim_start_matches('.').to_string(),
                scalar => scalar
                    .as_str_name()
                    .trim_start_matches("TYPE_")
                    .to_lowercase(),
            };
            let repeated = if field.label() == Label::Repeated {
                "repeated "
            } else {
                ""
            };
            let oneof = field
                .oneof_index
                .map(|index| format!("@{}", message.oneof_decl[index as usize].name()))
                .unwrap_or_default();
            format!(
                "{}={}:{repeated}{type_name}{oneof}",
                field.name(),
                field.number()
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `Method(Input)->Output` per method, `stream ` marking streamed sides.
fn render_service(set: &FileDescriptorSet, full_name: &str) -> String {
    let (package, name) = full_name.rsplit_once('.').unwrap();
    let service = set
        .file
        .iter()
        .filter(|file| file.package() == package)
        .flat_map(|file| &file.service)
        .find(|service| service.name() == name)
        .unwrap_or_else(|| panic!("no service {full_name}"));
    service
        .method
        .iter()
        .map(|method| {
            let side = |streaming: bool, type_name: &str| {
                let type_name = type_name.trim_start_matches('.');
                let type_name = type_name
                    .strip_prefix(&format!("{package}."))
                    .unwrap_or(type_name);
                if streaming {
                    format!("stream {type_name}")
                } else {
                    type_name.to_string()
                }
            };
            format!(
                "{}({})->{}",
                method.name(),
                side(method.client_streaming(), method.input_type()),
                side(method.server_streaming(), method.output_type())
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn services_match_etcd() {
    let set = compile();
    let expected = [
        (
            "etcdserverpb.KV",
            "Range(RangeRequest)->RangeResponse Put(PutRequest)->PutResponse \
             DeleteRange(DeleteRangeRequest)->DeleteRangeResponse Txn(TxnRequest)->TxnResponse \
             Compact(CompactionRequest)->CompactionResponse",
        ),
        (
            "etcdserverpb.Watch",
            "Watch(stream WatchRequest)->stream WatchResponse",
        ),
        (
            "etcdserverpb.Lease",
            "LeaseGrant(LeaseGrantRequest)->LeaseGrantResponse \
             LeaseRevoke(LeaseRevokeRequest)->LeaseRevokeResponse \
             LeaseKeepAlive(stream LeaseKeepAliveRequest)->stream LeaseKeepAliveResponse \
             LeaseTimeToLive(LeaseTimeToLiveRequest)->LeaseTimeToLiveResponse \
             LeaseLeases(LeaseLeasesRequest)->LeaseLeasesResponse",
        ),
        (
            "etcdserverpb.Cluster",
            "MemberAdd(MemberAddRequest)->MemberAddResponse \
             MemberRemove(MemberRemoveRequest)->MemberRemoveResponse \
             MemberUpdate(MemberUpdateRequest)->MemberUpdateResponse \
             MemberList(MemberListRequest)->MemberListResponse \
             MemberPromote(MemberPromoteRequest)->MemberPromoteResponse",
        ),
        (
            "etcdserverpb.Maintenance",
            "Alarm(AlarmRequest)->AlarmResponse Status(StatusRequest)->StatusResponse \
             Defragment(DefragmentRequest)->DefragmentResponse Hash(HashRequest)->HashResponse \
             HashKV(HashKVRequest)->HashKVResponse \
             Snapshot(SnapshotRequest)->stream SnapshotResponse \
             MoveLeader(MoveLeaderRequest)->MoveLeaderResponse",
        ),
        (
            "etcdserverpb.Auth",
            "AuthEnable(AuthEnableRequest)->AuthEnableResponse \
             AuthDisable(AuthDisableRequest)->AuthDisableResponse \
             Authenticate(AuthenticateRequest)->AuthenticateResponse \
             UserAdd(AuthUserAddRequest)->AuthUserAddResponse \
             UserGet(AuthUserGetRequest)->AuthUserGetResponse \
             UserList(AuthUserListRequest)->AuthUserListResponse \
             UserDelete(AuthUserDeleteRequest)->AuthUserDeleteResponse \
             UserChangePassword(AuthUserChangePasswordRequest)->AuthUserChangePasswordResponse \
             UserGrantRole(AuthUserGrantRoleRequest)->AuthUserGrantRoleResponse \
             UserRevokeRole(AuthUserRevokeRoleRequest)->AuthUserRevokeRoleResponse \
             RoleAdd(AuthRoleAddRequest)->AuthRoleAddResponse \
             RoleGet(AuthRoleGetRequest)->AuthRoleGetResponse \
             RoleList(AuthRoleListRequest)->AuthRoleListResponse \
             RoleDelete(AuthRoleDeleteRequest)->AuthRoleDeleteResponse \
             RoleGrantPermission(AuthRoleGrantPermissionRequest)->AuthRoleGrantPermissionResponse \
             RoleRevokePermission(AuthRoleRevokePermissionRequest)->AuthRoleRevokePermissionResponse",
        ),
        (
            "raftkvpb.peer.Peer",
            "Raft(stream RaftFrame)->stream RaftStreamAccepted \
             InstallSnapshot(stream SnapshotChunk)->SnapshotAck",
        ),
    ];
    for (service, methods) in expected {
        let methods = methods.split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(render_service(&set, service), methods, "service {service}");
    }
}

#[test]
fn etcd_message_fields_match_etcd() {
    let messages = messages(&compile());
    // Full name -> fields. Written from etcd 3.4's API, not from our files.
    let expected: &[(&str, &str)] = &[
        ("mvccpb.KeyValue", "key=1:bytes create_revision=2:int64 mod_revision=3:int64 version=4:int64 value=5:bytes lease=6:int64"),
        ("mvccpb.Event", "type=1:mvccpb.Event.EventType kv=2:mvccpb.KeyValue prev_kv=3:mvccpb.KeyValue"),
        ("authpb.UserAddOptions", "no_password=1:bool"),
        ("authpb.User", "name=1:bytes password=2:bytes roles=3:repeated string options=4:authpb.UserAddOptions"),
        ("authpb.Permission", "permType=1:authpb.Permission.Type key=2:bytes range_end=3:bytes"),
        ("authpb.Role", "name=1:bytes keyPermission=2:repeated authpb.Permission"),
        ("etcdserverpb.ResponseHeader", "cluster_id=1:uint64 member_id=2:uint64 revision=3:int64 raft_term=4:uint64"),
        ("etcdserverpb.RangeRequest", "key=1:bytes range_end=2:bytes limit=3:int64 revision=4:int64 \
            sort_order=5:etcdserverpb.RangeRequest.SortOrder sort_target=6:etcdserverpb.RangeRequest.SortTarget \
            serializable=7:bool keys_only=8:bool count_only=9:bool min_mod_revision=10:int64 \
            max_mod_revision=11:int64 min_create_revision=12:int64 max_create_revision=13:int64"),
        ("etcdserverpb.RangeResponse", "header=1:etcdserverpb.ResponseHeader kvs=2:repeated mvccpb.KeyValue more=3:bool count=4:int64"),
        ("etcdserverpb.PutRequest", "key=1:bytes value=2:bytes lease=3:int64 prev_kv=4:bool ignore_value=5:bool ignore_lease=6:bool"),
        ("etcdserverpb.PutResponse", "header=1:etcdserverpb.ResponseHeader prev_kv=2:mvccpb.KeyValue"),
        ("etcdserverpb.DeleteRangeRequest", "key=1:bytes range_end=2:bytes prev_kv=3:bool"),
        ("etcdserverpb.DeleteRangeResponse", "header=1:etcdserverpb.ResponseHeader deleted=2:int64 prev_kvs=3:repeated mvccpb.KeyValue"),
        ("etcdserverpb.RequestOp", "request_range=1:etcdserverpb.RangeRequest@request request_put=2:etcdserverpb.PutRequest@request \
            request_delete_range=3:etcdserverpb.DeleteRangeRequest@request request_txn=4:etcdserverpb.TxnRequest@request"),
        ("etcdserverpb.ResponseOp", "response_range=1:etcdserverpb.RangeResponse@response response_put=2:etcdserverpb.PutResponse@response \
            response_delete_range=3:etcdserverpb.DeleteRangeResponse@response response_txn=4:etcdserverpb.TxnResponse@response"),
        ("etcdserverpb.Compare", "result=1:etcdserverpb.Compare.CompareResult target=2:etcdserverpb.Compare.CompareTarget key=3:bytes \
            version=4:int64@target_union create_revision=5:int64@target_union mod_revision=6:int64@target_union \
            value=7:bytes@target_union lease=8:int64@target_union range_end=64:bytes"),
        ("etcdserverpb.TxnRequest", "compare=1:repeated etcdserverpb.Compare success=2:repeated etcdserverpb.RequestOp failure=3:repeated etcdserverpb.RequestOp"),
        ("etcdserverpb.TxnResponse", "header=1:etcdserverpb.ResponseHeader succeeded=2:bool responses=3:repeated etcdserverpb.ResponseOp"),
        ("etcdserverpb.CompactionRequest", "revision=1:int64 physical=2:bool"),
        ("etcdserverpb.CompactionResponse", "header=1:etcdserverpb.ResponseHeader"),
        ("etcdserverpb.WatchRequest", "create_request=1:etcdserverpb.WatchCreateRequest@request_union \
            cancel_request=2:etcdserverpb.WatchCancelRequest@request_union progress_request=3:etcdserverpb.WatchProgressRequest@request_union"),
        ("etcdserverpb.WatchCreateRequest", "key=1:bytes range_end=2:bytes start_revision=3:int64 progress_notify=4:bool \
            filters=5:repeated etcdserverpb.WatchCreateRequest.FilterType prev_kv=6:bool watch_id=7:int64 fragment=8:bool"),
        ("etcdserverpb.WatchCancelRequest", "watch_id=1:int64"),
        ("etcdserverpb.WatchProgressRequest", ""),
        ("etcdserverpb.WatchResponse", "header=1:etcdserverpb.ResponseHeader watch_id=2:int64 created=3:bool canceled=4:bool \
            compact_revision=5:int64 cancel_reason=6:string fragment=7:bool events=11:repeated mvccpb.Event"),
        ("etcdserverpb.LeaseGrantRequest", "TTL=1:int64 ID=2:int64"),
        ("etcdserverpb.LeaseGrantResponse", "header=1:etcdserverpb.ResponseHeader ID=2:int64 TTL=3:int64 error=4:string"),
        ("etcdserverpb.LeaseRevokeRequest", "ID=1:int64"),
        ("etcdserverpb.LeaseRevokeResponse", "header=1:etcdserverpb.ResponseHeader"),
        ("etcdserverpb.LeaseKeepAliveRequest", "ID=1:int64"),
        ("etcdserverpb.LeaseKeepAliveResponse", "header=1:etcdserverpb.ResponseHeader ID=2:int64 TTL=3:int64"),
        ("etcdserverpb.LeaseTimeToLiveRequest", "ID=1:int64 keys=2:bool"),
        ("etcdserverpb.LeaseTimeToLiveResponse", "header=1:etcdserverpb.ResponseHeader ID=2:int64 TTL=3:int64 grantedTTL=4:int64 keys=5:repeated bytes"),
        ("etcdserverpb.LeaseLeasesRequest", ""),
        ("etcdserverpb.LeaseStatus", "ID=1:int64"),
        ("etcdserverpb.LeaseLeasesResponse", "header=1:etcdserverpb.ResponseHeader leases=2:repeated etcdserverpb.LeaseStatus"),
        ("etcdserverpb.Member", "ID=1:uint64 name=2:string peerURLs=3:repeated string clientURLs=4:repeated string isLearner=5:bool"),
        ("etcdserverpb.MemberAddRequest", "peerURLs=1:repeated string isLearner=2:bool"),
        ("etcdserverpb.MemberAddResponse", "header=1:etcdserverpb.ResponseHeader member=2:etcdserverpb.Member members=3:repeated etcdserverpb.Member"),
        ("etcdserverpb.MemberRemoveRequest", "ID=1:uint64"),
        ("etcdserverpb.MemberRemoveResponse", "header=1:etcdserverpb.ResponseHeader members=2:repeated etcdserverpb.Member"),
        ("etcdserverpb.MemberUpdateRequest", "ID=1:uint64 peerURLs=2:repeated string"),
        ("etcdserverpb.MemberUpdateResponse", "header=1:etcdserverpb.ResponseHeader members=2:repeated etcdserverpb.Member"),
        ("etcdserverpb.MemberListRequest", "linearizable=1:bool"),
        ("etcdserverpb.MemberListResponse", "header=1:etcdserverpb.ResponseHeader members=2:repeated etcdserverpb.Member"),
        ("etcdserverpb.MemberPromoteRequest", "ID=1:uint64"),
        ("etcdserverpb.MemberPromoteResponse", "header=1:etcdserverpb.ResponseHeader members=2:repeated etcdserverpb.Member"),
        ("etcdserverpb.AlarmRequest", "action=1:etcdserverpb.AlarmRequest.AlarmAction memberID=2:uint64 alarm=3:etcdserverpb.AlarmType"),
        ("etcdserverpb.AlarmMember", "memberID=1:uint64 alarm=2:etcdserverpb.AlarmType"),
        ("etcdserverpb.AlarmResponse", "header=1:etcdserverpb.ResponseHeader alarms=2:repeated etcdserverpb.AlarmMember"),
        ("etcdserverpb.StatusRequest", ""),
        ("etcdserverpb.StatusResponse", "header=1:etcdserverpb.ResponseHeader version=2:string dbSize=3:int64 leader=4:uint64 \
            raftIndex=5:uint64 raftTerm=6:uint64 raftAppliedIndex=7:uint64 errors=8:repeated string dbSizeInUse=9:int64 isLearner=10:bool"),
        ("etcdserverpb.DefragmentRequest", ""),
        ("etcdserverpb.DefragmentResponse", "header=1:etcdserverpb.ResponseHeader"),
        ("etcdserverpb.HashRequest", ""),
        ("etcdserverpb.HashResponse", "header=1:etcdserverpb.ResponseHeader hash=2:uint32"),
        ("etcdserverpb.HashKVRequest", "revision=1:int64"),
        ("etcdserverpb.HashKVResponse", "header=1:etcdserverpb.ResponseHeader hash=2:uint32 compact_revision=3:int64"),
        ("etcdserverpb.SnapshotRequest", ""),
        ("etcdserverpb.SnapshotResponse", "header=1:etcdserverpb.ResponseHeader remaining_bytes=2:uint64 blob=3:bytes"),
        ("etcdserverpb.MoveLeaderRequest", "targetID=1:uint64"),
        ("etcdserverpb.MoveLeaderResponse", "header=1:etcdserverpb.ResponseHeader"),
        ("etcdserverpb.AuthEnableRequest", ""),
        ("etcdserverpb.AuthDisableRequest", ""),
        ("etcdserverpb.AuthenticateRequest", "name=1:string password=2:string"),
        ("etcdserverpb.AuthenticateResponse", "header=1:etcdserverpb.ResponseHeader token=2:string"),
        ("etcdserverpb.AuthUserAddRequest", "name=1:string password=2:string options=3:authpb.UserAddOptions"),
        ("etcdserverpb.AuthUserGetRequest", "name=1:string"),
        ("etcdserverpb.AuthUserGetResponse", "header=1:etcdserverpb.ResponseHeader roles=2:repeated string"),
        ("etcdserverpb.AuthUserListResponse", "header=1:etcdserverpb.ResponseHeader users=2:repeated string"),
        ("etcdserverpb.AuthUserDeleteRequest", "name=1:string"),
        ("etcdserverpb.AuthUserChangePasswordRequest", "name=1:string password=2:string"),
        ("etcdserverpb.AuthUserGrantRoleRequest", "user=1:string role=2:string"),
        ("etcdserverpb.AuthUserRevokeRoleRequest", "name=1:string role=2:string"),
        ("etcdserverpb.AuthRoleAddRequest", "name=1:string"),
        ("etcdserverpb.AuthRoleGetRequest", "role=1:string"),
        ("etcdserverpb.AuthRoleGetResponse", "header=1:etcdserverpb.ResponseHeader perm=2:repeated authpb.Permission"),
        ("etcdserverpb.AuthRoleListResponse", "header=1:etcdserverpb.ResponseHeader roles=2:repeated string"),
        ("etcdserverpb.AuthRoleDeleteRequest", "role=1:string"),
        ("etcdserverpb.AuthRoleGrantPermissionRequest", "name=1:string perm=2:authpb.Permission"),
        ("etcdserverpb.AuthRoleRevokePermissionRequest", "role=1:string key=2:bytes range_end=3:bytes"),
    ];
    for (name, fields) in expected {
        let message = messages
            .get(*name)
            .unwrap_or_else(|| panic!("no message {name}"));
        let fields = fields.split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(render_fields(message), fields, "message {name}");
    }

    // Every Auth*Response not listed above is just a header.
    for (name, message) in &messages {
        if name.starts_with("etcdserverpb.Auth")
            && name.ends_with("Response")
            && !expected.iter().any(|(listed, _)| listed == name)
        {
            assert_eq!(
                render_fields(message),
                "header=1:etcdserverpb.ResponseHeader",
                "message {name}"
            );
        }
    }
}

#[test]
fn etcd_enum_values_match_etcd() {
    let set = compile();
    let mut enums = BTreeMap::new();
    fn walk(
        prefix: &str,
        message: &DescriptorProto,
        out: &mut BTreeMap<String, prost_types::EnumDescriptorProto>,
    ) {
        let name = format!("{prefix}.{}", message.name());
        for nested in &message.enum_type {
            out.insert(format!("{name}.{}", nested.name()), nested.clone());
        }
        for nested in &message.nested_type {
            walk(&name, nested, out);
        }
    }
    for file in &set.file {
        for top in &file.enum_type {
            enums.insert(format!("{}.{}", file.package(), top.name()), top.clone());
        }
        for message in &file.message_type {
            walk(file.package(), message, &mut enums);
        }
    }
    let expected = [
        ("mvccpb.Event.EventType", "PUT=0 DELETE=1"),
        ("authpb.Permission.Type", "READ=0 WRITE=1 READWRITE=2"),
        (
            "etcdserverpb.RangeRequest.SortOrder",
            "NONE=0 ASCEND=1 DESCEND=2",
        ),
        (
            "etcdserverpb.RangeRequest.SortTarget",
            "KEY=0 VERSION=1 CREATE=2 MOD=3 VALUE=4",
        ),
        (
            "etcdserverpb.Compare.CompareResult",
            "EQUAL=0 GREATER=1 LESS=2 NOT_EQUAL=3",
        ),
        (
            "etcdserverpb.Compare.CompareTarget",
            "VERSION=0 CREATE=1 MOD=2 VALUE=3 LEASE=4",
        ),
        (
            "etcdserverpb.WatchCreateRequest.FilterType",
            "NOPUT=0 NODELETE=1",
        ),
        ("etcdserverpb.AlarmType", "NONE=0 NOSPACE=1 CORRUPT=2"),
        (
            "etcdserverpb.AlarmRequest.AlarmAction",
            "GET=0 ACTIVATE=1 DEACTIVATE=2",
        ),
    ];
    for (name, values) in expected {
        let found = enums.get(name).unwrap_or_else(|| panic!("no enum {name}"));
        let rendered = found
            .value
            .iter()
            .map(|value| format!("{}={}", value.name(), value.number()))
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(rendered, values, "enum {name}");
    }
}

#[test]
fn packages_and_syntax() {
    let set = compile();
    let packages: Vec<(&str, &str)> = set
        .file
        .iter()
        .map(|file| (file.name(), file.package()))
        .collect();
    assert_eq!(
        packages,
        [
            ("mvccpb/kv.proto", "mvccpb"),
            ("authpb/auth.proto", "authpb"),
            ("etcdserverpb/rpc.proto", "etcdserverpb"),
            ("raftkvpb/peer.proto", "raftkvpb.peer"),
            ("raftkvpb/internal.proto", "raftkvpb.internal"),
        ]
    );
    for file in &set.file {
        assert_eq!(file.syntax(), "proto3", "{}", file.name());
    }
}

#[test]
fn embedded_descriptor_set_is_the_compiled_one() {
    let embedded = FileDescriptorSet::decode(proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut compiled = compile();
    for file in &mut compiled.file {
        file.source_code_info = None;
    }
    assert_eq!(embedded, compiled);
}

#[test]
fn peer_message_fields() {
    // Our own protocol: pinned so a renumbering (which would break mixed
    // versions during a rolling upgrade) fails here first.
    let messages = messages(&compile());
    let expected: &[(&str, &str)] = &[
        ("raftkvpb.peer.Handshake", "cluster_id=1:uint64 from=2:uint64 to=3:uint64 protocol_version=4:raftkvpb.peer.ProtocolVersion"),
        ("raftkvpb.peer.RaftFrame", "handshake=1:raftkvpb.peer.Handshake messages=2:repeated raftkvpb.peer.RaftMessage forwarded_proposals=3:repeated bytes refused_proposals=4:repeated uint64"),
        ("raftkvpb.peer.RaftStreamAccepted", "member_id=1:uint64"),
        ("raftkvpb.peer.RaftMessage", "from=1:uint64 to=2:uint64 term=3:uint64 \
            append_entries=4:raftkvpb.peer.AppendEntries@body append_response=5:raftkvpb.peer.AppendResponse@body \
            request_vote=6:raftkvpb.peer.RequestVote@body vote_response=7:raftkvpb.peer.VoteResponse@body \
            heartbeat=8:raftkvpb.peer.Heartbeat@body heartbeat_response=9:raftkvpb.peer.HeartbeatResponse@body \
            timeout_now=10:raftkvpb.peer.TimeoutNow@body read_index=11:raftkvpb.peer.ReadIndex@body \
            read_index_response=12:raftkvpb.peer.ReadIndexResponse@body install_snapshot=13:raftkvpb.peer.InstallSnapshot@body"),
        ("raftkvpb.peer.AppendEntries", "prev_log_index=1:uint64 prev_log_term=2:uint64 entries=3:repeated raftkvpb.peer.Entry commit=4:uint64"),
        ("raftkvpb.peer.AppendResponse", "index=1:uint64 reject=2:raftkvpb.peer.RejectHint"),
        ("raftkvpb.peer.RejectHint", "index=1:uint64 term=2:uint64"),
        ("raftkvpb.peer.RequestVote", "pre_vote=1:bool last_log_index=2:uint64 last_log_term=3:uint64 leadership_transfer=4:bool"),
        ("raftkvpb.peer.VoteResponse", "pre_vote=1:bool granted=2:bool"),
        ("raftkvpb.peer.Heartbeat", "commit=1:uint64 read_round=2:uint64"),
        ("raftkvpb.peer.HeartbeatResponse", "read_round=1:uint64"),
        ("raftkvpb.peer.TimeoutNow", ""),
        ("raftkvpb.peer.ReadIndex", "request_id=1:uint64"),
        ("raftkvpb.peer.ReadIndexResponse", "request_id=1:uint64 index=2:uint64"),
        ("raftkvpb.peer.InstallSnapshot", "metadata=1:raftkvpb.peer.SnapshotMetadata"),
        ("raftkvpb.peer.Entry", "term=1:uint64 index=2:uint64 kind=3:raftkvpb.peer.EntryKind data=4:bytes"),
        ("raftkvpb.peer.ConfState", "voters=1:repeated uint64 learners=2:repeated uint64"),
        ("raftkvpb.peer.SnapshotMetadata", "index=1:uint64 term=2:uint64 conf_state=3:raftkvpb.peer.ConfState"),
        ("raftkvpb.peer.SnapshotChunk", "header=1:raftkvpb.peer.SnapshotHeader@part data=2:bytes@part trailer=3:raftkvpb.peer.SnapshotTrailer@part"),
        ("raftkvpb.peer.SnapshotHeader", "handshake=1:raftkvpb.peer.Handshake message=2:raftkvpb.peer.RaftMessage"),
        ("raftkvpb.peer.SnapshotTrailer", "size_bytes=1:uint64 crc32c=2:fixed32"),
        ("raftkvpb.peer.SnapshotAck", "size_bytes=1:uint64"),
    ];
    for (name, fields) in expected {
        let message = messages
            .get(*name)
            .unwrap_or_else(|| panic!("no message {name}"));
        let fields = fields.split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(render_fields(message), fields, "message {name}");
    }
    let peer_messages = messages
        .keys()
        .filter(|name| name.starts_with("raftkvpb.peer."))
        .count();
    assert_eq!(
        peer_messages,
        expected.len(),
        "every peer message is pinned"
    );
}
