//! `open_member_storage_on`: one test per case its module comment lists,
//! on the WAL's `CrashFs`, so every state a test starts from is one a
//! crash could leave (only what was synced survives).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use proto::etcdserverpb::PutRequest;
use proto::internal::{internal_request, InternalRequest};
use raft::{ConfState, Entry, HardState, InitialState, SnapshotMetadata};
use server::node::LogStorage;
use server::state::ReplicatedState;
use server::storage::{
    open_member_storage_on, snapshot_dir, wal_dir, MemberStorage, StorageOpenError,
};
use wal::crash_fs::CrashFs;
use wal::fs::FileSystem;
use wal::SnapshotFiles;

const DATA_DIR: &str = "/data/member-a";

fn data_dir() -> &'static Path {
    Path::new(DATA_DIR)
}

fn open(fs: &CrashFs) -> Result<MemberStorage, StorageOpenError> {
    open_member_storage_on(Arc::new(fs.clone()), data_dir(), 64 * 1024)
}

fn open_ok(fs: &CrashFs) -> MemberStorage {
    match open(fs) {
        Ok(storage) => storage,
        Err(error) => panic!("open failed: {error}"),
    }
}

fn open_err(fs: &CrashFs) -> String {
    match open(fs) {
        Ok(_) => panic!("open must refuse this data dir"),
        Err(error) => error.to_string(),
    }
}

/// Stops the member (dropping its storage) and loses whatever was not
/// synced, as a power cut would.
fn crash(storage: MemberStorage, fs: &CrashFs) -> CrashFs {
    drop(storage);
    fs.crash(None)
}

fn meta(index: u64, term: u64) -> SnapshotMetadata {
    SnapshotMetadata {
        index,
        term,
        conf_state: ConfState::with_voters([1]),
    }
}

fn entries(indexes: std::ops::RangeInclusive<u64>, term: u64) -> Vec<Entry> {
    indexes
        .map(|index| Entry::normal(term, index, Bytes::from(format!("entry {index}"))))
        .collect()
}

fn hard_state(term: u64, commit: u64) -> HardState {
    HardState {
        term,
        vote: 1,
        commit,
    }
}

/// A state as of `index`, with one key telling which.
fn state_at(index: u64) -> ReplicatedState {
    let mut state = ReplicatedState {
        applied_index: index,
        ..ReplicatedState::default()
    };
    state.store.apply(&InternalRequest {
        request: Some(internal_request::Request::Put(PutRequest {
            key: b"at".to_vec().into(),
            value: index.to_string().into_bytes().into(),
            ..PutRequest::default()
        })),
    });
    state
}

fn key_at(state: &ReplicatedState) -> u64 {
    let mut image = Vec::new();
    state.write_image(&mut image).expect("image");
    let expected = state_at(state.applied_index);
    let mut expected_image = Vec::new();
    expected.write_image(&mut expected_image).expect("image");
    assert_eq!(image, expected_image, "the restored state is the one saved");
    state.applied_index
}

