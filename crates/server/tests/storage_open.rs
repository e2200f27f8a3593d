//! `open_member_storage_on`: one test per case its module comment lists,
//! on the WAL's `CrashFs`, so every state a test starts from is one a
//! crash could leave (only what was synced survives). Around it: a power
//! cut at each step of recording a snapshot, what recording and installing
//! snapshots leave for the next open (the retention rule), and loading a
//! state image from a snapshot file (`ReplicatedState::load`), which open
//! and install rely on to refuse a file that is not the state it is named
//! for.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use common::{image, put_key, state_at};
use raft::{ConfState, Entry, HardState, InitialState, SnapshotMetadata};
use server::node::{LogStorage, StateMachine};
use server::state::{KvStateMachine, MemberInfo, ReplicatedState, SharedState};
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

/// The error open gives; if it opens instead, the test fails with what the
/// member would have restarted with.
fn open_err(fs: &CrashFs) -> String {
    match open(fs) {
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

fn hard_state(term: u64, vote: u64, commit: u64) -> HardState {
    HardState { term, vote, commit }
}

fn key_at(state: &ReplicatedState) -> u64 {
    assert_eq!(
        image(state),
        image(&state_at(state.applied_index)),
        "the restored state is the one saved"
    );
    state.applied_index
}

/// Writes the snapshot file of the state at `index` (durable when this
/// returns), as the snapshot job or a received transfer does.
fn save_snapshot(files: &SnapshotFiles, index: u64, term: u64) -> PathBuf {
    state_at(index)
        .save(files, &meta(index, term))
        .expect("save snapshot")
}

/// Writes a snapshot file holding `bytes` as they are, under a valid file
/// checksum: what a buggy writer, not the disk, would leave.
fn write_file(files: &SnapshotFiles, metadata: &SnapshotMetadata, bytes: &[u8]) -> PathBuf {
    let mut writer = files.create(metadata).expect("create");
    writer.write(bytes).expect("write");
    writer.finish().expect("finish")
}

/// Snapshot files in `/snap`, outside any member's data dir, for loading
/// and installing images without a log.
fn bare_snapshot_files(fs: &CrashFs) -> SnapshotFiles {
    SnapshotFiles::open(Path::new("/snap"), Arc::new(fs.clone())).expect("open snap dir")
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
        .persist(Some(hard_state(2, 1, 8)), &entries(1..=10, 2), None)
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
    assert_eq!(initial.hard_state, hard_state(2, 1, 8));
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

/// A power cut at any step of recording a local snapshot (file written,
/// marker written, segments purged, older files removed), with the writes
/// it did not sync torn, leaves a data dir that opens: the newest durable
/// state, the entries after it, and that one snapshot file; never an error.
#[test]
fn a_crash_at_each_step_of_recording_a_snapshot_restarts_cleanly() {
    for crash_after in 0..4 {
        let fs = CrashFs::new();
        let mut storage = open_ok(&fs);
        // Small segments so that purge has something to remove.
        for index in 1..=30u64 {
            storage
                .log
                .persist(
                    Some(hard_state(2, 1, index)),
                    &entries(index..=index, 2),
                    None,
                )
                .expect("persist");
        }
        save_snapshot(&storage.snapshots, 10, 2);
        storage.log.compacted(&meta(10, 2)).expect("compacted 10");
        save_snapshot(&storage.snapshots, 20, 2);
        if crash_after >= 1 {
            storage.log.compacted(&meta(20, 2)).expect("compacted 20");
        }
        if crash_after >= 2 {
            // A second, later one with a torn crash.
            save_snapshot(&storage.snapshots, 25, 2);
        }
        if crash_after >= 3 {
            storage.log.compacted(&meta(25, 2)).expect("compacted 25");
        }
        drop(storage);
        let fs = fs.crash(Some(crash_after));
        let storage = open_ok(&fs);
        let initial = initial_of(&storage);
        let expected = if crash_after >= 2 { 25 } else { 20 };
        assert_eq!(initial.applied, expected, "crash after step {crash_after}");
        assert_eq!(last_index(initial), 30, "crash after step {crash_after}");
        assert_eq!(snapshot_names(&fs).len(), 1, "{:?}", snapshot_names(&fs));
    }
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

/// Recording a received snapshot at open never lets the member vote twice
/// in a term. When the snapshot's term is the durable term, the vote cast
/// in that term stays, durably; when the durable term is later than the
/// snapshot's, term and vote stay as they are. (When the snapshot's term is
/// later, the member never was in that term and starts it with no vote, as
/// `a_received_snapshot_not_yet_recorded_replaces_the_log_at_open` checks.)
#[test]
fn recording_a_received_snapshot_at_open_keeps_the_vote_of_the_current_term() {
    let fs = CrashFs::new();
    let mut storage = open_ok(&fs);
    storage
        .log
        .persist(Some(hard_state(5, 7, 3)), &entries(1..=4, 2), None)
        .expect("persist");
    save_snapshot(&storage.snapshots, 40, 5);
    let fs = crash(storage, &fs);
    let storage = open_ok(&fs);
    let initial = initial_of(&storage);
    assert_eq!(initial.hard_state.term, 5);
    assert_eq!(
        initial.hard_state.vote, 7,
        "the vote of term 5 must survive"
    );
    let fs = crash(storage, &fs);
    let storage = open_ok(&fs);
    assert_eq!(initial_of(&storage).hard_state.vote, 7, "durably");

    // A later term than the snapshot's: untouched.
    let fs = crash(storage, &fs);
    let mut storage = open_ok(&fs);
    storage
        .log
        .persist(Some(hard_state(9, 3, 40)), &[], None)
        .expect("persist");
    save_snapshot(&storage.snapshots, 50, 6);
    let fs = crash(storage, &fs);
    let storage = open_ok(&fs);
    let initial = initial_of(&storage);
    assert_eq!((initial.hard_state.term, initial.hard_state.vote), (9, 3));
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

/// A snapshot file that contradicts a committed entry is refused, naming
/// the file. The log holds entries 1..=10 of term 2 with 8 durably
/// committed; a file at index 7 names term 3. Raft takes a leader's
/// snapshot only beyond its commit index, and a local snapshot always
/// agrees with the log, so one of the two is damaged. Taken as a received
/// snapshot, the file would replace the whole log, committed entry 8 with
/// it, and Raft would restart with a commit index (8) beyond its last index
/// (7): a write acknowledged with this member in its quorum would live on
/// one member fewer. (Beyond the commit index the same disagreement is a
/// leader's snapshot: `a_received_snapshot_inside_the_log_but_of_another_term_replaces_the_log`.)
#[test]
fn a_snapshot_file_contradicting_a_committed_entry_is_refused() {
    let (fs, storage) = ran_ten_entries();
    let path = save_snapshot(&storage.snapshots, 7, 3);
    let fs = crash(storage, &fs);
    let text = open_err(&fs);
    assert!(text.contains(&path.display().to_string()), "{text}");
}

/// Open never drops entries below the durable commit index, whatever
/// snapshot file it finds. This member compacted at 6 itself (marker and
/// file at 6) and holds 7..=10 with 10 committed; one stale or damaged file
/// at 9, of another term than the committed entry 9, is enough to tempt
/// open into taking it as a received snapshot that replaces the log and
/// drops committed entry 10. Open either refuses, naming the file, or keeps
/// the log through 10.
#[test]
fn open_never_drops_entries_below_the_durable_commit_index() {
    let fs = CrashFs::new();
    let mut storage = open_ok(&fs);
    storage
        .log
        .persist(Some(hard_state(3, 1, 10)), &entries(1..=10, 3), None)
        .expect("persist");
    save_snapshot(&storage.snapshots, 6, 3);
    storage.log.compacted(&meta(6, 3)).expect("compacted");
    let path = save_snapshot(&storage.snapshots, 9, 2);
    let fs = crash(storage, &fs);
    match open(&fs) {
        Err(error) => {
            let text = error.to_string();
            assert!(text.contains(&path.display().to_string()), "{text}");
        }
        Ok(storage) => {
            let initial = initial_of(&storage);
            assert!(
                last_index(initial) >= 10,
                "open accepted {} and dropped committed entries: commit {}, last index {}",
                path.display(),
                initial.hard_state.commit,
                last_index(initial)
            );
        }
    }
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
    let path = write_file(&storage.snapshots, &meta(6, 2), b"not a state image");
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

/// Recording a local snapshot (which removes the files older than it) while
/// a received, newer snapshot waits for the apply thread keeps the newer
/// file; installing that one then removes the local one, durably.
#[test]
fn recording_a_local_snapshot_keeps_a_pending_newer_install() {
    let fs = CrashFs::new();
    let mut storage = open_ok(&fs);
    storage
        .log
        .persist(Some(hard_state(2, 1, 10)), &entries(1..=10, 2), None)
        .expect("persist");
    let received = save_snapshot(&storage.snapshots, 40, 4);
    save_snapshot(&storage.snapshots, 8, 2);
    storage.log.compacted(&meta(8, 2)).expect("compacted");
    assert!(storage.snapshots.verify(&received).is_ok());
    let shared = SharedState::restored(state_at(8));
    let mut machine =
        KvStateMachine::new(shared, Some(storage.snapshots.clone())).expect("machine");
    machine.install_snapshot(&meta(40, 4)).expect("install");
    let fs = crash(storage, &fs);
    assert_eq!(snapshot_names(&fs).len(), 1, "{:?}", snapshot_names(&fs));
}

/// Bytes after the end of a state image are refused, naming the file, by
/// `ReplicatedState::load` and by an install: a valid image followed by
/// anything (under a valid file checksum) is not the state the file is
/// named for. The check for more bytes reads through the same buffer the
/// image's decoder reads through; were the decoder to read ahead into a
/// buffer of its own and drop it, the extra bytes would be swallowed and
/// the check would see none.
#[test]
fn bytes_after_the_state_image_are_refused_naming_the_file() {
    let fs = CrashFs::new();
    let files = bare_snapshot_files(&fs);
    let metadata = meta(12, 2);
    let mut bytes = image(&state_at(12));
    bytes.extend_from_slice(b"trailing garbage after the image");
    let path = write_file(&files, &metadata, &bytes);
    match ReplicatedState::load(&files, &path, &metadata) {
        Err(error) => assert!(
            error.to_string().contains(&path.display().to_string()),
            "{error}"
        ),
        Ok(_) => panic!(
            "{} holds 32 bytes after the state image and was loaded as a whole state",
            path.display()
        ),
    }
    // Same through the install path.
    let state = SharedState::new();
    let mut machine = KvStateMachine::new(state, Some(files.clone())).expect("machine");
    assert!(
        machine.install_snapshot(&metadata).is_err(),
        "installed a snapshot file with bytes after its image"
    );
}

/// A state image cut anywhere or damaged in any single byte, sealed under a
/// valid file checksum (a buggy writer, not the disk, so the checksum cannot
/// catch it), is an error naming the file when loaded, never a panic. The
/// image holds a member and several keys so that every part of the decoder
/// is reached; a flip inside a name or a value may still decode as an image.
#[test]
fn a_malformed_image_under_a_valid_checksum_never_panics_the_loader() {
    let fs = CrashFs::new();
    let files = bare_snapshot_files(&fs);
    let mut state = state_at(30);
    state.members.insert(
        7,
        MemberInfo {
            name: "a".into(),
            peer_urls: vec!["http://a:2380".into()],
            client_urls: vec!["http://a:2379".into()],
        },
    );
    for key in ["k1", "k2", "k1"] {
        put_key(&mut state, key.as_bytes(), b"value");
    }
    let whole = image(&state);
    let metadata = meta(30, 2);
    let mut damaged_images: Vec<(String, Vec<u8>)> = Vec::new();
    for len in 0..whole.len() {
        damaged_images.push((format!("cut to {len}"), whole[..len].to_vec()));
    }
    for at in 0..whole.len() {
        for xor in [0x01u8, 0x80, 0xff] {
            let mut bytes = whole.clone();
            bytes[at] ^= xor;
            damaged_images.push((format!("byte {at} xor {xor:#x}"), bytes));
        }
    }
    for (what, bytes) in damaged_images {
        let path = write_file(&files, &metadata, &bytes);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            ReplicatedState::load(&files, &path, &metadata)
        }));
        match outcome {
            Err(_) => panic!("loading an image with {what} panicked"),
            Ok(Err(error)) => assert!(
                error.to_string().contains(&path.display().to_string()),
                "{what}: {error}"
            ),
            Ok(Ok(_)) => {} // a flip inside a value or a name is still an image
        }
    }
}
