//! A cluster of real member processes on this machine — raftkv members
//! behind fault-injecting peer proxies, or etcd members as a control — and
//! the process faults: SIGKILL and restart, SIGSTOP and SIGCONT.
//!
//! Addresses: each cluster gets its own `127.N.x.y` block, so concurrent
//! clusters never share a source address the proxies identify senders by.
//! raftkv member `i` listens for peers on `127.N.1.(i+1)` (and therefore
//! sends from there), and is reached by its peers through its proxy on
//! `127.N.2.(i+1)`, which is also the peer URL it advertises and that the
//! `--initial-cluster` lists (member ids derive from those URLs). Client
//! ports are on 127.0.0.1. etcd does not bind its outbound peer connections
//! to its listen address, so etcd members talk to each other directly on
//! 127.0.0.1 and only process faults apply to them.
//!
//! It owns the processes: every one it starts is killed and reaped when the
//! [`Cluster`] is dropped, also while a failing test unwinds, and the data
//! directories are removed. It must never listen on anything but loopback,
//! never touch a process it did not start, and never signal by name.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use proto::etcdserverpb as pb;
use proto::etcdserverpb::kv_client::KvClient;
use proto::etcdserverpb::maintenance_client::MaintenanceClient;
use tonic::transport::{Channel, Endpoint};

use crate::proxy::{Network, PeerProxy};
use crate::NemesisError;

/// Which server the cluster runs.
#[derive(Clone, Debug)]
pub enum Flavor {
    Raftkv {
        binary: PathBuf,
        /// Starts the members with `RAFTKV_TEST_UNSAFE_LOCAL_READS=1`
        /// (debug builds only): linearizable reads skip ReadIndex.
        unsafe_local_reads: bool,
    },
    Etcd {
        binary: PathBuf,
    },
}

impl Flavor {
    pub fn name(&self) -> &'static str {
        match self {
            Flavor::Raftkv {
                unsafe_local_reads: true,
                ..
            } => "raftkv (RAFTKV_TEST_UNSAFE_LOCAL_READS=1)",
            Flavor::Raftkv { .. } => "raftkv",
            Flavor::Etcd { .. } => "etcd",
        }
    }

    /// Whether network partitions can be injected (see the module docs).
    pub fn supports_partitions(&self) -> bool {
        matches!(self, Flavor::Raftkv { .. })
    }
}

/// What the harness believes a member's process is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberState {
    Running,
    /// SIGSTOPped.
    Stopped,
    /// Killed and not restarted.
    Down,
}

struct Process {
    child: Option<Child>,
    stopped: bool,
}

pub struct Member {
    pub name: String,
    pub client_url: String,
    peer_listen_url: String,
    peer_advertise_url: String,
    data_dir: PathBuf,
    log_path: PathBuf,
    process: Mutex<Process>,
    /// For status queries by the harness itself (not the workload).
    maintenance: MaintenanceClient<Channel>,
    kv: KvClient<Channel>,
    /// The member's Raft id, learned from its first status answer.
    id: Mutex<Option<u64>>,
}

impl Member {
    fn lock(&self) -> MutexGuard<'_, Process> {
        // The guarded data is a child handle and a flag; a panic elsewhere
        // cannot leave them inconsistent.
        self.process
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }
}

pub struct Cluster {
    flavor: Flavor,
    members: Vec<Member>,
    initial_cluster: String,
    token: String,
    snapshot_count: u64,
    data_root: PathBuf,
    network: Option<Network>,
    /// Kept for their Drop, which stops them.
    _proxies: Vec<PeerProxy>,
}

/// Distinguishes clusters started by one process (one per test).
static CLUSTER_SERIAL: AtomicU32 = AtomicU32::new(0);

fn free_port(ip: IpAddr) -> Result<u16, NemesisError> {
    // Bind and drop: the port is free now; a race with another process
    // grabbing it before the member binds is possible but rare on loopback.
    let listener = TcpListener::bind(SocketAddr::new(ip, 0))
        .map_err(|error| NemesisError::Setup(format!("no free port on {ip}: {error}")))?;
    Ok(listener
        .local_addr()
        .map_err(|error| NemesisError::Setup(format!("no local address on {ip}: {error}")))?
        .port())
}

