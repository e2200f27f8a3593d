//! Snapshot files: durable only once renamed into place, older ones removed
//! only after that, damage reported with the file and offset.

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

#[test]
fn a_snapshot_round_trips_in_pieces_and_replaces_the_older_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = SnapshotFiles::open(dir.path(), Arc::new(StdFs)).expect("open");
    assert!(files.latest().expect("latest").is_none());
    write(&files, &metadata(10, 2), &data(5000, 1));
    write(&files, &metadata(20, 3), &data(12345, 2));
    let (meta, path) = files.latest().expect("latest").expect("a snapshot");
    assert_eq!(meta, metadata(20, 3));
    assert_eq!(read_all(&files, &path), data(12345, 2));
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(names.len(), 1, "the older snapshot is removed: {names:?}");
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
    // Reopening cleared the stale temporary; a new snapshot replaces the old.
    write(&files, &metadata(30, 3), &data(100, 3));
    assert_eq!(fs.list_dir(dir).expect("list").len(), 1);
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
