//! Damage on disk: a torn tail is cut off and the log opens; a flipped byte
//! anywhere else, or a missing segment, stops the open with an error naming
//! the file and the byte offset of the bad record.

mod common;

use std::path::{Path, PathBuf};

use common::ModelLog;
use wal::{Wal, WalError, WalOptions, WriteBatch};

fn options() -> WalOptions {
    WalOptions {
        segment_bytes: 1024,
        ..WalOptions::default()
    }
}

/// Writes 60 batches of 3 entries (several segments); returns the model.
fn fill(dir: &Path) -> ModelLog {
    let (log, _) = Wal::open(dir, options()).expect("open");
    let mut model = ModelLog::default();
    for round in 0..60 {
        let entries = model.make_append(0, 3, round % 20 == 0, 40);
        log.write(WriteBatch {
            entries: &entries,
            ..WriteBatch::default()
        })
        .expect("append");
    }
    model
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "wal"))
        .collect();
    paths.sort();
    paths
}

/// Byte offsets at which records start in a segment file. The records end
/// where the file does or where its zeros begin (segments are extended with
/// zeros ahead of their appends).
fn record_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut offset = 0;
    while offset + 9 <= bytes.len() && bytes[offset..offset + 9].iter().any(|&byte| byte != 0) {
        offsets.push(offset);
        offset = record_end(bytes, offset);
    }
    offsets
}

/// Where the record starting at `offset` ends, by its length field.
fn record_end(bytes: &[u8], offset: usize) -> usize {
    let length = u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes"));
    offset + 9 + length as usize
}

fn flip(path: &Path, offset: usize) {
    let mut bytes = std::fs::read(path).expect("read");
    bytes[offset] ^= 0x40;
    std::fs::write(path, bytes).expect("write");
}

#[test]
fn a_flipped_byte_mid_log_names_the_file_and_offset() {
    for (segment_choice, record_choice) in [(0usize, 5usize), (1, 1), (2, 7)] {
        let dir = tempfile::tempdir().expect("tempdir");
        fill(dir.path());
        let paths = segments(dir.path());
        assert!(paths.len() > 3, "the log spans several segments");
        let path = &paths[segment_choice];
        let bytes = std::fs::read(path).expect("read");
        let offsets = record_offsets(&bytes);
        let record = offsets[record_choice];
        // A payload byte: the checksum no longer matches.
        flip(path, record + 12);
        let error = Wal::open(dir.path(), options())
            .err()
            .expect("a damaged log must not open");
        match &error {
            WalError::Corrupt {
                path: reported,
                offset,
                ..
            } => {
                assert_eq!(reported, path);
                assert_eq!(*offset, record as u64);
            }
            other => panic!("expected Corrupt, got {other}"),
        }
        let text = error.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains(&format!("at byte {record}")), "{text}");
        assert!(text.contains("checksum mismatch"), "{text}");
    }
}

#[test]
fn damage_in_the_last_segment_before_its_end_is_not_a_torn_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    fill(dir.path());
    // Reopening starts a new (short) segment; damage the one before it, which
    // became the last with content, then remove the new empty one by hand.
    let paths = segments(dir.path());
    let last = paths.last().expect("a segment");
    let bytes = std::fs::read(last).expect("read");
    let offsets = record_offsets(&bytes);
    assert!(offsets.len() > 3);
    let record = offsets[offsets.len() - 3];
    flip(last, record + 12);
    let error = Wal::open(dir.path(), options())
        .err()
        .expect("must not open");
    assert!(
        matches!(&error, WalError::Corrupt { offset, .. } if *offset == record as u64),
        "{error}"
    );
}

