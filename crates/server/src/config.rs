//! Node configuration: what a member is called, where it keeps its data,
//! where it listens, whom it bootstraps with, and its tuning.
//!
//! Settings are named as etcd names its flags (`--initial-cluster`,
//! `--snapshot-count`, ...), so an etcd operator's habits carry over. The
//! binary layers them: command-line flags over `RAFTKV_*` environment
//! variables over a TOML file (keys are the flag names) over defaults. This
//! module owns the settings, their defaults, the TOML form and validation; it
//! never reads the process environment or arguments itself.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use raft::NodeId;
use serde::Deserialize;

/// Whether this member starts a new cluster or joins an existing one.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum InitialClusterState {
    #[default]
    New,
    Existing,
}

impl std::str::FromStr for InitialClusterState {
    type Err = ConfigError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "new" => Ok(InitialClusterState::New),
            "existing" => Ok(InitialClusterState::Existing),
            other => Err(ConfigError::Invalid {
                setting: "initial-cluster-state",
                problem: format!("{other:?} is neither \"new\" nor \"existing\""),
            }),
        }
    }
}

/// Every setting, as given (flags, environment, file or defaults). Turn it
/// into a [`ResolvedConfig`] with [`ServerConfig::resolve`].
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct ServerConfig {
    pub name: String,
    /// Defaults to `<name>.raftkv` in the working directory.
    pub data_dir: Option<PathBuf>,
    pub listen_client_urls: Vec<String>,
    /// Defaults to the listen URLs.
    pub advertise_client_urls: Vec<String>,
    pub listen_peer_urls: Vec<String>,
    /// Defaults to the listen peer URLs.
    pub initial_advertise_peer_urls: Vec<String>,
    /// `name=peer-url[,name=peer-url...]`; defaults to this member alone.
    pub initial_cluster: Option<String>,
    pub initial_cluster_state: InitialClusterState,
    pub initial_cluster_token: String,
    /// Milliseconds between leader heartbeats.
    pub heartbeat_interval: u64,
    /// Milliseconds a follower waits without a heartbeat before campaigning.
    pub election_timeout: u64,
    /// Applied entries between snapshots (and log compactions).
    pub snapshot_count: u64,
    /// Entries kept in the log after a compaction, so slightly lagging
    /// followers catch up from the log rather than a snapshot.
    pub snapshot_catchup_entries: u64,
    /// Size the state machine's storage may grow to before writes are refused.
    pub quota_backend_bytes: u64,
    /// Bytes of the storage engine's block cache (raftkv's own flag; see
    /// `mvcc::StoreOptions`).
    pub backend_cache_bytes: u64,
    /// Largest client request accepted, in bytes.
    pub max_request_bytes: u64,
    /// Most operations in one transaction.
    pub max_txn_ops: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            name: "default".to_string(),
            data_dir: None,
            listen_client_urls: vec!["http://127.0.0.1:2379".to_string()],
            advertise_client_urls: Vec::new(),
            listen_peer_urls: vec!["http://127.0.0.1:2380".to_string()],
            initial_advertise_peer_urls: Vec::new(),
            initial_cluster: None,
            initial_cluster_state: InitialClusterState::New,
            initial_cluster_token: "raftkv-cluster".to_string(),
            heartbeat_interval: 100,
            election_timeout: 1000,
            // etcd 3.6's default. A snapshot is an fsync of the engine (the
            // state is already on disk), so it costs a few milliseconds; what
            // the count bounds is the Raft log kept in memory between
            // compactions (10,000 entries of 2 KiB: 20 MB).
            snapshot_count: 10_000,
            snapshot_catchup_entries: 5_000,
            quota_backend_bytes: 2 * 1024 * 1024 * 1024,
            backend_cache_bytes: mvcc::StoreOptions::default().cache_bytes,
            max_request_bytes: 1536 * 1024,
            max_txn_ops: 128,
        }
    }
}

