//! The search: per-key Wing–Gong–Lowe with memoization, the register model
//! it runs on, its budget, and the counterexample it reports.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

use crate::history::{
    format_time, validate, HistoryError, Key, Operation, OptionValue, RegisterInput,
    RegisterOutput, Value,
};

/// Limits and starting state for [`check`].
#[derive(Clone, Debug, Default)]
pub struct CheckOptions {
    /// Give up (with [`Verdict::Unknown`]) after this many search steps
    /// over the whole history. `None`: no limit.
    pub max_steps: Option<u64>,
    /// Give up after this much wall-clock time over the whole history.
    /// `None`: no limit.
    pub time_limit: Option<Duration>,
    /// Values keys hold before the history starts; keys not listed start
    /// absent.
    pub initial_values: BTreeMap<Key, Value>,
}

/// The answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// Some key has no linearization; boxed because it is large and rare.
    NotLinearizable(Box<Counterexample>),
    /// The budget ran out before every key was decided. Keys checked before
    /// that were linearizable (a violation would have been returned).
    Unknown(Undecided),
}

/// Which keys a budget-limited check did not decide.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Undecided {
    pub keys: Vec<Key>,
    /// Search steps spent in total.
    pub steps: u64,
}

/// An operation in the longest linearizable prefix, with the register's
/// value right after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinearizedOp {
    pub op: Operation,
    pub state_after: Option<Value>,
}

/// Why a key's history is not linearizable: a point the search reached
/// (the one that got furthest in time) and what it could not do there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counterexample {
    pub key: Key,
    /// The first call of the whole history; times are shown relative to it.
    pub origin: u64,
    /// Operations on this key in the history.
    pub operations: usize,
    /// `Some(t)`: the responses received by time `t` already admit no
    /// linearization — the earliest such `t` — and the search below
    /// treated later responses as not yet received. `None`: the whole
    /// history was searched (narrowing ran out of budget).
    pub responses_until: Option<u64>,
    /// The value the key held before the history.
    pub initial: Option<Value>,
    /// The longest sequence of operations the search could linearize, in
    /// linearization order (unknown-outcome operations in it took effect
    /// there).
    pub prefix: Vec<LinearizedOp>,
    /// The operation the search could not place after the prefix.
    pub blocked: Operation,
    pub reason: BlockReason,
    /// The other operations on the key whose call..return window overlaps
    /// the blocked one's, in call order. An unknown outcome counts as
    /// ending when the client gave up (or at its call if it never did),
    /// although the search let it take effect at any later point too.
    pub concurrent: Vec<Operation>,
}

/// Why [`Counterexample::blocked`] could not be placed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockReason {
    /// Its response had been received before anything else pending was
    /// called, so it had to take effect next, and the register's value
    /// did not allow it.
    Returned,
    /// It needs a value (a get's result, a compare-and-set's expected
    /// value) that the register no longer holds and that no remaining
    /// operation writes.
    ValueUnavailable,
}

impl Counterexample {
    /// The register's value after the prefix.
    pub fn state_after_prefix(&self) -> Option<&Value> {
        match self.prefix.last() {
            Some(last) => last.state_after.as_ref(),
            None => self.initial.as_ref(),
        }
    }
}

/// How many prefix and overlapping operations `Display` shows; the struct
/// keeps all of them.
const SHOWN_PREFIX: usize = 10;
const SHOWN_CONCURRENT: usize = 20;

impl fmt::Display for Counterexample {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let origin = self.origin;
        writeln!(
            f,
            "key {}: no linearization exists ({} operations on the key; times relative to the first call of the history)",
            crate::display_value(&self.key),
            self.operations
        )?;
        if let Some(until) = self.responses_until {
            writeln!(
                f,
                "already none for the responses received by t={} (responses after that count as not yet received below)",
                format_time(until, origin)
            )?;
        }
        writeln!(
            f,
            "linearizable prefix where the search got stuck: {} operations, starting from {}",
            self.prefix.len(),
            OptionValue(self.initial.as_deref())
        )?;
        let skipped = self.prefix.len().saturating_sub(SHOWN_PREFIX);
        if skipped > 0 {
            writeln!(f, "  ... {skipped} earlier operations")?;
        }
        for step in &self.prefix[skipped..] {
            writeln!(
                f,
                "  {}   => {}",
                step.op.display_relative(origin),
                OptionValue(step.state_after.as_deref())
            )?;
        }
        writeln!(
            f,
            "value after the prefix: {}",
            OptionValue(self.state_after_prefix().map(Vec::as_slice))
        )?;
        f.write_str(match self.reason {
            BlockReason::Returned => {
                "this operation had already returned, so it had to take effect next, but cannot:\n"
            }
            BlockReason::ValueUnavailable => {
                "this operation needs a value the register no longer holds and no remaining operation writes:\n"
            }
        })?;
        writeln!(f, "  {}", self.blocked.display_relative(origin))?;
        if self.concurrent.is_empty() {
            writeln!(f, "no other operation on the key overlapped it")?;
        } else {
            writeln!(f, "operations on the key overlapping it:")?;
            for op in self.concurrent.iter().take(SHOWN_CONCURRENT) {
                writeln!(f, "  {}", op.display_relative(origin))?;
            }
            let more = self.concurrent.len().saturating_sub(SHOWN_CONCURRENT);
            if more > 0 {
                writeln!(f, "  ... and {more} more")?;
            }
        }
        Ok(())
    }
}

