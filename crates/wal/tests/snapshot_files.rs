//! Snapshot files: durable only once renamed into place; each writer owns
//! only its own temporary; older snapshots removed only when the caller
//! says so (`remove_older_than`), never by another writer; damage reported
//! with the file and offset.

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

fn data(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|position| (position as u8).wrapping_mul(7) ^ salt)
        .collect()
}

fn write(files: &SnapshotFiles, meta: &SnapshotMetadata, bytes: &[u8]) {
    let mut writer = files.create(meta).expect("create");
    for chunk in bytes.chunks(1000) {
        writer.write(chunk).expect("write");
    }
    writer.finish().expect("finish");
}

fn read_all(files: &SnapshotFiles, path: &Path) -> Vec<u8> {
    let (_, mut reader) = files.open_data(path).expect("open");
    let mut out = Vec::new();
    let mut buffer = vec![0u8; 777];
    loop {
        let read = reader.read_chunk(&mut buffer).expect("read");
        if read == 0 {
            return out;
        }
        out.extend_from_slice(&buffer[..read]);
    }
}

fn names(fs: &dyn FileSystem, dir: &Path) -> Vec<String> {
    let mut names = fs.list_dir(dir).expect("list");
    names.sort();
    names
}

#[test]
fn a_snapshot_round_trips_in_pieces_and_the_older_one_goes_only_when_asked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = SnapshotFiles::open(dir.path(), Arc::new(StdFs)).expect("open");
    assert!(files.latest().expect("latest").is_none());
    write(&files, &metadata(10, 2), &data(5000, 1));
    write(&files, &metadata(20, 3), &data(12345, 2));
    let (meta, path) = files.latest().expect("latest").expect("a snapshot");
    assert_eq!(meta, metadata(20, 3));
    assert_eq!(read_all(&files, &path), data(12345, 2));
    assert_eq!(names(&StdFs, dir.path()).len(), 2, "finish removes nothing");
    assert_eq!(
        files.remove_older_than(&metadata(20, 3)).expect("remove"),
        1
    );
    let left = names(&StdFs, dir.path());
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(read_all(&files, &path), data(12345, 2));
}

/// The member's own snapshot job and a snapshot arriving from the leader
/// write into one directory at the same time. Before each writer owned only
/// its own file, the first `finish` deleted the other's temporary and the
/// second `finish` failed at its rename (and the member stopped).
#[test]
fn two_writers_in_one_directory_both_finish_with_their_files_intact() {
    let fs = CrashFs::new();
    let dir = Path::new("/snap");
    let files = SnapshotFiles::open(dir, Arc::new(fs.clone())).expect("open");
    let own = metadata(20, 3);
    let received = metadata(35, 4);
    let mut own_writer = files.create(&own).expect("create own");
    let mut received_writer = files.create(&received).expect("create received");
    for round in 0..5 {
        own_writer.write(&data(700, round)).expect("write own");
        received_writer
            .write(&data(900, round + 100))
            .expect("write received");
    }
    let own_path = own_writer.finish().expect("the first writer finishes");
    let received_path = received_writer
        .finish()
        .expect("the second writer finishes too");
    let expected = |len: usize, salt: u8| -> Vec<u8> {
        (0..5u8).flat_map(|round| data(len, round + salt)).collect()
    };
    assert_eq!(read_all(&files, &own_path), expected(700, 0));
    assert_eq!(read_all(&files, &received_path), expected(900, 100));
    assert_eq!(files.verify(&own_path).expect("own intact"), own);
    assert_eq!(
        files.verify(&received_path).expect("received intact"),
        received
    );
    // Both are durable: nothing else is left, and a crash keeps both.
    assert_eq!(names(&fs, dir).len(), 2, "{:?}", names(&fs, dir));
    let fs = fs.crash(None);
    let files = SnapshotFiles::open(dir, Arc::new(fs.clone())).expect("reopen");
    assert_eq!(read_all(&files, &own_path), expected(700, 0));
    assert_eq!(read_all(&files, &received_path), expected(900, 100));
}