/// A configuration problem, phrased so the operator knows what to change.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("--{setting}: {problem}")]
    Invalid {
        setting: &'static str,
        problem: String,
    },
    #[error("config file {path}: {problem}")]
    File { path: String, problem: String },
}

fn invalid(setting: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting,
        problem: problem.into(),
    }
}

/// One member of the initial cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitialMember {
    pub name: String,
    /// Derived from the URLs at first; on a restart, the id recorded in the
    /// data dir for this name (see `identity.rs`).
    pub id: NodeId,
    /// As written in `--initial-cluster`: the addresses to dial.
    pub peer_urls: Vec<String>,
}

/// A validated configuration, with addresses parsed and ids derived.
///
/// The ids derived here are what a *fresh* data dir will record. A member
/// restarting on a data dir takes them from its identity record instead
/// (`identity::establish` and `identity::MemberIdentity::apply_to`, which
/// `server::open_member_on` runs before anything uses them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedConfig {
    pub name: String,
    pub member_id: NodeId,
    pub cluster_id: u64,
    /// `--initial-cluster-token`, kept to re-derive ids as an older raftkv
    /// did when adopting a data dir without an identity record.
    pub initial_cluster_token: String,
    pub data_dir: PathBuf,
    pub listen_client_addrs: Vec<SocketAddr>,
    pub advertise_client_urls: Vec<String>,
    pub listen_peer_addrs: Vec<SocketAddr>,
    pub advertise_peer_urls: Vec<String>,
    pub initial_members: Vec<InitialMember>,
    pub initial_cluster_state: InitialClusterState,
    pub heartbeat_interval_ms: u64,
    pub election_timeout_ms: u64,
    pub snapshot_count: u64,
    pub snapshot_catchup_entries: u64,
    pub quota_backend_bytes: u64,
    pub backend_cache_bytes: u64,
    pub max_request_bytes: u64,
    pub max_txn_ops: u64,
}

