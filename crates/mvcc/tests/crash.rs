//! Process crashes: a child process (this test binary, re-executed with
//! `--exact` on a child test) works on a backend and is SIGKILLed at a
//! seeded moment; the parent reopens the backend and checks what a crash
//! is allowed to leave.
//!
//! Replay a run with `RAFTKV_MVCC_SEED=<seed printed on stderr>`.

mod common;

use common::{dump, fill, generation_dirs, Dump, Rng};
use mvcc::backend::InstallStep;
use mvcc::{Backend, KeyRange, Revision};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Set in a child: the backend root to work on.
const CHILD_ROOT: &str = "RAFTKV_MVCC_CHILD_ROOT";
/// Set in an install child: the file of length-prefixed snapshot chunks.
const CHILD_SNAPSHOT: &str = "RAFTKV_MVCC_CHILD_SNAPSHOT";
/// Set in an install child: where to stop and wait to be killed,
/// `chunk:<n>`, `step:<InstallStep as Debug>`, or `none`.
const CHILD_STOP: &str = "RAFTKV_MVCC_CHILD_STOP";
/// What a child prints before each of its protocol lines.
const MARK: &str = "MVCC-CHILD ";

/// How long the parent waits for a child's line before giving up.
const CHILD_LINE_TIMEOUT: Duration = Duration::from_secs(120);

/// Kills and reaps the child when dropped, so no child outlives a test,
/// passing or panicking.
struct ChildGuard {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl ChildGuard {
    fn spawn(test_name: &str, env: &[(&str, String)]) -> ChildGuard {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // The harness may have printed "test name ... " on the
                // same line before the child's first message.
                if let Some(at) = line.find(MARK) {
                    if sender.send(line[at + MARK.len()..].to_string()).is_err() {
                        break;
                    }
                }
            }
        });
        ChildGuard { child, lines }
    }

    /// Waits for the child to print `MARK ++ expected`; false if it exited
    /// (or went quiet) first.
    fn wait_for(&self, expected: &str) -> bool {
        let deadline = Instant::now() + CHILD_LINE_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line == expected => return true,
                Ok(_) => continue,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("child printed no {expected:?} within {CHILD_LINE_TIMEOUT:?}")
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return false,
            }
        }
    }

    /// SIGKILL (std's `Child::kill` on Unix), then reap.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn child_say(message: &str) {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{MARK}{message}").unwrap();
    stdout.flush().unwrap();
}

