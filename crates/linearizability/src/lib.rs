//! A linearizability checker for histories recorded against raftkv (test
//! support only).
//!
//! This crate owns three things: the data model of a recorded history
//! ([`Operation`]: who called what on which key, when, and what came back),
//! the decision whether such a history is linearizable against a register
//! model ([`check`]), and a plain-text file format for histories
//! ([`format`]) so a fault-injection harness can save what it saw and a
//! human or a later run can read it back.
//!
//! It must never talk to a cluster, read a clock to timestamp operations
//! (callers record times; the checker only reads a clock to enforce its own
//! time budget), or be linked into the server: it is a test oracle, and an
//! oracle that shares code paths with what it judges proves little.
//!
//! # The model
//! Every key is an independent register that starts absent (or at a value
//! given in [`CheckOptions::initial_values`]). Operations are:
//! * `put(v)` — sets the value; returns `ok`.
//! * `get` — returns the value, or `None` if the key is absent.
//! * `cas(expected, new)` — etcd's `Txn` comparing the value: if the current
//!   value equals `expected` it sets `new` and reports success, otherwise it
//!   changes nothing and reports failure. `expected = None` means "the key
//!   must be absent" (etcd: compare `create_revision == 0`); an absent key
//!   never equals `Some(_)`, as etcd's value comparison against a missing key
//!   is false.
//!
//! # Outcomes that are not known
//! A client that timed out, saw `Unavailable`, or lost its connection does
//! not know whether its operation took effect. Record it with
//! [`RegisterOutput::Unknown`]: the checker lets it take effect at any
//! point after its call — even after the client gave up and moved on — or
//! never. Its `ret` is ignored. An operation that failed with an error
//! proving it was *not* applied (for example a rejected request that never
//! reached the log) must simply be left out of the history; recording it as
//! unknown is sound but makes the search slower.
//!
//! # Time
//! `call` and `ret` are nanoseconds on one monotonic clock shared by all
//! clients. Operation A precedes B only if `A.ret < B.call` strictly; equal
//! timestamps count as concurrent, because a coarse clock cannot prove an
//! order it did not observe.
//!
//! # The search
//! Histories are split per key (linearizability is compositional) and each
//! key is searched with the Wing–Gong–Lowe algorithm as refined by Lowe and
//! used by porcupine: walk the call/return events in time order, try to
//! linearize each pending call, backtrack when a return is reached whose
//! operation has not been linearized, and remember every (linearized set,
//! register state) configuration already explored so none is explored
//! twice. See [`check`] for the extra reductions that keep histories with
//! many unknown outcomes tractable.
//!
//! Write a unique value with every put and compare-and-set: then a read
//! names the one write it saw, and violations are found (and explained)
//! quickly. Repeated values are checked correctly but can be slow to refute.
//!
//! # Example
//! ```
//! use linearizability::{check, CheckOptions, Operation, RegisterInput, Verdict};
//!
//! let history = vec![
//!     Operation::put(1, "x", 0, 10, "a"),
//!     Operation::put(2, "x", 20, 30, "b"),
//!     // Timed out: may have happened at any time after 25, or never.
//!     Operation::unknown(3, "x", 25, RegisterInput::put("c")),
//!     // "a" was overwritten by "b" before this read began.
//!     Operation::get(4, "x", 40, 50, Some("a")),
//! ];
//! let verdict = check(&history, &CheckOptions::default()).expect("well-formed history");
//! let Verdict::NotLinearizable(counterexample) = verdict else {
//!     panic!("a stale read must be rejected");
//! };
//! assert_eq!(counterexample.blocked, history[3]);
//! println!("{counterexample}");
//! ```

mod checker;
pub mod format;
mod history;

pub use checker::{
    check, BlockReason, CheckOptions, Counterexample, LinearizedOp, Undecided, Verdict,
};
pub use history::{
    display_value, HistoryError, Key, Operation, OperationDisplay, RegisterInput, RegisterOutput,
    Value,
};
