//! etcdctl-style client commands of the `raftkv` binary: put, get, del,
//! txn, compaction, member list, endpoint status / health. They speak the
//! etcd v3 API through the `client` crate, print what etcdctl prints in
//! `-w simple`, and offer `-w json` and `-w table`. Errors go to stderr as
//! `Error: <etcd's text>` and the exit code is non-zero.
//!
//! This module formats and parses; it never decides anything about the
//! data (that is the server's).

use std::io::Read as _;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use clap::{Args, Subcommand, ValueEnum};
use client::{Client, ClientConfig};
use proto::etcdserverpb as pb;
use proto::mvccpb::KeyValue;
use serde_json::{json, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Simple,
    Json,
    Table,
}

#[derive(Args, Clone, Debug)]
pub struct ClientFlags {
    /// Client endpoints, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "127.0.0.1:2379",
        global = true
    )]
    endpoints: Vec<String>,
    /// Output format.
    #[arg(
        short = 'w',
        long = "write-out",
        value_enum,
        default_value = "simple",
        global = true
    )]
    write_out: Output,
    /// Seconds one command may take, failovers included.
    #[arg(long, default_value_t = 5.0, global = true)]
    command_timeout: f64,
}

impl ClientFlags {
    fn client(&self) -> anyhow::Result<Client> {
        let mut config = ClientConfig::new(self.endpoints.iter().cloned());
        config.request_timeout = Duration::from_secs_f64(self.command_timeout);
        Ok(Client::new(config)?)
    }
}

#[derive(Args, Debug)]
pub struct PutFlags {
    key: String,
    value: String,
    /// Return the previous key-value pair.
    #[arg(long)]
    prev_kv: bool,
}

#[derive(Args, Debug)]
pub struct GetFlags {
    key: String,
    /// End of the range [key, range_end).
    range_end: Option<String>,
    /// Every key with `key` as prefix.
    #[arg(long)]
    prefix: bool,
    /// Every key from `key` on.
    #[arg(long)]
    from_key: bool,
    #[arg(long, default_value_t = 0)]
    limit: i64,
    /// Read at this revision (0: current).
    #[arg(long, default_value_t = 0)]
    rev: i64,
    #[arg(long)]
    keys_only: bool,
    #[arg(long)]
    count_only: bool,
    /// l (linearizable) or s (serializable).
    #[arg(long, default_value = "l")]
    consistency: String,
    /// Print only values.
    #[arg(long)]
    print_value_only: bool,
}

#[derive(Args, Debug)]
pub struct DelFlags {
    key: String,
    range_end: Option<String>,
    #[arg(long)]
    prefix: bool,
    #[arg(long)]
    from_key: bool,
    #[arg(long)]
    prev_kv: bool,
}

#[derive(Args, Debug)]
pub struct CompactionFlags {
    revision: i64,
}

#[derive(Subcommand, Debug)]
pub enum MemberCommand {
    /// List the members.
    List,
}

#[derive(Subcommand, Debug)]
pub enum EndpointCommand {
    /// Status of every endpoint.
    Status,
    /// Whether every endpoint serves a linearizable read.
    Health,
}

/// The range `[key, end)` a command's flags describe, etcd's way.
fn range_end(key: &str, end: Option<&str>, prefix: bool, from_key: bool) -> Bytes {
    if prefix {
        return prefix_end(key.as_bytes());
    }
    if from_key {
        return Bytes::from_static(b"\0");
    }
    end.map(|end| Bytes::copy_from_slice(end.as_bytes()))
        .unwrap_or_default()
}

/// The first key after every key starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Bytes {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Bytes::from(end);
        }
    }
    // All 0xff (or empty): every key from the prefix on.
    Bytes::from_static(b"\0")
}

fn header_json(header: Option<&pb::ResponseHeader>) -> Value {
    let header = header.cloned().unwrap_or_default();
    json!({
        "cluster_id": header.cluster_id,
        "member_id": header.member_id,
        "revision": header.revision,
        "raft_term": header.raft_term,
    })
}

