//! The backend's batches, metadata and reads, against models.

mod common;

use common::dump;
use mvcc::{AppliedIndex, Backend, Error, KeyRange, Revision, Version, VersionRecord};
use proptest::prelude::*;
use raft::ConfState;
use std::collections::BTreeMap;

#[test]
fn fresh_backend_is_empty_and_reopens_to_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::open(dir.path()).unwrap();
    assert_eq!(backend.applied(), AppliedIndex::default());
    assert_eq!(backend.conf_state().unwrap(), ConfState::default());
    assert!(backend.members().unwrap().is_empty());
    assert_eq!(backend.current_revision().unwrap(), 0);
    assert_eq!(backend.compacted_revision().unwrap(), 0);
    let before = dump(&backend);
    drop(backend);
    let backend = Backend::open(dir.path()).unwrap();
    assert_eq!(dump(&backend), before);
    assert_eq!(common::generation_dirs(dir.path()).len(), 1);
}

#[test]
fn a_second_backend_on_the_same_root_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _backend = Backend::open(dir.path()).unwrap();
    assert!(matches!(Backend::open(dir.path()), Err(Error::Io { .. })));
}

#[test]
fn missing_current_with_databases_present_is_an_error_not_a_wipe() {
    let dir = tempfile::tempdir().unwrap();
    drop(Backend::open(dir.path()).unwrap());
    std::fs::remove_file(dir.path().join("CURRENT")).unwrap();
    assert!(matches!(
        Backend::open(dir.path()),
        Err(Error::Corrupt { .. })
    ));
    assert_eq!(common::generation_dirs(dir.path()).len(), 1);
}

#[test]
fn an_interrupted_creation_is_redone() {
    // A crash while creating the first generation leaves INIT and a
    // partial directory, and no CURRENT.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("INIT"), b"").unwrap();
    let partial = dir.path().join("db-0000000000000001");
    std::fs::create_dir(&partial).unwrap();
    std::fs::write(partial.join("junk"), b"half written").unwrap();
    let backend = Backend::open(dir.path()).unwrap();
    assert_eq!(backend.applied(), AppliedIndex::default());
    assert!(!dir.path().join("INIT").exists());
    assert!(!partial.join("junk").exists());
}

#[test]
fn current_naming_a_missing_directory_is_an_error_not_an_empty_state() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::open(dir.path()).unwrap();
    let path = backend.db_path().to_path_buf();
    drop(backend);
    std::fs::remove_dir_all(&path).unwrap();
    assert!(matches!(
        Backend::open(dir.path()),
        Err(Error::Corrupt { .. })
    ));
}

#[test]
fn batch_commits_data_and_metadata_together() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::open(dir.path()).unwrap();
    let conf_state = ConfState {
        voters: vec![1, 2, 3],
        learners: vec![4],
    };
    let mut batch = backend.write_batch();
    batch.put(b"a", Revision::new(2, 0), b"one").unwrap();
    batch.put_tombstone(b"b", Revision::new(2, 1)).unwrap();
    batch.put_lease(-5, b"lease");
    batch.put_member(7, b"member seven");
    batch.set_conf_state(&conf_state);
    batch.set_current_revision(2);
    batch.set_compacted_revision(1);
    batch.set_applied(10, 3);
    let view_before = backend.read();
    backend.commit(batch).unwrap();

    // A view taken before the commit does not see it.
    assert_eq!(view_before.get(b"a", Revision::new(2, 0)).unwrap(), None);
    assert_eq!(view_before.applied().unwrap(), AppliedIndex::default());

    let check = |backend: &Backend| {
        let view = backend.read();
        assert_eq!(backend.applied(), AppliedIndex { index: 10, term: 3 });
        assert_eq!(view.applied().unwrap(), AppliedIndex { index: 10, term: 3 });
        assert_eq!(
            view.get(b"a", Revision::new(2, 0)).unwrap(),
            Some(VersionRecord::Put(b"one".to_vec()))
        );
        assert_eq!(
            view.get(b"b", Revision::new(2, 1)).unwrap(),
            Some(VersionRecord::Tombstone)
        );
        assert_eq!(view.lease(-5).unwrap(), Some(b"lease".to_vec()));
        assert_eq!(
            view.leases().collect::<Result<Vec<_>, _>>().unwrap(),
            vec![(-5, b"lease".to_vec())]
        );
        assert_eq!(
            view.members().unwrap(),
            BTreeMap::from([(7, b"member seven".to_vec())])
        );
        assert_eq!(view.conf_state().unwrap(), conf_state);
        assert_eq!(view.current_revision().unwrap(), 2);
        assert_eq!(view.compacted_revision().unwrap(), 1);
        let metadata = view.snapshot_metadata().unwrap();
        assert_eq!((metadata.index, metadata.term), (10, 3));
        assert_eq!(metadata.conf_state, conf_state);
    };
    check(&backend);
    // A view keeps the database open (fjall's lock too), so it goes first.
    drop(view_before);
    drop(backend);
    check(&Backend::open(dir.path()).unwrap());
}

