//! The nemesis: a seeded schedule of faults injected into a running
//! cluster while the clients work — one fault at a time, held for a few
//! seconds, then healed, then a quiet spell.
//!
//! Faults: SIGKILL and restart (a random member, the leader, or a
//! majority), SIGSTOP and SIGCONT (a random member or the leader), and
//! network partitions through the peer proxies: majority/minority halves,
//! the leader isolated in a minority, a bridge node that both sides still
//! see, and one-way blocks. Partitions pick cut or blackhole at random.
//!
//! It owns the fault log and counts; it must never leave a fault in place
//! when it returns (the caller still heals everything afterwards, as a
//! second line of defence) and never touch a process the cluster does not
//! own.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::cluster::{Cluster, MemberState};
use crate::proxy::{BlockMode, Rules};
use crate::rng::Rng;
use crate::workload::{Recorder, Route, Routing};
use crate::NemesisError;

/// Which faults a run draws from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// Process faults and partitions.
    Mixed,
    /// Partitions only.
    Partitions,
    /// Process faults only (what applies to etcd).
    Process,
    /// The teeth scenario: the leader alone in a minority, reads sent only
    /// to it and writes only to the others, a few seconds at a time.
    IsolatedLeaderReads,
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::Mixed => "mixed",
            Profile::Partitions => "partitions",
            Profile::Process => "process",
            Profile::IsolatedLeaderReads => "isolated-leader-reads",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Kill,
    KillLeader,
    KillMajority,
    Stop,
    StopLeader,
    PartitionHalves,
    PartitionLeader,
    PartitionBridge,
    PartitionOneWay,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::KillLeader => "kill-leader",
            Fault::KillMajority => "kill-majority",
            Fault::Stop => "sigstop",
            Fault::StopLeader => "sigstop-leader",
            Fault::PartitionHalves => "partition-majority-minority",
            Fault::PartitionLeader => "partition-leader-minority",
            Fault::PartitionBridge => "partition-bridge",
            Fault::PartitionOneWay => "partition-one-way",
        }
    }
}

/// Fault kinds with weights.
fn menu(profile: Profile) -> &'static [(Fault, u64)] {
    const PROCESS: &[(Fault, u64)] = &[
        (Fault::Kill, 3),
        (Fault::KillLeader, 3),
        (Fault::KillMajority, 1),
        (Fault::Stop, 2),
        (Fault::StopLeader, 2),
    ];
    const PARTITIONS: &[(Fault, u64)] = &[
        (Fault::PartitionHalves, 3),
        (Fault::PartitionLeader, 3),
        (Fault::PartitionBridge, 2),
        (Fault::PartitionOneWay, 2),
    ];
    const MIXED: &[(Fault, u64)] = &[
        (Fault::Kill, 2),
        (Fault::KillLeader, 2),
        (Fault::KillMajority, 1),
        (Fault::Stop, 1),
        (Fault::StopLeader, 2),
        (Fault::PartitionHalves, 2),
        (Fault::PartitionLeader, 2),
        (Fault::PartitionBridge, 1),
        (Fault::PartitionOneWay, 1),
    ];
    const TEETH: &[(Fault, u64)] = &[(Fault::PartitionLeader, 1)];
    match profile {
        Profile::Mixed => MIXED,
        Profile::Partitions => PARTITIONS,
        Profile::Process => PROCESS,
        Profile::IsolatedLeaderReads => TEETH,
    }
}

fn choose(rng: &mut Rng, menu: &[(Fault, u64)]) -> Fault {
    let total: u64 = menu.iter().map(|(_, weight)| weight).sum();
    let mut roll = rng.below(total);
    for &(fault, weight) in menu {
        if roll < weight {
            return fault;
        }
        roll -= weight;
    }
    menu[0].0
}

/// What the nemesis did: counts by fault kind and a timeline.
#[derive(Clone, Debug, Default)]
pub struct FaultLog {
    pub counts: BTreeMap<String, u64>,
    /// (nanoseconds on the recorder's clock, what happened)
    pub events: Vec<(u64, String)>,
}

impl FaultLog {
    pub(crate) fn event(&mut self, recorder: &Recorder, text: String) {
        eprintln!("nemesis: [{:>8.3}s] {text}", recorder.now() as f64 / 1e9);
        self.events.push((recorder.now(), text));
    }

    fn count(&mut self, name: &str) {
        *self.counts.entry(name.to_owned()).or_default() += 1;
    }

    /// The timeline as text, times in seconds since the recorder's origin.
    pub fn timeline(&self) -> String {
        self.events
            .iter()
            .map(|(at, text)| format!("{:>10.3}s  {text}\n", *at as f64 / 1e9))
            .collect()
    }
}