/// etcdctl's JSON: keys and values in base64, zero and empty fields left
/// out (Go's `omitempty`).
fn kv_json(kv: &KeyValue) -> Value {
    let mut object = serde_json::Map::new();
    if !kv.key.is_empty() {
        object.insert("key".into(), base64(&kv.key).into());
    }
    for (name, number) in [
        ("create_revision", kv.create_revision),
        ("mod_revision", kv.mod_revision),
        ("version", kv.version),
    ] {
        if number != 0 {
            object.insert(name.into(), number.into());
        }
    }
    if !kv.value.is_empty() {
        object.insert("value".into(), base64(&kv.value).into());
    }
    if kv.lease != 0 {
        object.insert("lease".into(), kv.lease.into());
    }
    Value::Object(object)
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for position in 0..4 {
            if position <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * position)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A plain table with a header row, etcdctl's `-w table` look.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|header| header.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let rule = format!(
        "+{}+\n",
        widths
            .iter()
            .map(|width| "-".repeat(width + 2))
            .collect::<Vec<_>>()
            .join("+")
    );
    let line = |cells: Vec<String>| {
        let cells: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!(" {cell:^width$} "))
            .collect();
        format!("|{}|\n", cells.join("|"))
    };
    let mut out = rule.clone();
    out.push_str(&line(headers.iter().map(|h| h.to_uppercase()).collect()));
    out.push_str(&rule);
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out.push_str(&rule);
    out
}

pub async fn put(flags: &ClientFlags, put: PutFlags) -> anyhow::Result<()> {
    let response = flags
        .client()?
        .put_request(pb::PutRequest {
            key: Bytes::from(put.key),
            value: Bytes::from(put.value),
            prev_kv: put.prev_kv,
            ..pb::PutRequest::default()
        })
        .await?;
    match flags.write_out {
        Output::Json => println!(
            "{}",
            json!({
                "header": header_json(response.header.as_ref()),
                "prev_kv": response.prev_kv.as_ref().map(kv_json),
            })
        ),
        Output::Simple | Output::Table => {
            println!("OK");
            if let Some(prev) = &response.prev_kv {
                println!("{}\n{}", text(&prev.key), text(&prev.value));
            }
        }
    }
    Ok(())
}

pub async fn get(flags: &ClientFlags, get: GetFlags) -> anyhow::Result<()> {
    let serializable = match get.consistency.as_str() {
        "l" => false,
        "s" => true,
        other => {
            anyhow::bail!("unknown consistency {other:?}: use l (linearizable) or s (serializable)")
        }
    };
    // etcdctl reads `get "" --from-key` as "every key".
    let key = if get.key.is_empty() && get.from_key {
        Bytes::from_static(b"\0")
    } else {
        Bytes::from(get.key.clone())
    };
    let request = pb::RangeRequest {
        key,
        range_end: range_end(&get.key, get.range_end.as_deref(), get.prefix, get.from_key),
        limit: get.limit,
        revision: get.rev,
        serializable,
        keys_only: get.keys_only,
        count_only: get.count_only,
        ..pb::RangeRequest::default()
    };
    let response = flags.client()?.range(request).await?;
    match flags.write_out {
        Output::Json => println!(
            "{}",
            json!({
                "header": header_json(response.header.as_ref()),
                "kvs": response.kvs.iter().map(kv_json).collect::<Vec<_>>(),
                "more": response.more,
                "count": response.count,
            })
        ),
        Output::Simple if get.count_only => println!("{}", response.count),
        Output::Simple => {
            for kv in &response.kvs {
                if !get.print_value_only {
                    println!("{}", text(&kv.key));
                }
                // With --keys-only the value is empty and etcdctl still
                // prints its (empty) line.
                println!("{}", text(&kv.value));
            }
        }
        Output::Table => {
            let rows: Vec<Vec<String>> = response
                .kvs
                .iter()
                .map(|kv| vec![text(&kv.key), text(&kv.value)])
                .collect();
            print!("{}", table(&["key", "value"], &rows));
        }
    }
    Ok(())
}

pub async fn del(flags: &ClientFlags, del: DelFlags) -> anyhow::Result<()> {
    let response = flags
        .client()?
        .delete_range(pb::DeleteRangeRequest {
            key: if del.key.is_empty() && del.from_key {
                Bytes::from_static(b"\0")
            } else {
                Bytes::from(del.key.clone())
            },
            range_end: range_end(&del.key, del.range_end.as_deref(), del.prefix, del.from_key),
            prev_kv: del.prev_kv,
        })
        .await?;
    match flags.write_out {
        Output::Json => println!(
            "{}",
            json!({
                "header": header_json(response.header.as_ref()),
                "deleted": response.deleted,
                "prev_kvs": response.prev_kvs.iter().map(kv_json).collect::<Vec<_>>(),
            })
        ),
        Output::Simple | Output::Table => {
            println!("{}", response.deleted);
            for kv in &response.prev_kvs {
                println!("{}\n{}", text(&kv.key), text(&kv.value));
            }
        }
    }
    Ok(())
}

