//! `open_member_storage_on`: one test per case its module comment lists.
//! The log is on the WAL's `CrashFs`, so every log a test starts from is
//! one a crash could leave (only what was synced survives); the engine is
//! in a temporary directory on the real disk, holding exactly what the
//! test committed to it (what a process crash leaves: fjall's journal is
//! flushed at every commit). Engine states a power loss could leave (the
//! engine back at its last sync) are built by committing less.

mod common;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use common::{put_request, Disk};
use raft::{ConfState, Entry, HardState, InitialState, SnapshotMetadata};
use server::node::{LogStorage, StateMachine};
use server::state::{KvStateMachine, SharedState};
use server::storage::{open_member_storage_on, wal_dir, MemberStorage, StorageOpenError};
use wal::crash_fs::CrashFs;

const DATA_DIR: &str = "/data/member-a";

fn data_dir() -> &'static Path {
    Path::new(DATA_DIR)
}

fn open(disks: &Disk) -> Result<MemberStorage, StorageOpenError> {
    open_member_storage_on(
        Arc::new(disks.fs.clone()),
        data_dir(),
        disks.engine(),
        64 * 1024,
        &mvcc::StoreOptions::default(),
    )
}

fn open_ok(disks: &Disk) -> MemberStorage {
    match open(disks) {
        Ok(storage) => storage,
        Err(error) => panic!("open failed: {error}"),
    }
}

/// The error open gives; if it opens instead, the test fails with what the
/// member would have restarted with.
fn open_err(disks: &Disk) -> String {
    match open(disks) {
        Err(error) => error.to_string(),
        Ok(storage) => match &storage.initial {
            Some(initial) => panic!(
                "open must refuse this data dir; it restarted with applied index {}, commit \
                 index {}, last index {}",
                initial.applied,
                initial.hard_state.commit,
                last_index(initial)
            ),
            None => panic!("open must refuse this data dir; it found nothing to restore"),
        },
    }
}

/// Stops the member (dropping its storage, engine included) and loses
/// whatever the log did not sync, as a power cut would.
fn crash(disks: Disk, storage: MemberStorage) -> Disk {
    drop(storage);
    disks.crash(None)
}

/// Crashes the member and opens its disks again, which must be refused
/// with an error naming the engine's directory; returns the error.
fn refused_naming_the_engine(disks: Disk, storage: MemberStorage) -> String {
    let disks = crash(disks, storage);
    let error = open_err(&disks);
    assert!(
        error.contains(&disks.engine().display().to_string()),
        "the error names the engine: {error}"
    );
    error
}

fn meta(index: u64, term: u64) -> SnapshotMetadata {
    SnapshotMetadata {
        index,
        term,
        conf_state: ConfState::with_voters([1]),
    }
}

/// Entries `indexes` of `term`, each a put of `k<index>`.
fn entries(indexes: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    indexes
        .map(|index| {
            Entry::normal(
                term,
                index,
                framed(&put_request(format!("k{index}").as_bytes(), b"v")),
            )
        })
        .collect()
}

/// Entry data as a proposal frames it: 16 bytes of origin, then the request.
fn framed(request: &[u8]) -> Bytes {
    let mut data = vec![0u8; 16];
    data.extend_from_slice(request);
    Bytes::from(data)
}

fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
    HardState { term, vote, commit }
}

fn initial_of(storage: &MemberStorage) -> &InitialState {
    storage
        .initial
        .as_ref()
        .expect("a restarted member has state")
}

fn indexes(initial: &InitialState) -> Vec<u64> {
    initial.entries.iter().map(|entry| entry.index).collect()
}

/// The last index Raft restarts with: its last entry's, else the snapshot's.
fn last_index(initial: &InitialState) -> u64 {
    initial
        .entries
        .last()
        .map_or(initial.applied, |entry| entry.index)
}

/// Applies `entries` to the member's state machine as the applier does
/// (the proposal header stripped) and commits them to the engine.
fn apply(storage: &MemberStorage, entries: &[Entry]) {
    let mut machine = KvStateMachine::new(storage.state.clone()).expect("state machine");
    for entry in entries {
        assert!(
            !machine.reflects(entry.index),
            "entry {} applied twice",
            entry.index
        );
        machine
            .apply(entry.index, entry.term, entry.data.slice(16..))
            .expect("apply");
    }
    machine.commit().expect("commit");
}

