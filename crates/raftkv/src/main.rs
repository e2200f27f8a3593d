//! The `raftkv` binary: `server` runs one member; `dev` runs a local
//! three-member cluster in one process.
//!
//! This file owns argument parsing, logging setup and signal handling; what
//! a member does lives in the `server` crate.

mod bench;
mod cli;

/// mimalloc instead of glibc's malloc: with many threads allocating and
/// freeing request buffers, glibc kept resizing its per-thread arenas
/// (~6,000 `mprotect` calls per second across three members under a put
/// load), and malloc/free were ~6% of all CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in the bundled mimalloc (v3 `mimalloc.h`, enum
/// `mi_option_e`); the bindings name no constant for it.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
/// Its default in that build (`src/options.c`), used to check that index 15
/// is that option.
const MI_PURGE_DELAY_DEFAULT_MS: std::os::raw::c_long = 1000;

/// Members return freed memory to the system at once. By default mimalloc
/// purges lazily, when the heap that owns the pages is next busy; a
/// snapshot's copy of the state (~35 MB per 100,000 keys, freed by the
/// snapshot thread when it ends) then stayed resident in an idle member.
/// Measured: no throughput change under a put load.
fn return_freed_memory_promptly() {
    // SAFETY: reading and setting an allocator option; both are plain
    // accesses to mimalloc's option table, valid at any time.
    unsafe {
        if libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) == MI_PURGE_DELAY_DEFAULT_MS {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0);
        } else {
            tracing::warn!(
                "mimalloc option {MI_OPTION_PURGE_DELAY} is not the purge delay in this build; \
                 freed memory is returned lazily"
            );
        }
    }
}

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use server::config::{InitialClusterState, ResolvedConfig, ServerConfig};
use server::server::{open_member, run, Listeners};

#[derive(Parser)]
#[command(
    name = "raftkv",
    version,
    about = "A strongly consistent key-value store speaking etcd's v3 API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one cluster member (flags named as etcd's).
    Server(Box<ServerFlags>),
    /// Run a local three-member cluster on loopback, in this process.
    Dev(DevFlags),
    /// Load generator (etcd v3 API only: works against etcd too).
    Bench(bench::BenchFlags),
    /// Put a key.
    Put(ClientCommand<cli::PutFlags>),
    /// Get a key or a range of keys.
    Get(ClientCommand<cli::GetFlags>),
    /// Delete a key or a range of keys.
    Del(ClientCommand<cli::DelFlags>),
    /// Run a transaction read from stdin (etcdctl's syntax).
    Txn(ClientCommand<NoFlags>),
    /// Compact the history up to a revision.
    Compaction(ClientCommand<cli::CompactionFlags>),
    /// Cluster membership.
    Member(ClientSubcommand<cli::MemberCommand>),
    /// Endpoint status and health.
    Endpoint(ClientSubcommand<cli::EndpointCommand>),
}

#[derive(Args, Debug)]
struct NoFlags {}

#[derive(Args)]
struct ClientCommand<T: Args> {
    #[command(flatten)]
    flags: T,
    #[command(flatten)]
    client: cli::ClientFlags,
}

#[derive(Args)]
struct ClientSubcommand<T: clap::Subcommand> {
    #[command(subcommand)]
    command: T,
    #[command(flatten)]
    client: cli::ClientFlags,
}