/// Writes the snapshot file of the state at `index` (durable when this
/// returns), as the snapshot job or a received transfer does.
fn save_snapshot(files: &SnapshotFiles, index: u64, term: u64) -> PathBuf {
    state_at(index)
        .save(files, &meta(index, term))
        .expect("save snapshot")
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

fn snapshot_names(fs: &CrashFs) -> Vec<String> {
    let mut names = fs.list_dir(&snapshot_dir(data_dir())).expect("list");
    names.sort();
    names
}

/// A member that ran: entries 1..=10 at term 2, committed to 8.
fn ran_ten_entries() -> (CrashFs, MemberStorage) {
    let fs = CrashFs::new();
    let mut storage = open_ok(&fs);
    storage
        .log
        .persist(Some(hard_state(2, 8)), &entries(1..=10, 2), None)
        .expect("persist");
    (fs, storage)
}

#[test]
fn fresh_start_finds_nothing_to_restore() {
    let fs = CrashFs::new();
    let storage = open_ok(&fs);
    assert!(storage.initial.is_none(), "an empty data dir bootstraps");
    assert!(storage.restored.is_none());
    // Opening twice without writing anything is still a fresh start.
    let fs = crash(storage, &fs);
    let storage = open_ok(&fs);
    assert!(storage.initial.is_none());
}

#[test]
fn normal_restart_without_a_snapshot_replays_the_log_from_its_start() {
    let (fs, storage) = ran_ten_entries();
    let fs = crash(storage, &fs);
    let storage = open_ok(&fs);
    let initial = initial_of(&storage);
    assert_eq!(indexes(initial), (1..=10).collect::<Vec<_>>());
    assert_eq!(initial.hard_state, hard_state(2, 8));
    assert!(initial.snapshot.is_none());
    assert_eq!(initial.applied, 0);
    assert!(storage.restored.is_none());
}

#[test]
fn normal_restart_with_a_snapshot_restores_it_and_replays_what_follows() {
    let (fs, mut storage) = ran_ten_entries();
    save_snapshot(&storage.snapshots, 6, 2);
    storage.log.compacted(&meta(6, 2)).expect("compacted");
    let fs = crash(storage, &fs);
    let storage = open_ok(&fs);
    let initial = initial_of(&storage);
    assert_eq!(initial.applied, 6);
    assert_eq!(
        initial.snapshot.as_ref().map(|s| s.metadata.clone()),
        Some(meta(6, 2))
    );
    assert_eq!(indexes(initial), (7..=10).collect::<Vec<_>>());
    assert_eq!(key_at(storage.restored.as_ref().expect("restored")), 6);
}

#[test]
fn a_crash_between_the_snapshot_file_and_its_compacted_marker_records_it_at_open() {
    let (fs, storage) = ran_ten_entries();
    save_snapshot(&storage.snapshots, 6, 2);
    // The raft thread never heard the file was durable.
    let fs = crash(storage, &fs);
    let storage = open_ok(&fs);
    let initial = initial_of(&storage);
    assert_eq!(initial.applied, 6);
    assert_eq!(indexes(initial), (7..=10).collect::<Vec<_>>());
    assert_eq!(initial.hard_state.commit, 8);
    assert_eq!(key_at(storage.restored.as_ref().expect("restored")), 6);
    // Recorded durably: a crash right after open finds a normal restart.
    let fs = crash(storage, &fs);
    let storage = open_ok(&fs);
    let again = initial_of(&storage);
    assert_eq!(again.applied, 6);
    assert_eq!(indexes(again), (7..=10).collect::<Vec<_>>());
}

#[test]
fn a_received_snapshot_not_yet_recorded_replaces_the_log_at_open() {
    let (fs, storage) = ran_ten_entries();
    // The leader's snapshot at 40 (term 5) arrived and was made durable;
    // the member crashed before Raft took it.
    save_snapshot(&storage.snapshots, 40, 5);
    let fs = crash(storage, &fs);
    let storage = open_ok(&fs);
    let initial = initial_of(&storage);
    assert_eq!(initial.applied, 40);
    assert!(initial.entries.is_empty(), "the log it cannot extend goes");
    assert_eq!(initial.hard_state.commit, 40, "a snapshot is committed");
    assert_eq!(
        initial.hard_state.term, 5,
        "never behind the snapshot's term"
    );
    assert_eq!(initial.hard_state.vote, 0, "no vote was cast in term 5");
    assert_eq!(key_at(storage.restored.as_ref().expect("restored")), 40);
    // Recorded durably.
    let fs = crash(storage, &fs);
    let storage = open_ok(&fs);
    assert_eq!(initial_applied(&storage), 40);
    assert!(storage.initial.as_ref().expect("state").entries.is_empty());
}

fn initial_applied(storage: &MemberStorage) -> u64 {
    initial_of(storage).applied
}

#[test]
fn a_received_snapshot_inside_the_log_but_of_another_term_replaces_the_log() {
    let (fs, storage) = ran_ten_entries();
    // Index 9 exists here at term 2, not committed (commit 8); the leader's
    // snapshot says term 3: this member's entries from some point on are
    // not the leader's.
    save_snapshot(&storage.snapshots, 9, 3);
    let fs = crash(storage, &fs);
    let storage = open_ok(&fs);
    let initial = initial_of(&storage);
    assert_eq!(initial.applied, 9);
    assert!(initial.entries.is_empty());
}

#[test]
fn a_snapshot_file_behind_the_logs_marker_is_an_error_naming_it() {
    let (fs, mut storage) = ran_ten_entries();
    storage.log.compacted(&meta(8, 2)).expect("compacted");
    // Only an older file is there (the one for 8 is lost).
    let older = save_snapshot(&storage.snapshots, 6, 2);
    let fs = crash(storage, &fs);
    let text = open_err(&fs);
    assert!(text.contains(&older.display().to_string()), "{text}");
    assert!(text.contains("index 8"), "{text}");
}

#[test]
fn no_snapshot_file_when_the_log_needs_one_is_an_error_naming_the_missing_file() {
    let (fs, mut storage) = ran_ten_entries();
    storage.log.compacted(&meta(6, 2)).expect("compacted");
    let expected = storage.snapshots.path_for(&meta(6, 2));
    let fs = crash(storage, &fs);
    let text = open_err(&fs);
    assert!(text.contains(&expected.display().to_string()), "{text}");
    assert!(text.contains("is missing"), "{text}");
}

#[test]
fn a_snapshot_file_of_another_term_than_the_logs_marker_is_an_error_naming_it() {
    let (fs, mut storage) = ran_ten_entries();
    storage.log.compacted(&meta(6, 2)).expect("compacted");
    let path = save_snapshot(&storage.snapshots, 6, 3);
    let fs = crash(storage, &fs);
    let text = open_err(&fs);
    assert!(text.contains(&path.display().to_string()), "{text}");
}

#[test]
fn a_damaged_snapshot_file_is_an_error_naming_it_and_the_offset() {
    let (fs, mut storage) = ran_ten_entries();
    let path = save_snapshot(&storage.snapshots, 6, 2);
    storage.log.compacted(&meta(6, 2)).expect("compacted");
    let fs = crash(storage, &fs);
    let len = fs.file_len(&path).expect("len") as usize;
    fs.corrupt(&path, len / 2, 0x40).expect("corrupt");
    let text = open_err(&fs);
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("at byte"), "{text}");
}

