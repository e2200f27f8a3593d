//! Randomized simulation over many seeds.
//!
//! `RAFTKV_SIM_SEEDS=N` runs N seeds (default 400); `RAFTKV_SIM_SEED=S`
//! replays one; `RAFTKV_SIM_FIRST_SEED` shifts the range.

use raft_sim::{run_simulation, SimulationOptions};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
}

/// `RAFTKV_SIM_TRACE=info` (or `debug`) prints the Raft nodes' log lines,
/// for replaying one seed.
fn init_trace() {
    if let Ok(filter) = std::env::var("RAFTKV_SIM_TRACE") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .without_time()
            .try_init();
    }
}

#[test]
fn random_simulation() {
    init_trace();
    let seeds: Vec<u64> = match env_u64("RAFTKV_SIM_SEED") {
        Some(seed) => vec![seed],
        None => {
            let first = env_u64("RAFTKV_SIM_FIRST_SEED").unwrap_or(1);
            let count = env_u64("RAFTKV_SIM_SEEDS").unwrap_or(400);
            (first..first + count).collect()
        }
    };
    let mut totals = raft_sim::SimulationStats::default();
    let mut slowest_liveness_seed = 0;
    for &seed in &seeds {
        // Alternate cluster sizes so both 3- and 5-voter quorums are covered.
        let options = SimulationOptions {
            voters: if seed % 2 == 0 { 3 } else { 5 },
            // Every third seed sends one entry per append, so acknowledgements
            // of consecutive entries arrive separately.
            max_message_bytes: if seed % 3 == 0 { 1 } else { 64 * 1024 },
            ..SimulationOptions::default()
        };
        match run_simulation(seed, &options) {
            Ok(stats) => {
                totals.ticks += stats.ticks;
                totals.committed_index += stats.committed_index;
                totals.crashes += stats.crashes;
                totals.partitions += stats.partitions;
                totals.membership_changes += stats.membership_changes;
                totals.snapshots += stats.snapshots;
                totals.reads_answered += stats.reads_answered;
                if stats.liveness_ticks > totals.liveness_ticks {
                    totals.liveness_ticks = stats.liveness_ticks;
                    slowest_liveness_seed = seed;
                }
            }
            Err(failure) => panic!("{failure}"),
        }
    }
    println!(
        "{} seeds, zero violations: {} ticks, {} entries committed, {} crashes, {} partition changes, \
         {} membership changes, {} snapshots, {} reads answered, worst liveness {} ticks (seed {})",
        seeds.len(),
        totals.ticks,
        totals.committed_index,
        totals.crashes,
        totals.partitions,
        totals.membership_changes,
        totals.snapshots,
        totals.reads_answered,
        totals.liveness_ticks,
        slowest_liveness_seed
    );
}
