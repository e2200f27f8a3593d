//! Helpers shared by the integration tests.
#![allow(dead_code)]

use mvcc::{Backend, KeyspaceId};
use std::collections::BTreeMap;

pub mod store;

/// Every raw entry of every keyspace: what "the state" means when tests
/// compare two backends.
pub type Dump = BTreeMap<(KeyspaceId, Vec<u8>), Vec<u8>>;

pub fn dump(backend: &Backend) -> Dump {
    let view = backend.read();
    let mut out = Dump::new();
    for keyspace in KeyspaceId::ALL {
        for entry in view.raw_entries(keyspace) {
            let (key, value) = entry.unwrap();
            out.insert((keyspace, key), value);
        }
    }
    out
}

/// splitmix64: a tiny deterministic generator, so a printed seed replays
/// a run exactly.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (bound > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

/// The seed of a randomized test: `RAFTKV_MVCC_SEED` if set, otherwise
/// from the clock; printed either way so a failure can be replayed.
pub fn seed(test: &str) -> u64 {
    let seed = match std::env::var("RAFTKV_MVCC_SEED") {
        Ok(text) => text.parse().expect("RAFTKV_MVCC_SEED must be a u64"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    };
    eprintln!("{test}: seed {seed} (replay with RAFTKV_MVCC_SEED={seed})");
    seed
}

/// Fills a backend with `keys` keys, a few versions each, some deleted,
/// leases and members, as one batch per main revision.
pub fn fill(backend: &Backend, rng: &mut Rng, keys: usize, value_bytes: usize, tag: &str) {
    let mut main = backend.current_revision().unwrap();
    let mut index = backend.applied().index;
    for chunk_start in (0..keys).step_by(64) {
        main += 1;
        index += 1;
        let mut batch = backend.write_batch();
        for (sub, key) in (chunk_start..(chunk_start + 64).min(keys)).enumerate() {
            let user_key = format!("{tag}/key/{key:06}").into_bytes();
            let revision = mvcc::Revision::new(main, sub as i64);
            if rng.below(10) == 0 {
                batch.put_tombstone(&user_key, revision).unwrap();
            } else {
                batch
                    .put(&user_key, revision, &rng.bytes(value_bytes))
                    .unwrap();
            }
        }
        batch.put_lease(main, format!("{tag}-lease-{main}").as_bytes());
        batch.put_member(rng.below(5) + 1, format!("{tag}-member").as_bytes());
        batch.set_conf_state(&raft::ConfState {
            voters: vec![1, 2, 3],
            learners: vec![main as u64 + 10],
        });
        batch.set_current_revision(main);
        batch.set_compacted_revision(main / 2);
        batch.set_applied(index, 2);
        backend.commit(batch).unwrap();
    }
}

/// Database generation directories under a backend root.
pub fn generation_dirs(root: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("db-"))
        .collect();
    names.sort();
    names
}