/// Sleeps for `duration`, but not past `deadline`.
async fn sleep_until_or(duration: Duration, deadline: Instant) {
    let until = (Instant::now() + duration).min(deadline);
    tokio::time::sleep_until(until.into()).await;
}

pub struct Nemesis<'a> {
    pub cluster: &'a Cluster,
    pub routing: &'a Routing,
    pub recorder: &'a Recorder,
    pub profile: Profile,
    pub rng: Rng,
    pub log: FaultLog,
}

impl Nemesis<'_> {
    /// Injects faults until `deadline`, healing each before the next.
    pub async fn run(&mut self, deadline: Instant) -> Result<(), NemesisError> {
        let menu = menu(self.profile);
        let partitions = self.cluster.flavor().supports_partitions();
        loop {
            let quiet = match self.profile {
                Profile::IsolatedLeaderReads => {
                    self.route_reads_to_leader().await;
                    self.rng.millis(1000, 1500)
                }
                _ => self.rng.millis(800, 2500),
            };
            sleep_until_or(quiet, deadline).await;
            // A fault needs time to matter; do not start one at the end.
            if Instant::now() + Duration::from_secs(1) >= deadline {
                return Ok(());
            }
            let fault = choose(&mut self.rng, menu);
            let is_partition = matches!(
                fault,
                Fault::PartitionHalves
                    | Fault::PartitionLeader
                    | Fault::PartitionBridge
                    | Fault::PartitionOneWay
            );
            if is_partition && !partitions {
                return Err(NemesisError::Setup(format!(
                    "profile {} needs partitions, which {} does not support here",
                    self.profile.name(),
                    self.cluster.flavor().name()
                )));
            }
            let hold = match self.profile {
                Profile::IsolatedLeaderReads => self.rng.millis(2500, 3500),
                _ => self.rng.millis(1000, 4000),
            };
            self.inject(fault, hold, deadline).await?;
            self.check_crashes()?;
        }
    }

    /// Call before the clients start: sets up the profile's routing.
    pub async fn prepare(&mut self) {
        if self.profile == Profile::IsolatedLeaderReads {
            self.route_reads_to_leader().await;
        }
    }

    /// Between partitions of the teeth scenario, reads go to the leader
    /// only, whose local state holds every acknowledged write even without
    /// ReadIndex: a violation the teeth run finds is then the partition's
    /// doing, not a lagging follower's.
    async fn route_reads_to_leader(&mut self) {
        match self.cluster.leader().await {
            Some(leader) => {
                self.routing.set(Route {
                    reads: vec![leader],
                    writes: Vec::new(),
                });
                self.log.event(
                    self.recorder,
                    format!("reads -> {} (the leader)", self.name(leader)),
                );
            }
            None => self.routing.reset(),
        }
    }

    /// A member that exited without being killed has crashed: that is a
    /// finding, not a fault we injected.
    fn check_crashes(&mut self) -> Result<(), NemesisError> {
        for position in 0..self.cluster.size() {
            if let Some(status) = self.cluster.exited(position) {
                let member = &self.cluster.members()[position];
                return Err(NemesisError::Recovery(format!(
                    "member {} exited by itself ({status}); see {}",
                    member.name,
                    member.log_path().display()
                )));
            }
        }
        Ok(())
    }

    async fn leader_or_random(&mut self) -> (usize, &'static str) {
        match self.cluster.leader().await {
            Some(leader) => (leader, "leader"),
            None => (
                self.rng.index(self.cluster.size()),
                "no leader known: random",
            ),
        }
    }

    fn name(&self, position: usize) -> &str {
        &self.cluster.members()[position].name
    }

    fn names(&self, positions: &[usize]) -> String {
        let names: Vec<&str> = positions.iter().map(|&p| self.name(p)).collect();
        format!("{{{}}}", names.join(","))
    }

    async fn inject(
        &mut self,
        fault: Fault,
        hold: Duration,
        deadline: Instant,
    ) -> Result<(), NemesisError> {
        let size = self.cluster.size();
        self.log.count(fault.name());
        match fault {
            Fault::Kill | Fault::KillLeader | Fault::KillMajority => {
                let (victims, how): (Vec<usize>, &str) = match fault {
                    Fault::Kill => (vec![self.rng.index(size)], "random"),
                    Fault::KillLeader => {
                        let (leader, how) = self.leader_or_random().await;
                        (vec![leader], how)
                    }
                    _ => {
                        let mut all: Vec<usize> = (0..size).collect();
                        self.rng.shuffle(&mut all);
                        all.truncate(size / 2 + 1);
                        (all, "a majority")
                    }
                };
                self.log.event(
                    self.recorder,
                    format!("{}: SIGKILL {} ({how})", fault.name(), self.names(&victims)),
                );
                for &victim in &victims {
                    self.cluster.kill(victim);
                }
                sleep_until_or(hold, deadline).await;
                for &victim in &victims {
                    self.cluster.restart(victim)?;
                }
                self.log
                    .event(self.recorder, format!("restart {}", self.names(&victims)));
            }
            Fault::Stop | Fault::StopLeader => {
                let (victim, how) = if fault == Fault::Stop {
                    (self.rng.index(size), "random")
                } else {
                    self.leader_or_random().await
                };
                if self.cluster.state(victim) != MemberState::Running {
                    return Ok(());
                }
                self.log.event(
                    self.recorder,
                    format!("{}: SIGSTOP {} ({how})", fault.name(), self.name(victim)),
                );
                self.cluster.stop(victim);
                sleep_until_or(hold, deadline).await;
                self.cluster.resume(victim);
                self.log
                    .event(self.recorder, format!("SIGCONT {}", self.name(victim)));
            }
            Fault::PartitionHalves
            | Fault::PartitionLeader
            | Fault::PartitionBridge
            | Fault::PartitionOneWay => {
                let mode = if self.rng.percent(50) {
                    BlockMode::Blackhole
                } else {
                    BlockMode::Cut
                };
                self.log.count(&format!("partition-mode-{}", mode.name()));
                let (rules, text) = self.partition(fault, mode).await;
                let Some(network) = self.cluster.network() else {
                    return Ok(());
                };
                self.log.event(
                    self.recorder,
                    format!("{}: {text} ({})", fault.name(), mode.name()),
                );
                network.set(rules);
                sleep_until_or(hold, deadline).await;
                // Re-route before healing: in the teeth scenario reads move to
                // the majority's new leader before the old one can catch up.
                if self.profile == Profile::IsolatedLeaderReads {
                    self.route_reads_to_leader().await;
                } else {
                    self.routing.reset();
                }
                network.heal();
                self.log.event(self.recorder, "heal network".to_owned());
            }
        }
        Ok(())
    }

    /// The rules for a partition fault, and a description. May narrow the
    /// clients' routing (reads to an isolated leader).
    async fn partition(&mut self, fault: Fault, mode: BlockMode) -> (Rules, String) {
        let size = self.cluster.size();
        let mut all: Vec<usize> = (0..size).collect();
        self.rng.shuffle(&mut all);
        match fault {
            Fault::PartitionHalves => {
                let minority = 1 + self.rng.index((size - 1) / 2);
                let (small, large) = all.split_at(minority);
                (
                    Rules::split(small, large, mode),
                    format!("{} | {}", self.names(small), self.names(large)),
                )
            }
            Fault::PartitionLeader => {
                let (leader, how) = self.leader_or_random().await;
                all.retain(|&p| p != leader);
                let extra = if self.profile == Profile::IsolatedLeaderReads {
                    0
                } else {
                    self.rng.index((size - 1) / 2)
                };
                let mut small = vec![leader];
                small.extend(all.drain(..extra));
                // Half the time (always in the teeth scenario), point the
                // clients' reads at the old leader and their writes at the
                // majority: a member serving stale reads is caught at once.
                let pin = self.profile == Profile::IsolatedLeaderReads || self.rng.percent(50);
                let mut text = format!("{} | {} ({how})", self.names(&small), self.names(&all));
                if pin {
                    self.routing.set(Route {
                        reads: vec![leader],
                        writes: all.clone(),
                    });
                    text.push_str(&format!(
                        "; reads -> {}, writes -> {}",
                        self.name(leader),
                        self.names(&all)
                    ));
                }
                (Rules::split(&small, &all, mode), text)
            }
            Fault::PartitionBridge => {
                // Two sides that cannot see each other; the bridge sees both.
                let bridge = all.remove(0);
                let left = 1 + self.rng.index(all.len().saturating_sub(1).max(1));
                let (a, b) = all.split_at(left.min(all.len()));
                (
                    Rules::split(a, b, mode),
                    format!(
                        "{} | {} bridged by {}",
                        self.names(a),
                        self.names(b),
                        self.name(bridge)
                    ),
                )
            }
            _ => {
                // Some members' outbound traffic to the others is lost; they
                // still hear everything. Often the leader: its followers stop
                // hearing from it while it keeps hearing them.
                let (leader, _) = self.leader_or_random().await;
                let senders: Vec<usize> = if self.rng.percent(50) {
                    vec![leader]
                } else {
                    let count = 1 + self.rng.index(size - 1);
                    all[..count].to_vec()
                };
                let receivers: Vec<usize> = (0..size).filter(|p| !senders.contains(p)).collect();
                (
                    Rules::one_way(&senders, &receivers, mode),
                    format!("{} -/-> {}", self.names(&senders), self.names(&receivers)),
                )
            }
        }
    }
}