#[test]
fn a_chopped_tail_is_cut_off_and_the_log_opens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = fill(dir.path());
    let paths = segments(dir.path());
    let last = paths.last().expect("a segment");
    let bytes = std::fs::read(last).expect("read");
    let offsets = record_offsets(&bytes);
    let last_record = *offsets.last().expect("records");
    let bytes = &bytes[..record_end(&bytes, last_record)];
    // Whatever the cut inside the last record, exactly that record goes.
    for cut in [1usize, 5, 9, 20, bytes.len() - last_record - 1] {
        let scratch = tempfile::tempdir().expect("tempdir");
        for path in &paths {
            std::fs::copy(path, scratch.path().join(path.file_name().expect("name")))
                .expect("copy");
        }
        let chopped = scratch.path().join(last.file_name().expect("name"));
        std::fs::write(&chopped, &bytes[..bytes.len() - cut]).expect("chop");
        let (log, recovered) = Wal::open(scratch.path(), options()).expect("a torn tail must open");
        assert_eq!(
            std::fs::metadata(&chopped).expect("stat").len(),
            last_record as u64
        );
        let mut expected = model.clone();
        expected.entries.pop();
        expected.assert_recovered(&recovered);
        // The log goes on from there, and keeps what it wrote next.
        let entries = expected.make_append(0, 2, false, 40);
        log.write(WriteBatch {
            entries: &entries,
            ..WriteBatch::default()
        })
        .expect("append");
        drop(log);
        let (_, recovered) = Wal::open(scratch.path(), options()).expect("reopen");
        expected.assert_recovered(&recovered);
    }
}

#[test]
fn zeroed_tail_pages_are_a_torn_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = fill(dir.path());
    let last = segments(dir.path()).pop().expect("a segment");
    let mut bytes = std::fs::read(&last).expect("read");
    bytes.extend_from_slice(&[0u8; 4096]);
    std::fs::write(&last, bytes).expect("write");
    let (_, recovered) = Wal::open(dir.path(), options()).expect("zeros at the end must open");
    model.assert_recovered(&recovered);
}

/// A crash can write the later pages of the last write and not its first:
/// the last record then starts with zeros up to a sector boundary, and its
/// remaining bytes are still there. That is a torn tail too.
#[test]
fn a_last_record_whose_first_sector_never_reached_the_disk_is_a_torn_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = fill(dir.path());
    let last = segments(dir.path()).pop().expect("a segment");
    let mut bytes = std::fs::read(&last).expect("read");
    let last_record = *record_offsets(&bytes).last().expect("records");
    let sector_end = (last_record + 9).div_ceil(512) * 512;
    let record_end = record_end(&bytes, last_record);
    assert!(
        sector_end < record_end || bytes[sector_end.min(bytes.len())..].iter().all(|&b| b == 0),
        "the test needs bytes of the record after the zeroed sector, or none at all"
    );
    bytes[last_record..sector_end.min(record_end)].fill(0);
    // Bytes of the record past the zeroed sector stay (if any), and the
    // zeros the segment was extended with follow.
    bytes.extend_from_slice(&[0u8; 1024]);
    std::fs::write(&last, &bytes).expect("write");
    let (_, recovered) = Wal::open(dir.path(), options()).expect("a torn tail must open");
    let mut expected = model.clone();
    expected.entries.pop();
    expected.assert_recovered(&recovered);
    assert_eq!(
        std::fs::metadata(&last).expect("stat").len(),
        last_record as u64,
        "the log is cut where the torn record began"
    );
}

#[test]
fn a_missing_segment_is_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    fill(dir.path());
    let paths = segments(dir.path());
    std::fs::remove_file(&paths[2]).expect("remove");
    let error = Wal::open(dir.path(), options())
        .err()
        .expect("must not open");
    assert!(matches!(error, WalError::MissingSegment { .. }), "{error}");
    assert!(
        error.to_string().contains(&paths[2].display().to_string()),
        "{error}"
    );
}

#[test]
fn a_missing_first_segment_is_missing_entries() {
    let dir = tempfile::tempdir().expect("tempdir");
    fill(dir.path());
    let paths = segments(dir.path());
    std::fs::remove_file(&paths[0]).expect("remove");
    let error = Wal::open(dir.path(), options())
        .err()
        .expect("must not open");
    assert!(error.to_string().contains("are missing"), "{error}");
}