/// Decides whether `history` is linearizable, key by key.
///
/// Keys are checked smallest history first (then in key order), so a
/// violation on a small key is found even if a large one would exhaust the
/// budget; the first violation found is returned, narrowed down to the
/// earliest response that makes the history impossible (see
/// [`Counterexample::responses_until`]). Narrowing re-checks truncated
/// histories, so it spends budget too; if the budget runs out during it,
/// the unnarrowed counterexample is returned.
///
/// Besides the memo of explored configurations, the search uses reductions
/// that never change the answer (the reasoning for each is with the code;
/// a property test compares the checker against brute force):
/// * Values nobody ever compares against (no get returned them, no
///   compare-and-set expects them) are all alike to the model; they share
///   one state.
/// * Unknown-outcome gets are dropped, and so are unknown-outcome writes
///   that could never matter (called after the last response, or writing
///   an unobserved value when no failed compare-and-set could need it).
/// * Unknown-outcome operations with identical effects are interchangeable
///   and taken in call order; one only takes effect right before a move
///   that needs it.
/// * A pending read (or anything else that never changes the state) that
///   is legal now is taken without trying alternatives.
/// * A configuration is abandoned as soon as some operation requires a
///   value that is gone and that nothing left can write.
///
/// Cost: with unique written values (recommended: they are what makes
/// violations quick to pin down), thousands of operations per key with
/// ten clients and a few percent of timeouts take milliseconds. With
/// values drawn from a small set *and* many unknown outcomes, proving a
/// violation can take exponential time; set a budget.
///
/// The memo stores 128-bit fingerprints of configurations rather than the
/// configurations themselves, which keeps memory small on large histories.
/// Two configurations could in principle collide and hide a linearization;
/// the chance is below 2⁻⁸⁰ for any history this crate can search.
pub fn check(history: &[Operation], options: &CheckOptions) -> Result<Verdict, HistoryError> {
    validate(history)?;
    let origin = history.iter().map(|op| op.call).min().unwrap_or(0);

    let mut by_key: BTreeMap<&[u8], Vec<usize>> = BTreeMap::new();
    for (index, op) in history.iter().enumerate() {
        by_key.entry(&op.key).or_default().push(index);
    }
    let mut keys: Vec<(&[u8], Vec<usize>)> = by_key.into_iter().collect();
    // Stable: equal sizes stay in key order.
    keys.sort_by_key(|(_, indices)| indices.len());

    let mut budget = Budget::new(options);
    for (position, (key, indices)) in keys.iter().enumerate() {
        let initial = options.initial_values.get(*key).map(Vec::as_slice);
        let partition = Partition::build(indices.iter().map(|&i| (i, &history[i])), initial);
        match partition.search(&mut budget) {
            Outcome::Linearizable => {}
            Outcome::Violation(dead_end) => {
                let hint = partition.ops[dead_end.blocked].ret.unwrap_or(u64::MAX);
                let counterexample =
                    earliest_violation(history, indices, initial, origin, hint, &mut budget)
                        .unwrap_or_else(|| {
                            Box::new(
                                partition.counterexample(history, indices, origin, None, dead_end),
                            )
                        });
                return Ok(Verdict::NotLinearizable(counterexample));
            }
            Outcome::OutOfBudget => {
                return Ok(Verdict::Unknown(Undecided {
                    keys: keys[position..].iter().map(|(k, _)| k.to_vec()).collect(),
                    steps: budget.steps,
                }))
            }
        }
    }
    Ok(Verdict::Linearizable)
}

/// Narrows a violation down to the earliest response time `t` such that
/// the responses received by `t` already admit no linearization (responses
/// after `t` treated as not yet received: those operations become
/// unknown-outcome, so they may or may not have taken effect). The
/// operation returning at `t` is where things went wrong, and the search of
/// that truncated history reports dead ends at it rather than wherever a
/// wrong guess elsewhere happened to fail.
///
/// Searches over response times, relying on truncations being monotone (a
/// truncation of a linearizable history is linearizable). It starts at
/// `hint`, the response time of the full search's dead end, which is
/// usually the answer or close to it, gallops downwards, then bisects.
/// Returns `None` if the budget runs out, or if that monotonicity somehow
/// fails, so the caller falls back to the full history's dead end.
fn earliest_violation(
    history: &[Operation],
    indices: &[usize],
    initial: Option<&[u8]>,
    origin: u64,
    hint: u64,
    budget: &mut Budget,
) -> Option<Box<Counterexample>> {
    let mut times: Vec<u64> = indices
        .iter()
        .map(|&i| &history[i])
        .filter(|op| !op.is_unknown())
        .filter_map(|op| op.ret)
        .collect();
    times.sort_unstable();
    times.dedup();
    let last = times.len().checked_sub(1)?;
    let attempt = |at: usize, budget: &mut Budget| {
        check_truncated(history, indices, initial, origin, times[at], budget)
    };

    // Every truncation below `lo` is linearizable; the one at `hi` is not
    // (at the last response time it is the whole history, known to fail).
    let (mut lo, mut hi) = (0, last);
    let mut found: Option<(usize, Box<Counterexample>)> = None;
    let mut probe = times.partition_point(|&t| t < hint).min(last);
    let mut step = 1;
    loop {
        match attempt(probe, budget) {
            Truncated::OutOfBudget => return None,
            Truncated::Linearizable => {
                lo = probe + 1;
                break;
            }
            Truncated::Violation(counterexample) => {
                hi = probe;
                found = Some((probe, counterexample));
                if probe == 0 {
                    break;
                }
                probe = probe.saturating_sub(step);
                step *= 2;
            }
        }
    }
    loop {
        if lo >= hi && found.as_ref().is_some_and(|(at, _)| *at == hi) {
            return found.map(|(_, counterexample)| counterexample);
        }
        let mid = if lo < hi { lo + (hi - lo) / 2 } else { hi };
        match attempt(mid, budget) {
            Truncated::Linearizable if mid < hi => lo = mid + 1,
            Truncated::Linearizable | Truncated::OutOfBudget => return None,
            Truncated::Violation(counterexample) => {
                found = Some((mid, counterexample));
                hi = mid;
            }
        }
    }
}

enum Truncated {
    Linearizable,
    Violation(Box<Counterexample>),
    OutOfBudget,
}