#[test]
fn an_applied_index_that_does_not_grow_is_refused_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::open(dir.path()).unwrap();
    let mut batch = backend.write_batch();
    batch.set_applied(5, 1);
    backend.commit(batch).unwrap();
    let before = dump(&backend);
    for stale in [5, 4, 0] {
        let mut batch = backend.write_batch();
        batch.put(b"k", Revision::new(1, 0), b"v").unwrap();
        batch.set_applied(stale, 1);
        assert!(matches!(
            backend.commit(batch),
            Err(Error::AppliedRegression {
                applied: 5,
                attempted
            }) if attempted == stale
        ));
    }
    assert_eq!(dump(&backend), before);
    assert_eq!(backend.applied().index, 5);
}

#[test]
fn an_oversized_key_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::open(dir.path()).unwrap();
    let mut batch = backend.write_batch();
    let key = vec![b'x'; 70_000];
    assert!(matches!(
        batch.put(&key, Revision::new(1, 0), b"v"),
        Err(Error::KeyTooLarge { .. })
    ));
}

/// A history used by the range tests: (key, main revision, deleted?).
fn scenario(backend: &Backend) {
    let writes: &[(&[u8], i64, bool)] = &[
        (b"a", 2, false),
        (b"b", 3, false),
        (b"a", 4, false),
        (b"c", 5, false),
        (b"b", 6, true),
        (b"a\x00", 7, false),
        (b"d", 8, false),
        (b"b", 9, false),
    ];
    for (index, &(key, main, deleted)) in writes.iter().enumerate() {
        let mut batch = backend.write_batch();
        let revision = Revision::new(main, 0);
        if deleted {
            batch.put_tombstone(key, revision).unwrap();
        } else {
            batch
                .put(key, revision, format!("{main}").as_bytes())
                .unwrap();
        }
        batch.set_applied(index as u64 + 1, 1);
        backend.commit(batch).unwrap();
    }
}

fn summary(versions: impl Iterator<Item = mvcc::Result<Version>>) -> Vec<(Vec<u8>, i64, bool)> {
    versions
        .map(|version| {
            let version = version.unwrap();
            (
                version.key.clone(),
                version.revision.main,
                version.is_tombstone(),
            )
        })
        .collect()
}

#[test]
fn latest_at_reads_each_key_at_a_past_revision() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::open(dir.path()).unwrap();
    scenario(&backend);
    let view = backend.read();
    let all = KeyRange::from_etcd(b"\x00", b"\x00");
    let v = |key: &[u8], main, deleted| (key.to_vec(), main, deleted);

    assert_eq!(summary(view.latest_at(&all, 1)), vec![]);
    assert_eq!(
        summary(view.latest_at(&all, 4)),
        vec![v(b"a", 4, false), v(b"b", 3, false)]
    );
    assert_eq!(
        summary(view.latest_at(&all, 6)),
        vec![v(b"a", 4, false), v(b"b", 6, true), v(b"c", 5, false)]
    );
    assert_eq!(
        summary(view.live_at(&all, 6)),
        vec![v(b"a", 4, false), v(b"c", 5, false)]
    );
    assert_eq!(
        summary(view.latest_at(&all, 100)),
        vec![
            v(b"a", 4, false),
            v(b"a\x00", 7, false),
            v(b"b", 9, false),
            v(b"c", 5, false),
            v(b"d", 8, false)
        ]
    );
    // etcd ranges: a single key (not its zero-suffixed neighbour), a
    // half-open interval, everything from a key on.
    assert_eq!(
        summary(view.latest_at(&KeyRange::from_etcd(b"a", b""), 100)),
        vec![v(b"a", 4, false)]
    );
    assert_eq!(
        summary(view.latest_at(&KeyRange::from_etcd(b"a\x00", b"c"), 100)),
        vec![v(b"a\x00", 7, false), v(b"b", 9, false)]
    );
    assert_eq!(
        summary(view.latest_at(&KeyRange::from_etcd(b"c", b"\x00"), 100)),
        vec![v(b"c", 5, false), v(b"d", 8, false)]
    );
    assert_eq!(
        summary(view.latest_at(&KeyRange::new(b"c".to_vec(), b"a".to_vec()), 100)),
        vec![]
    );
    // Lazy: a limit reads only what it needs.
    assert_eq!(summary(view.latest_at(&all, 100).take(2)).len(), 2);

    assert_eq!(
        view.latest(b"b", 7)
            .unwrap()
            .map(|v| (v.revision.main, v.is_tombstone())),
        Some((6, true))
    );
    assert_eq!(view.latest(b"d", 7).unwrap(), None);
    assert_eq!(
        summary(view.versions(&KeyRange::single(b"b".to_vec()))),
        vec![v(b"b", 3, false), v(b"b", 6, true), v(b"b", 9, false)]
    );
}