impl ServerConfig {
    /// Reads a TOML file whose keys are the flag names.
    pub fn from_toml(path: &str, text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|error| ConfigError::File {
            path: path.to_string(),
            problem: error.to_string(),
        })
    }

    /// Validates every setting and derives member and cluster ids.
    pub fn resolve(&self) -> Result<ResolvedConfig, ConfigError> {
        if self.name.is_empty() {
            return Err(invalid("name", "must not be empty"));
        }
        if self.name.contains(['=', ',']) {
            return Err(invalid("name", "must not contain '=' or ','"));
        }
        let listen_client_addrs = parse_urls("listen-client-urls", &self.listen_client_urls)?;
        let listen_peer_addrs = parse_urls("listen-peer-urls", &self.listen_peer_urls)?;
        let advertise_client_urls = if self.advertise_client_urls.is_empty() {
            self.listen_client_urls.clone()
        } else {
            parse_urls("advertise-client-urls", &self.advertise_client_urls)?;
            self.advertise_client_urls.clone()
        };
        let advertise_peer_urls = if self.initial_advertise_peer_urls.is_empty() {
            self.listen_peer_urls.clone()
        } else {
            parse_urls(
                "initial-advertise-peer-urls",
                &self.initial_advertise_peer_urls,
            )?;
            self.initial_advertise_peer_urls.clone()
        };
        if self.heartbeat_interval == 0 {
            return Err(invalid(
                "heartbeat-interval",
                "must be at least 1 millisecond",
            ));
        }
        if self.election_timeout < 5 * self.heartbeat_interval {
            return Err(invalid(
                "election-timeout",
                format!(
                    "{} ms is less than 5 heartbeat intervals ({} ms); raise --election-timeout \
                     or lower --heartbeat-interval",
                    self.election_timeout,
                    5 * self.heartbeat_interval
                ),
            ));
        }
        if self.election_timeout > 50_000 {
            return Err(invalid(
                "election-timeout",
                "must be at most 50000 milliseconds",
            ));
        }
        if self.snapshot_count == 0 {
            return Err(invalid("snapshot-count", "must be at least 1"));
        }
        if self.max_request_bytes == 0 {
            return Err(invalid("max-request-bytes", "must be at least 1"));
        }
        if self.max_txn_ops == 0 {
            return Err(invalid("max-txn-ops", "must be at least 1"));
        }
        if self.initial_cluster_token.is_empty() {
            return Err(invalid("initial-cluster-token", "must not be empty"));
        }

        let initial_cluster = match &self.initial_cluster {
            Some(text) => text.clone(),
            None => advertise_peer_urls
                .iter()
                .map(|url| format!("{}={url}", self.name))
                .collect::<Vec<_>>()
                .join(","),
        };
        let initial_members = parse_initial_cluster(&initial_cluster, &self.initial_cluster_token)?;
        let Some(me) = initial_members
            .iter()
            .find(|member| member.name == self.name)
        else {
            return Err(invalid(
                "initial-cluster",
                format!(
                    "has no member named {:?} (this member's --name); add {}={}",
                    self.name,
                    self.name,
                    advertise_peer_urls
                        .first()
                        .map_or("<peer-url>", String::as_str)
                ),
            ));
        };
        // Compared as addresses, not spellings (`http://h:1` and `h:1/` are
        // one URL).
        let mut mine: Vec<String> = me.peer_urls.iter().map(|url| canonical_url(url)).collect();
        let mut advertised: Vec<String> = advertise_peer_urls
            .iter()
            .map(|url| canonical_url(url))
            .collect();
        mine.sort();
        advertised.sort();
        if mine != advertised {
            return Err(invalid(
                "initial-cluster",
                format!(
                    "lists {:?} for {:?}, but --initial-advertise-peer-urls is {:?}; they must match",
                    me.peer_urls, self.name, advertise_peer_urls
                ),
            ));
        }
        let member_id = me.id;
        let cluster_id = cluster_id(&initial_members, &self.initial_cluster_token);

        Ok(ResolvedConfig {
            name: self.name.clone(),
            member_id,
            cluster_id,
            initial_cluster_token: self.initial_cluster_token.clone(),
            data_dir: self
                .data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("{}.raftkv", self.name))),
            listen_client_addrs,
            advertise_client_urls,
            listen_peer_addrs,
            advertise_peer_urls,
            initial_members,
            initial_cluster_state: self.initial_cluster_state,
            heartbeat_interval_ms: self.heartbeat_interval,
            election_timeout_ms: self.election_timeout,
            snapshot_count: self.snapshot_count,
            snapshot_catchup_entries: self.snapshot_catchup_entries,
            quota_backend_bytes: self.quota_backend_bytes,
            backend_cache_bytes: self.backend_cache_bytes,
            max_request_bytes: self.max_request_bytes,
            max_txn_ops: self.max_txn_ops,
        })
    }
}

/// Parses `http://host:port` URLs (or bare `host:port`) into socket
/// addresses. Only `http` is served: TLS is not implemented, and accepting
/// an `https` URL would silently serve plaintext.
pub fn parse_urls(setting: &'static str, urls: &[String]) -> Result<Vec<SocketAddr>, ConfigError> {
    if urls.is_empty() {
        return Err(invalid(setting, "needs at least one URL"));
    }
    urls.iter().map(|url| parse_url(setting, url)).collect()
}

pub fn parse_url(setting: &'static str, url: &str) -> Result<SocketAddr, ConfigError> {
    let host_port = match url.split_once("://") {
        Some(("http", rest)) => rest,
        Some(("https", _)) => {
            return Err(invalid(
                setting,
                format!("{url:?}: TLS is not supported yet; use an http:// URL"),
            ))
        }
        Some((scheme, _)) => {
            return Err(invalid(
                setting,
                format!("{url:?}: unsupported scheme {scheme:?}; use http://host:port"),
            ))
        }
        None => url,
    };
    let host_port = host_port.trim_end_matches('/');
    if let Some((host, _)) = host_port.rsplit_once(':') {
        if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
            return Err(invalid(
                setting,
                format!("{url:?}: an IPv6 address needs brackets, e.g. http://[::1]:2380"),
            ));
        }
    }
    if host_port.contains('/') {
        return Err(invalid(
            setting,
            format!("{url:?}: a URL here must not have a path"),
        ));
    }
    let has_port = host_port
        .rsplit_once(':')
        .is_some_and(|(_, port)| port.parse::<u16>().is_ok());
    if !has_port {
        return Err(invalid(
            setting,
            format!("{url:?}: needs an explicit port, e.g. http://127.0.0.1:2379"),
        ));
    }
    let mut addrs = host_port
        .to_socket_addrs()
        .map_err(|error| invalid(setting, format!("{url:?}: {error}")))?;
    addrs
        .next()
        .ok_or_else(|| invalid(setting, format!("{url:?}: resolves to no address")))
}