/// Waits to be killed.
fn child_halt() -> ! {
    child_say("stopped");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

// ---------------------------------------------------------------------------
// Snapshot install

fn write_chunks(path: &Path, chunks: &[Vec<u8>]) {
    let mut out = Vec::new();
    for chunk in chunks {
        out.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    std::fs::write(path, out).unwrap();
}

fn read_chunks(path: &Path) -> Vec<Vec<u8>> {
    let mut file = std::fs::File::open(path).unwrap();
    let mut chunks = Vec::new();
    let mut len = [0u8; 4];
    while file.read_exact(&mut len).is_ok() {
        let mut chunk = vec![0u8; u32::from_be_bytes(len) as usize];
        file.read_exact(&mut chunk).unwrap();
        chunks.push(chunk);
    }
    chunks
}

/// The state every install run starts from (deterministic).
fn build_old_state(root: &Path) -> Dump {
    let backend = Backend::open(root).unwrap();
    fill(&backend, &mut Rng::new(11), 400, 20, "old");
    dump(&backend)
}

#[derive(Clone, Debug)]
enum KillPoint {
    /// After pushing chunk n: the new generation is half built.
    AfterChunk(usize),
    /// Right after an install step completed.
    AfterStep(InstallStep),
    /// This long after the child is ready to push: anywhere.
    Delay(Duration),
}

#[test]
fn snapshot_install_survives_sigkill_at_any_point() {
    let seed = common::seed("snapshot_install_survives_sigkill_at_any_point");
    let mut rng = Rng::new(seed);
    let work = tempfile::tempdir().unwrap();

    // The snapshot to install, and the state it carries.
    let source = Backend::open(work.path().join("source")).unwrap();
    fill(&source, &mut Rng::new(12), 3000, 200, "new");
    let chunks: Vec<Vec<u8>> = source
        .snapshot_with_chunk_bytes(16 * 1024)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let new_state = dump(&source);
    drop(source);
    let snapshot_file = work.path().join("snapshot.chunks");
    write_chunks(&snapshot_file, &chunks);

    // How long an uninterrupted install takes here, to spread delays over.
    let old_state = build_old_state(&work.path().join("calibration"));
    let started = Instant::now();
    {
        let mut backend = Backend::open(work.path().join("calibration")).unwrap();
        backend.install_snapshot(&chunks).unwrap();
        assert_eq!(dump(&backend), new_state);
    }
    let install_duration = started.elapsed();
    eprintln!(
        "{} chunks, uninterrupted install {install_duration:?}",
        chunks.len()
    );

    let mut kill_points: Vec<KillPoint> = InstallStep::ALL
        .into_iter()
        .map(KillPoint::AfterStep)
        .collect();
    for _ in 0..2 {
        kill_points.push(KillPoint::AfterChunk(
            rng.below(chunks.len() as u64) as usize
        ));
    }
    let delay_max_micros = (install_duration.as_micros() as u64).max(1000) * 3 / 2;
    for _ in 0..4 {
        kill_points.push(KillPoint::Delay(Duration::from_micros(
            rng.below(delay_max_micros),
        )));
    }
    // Shuffle (Fisher-Yates) so the seed also decides the order.
    for i in (1..kill_points.len()).rev() {
        kill_points.swap(i, rng.below(i as u64 + 1) as usize);
    }

    for (run, kill_point) in kill_points.into_iter().enumerate() {
        let root = work.path().join(format!("run-{run}"));
        assert_eq!(build_old_state(&root), old_state);
        let stop = match &kill_point {
            KillPoint::AfterChunk(n) => format!("chunk:{n}"),
            KillPoint::AfterStep(step) => format!("step:{step:?}"),
            KillPoint::Delay(_) => "none".to_string(),
        };
        let child = ChildGuard::spawn(
            "child_install_snapshot",
            &[
                (CHILD_ROOT, root.display().to_string()),
                (CHILD_SNAPSHOT, snapshot_file.display().to_string()),
                (CHILD_STOP, stop),
            ],
        );
        let finished_or_stopped = match &kill_point {
            KillPoint::Delay(delay) => {
                assert!(child.wait_for("ready"), "child exited before ready");
                std::thread::sleep(*delay);
                true
            }
            _ => child.wait_for("stopped"),
        };
        assert!(
            finished_or_stopped,
            "run {run} ({kill_point:?}): child exited early"
        );
        child.kill();

        let backend = Backend::open(&root).unwrap();
        let state = dump(&backend);
        let outcome = if state == old_state {
            "old"
        } else if state == new_state {
            "new"
        } else {
            panic!("run {run} ({kill_point:?}, seed {seed}): state is neither old nor new");
        };
        eprintln!("run {run}: killed {kill_point:?} -> {outcome} state");
        let expected = match &kill_point {
            KillPoint::AfterChunk(_)
            | KillPoint::AfterStep(InstallStep::DataSynced | InstallStep::CurrentTempSynced) => {
                Some("old")
            }
            KillPoint::AfterStep(InstallStep::CurrentSwitched | InstallStep::OldRemoved) => {
                Some("new")
            }
            KillPoint::Delay(_) => None,
        };
        if let Some(expected) = expected {
            assert_eq!(outcome, expected, "run {run} ({kill_point:?}, seed {seed})");
        }
        // Open removed what the crash left behind, and the state is usable.
        assert_eq!(generation_dirs(&root).len(), 1, "run {run}");
        assert!(!root.join("CURRENT.tmp").exists(), "run {run}");
        let mut batch = backend.write_batch();
        batch
            .put(b"after-crash", Revision::new(1_000_000, 0), b"x")
            .unwrap();
        batch.set_applied(backend.applied().index + 1, 99);
        backend.commit(batch).unwrap();
    }
}

/// Child half of [`snapshot_install_survives_sigkill_at_any_point`]; a
/// no-op unless started by it.
#[test]
fn child_install_snapshot() {
    let Ok(root) = std::env::var(CHILD_ROOT) else {
        return;
    };
    let chunks = read_chunks(&PathBuf::from(std::env::var(CHILD_SNAPSHOT).unwrap()));
    let stop = std::env::var(CHILD_STOP).unwrap();
    let mut backend = Backend::open(&root).unwrap();
    let mut installer = backend.snapshot_installer().unwrap();
    child_say("ready");
    for (index, chunk) in chunks.iter().enumerate() {
        installer.push(chunk).unwrap();
        if stop == format!("chunk:{index}") {
            child_halt();
        }
    }
    backend
        .install_observed(installer, &mut |step| {
            if stop == format!("step:{step:?}") {
                child_halt();
            }
        })
        .unwrap();
    child_say("done");
}

// ---------------------------------------------------------------------------
// Batch commits

const BATCH_KEYS: u64 = 50;

/// The writes of the batch that applies index `i` (main revision `i`).
fn commit_batch_for(backend: &Backend, i: u64) {
    let main = i as i64;
    let mut batch = backend.write_batch();
    batch
        .put(b"counter", Revision::new(main, 0), &i.to_be_bytes())
        .unwrap();
    // Every seventh batch is large, so its journal record spans several
    // buffered writes and a kill can tear it.
    let size = if i.is_multiple_of(7) { 40_000 } else { 100 };
    batch
        .put(
            format!("k{:02}", i % BATCH_KEYS).as_bytes(),
            Revision::new(main, 1),
            &vec![i as u8; size],
        )
        .unwrap();
    if i.is_multiple_of(3) {
        batch
            .put_tombstone(b"gone", Revision::new(main, 2))
            .unwrap();
    }
    batch.set_current_revision(main);
    batch.set_applied(i, 1);
    backend.commit(batch).unwrap();
}

/// Checks that the data reflects exactly the batches `1..=applied`.
fn check_batches(backend: &Backend) -> u64 {
    let view = backend.read();
    let applied = view.applied().unwrap().index;
    assert_eq!(backend.applied().index, applied);
    assert_eq!(view.current_revision().unwrap(), applied as i64);
    let counter: Vec<(i64, Vec<u8>)> = view
        .versions(&KeyRange::single(b"counter".to_vec()))
        .map(|version| {
            let version = version.unwrap();
            (version.revision.main, version.value().unwrap().to_vec())
        })
        .collect();
    let expected: Vec<(i64, Vec<u8>)> = (1..=applied)
        .map(|i| (i as i64, i.to_be_bytes().to_vec()))
        .collect();
    assert_eq!(
        counter, expected,
        "counter versions vs applied index {applied}"
    );
    for key in 0..BATCH_KEYS {
        let last = (1..=applied).rev().find(|i| i % BATCH_KEYS == key);
        let found = view
            .latest(format!("k{key:02}").as_bytes(), i64::MAX)
            .unwrap()
            .map(|version| version.revision.main as u64);
        assert_eq!(found, last, "key k{key:02} at applied index {applied}");
    }
    let gone: Vec<i64> = view
        .versions(&KeyRange::single(b"gone".to_vec()))
        .map(|version| version.unwrap().revision.main)
        .collect();
    let expected: Vec<i64> = (1..=applied)
        .filter(|i| i.is_multiple_of(3))
        .map(|i| i as i64)
        .collect();
    assert_eq!(gone, expected);
    applied
}

#[test]
fn committed_batches_survive_sigkill_atomically() {
    let seed = common::seed("committed_batches_survive_sigkill_atomically");
    let mut rng = Rng::new(seed);
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("backend");
    drop(Backend::open(&root).unwrap());
    let mut applied = 0;
    for round in 0..4 {
        let child = ChildGuard::spawn(
            "child_commit_batches",
            &[(CHILD_ROOT, root.display().to_string())],
        );
        assert!(
            child.wait_for("ready"),
            "round {round}: child exited before ready"
        );
        let delay = Duration::from_millis(20 + rng.below(300));
        std::thread::sleep(delay);
        child.kill();
        let backend = Backend::open(&root).unwrap();
        let now = check_batches(&backend);
        eprintln!("round {round}: killed after {delay:?}, applied index {now}");
        // Each commit reached the OS before it returned, and a SIGKILL
        // loses nothing the OS has: no committed batch is lost.
        assert!(
            now > applied,
            "round {round} (seed {seed}): {now} after {applied}"
        );
        applied = now;
    }
}

/// Child half of [`committed_batches_survive_sigkill_atomically`]; a no-op
/// unless started by it.
#[test]
fn child_commit_batches() {
    let Ok(root) = std::env::var(CHILD_ROOT) else {
        return;
    };
    let backend = Backend::open(&root).unwrap();
    let start = backend.applied().index + 1;
    commit_batch_for(&backend, start);
    child_say("ready");
    // Bounded, in case nobody kills it.
    for i in start + 1..start + 1_000_000 {
        commit_batch_for(&backend, i);
    }
    child_say("done");
}
