//! Property tests: generated linearizable histories are accepted, the
//! checker agrees with brute force on tiny arbitrary histories, and the
//! text format round-trips.

mod common;

use common::{
    brute_force_linearizable, inject_stale_read, linearizable_history, SplitMix64, Workload,
};
use linearizability::format::{history_to_string, parse_history};
use linearizability::{check, CheckOptions, Operation, RegisterInput, RegisterOutput, Verdict};
use proptest::prelude::*;

fn small_workload(clients: u64, ops_per_client: usize, keys: u64, unknown: u64) -> Workload {
    Workload {
        clients,
        ops_per_client,
        keys,
        unknown_per_mille: unknown,
        ..Workload::default()
    }
}

/// A tiny arbitrary history: few values, short times (so ties are common),
/// random outcomes, some unknown.
fn arbitrary_history() -> impl Strategy<Value = Vec<Operation>> {
    let value = prop::sample::select(vec!["a", "b", "c"]);
    let op = (
        0u64..3,
        0u8..2,
        0u64..12,
        0u64..8,
        0u8..3,
        value.clone(),
        prop::option::of(value),
        prop::option::of(prop::option::of(prop::sample::select(vec!["a", "b", "c"]))),
        any::<bool>(),
    )
        .prop_map(
            |(client, key, call, duration, kind, v, maybe, observed, flag)| {
                let key = if key == 0 { "x" } else { "y" };
                let ret = call + duration;
                // `observed = None` stands for an unknown outcome.
                match (kind, observed) {
                    (0, Some(_)) => Operation::put(client, key, call, ret, v),
                    (1, Some(o)) => Operation::get(client, key, call, ret, o),
                    (_, Some(_)) => Operation::cas(client, key, call, ret, maybe, v, flag),
                    (0, None) => Operation::unknown(client, key, call, RegisterInput::put(v)),
                    (1, None) => Operation::unknown(client, key, call, RegisterInput::Get),
                    (_, None) => {
                        Operation::unknown(client, key, call, RegisterInput::cas(maybe, v))
                    }
                }
            },
        );
    prop::collection::vec(op, 0..8)
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..6)
}

fn arbitrary_bytes_operation() -> impl Strategy<Value = Operation> {
    (
        any::<u64>(),
        bytes(),
        any::<u64>(),
        prop::option::of(any::<u64>()),
        0u8..3,
        bytes(),
        prop::option::of(bytes()),
        any::<bool>(),
    )
        .prop_map(|(client, key, call, ret, kind, v, maybe, flag)| {
            let (input, output) = match kind {
                0 => (RegisterInput::Put { value: v }, RegisterOutput::Put),
                1 => (RegisterInput::Get, RegisterOutput::Get { value: maybe }),
                _ => (
                    RegisterInput::Cas {
                        expected: maybe,
                        new: v,
                    },
                    RegisterOutput::Cas { succeeded: flag },
                ),
            };
            let output = if ret.is_none() {
                RegisterOutput::Unknown
            } else {
                output
            };
            Operation {
                client,
                key,
                call,
                ret,
                input,
                output,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn random_linearizable_histories_are_accepted(
        seed in any::<u64>(),
        clients in 1u64..8,
        ops_per_client in 1usize..40,
        keys in 1u64..4,
        unknown in prop::sample::select(vec![0u64, 50, 300]),
    ) {
        let history = linearizable_history(seed, &small_workload(clients, ops_per_client, keys, unknown));
        let verdict = check(&history, &CheckOptions::default()).expect("valid history");
        prop_assert_eq!(verdict, Verdict::Linearizable);
    }

    #[test]
    fn stale_reads_are_always_rejected(
        seed in any::<u64>(),
        clients in 1u64..8,
        ops_per_client in 5usize..40,
    ) {
        let mut history = linearizable_history(seed, &small_workload(clients, ops_per_client, 1, 50));
        if let Some(g) = inject_stale_read(&mut history) {
            let verdict = check(&history, &CheckOptions::default()).expect("valid history");
            match verdict {
                Verdict::NotLinearizable(ce) => prop_assert_eq!(&ce.blocked, &history[g]),
                other => prop_assert!(false, "expected a violation, got {:?}", other),
            }
        }
    }

    #[test]
    fn checker_agrees_with_brute_force(history in arbitrary_history()) {
        let verdict = check(&history, &CheckOptions::default()).expect("valid history");
        let expected = brute_force_linearizable(&history);
        prop_assert_eq!(
            matches!(verdict, Verdict::Linearizable),
            expected,
            "verdict {:?}\nhistory:\n{}",
            verdict,
            history_to_string(&history)
        );
    }

    /// Small simulated histories (few values, so writes repeat; many
    /// timeouts), half of them with one output corrupted, which may or may
    /// not break linearizability: the checker must agree with brute force
    /// either way.
    #[test]
    fn checker_agrees_with_brute_force_on_generated_histories(seed in any::<u64>()) {
        let mut rng = SplitMix64::new(seed);
        let workload = Workload {
            clients: 1 + rng.below(4),
            ops_per_client: 1 + rng.below(3) as usize,
            keys: 1 + rng.below(2),
            unknown_per_mille: [0, 200, 500][rng.below(3) as usize],
            cas_per_mille: 300,
            value_range: [None, Some(1), Some(2), Some(3)][rng.below(4) as usize],
            max_duration: 3_000,
            max_think: 1_000,
            ..Workload::default()
        };
        let mut history = linearizable_history(rng.next_u64(), &workload);
        // Brute force is factorial in the history's length.
        prop_assume!(history.len() <= 11);
        if !history.is_empty() && rng.below(2) == 0 {
            let i = rng.below(history.len() as u64) as usize;
            history[i].output = match &history[i].output {
                RegisterOutput::Get { .. } => RegisterOutput::Get {
                    value: [None, Some(b"0".to_vec()), Some(b"1".to_vec())][rng.below(3) as usize].clone(),
                },
                RegisterOutput::Cas { succeeded } => RegisterOutput::Cas { succeeded: !succeeded },
                other => other.clone(),
            };
        }
        let verdict = check(&history, &CheckOptions::default()).expect("valid history");
        prop_assert_eq!(
            matches!(verdict, Verdict::Linearizable),
            brute_force_linearizable(&history),
            "verdict {:?}\nhistory:\n{}",
            verdict,
            history_to_string(&history)
        );
    }

    #[test]
    fn text_format_round_trips(history in prop::collection::vec(arbitrary_bytes_operation(), 0..10)) {
        let text = history_to_string(&history);
        prop_assert_eq!(parse_history(&text).expect("parses"), history);
    }
}
