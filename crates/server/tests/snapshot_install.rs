//! Installing snapshots received from the leader, on `CrashFs`: a snapshot
//! Raft accepted stays on disk until the apply thread has installed it,
//! whatever arrives meanwhile; older files go only after a newer snapshot
//! is installed; an install never rolls the state back.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{image, state_at};
use raft::{ConfState, SnapshotMetadata};
use server::node::StateMachine;
use server::state::{KvStateMachine, SharedState};
use wal::crash_fs::CrashFs;
use wal::fs::FileSystem;
use wal::SnapshotFiles;

fn meta(index: u64, term: u64) -> SnapshotMetadata {
    SnapshotMetadata {
        index,
        term,
        conf_state: ConfState::with_voters([1, 2, 3]),
    }
}

fn setup() -> (CrashFs, SnapshotFiles, SharedState, KvStateMachine) {
    let fs = CrashFs::new();
    let files = SnapshotFiles::open(Path::new("/snap"), Arc::new(fs.clone())).expect("open");
    let state = SharedState::new();
    let machine = KvStateMachine::new(state.clone(), Some(files.clone())).expect("machine");
    (fs, files, state, machine)
}

/// Two snapshots from the leader arrive before the apply thread gets to
/// the first. Before a writer stopped removing older files, finishing the
/// second deleted the first, and installing it stopped the member.
#[test]
fn a_received_snapshot_waits_on_disk_until_it_is_installed() {
    let (fs, files, state, mut machine) = setup();
    state_at(10)
        .save(&files, &meta(10, 2))
        .expect("first arrives");
    state_at(20)
        .save(&files, &meta(20, 3))
        .expect("second arrives");
    machine
        .install_snapshot(&meta(10, 2))
        .expect("the first is still there to install");
    assert_eq!(image(&state.read().expect("state")), image(&state_at(10)));
    assert_eq!(machine.applied_index(), 10);
    machine
        .install_snapshot(&meta(20, 3))
        .expect("the second installs too");
    assert_eq!(image(&state.read().expect("state")), image(&state_at(20)));
    // Installed: the older file has served its purpose, durably.
    let fs = fs.crash(None);
    let names = fs.list_dir(Path::new("/snap")).expect("list");
    assert_eq!(names.len(), 1, "{names:?}");
    assert_eq!(
        Path::new("/snap").join(&names[0]),
        files.path_for(&meta(20, 3))
    );
}

/// The boundary of the rule: installing a snapshot removes the files below
/// it and keeps it and anything newer (a later snapshot already received).
#[test]
fn installing_keeps_the_installed_file_and_newer_ones() {
    let (fs, files, _state, mut machine) = setup();
    for (index, term) in [(5, 1), (10, 2), (30, 4)] {
        state_at(index)
            .save(&files, &meta(index, term))
            .expect("save");
    }
    machine.install_snapshot(&meta(10, 2)).expect("install");
    let mut names = fs.list_dir(Path::new("/snap")).expect("list");
    names.sort();
    let expected: Vec<String> = [meta(10, 2), meta(30, 4)]
        .iter()
        .map(|metadata| {
            files
                .path_for(metadata)
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(names, expected);
}

#[test]
fn an_install_never_rolls_the_state_back() {
    let (_fs, files, state, mut machine) = setup();
    state_at(20).save(&files, &meta(20, 3)).expect("save");
    state_at(10).save(&files, &meta(10, 2)).expect("save");
    machine.install_snapshot(&meta(20, 3)).expect("install");
    for stale in [meta(10, 2), meta(20, 3)] {
        let error = machine
            .install_snapshot(&stale)
            .expect_err("an install at or below the applied index is refused");
        assert!(
            error
                .to_string()
                .contains(&files.path_for(&stale).display().to_string()),
            "{error}"
        );
    }
    assert_eq!(state.read().expect("state").applied_index, 20);
}

#[test]
fn a_damaged_received_snapshot_leaves_the_state_untouched_and_names_the_file() {
    let (fs, files, state, mut machine) = setup();
    let path = state_at(20).save(&files, &meta(20, 3)).expect("save");
    let len = fs.file_len(&path).expect("len") as usize;
    fs.corrupt(&path, len - 20, 0x01).expect("corrupt");
    let error = machine
        .install_snapshot(&meta(20, 3))
        .expect_err("damage is refused");
    assert!(
        error.to_string().contains(&path.display().to_string()),
        "{error}"
    );
    assert_eq!(state.read().expect("state").applied_index, 0);
    assert_eq!(machine.applied_index(), 0);
}