/// Parses `name=url,name=url`; a name may repeat to give a member several
/// URLs, as in etcd.
pub fn parse_initial_cluster(text: &str, token: &str) -> Result<Vec<InitialMember>, ConfigError> {
    let mut members: Vec<InitialMember> = Vec::new();
    for item in text
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
    {
        let Some((name, url)) = item.split_once('=') else {
            return Err(invalid(
                "initial-cluster",
                format!("{item:?} is not name=url (e.g. infra1=http://10.0.0.1:2380)"),
            ));
        };
        if name.is_empty() {
            return Err(invalid(
                "initial-cluster",
                format!("{item:?} has an empty name"),
            ));
        }
        parse_url("initial-cluster", url)?;
        match members.iter_mut().find(|member| member.name == name) {
            Some(member) => member.peer_urls.push(url.to_string()),
            None => members.push(InitialMember {
                name: name.to_string(),
                id: 0,
                peer_urls: vec![url.to_string()],
            }),
        }
    }
    if members.is_empty() {
        return Err(invalid("initial-cluster", "lists no members"));
    }
    let mut seen_urls = BTreeSet::new();
    for member in &mut members {
        for url in &member.peer_urls {
            if !seen_urls.insert(canonical_url(url)) {
                return Err(invalid(
                    "initial-cluster",
                    format!("peer URL {url} is listed twice"),
                ));
            }
        }
        member.id = member_id(&member.peer_urls, token);
    }
    let mut ids = BTreeSet::new();
    for member in &members {
        if !ids.insert(member.id) {
            return Err(invalid(
                "initial-cluster",
                "two members hash to the same id",
            ));
        }
    }
    Ok(members)
}

/// A member's id: a hash of its sorted peer URLs, each in its
/// [`canonical_url`] form, and the cluster token, so every member computes
/// the same ids from the same `--initial-cluster` however it spells an
/// address. (etcd hashes URLs as parsed and re-printed by Go's `net/url`,
/// not the flag's raw text; it refuses a trailing slash, which raftkv
/// accepts and so must ignore here.) For a URL already in canonical form
/// (`http://127.0.0.1:2380`) this is the id earlier raftkv versions
/// derived.
pub fn member_id(peer_urls: &[String], token: &str) -> NodeId {
    let canonical: Vec<String> = peer_urls.iter().map(|url| canonical_url(url)).collect();
    legacy_member_id(&canonical, token)
}

/// The id raftkv versions before the identity record derived: the same
/// hash over the URLs exactly as written. Used only to adopt a data dir
/// such a version created (see `identity.rs`).
pub fn legacy_member_id(peer_urls: &[String], token: &str) -> NodeId {
    let mut urls: Vec<&str> = peer_urls.iter().map(String::as_str).collect();
    urls.sort_unstable();
    let mut text = urls.join(",");
    text.push('|');
    text.push_str(token);
    nonzero(fnv1a(text.as_bytes()))
}

