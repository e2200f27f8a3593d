//! Crashes on a file layer that loses every unsynced write (`CrashFs`):
//! after each crash the log must recover a state the writer passed through
//! at or after the last acknowledged batch: nothing acknowledged is lost and
//! nothing appears that was not written. Then the teeth: with one of the
//! syncs the design relies on switched off, the same check must fail.
//!
//! Seeds: `RAFTKV_WAL_CRASH_SEEDS` (default 300) runs seeds 1..=N;
//! `RAFTKV_WAL_CRASH_SEED` replays one. Debug builds only: the switches
//! that remove a sync exist only there.
#![cfg(debug_assertions)]

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{metadata, ModelLog};
use raft::{Entry, HardState};
use wal::crash_fs::CrashFs;
use wal::{RecoveredLog, SnapshotMarkerKind, Wal, WalFaults, WalOptions, WriteBatch};

/// The Raft crate's SplitMix64, with the one helper these tests need.
struct Random(raft::rng::SplitMix64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn below(&mut self, bound: u64) -> u64 {
        self.0.range(0, bound)
    }
}

fn options(fs: &CrashFs, faults: WalFaults) -> WalOptions {
    WalOptions {
        segment_bytes: 700,
        fs: Arc::new(fs.clone()),
        faults,
    }
}

fn matches(model: &ModelLog, recovered: &RecoveredLog) -> bool {
    model.snapshot == recovered.snapshot
        && model.hard_state == recovered.hard_state
        && model.entries == recovered.entries
}

fn from_recovered(recovered: &RecoveredLog) -> ModelLog {
    let term = recovered
        .entries
        .iter()
        .map(|entry| entry.term)
        .chain(recovered.snapshot.iter().map(|snapshot| snapshot.term))
        .chain([recovered.hard_state.term])
        .max()
        .unwrap_or(0);
    ModelLog {
        snapshot: recovered.snapshot.clone(),
        entries: recovered.entries.clone(),
        hard_state: recovered.hard_state,
        term,
    }
}

/// Runs three lives of the log with a crash ending each; returns a
/// description of the first violation.
fn scenario(seed: u64, faults: WalFaults) -> Result<(), String> {
    let mut random = Random(raft::rng::SplitMix64::new(seed));
    let dir = Path::new("/wal");
    let mut fs = CrashFs::new();
    let (mut log, recovered) =
        Wal::open(dir, options(&fs, faults)).map_err(|error| format!("open: {error}"))?;
    let mut model = from_recovered(&recovered);
    for life in 0..3 {
        // Every state the log passes through, record by record, from the
        // last acknowledged one on: the recovered log must be one of them.
        let mut states = vec![model.clone()];
        let mut acked = 0usize;
        let mut pending = Vec::new();
        let steps = 10 + random.below(60);
        for _ in 0..steps {
            let choice = random.below(10);
            let mut snapshot = None;
            let mut entries: Vec<Entry> = Vec::new();
            let mut hard_state = None;
            if choice < 6 {
                let back = if random.below(4) == 0 {
                    random.below(3)
                } else {
                    0
                };
                entries = model.make_append(
                    back,
                    1 + random.below(4) as usize,
                    random.below(5) == 0,
                    random.below(200) as usize,
                );
                // make_append applied them at once; undo to replay per record.
                model = states.last().cloned().unwrap_or_default();
                model.term = entries[0].term;
            } else if choice < 8 {
                let index = model
                    .last_index()
                    .saturating_sub(random.below(4))
                    .max(model.snapshot_index());
                if let (Some(term), true) = (model.term_at(index), index > 0) {
                    snapshot = Some((metadata(index, term), SnapshotMarkerKind::Compacted));
                }
            } else if choice < 9 {
                model.term += 1;
                snapshot = Some((
                    metadata(model.last_index() + random.below(3), model.term),
                    SnapshotMarkerKind::Installed,
                ));
            }
            if random.below(2) == 0 {
                hard_state = Some(HardState {
                    term: model.term,
                    vote: 1 + random.below(3),
                    commit: model.last_index(),
                });
            }
            // Model the batch record by record.
            if let Some((metadata, kind)) = &snapshot {
                model.apply_batch(&WriteBatch {
                    snapshot: Some((metadata, *kind)),
                    ..WriteBatch::default()
                });
                states.push(model.clone());
            }
            for entry in &entries {
                model.apply_entries(std::slice::from_ref(entry));
                states.push(model.clone());
            }
            if let Some(hard_state) = &hard_state {
                model.hard_state = *hard_state;
                states.push(model.clone());
            }
            let batch = WriteBatch {
                snapshot: snapshot.as_ref().map(|(metadata, kind)| (metadata, *kind)),
                entries: &entries,
                hard_state: hard_state.as_ref(),
            };
            if batch.is_empty() {
                continue;
            }
            let ticket = log
                .append(batch)
                .map_err(|error| format!("append: {error}"))?;
            pending.push((ticket, states.len() - 1));
            if random.below(3) == 0 {
                if let Some(&(ticket, state)) = pending.last() {
                    log.wait(ticket).map_err(|error| format!("wait: {error}"))?;
                    acked = state;
                    pending.clear();
                }
            }
            if random.below(8) == 0 {
                log.purge().map_err(|error| format!("purge: {error}"))?;
            }
        }
        // Crash with the writer possibly mid-group, keeping a random part of
        // any unsynced append.
        fs = fs.crash(Some(random.next()));
        drop(log);
        let (reopened, recovered) = Wal::open(dir, options(&fs, faults))
            .map_err(|error| format!("seed {seed} life {life}: reopen failed: {error}"))?;
        if !states[acked..]
            .iter()
            .any(|state| matches(state, &recovered))
        {
            let last_acked = &states[acked];
            return Err(format!(
                "seed {seed} life {life}: recovered log (snapshot {:?}, last {}, hard state {:?}) \
                 is not a state at or after the last acknowledged one (snapshot {:?}, last {}, hard state {:?})",
                recovered.snapshot.as_ref().map(|s| s.index),
                recovered.last_index(),
                recovered.hard_state,
                last_acked.snapshot.as_ref().map(|s| s.index),
                last_acked.last_index(),
                last_acked.hard_state,
            ));
        }
        model = from_recovered(&recovered);
        log = reopened;
    }
    Ok(())
}