/// Checks the key's history as it stood at `until`: operations called
/// after it left out, responses after it not yet received.
fn check_truncated(
    history: &[Operation],
    indices: &[usize],
    initial: Option<&[u8]>,
    origin: u64,
    until: u64,
    budget: &mut Budget,
) -> Truncated {
    let truncated: Vec<(usize, Operation)> = indices
        .iter()
        .filter(|&&i| history[i].call <= until)
        .map(|&i| {
            let mut op = history[i].clone();
            if op.ret.is_some_and(|ret| ret > until) {
                op.output = RegisterOutput::Unknown;
                op.ret = None;
            }
            (i, op)
        })
        .collect();
    let partition = Partition::build(truncated.iter().map(|(i, op)| (*i, op)), initial);
    match partition.search(budget) {
        Outcome::Linearizable => Truncated::Linearizable,
        Outcome::OutOfBudget => Truncated::OutOfBudget,
        Outcome::Violation(dead_end) => Truncated::Violation(Box::new(partition.counterexample(
            history,
            indices,
            origin,
            Some(until),
            dead_end,
        ))),
    }
}

/// Counts steps and watches the clock.
struct Budget {
    steps: u64,
    max_steps: Option<u64>,
    deadline: Option<Instant>,
}

impl Budget {
    fn new(options: &CheckOptions) -> Self {
        Budget {
            steps: 0,
            max_steps: options.max_steps,
            deadline: options
                .time_limit
                .and_then(|limit| Instant::now().checked_add(limit)),
        }
    }

    /// Spends one step; true once the budget is gone.
    fn step(&mut self) -> bool {
        self.steps += 1;
        if self.max_steps.is_some_and(|max| self.steps > max) {
            return true;
        }
        // Reading the clock every step would cost more than the step.
        self.steps.is_multiple_of(1024) && self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}

/// The register's value, interned per key: [`ABSENT`], [`UNOBSERVED`] (any
/// value nobody compares against), or an index of a value somebody does.
type StateId = u32;
const ABSENT: StateId = 0;
const UNOBSERVED: StateId = 1;

/// An operation as the model sees it: what it requires of the state and
/// what it leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Transition {
    Write {
        new: StateId,
    },
    Read {
        observed: StateId,
    },
    CasSucceeded {
        expected: StateId,
        new: StateId,
    },
    CasFailed {
        expected: StateId,
    },
    /// Unknown-outcome put.
    MaybeWrite {
        new: StateId,
    },
    /// Unknown-outcome compare-and-set.
    MaybeCas {
        expected: StateId,
        new: StateId,
    },
}

impl Transition {
    /// The state after taking effect in `state`, or `None` if it cannot
    /// take effect there. Unknown-outcome operations refuse to take effect
    /// where they would change nothing: staying pending keeps every option
    /// that taking effect would, and more.
    fn apply(self, state: StateId) -> Option<StateId> {
        match self {
            Transition::Write { new } => Some(new),
            Transition::Read { observed } => (state == observed).then_some(state),
            Transition::CasSucceeded { expected, new } => (state == expected).then_some(new),
            Transition::CasFailed { expected } => (state != expected).then_some(state),
            Transition::MaybeWrite { new } => (state != new).then_some(new),
            Transition::MaybeCas { expected, new } => {
                (state == expected && state != new).then_some(new)
            }
        }
    }

    /// The value this operation may write, if any.
    fn writes(self) -> Option<StateId> {
        match self {
            Transition::Write { new }
            | Transition::CasSucceeded { new, .. }
            | Transition::MaybeWrite { new }
            | Transition::MaybeCas { new, .. } => Some(new),
            Transition::Read { .. } | Transition::CasFailed { .. } => None,
        }
    }

    /// The value the register must hold when this operation takes effect,
    /// if it must take effect.
    fn requires(self) -> Option<StateId> {
        match self {
            Transition::Read { observed } => Some(observed),
            Transition::CasSucceeded { expected, .. } => Some(expected),
            _ => None,
        }
    }

    /// True if, wherever the operation is legal, it leaves the state as it
    /// was.
    fn never_changes_state(self) -> bool {
        match self {
            Transition::Read { .. } | Transition::CasFailed { .. } => true,
            Transition::CasSucceeded { expected, new } => expected == new,
            _ => false,
        }
    }

    fn is_known(self) -> bool {
        !matches!(
            self,
            Transition::MaybeWrite { .. } | Transition::MaybeCas { .. }
        )
    }
}

/// The register with concrete values, to show the prefix of a
/// counterexample. Only called on operations the search linearized, so a
/// known outcome always agrees with the state.
fn apply_concrete(state: Option<Value>, op: &Operation) -> Option<Value> {
    match (&op.input, &op.output) {
        (RegisterInput::Put { value }, _) => Some(value.clone()),
        (RegisterInput::Get, _) => state,
        (RegisterInput::Cas { expected, new }, RegisterOutput::Cas { succeeded: true })
        | (RegisterInput::Cas { expected, new }, RegisterOutput::Unknown)
            if state.as_ref() == expected.as_ref() =>
        {
            Some(new.clone())
        }
        (RegisterInput::Cas { .. }, _) => state,
    }
}

/// One key's history, reduced and ready to search. Operations are indexed
/// in call order.
struct Partition<'h> {
    /// As checked (possibly truncated: see [`earliest_violation`]).
    ops: Vec<&'h Operation>,
    /// Each operation's index in the caller's history, for reporting.
    sources: Vec<usize>,
    transitions: Vec<Transition>,
    /// For unknown-outcome operations: the class of operations with the
    /// same effect (they are interchangeable, so the search takes them in
    /// call order).
    class_of: Vec<Option<usize>>,
    /// Each class's operations in call order.
    members: Vec<Vec<usize>>,
    initial: Option<&'h [u8]>,
    initial_state: StateId,
}

