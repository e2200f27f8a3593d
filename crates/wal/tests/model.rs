//! Append, truncate, compact, install, purge and reopen, at random, against
//! an in-memory model of the log: after every reopen the log recovers
//! exactly the model, whatever the segment boundaries.

mod common;

use std::sync::Arc;

use common::{metadata, ModelLog};
use proptest::prelude::*;
use raft::HardState;
use wal::{fs::StdFs, SnapshotMarkerKind, Wal, WalOptions, WriteBatch};

#[derive(Clone, Debug)]
enum Op {
    Append {
        back: u64,
        count: usize,
        bump_term: bool,
        size: usize,
    },
    HardState {
        commit_back: u64,
    },
    Compact {
        back: u64,
    },
    Install {
        ahead: u64,
    },
    Purge,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u64..4, 1usize..6, prop::bool::weighted(0.2), 0usize..300)
            .prop_map(|(back, count, bump_term, size)| Op::Append { back, count, bump_term, size }),
        2 => (0u64..5).prop_map(|commit_back| Op::HardState { commit_back }),
        2 => (0u64..6).prop_map(|back| Op::Compact { back }),
        1 => (0u64..4).prop_map(|ahead| Op::Install { ahead }),
        2 => Just(Op::Purge),
        2 => Just(Op::Reopen),
    ]
}

fn options(segment_bytes: u64) -> WalOptions {
    WalOptions {
        segment_bytes,
        fs: Arc::new(StdFs),
        ..WalOptions::default()
    }
}

fn run(ops: Vec<Op>, segment_bytes: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, recovered) = Wal::open(dir.path(), options(segment_bytes)).expect("open");
    let mut model = ModelLog::default();
    model.assert_recovered(&recovered);
    for op in ops {
        match op {
            Op::Append {
                back,
                count,
                bump_term,
                size,
            } => {
                let entries = model.make_append(back, count, bump_term, size);
                log.write(WriteBatch {
                    entries: &entries,
                    ..WriteBatch::default()
                })
                .expect("append");
            }
            Op::HardState { commit_back } => {
                let hard_state = HardState {
                    term: model.term,
                    vote: 1,
                    commit: model.last_index().saturating_sub(commit_back),
                };
                let batch = WriteBatch {
                    hard_state: Some(&hard_state),
                    ..WriteBatch::default()
                };
                log.write(batch).expect("hard state");
                model.apply_batch(&batch);
            }
            Op::Compact { back } => {
                let index = model
                    .last_index()
                    .saturating_sub(back)
                    .max(model.snapshot_index());
                let Some(term) = model.term_at(index) else {
                    continue;
                };
                if index == 0 {
                    continue;
                }
                let snapshot = metadata(index, term);
                let batch = WriteBatch {
                    snapshot: Some((&snapshot, SnapshotMarkerKind::Compacted)),
                    ..WriteBatch::default()
                };
                log.write(batch).expect("compact");
                model.apply_batch(&batch);
            }
            Op::Install { ahead } => {
                model.term += 1;
                let snapshot = metadata(model.last_index() + ahead, model.term);
                let batch = WriteBatch {
                    snapshot: Some((&snapshot, SnapshotMarkerKind::Installed)),
                    ..WriteBatch::default()
                };
                log.write(batch).expect("install");
                model.apply_batch(&batch);
            }
            Op::Purge => {
                log.purge().expect("purge");
                let segments = log.segments();
                assert!(!segments.is_empty());
                for pair in segments.windows(2) {
                    assert_eq!(pair[1].sequence, pair[0].sequence + 1);
                }
            }
            Op::Reopen => {
                drop(log);
                let (reopened, recovered) =
                    Wal::open(dir.path(), options(segment_bytes)).expect("reopen");
                model.assert_recovered(&recovered);
                log = reopened;
            }
        }
    }
    drop(log);
    let (_log, recovered) = Wal::open(dir.path(), options(segment_bytes)).expect("final reopen");
    model.assert_recovered(&recovered);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("RAFTKV_WAL_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64)
    ))]

    #[test]
    fn log_recovers_the_model(
        ops in prop::collection::vec(op(), 1..80),
        segment_bytes in prop_oneof![Just(256u64), Just(2048), Just(1 << 20)],
    ) {
        run(ops, segment_bytes);
    }
}

#[test]
fn purge_removes_only_segments_below_the_snapshot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, _) = Wal::open(dir.path(), options(1024)).expect("open");
    let mut model = ModelLog::default();
    for _ in 0..40 {
        let entries = model.make_append(0, 4, false, 100);
        log.write(WriteBatch {
            entries: &entries,
            ..WriteBatch::default()
        })
        .expect("append");
    }
    let before = log.segments();
    assert!(
        before.len() > 10,
        "small segments roll over: {}",
        before.len()
    );
    assert_eq!(
        log.purge().expect("purge"),
        0,
        "no snapshot yet: nothing to purge"
    );

    let snapshot = metadata(80, model.term_at(80).expect("term"));
    let batch = WriteBatch {
        snapshot: Some((&snapshot, SnapshotMarkerKind::Compacted)),
        ..WriteBatch::default()
    };
    log.write(batch).expect("compact");
    model.apply_batch(&batch);
    let before = log.segments();
    let removed = log.purge().expect("purge");
    let after = log.segments();
    assert!(removed > 0);
    assert_eq!(after.len() + removed, before.len());
    assert!(
        after[0].max_entry_index > 80,
        "the first kept segment holds entries past 80"
    );
    for name in std::fs::read_dir(dir.path()).expect("read dir") {
        let name = name.expect("entry").file_name();
        let sequence = u64::from_str_radix(
            name.to_str()
                .and_then(|n| n.strip_suffix(".wal"))
                .expect("segment name"),
            16,
        )
        .expect("hex");
        assert!(
            sequence >= after[0].sequence,
            "purged file still on disk: {name:?}"
        );
    }
    drop(log);
    let (_log, recovered) = Wal::open(dir.path(), options(1024)).expect("reopen");
    model.assert_recovered(&recovered);
}

#[test]
fn appends_that_do_not_continue_the_log_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, _) = Wal::open(dir.path(), options(1 << 20)).expect("open");
    let mut model = ModelLog::default();
    let entries = model.make_append(0, 3, true, 8);
    log.write(WriteBatch {
        entries: &entries,
        ..WriteBatch::default()
    })
    .expect("append");
    let gap = vec![common::entry(1, 5, 8)];
    let error = log
        .write(WriteBatch {
            entries: &gap,
            ..WriteBatch::default()
        })
        .expect_err("a gap must be refused");
    assert!(
        error.to_string().contains("does not continue the log"),
        "{error}"
    );
    let beyond = metadata(9, 1);
    let error = log
        .write(WriteBatch {
            snapshot: Some((&beyond, SnapshotMarkerKind::Compacted)),
            ..WriteBatch::default()
        })
        .expect_err("compaction past the end must be refused");
    assert!(
        error.to_string().contains("beyond the last index"),
        "{error}"
    );
    // The log still works after refusing bad input.
    let entries = model.make_append(0, 1, false, 8);
    log.write(WriteBatch {
        entries: &entries,
        ..WriteBatch::default()
    })
    .expect("append");
}
