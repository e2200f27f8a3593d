//! Small hand-written histories: anomalies a broken store produces, which
//! must be rejected, and legitimate concurrency, which must be accepted.
//! Times are in microseconds (×1000 ns) to read like a trace.

use linearizability::{check, BlockReason, CheckOptions, Operation, RegisterInput, Verdict};

const US: u64 = 1_000;

fn put(client: u64, call: u64, ret: u64, value: &str) -> Operation {
    Operation::put(client, "x", call * US, ret * US, value)
}

fn get(client: u64, call: u64, ret: u64, observed: Option<&str>) -> Operation {
    Operation::get(client, "x", call * US, ret * US, observed)
}

fn cas(client: u64, call: u64, ret: u64, expected: Option<&str>, new: &str, ok: bool) -> Operation {
    Operation::cas(client, "x", call * US, ret * US, expected, new, ok)
}

fn unknown(client: u64, call: u64, input: RegisterInput) -> Operation {
    Operation::unknown(client, "x", call * US, input)
}

fn verdict(history: &[Operation]) -> Verdict {
    check(history, &CheckOptions::default()).expect("valid history")
}

fn assert_accepted(history: &[Operation]) {
    match verdict(history) {
        Verdict::Linearizable => {}
        other => panic!("expected linearizable, got {other:?}"),
    }
}

/// Returns the counterexample's text, for further assertions.
fn assert_rejected(history: &[Operation]) -> String {
    match verdict(history) {
        Verdict::NotLinearizable(counterexample) => counterexample.to_string(),
        other => panic!("expected a violation, got {other:?}"),
    }
}

// ---- must be rejected ----

