//! Majority arithmetic, and nothing else.

use crate::types::NodeId;

/// The smallest number of voters that forms a majority of `voter_count`.
pub fn majority(voter_count: usize) -> usize {
    voter_count / 2 + 1
}

/// The highest index that a majority of voters have reached, given each
/// voter's acknowledged index. Returns `u64::MAX` for an empty voter set so
/// that callers never commit on it by accident through `min`.
pub fn committed_index(acknowledged: &mut [u64]) -> u64 {
    if acknowledged.is_empty() {
        return u64::MAX;
    }
    acknowledged.sort_unstable_by(|a, b| b.cmp(a));
    acknowledged[majority(acknowledged.len()) - 1]
}

/// Outcome of counting votes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    Won,
    Lost,
    Pending,
}

/// Tallies granted and rejected votes of `voters`; votes of non-voters are
/// ignored by construction (the caller passes only voters' answers).
pub fn tally(voters: &[NodeId], vote_of: impl Fn(NodeId) -> Option<bool>) -> VoteResult {
    let needed = majority(voters.len());
    let mut granted = 0;
    let mut rejected = 0;
    for &voter in voters {
        match vote_of(voter) {
            Some(true) => granted += 1,
            Some(false) => rejected += 1,
            None => {}
        }
    }
    if granted >= needed {
        VoteResult::Won
    } else if voters.len() - rejected < needed {
        VoteResult::Lost
    } else {
        VoteResult::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_index_is_the_majority_minimum() {
        assert_eq!(committed_index(&mut [5]), 5);
        assert_eq!(committed_index(&mut [5, 3, 9]), 5);
        assert_eq!(committed_index(&mut [1, 2, 3, 4]), 2);
        assert_eq!(committed_index(&mut [7, 7, 1, 1, 1]), 1);
        assert_eq!(committed_index(&mut []), u64::MAX);
    }

    #[test]
    fn tally_decides_as_soon_as_possible() {
        let voters = [1, 2, 3];
        assert_eq!(
            tally(&voters, |id| (id == 1).then_some(true)),
            VoteResult::Pending
        );
        assert_eq!(
            tally(&voters, |id| (id <= 2).then_some(true)),
            VoteResult::Won
        );
        assert_eq!(
            tally(&voters, |id| (id >= 2).then_some(false)),
            VoteResult::Lost
        );
    }
}