pub async fn compaction(flags: &ClientFlags, compaction: CompactionFlags) -> anyhow::Result<()> {
    let response = flags.client()?.compact(compaction.revision).await?;
    match flags.write_out {
        Output::Json => println!(
            "{}",
            json!({ "header": header_json(response.header.as_ref()) })
        ),
        Output::Simple | Output::Table => {
            println!("compacted revision {}", compaction.revision)
        }
    }
    Ok(())
}

pub async fn member(flags: &ClientFlags, command: MemberCommand) -> anyhow::Result<()> {
    let MemberCommand::List = command;
    let response = flags.client()?.member_list().await?;
    let rows: Vec<Vec<String>> = response
        .members
        .iter()
        .map(|member| {
            vec![
                format!("{:x}", member.id),
                if member.name.is_empty() {
                    "unstarted"
                } else {
                    "started"
                }
                .to_string(),
                member.name.clone(),
                member.peer_ur_ls.join(","),
                member.client_ur_ls.join(","),
                member.is_learner.to_string(),
            ]
        })
        .collect();
    print_listing(
        flags.write_out,
        json!({
            "header": header_json(response.header.as_ref()),
            "members": response.members.iter().map(|member| json!({
                "ID": member.id,
                "name": member.name,
                "peerURLs": member.peer_ur_ls,
                "clientURLs": member.client_ur_ls,
                "isLearner": member.is_learner,
            })).collect::<Vec<_>>(),
        }),
        &[
            "id",
            "status",
            "name",
            "peer addrs",
            "client addrs",
            "is learner",
        ],
        &rows,
    );
    Ok(())
}

/// Prints a listing (members, endpoints) in the chosen format: one
/// comma-separated line per row, a table, or `json`.
fn print_listing(format: Output, json: Value, headers: &[&str], rows: &[Vec<String>]) {
    match format {
        Output::Json => println!("{json}"),
        Output::Simple => {
            for row in rows {
                println!("{}", row.join(", "));
            }
        }
        Output::Table => print!("{}", table(headers, rows)),
    }
}

fn human_bytes(bytes: i64) -> String {
    let bytes = bytes.max(0) as f64;
    if bytes < 1000.0 {
        format!("{bytes} B")
    } else if bytes < 1e6 {
        format!("{:.0} kB", bytes / 1e3)
    } else if bytes < 1e9 {
        format!("{:.1} MB", bytes / 1e6)
    } else {
        format!("{:.1} GB", bytes / 1e9)
    }
}