#[test]
fn stale_read_is_rejected() {
    let text = assert_rejected(&[
        put(1, 0, 10, "1"),
        put(1, 20, 30, "2"),
        get(2, 40, 50, Some("1")),
    ]);
    assert!(
        text.contains(r#"client 2 [t=0.040ms .. 0.050ms] get -> Some("1")"#),
        "{text}"
    );
    assert!(
        text.contains(r#"value after the prefix: Some("2")"#),
        "{text}"
    );
}

#[test]
fn lost_write_is_rejected() {
    // The second put was acknowledged, yet a later read sees the first.
    assert_rejected(&[
        put(1, 0, 10, "a"),
        put(2, 15, 20, "b"),
        get(3, 25, 30, Some("a")),
    ]);
}

#[test]
fn acknowledged_write_never_visible_is_rejected() {
    assert_rejected(&[put(1, 0, 10, "a"), get(2, 20, 30, None)]);
}

#[test]
fn write_applied_twice_is_rejected() {
    // One put of "1", overwritten by "2", then "1" shows up again: the
    // first put was applied a second time (say, a retried proposal).
    assert_rejected(&[
        put(1, 0, 10, "1"),
        get(2, 12, 14, Some("1")),
        put(1, 20, 30, "2"),
        get(2, 32, 34, Some("2")),
        get(2, 40, 50, Some("1")),
    ]);
}

#[test]
fn unknown_write_applied_twice_is_rejected() {
    // Being unknown lets a write happen late, not twice.
    assert_rejected(&[
        unknown(1, 0, RegisterInput::put("1")),
        get(2, 10, 20, Some("1")),
        put(3, 30, 40, "2"),
        get(2, 50, 60, Some("2")),
        get(2, 70, 80, Some("1")),
    ]);
}

#[test]
fn cas_succeeding_when_it_must_fail_is_rejected() {
    assert_rejected(&[
        put(1, 0, 10, "1"),
        put(1, 20, 30, "2"),
        cas(2, 40, 50, Some("1"), "3", true),
    ]);
}

#[test]
fn cas_failing_when_it_must_succeed_is_rejected() {
    assert_rejected(&[put(1, 0, 10, "1"), cas(2, 20, 30, Some("1"), "3", false)]);
}

#[test]
fn cas_on_absent_key_succeeding_twice_is_rejected() {
    assert_rejected(&[
        cas(1, 0, 10, None, "a", true),
        cas(2, 20, 30, None, "b", true),
    ]);
}

#[test]
fn two_successful_cas_from_the_same_value_are_rejected() {
    // Concurrent, but only one of them can see "0".
    assert_rejected(&[
        put(1, 0, 10, "0"),
        cas(2, 20, 40, Some("0"), "a", true),
        cas(3, 20, 40, Some("0"), "b", true),
    ]);
}

#[test]
fn reads_disagreeing_on_order_are_rejected() {
    // Two concurrent writes; one reader sees a then b, the other b then a.
    assert_rejected(&[
        put(1, 0, 100, "a"),
        put(2, 0, 100, "b"),
        get(3, 10, 20, Some("a")),
        get(3, 30, 40, Some("b")),
        get(4, 10, 20, Some("b")),
        get(4, 30, 40, Some("a")),
    ]);
}

#[test]
fn counterexample_shows_the_key_and_the_pending_operations() {
    let history = [
        put(1, 0, 10, "a"),
        put(2, 20, 30, "b"),
        put(3, 35, 60, "c"),
        get(4, 40, 50, Some("a")),
    ];
    let Verdict::NotLinearizable(ce) = verdict(&history) else {
        panic!("expected a violation");
    };
    assert_eq!(ce.key, b"x");
    assert_eq!(ce.blocked, history[3]);
    assert_eq!(ce.concurrent, vec![history[2].clone()]);
    // Once "b" overwrote "a", nothing could write "a" again.
    assert_eq!(ce.prefix.len(), 2);
    assert_eq!(ce.state_after_prefix(), Some(&b"b".to_vec()));
    assert_eq!(ce.reason, BlockReason::ValueUnavailable);
    // The get's response is where it went wrong.
    assert_eq!(ce.responses_until, Some(50 * US));
    let text = ce.to_string();
    assert!(
        text.starts_with("key \"x\": no linearization exists"),
        "{text}"
    );
    assert!(
        text.contains(r#"client 3 [t=0.035ms .. 0.060ms] put "c" -> ok"#),
        "{text}"
    );
}

#[test]
fn violation_on_one_key_is_found_among_others() {
    let mut history = vec![
        Operation::put(1, "a", 0, 10, "1"),
        Operation::get(2, "a", 20, 30, Some("1")),
        Operation::put(1, "b", 0, 10, "1"),
        Operation::get(2, "b", 20, 30, Some("2")),
    ];
    history.push(Operation::get(3, "c", 0, 5, None));
    let Verdict::NotLinearizable(ce) = verdict(&history) else {
        panic!("expected a violation");
    };
    assert_eq!(ce.key, b"b");
}

// ---- must be accepted ----

#[test]
fn empty_history_is_accepted() {
    assert_accepted(&[]);
}

#[test]
fn sequential_history_is_accepted() {
    assert_accepted(&[
        get(1, 0, 1, None),
        put(1, 2, 3, "1"),
        get(1, 4, 5, Some("1")),
        cas(1, 6, 7, Some("1"), "2", true),
        cas(1, 8, 9, Some("1"), "3", false),
        cas(1, 10, 11, None, "4", false),
        get(1, 12, 13, Some("2")),
    ]);
}

#[test]
fn concurrent_writes_with_reads_seeing_either_are_accepted() {
    assert_accepted(&[
        put(1, 0, 100, "a"),
        put(2, 0, 100, "b"),
        get(3, 10, 20, Some("a")),
        get(4, 10, 20, Some("b")),
        get(3, 30, 40, Some("b")),
        get(4, 30, 40, Some("b")),
        get(5, 110, 120, Some("b")),
    ]);
}

#[test]
fn read_concurrent_with_write_may_see_old_or_new() {
    assert_accepted(&[
        put(1, 0, 10, "old"),
        put(2, 20, 60, "new"),
        get(3, 30, 40, Some("old")),
        get(4, 30, 40, Some("new")),
    ]);
}

#[test]
fn touching_intervals_are_concurrent() {
    // The put returns at the instant the get is called: no order is
    // proven, so the get may precede it.
    assert_accepted(&[put(1, 0, 10, "a"), get(2, 10, 20, None)]);
    // One nanosecond later the order is proven.
    assert_rejected(&[
        Operation::put(1, "x", 0, 10, "a"),
        Operation::get(2, "x", 11, 20, None),
    ]);
}

#[test]
fn unknown_write_seen_later_is_accepted() {
    assert_accepted(&[
        put(1, 0, 10, "1"),
        unknown(2, 20, RegisterInput::put("2")),
        get(3, 30, 40, Some("1")),
        get(3, 50, 60, Some("2")),
    ]);
}

#[test]
fn unknown_write_never_seen_is_accepted() {
    assert_accepted(&[
        put(1, 0, 10, "1"),
        unknown(2, 20, RegisterInput::put("2")),
        get(3, 30, 40, Some("1")),
        get(3, 1_000, 1_010, Some("1")),
    ]);
}

#[test]
fn unknown_write_seen_only_after_a_long_delay_is_accepted() {
    // Client 2 gave up at 30 and went on; its write landed much later.
    let mut late = unknown(2, 20, RegisterInput::put("2"));
    late.ret = Some(30 * US);
    assert_accepted(&[
        put(1, 0, 10, "1"),
        late,
        put(2, 40, 50, "3"),
        get(3, 60, 70, Some("3")),
        get(3, 5_000, 5_010, Some("3")),
        get(3, 90_000, 90_010, Some("2")),
    ]);
}

#[test]
fn unknown_write_cannot_take_effect_before_its_call() {
    assert_rejected(&[
        get(1, 0, 10, Some("2")),
        unknown(2, 20, RegisterInput::put("2")),
    ]);
}

#[test]
fn unknown_cas_may_or_may_not_apply() {
    let applied = [
        put(1, 0, 10, "1"),
        unknown(2, 20, RegisterInput::cas(Some("1"), "2")),
        get(3, 100, 110, Some("2")),
    ];
    assert_accepted(&applied);
    let not_applied = [
        put(1, 0, 10, "1"),
        unknown(2, 20, RegisterInput::cas(Some("1"), "2")),
        get(3, 100, 110, Some("1")),
    ];
    assert_accepted(&not_applied);
    // It can only apply where the comparison holds.
    assert_rejected(&[
        put(1, 0, 10, "0"),
        unknown(2, 20, RegisterInput::cas(Some("1"), "2")),
        get(3, 100, 110, Some("2")),
    ]);
}

#[test]
fn unobserved_unknown_write_can_explain_a_failed_cas() {
    assert_accepted(&[
        put(1, 0, 10, "1"),
        unknown(2, 20, RegisterInput::put("lost")),
        cas(3, 30, 40, Some("1"), "2", false),
    ]);
    // Without it, the failure is a violation.
    assert_rejected(&[put(1, 0, 10, "1"), cas(3, 30, 40, Some("1"), "2", false)]);
}

#[test]
fn unknown_get_is_ignored() {
    assert_accepted(&[
        put(1, 0, 10, "1"),
        unknown(2, 20, RegisterInput::Get),
        get(3, 30, 40, Some("1")),
    ]);
}

#[test]
fn initial_values_are_honoured() {
    let history = [get(1, 0, 10, Some("seed"))];
    assert_rejected(&history);
    let mut options = CheckOptions::default();
    options
        .initial_values
        .insert(b"x".to_vec(), b"seed".to_vec());
    assert_eq!(check(&history, &options), Ok(Verdict::Linearizable));
}

#[test]
fn malformed_history_is_an_error() {
    let mut op = put(1, 0, 10, "a");
    op.ret = None;
    assert!(check(&[op], &CheckOptions::default()).is_err());
}
