//! Shared test support: a seeded generator of linearizable histories (from
//! a simulated register), mutations that make them non-linearizable, and a
//! brute-force checker to compare the real one against.

#![allow(dead_code)] // Each test binary uses a different part.

use linearizability::{Operation, RegisterInput, RegisterOutput, Value};

/// SplitMix64: tiny, seedable, good enough to drive a workload.
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, n)`; `n > 0`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn per_mille(&mut self, p: u64) -> bool {
        self.below(1000) < p
    }
}

#[derive(Clone, Debug)]
pub struct Workload {
    pub clients: u64,
    pub ops_per_client: usize,
    pub keys: u64,
    pub get_per_mille: u64,
    pub cas_per_mille: u64,
    /// Operations whose outcome the client does not learn. A third never
    /// take effect, a third take effect within their call..return window,
    /// a third take effect up to 40 times their duration later.
    pub unknown_per_mille: u64,
    /// Longest operation, in nanoseconds.
    pub max_duration: u64,
    /// Longest pause between a client's operations.
    pub max_think: u64,
    /// Draw written values from this many (Jepsen style) instead of making
    /// each unique. Mutations that rely on unique values need `None`.
    pub value_range: Option<u64>,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            clients: 10,
            ops_per_client: 100,
            keys: 1,
            get_per_mille: 450,
            cas_per_mille: 150,
            unknown_per_mille: 50,
            max_duration: 5_000,
            max_think: 2_000,
            value_range: None,
        }
    }
}

/// A history of a linearizable register: each operation gets a
/// linearization point inside its call..return window (unknown outcomes:
/// anywhere after the call, or none), operations are applied in point
/// order, and each records what it saw. Every written value is unique.
pub fn linearizable_history(seed: u64, w: &Workload) -> Vec<Operation> {
    let mut rng = SplitMix64::new(seed);
    let mut next_free: Vec<u64> = (0..w.clients).map(|_| rng.below(1_000)).collect();
    let mut ops = Vec::new();
    let mut points: Vec<Option<u64>> = Vec::new();
    let mut unknown: Vec<bool> = Vec::new();
    let mut recent: Vec<Vec<Value>> = vec![Vec::new(); w.keys as usize];
    let mut fresh = 0u64;

    for _ in 0..w.clients as usize * w.ops_per_client {
        // Generate in time order: the client that is free first goes next,
        // so "recently written" below means recent in time.
        let (client, &free) = next_free
            .iter()
            .enumerate()
            .min_by_key(|&(i, &t)| (t, i))
            .expect("at least one client");
        let call = free + rng.below(w.max_think + 1);
        let duration = 1 + rng.below(w.max_duration);
        let ret = call + duration;
        let key = rng.below(w.keys) as usize;
        let kind = rng.below(1000);
        let mut new_value = |rng: &mut SplitMix64| match w.value_range {
            Some(range) => rng.below(range).to_string().into_bytes(),
            None => {
                fresh += 1;
                format!("c{client}-{fresh}").into_bytes()
            }
        };
        let input = if kind < w.get_per_mille {
            RegisterInput::Get
        } else if kind < w.get_per_mille + w.cas_per_mille {
            let r = &recent[key];
            let expected = if r.is_empty() || rng.per_mille(100) {
                None
            } else {
                let back = rng.below(r.len().min(4) as u64) as usize;
                Some(r[r.len() - 1 - back].clone())
            };
            RegisterInput::Cas {
                expected,
                new: new_value(&mut rng),
            }
        } else {
            RegisterInput::Put {
                value: new_value(&mut rng),
            }
        };
        if let RegisterInput::Put { value } | RegisterInput::Cas { new: value, .. } = &input {
            recent[key].push(value.clone());
        }
        let outcome_unknown = rng.per_mille(w.unknown_per_mille);
        let point = if !outcome_unknown {
            Some(call + rng.below(duration + 1))
        } else {
            match rng.below(3) {
                0 => None,
                1 => Some(call + rng.below(duration + 1)),
                _ => Some(call + rng.below(40 * duration + 1)),
            }
        };
        let recorded_ret = if outcome_unknown && rng.per_mille(500) {
            None
        } else {
            Some(ret)
        };
        ops.push(Operation {
            client: client as u64,
            key: format!("k{key}").into_bytes(),
            call,
            ret: recorded_ret,
            input,
            output: RegisterOutput::Unknown,
        });
        points.push(point);
        unknown.push(outcome_unknown);
        next_free[client] = ret;
    }

    // Apply in linearization-point order (ties by generation order, which
    // is consistent with real time: a point lies inside its window).
    let mut order: Vec<usize> = (0..ops.len()).filter(|&i| points[i].is_some()).collect();
    order.sort_by_key(|&i| (points[i], i));
    let mut state: Vec<Option<Value>> = vec![None; w.keys as usize];
    for i in order {
        let key: usize = std::str::from_utf8(&ops[i].key[1..])
            .expect("ascii key")
            .parse()
            .expect("numeric key");
        let current = &mut state[key];
        let output = match &ops[i].input {
            RegisterInput::Put { value } => {
                *current = Some(value.clone());
                RegisterOutput::Put
            }
            RegisterInput::Get => RegisterOutput::Get {
                value: current.clone(),
            },
            RegisterInput::Cas { expected, new } => {
                let succeeded = current == expected;
                if succeeded {
                    *current = Some(new.clone());
                }
                RegisterOutput::Cas { succeeded }
            }
        };
        if !unknown[i] {
            ops[i].output = output;
        }
    }
    ops
}

/// Makes one late, known get return a value that was provably overwritten
/// before the get began: put P (of v) returned before put Q began, and Q
/// returned before the get began. Values are unique, so no linearization
/// can show v to the get. Returns the get's index.
pub fn inject_stale_read(history: &mut [Operation]) -> Option<usize> {
    let puts: Vec<usize> = (0..history.len())
        .filter(|&i| history[i].output == RegisterOutput::Put)
        .collect();
    for g in (0..history.len()).rev() {
        if !matches!(history[g].output, RegisterOutput::Get { .. }) {
            continue;
        }
        let get = &history[g];
        let before = |a: &Operation, b_call: u64| a.ret.is_some_and(|r| r < b_call);
        let Some(&q) = puts
            .iter()
            .filter(|&&q| history[q].key == get.key && before(&history[q], get.call))
            .max_by_key(|&&q| history[q].call)
        else {
            continue;
        };
        let Some(&p) = puts
            .iter()
            .find(|&&p| history[p].key == get.key && before(&history[p], history[q].call))
        else {
            continue;
        };
        let RegisterInput::Put { value } = &history[p].input else {
            continue;
        };
        let stale = value.clone();
        if history[g].output
            == (RegisterOutput::Get {
                value: Some(stale.clone()),
            })
        {
            continue;
        }
        history[g].output = RegisterOutput::Get { value: Some(stale) };
        return Some(g);
    }
    None
}

/// Tries every order, independently of the checker: an operation may go
/// next if no other remaining known operation returned strictly before it
/// was called; unknown outcomes may go anywhere or be left out (left out =
/// at the end, where they affect nothing).
pub fn brute_force_linearizable(history: &[Operation]) -> bool {
    let mut keys: Vec<&Vec<u8>> = history.iter().map(|op| &op.key).collect();
    keys.sort();
    keys.dedup();
    keys.iter().all(|key| {
        let ops: Vec<&Operation> = history.iter().filter(|op| &op.key == *key).collect();
        let mut used = vec![false; ops.len()];
        search(&ops, &mut used, None)
    })
}

fn search(ops: &[&Operation], used: &mut [bool], state: Option<Value>) -> bool {
    let remaining_known = |used: &[bool]| (0..ops.len()).any(|i| !used[i] && !ops[i].is_unknown());
    if !remaining_known(used) {
        return true;
    }
    for o in 0..ops.len() {
        if used[o] {
            continue;
        }
        let blocked = (0..ops.len()).any(|r| {
            r != o
                && !used[r]
                && !ops[r].is_unknown()
                && ops[r].ret.is_some_and(|ret| ret < ops[o].call)
        });
        if blocked {
            continue;
        }
        let next = match (&ops[o].input, &ops[o].output) {
            (RegisterInput::Put { value }, _) => Some(Some(value.clone())),
            (RegisterInput::Get, RegisterOutput::Get { value }) => {
                (state == *value).then(|| state.clone())
            }
            (RegisterInput::Get, _) => Some(state.clone()),
            (RegisterInput::Cas { expected, new }, RegisterOutput::Cas { succeeded }) => {
                match (state == *expected, *succeeded) {
                    (true, true) => Some(Some(new.clone())),
                    (false, false) => Some(state.clone()),
                    _ => None,
                }
            }
            (RegisterInput::Cas { expected, new }, _) => Some(if state == *expected {
                Some(new.clone())
            } else {
                state.clone()
            }),
        };
        if let Some(next) = next {
            used[o] = true;
            let found = search(ops, used, next);
            used[o] = false;
            if found {
                return true;
            }
        }
    }
    false
}