/// Where the search got stuck, for the report; indices into
/// `Partition::ops`.
struct DeadEnd {
    prefix: Vec<usize>,
    blocked: usize,
    reason: BlockReason,
}

impl DeadEnd {
    /// Which dead end to report: the one whose blocked operation returned
    /// latest (the search got furthest in time), then the deepest.
    fn rank_of(partition: &Partition<'_>, blocked: usize, depth: usize) -> (u64, usize) {
        (partition.ops[blocked].ret.unwrap_or(0), depth)
    }
}

enum Outcome {
    Linearizable,
    Violation(DeadEnd),
    OutOfBudget,
}

impl<'h> Partition<'h> {
    /// `ops` are the key's operations as they should be checked, each with
    /// its index in the caller's history.
    fn build(
        ops: impl IntoIterator<Item = (usize, &'h Operation)>,
        initial: Option<&'h [u8]>,
    ) -> Self {
        let mut ops: Vec<(usize, &'h Operation)> = ops
            .into_iter()
            // An unknown get changes nothing and constrains nothing.
            .filter(|(_, op)| !(op.is_unknown() && op.input == RegisterInput::Get))
            .collect();
        ops.sort_by_key(|(i, op)| (op.call, *i));

        // Values somebody compares against get their own state; all others
        // are UNOBSERVED.
        let mut interned: HashMap<&'h [u8], StateId> = HashMap::new();
        let mut next_id = UNOBSERVED + 1;
        let mut intern = |v: &'h [u8]| {
            *interned.entry(v).or_insert_with(|| {
                next_id += 1;
                next_id - 1
            })
        };
        for (_, op) in &ops {
            match (&op.input, &op.output) {
                (_, RegisterOutput::Get { value: Some(v) }) => {
                    intern(v);
                }
                (
                    RegisterInput::Cas {
                        expected: Some(v), ..
                    },
                    _,
                ) => {
                    intern(v);
                }
                _ => {}
            }
        }
        let id = |v: Option<&[u8]>| match v {
            None => ABSENT,
            Some(v) => interned.get(v).copied().unwrap_or(UNOBSERVED),
        };
        let last_return = ops
            .iter()
            .filter(|(_, op)| !op.is_unknown())
            .filter_map(|(_, op)| op.ret)
            .max()
            .unwrap_or(0);

        let mut modeled: Vec<(usize, &'h Operation, Transition)> = ops
            .into_iter()
            .filter_map(|(source, op)| {
                let transition = match (&op.input, &op.output) {
                    (RegisterInput::Put { value }, RegisterOutput::Unknown) => {
                        Transition::MaybeWrite {
                            new: id(Some(value)),
                        }
                    }
                    (RegisterInput::Put { value }, _) => Transition::Write {
                        new: id(Some(value)),
                    },
                    (RegisterInput::Get, RegisterOutput::Get { value }) => Transition::Read {
                        observed: id(value.as_deref()),
                    },
                    (RegisterInput::Cas { expected, new }, RegisterOutput::Cas { succeeded }) => {
                        let expected = id(expected.as_deref());
                        if *succeeded {
                            Transition::CasSucceeded {
                                expected,
                                new: id(Some(new)),
                            }
                        } else {
                            Transition::CasFailed { expected }
                        }
                    }
                    (RegisterInput::Cas { expected, new }, _) => Transition::MaybeCas {
                        expected: id(expected.as_deref()),
                        new: id(Some(new)),
                    },
                    // Validation admits no other pairs except unknown gets,
                    // which were dropped above.
                    (RegisterInput::Get, _) => return None,
                };
                Some((source, op, transition))
            })
            .collect();

        // Unknown operations that could never enable anything are dropped
        // (see `Search`: one only takes effect right before an operation
        // that needs it):
        // * one called after the last response: nothing known follows it;
        // * one writing a value nobody compares against: that only helps a
        //   compare-and-set that failed where the register held its
        //   expected value, so it needs a known failed compare-and-set
        //   expecting a value it can overwrite (any, for a put; its own
        //   expected value, for a compare-and-set).
        let failed_expectations: HashSet<StateId> = modeled
            .iter()
            .filter_map(|(_, _, t)| match t {
                Transition::CasFailed { expected } => Some(*expected),
                _ => None,
            })
            .collect();
        modeled.retain(|(_, op, t)| {
            t.is_known()
                || (op.call <= last_return
                    && match *t {
                        Transition::MaybeWrite { new: UNOBSERVED } => {
                            !failed_expectations.is_empty()
                        }
                        Transition::MaybeCas {
                            expected,
                            new: UNOBSERVED,
                        } => failed_expectations.contains(&expected),
                        _ => true,
                    })
        });
        let sources: Vec<usize> = modeled.iter().map(|&(source, _, _)| source).collect();
        let kept: Vec<&'h Operation> = modeled.iter().map(|&(_, op, _)| op).collect();
        let transitions: Vec<Transition> = modeled.iter().map(|&(_, _, t)| t).collect();

        let mut class_ids: HashMap<Transition, usize> = HashMap::new();
        let mut members: Vec<Vec<usize>> = Vec::new();
        let class_of = transitions
            .iter()
            .enumerate()
            .map(|(op, &t)| {
                if t.is_known() {
                    return None;
                }
                let class = *class_ids.entry(t).or_insert_with(|| {
                    members.push(Vec::new());
                    members.len() - 1
                });
                members[class].push(op);
                Some(class)
            })
            .collect();

        Partition {
            ops: kept,
            sources,
            transitions,
            class_of,
            members,
            initial,
            initial_state: id(initial),
        }
    }

    fn search(&self, budget: &mut Budget) -> Outcome {
        if self.transitions.iter().all(|t| !t.is_known()) {
            return Outcome::Linearizable;
        }
        Search::new(self).run(budget)
    }

    /// Only reachable if the search ended without ever meeting a return,
    /// which the loop's invariant rules out; still better than a panic.
    fn fallback_dead_end(&self) -> DeadEnd {
        let blocked = self
            .transitions
            .iter()
            .position(|t| t.is_known())
            .unwrap_or(0);
        DeadEnd {
            prefix: Vec::new(),
            blocked,
            reason: BlockReason::Returned,
        }
    }

    fn counterexample(
        &self,
        history: &[Operation],
        indices: &[usize],
        origin: u64,
        responses_until: Option<u64>,
        dead_end: DeadEnd,
    ) -> Counterexample {
        let blocked = &history[self.sources[dead_end.blocked]];
        let (start, end) = (blocked.call, blocked.ret.unwrap_or(blocked.call));
        let mut concurrent: Vec<&Operation> = indices
            .iter()
            .filter(|&&i| i != self.sources[dead_end.blocked])
            .map(|&i| &history[i])
            .filter(|op| op.call <= end && op.ret.unwrap_or(op.call) >= start)
            .collect();
        concurrent.sort_by_key(|op| op.call);
        // Replay what the search checked (a truncated operation counts as
        // unknown), but show the operations as recorded.
        let mut state = self.initial.map(<[u8]>::to_vec);
        let prefix = dead_end
            .prefix
            .iter()
            .map(|&i| {
                state = apply_concrete(state.take(), self.ops[i]);
                LinearizedOp {
                    op: history[self.sources[i]].clone(),
                    state_after: state.clone(),
                }
            })
            .collect();
        Counterexample {
            key: blocked.key.clone(),
            origin,
            operations: indices.len(),
            responses_until,
            initial: self.initial.map(<[u8]>::to_vec),
            prefix,
            blocked: blocked.clone(),
            reason: dead_end.reason,
            concurrent: concurrent.into_iter().cloned().collect(),
        }
    }
}

/// One step of the search, kept so it can be undone.
struct Frame {
    op: usize,
    state: StateId,
    obligation: Option<StateId>,
    horizon: u64,
    /// Taken as the only move worth trying from its configuration (see
    /// [`Search::forced_move`]): undoing it means that configuration failed.
    forced: bool,
}

/// Where the main loop goes next.
enum Cursor {
    /// A new configuration: check for success and forced moves, then scan
    /// from the first event.
    Fresh,
    /// Continue scanning candidates at this event.
    At(usize),
    /// The current configuration failed: undo the last move.
    Backtrack,
}

/// What an entry of the event list stands for.
#[derive(Clone, Copy, Debug)]
enum Event {
    /// A known operation was called.
    Call(usize),
    /// A known operation returned: it must be linearized before anything
    /// called after this.
    Return(usize),
    /// A class of interchangeable unknown operations; the entry sits at
    /// its first member's call and stays until every member is linearized.
    /// One entry per class keeps the many never-needed timeouts of a long
    /// history from lengthening every scan.
    Class(usize),
}

/// The search over one partition: the current configuration (which
/// operations are linearized, the register's state) and how to undo it.
///
/// Moves, and why trying only these finds a linearization if one exists:
/// * A *known* operation may take effect if its call is before the first
///   pending return (the WGL rule) and the model allows it.
/// * If one such operation never changes the state wherever it is legal
///   (a read, a failed compare-and-set, a compare-and-set writing what it
///   expects) and is legal now, it is the only move tried: any
///   linearization from here can be rearranged to take it first, since it
///   is legal now, changes nothing where it was, and nothing pending had
///   to precede it. (A put of the current value does not qualify: where
///   the linearization placed it, it may have changed the state.)
/// * An *unknown-outcome* operation may take effect only if the move right
///   after it could not have happened without it (`obligation`). Any
///   linearization can be brought into that form: an unknown operation
///   followed by something that did not need it can be moved past that
///   operation (if it preserves the state) or dropped (if it overwrote the
///   state anyway; unknown operations may never happen). This stops the
///   search from trying every subset of timed-out writes at every point.
///
/// Configurations are also abandoned as soon as a value that some
/// unlinearized operation requires can no longer be written (`stranded`).
struct Search<'p, 'h> {
    partition: &'p Partition<'h>,
    list: EventList,
    events: Vec<Event>,
    event_time: Vec<u64>,
    /// Per known operation; `NIL` for unknown ones.
    call_event: Vec<usize>,
    return_event: Vec<usize>,
    /// Per class.
    class_event: Vec<usize>,
    /// Per class, how many members are linearized (they go in call order).
    class_next: Vec<usize>,
    /// Fingerprints of configurations already explored (and failed, since
    /// the search stops at the first success).
    memo: HashSet<u128, BuildHasherDefault<PreHashed>>,
    op_keys: Vec<u128>,
    stack: Vec<Frame>,
    state: StateId,
    /// Set right after an unknown operation took effect: the state before
    /// it. The next move must be impossible from that state.
    obligation: Option<StateId>,
    /// The first pending return: operations called by then may take
    /// effect now.
    horizon: u64,
    linearized: u128,
    remaining_known: usize,
    /// Per state: unlinearized operations that may write it, and known
    /// ones that require it.
    writers_left: Vec<u32>,
    requirers_left: Vec<u32>,
    /// States some unlinearized operation requires but none can write any
    /// more: the configuration is dead unless the register holds the only
    /// such state now.
    stranded: usize,
    /// Which operations are linearized.
    done: Vec<bool>,
    /// What the current configuration's pending operations need, computed
    /// when first asked; cleared on every move.
    needs: Option<Needs>,
}

#[derive(Default)]
struct Needs {
    any_change: bool,
    states: Vec<StateId>,
}

impl<'p, 'h> Search<'p, 'h> {
    fn new(partition: &'p Partition<'h>) -> Self {
        let n = partition.ops.len();
        // Events in time order; at equal times calls come first, so an
        // operation returning at t and one called at t are concurrent.
        // Unknown outcomes have no return event: nothing forces them to
        // take effect.
        let mut sorted: Vec<(u64, bool, usize, Event)> = Vec::with_capacity(2 * n);
        for (i, op) in partition.ops.iter().enumerate() {
            if partition.class_of[i].is_some() {
                continue;
            }
            sorted.push((op.call, false, i, Event::Call(i)));
            if let Some(ret) = op.ret {
                sorted.push((ret, true, i, Event::Return(i)));
            }
        }
        for (class, members) in partition.members.iter().enumerate() {
            if let Some(&first) = members.first() {
                let call = partition.ops[first].call;
                sorted.push((call, false, first, Event::Class(class)));
            }
        }
        sorted.sort_unstable_by_key(|&(time, is_return, op, _)| (time, is_return, op));
        let mut call_event = vec![NIL; n];
        let mut return_event = vec![NIL; n];
        let mut class_event = vec![NIL; partition.members.len()];
        for (e, &(_, _, _, event)) in sorted.iter().enumerate() {
            match event {
                Event::Call(op) => call_event[op] = e,
                Event::Return(op) => return_event[op] = e,
                Event::Class(class) => class_event[class] = e,
            }
        }

        let states = partition
            .transitions
            .iter()
            .flat_map(|t| [t.writes(), t.requires()])
            .flatten()
            .chain([partition.initial_state, UNOBSERVED])
            .max()
            .unwrap_or(UNOBSERVED) as usize
            + 1;
        let mut writers_left = vec![0; states];
        let mut requirers_left = vec![0; states];
        for t in &partition.transitions {
            if let Some(w) = t.writes() {
                writers_left[w as usize] += 1;
            }
            if let Some(r) = t.requires() {
                requirers_left[r as usize] += 1;
            }
        }
        let stranded = (0..states)
            .filter(|&s| requirers_left[s] > 0 && writers_left[s] == 0)
            .count();

        let mut search = Search {
            partition,
            list: EventList::new(sorted.len()),
            events: sorted.iter().map(|&(_, _, _, event)| event).collect(),
            event_time: sorted.iter().map(|&(time, _, _, _)| time).collect(),
            call_event,
            return_event,
            class_event,
            class_next: vec![0; partition.members.len()],
            memo: HashSet::default(),
            op_keys: (0..n).map(|i| fingerprint(i as u64, 0)).collect(),
            stack: Vec::new(),
            state: partition.initial_state,
            obligation: None,
            horizon: 0,
            linearized: 0,
            remaining_known: partition
                .transitions
                .iter()
                .filter(|t| t.is_known())
                .count(),
            writers_left,
            requirers_left,
            stranded,
            done: vec![false; n],
            needs: None,
        };
        search.horizon = search.first_return_time();
        search
    }

    fn run(mut self, budget: &mut Budget) -> Outcome {
        let mut best: Option<DeadEnd> = None;
        let mut cursor = Cursor::Fresh;
        loop {
            if budget.step() {
                return Outcome::OutOfBudget;
            }
            let event = match cursor {
                Cursor::Fresh => {
                    if self.remaining_known == 0 {
                        return Outcome::Linearizable;
                    }
                    if self.doomed() {
                        if let Some(op) = self.stranded_op() {
                            self.record(&mut best, op, BlockReason::ValueUnavailable);
                        }
                        cursor = Cursor::Backtrack;
                        continue;
                    }
                    if let Some((op, next_state)) = self.forced_move() {
                        cursor = if self.take(op, next_state, true) {
                            Cursor::Fresh
                        } else {
                            Cursor::Backtrack
                        };
                        continue;
                    }
                    self.list.first()
                }
                Cursor::At(event) => event,
                Cursor::Backtrack => {
                    cursor = match self.backtrack() {
                        Some(event) => Cursor::At(event),
                        None => {
                            return Outcome::Violation(
                                best.unwrap_or_else(|| self.partition.fallback_dead_end()),
                            )
                        }
                    };
                    continue;
                }
            };
            match self.events.get(event) {
                Some(Event::Return(op)) => {
                    // A return whose operation has not been linearized:
                    // this configuration is dead.
                    self.record(&mut best, *op, BlockReason::Returned);
                    cursor = Cursor::Backtrack;
                }
                // The end of the list, which cannot be reached while known
                // operations remain (their returns come first).
                None => cursor = Cursor::Backtrack,
                Some(_) => {
                    if let Some(op) = self.candidate(event) {
                        if let Some(next_state) = self.admissible(op) {
                            if self.take(op, next_state, false) {
                                cursor = Cursor::Fresh;
                                continue;
                            }
                        }
                    }
                    cursor = Cursor::At(self.list.next(event));
                }
            }
        }
    }

    /// Keeps this dead end for the report if it ranks above `best`.
    fn record(&self, best: &mut Option<DeadEnd>, blocked: usize, reason: BlockReason) {
        let rank = DeadEnd::rank_of(self.partition, blocked, self.stack.len());
        if best
            .as_ref()
            .is_none_or(|b| rank > DeadEnd::rank_of(self.partition, b.blocked, b.prefix.len()))
        {
            *best = Some(DeadEnd {
                prefix: self.stack.iter().map(|f| f.op).collect(),
                blocked,
                reason,
            });
        }
    }

    fn first_return_time(&self) -> u64 {
        let mut event = self.list.first();
        while event != NIL {
            if let Event::Return(_) = self.events[event] {
                return self.event_time[event];
            }
            event = self.list.next(event);
        }
        u64::MAX
    }

    /// The operation a call-side event offers now, if any.
    fn candidate(&self, event: usize) -> Option<usize> {
        match self.events[event] {
            Event::Call(op) => Some(op),
            Event::Return(_) => None,
            Event::Class(class) => self.partition.members[class]
                .get(self.class_next[class])
                .copied()
                .filter(|&op| self.partition.ops[op].call <= self.horizon),
        }
    }

    /// The events before the first pending return, in order.
    fn window(&self) -> impl Iterator<Item = usize> + '_ {
        let mut event = self.list.first();
        std::iter::from_fn(move || {
            if event == NIL || matches!(self.events[event], Event::Return(_)) {
                return None;
            }
            let current = event;
            event = self.list.next(event);
            Some(current)
        })
    }

    /// The state after `op` if it may take effect now. An unknown
    /// operation must also enable the move right after it: if no pending
    /// operation could make that move, taking it would lead nowhere.
    fn admissible(&mut self, op: usize) -> Option<StateId> {
        let transition = self.partition.transitions[op];
        if let Some(before) = self.obligation {
            if transition.apply(before).is_some() {
                return None;
            }
        }
        let next_state = transition.apply(self.state)?;
        if !transition.is_known() && !self.enables_something(next_state) {
            return None;
        }
        Some(next_state)
    }

    /// Whether some pending operation could take effect in `next_state`
    /// but not in the current one. Summarizes the window once per
    /// configuration: the states pending reads and compare-and-sets
    /// require, and whether something pending is blocked by the current
    /// state itself (a compare-and-set that failed expecting it, an
    /// unknown put of it), which any change of state unblocks.
    fn enables_something(&mut self, next_state: StateId) -> bool {
        if self.needs.is_none() {
            let mut needs = Needs::default();
            let pending: Vec<usize> = self
                .window()
                .filter_map(|event| self.candidate(event))
                .collect();
            for op in pending {
                match self.partition.transitions[op] {
                    Transition::Read { observed: wanted }
                    | Transition::CasSucceeded {
                        expected: wanted, ..
                    } => needs.states.push(wanted),
                    Transition::MaybeCas { expected, new } if expected != new => {
                        needs.states.push(expected)
                    }
                    Transition::CasFailed { expected }
                    | Transition::MaybeWrite { new: expected }
                        if expected == self.state =>
                    {
                        needs.any_change = true
                    }
                    _ => {}
                }
            }
            self.needs = Some(needs);
        }
        self.needs.as_ref().is_some_and(|needs| {
            (needs.any_change && next_state != self.state) || needs.states.contains(&next_state)
        })
    }

    /// A pending operation that never changes the state and may take
    /// effect now, if any. (Always a known operation, so the model and the
    /// obligation decide; nothing needs enabling.)
    fn forced_move(&self) -> Option<(usize, StateId)> {
        self.window()
            .filter_map(|event| match self.events[event] {
                Event::Call(op) => Some(op),
                _ => None,
            })
            .find(|&op| {
                let t = self.partition.transitions[op];
                t.never_changes_state()
                    && self
                        .obligation
                        .is_none_or(|before| t.apply(before).is_none())
                    && t.apply(self.state).is_some()
            })
            .map(|op| (op, self.state))
    }

    /// True if some state that unlinearized operations require can no
    /// longer be produced (and the register does not hold it now).
    fn doomed(&self) -> bool {
        let current = self.state as usize;
        let holds_stranded = self.requirers_left[current] > 0 && self.writers_left[current] == 0;
        self.stranded > usize::from(holds_stranded)
    }

    /// The first unlinearized operation (in call order) that requires a
    /// state nothing can produce any more; see [`Search::doomed`].
    fn stranded_op(&self) -> Option<usize> {
        (0..self.partition.ops.len()).find(|&op| {
            !self.done[op]
                && self.partition.transitions[op]
                    .requires()
                    .is_some_and(|r| r != self.state && self.writers_left[r as usize] == 0)
        })
    }

    /// Adds `delta` to the counts of what `op` writes and requires,
    /// keeping `stranded` up to date.
    fn count(&mut self, op: usize, delta: i32) {
        let t = self.partition.transitions[op];
        for (state, is_writer) in [(t.writes(), true), (t.requires(), false)] {
            let Some(state) = state else { continue };
            let s = state as usize;
            let was = self.requirers_left[s] > 0 && self.writers_left[s] == 0;
            let counter = if is_writer {
                &mut self.writers_left[s]
            } else {
                &mut self.requirers_left[s]
            };
            *counter = counter.saturating_add_signed(delta);
            let now = self.requirers_left[s] > 0 && self.writers_left[s] == 0;
            match (was, now) {
                (false, true) => self.stranded += 1,
                (true, false) => self.stranded -= 1,
                _ => {}
            }
        }
    }

    /// Linearizes `op` next unless the configuration that leads to was
    /// explored before (or one that dominates it was).
    fn take(&mut self, op: usize, next_state: StateId, forced: bool) -> bool {
        let known = self.partition.transitions[op].is_known();
        let next_obligation = (!known).then_some(self.state);
        let next_linearized = self.linearized ^ self.op_keys[op];
        let unobliged = next_linearized ^ fingerprint(next_state.into(), 1);
        let configuration = match next_obligation {
            None => unobliged,
            Some(before) => unobliged ^ fingerprint(before.into(), 2),
        };
        // With an obligation there are fewer moves than without one, so if
        // the same configuration without it failed, this one fails too.
        if next_obligation.is_some() && self.memo.contains(&unobliged) {
            return false;
        }
        if !self.memo.insert(configuration) {
            return false;
        }
        self.stack.push(Frame {
            op,
            state: self.state,
            obligation: self.obligation,
            horizon: self.horizon,
            forced,
        });
        self.needs = None;
        self.state = next_state;
        self.obligation = next_obligation;
        self.linearized = next_linearized;
        match self.partition.class_of[op] {
            None => {
                self.list.remove(self.call_event[op]);
                if self.return_event[op] != NIL {
                    self.list.remove(self.return_event[op]);
                    self.horizon = self.first_return_time();
                }
                self.remaining_known -= 1;
            }
            Some(class) => {
                self.class_next[class] += 1;
                if self.class_next[class] == self.partition.members[class].len() {
                    self.list.remove(self.class_event[class]);
                }
            }
        }
        self.count(op, -1);
        self.done[op] = true;
        true
    }

    /// Undoes moves until one whose configuration has other moves left;
    /// returns the event to resume scanning at, or `None` when the initial
    /// configuration has failed.
    fn backtrack(&mut self) -> Option<usize> {
        loop {
            let frame = self.stack.pop()?;
            let op = frame.op;
            self.needs = None;
            self.state = frame.state;
            self.obligation = frame.obligation;
            self.horizon = frame.horizon;
            self.linearized ^= self.op_keys[op];
            self.count(op, 1);
            self.done[op] = false;
            // Restore in reverse order of removal, as the list requires.
            let resume_at = match self.partition.class_of[op] {
                None => {
                    if self.return_event[op] != NIL {
                        self.list.restore(self.return_event[op]);
                    }
                    self.list.restore(self.call_event[op]);
                    self.remaining_known += 1;
                    self.call_event[op]
                }
                Some(class) => {
                    if self.class_next[class] == self.partition.members[class].len() {
                        self.list.restore(self.class_event[class]);
                    }
                    self.class_next[class] -= 1;
                    self.class_event[class]
                }
            };
            if !frame.forced {
                return Some(self.list.next(resume_at));
            }
        }
    }
}

const NIL: usize = usize::MAX;

/// A doubly linked list over event indices with a head sentinel, from which
/// events are removed and restored in last-out-first-in order ("dancing
/// links"): a removed event keeps its own links, so restoring it is O(1).
struct EventList {
    next: Vec<usize>,
    prev: Vec<usize>,
    head: usize,
}

impl EventList {
    fn new(len: usize) -> Self {
        // Entries 0..len in order, then the head sentinel at `len`.
        let head = len;
        let next = (1..len)
            .chain([NIL])
            .take(len)
            .chain([if len > 0 { 0 } else { NIL }])
            .collect();
        let prev = [head]
            .into_iter()
            .chain(0..len.saturating_sub(1))
            .take(len)
            .chain([NIL])
            .collect();
        EventList { next, prev, head }
    }

