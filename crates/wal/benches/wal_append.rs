//! WAL appends of 256-byte entries from 1, 16 and 256 concurrent writers,
//! beside the raw `fdatasync` rate of the same disk measured in the same run.
//!
//! Each writer appends one entry and waits until it is durable, then the
//! next: the latency-bound pattern of a Raft leader under load. Group commit
//! is what lets many writers share one sync.
//!
//!     cargo bench -p raftkv-wal --bench wal_append
//!
//! `RAFTKV_BENCH_SECS` (default 3) sets the seconds per measurement;
//! `RAFTKV_BENCH_DIR` the directory (default: a temporary one under target/).

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use raft::Entry;
use wal::{Wal, WalOptions, WriteBatch};

const ENTRY_BYTES: usize = 256;

fn raw_fdatasync_rate(dir: &std::path::Path, seconds: f64) -> f64 {
    let path = dir.join("raw-fdatasync");
    let mut file = std::fs::File::create(&path).expect("create");
    let block = [0x5au8; ENTRY_BYTES];
    let start = Instant::now();
    let mut syncs = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        file.write_all(&block).expect("write");
        file.sync_data().expect("fdatasync");
        syncs += 1;
    }
    let rate = syncs as f64 / start.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(path);
    rate
}

struct Measured {
    entries_per_sec: f64,
    syncs_per_sec: f64,
    mean_batch: f64,
}

fn run_writers(dir: &std::path::Path, writers: usize, seconds: f64) -> Measured {
    let wal_dir = dir.join(format!("wal-{writers}"));
    let _ = std::fs::remove_dir_all(&wal_dir);
    let (log, _) = Wal::open(&wal_dir, WalOptions::default()).expect("open");
    let log = Arc::new(log);
    let next_index = Arc::new(Mutex::new(1u64));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let payload = Bytes::from(vec![0xa5u8; ENTRY_BYTES]);
    let before = log.stats();
    let start = Instant::now();
    let threads: Vec<_> = (0..writers)
        .map(|_| {
            let (log, next_index, stop, done, payload) = (
                log.clone(),
                next_index.clone(),
                stop.clone(),
                done.clone(),
                payload.clone(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let ticket = {
                        // Indexes must reach the log in order; the lock only
                        // covers queuing, not the sync.
                        let mut next = next_index.lock().expect("lock");
                        let entry = Entry::normal(1, *next, payload.clone());
                        *next += 1;
                        log.append(WriteBatch {
                            entries: std::slice::from_ref(&entry),
                            ..WriteBatch::default()
                        })
                        .expect("append")
                    };
                    log.wait(ticket).expect("wait");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().expect("writer");
    }
    let elapsed = start.elapsed().as_secs_f64();
    let after = log.stats();
    let syncs = after.syncs - before.syncs;
    let entries = done.load(Ordering::Relaxed);
    drop(log);
    let _ = std::fs::remove_dir_all(&wal_dir);
    Measured {
        entries_per_sec: entries as f64 / elapsed,
        syncs_per_sec: syncs as f64 / elapsed,
        mean_batch: entries as f64 / syncs.max(1) as f64,
    }
}

fn main() {
    let seconds: f64 = std::env::var("RAFTKV_BENCH_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3.0);
    let base = std::env::var("RAFTKV_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")));
    std::fs::create_dir_all(&base).expect("bench dir");
    let dir = tempfile::tempdir_in(&base).expect("tempdir");

    let raw = raw_fdatasync_rate(dir.path(), seconds);
    println!("disk: {}", dir.path().display());
    println!("raw fdatasync (256-byte write + fdatasync, one thread): {raw:.0}/s");
    println!();
    println!("| writers | entries/s | fsyncs/s | entries per fsync | entries/s ÷ raw fdatasync/s | fsyncs/s ÷ raw |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for writers in [1usize, 16, 256] {
        let measured = run_writers(dir.path(), writers, seconds);
        println!(
            "| {writers} | {:.0} | {:.0} | {:.1} | {:.2}× | {:.2}× |",
            measured.entries_per_sec,
            measured.syncs_per_sec,
            measured.mean_batch,
            measured.entries_per_sec / raw,
            measured.syncs_per_sec / raw,
        );
    }
}