/// Every flag may also come from a `RAFTKV_*` environment variable or from
/// the TOML file given with --config-file (keys are the flag names).
/// Precedence: flag, then environment, then file, then default.
#[derive(Args)]
struct ServerFlags {
    /// TOML file with settings named as the flags (e.g. `snapshot-count = 5000`).
    #[arg(long, env = "RAFTKV_CONFIG_FILE")]
    config_file: Option<PathBuf>,
    #[arg(long, env = "RAFTKV_NAME")]
    name: Option<String>,
    #[arg(long, env = "RAFTKV_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[arg(long, env = "RAFTKV_LISTEN_CLIENT_URLS", value_delimiter = ',')]
    listen_client_urls: Option<Vec<String>>,
    #[arg(long, env = "RAFTKV_ADVERTISE_CLIENT_URLS", value_delimiter = ',')]
    advertise_client_urls: Option<Vec<String>>,
    #[arg(long, env = "RAFTKV_LISTEN_PEER_URLS", value_delimiter = ',')]
    listen_peer_urls: Option<Vec<String>>,
    #[arg(
        long,
        env = "RAFTKV_INITIAL_ADVERTISE_PEER_URLS",
        value_delimiter = ','
    )]
    initial_advertise_peer_urls: Option<Vec<String>>,
    #[arg(long, env = "RAFTKV_INITIAL_CLUSTER")]
    initial_cluster: Option<String>,
    /// "new" or "existing".
    #[arg(long, env = "RAFTKV_INITIAL_CLUSTER_STATE")]
    initial_cluster_state: Option<InitialClusterState>,
    #[arg(long, env = "RAFTKV_INITIAL_CLUSTER_TOKEN")]
    initial_cluster_token: Option<String>,
    /// Milliseconds.
    #[arg(long, env = "RAFTKV_HEARTBEAT_INTERVAL")]
    heartbeat_interval: Option<u64>,
    /// Milliseconds.
    #[arg(long, env = "RAFTKV_ELECTION_TIMEOUT")]
    election_timeout: Option<u64>,
    /// Applied entries between snapshots of the state: the engine is synced
    /// and the log compacted (default 10000, as etcd 3.6's).
    #[arg(long, env = "RAFTKV_SNAPSHOT_COUNT")]
    snapshot_count: Option<u64>,
    /// Entries kept in the log after a snapshot, for followers slightly
    /// behind (etcd 3.5 calls it --experimental-snapshot-catchup-entries).
    #[arg(
        long,
        env = "RAFTKV_SNAPSHOT_CATCHUP_ENTRIES",
        alias = "experimental-snapshot-catchup-entries"
    )]
    snapshot_catchup_entries: Option<u64>,
    #[arg(long, env = "RAFTKV_QUOTA_BACKEND_BYTES")]
    quota_backend_bytes: Option<u64>,
    /// Bytes of the storage engine's block cache (default 64 MiB).
    #[arg(long, env = "RAFTKV_BACKEND_CACHE_BYTES")]
    backend_cache_bytes: Option<u64>,
    #[arg(long, env = "RAFTKV_MAX_REQUEST_BYTES")]
    max_request_bytes: Option<u64>,
    #[arg(long, env = "RAFTKV_MAX_TXN_OPS")]
    max_txn_ops: Option<u64>,
}

impl ServerFlags {
    fn into_config(self) -> anyhow::Result<ServerConfig> {
        let mut config = match &self.config_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                ServerConfig::from_toml(&path.display().to_string(), &text)?
            }
            None => ServerConfig::default(),
        };
        macro_rules! overlay {
            ($($field:ident),*) => { $( if let Some(value) = self.$field { config.$field = value; } )* };
        }
        overlay!(
            name,
            listen_client_urls,
            advertise_client_urls,
            listen_peer_urls,
            initial_advertise_peer_urls,
            initial_cluster_state,
            initial_cluster_token,
            heartbeat_interval,
            election_timeout,
            snapshot_count,
            snapshot_catchup_entries,
            quota_backend_bytes,
            backend_cache_bytes,
            max_request_bytes,
            max_txn_ops
        );
        if self.data_dir.is_some() {
            config.data_dir = self.data_dir;
        }
        if self.initial_cluster.is_some() {
            config.initial_cluster = self.initial_cluster;
        }
        Ok(config)
    }
}

#[derive(Args)]
struct DevFlags {
    /// Where the three members keep their data (one folder each).
    #[arg(long, default_value = "raftkv-data")]
    data_dir: PathBuf,
    /// Client ports of the three members, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = DEV_CLIENT_PORTS)]
    client_ports: Vec<u16>,
    /// Peer ports of the three members, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = DEV_PEER_PORTS)]
    peer_ports: Vec<u16>,
}

/// Ports of `raftkv dev`: member N listens for clients on CLIENT_PORTS[N]
/// and for peers on PEER_PORTS[N], as etcd's own local-cluster Procfile does.
const DEV_CLIENT_PORTS: [u16; 3] = [2379, 22379, 32379];
const DEV_PEER_PORTS: [u16; 3] = [2380, 22380, 32380];