#[test]
fn latest_at_stays_fast_with_long_histories() {
    // 20 000 versions of one key and one version of the next: reading at an
    // old revision must not walk the history (seek, not scan). The bound is
    // generous; a scan-based implementation decoding every version would
    // still pass it on a fast machine, so this mainly guards the result.
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::open(dir.path()).unwrap();
    for block in 0..20 {
        let mut batch = backend.write_batch();
        for offset in 0..1000 {
            let main = block * 1000 + offset + 1;
            batch.put(b"hot", Revision::new(main, 0), b"v").unwrap();
        }
        batch.set_applied(block as u64 + 1, 1);
        backend.commit(batch).unwrap();
    }
    let mut batch = backend.write_batch();
    batch.put(b"next", Revision::new(5, 0), b"n").unwrap();
    batch.set_applied(100, 1);
    backend.commit(batch).unwrap();
    let view = backend.read();
    let all = KeyRange::from_key(Vec::new());
    let started = std::time::Instant::now();
    for _ in 0..1000 {
        let found = summary(view.latest_at(&all, 7));
        assert_eq!(
            found,
            vec![(b"hot".to_vec(), 7, false), (b"next".to_vec(), 5, false)]
        );
    }
    let elapsed = started.elapsed();
    assert!(elapsed < std::time::Duration::from_secs(10), "{elapsed:?}");
}

// ---------------------------------------------------------------------------
// Model-based: random batches, commits, abandoned batches and reopens
// against a BTreeMap model.

#[derive(Clone, Debug)]
enum Op {
    Put {
        key: u8,
        value: u8,
    },
    Tombstone {
        key: u8,
    },
    /// Physically remove the `nth` committed version (mod count).
    RemoveVersion {
        nth: usize,
    },
    PutLease {
        id: i8,
        value: u8,
    },
    RemoveLease {
        id: i8,
    },
    PutMember {
        id: u8,
        value: u8,
    },
    RemoveMember {
        id: u8,
    },
    SetConfState {
        voters: Vec<u8>,
    },
    /// Commit the open batch with the next applied index.
    Commit,
    /// Commit the open batch with a stale applied index: refused, nothing
    /// of it lands.
    CommitStale,
    /// Drop the open batch uncommitted.
    Abandon,
    /// Close and reopen the backend (abandoning the open batch).
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..6, any::<u8>()).prop_map(|(key, value)| Op::Put { key, value }),
        2 => (0u8..6).prop_map(|key| Op::Tombstone { key }),
        1 => any::<usize>().prop_map(|nth| Op::RemoveVersion { nth }),
        1 => (-3i8..3, any::<u8>()).prop_map(|(id, value)| Op::PutLease { id, value }),
        1 => (-3i8..3).prop_map(|id| Op::RemoveLease { id }),
        1 => (1u8..4, any::<u8>()).prop_map(|(id, value)| Op::PutMember { id, value }),
        1 => (1u8..4).prop_map(|id| Op::RemoveMember { id }),
        1 => prop::collection::vec(1u8..6, 0..4).prop_map(|voters| Op::SetConfState { voters }),
        3 => Just(Op::Commit),
        1 => Just(Op::CommitStale),
        1 => Just(Op::Abandon),
        1 => Just(Op::Reopen),
    ]
}