/// One spelling per peer address, for deriving ids: `http://host:port`,
/// with the scheme made explicit, a trailing slash dropped, the host in
/// lower case (an IP address printed in its standard form) and the port as
/// a number. Text that is not such a URL is returned unchanged (the
/// configuration refuses it anyway, in [`parse_url`]).
pub fn canonical_url(url: &str) -> String {
    let rest = match url.split_once("://") {
        Some(("http", rest)) => rest,
        Some(_) => return url.to_string(),
        None => url,
    };
    let host_port = rest.trim_end_matches('/');
    let Some((host, port)) = host_port.rsplit_once(':') else {
        return url.to_string();
    };
    let Ok(port) = port.parse::<u16>() else {
        return url.to_string();
    };
    if host.is_empty() || host.contains('/') {
        return url.to_string();
    }
    let host = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        match inner.parse::<Ipv6Addr>() {
            Ok(ip) => format!("[{ip}]"),
            Err(_) => format!("[{}]", inner.to_ascii_lowercase()),
        }
    } else {
        match host.parse::<IpAddr>() {
            Ok(ip) => ip.to_string(),
            Err(_) => host.to_ascii_lowercase(),
        }
    };
    format!("http://{host}:{port}")
}

/// The cluster's id: a hash of its initial members' ids and the token.
pub fn cluster_id(members: &[InitialMember], token: &str) -> u64 {
    let mut ids: Vec<u64> = members.iter().map(|member| member.id).collect();
    ids.sort_unstable();
    let mut bytes = Vec::with_capacity(ids.len() * 8 + token.len());
    for id in ids {
        bytes.extend_from_slice(&id.to_be_bytes());
    }
    bytes.extend_from_slice(token.as_bytes());
    nonzero(fnv1a(&bytes))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    // Mix the high bits down: FNV's low bits are weak for short inputs.
    hash ^ (hash >> 29)
}

