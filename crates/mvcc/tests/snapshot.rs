//! Snapshots: streamed out of one backend, installed into another.

mod common;

use common::{dump, fill, generation_dirs, Rng};
use mvcc::backend::{InstallStep, CHUNK_BYTES_TARGET};
use mvcc::{Backend, Error, Revision};

fn chunks_of(backend: &Backend, chunk_bytes: usize) -> Vec<Vec<u8>> {
    backend
        .snapshot_with_chunk_bytes(chunk_bytes)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

#[test]
fn snapshot_round_trip_copies_every_keyspace() {
    let source_dir = tempfile::tempdir().unwrap();
    let target_dir = tempfile::tempdir().unwrap();
    let source = Backend::open(source_dir.path()).unwrap();
    let mut target = Backend::open(target_dir.path()).unwrap();
    let mut rng = Rng::new(1);
    fill(&source, &mut rng, 3000, 100, "source");
    fill(&target, &mut rng, 500, 10, "target");

    let stream = source.snapshot_with_chunk_bytes(16 * 1024).unwrap();
    let metadata = stream.metadata().clone();
    assert_eq!(metadata, source.read().snapshot_metadata().unwrap());
    let chunks: Vec<Vec<u8>> = stream.collect::<Result<_, _>>().unwrap();
    assert!(chunks.len() > 10, "{} chunks", chunks.len());
    for chunk in &chunks[..chunks.len() - 1] {
        // Closed at the target (plus at most one record).
        assert!(
            chunk.len() >= 16 * 1024 && chunk.len() < 17 * 1024,
            "{}",
            chunk.len()
        );
    }

    let mut steps = Vec::new();
    let mut installer = target.snapshot_installer().unwrap();
    for chunk in &chunks {
        installer.push(chunk).unwrap();
    }
    assert!(installer.is_complete());
    let installed = target
        .install_observed(installer, &mut |step| steps.push(step))
        .unwrap();
    assert_eq!(steps, InstallStep::ALL.to_vec());
    assert_eq!(installed, metadata);

    let expected = dump(&source);
    assert_eq!(dump(&target), expected);
    assert_eq!(target.applied(), source.applied());
    assert_eq!(target.conf_state().unwrap(), source.conf_state().unwrap());
    assert_eq!(target.members().unwrap(), source.members().unwrap());
    assert_eq!(generation_dirs(target_dir.path()).len(), 1);

    // The installed state is the durable one, and accepts new batches.
    drop(target);
    let target = Backend::open(target_dir.path()).unwrap();
    assert_eq!(dump(&target), expected);
    let mut batch = target.write_batch();
    batch.put(b"after", Revision::new(1000, 0), b"x").unwrap();
    batch.set_applied(target.applied().index + 1, 9);
    target.commit(batch).unwrap();
}

#[test]
fn default_chunks_are_about_one_mebibyte() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::open(dir.path()).unwrap();
    fill(&backend, &mut Rng::new(2), 3000, 1000, "big");
    let chunks: Vec<Vec<u8>> = backend
        .snapshot()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(chunks.len() >= 2);
    assert!(chunks[0].len() >= CHUNK_BYTES_TARGET && chunks[0].len() < CHUNK_BYTES_TARGET + 2048);
}

#[test]
fn snapshot_is_consistent_while_writes_continue() {
    let source_dir = tempfile::tempdir().unwrap();
    let target_dir = tempfile::tempdir().unwrap();
    let source = Backend::open(source_dir.path()).unwrap();
    let mut target = Backend::open(target_dir.path()).unwrap();
    let mut rng = Rng::new(3);
    fill(&source, &mut rng, 2000, 50, "before");
    let expected = dump(&source);

    let mut stream = source.snapshot_with_chunk_bytes(8 * 1024).unwrap();
    let mut chunks = vec![stream.next().unwrap().unwrap()];
    // Writes land between chunks: new keys, new versions, removed
    // versions, metadata changes.
    fill(&source, &mut rng, 2000, 50, "during");
    let mut batch = source.write_batch();
    for entry in source
        .read()
        .versions(&mvcc::KeyRange::from_key(b"before".to_vec()))
        .take(500)
    {
        let version = entry.unwrap();
        batch
            .remove_version(&version.key, version.revision)
            .unwrap();
    }
    batch.set_applied(source.applied().index + 1, 5);
    source.commit(batch).unwrap();
    for chunk in stream {
        chunks.push(chunk.unwrap());
    }
    assert_ne!(dump(&source), expected);

    target.install_snapshot(&chunks).unwrap();
    assert_eq!(dump(&target), expected);
}

#[test]
fn installing_an_empty_backend_empties_the_target() {
    let source_dir = tempfile::tempdir().unwrap();
    let target_dir = tempfile::tempdir().unwrap();
    let source = Backend::open(source_dir.path()).unwrap();
    let mut target = Backend::open(target_dir.path()).unwrap();
    fill(&target, &mut Rng::new(4), 100, 10, "old");
    let chunks = chunks_of(&source, CHUNK_BYTES_TARGET);
    assert_eq!(chunks.len(), 1);
    target.install_snapshot(&chunks).unwrap();
    assert_eq!(dump(&target), dump(&source));
    assert_eq!(target.applied().index, 0);
}