    fn first(&self) -> usize {
        self.next[self.head]
    }

    fn next(&self, e: usize) -> usize {
        self.next[e]
    }

    fn remove(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    fn restore(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = e;
        if n != NIL {
            self.prev[n] = e;
        }
    }
}

/// A 128-bit pseudo-random key for `(x, domain)` (two SplitMix64 outputs).
/// Configurations are fingerprinted as the XOR of their operations' keys
/// and their state's key, which updates in O(1) per step.
fn fingerprint(x: u64, domain: u64) -> u128 {
    let seed = x.wrapping_mul(2).wrapping_add(domain << 62);
    (u128::from(splitmix64(seed)) << 64) | u128::from(splitmix64(seed ^ 0x5555_5555_5555_5555))
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The memo's keys are already uniformly random; hashing them again would
/// only cost time.
#[derive(Default)]
struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used by u128 keys; kept correct for any other use.
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x100_0000_01B3);
        }
    }

    fn write_u128(&mut self, x: u128) {
        self.0 = x as u64 ^ (x >> 64) as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_list_restores_in_reverse_order() {
        let walk = |list: &EventList| {
            let mut seen = Vec::new();
            let mut e = list.first();
            while e != NIL {
                seen.push(e);
                e = list.next(e);
            }
            seen
        };
        assert_eq!(walk(&EventList::new(0)), Vec::<usize>::new());
        let mut list = EventList::new(5);
        assert_eq!(walk(&list), vec![0, 1, 2, 3, 4]);
        list.remove(0);
        list.remove(3);
        list.remove(4);
        assert_eq!(walk(&list), vec![1, 2]);
        list.restore(4);
        list.restore(3);
        assert_eq!(walk(&list), vec![1, 2, 3, 4]);
        list.restore(0);
        assert_eq!(walk(&list), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn unknown_operations_refuse_to_change_nothing() {
        assert_eq!(Transition::MaybeWrite { new: 3 }.apply(3), None);
        assert_eq!(Transition::MaybeWrite { new: 3 }.apply(2), Some(3));
        let cas = Transition::MaybeCas {
            expected: 2,
            new: 3,
        };
        assert_eq!(cas.apply(2), Some(3));
        assert_eq!(cas.apply(4), None);
    }

    #[test]
    fn fingerprints_differ_across_domains_and_inputs() {
        let mut seen = HashSet::new();
        for x in 0..1000 {
            assert!(seen.insert(fingerprint(x, 0)));
            assert!(seen.insert(fingerprint(x, 1)));
        }
    }

    #[test]
    fn unobserved_values_share_one_state() {
        let history = [
            Operation::put(1, "k", 0, 1, "a"),
            Operation::put(1, "k", 2, 3, "b"),
            Operation::get(1, "k", 4, 5, Some("c")),
            Operation::cas(1, "k", 6, 7, Some("d"), "e", false),
        ];
        let p = Partition::build(history.iter().enumerate(), None);
        assert_eq!(
            p.transitions,
            vec![
                Transition::Write { new: UNOBSERVED },
                Transition::Write { new: UNOBSERVED },
                Transition::Read { observed: 2 },
                Transition::CasFailed { expected: 3 },
            ]
        );
    }

    #[test]
    fn step_budget_yields_unknown() {
        let history: Vec<Operation> = (0..50)
            .map(|i| Operation::put(i, "k", 0, 100, &i.to_string()))
            .chain([Operation::get(99, "k", 200, 300, Some("7"))])
            .collect();
        let options = CheckOptions {
            max_steps: Some(10),
            ..CheckOptions::default()
        };
        match check(&history, &options) {
            Ok(Verdict::Unknown(undecided)) => assert_eq!(undecided.keys, vec![b"k".to_vec()]),
            other => panic!("expected Unknown, got {other:?}"),
        }
    }
}