fn nonzero(id: u64) -> u64 {
    if id == 0 {
        1
    } else {
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three_member(name: &str, port: u16) -> ServerConfig {
        ServerConfig {
            name: name.to_string(),
            listen_peer_urls: vec![format!("http://127.0.0.1:{port}")],
            initial_cluster: Some(
                "m1=http://127.0.0.1:12380,m2=http://127.0.0.1:22380,m3=http://127.0.0.1:32380"
                    .to_string(),
            ),
            ..ServerConfig::default()
        }
    }

    #[test]
    fn defaults_resolve_to_a_single_member_cluster() {
        let resolved = ServerConfig::default()
            .resolve()
            .expect("defaults are valid");
        assert_eq!(resolved.initial_members.len(), 1);
        assert_eq!(
            resolved.listen_client_addrs,
            vec!["127.0.0.1:2379".parse().expect("addr")]
        );
        assert_eq!(resolved.data_dir, PathBuf::from("default.raftkv"));
        assert_ne!(resolved.member_id, 0);
    }

    #[test]
    fn every_member_derives_the_same_ids() {
        let a = three_member("m1", 12380).resolve().expect("valid");
        let b = three_member("m2", 22380).resolve().expect("valid");
        assert_eq!(a.initial_members, b.initial_members);
        assert_eq!(a.cluster_id, b.cluster_id);
        assert_ne!(a.member_id, b.member_id);
        let other_token = ServerConfig {
            initial_cluster_token: "another".to_string(),
            ..three_member("m1", 12380)
        }
        .resolve()
        .expect("valid");
        assert_ne!(
            other_token.cluster_id, a.cluster_id,
            "the token separates clusters"
        );
    }

    #[test]
    fn ids_follow_the_address_not_its_spelling() {
        let token = "raftkv-cluster";
        let plain = member_id(&["http://127.0.0.1:2380".to_string()], token);
        for spelling in [
            "http://127.0.0.1:2380/",
            "127.0.0.1:2380",
            "127.0.0.1:02380/",
            "http://127.0.0.1:2380//",
        ] {
            assert_eq!(
                member_id(&[spelling.to_string()], token),
                plain,
                "{spelling}"
            );
        }
        assert_eq!(
            canonical_url("HTTP://x:1"),
            "HTTP://x:1",
            "not a URL we take"
        );
        assert_eq!(
            canonical_url("http://Node-1.Example:2380/"),
            "http://node-1.example:2380"
        );
        assert_eq!(
            canonical_url("http://[0:0:0:0:0:0:0:1]:2380"),
            "http://[::1]:2380"
        );
        assert_ne!(
            member_id(&["http://127.0.0.1:2381".to_string()], token),
            plain,
            "another port is another member"
        );
        // A canonical spelling derives what raftkv always derived, so data
        // dirs and peers of earlier versions keep their ids.
        assert_eq!(
            plain,
            legacy_member_id(&["http://127.0.0.1:2380".to_string()], token)
        );

        let respelled = ServerConfig {
            initial_cluster: Some(
                "m1=http://127.0.0.1:12380/,m2=127.0.0.1:22380,m3=http://127.0.0.1:32380"
                    .to_string(),
            ),
            ..three_member("m1", 12380)
        }
        .resolve()
        .expect("a trailing slash or a bare host:port is the same address");
        let plain = three_member("m1", 12380).resolve().expect("valid");
        assert_eq!(respelled.member_id, plain.member_id);
        assert_eq!(respelled.cluster_id, plain.cluster_id);
        let ids = |config: &ResolvedConfig| -> Vec<NodeId> {
            config
                .initial_members
                .iter()
                .map(|member| member.id)
                .collect()
        };
        assert_eq!(ids(&respelled), ids(&plain));

        let twice = ServerConfig {
            initial_cluster: Some(
                "m1=http://127.0.0.1:12380,m2=http://127.0.0.1:12380/".to_string(),
            ),
            ..three_member("m1", 12380)
        };
        assert!(twice
            .resolve()
            .expect_err("one address for two members")
            .to_string()
            .contains("listed twice"));
    }

    #[test]
    fn errors_say_what_to_fix() {
        let missing_self = three_member("m4", 42380)
            .resolve()
            .expect_err("m4 is not listed");
        assert!(missing_self
            .to_string()
            .contains("--initial-cluster: has no member named \"m4\""));

        let mismatch = three_member("m1", 12399)
            .resolve()
            .expect_err("urls differ");
        assert!(mismatch.to_string().contains("must match"), "{mismatch}");

        let no_port = ServerConfig {
            listen_client_urls: vec!["http://127.0.0.1".to_string()],
            ..ServerConfig::default()
        };
        assert!(no_port
            .resolve()
            .expect_err("no port")
            .to_string()
            .contains("explicit port"));

        let tls = ServerConfig {
            listen_client_urls: vec!["https://127.0.0.1:2379".to_string()],
            ..ServerConfig::default()
        };
        assert!(tls
            .resolve()
            .expect_err("tls")
            .to_string()
            .contains("TLS is not supported"));

        let timeouts = ServerConfig {
            election_timeout: 200,
            ..ServerConfig::default()
        };
        assert!(timeouts
            .resolve()
            .expect_err("too short")
            .to_string()
            .contains("5 heartbeat intervals"));

        let garbage = ServerConfig {
            initial_cluster: Some("m1".to_string()),
            ..ServerConfig::default()
        };
        assert!(garbage
            .resolve()
            .expect_err("garbage")
            .to_string()
            .contains("is not name=url"));
    }

    #[test]
    fn toml_uses_the_flag_names() {
        let config = ServerConfig::from_toml(
            "raftkv.toml",
            r#"
                name = "m2"
                data-dir = "/var/lib/raftkv"
                listen-peer-urls = ["http://127.0.0.1:22380"]
                initial-cluster = "m1=http://127.0.0.1:12380,m2=http://127.0.0.1:22380"
                initial-cluster-state = "existing"
                snapshot-count = 500
            "#,
        )
        .expect("valid toml");
        assert_eq!(config.name, "m2");
        assert_eq!(config.snapshot_count, 500);
        assert_eq!(config.initial_cluster_state, InitialClusterState::Existing);
        assert!(config.resolve().is_ok());

        let unknown =
            ServerConfig::from_toml("raftkv.toml", "snapshot_count = 5").expect_err("unknown key");
        assert!(unknown.to_string().contains("raftkv.toml"), "{unknown}");
    }
}