fn engine_applied(state: &SharedState) -> u64 {
    state.read().expect("state").store.applied().index
}

/// A member that ran: entries 1..=10 at term 2, committed to 8, the first
/// `applied` of them applied and committed to the engine.
fn ran_ten_entries(applied: u64) -> (Disk, MemberStorage) {
    let disks = Disk::new();
    let mut storage = open_ok(&disks);
    let written = entries(1..=10, 2);
    storage
        .log
        .persist(Some(hard_state(2, 1, 8)), &written, None)
        .expect("persist");
    apply(&storage, &written[..applied as usize]);
    (disks, storage)
}

#[test]
fn fresh_start_finds_nothing_to_restore() {
    let disks = Disk::new();
    let storage = open_ok(&disks);
    assert!(storage.initial.is_none());
    assert_eq!(engine_applied(&storage.state), 0);
}

#[test]
fn a_restart_replays_the_log_and_the_state_machine_skips_what_the_engine_holds() {
    let (disks, storage) = ran_ten_entries(6);
    let disks = crash(disks, storage);
    let storage = open_ok(&disks);
    let initial = initial_of(&storage);
    assert_eq!(
        initial.applied, 0,
        "no snapshot marker: Raft hands out from 1"
    );
    assert_eq!(indexes(initial), (1..=10).collect::<Vec<_>>());
    assert_eq!(engine_applied(&storage.state), 6);
    let machine = KvStateMachine::new(storage.state.clone()).expect("state machine");
    assert!((1..=6).all(|index| machine.reflects(index)));
    assert!(!machine.reflects(7));
    // Entries 7 and 8 apply on top, in order.
    let rest = entries(7..=8, 2);
    apply(&storage, &rest);
    assert_eq!(engine_applied(&storage.state), 8);
}

#[test]
fn a_restart_after_a_compaction_starts_raft_at_the_marker_with_the_engine_ahead() {
    let (disks, mut storage) = ran_ten_entries(8);
    storage
        .state
        .read()
        .expect("state")
        .store
        .persist()
        .expect("persist");
    storage.log.compacted(&meta(5, 2)).expect("compacted");
    let disks = crash(disks, storage);
    let storage = open_ok(&disks);
    let initial = initial_of(&storage);
    assert_eq!(initial.applied, 5);
    assert_eq!(indexes(initial), (6..=10).collect::<Vec<_>>());
    assert_eq!(engine_applied(&storage.state), 8);
}

#[test]
fn an_engine_behind_the_logs_snapshot_marker_is_an_error_naming_it() {
    // The log says the state up to 7 is kept elsewhere, but the engine holds
    // only 4: entries 5..=7 are in neither.
    let (disks, mut storage) = ran_ten_entries(4);
    storage.log.compacted(&meta(7, 2)).expect("compacted");
    let error = refused_naming_the_engine(disks, storage);
    assert!(
        error.contains("index 4") && error.contains("index 7"),
        "{error}"
    );
}

#[test]
fn an_engine_at_the_marker_with_another_term_is_an_error_naming_it() {
    // The log's marker says index 5 is of term 3; the engine applied an
    // index 5 of term 2: one of them is not this member's history.
    let disks = Disk::new();
    let mut storage = open_ok(&disks);
    storage
        .log
        .persist(Some(hard_state(3, 1, 4)), &entries(1..=10, 3), None)
        .expect("persist");
    apply(&storage, &entries(1..=5, 2));
    storage.log.compacted(&meta(5, 3)).expect("compacted");
    let error = refused_naming_the_engine(disks, storage);
    assert!(
        error.contains("term 2") && error.contains("term 3"),
        "{error}"
    );
}

#[test]
fn an_engine_contradicting_the_committed_log_is_an_error_naming_it() {
    let disks = Disk::new();
    let mut storage = open_ok(&disks);
    // The engine applied entries 1..=5 of term 2; the log holds them at
    // term 3, committed: one of the two is not this member's history.
    apply(&storage, &entries(1..=5, 2));
    storage
        .log
        .persist(Some(hard_state(3, 1, 8)), &entries(1..=8, 3), None)
        .expect("persist");
    let error = refused_naming_the_engine(disks, storage);
    assert!(error.contains("committed log"), "{error}");
}