/// The same snapshot written twice at once (own job and leader, same term
/// and index): both finish, the file in place is whole.
#[test]
fn two_writers_of_the_same_snapshot_both_finish() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = SnapshotFiles::open(dir.path(), Arc::new(StdFs)).expect("open");
    let meta = metadata(40, 5);
    let mut first = files.create(&meta).expect("create");
    let mut second = files.create(&meta).expect("create");
    assert_ne!(first.temp_path(), second.temp_path());
    first.write(&data(3000, 9)).expect("write");
    second.write(&data(3000, 9)).expect("write");
    let first_path = first.finish().expect("finish");
    let second_path = second.finish().expect("finish");
    assert_eq!(first_path, second_path);
    assert_eq!(read_all(&files, &first_path), data(3000, 9));
    assert_eq!(names(&StdFs, dir.path()).len(), 1);
}

/// The same on real threads: whatever the interleaving, both succeed.
#[test]
fn writers_on_threads_never_disturb_each_other() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = SnapshotFiles::open(dir.path(), Arc::new(StdFs)).expect("open");
    for round in 0..20u64 {
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let writers: Vec<_> = [0u64, 1]
            .into_iter()
            .map(|which| {
                let files = files.clone();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    let meta = metadata(100 + round * 2 + which, 7);
                    let mut writer = files.create(&meta).expect("create");
                    writer.write(&data(4000, which as u8)).expect("write");
                    barrier.wait();
                    writer.finish().map(|path| (path, which))
                })
            })
            .collect();
        for writer in writers {
            let (path, which) = writer
                .join()
                .expect("writer thread")
                .expect("every writer finishes");
            assert_eq!(read_all(&files, &path), data(4000, which as u8));
        }
    }
    assert_eq!(names(&StdFs, dir.path()).len(), 40);
}

/// A snapshot received from the leader waits for the apply thread to
/// install it; a later snapshot finishing meanwhile must not take it away.
#[test]
fn a_received_snapshot_not_yet_installed_survives_a_later_finish() {
    let fs = CrashFs::new();
    let dir = Path::new("/snap");
    let files = SnapshotFiles::open(dir, Arc::new(fs.clone())).expect("open");
    write(&files, &metadata(10, 2), &data(3000, 1));
    write(&files, &metadata(20, 3), &data(3000, 2));
    let pending = files.path_for(&metadata(10, 2));
    assert_eq!(
        files.verify(&pending).expect("still there"),
        metadata(10, 2)
    );
    assert_eq!(read_all(&files, &pending), data(3000, 1));
}

/// The retention rule at its boundary: strictly older finished files go;
/// the one named, newer ones and every writer's temporary stay; the removal
/// is durable.
#[test]
fn remove_older_than_takes_only_older_finished_snapshots() {
    let fs = CrashFs::new();
    let dir = Path::new("/snap");
    let files = SnapshotFiles::open(dir, Arc::new(fs.clone())).expect("open");
    for (index, salt) in [(9, 1), (10, 2), (11, 3), (30, 4)] {
        write(&files, &metadata(index, 2), &data(500, salt));
    }
    // A writer at work on an older snapshot: its temporary is its own.
    let mut slow = files.create(&metadata(5, 1)).expect("create");
    slow.write(&data(500, 5)).expect("write");
    assert_eq!(
        files.remove_older_than(&metadata(10, 2)).expect("remove"),
        1
    );
    assert_eq!(files.remove_older_than(&metadata(10, 2)).expect("again"), 0);
    let left = names(&fs, dir);
    assert_eq!(left.len(), 4, "{left:?}");
    for index in [10, 11, 30] {
        assert!(files.verify(&files.path_for(&metadata(index, 2))).is_ok());
    }
    assert!(
        left.iter().any(|name| name.ends_with(".snap.tmp")),
        "{left:?}"
    );
    // The slow writer still finishes (its file is older: the next removal
    // takes it).
    let slow_path = slow.finish().expect("the slow writer finishes");
    assert_eq!(read_all(&files, &slow_path), data(500, 5));
    assert_eq!(
        files.remove_older_than(&metadata(10, 2)).expect("remove"),
        1
    );
    // Durable: after a crash the removed files stay removed.
    let fs = fs.crash(None);
    let left = names(&fs, dir);
    assert_eq!(left.len(), 3, "{left:?}");
}