/// Every way a stream can be damaged is refused, and the target's state
/// (and directory) stay as they were.
#[test]
fn corrupt_snapshot_streams_are_rejected_leaving_the_old_state() {
    let source_dir = tempfile::tempdir().unwrap();
    let target_dir = tempfile::tempdir().unwrap();
    let source = Backend::open(source_dir.path()).unwrap();
    let mut target = Backend::open(target_dir.path()).unwrap();
    let mut rng = Rng::new(5);
    fill(&source, &mut rng, 1000, 40, "source");
    fill(&target, &mut rng, 300, 10, "target");
    let chunks = chunks_of(&source, 4 * 1024);
    assert!(chunks.len() > 5);
    let old = dump(&target);
    let old_dirs = generation_dirs(target_dir.path());

    let mut damaged: Vec<(&str, Vec<Vec<u8>>)> = Vec::new();
    let mut flipped = chunks.clone();
    flipped[2][100] ^= 0x01;
    damaged.push(("bit flip", flipped));
    let mut missing = chunks.clone();
    missing.remove(3);
    damaged.push(("missing chunk", missing));
    let mut truncated = chunks.clone();
    truncated.pop();
    damaged.push(("missing last chunk", truncated));
    let mut duplicated = chunks.clone();
    duplicated.insert(2, chunks[1].clone());
    damaged.push(("duplicated chunk", duplicated));
    let mut swapped = chunks.clone();
    swapped.swap(1, 2);
    damaged.push(("reordered chunks", swapped));
    let mut cut = chunks.clone();
    let len = cut[1].len();
    cut[1].truncate(len / 2);
    damaged.push(("cut chunk", cut));
    let mut extra = chunks.clone();
    extra.push(chunks[0].clone());
    damaged.push(("chunk after the end", extra));
    damaged.push(("garbage", vec![b"not a snapshot at all".to_vec()]));
    damaged.push(("nothing", vec![]));

    for (what, stream) in damaged {
        let error = target.install_snapshot(&stream).unwrap_err();
        eprintln!("{what}: {error}");
        assert!(
            matches!(
                error,
                Error::SnapshotChecksum { .. }
                    | Error::SnapshotMalformed { .. }
                    | Error::SnapshotIncomplete(_)
            ),
            "{what}: {error:?}"
        );
        assert_eq!(dump(&target), old, "{what}");
        assert_eq!(generation_dirs(target_dir.path()), old_dirs, "{what}");
    }

    // Still the live, writable, durable state.
    drop(target);
    let target = Backend::open(target_dir.path()).unwrap();
    assert_eq!(dump(&target), old);
}

#[test]
fn a_stream_with_a_consistent_checksum_but_a_lying_header_is_rejected() {
    // Re-frame chunk 0 with a header claiming another applied index: the
    // checksums are right, the contents disagree with the metadata records.
    let source_dir = tempfile::tempdir().unwrap();
    let target_dir = tempfile::tempdir().unwrap();
    let source = Backend::open(source_dir.path()).unwrap();
    let mut target = Backend::open(target_dir.path()).unwrap();
    fill(&source, &mut Rng::new(6), 100, 10, "source");
    let mut chunks = chunks_of(&source, CHUNK_BYTES_TARGET);
    let chunk = &mut chunks[0];
    // Payload starts at 20; the header record's body (after tag and length)
    // starts with the applied index.
    chunk[25..33].copy_from_slice(&999u64.to_be_bytes());
    let crc_at = chunk.len() - 4;
    let crc = crc32c::crc32c(&chunk[..crc_at]);
    chunk[crc_at..].copy_from_slice(&crc.to_be_bytes());
    let old = dump(&target);
    assert!(matches!(
        target.install_snapshot(&chunks),
        Err(Error::SnapshotMalformed { .. })
    ));
    assert_eq!(dump(&target), old);
    assert_eq!(generation_dirs(target_dir.path()).len(), 1);
}

#[test]
fn an_abandoned_installer_removes_its_directory() {
    let source_dir = tempfile::tempdir().unwrap();
    let target_dir = tempfile::tempdir().unwrap();
    let source = Backend::open(source_dir.path()).unwrap();
    let target = Backend::open(target_dir.path()).unwrap();
    fill(&source, &mut Rng::new(7), 500, 10, "source");
    let chunks = chunks_of(&source, 2048);
    let mut installer = target.snapshot_installer().unwrap();
    installer.push(&chunks[0]).unwrap();
    assert!(installer.path().exists());
    assert_eq!(generation_dirs(target_dir.path()).len(), 2);
    drop(installer);
    assert_eq!(generation_dirs(target_dir.path()).len(), 1);
}