fn lazy_channel(url: &str) -> Result<Channel, NemesisError> {
    Ok(Endpoint::from_shared(url.to_owned())
        .map_err(|error| NemesisError::Setup(format!("bad URL {url}: {error}")))?
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true)
        .connect_lazy())
}

/// How the harness reaches a member's client API (the workload builds its
/// own connections with [`client_channel`]).
pub fn client_channel(url: &str) -> Result<Channel, NemesisError> {
    lazy_channel(url)
}

impl Cluster {
    /// Starts `size` members and waits until each answers a linearizable
    /// read. `data_root` is created and removed on drop; member logs go to
    /// `log_dir` (kept). Must be called within a Tokio runtime.
    pub async fn start(
        flavor: Flavor,
        size: usize,
        snapshot_count: u64,
        data_root: PathBuf,
        log_dir: &Path,
    ) -> Result<Cluster, NemesisError> {
        assert!(
            (1..=200).contains(&size),
            "cluster size {size} out of range"
        );
        let serial = CLUSTER_SERIAL.fetch_add(1, Ordering::Relaxed);
        // 127.N: varies with the process and the cluster, avoiding 127.0 and
        // 127.255.
        let block = 10 + ((std::process::id() + serial * 37) % 200) as u8;
        let token = format!("nemesis-{}-{serial}", std::process::id());
        let _ = std::fs::remove_dir_all(&data_root);
        std::fs::create_dir_all(&data_root)?;
        std::fs::create_dir_all(log_dir)?;

        let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let mut network = None;
        let mut proxies = Vec::new();
        let mut addresses = Vec::new(); // (client, peer listen, peer advertised)
        match &flavor {
            Flavor::Raftkv { .. } => {
                let net = Network::new();
                let peer_ip = |i: usize| IpAddr::V4(Ipv4Addr::new(127, block, 1, i as u8 + 1));
                let proxy_ip = |i: usize| IpAddr::V4(Ipv4Addr::new(127, block, 2, i as u8 + 1));
                let senders: HashMap<IpAddr, usize> = (0..size).map(|i| (peer_ip(i), i)).collect();
                for i in 0..size {
                    let peer = SocketAddr::new(peer_ip(i), free_port(peer_ip(i))?);
                    let proxy = PeerProxy::start(
                        SocketAddr::new(proxy_ip(i), 0),
                        peer,
                        i,
                        senders.clone(),
                        &net,
                    )
                    .await
                    .map_err(|error| {
                        NemesisError::Setup(format!("starting the proxy for member {i}: {error}"))
                    })?;
                    addresses.push((
                        format!("http://127.0.0.1:{}", free_port(localhost)?),
                        format!("http://{peer}"),
                        format!("http://{}", proxy.listen),
                    ));
                    proxies.push(proxy);
                }
                network = Some(net);
            }
            Flavor::Etcd { .. } => {
                for _ in 0..size {
                    let peer = format!("http://127.0.0.1:{}", free_port(localhost)?);
                    addresses.push((
                        format!("http://127.0.0.1:{}", free_port(localhost)?),
                        peer.clone(),
                        peer,
                    ));
                }
            }
        }

        let mut members = Vec::with_capacity(size);
        for (i, (client_url, peer_listen_url, peer_advertise_url)) in
            addresses.into_iter().enumerate()
        {
            let name = format!("m{}", i + 1);
            let channel = lazy_channel(&client_url)?;
            members.push(Member {
                data_dir: data_root.join(&name),
                log_path: log_dir.join(format!("{name}.log")),
                name,
                client_url,
                peer_listen_url,
                peer_advertise_url,
                process: Mutex::new(Process {
                    child: None,
                    stopped: false,
                }),
                maintenance: MaintenanceClient::new(channel.clone()),
                kv: KvClient::new(channel),
                id: Mutex::new(None),
            });
        }
        let initial_cluster = members
            .iter()
            .map(|member| format!("{}={}", member.name, member.peer_advertise_url))
            .collect::<Vec<_>>()
            .join(",");
        let cluster = Cluster {
            flavor,
            members,
            initial_cluster,
            token,
            snapshot_count,
            data_root,
            network,
            _proxies: proxies,
        };
        for i in 0..size {
            cluster.spawn(i)?;
        }
        cluster.wait_ready(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    pub fn size(&self) -> usize {
        self.members.len()
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    pub fn flavor(&self) -> &Flavor {
        &self.flavor
    }

    /// The partitioning network; `None` for etcd.
    pub fn network(&self) -> Option<&Network> {
        self.network.as_ref()
    }

    pub fn client_urls(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|member| member.client_url.clone())
            .collect()
    }

    fn command(&self, position: usize) -> Command {
        let member = &self.members[position];
        let data_dir = member.data_dir.display().to_string();
        let snapshot_count = self.snapshot_count.to_string();
        let mut command;
        match &self.flavor {
            Flavor::Raftkv {
                binary,
                unsafe_local_reads,
            } => {
                command = Command::new(binary);
                // Every server flag also reads a RAFTKV_* variable: keep the
                // environment of whoever runs the tests out of the members.
                for (name, _) in std::env::vars_os() {
                    if name.to_string_lossy().starts_with("RAFTKV_") {
                        command.env_remove(name);
                    }
                }
                if *unsafe_local_reads {
                    command.env("RAFTKV_TEST_UNSAFE_LOCAL_READS", "1");
                }
                command
                    .env("RUST_LOG", "warn,server::server=info")
                    .env("NO_COLOR", "1")
                    .arg("server");
            }
            Flavor::Etcd { binary } => {
                command = Command::new(binary);
                for (name, _) in std::env::vars_os() {
                    if name.to_string_lossy().starts_with("ETCD") {
                        command.env_remove(name);
                    }
                }
                command.args([
                    "--initial-cluster-state",
                    "new",
                    "--logger",
                    "zap",
                    "--log-outputs",
                    "stderr",
                ]);
            }
        }
        command
            .args(["--name", &member.name])
            .args(["--data-dir", &data_dir])
            .args(["--listen-client-urls", &member.client_url])
            .args(["--advertise-client-urls", &member.client_url])
            .args(["--listen-peer-urls", &member.peer_listen_url])
            .args(["--initial-advertise-peer-urls", &member.peer_advertise_url])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-token", &self.token])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--snapshot-count", &snapshot_count]);
        command
    }