pub async fn endpoint(flags: &ClientFlags, command: EndpointCommand) -> anyhow::Result<()> {
    let client = flags.client()?;
    let mut failed = false;
    match command {
        EndpointCommand::Status => {
            let mut rows = Vec::new();
            let mut entries = Vec::new();
            for (position, endpoint) in flags.endpoints.iter().enumerate() {
                match client.status(position).await {
                    Ok(status) => {
                        let member_id = status.header.as_ref().map_or(0, |header| header.member_id);
                        rows.push(vec![
                            endpoint.clone(),
                            format!("{member_id:x}"),
                            status.version.clone(),
                            human_bytes(status.db_size),
                            (status.leader == member_id).to_string(),
                            status.is_learner.to_string(),
                            status.raft_term.to_string(),
                            status.raft_index.to_string(),
                            status.raft_applied_index.to_string(),
                            status.errors.join(","),
                        ]);
                        entries.push(json!({
                            "Endpoint": endpoint,
                            "Status": {
                                "header": header_json(status.header.as_ref()),
                                "version": status.version,
                                "dbSize": status.db_size,
                                "leader": status.leader,
                                "raftIndex": status.raft_index,
                                "raftTerm": status.raft_term,
                                "raftAppliedIndex": status.raft_applied_index,
                                "dbSizeInUse": status.db_size_in_use,
                                "isLearner": status.is_learner,
                            }
                        }));
                    }
                    Err(error) => {
                        failed = true;
                        eprintln!(
                            "Failed to get the status of endpoint {endpoint} (error: {error})"
                        );
                    }
                }
            }
            print_listing(
                flags.write_out,
                Value::Array(entries),
                &[
                    "endpoint",
                    "id",
                    "version",
                    "db size",
                    "is leader",
                    "is learner",
                    "raft term",
                    "raft index",
                    "raft applied index",
                    "errors",
                ],
                &rows,
            );
        }
        EndpointCommand::Health => {
            let mut rows = Vec::new();
            let mut entries = Vec::new();
            for (position, endpoint) in flags.endpoints.iter().enumerate() {
                let (healthy, took, error) = match client.health(position).await {
                    Ok(took) => (true, took, String::new()),
                    Err(error) => {
                        failed = true;
                        (false, Duration::ZERO, error.to_string())
                    }
                };
                let took_text = format!("{took:?}");
                if flags.write_out == Output::Simple {
                    if healthy {
                        println!("{endpoint} is healthy: successfully committed proposal: took = {took_text}");
                    } else {
                        eprintln!("{endpoint} is unhealthy: failed to commit proposal: {error}");
                    }
                }
                rows.push(vec![
                    endpoint.clone(),
                    healthy.to_string(),
                    took_text.clone(),
                    error.clone(),
                ]);
                entries.push(json!({"endpoint": endpoint, "health": healthy, "took": took_text, "error": error}));
            }
            match flags.write_out {
                Output::Json => println!("{}", Value::Array(entries)),
                Output::Table => {
                    print!("{}", table(&["endpoint", "health", "took", "error"], &rows))
                }
                Output::Simple => {}
            }
        }
    }
    if failed {
        anyhow::bail!("unhealthy cluster");
    }
    Ok(())
}

// ----- txn -------------------------------------------------------------

/// Splits a line into words; double quotes group words and allow `\"`.
fn words(line: &str) -> anyhow::Result<Vec<String>> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut word = String::new();
        if c == '"' {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => word.extend(chars.next()),
                    Some('"') => break,
                    Some(other) => word.push(other),
                    None => anyhow::bail!("unterminated quote in {line:?}"),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
        }
        words.push(word);
    }
    Ok(words)
}

/// One compare line of etcdctl's txn syntax: `value("key") = "v"`,
/// `mod("key") > "5"`, `create("key") = "0"`, `version("key") != "2"`.
fn parse_compare(line: &str) -> anyhow::Result<pb::Compare> {
    let bad =
        || anyhow::anyhow!("malformed comparison: {line:?} (expected e.g. value(\"k\") = \"v\")");
    let open = line.find('(').ok_or_else(bad)?;
    let close = line.rfind(')').ok_or_else(bad)?;
    let target = line[..open].trim();
    let key = words(&line[open + 1..close])?
        .into_iter()
        .next()
        .ok_or_else(bad)?;
    let rest = words(&line[close + 1..])?;
    let [op, operand] = rest.as_slice() else {
        return Err(bad());
    };
    use pb::compare::{CompareResult, CompareTarget, TargetUnion};
    let result = match op.as_str() {
        "=" | "==" => CompareResult::Equal,
        "!=" => CompareResult::NotEqual,
        ">" => CompareResult::Greater,
        "<" => CompareResult::Less,
        _ => return Err(bad()),
    };
    let number = || operand.parse::<i64>().map_err(|_| bad());
    let (target, union) = match target {
        "value" | "val" => (
            CompareTarget::Value,
            TargetUnion::Value(Bytes::from(operand.clone())),
        ),
        "mod" => (CompareTarget::Mod, TargetUnion::ModRevision(number()?)),
        "create" | "crt" => (
            CompareTarget::Create,
            TargetUnion::CreateRevision(number()?),
        ),
        "version" | "ver" => (CompareTarget::Version, TargetUnion::Version(number()?)),
        "lease" => (CompareTarget::Lease, TargetUnion::Lease(number()?)),
        _ => return Err(bad()),
    };
    Ok(pb::Compare {
        result: result as i32,
        target: target as i32,
        key: Bytes::from(key),
        target_union: Some(union),
        range_end: Bytes::new(),
    })
}

