//! Found by the adversarial review of `open_member_storage_on` and the snapshot-file
//! retention rules (issue 11 items 4, 5, 9), on the WAL's `CrashFs`.
//!
//! Tests named `review_*` are expected to FAIL on 2e91018: each one is a
//! finding. Tests named `held_*` probe an attack that the change survives;
//! they pass and stay as regression guards.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use proto::etcdserverpb::PutRequest;
use proto::internal::{internal_request, InternalRequest};
use raft::{ConfState, Entry, HardState, InitialState, SnapshotMetadata};
use server::node::{LogStorage, StateMachine};
use server::state::{KvStateMachine, ReplicatedState, SharedState};
use server::storage::{open_member_storage_on, snapshot_dir, MemberStorage, StorageOpenError};
use wal::crash_fs::CrashFs;
use wal::fs::FileSystem;
use wal::SnapshotFiles;

const DATA_DIR: &str = "/data/review";

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

/// FINDING. The member's log holds entries 1..=10 of term 2 and it has
/// durably recorded that 8 of them are committed. A snapshot file at index
/// 7 naming term 3 contradicts the committed entry 7 (term 2): one of the
/// two is damaged, and the module comment promises "never start a member
/// whose log and snapshot disagree in a way that could lose committed
/// entries". Open instead takes the file as a leader's snapshot (kind
/// `Installed`), throws away the whole log including the committed entry 8,
/// and hands Raft a hard state whose commit index (8) is beyond the last
/// index it has (7). If this member was part of the quorum that committed
/// entry 8, that acknowledged write now lives on one member fewer.
/// (The shipped test `a_received_snapshot_inside_the_log_but_of_another_
/// term_replaces_the_log` asserts exactly this acceptance.)
#[test]
fn a_snapshot_file_contradicting_a_committed_entry_is_refused() {
    let fs = CrashFs::new();
    let mut storage = open_ok(&fs);
    storage
        .log
        .persist(Some(hard_state(2, 1, 8)), &entries(1..=10, 2), None)
        .expect("persist");
    let path = save_snapshot(&storage.snapshots, 7, 3);
    let fs = crash(storage, &fs);
    match open(&fs) {
        Err(error) => {
            let text = error.to_string();
            assert!(text.contains(&path.display().to_string()), "{text}");
        }
        Ok(storage) => {
            let initial = initial_of(&storage);
            panic!(
                "open accepted {} (index 7, term 3) although the log's committed entry 7 has \
                 term 2: it dropped committed entry 8 and restarts with commit {} beyond its \
                 last index {}",
                path.display(),
                initial.hard_state.commit,
                last_index(initial)
            );
        }
    }
}

/// FINDING (same root cause, no damage needed beyond one stale file): the
/// committed prefix reaches past the snapshot. The log was compacted by
/// this member at 6 (marker, file 6) and holds 7..=10 with 10 committed;
/// a file at 9 of another term than the committed entry 9 is opened as an
/// `Installed` snapshot, dropping committed entry 10.
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

/// HELD. A received snapshot recorded at open must never let the member
/// vote twice in a term: when its term equals the durable one, the vote
/// cast in that term stays; when it is higher, the member never was in
/// that term, so no vote is lost by starting it with none.
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
    let fs2 = fs.clone();
    drop(fs);
    let mut storage = open_ok(&fs2);
    storage
        .log
        .persist(Some(hard_state(9, 3, 40)), &[], None)
        .expect("persist");
    save_snapshot(&storage.snapshots, 50, 6);
    let fs2 = crash(storage, &fs2);
    let storage = open_ok(&fs2);
    let initial = initial_of(&storage);
    assert_eq!((initial.hard_state.term, initial.hard_state.vote), (9, 3));
}

/// HELD. Crash at every step of recording a local snapshot: file written,
/// marker written, segments purged, older files removed. Every restart
/// finds the newest state and the entries after it, never an error.
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

/// FINDING (low). `ReplicatedState::load` says it checks "that the image is
/// all the file holds", by reading one more byte after the image. But the
/// store's decoder reads through a 256 KiB `BufReader` and drops what it
/// read ahead, so bytes after the image's end marker are swallowed and the
/// check never sees them: a file with garbage after a valid image (and a
/// checksum over it) is installed as if whole.
#[test]
fn bytes_after_the_state_image_are_refused_naming_the_file() {
    let fs = CrashFs::new();
    let files =
        SnapshotFiles::open(Path::new("/snap"), Arc::new(fs.clone())).expect("open snap dir");
    let metadata = meta(12, 2);
    let mut image = Vec::new();
    state_at(12).write_image(&mut image).expect("image");
    image.extend_from_slice(b"trailing garbage after the image");
    let mut writer = files.create(&metadata).expect("create");
    writer.write(&image).expect("write");
    let path = writer.finish().expect("finish");
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

/// HELD. `remove_older_than` run for a local snapshot while a received,
/// newer snapshot is waiting to be installed keeps the newer one, and the
/// install then removes the local one.
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

/// HELD. A state image damaged in any single byte, or cut anywhere, and
/// sealed with a valid file checksum (a buggy writer, not the disk) is an
/// error naming the file when loaded, never a panic.
#[test]
fn a_malformed_image_under_a_valid_checksum_never_panics_the_loader() {
    let fs = CrashFs::new();
    let files =
        SnapshotFiles::open(Path::new("/snap"), Arc::new(fs.clone())).expect("open snap dir");
    let mut state = state_at(30);
    state.members.insert(
        7,
        server::state::MemberInfo {
            name: "a".into(),
            peer_urls: vec!["http://a:2380".into()],
            client_urls: vec!["http://a:2379".into()],
        },
    );
    for key in ["k1", "k2", "k1"] {
        state.store.apply(&InternalRequest {
            request: Some(internal_request::Request::Put(PutRequest {
                key: key.as_bytes().to_vec().into(),
                value: b"value".to_vec().into(),
                ..PutRequest::default()
            })),
        });
    }
    let mut image = Vec::new();
    state.write_image(&mut image).expect("image");
    let metadata = meta(30, 2);
    let mut damaged_images: Vec<(String, Vec<u8>)> = Vec::new();
    for len in 0..image.len() {
        damaged_images.push((format!("cut to {len}"), image[..len].to_vec()));
    }
    for at in 0..image.len() {
        for xor in [0x01u8, 0x80, 0xff] {
            let mut bytes = image.clone();
            bytes[at] ^= xor;
            damaged_images.push((format!("byte {at} xor {xor:#x}"), bytes));
        }
    }
    for (what, bytes) in damaged_images {
        let mut writer = files.create(&metadata).expect("create");
        writer.write(&bytes).expect("write");
        let path = writer.finish().expect("finish");
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