/// An abandoned writer (a transfer cut off) removes its own temporary and
/// nothing else; stale temporaries of a crashed run go only at open.
#[test]
fn a_dropped_writer_removes_only_its_own_temporary() {
    let fs = CrashFs::new();
    let dir = Path::new("/snap");
    let files = SnapshotFiles::open(dir, Arc::new(fs.clone())).expect("open");
    let mut kept = files.create(&metadata(20, 3)).expect("create");
    kept.write(&data(100, 1)).expect("write");
    let mut abandoned = files.create(&metadata(20, 3)).expect("create");
    abandoned.write(&data(100, 2)).expect("write");
    let abandoned_temp = abandoned.temp_path().to_path_buf();
    drop(abandoned);
    assert!(
        fs.file_len(&abandoned_temp).is_err(),
        "its own temporary goes"
    );
    assert!(fs.file_len(kept.temp_path()).is_ok(), "the other one stays");
    let path = kept.finish().expect("finish");
    assert_eq!(read_all(&files, &path), data(100, 1));
}

#[test]
fn a_flipped_byte_is_reported_with_file_and_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = SnapshotFiles::open(dir.path(), Arc::new(StdFs)).expect("open");
    write(&files, &metadata(10, 2), &data(5000, 1));
    let (_, path) = files.latest().expect("latest").expect("a snapshot");
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[3000] ^= 1;
    std::fs::write(&path, &bytes).expect("write");
    let error = files.latest().expect_err("damage must be reported");
    let text = error.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("checksum mismatch"), "{text}");
    assert!(text.contains("at byte"), "{text}");
}

#[test]
fn a_crash_before_the_rename_keeps_the_previous_snapshot() {
    let fs = CrashFs::new();
    let dir = Path::new("/snap");
    let files = SnapshotFiles::open(dir, Arc::new(fs.clone())).expect("open");
    write(&files, &metadata(10, 2), &data(3000, 1));
    // Write the next one completely but crash before finishing it.
    let mut writer = files.create(&metadata(20, 3)).expect("create");
    writer.write(&data(3000, 2)).expect("write");
    let fs = fs.crash(Some(5));
    drop(writer);
    let files = SnapshotFiles::open(dir, Arc::new(fs.clone())).expect("reopen");
    let (meta, path) = files
        .latest()
        .expect("latest")
        .expect("the old snapshot survives");
    assert_eq!(meta, metadata(10, 2));
    assert_eq!(read_all(&files, &path), data(3000, 1));
    // Reopening cleared the stale temporary; a new snapshot replaces the old
    // once the caller says the old one is no longer needed.
    assert_eq!(names(&fs, dir).len(), 1, "{:?}", names(&fs, dir));
    write(&files, &metadata(30, 3), &data(100, 3));
    files
        .remove_older_than(&metadata(30, 3))
        .expect("remove older");
    assert_eq!(names(&fs, dir).len(), 1);
}

#[test]
fn a_finished_snapshot_survives_a_crash_right_after() {
    let fs = CrashFs::new();
    let dir = Path::new("/snap");
    let files = SnapshotFiles::open(dir, Arc::new(fs.clone())).expect("open");
    write(&files, &metadata(10, 2), &data(3000, 1));
    write(&files, &metadata(20, 3), &data(3000, 2));
    let fs = fs.crash(Some(9));
    let files = SnapshotFiles::open(dir, Arc::new(fs)).expect("reopen");
    let (meta, path) = files.latest().expect("latest").expect("a snapshot");
    assert_eq!(meta, metadata(20, 3));
    assert_eq!(read_all(&files, &path), data(3000, 2));
}