/// Keys with zero bytes and prefixes of each other, to exercise escaping.
fn model_key(key: u8) -> Vec<u8> {
    [&b""[..], b"\x00", b"a", b"a\x00", b"a\x00b", b"ab"][key as usize].to_vec()
}

#[derive(Clone, Debug, Default, PartialEq)]
struct Model {
    versions: BTreeMap<(Vec<u8>, Revision), VersionRecord>,
    leases: BTreeMap<i64, Vec<u8>>,
    members: BTreeMap<u64, Vec<u8>>,
    conf_state: ConfState,
    applied: AppliedIndex,
    current_revision: i64,
}

/// What the open batch will do if committed.
#[derive(Default)]
struct Pending {
    model: Option<Model>,
    sub: i64,
}

fn check(backend: &Backend, model: &Model) -> Result<(), TestCaseError> {
    let view = backend.read();
    let versions: BTreeMap<_, _> = view
        .versions(&KeyRange::from_key(Vec::new()))
        .map(|version| {
            let version = version.unwrap();
            ((version.key, version.revision), version.record)
        })
        .collect();
    prop_assert_eq!(&versions, &model.versions);
    let leases: BTreeMap<_, _> = view.leases().map(|lease| lease.unwrap()).collect();
    prop_assert_eq!(&leases, &model.leases);
    prop_assert_eq!(&view.members().unwrap(), &model.members);
    prop_assert_eq!(&view.conf_state().unwrap(), &model.conf_state);
    prop_assert_eq!(view.applied().unwrap(), model.applied);
    prop_assert_eq!(backend.applied(), model.applied);
    prop_assert_eq!(view.current_revision().unwrap(), model.current_revision);
    Ok(())
}

fn run_model(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let mut backend = Backend::open(dir.path()).unwrap();
    let mut committed = Model::default();
    // Batches borrow the backend, so the open batch is kept as a list of
    // operations and replayed into a real batch at commit time; the model
    // is updated alongside.
    let mut open_ops: Vec<Op> = Vec::new();
    let mut pending = Pending::default();

    for op in ops {
        let main = committed.current_revision + 1;
        let model = pending.model.get_or_insert_with(|| committed.clone());
        match &op {
            Op::Put { key, value } => {
                model.versions.insert(
                    (model_key(*key), Revision::new(main, pending.sub)),
                    VersionRecord::Put(vec![*value]),
                );
                pending.sub += 1;
                open_ops.push(op);
            }
            Op::Tombstone { key } => {
                model.versions.insert(
                    (model_key(*key), Revision::new(main, pending.sub)),
                    VersionRecord::Tombstone,
                );
                pending.sub += 1;
                open_ops.push(op);
            }
            Op::RemoveVersion { nth } => {
                if !committed.versions.is_empty() {
                    let victim = committed
                        .versions
                        .keys()
                        .nth(nth % committed.versions.len())
                        .unwrap()
                        .clone();
                    model.versions.remove(&victim);
                    open_ops.push(op);
                }
            }
            Op::PutLease { id, value } => {
                model.leases.insert(*id as i64, vec![*value]);
                open_ops.push(op);
            }
            Op::RemoveLease { id } => {
                model.leases.remove(&(*id as i64));
                open_ops.push(op);
            }
            Op::PutMember { id, value } => {
                model.members.insert(*id as u64, vec![*value]);
                open_ops.push(op);
            }
            Op::RemoveMember { id } => {
                model.members.remove(&(*id as u64));
                open_ops.push(op);
            }
            Op::SetConfState { voters } => {
                model.conf_state = ConfState::with_voters(voters.iter().map(|&v| v as u64));
                open_ops.push(op);
            }
            Op::Commit | Op::CommitStale => {
                let stale = matches!(op, Op::CommitStale);
                let mut batch = backend.write_batch();
                let mut sub = 0;
                for open in &open_ops {
                    match open {
                        Op::Put { key, value } => {
                            batch
                                .put(&model_key(*key), Revision::new(main, sub), &[*value])
                                .unwrap();
                            sub += 1;
                        }
                        Op::Tombstone { key } => {
                            batch
                                .put_tombstone(&model_key(*key), Revision::new(main, sub))
                                .unwrap();
                            sub += 1;
                        }
                        Op::RemoveVersion { nth } => {
                            let (key, revision) = committed
                                .versions
                                .keys()
                                .nth(nth % committed.versions.len())
                                .unwrap();
                            batch.remove_version(key, *revision).unwrap();
                        }
                        Op::PutLease { id, value } => batch.put_lease(*id as i64, &[*value]),
                        Op::RemoveLease { id } => batch.remove_lease(*id as i64),
                        Op::PutMember { id, value } => batch.put_member(*id as u64, &[*value]),
                        Op::RemoveMember { id } => batch.remove_member(*id as u64),
                        Op::SetConfState { voters } => batch.set_conf_state(
                            &ConfState::with_voters(voters.iter().map(|&v| v as u64)),
                        ),
                        _ => unreachable!(),
                    }
                }
                let index = if stale {
                    committed.applied.index
                } else {
                    committed.applied.index + 1
                };
                batch.set_current_revision(main);
                batch.set_applied(index, main as u64);
                let result = backend.commit(batch);
                let mut model = pending.model.take().unwrap();
                if stale {
                    let refused = matches!(result, Err(Error::AppliedRegression { .. }));
                    prop_assert!(refused);
                } else {
                    result.unwrap();
                    model.applied = AppliedIndex {
                        index,
                        term: main as u64,
                    };
                    model.current_revision = main;
                    committed = model;
                }
                open_ops.clear();
                pending = Pending::default();
                check(&backend, &committed)?;
            }
            Op::Abandon => {
                open_ops.clear();
                pending = Pending::default();
            }
            Op::Reopen => {
                open_ops.clear();
                pending = Pending::default();
                drop(backend);
                backend = Backend::open(dir.path()).unwrap();
                check(&backend, &committed)?;
            }
        }
    }
    check(&backend, &committed)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn batches_match_a_btreemap_model(ops in prop::collection::vec(op(), 1..60)) {
        run_model(ops)?;
    }
}