/// One operation line: `put k v`, `get k [end]`, `del k [end]`.
fn parse_op(line: &str) -> anyhow::Result<pb::RequestOp> {
    let words = words(line)?;
    let bytes = |word: &String| Bytes::from(word.clone());
    let request = match words.as_slice() {
        [command, key, value] if command == "put" => {
            pb::request_op::Request::RequestPut(pb::PutRequest {
                key: bytes(key),
                value: bytes(value),
                ..pb::PutRequest::default()
            })
        }
        [command, key, rest @ ..] if command == "get" && rest.len() <= 1 => {
            pb::request_op::Request::RequestRange(pb::RangeRequest {
                key: bytes(key),
                range_end: rest.first().map(bytes).unwrap_or_default(),
                ..pb::RangeRequest::default()
            })
        }
        [command, key, rest @ ..]
            if (command == "del" || command == "delete") && rest.len() <= 1 =>
        {
            pb::request_op::Request::RequestDeleteRange(pb::DeleteRangeRequest {
                key: bytes(key),
                range_end: rest.first().map(bytes).unwrap_or_default(),
                prev_kv: false,
            })
        }
        _ => anyhow::bail!("malformed operation: {line:?} (expected put k v, get k, or del k)"),
    };
    Ok(pb::RequestOp {
        request: Some(request),
    })
}

/// etcdctl's txn input: compares, a blank line, success operations, a
/// blank line, failure operations, a blank line (or the end).
fn parse_txn(input: &str) -> anyhow::Result<pb::TxnRequest> {
    let mut request = pb::TxnRequest::default();
    let mut section = 0;
    for line in input.lines() {
        let line = line.trim();
        if line.is_empty() {
            section += 1;
            if section > 2 {
                break;
            }
            continue;
        }
        match section {
            0 => request.compare.push(parse_compare(line)?),
            1 => request.success.push(parse_op(line)?),
            _ => request.failure.push(parse_op(line)?),
        }
    }
    Ok(request)
}

pub async fn txn(flags: &ClientFlags) -> anyhow::Result<()> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .context("reading the transaction from stdin")?;
    let request = parse_txn(&input)?;
    let mut txn = client::Txn::new();
    // The builder takes the generated messages as they are.
    txn = txn.when(request.compare.into_iter().map(client::Compare::from_proto));
    txn = txn.and_then(request.success.into_iter().map(client::TxnOp::from_proto));
    txn = txn.or_else(request.failure.into_iter().map(client::TxnOp::from_proto));
    let response = flags.client()?.txn(txn).await?;
    if flags.write_out == Output::Json {
        println!(
            "{}",
            json!({
                "header": header_json(response.header.as_ref()),
                "succeeded": response.succeeded,
            })
        );
        return Ok(());
    }
    println!(
        "{}",
        if response.succeeded {
            "SUCCESS"
        } else {
            "FAILURE"
        }
    );
    for op in &response.responses {
        println!();
        match &op.response {
            Some(pb::response_op::Response::ResponsePut(_)) => println!("OK"),
            Some(pb::response_op::Response::ResponseRange(range)) => {
                for kv in &range.kvs {
                    println!("{}\n{}", text(&kv.key), text(&kv.value));
                }
            }
            Some(pb::response_op::Response::ResponseDeleteRange(delete)) => {
                println!("{}", delete.deleted)
            }
            Some(pb::response_op::Response::ResponseTxn(_)) | None => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_end_where_etcdctl_ends_them() {
        assert_eq!(prefix_end(b"abc"), Bytes::from_static(b"abd"));
        assert_eq!(prefix_end(b"a\xff"), Bytes::from_static(b"b"));
        assert_eq!(prefix_end(b"\xff"), Bytes::from_static(b"\0"));
    }

    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"key1"), "a2V5MQ==");
    }

    #[test]
    fn txn_input_parses_like_etcdctls() {
        let request = parse_txn(
            "value(\"k\") = \"v 1\"\nmod(\"k\") > \"5\"\n\nput k \"v 2\"\nget k\n\ndel k\n\n",
        )
        .expect("parses");
        assert_eq!(request.compare.len(), 2);
        assert_eq!(request.success.len(), 2);
        assert_eq!(request.failure.len(), 1);
        assert!(parse_txn("value(k) ~ v\n\n\n").is_err());
        assert!(parse_txn("\nput k\n\n").is_err());
    }
}
