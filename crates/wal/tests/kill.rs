//! SIGKILL at random moments: a child process appends from several threads
//! (group commit under load), compacts and purges, and prints each batch's
//! last index once `wait` has acknowledged it. The parent kills it with
//! SIGKILL after a random delay (sometimes during the child's own recovery),
//! reopens the log and checks that every acknowledged entry is there, that
//! the log is contiguous, and that each entry holds exactly what was written.
//!
//! `RAFTKV_WAL_KILL_POINTS` (default 60) sets how many kills;
//! `RAFTKV_WAL_KILL_SEED` the seed of the delays.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use raft::{ConfState, Entry, HardState, SnapshotMetadata};
use wal::{SnapshotMarkerKind, Wal, WalOptions, WriteBatch};

const CHILD_ENV: &str = "RAFTKV_WAL_KILL_CHILD_DIR";
const WRITERS: usize = 8;

fn options() -> WalOptions {
    WalOptions {
        segment_bytes: 128 * 1024,
        ..WalOptions::default()
    }
}

/// What entry `index` of `term` holds: the parent recomputes it to check.
fn payload(index: u64, term: u64) -> Bytes {
    let mut data = Vec::with_capacity(40);
    for round in 0..5u64 {
        data.extend_from_slice(&(index.wrapping_mul(0x9E37_79B9) ^ term ^ round).to_le_bytes());
    }
    Bytes::from(data)
}

/// The child: runs until killed.
fn child(dir: &Path) {
    let (log, recovered) = match Wal::open(dir, options()) {
        Ok(opened) => opened,
        Err(error) => {
            println!("error {error}");
            return;
        }
    };
    let term = recovered.hard_state.term + 1;
    let resumed_at = recovered.last_index() + 1;
    // Terms of the entries found at open, for compaction markers that land
    // in an earlier life's entries.
    let recovered_terms: Arc<Vec<(u64, u64)>> = Arc::new(
        recovered
            .entries
            .iter()
            .map(|entry| (entry.index, entry.term))
            .collect(),
    );
    let log = Arc::new(log);
    // (next index, index of the last compaction marker)
    let next = Arc::new(Mutex::new((
        recovered.last_index() + 1,
        recovered.snapshot_index(),
    )));
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let threads: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let (log, next, out) = (log.clone(), next.clone(), out.clone());
            let recovered_terms = recovered_terms.clone();
            std::thread::spawn(move || loop {
                let (ticket, last, compact) = {
                    let mut guard = next.lock().expect("lock");
                    let first = guard.0;
                    let count = 1 + (first + writer as u64) % 4;
                    let entries: Vec<Entry> = (first..first + count)
                        .map(|index| Entry::normal(term, index, payload(index, term)))
                        .collect();
                    let last = first + count - 1;
                    let hard_state = HardState {
                        term,
                        vote: 1,
                        commit: first - 1,
                    };
                    let ticket = log
                        .append(WriteBatch {
                            entries: &entries,
                            hard_state: Some(&hard_state),
                            ..WriteBatch::default()
                        })
                        .expect("append");
                    guard.0 = last + 1;
                    // Every ~3000 entries compact to well below the end.
                    let compact = (last > guard.1 + 3000).then(|| {
                        guard.1 = last - 500;
                        guard.1
                    });
                    (ticket, last, compact)
                };
                log.wait(ticket).expect("wait");
                {
                    let mut out = out.lock().expect("lock");
                    let _ = writeln!(out, "ack {last}");
                    let _ = out.flush();
                }
                if let Some(index) = compact {
                    let marker_term = if index >= resumed_at {
                        Some(term)
                    } else {
                        recovered_terms
                            .iter()
                            .find(|(at, _)| *at == index)
                            .map(|(_, term)| *term)
                    };
                    if let Some(marker_term) = marker_term {
                        let snapshot = SnapshotMetadata {
                            index,
                            term: marker_term,
                            conf_state: ConfState::with_voters([1]),
                        };
                        log.write(WriteBatch {
                            snapshot: Some((&snapshot, SnapshotMarkerKind::Compacted)),
                            ..WriteBatch::default()
                        })
                        .expect("compact");
                        log.purge().expect("purge");
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        let _ = thread.join();
    }
}

#[test]
fn child_writer() {
    // Only does something when started by `killed_at_random_moments`.
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(Path::new(&dir));
    }
}

#[test]
fn killed_at_random_moments_nothing_acknowledged_is_lost() {
    let points: u64 = std::env::var("RAFTKV_WAL_KILL_POINTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let seed: u64 = std::env::var("RAFTKV_WAL_KILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let mut random = raft::rng::SplitMix64::new(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    let mut total_acked = 0u64;
    let mut previous_acked = 0u64;
    for point in 0..points {
        let mut child = Command::new(&exe)
            .args(["--exact", "child_writer", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        let reader = std::thread::spawn(move || {
            let mut acked = 0u64;
            let mut error = None;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(index) = line
                    .strip_prefix("ack ")
                    .and_then(|v| v.parse::<u64>().ok())
                {
                    acked = acked.max(index);
                } else if line.starts_with("error ") {
                    error = Some(line);
                }
            }
            (acked, error)
        });
        let delay = Duration::from_micros(2_000 + random.next_u64() % 60_000);
        std::thread::sleep(delay); // the kill moment itself is what is random
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        let (acked, child_error) = reader.join().expect("reader");
        if let Some(error) = child_error {
            panic!("kill point {point}: the child could not open the log: {error}");
        }

        let (log, recovered) = Wal::open(dir.path(), options()).unwrap_or_else(|error| {
            panic!("kill point {point} (seed {seed}): reopen failed: {error}")
        });
        let last = recovered.last_index();
        assert!(
            last >= acked.max(previous_acked),
            "kill point {point} (seed {seed}): acknowledged up to {} but the log ends at {last}",
            acked.max(previous_acked)
        );
        let mut previous_term = 0;
        for (expected_index, entry) in (recovered.snapshot_index() + 1..).zip(&recovered.entries) {
            assert_eq!(entry.index, expected_index, "kill point {point}: gap");
            assert!(
                entry.term >= previous_term,
                "kill point {point}: term went down"
            );
            assert_eq!(
                entry.data,
                payload(entry.index, entry.term),
                "kill point {point}: entry {} holds what was never written",
                entry.index
            );
            previous_term = entry.term;
        }
        total_acked += acked.saturating_sub(previous_acked);
        previous_acked = previous_acked.max(acked).max(last);
        drop(log);
    }
    let segments = std::fs::read_dir(dir.path()).expect("read dir").count();
    println!("{points} kill points, {total_acked} entries acknowledged, none lost; {segments} segment files at the end");
}