#[test]
fn an_engine_with_state_but_no_log_is_an_error_naming_the_log() {
    let disks = Disk::new();
    let storage = open_ok(&disks);
    apply(&storage, &entries(1..=3, 1));
    // Nothing was ever written to the log (or it was lost).
    let disks = crash(disks, storage);
    let error = open_err(&disks);
    assert!(
        error.contains(&wal_dir(data_dir()).display().to_string()),
        "{error}"
    );
}

#[test]
fn an_uncommitted_log_suffix_of_another_term_beside_the_engine_is_accepted() {
    // A snapshot from the leader was installed up to 6 (term 3), then the
    // member crashed before recording it: the log still holds its own
    // uncommitted entries 5..=8 of term 2. Raft learns from the leader
    // that they are replaced; nothing committed is contradicted.
    let disks = Disk::new();
    let mut storage = open_ok(&disks);
    storage
        .log
        .persist(Some(hard_state(2, 1, 4)), &entries(1..=8, 2), None)
        .expect("persist");
    let mut applied = entries(1..=4, 2);
    applied.extend(entries(5..=6, 3));
    apply(&storage, &applied);
    let disks = crash(disks, storage);
    let storage = open_ok(&disks);
    assert_eq!(engine_applied(&storage.state), 6);
    assert_eq!(indexes(initial_of(&storage)), (1..=8).collect::<Vec<_>>());
}

#[test]
fn a_power_cut_after_the_compacted_marker_restarts_from_it() {
    let (disks, mut storage) = ran_ten_entries(8);
    storage
        .state
        .read()
        .expect("state")
        .store
        .persist()
        .expect("persist");
    storage.log.compacted(&meta(8, 2)).expect("compacted");
    let disks = crash(disks, storage);
    let storage = open_ok(&disks);
    let initial = initial_of(&storage);
    assert_eq!(initial.applied, 8);
    assert_eq!(indexes(initial), vec![9, 10]);
}

#[test]
fn a_log_of_an_earlier_raftkv_is_an_error_naming_it() {
    let disks = Disk::new();
    let legacy = legacy_file(&disks, "raft.log");
    let error = open_err(&disks);
    assert!(error.contains(&legacy.display().to_string()), "{error}");
}

#[test]
fn snapshot_files_of_the_raftkv_that_kept_its_state_in_memory_are_an_error_naming_them() {
    let disks = Disk::new();
    let legacy = legacy_file(&disks, "snap/0000000000000002-0000000000000008.snap");
    let error = open_err(&disks);
    let dir = legacy.parent().expect("dir");
    assert!(error.contains(&dir.display().to_string()), "{error}");
}

/// A durable file under `<data-dir>/member/` holding bytes an earlier
/// raftkv wrote there.
fn legacy_file(fs: &CrashFs, name: &str) -> std::path::PathBuf {
    use wal::fs::FileSystem;
    let path = data_dir().join("member").join(name);
    let dir = path.parent().expect("dir").to_path_buf();
    fs.create_dir_all(&dir).expect("mkdir");
    let mut file = fs.create_new(&path).expect("create");
    file.append(b"old format").expect("append");
    file.sync_data().expect("sync");
    fs.sync_dir(&dir).expect("sync dir");
    path
}

#[test]
fn a_damaged_engine_is_an_error_not_a_panic() {
    let (disks, storage) = ran_ten_entries(8);
    let disks = crash(disks, storage);
    // Garbage over every file of the engine's live database.
    let mut damaged = 0;
    for entry in walk(disks.engine()) {
        let name = entry
            .file_name()
            .map(|name| name.to_string_lossy().into_owned());
        if matches!(name.as_deref(), Some("CURRENT" | "LOCK")) {
            continue;
        }
        let len = std::fs::metadata(&entry).expect("metadata").len();
        if len > 0 {
            std::fs::write(&entry, vec![0xA5; len as usize]).expect("damage");
            damaged += 1;
        }
    }
    assert!(damaged > 0, "the engine has files");
    let error = open_err(&disks);
    assert!(
        error.contains(&disks.engine().display().to_string()),
        "the error names the engine: {error}"
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
