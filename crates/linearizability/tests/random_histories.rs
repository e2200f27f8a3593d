//! Large generated histories: a linearizable one (10 clients, thousands of
//! operations on one key, with unknown outcomes) must be accepted quickly,
//! and the same history with one stale read must be rejected quickly.

mod common;

use std::time::{Duration, Instant};

use common::{inject_stale_read, linearizable_history, Workload};
use linearizability::{check, CheckOptions, Verdict};

/// Generous against a loaded two-core machine in the dev profile; the
/// checks take well under a second in practice.
const LIMIT: Duration = Duration::from_secs(20);

fn options() -> CheckOptions {
    CheckOptions {
        time_limit: Some(LIMIT),
        ..CheckOptions::default()
    }
}

fn big_workload() -> Workload {
    Workload {
        clients: 10,
        ops_per_client: 500,
        keys: 1,
        ..Workload::default()
    }
}

#[test]
fn big_linearizable_history_is_accepted_quickly() {
    for seed in [1, 2, 3] {
        let history = linearizable_history(seed, &big_workload());
        assert_eq!(history.len(), 5_000);
        assert!(history.iter().filter(|op| op.is_unknown()).count() > 150);
        let started = Instant::now();
        let verdict = check(&history, &options()).expect("valid history");
        let took = started.elapsed();
        eprintln!("seed {seed}: 5000 ops on one key accepted in {took:?}");
        assert_eq!(verdict, Verdict::Linearizable, "seed {seed}");
        assert!(took < LIMIT);
    }
}

#[test]
fn big_history_with_a_stale_read_is_rejected_quickly() {
    for seed in [1, 2, 3] {
        let mut history = linearizable_history(seed, &big_workload());
        let g = inject_stale_read(&mut history).expect("a read to make stale");
        let started = Instant::now();
        let verdict = check(&history, &options()).expect("valid history");
        let took = started.elapsed();
        eprintln!("seed {seed}: stale read at #{g} rejected in {took:?}");
        match verdict {
            Verdict::NotLinearizable(ce) => {
                assert_eq!(ce.blocked, history[g], "seed {seed}:\n{ce}");
                if seed == 1 {
                    eprintln!("{ce}");
                }
            }
            other => panic!("seed {seed}: expected a violation, got {other:?}"),
        }
    }
}

#[test]
fn many_keys_are_checked_independently() {
    let workload = Workload {
        clients: 10,
        ops_per_client: 400,
        keys: 8,
        unknown_per_mille: 100,
        ..Workload::default()
    };
    let history = linearizable_history(7, &workload);
    let started = Instant::now();
    assert_eq!(check(&history, &options()), Ok(Verdict::Linearizable));
    eprintln!("4000 ops on 8 keys accepted in {:?}", started.elapsed());
}

#[test]
fn heavy_unknown_outcomes_are_still_tractable() {
    // A fifth of all operations time out: the reductions for unknown
    // outcomes are what keep this from blowing up.
    let workload = Workload {
        clients: 10,
        ops_per_client: 200,
        keys: 1,
        unknown_per_mille: 200,
        ..Workload::default()
    };
    for seed in [11, 12] {
        let history = linearizable_history(seed, &workload);
        let started = Instant::now();
        assert_eq!(check(&history, &options()), Ok(Verdict::Linearizable));
        eprintln!(
            "seed {seed}: 2000 ops, 20% unknown, accepted in {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn repeated_values_are_handled() {
    // Jepsen-style: values drawn from a handful, so writes repeat and the
    // search cannot tell writes apart by what reads saw.
    let workload = Workload {
        clients: 10,
        ops_per_client: 300,
        keys: 1,
        value_range: Some(5),
        ..Workload::default()
    };
    for seed in [21, 22] {
        let history = linearizable_history(seed, &workload);
        let started = Instant::now();
        assert_eq!(check(&history, &options()), Ok(Verdict::Linearizable));
        eprintln!(
            "seed {seed}: 3000 ops over 5 values accepted in {:?}",
            started.elapsed()
        );
    }
}