// ---------------------------------------------------------------------------
// latest_at against a brute-force reading of the same history.

fn brute_latest_at(
    versions: &BTreeMap<(Vec<u8>, Revision), VersionRecord>,
    range: &KeyRange,
    at: i64,
) -> Vec<(Vec<u8>, Revision, VersionRecord)> {
    let mut latest: BTreeMap<Vec<u8>, (Revision, VersionRecord)> = BTreeMap::new();
    for ((key, revision), record) in versions {
        if range.contains(key) && revision.main <= at {
            latest.insert(key.clone(), (*revision, record.clone()));
        }
    }
    latest
        .into_iter()
        .map(|(key, (revision, record))| (key, revision, record))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn latest_at_matches_brute_force(
        history in prop::collection::vec((0u8..6, any::<bool>(), 0i64..3), 0..40),
        queries in prop::collection::vec((0u8..6, prop::option::of(0u8..6), 0i64..45), 1..20),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let backend = Backend::open(dir.path()).unwrap();
        let mut model = BTreeMap::new();
        let mut main = 0;
        for (index, (key, deleted, subs)) in history.into_iter().enumerate() {
            main += 1;
            let mut batch = backend.write_batch();
            for sub in 0..=subs {
                // Later subs of one main revision write neighbouring keys.
                let key = model_key((key + sub as u8) % 6);
                let revision = Revision::new(main, sub);
                let record = if deleted { VersionRecord::Tombstone } else { VersionRecord::Put(vec![index as u8]) };
                match &record {
                    VersionRecord::Put(value) => batch.put(&key, revision, value).unwrap(),
                    VersionRecord::Tombstone => batch.put_tombstone(&key, revision).unwrap(),
                }
                model.insert((key, revision), record);
            }
            batch.set_applied(index as u64 + 1, 1);
            backend.commit(batch).unwrap();
        }
        let view = backend.read();
        for (start, end, at) in queries {
            let range = match end {
                Some(end) => KeyRange::new(model_key(start), model_key(end)),
                None => KeyRange::from_key(model_key(start)),
            };
            let found: Vec<_> = view
                .latest_at(&range, at)
                .map(|version| {
                    let version = version.unwrap();
                    (version.key, version.revision, version.record)
                })
                .collect();
            prop_assert_eq!(found, brute_latest_at(&model, &range, at), "range {:?} at {}", range, at);
        }
    }
}
