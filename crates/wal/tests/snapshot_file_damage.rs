//! `SnapshotFiles` against bad files: damage of any kind is an error
//! naming the file, never a panic and never other contents taken as the
//! snapshot; a file's name and contents must agree; removing older files
//! never takes one at or above the snapshot kept, nor one it did not write.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;

use raft::{ConfState, SnapshotMetadata};
use wal::crash_fs::CrashFs;
use wal::fs::{FileSystem, StdFs};
use wal::SnapshotFiles;

fn metadata(index: u64, term: u64) -> SnapshotMetadata {
    SnapshotMetadata {
        index,
        term,
        conf_state: ConfState::with_voters([1, 2, 3]),
    }
}

fn write(files: &SnapshotFiles, meta: &SnapshotMetadata, bytes: &[u8]) -> std::path::PathBuf {
    let mut writer = files.create(meta).expect("create");
    writer.write(bytes).expect("write");
    writer.finish().expect("finish")
}

/// Every truncation of a snapshot file, a flip of the low or the high bit
/// of any of its bytes, and a tail appended to it give an error naming the
/// file from `latest()`, which checks the newest file end to end: never a
/// panic, and never a silent success with other contents.
#[test]
fn every_truncation_and_flip_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = SnapshotFiles::open(dir.path(), Arc::new(StdFs)).expect("open");
    let payload: Vec<u8> = (0..300u32).map(|i| (i * 13) as u8).collect();
    let path = write(&files, &metadata(10, 2), &payload);
    let original = std::fs::read(&path).expect("read");
    let check = |bytes: &[u8], what: &str| {
        std::fs::write(&path, bytes).expect("write");
        let outcome = catch_unwind(AssertUnwindSafe(|| files.latest()));
        match outcome {
            Err(_) => panic!("latest() panicked on {what}"),
            Ok(Ok(found)) => {
                panic!("latest() accepted {what}: {found:?}")
            }
            Ok(Err(error)) => {
                let text = error.to_string();
                assert!(text.contains(&path.display().to_string()), "{what}: {text}");
            }
        }
    };
    for len in 0..original.len() {
        check(&original[..len], &format!("the file cut to {len} bytes"));
    }
    for at in 0..original.len() {
        for bit in [0x01u8, 0x80] {
            let mut bytes = original.clone();
            bytes[at] ^= bit;
            check(&bytes, &format!("byte {at} xor {bit:#x}"));
        }
    }
    let mut longer = original.clone();
    longer.extend_from_slice(b"tail");
    check(&longer, "4 bytes appended");
}

/// A file renamed by hand, so that its name and its contents disagree, is
/// an error naming it, whether the name says a newer or an older snapshot
/// (another index or another term) than the contents.
#[test]
fn a_file_whose_name_lies_is_an_error_naming_it() {
    for (written, named) in [((10, 2), (12, 2)), ((10, 2), (10, 3)), ((12, 3), (11, 3))] {
        let fs = CrashFs::new();
        let dir = Path::new("/snap");
        let files = SnapshotFiles::open(dir, Arc::new(fs.clone())).expect("open");
        let path = write(&files, &metadata(written.0, written.1), b"state");
        let wrong = files.path_for(&metadata(named.0, named.1));
        fs.rename(&path, &wrong).expect("rename");
        let error = files.latest().expect_err("a lying name must be refused");
        assert!(
            error.to_string().contains(&wrong.display().to_string()),
            "{error}"
        );
    }
}

/// `remove_older_than` takes only the files below the index it keeps:
/// never the kept file, a file of the same index and another term, a newer
/// one (a received snapshot waiting to be installed), or a writer's
/// temporary. Run twice, it removes nothing more; a file whose name does not
/// parse (an operator's) is left alone.
#[test]
fn remove_older_than_spares_the_kept_index_newer_files_and_strangers() {
    let fs = CrashFs::new();
    let dir = Path::new("/snap");
    let files = SnapshotFiles::open(dir, Arc::new(fs.clone())).expect("open");
    for (index, term) in [(5, 1), (10, 2), (10, 3), (40, 4)] {
        write(&files, &metadata(index, term), b"x");
    }
    let mut stranger = fs
        .create_new(&dir.join("notes.snap"))
        .expect("create stranger");
    stranger.append(b"operator notes").expect("append");
    stranger.sync_data().expect("sync");
    let mut pending = files.create(&metadata(1, 1)).expect("a writer at work");
    pending.write(b"old").expect("write");
    assert_eq!(
        files.remove_older_than(&metadata(10, 2)).expect("remove"),
        1
    );
    assert_eq!(files.remove_older_than(&metadata(10, 2)).expect("again"), 0);
    let mut names = fs.list_dir(dir).expect("list");
    names.sort();
    assert_eq!(names.len(), 5, "{names:?}");
    assert!(names.contains(&"notes.snap".to_string()));
    let (newest, _) = files.latest().expect("latest").expect("some");
    assert_eq!(newest, metadata(40, 4));
}