/// Async worker threads for a member: one core fewer than the machine has.
/// A member also runs its Raft, apply and log-writer threads, which are busy
/// under load; a worker per core on top of them makes the workers steal and
/// wake each other across cores for little gain (measured on 2 cores with
/// three members: linearizable reads at 256 clients 23k/s with 2 workers,
/// 32k/s with 1). `TOKIO_WORKER_THREADS` overrides it.
fn member_worker_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |cores| cores.get().saturating_sub(1))
        .max(1)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Members log their life; client commands print results, so only
    // warnings reach stderr beside them.
    let default_filter = match cli.command {
        Command::Server(_) | Command::Dev(_) => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    let is_client_command = !matches!(cli.command, Command::Server(_) | Command::Dev(_));
    if is_client_command {
        // Rust ignores SIGPIPE, so printing into a closed pipe
        // (`raftkv get ... | head -1`) would panic. A client command ends
        // quietly instead, as Unix tools do. Never for a member: a peer
        // closing a socket must not kill it.
        // SAFETY: called before any other thread exists; SIG_DFL is a valid
        // disposition for SIGPIPE.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    if !is_client_command {
        return_freed_memory_promptly();
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if !is_client_command && std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        runtime.worker_threads(member_worker_threads());
    }
    // With the LIFO slot, a task that finishes a gRPC response wakes its
    // HTTP/2 connection task, which runs next and writes that one response:
    // one `writev` (and on loopback, the receiver's whole TCP path) per
    // request. Without it the connection task queues behind the other
    // responses woken by the same applied batch and writes them together.
    // Measured on 2 cores, 256 clients, 3 members: put 18,100 -> 19,700-21,300/s,
    // CPU per put members 71 -> 61 us, load generator 28 -> 22 us.
    #[cfg(tokio_unstable)]
    runtime.disable_lifo_slot();
    let runtime = runtime
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Server(flags) => {
                let config = flags.into_config()?.resolve()?;
                run_member(config, shutdown_signal()).await
            }
            Command::Dev(flags) => run_dev(flags).await,
            Command::Bench(flags) => bench::run(flags).await,
            Command::Put(command) => cli::put(&command.client, command.flags).await,
            Command::Get(command) => cli::get(&command.client, command.flags).await,
            Command::Del(command) => cli::del(&command.client, command.flags).await,
            Command::Txn(command) => cli::txn(&command.client).await,
            Command::Compaction(command) => cli::compaction(&command.client, command.flags).await,
            Command::Member(command) => cli::member(&command.client, command.command).await,
            Command::Endpoint(command) => cli::endpoint(&command.client, command.command).await,
        }
    });
    match result {
        // Client commands print etcdctl's one error line, whatever
        // RUST_BACKTRACE says.
        Err(error) if is_client_command => {
            eprintln!("Error: {error}");
            std::process::exit(1);
        }
        other => other,
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

async fn run_member(
    config: ResolvedConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let listeners = Listeners::bind(&config).await?;
    // The member's ids come from its data dir once it has one (see
    // `server::identity`); `opened.config` carries them.
    let opened = open_member(config, wal::DEFAULT_SEGMENT_BYTES)?;
    run(
        opened.config,
        listeners,
        opened.storage.log,
        opened.storage.state,
        opened.raft,
        shutdown,
    )
    .await?;
    Ok(())
}

async fn run_dev(flags: DevFlags) -> anyhow::Result<()> {
    if flags.client_ports.len() != 3 || flags.peer_ports.len() != 3 {
        anyhow::bail!(
            "--client-ports and --peer-ports take three ports each (e.g. --client-ports 2379,22379,32379)"
        );
    }
    let names = ["dev1", "dev2", "dev3"];
    let initial_cluster = names
        .iter()
        .zip(flags.peer_ports.iter())
        .map(|(name, port)| format!("{name}=http://127.0.0.1:{port}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut configs = Vec::new();
    for (position, name) in names.iter().enumerate() {
        let config = ServerConfig {
            name: name.to_string(),
            data_dir: Some(flags.data_dir.join(name)),
            listen_client_urls: vec![format!("http://127.0.0.1:{}", flags.client_ports[position])],
            listen_peer_urls: vec![format!("http://127.0.0.1:{}", flags.peer_ports[position])],
            initial_cluster: Some(initial_cluster.clone()),
            initial_cluster_token: "raftkv-dev".to_string(),
            ..ServerConfig::default()
        }
        .resolve()?;
        configs.push(config);
    }
    let endpoints = flags
        .client_ports
        .iter()
        .map(|port| format!("127.0.0.1:{port}"))
        .collect::<Vec<_>>()
        .join(",");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut members = Vec::new();
    for config in configs {
        let mut stop = stop_rx.clone();
        members.push(tokio::spawn(run_member(config, async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        })));
    }
    print_dev_banner(&flags.data_dir, &endpoints, &flags.peer_ports);
    shutdown_signal().await;
    let _ = stop_tx.send(true);
    let mut failure = None;
    for member in members {
        match member.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => failure = Some(error),
            Err(error) => failure = Some(error.into()),
        }
    }
    match failure {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

fn print_dev_banner(data_dir: &Path, endpoints: &str, peer_ports: &[u16]) {
    println!(
        "raftkv dev: three members on loopback, data in {}",
        data_dir.display()
    );
    println!("  client endpoints: {endpoints}");
    println!("  peer ports:       {peer_ports:?}");
    println!("try:");
    println!("  etcdctl --endpoints={endpoints} put a 1");
    println!("  etcdctl --endpoints={endpoints} get a");
    println!("Ctrl-C stops all three.");
}
