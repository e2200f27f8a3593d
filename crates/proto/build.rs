//! Compiles the `.proto` files under `proto/` into Rust.
//!
//! `protox` (a protobuf compiler written in Rust) parses and checks the files
//! into a `FileDescriptorSet`, so no `protoc` is needed on the machine;
//! `tonic-prost-build` turns that set into prost messages and tonic client
//! and server stubs in `OUT_DIR`. The set itself is also written to
//! `OUT_DIR` (without source comments) for `FILE_DESCRIPTOR_SET`.

use std::path::PathBuf;

use prost::Message as _;

/// Every file to compile, relative to the include root `proto/`.
const PROTO_FILES: &[&str] = &[
    "mvccpb/kv.proto",
    "authpb/auth.proto",
    "etcdserverpb/rpc.proto",
    "raftkvpb/peer.proto",
    "raftkvpb/internal.proto",
];

const INCLUDE_ROOT: &str = "proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={INCLUDE_ROOT}");
    for file in PROTO_FILES {
        println!("cargo:rerun-if-changed={INCLUDE_ROOT}/{file}");
    }

    let descriptors = protox::compile(PROTO_FILES, [INCLUDE_ROOT])?;

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut stripped = descriptors.clone();
    for file in &mut stripped.file {
        file.source_code_info = None;
    }
    std::fs::write(
        out_dir.join("file_descriptor_set.bin"),
        stripped.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Keys, values and entry payloads as `bytes::Bytes`: cloning one (into
        // a Raft entry, a watch event, a response) is a reference-count bump,
        // not a copy.
        .bytes(".")
        .compile_fds(descriptors)?;
    Ok(())
}