fn seeds() -> Vec<u64> {
    if let Some(seed) = std::env::var("RAFTKV_WAL_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return vec![seed];
    }
    let count = std::env::var("RAFTKV_WAL_CRASH_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    (1..=count).collect()
}

#[test]
fn nothing_acknowledged_is_lost_across_crashes() {
    for seed in seeds() {
        if let Err(violation) = scenario(seed, WalFaults::default()) {
            panic!("{violation}\nreplay: RAFTKV_WAL_CRASH_SEED={seed} cargo test -p raftkv-wal --test crash_fs");
        }
    }
}

fn teeth(faults: WalFaults) -> usize {
    let failures: Vec<String> = (1..=200)
        .filter_map(|seed| scenario(seed, faults).err())
        .collect();
    if let Some(first) = failures.first() {
        println!("{} of 200 seeds caught; first: {first}", failures.len());
    }
    failures.len()
}

#[test]
fn teeth_without_the_data_sync_acknowledged_entries_are_lost() {
    let caught = teeth(WalFaults {
        skip_data_sync: true,
        ..WalFaults::default()
    });
    assert!(caught > 0, "skipping fdatasync went unnoticed in 200 seeds");
}

#[test]
fn teeth_without_the_directory_sync_a_new_segment_is_lost() {
    let caught = teeth(WalFaults {
        skip_dir_sync_after_create: true,
        ..WalFaults::default()
    });
    assert!(
        caught > 0,
        "skipping the directory fsync went unnoticed in 200 seeds"
    );
}

#[test]
fn a_failed_fsync_fails_the_batch_and_every_later_one() {
    let fs = CrashFs::new();
    let dir = Path::new("/wal");
    let (log, _) = Wal::open(dir, options(&fs, WalFaults::default())).expect("open");
    let mut model = ModelLog::default();
    let entries = model.make_append(0, 2, true, 10);
    log.write(WriteBatch {
        entries: &entries,
        ..WriteBatch::default()
    })
    .expect("first batch");
    fs.fail_syncs_after(0);
    let entries = model.make_append(0, 2, false, 10);
    let error = log
        .write(WriteBatch {
            entries: &entries,
            ..WriteBatch::default()
        })
        .expect_err("a batch whose sync failed must not be acknowledged");
    assert!(
        error.to_string().contains("injected fsync failure"),
        "{error}"
    );
    let entries = model.make_append(0, 1, false, 10);
    let error = log
        .write(WriteBatch {
            entries: &entries,
            ..WriteBatch::default()
        })
        .expect_err("nothing is accepted after a failed sync");
    assert!(error.to_string().contains("failed earlier"), "{error}");
}

#[test]
fn an_unsynced_hard_state_is_durable_only_with_the_next_write() {
    let fs = CrashFs::new();
    let dir = Path::new("/wal");
    let (log, _) = Wal::open(dir, options(&fs, WalFaults::default())).expect("open");
    let mut model = ModelLog::default();
    let entries = model.make_append(0, 3, true, 10);
    let synced = HardState {
        term: 1,
        vote: 1,
        commit: 1,
    };
    log.write(WriteBatch {
        entries: &entries,
        hard_state: Some(&synced),
        ..WriteBatch::default()
    })
    .expect("entries");
    let commit_only = HardState {
        commit: 3,
        ..synced
    };
    log.append_unsynced(WriteBatch {
        hard_state: Some(&commit_only),
        ..WriteBatch::default()
    })
    .expect("unsynced");

    // Nobody asked for a write: a crash loses it, and only it.
    let crashed = fs.crash(None);
    drop(log);
    let (log, recovered) = Wal::open(dir, options(&crashed, WalFaults::default())).expect("reopen");
    assert_eq!(recovered.hard_state, synced);
    assert_eq!(recovered.entries.len(), 3);

    // The next write carries it to disk with its own sync.
    log.append_unsynced(WriteBatch {
        hard_state: Some(&commit_only),
        ..WriteBatch::default()
    })
    .expect("unsynced");
    let more = model.make_append(0, 1, false, 10);
    log.write(WriteBatch {
        entries: &more,
        ..WriteBatch::default()
    })
    .expect("next write");
    let crashed_again = crashed.crash(None);
    drop(log);
    let (_, recovered) =
        Wal::open(dir, options(&crashed_again, WalFaults::default())).expect("reopen again");
    assert_eq!(recovered.hard_state, commit_only);
    assert_eq!(recovered.entries.len(), 4);
}

/// A new segment's prelude is the only durable copy of the hard state and
/// snapshot marker once the segments before it are purged; until its first
/// sync it must not count for purging. Here the writer is held inside that
/// sync while a purge runs, and the machine then crashes.
#[test]
fn a_purge_never_leaves_only_an_unsynced_segment() {
    let fs = CrashFs::new();
    let dir = Path::new("/wal");
    // Every write starts a new segment.
    let options = |fs: &CrashFs| WalOptions {
        segment_bytes: 1,
        ..options(fs, WalFaults::default())
    };
    let (log, _) = Wal::open(dir, options(&fs)).expect("open");
    let mut model = ModelLog {
        hard_state: HardState {
            term: 3,
            vote: 2,
            commit: 0,
        },
        ..ModelLog::default()
    };
    for _ in 0..3 {
        let entries = model.make_append(0, 2, false, 100);
        log.write(WriteBatch {
            entries: &entries,
            hard_state: Some(&model.hard_state),
            ..WriteBatch::default()
        })
        .expect("entries");
    }
    let snapshot = metadata(model.last_index(), model.term);
    let marker = WriteBatch {
        snapshot: Some((&snapshot, SnapshotMarkerKind::Compacted)),
        ..WriteBatch::default()
    };
    log.write(marker).expect("snapshot marker");
    model.apply_batch(&marker);
    log.purge().expect("purge");
    assert_eq!(log.segments().len(), 1, "only the marker's segment is left");

    // The next write starts a new segment: the old one's cut is synced
    // (file sync 1), the new one's prelude and the write wait in sync 2.
    let hold = fs.hold_file_sync(1);
    let log = Arc::new(log);
    let writing = log.clone();
    let more = model.clone().make_append(0, 1, false, 100);
    let writer = std::thread::spawn(move || {
        let _ = writing.write(WriteBatch {
            entries: &more,
            ..WriteBatch::default()
        });
    });
    assert!(
        hold.wait_reached(std::time::Duration::from_secs(10)),
        "the write reaches the new segment's first sync"
    );
    log.purge()
        .expect("purge while the new segment is unsynced");
    let crashed = fs.crash(None);
    hold.release();
    writer.join().expect("writer thread");
    drop(log);

    let (_, recovered) = Wal::open(dir, options(&crashed)).expect("reopen");
    assert_eq!(recovered.hard_state, model.hard_state, "the vote survives");
    assert_eq!(recovered.snapshot, model.snapshot);
}