#[test]
fn a_snapshot_file_holding_another_state_than_its_name_is_an_error_naming_it() {
    let (fs, mut storage) = ran_ten_entries();
    // The file for index 6 holds the state at 5.
    let path = state_at(5)
        .save(&storage.snapshots, &meta(6, 2))
        .expect("save");
    storage.log.compacted(&meta(6, 2)).expect("compacted");
    let fs = crash(storage, &fs);
    let text = open_err(&fs);
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("holds the state at index 5"), "{text}");
}

#[test]
fn a_snapshot_file_that_is_not_a_state_image_is_an_error_naming_it() {
    let (fs, mut storage) = ran_ten_entries();
    let mut writer = storage.snapshots.create(&meta(6, 2)).expect("create");
    writer.write(b"not a state image").expect("write");
    let path = writer.finish().expect("finish");
    storage.log.compacted(&meta(6, 2)).expect("compacted");
    let fs = crash(storage, &fs);
    let text = open_err(&fs);
    assert!(text.contains(&path.display().to_string()), "{text}");
}

#[test]
fn a_log_of_an_earlier_raftkv_is_an_error_naming_it() {
    let fs = CrashFs::new();
    let member = data_dir().join("member");
    fs.create_dir_all(&member).expect("mkdir");
    let legacy = member.join("raft.log");
    let mut file = fs.create_new(&legacy).expect("create");
    file.append(b"old format").expect("append");
    file.sync_data().expect("sync");
    fs.sync_dir(&member).expect("sync dir");
    let text = open_err(&fs);
    assert!(text.contains(&legacy.display().to_string()), "{text}");
}

#[test]
fn open_removes_stale_temporaries_and_older_snapshots_but_keeps_the_newest() {
    let (fs, mut storage) = ran_ten_entries();
    save_snapshot(&storage.snapshots, 4, 2);
    save_snapshot(&storage.snapshots, 6, 2);
    storage.log.compacted(&meta(6, 2)).expect("compacted");
    save_snapshot(&storage.snapshots, 40, 5); // received, not yet recorded
                                              // A writer the crash interrupted.
    let mut interrupted = storage.snapshots.create(&meta(9, 2)).expect("create");
    interrupted.write(b"half").expect("write");
    let temp = interrupted.temp_path().to_path_buf();
    std::mem::forget(interrupted); // a crash runs no destructor
    let snap = snapshot_dir(data_dir());
    fs.sync_dir(&snap).expect("make the temporary durable");
    assert!(fs.file_len(&temp).is_ok());
    let fs = crash(storage, &fs);
    let storage = open_ok(&fs);
    assert_eq!(initial_applied(&storage), 40);
    let names = snapshot_names(&fs);
    assert_eq!(names.len(), 1, "{names:?}");
    assert_eq!(
        snap.join(&names[0]),
        storage.snapshots.path_for(&meta(40, 5))
    );
    // Durably so.
    let fs = crash(storage, &fs);
    assert_eq!(snapshot_names(&fs).len(), 1);
}

/// The retention rule at the log's side: recording a snapshot removes the
/// older files and nothing newer (a received snapshot waiting for Raft).
#[test]
fn recording_a_snapshot_removes_older_files_and_keeps_newer_ones() {
    let (fs, mut storage) = ran_ten_entries();
    save_snapshot(&storage.snapshots, 4, 2);
    save_snapshot(&storage.snapshots, 6, 2);
    let received = save_snapshot(&storage.snapshots, 40, 5);
    storage.log.compacted(&meta(6, 2)).expect("compacted");
    let names = snapshot_names(&fs);
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(storage.snapshots.verify(&received).is_ok());
    assert!(storage
        .snapshots
        .verify(&storage.snapshots.path_for(&meta(6, 2)))
        .is_ok());
    // And the WAL directory is where the module says.
    assert!(!fs.list_dir(&wal_dir(data_dir())).expect("wal").is_empty());
}
