//! The checkers have teeth: deliberately broken variants of the algorithm
//! (test-only switches, absent from release builds) must be caught.

#![cfg(debug_assertions)]

use raft::FaultSwitches;
use raft_sim::{run_simulation, SimulationOptions};

/// Runs seeds until one reports a violation; returns it.
fn first_violation(faults: FaultSwitches, max_seeds: u64) -> Option<String> {
    for seed in 1..=max_seeds {
        let options = SimulationOptions {
            voters: 5,
            max_message_bytes: 1,
            faults_switches: faults,
            ..SimulationOptions::default()
        };
        if let Err(failure) = run_simulation(seed, &options) {
            return Some(failure.to_string());
        }
    }
    None
}

#[test]
fn a_voter_that_ignores_log_up_to_dateness_is_caught() {
    let violation = first_violation(
        FaultSwitches {
            vote_ignores_log_up_to_date: true,
            ..FaultSwitches::default()
        },
        200,
    );
    let violation =
        violation.expect("the simulator must find a violation when votes ignore the log");
    println!("caught: {violation}");
}

#[test]
fn a_leader_that_commits_old_term_entries_by_counting_replicas_is_caught() {
    let violation = first_violation(
        FaultSwitches {
            commit_old_term_by_counting_replicas: true,
            ..FaultSwitches::default()
        },
        2000,
    );
    let violation = violation
        .expect("the simulator must find a violation when old-term entries commit by count");
    println!("caught: {violation}");
}
