//! A small seeded pseudo-random generator (SplitMix64).
//!
//! Raft needs randomness only to spread election timeouts. It takes a seed
//! from its caller and never touches OS randomness, so a simulation that
//! fixes every seed replays exactly.

#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[low, high)`. Panics if the range is empty.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        assert!(low < high, "empty random range [{low}, {high})");
        low + self.next_u64() % (high - low)
    }
}