    /// Starts a member's process (first start or restart from its data).
    fn spawn(&self, position: usize) -> Result<(), NemesisError> {
        let member = &self.members[position];
        let mut process = member.lock();
        if process.child.is_some() {
            return Ok(());
        }
        let log = open_log(&member.log_path)?;
        let log_err = log.try_clone()?;
        let child = self
            .command(position)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|error| {
                NemesisError::Setup(format!(
                    "cannot start {} member {}: {error}",
                    self.flavor.name(),
                    member.name
                ))
            })?;
        process.child = Some(child);
        process.stopped = false;
        Ok(())
    }

    pub fn state(&self, position: usize) -> MemberState {
        let process = self.members[position].lock();
        match (&process.child, process.stopped) {
            (None, _) => MemberState::Down,
            (Some(_), true) => MemberState::Stopped,
            (Some(_), false) => MemberState::Running,
        }
    }

    /// SIGKILL and reap. The process may be stopped: SIGKILL still ends it.
    pub fn kill(&self, position: usize) {
        let mut process = self.members[position].lock();
        if let Some(mut child) = process.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        process.stopped = false;
    }

    /// Restarts a killed member from its data directory.
    pub fn restart(&self, position: usize) -> Result<(), NemesisError> {
        self.spawn(position)
    }

    pub fn stop(&self, position: usize) {
        let mut process = self.members[position].lock();
        if let Some(child) = &process.child {
            signal(child, libc::SIGSTOP);
            process.stopped = true;
        }
    }

    pub fn resume(&self, position: usize) {
        let mut process = self.members[position].lock();
        if let Some(child) = &process.child {
            signal(child, libc::SIGCONT);
        }
        process.stopped = false;
    }

    /// Whether a member's process exited by itself (a crash): reaps it and
    /// returns its status.
    pub fn exited(&self, position: usize) -> Option<std::process::ExitStatus> {
        let mut process = self.members[position].lock();
        let status = process.child.as_mut()?.try_wait().ok()??;
        process.child = None;
        Some(status)
    }

    /// Lifts every fault: heals the network, resumes stopped members and
    /// restarts killed ones.
    pub fn heal_all(&self) -> Result<(), NemesisError> {
        if let Some(network) = &self.network {
            network.heal();
        }
        for position in 0..self.size() {
            match self.state(position) {
                MemberState::Stopped => self.resume(position),
                MemberState::Down => self.restart(position)?,
                MemberState::Running => {}
            }
        }
        Ok(())
    }

    /// Asks every running member for its status (short timeouts) and
    /// returns the position of the leader named in the highest term.
    pub async fn leader(&self) -> Option<usize> {
        let asks = (0..self.size())
            .filter(|&position| self.state(position) == MemberState::Running)
            .map(|position| async move {
                let mut client = self.members[position].maintenance.clone();
                let answer = tokio::time::timeout(
                    Duration::from_millis(500),
                    client.status(pb::StatusRequest {}),
                )
                .await;
                match answer {
                    Ok(Ok(response)) => Some((position, response.into_inner())),
                    _ => None,
                }
            });
        let answers: Vec<_> = futures_util::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect();
        for (position, status) in &answers {
            if let Some(header) = &status.header {
                *self.members[*position]
                    .id
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(header.member_id);
            }
        }
        let (_, best) = answers
            .iter()
            .filter(|(_, status)| status.leader != 0)
            .max_by_key(|(_, status)| status.raft_term)?;
        self.position_of(best.leader)
    }

    fn position_of(&self, id: u64) -> Option<usize> {
        self.members.iter().position(|member| {
            *member
                .id
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                == Some(id)
        })
    }

    /// One linearizable read of a harness-only key through `position`.
    async fn probe(&self, position: usize) -> bool {
        let mut client = self.members[position].kv.clone();
        let request = pb::RangeRequest {
            key: Bytes::from_static(b"nemesis-probe"),
            ..Default::default()
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(1), client.range(request)).await,
            Ok(Ok(_))
        )
    }

    /// Waits until every member answers a linearizable read (so there is a
    /// leader every member can reach) and the harness knows the member ids.
    pub async fn wait_ready(&self, within: Duration) -> Result<(), NemesisError> {
        let deadline = Instant::now() + within;
        let mut ready = vec![false; self.size()];
        loop {
            for (position, ready) in ready.iter_mut().enumerate() {
                if !*ready {
                    *ready = self.probe(position).await;
                }
                if let Some(status) = self.exited(position) {
                    return Err(NemesisError::Recovery(format!(
                        "member {} exited by itself ({status}); see {}",
                        self.members[position].name,
                        self.members[position].log_path.display()
                    )));
                }
            }
            if ready.iter().all(|&r| r) && self.leader().await.is_some() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let waiting: Vec<&str> = ready
                    .iter()
                    .zip(&self.members)
                    .filter(|(ready, _)| !**ready)
                    .map(|(_, member)| member.name.as_str())
                    .collect();
                return Err(NemesisError::Recovery(format!(
                    "the {} cluster was not ready within {within:?} (not answering reads: {waiting:?})",
                    self.flavor.name()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for position in 0..self.size() {
            self.kill(position);
        }
        let _ = std::fs::remove_dir_all(&self.data_root);
    }
}

fn open_log(path: &Path) -> Result<File, NemesisError> {
    Ok(OpenOptions::new().create(true).append(true).open(path)?)
}

fn signal(child: &Child, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    // SAFETY: kill(2) with a pid we spawned and have not reaped (we hold
    // its Child, whose wait() has not returned), so it cannot name another
    // process.
    unsafe {
        libc::kill(pid, signal);
    }
}
