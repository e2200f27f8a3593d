//! Keys and value codecs of the metadata keyspace.
//!
//! | key                      | value                                   |
//! |--------------------------|-----------------------------------------|
//! | `format`                 | u32 BE, [`FORMAT_VERSION`]              |
//! | `applied`                | index u64 BE ++ term u64 BE             |
//! | `conf_state`             | see `encode_conf_state`                 |
//! | `member/` ++ id u64 BE   | opaque member record                    |
//! | `compacted_revision`     | i64 BE                                  |
//! | `current_revision`       | i64 BE                                  |
//!
//! Absent keys read as their zero value (a fresh store), except `format`,
//! whose absence means the database was never initialised.

use crate::error::{Error, Result};
use raft::{ConfState, NodeId};

/// Bumped when the layout of any keyspace changes incompatibly.
///
/// 2: the values of put versions are the store's records (see
/// `crate::record`), no longer opaque bytes.
pub const FORMAT_VERSION: u32 = 2;

pub(crate) const KEY_FORMAT: &[u8] = b"format";
pub(crate) const KEY_APPLIED: &[u8] = b"applied";
pub(crate) const KEY_CONF_STATE: &[u8] = b"conf_state";
pub(crate) const KEY_COMPACTED_REVISION: &[u8] = b"compacted_revision";
pub(crate) const KEY_CURRENT_REVISION: &[u8] = b"current_revision";
pub(crate) const MEMBER_PREFIX: &[u8] = b"member/";

/// The last log entry whose effects the data reflects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AppliedIndex {
    pub index: u64,
    pub term: u64,
}

fn malformed(key: &[u8], detail: &'static str) -> Error {
    Error::MetaDecode {
        key: String::from_utf8_lossy(key).into_owned(),
        detail,
    }
}

fn fixed<const N: usize>(key: &[u8], value: &[u8]) -> Result<[u8; N]> {
    value.try_into().map_err(|_| malformed(key, "wrong length"))
}

pub(crate) fn encode_u32(value: u32) -> Vec<u8> {
    value.to_be_bytes().to_vec()
}

pub(crate) fn decode_u32(key: &[u8], value: &[u8]) -> Result<u32> {
    Ok(u32::from_be_bytes(fixed(key, value)?))
}

pub(crate) fn encode_i64(value: i64) -> Vec<u8> {
    value.to_be_bytes().to_vec()
}

pub(crate) fn decode_i64(key: &[u8], value: &[u8]) -> Result<i64> {
    Ok(i64::from_be_bytes(fixed(key, value)?))
}

pub(crate) fn encode_applied(applied: AppliedIndex) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    out.extend_from_slice(&applied.index.to_be_bytes());
    out.extend_from_slice(&applied.term.to_be_bytes());
    out
}

pub(crate) fn decode_applied(value: &[u8]) -> Result<AppliedIndex> {
    let bytes: [u8; 16] = fixed(KEY_APPLIED, value)?;
    let (index, term) = bytes.split_at(8);
    Ok(AppliedIndex {
        index: u64::from_be_bytes(fixed(KEY_APPLIED, index)?),
        term: u64::from_be_bytes(fixed(KEY_APPLIED, term)?),
    })
}

/// `voter count u32 BE, voters u64 BE…, learner count u32 BE, learners u64 BE…`
pub(crate) fn encode_conf_state(conf_state: &ConfState) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + 8 * (conf_state.voters.len() + conf_state.learners.len()));
    for ids in [&conf_state.voters, &conf_state.learners] {
        // A membership of 2^32 nodes is not a configuration anyone can run.
        out.extend_from_slice(&(ids.len() as u32).to_be_bytes());
        for id in ids {
            out.extend_from_slice(&id.to_be_bytes());
        }
    }
    out
}

pub(crate) fn decode_conf_state(value: &[u8]) -> Result<ConfState> {
    let key = KEY_CONF_STATE;
    let mut rest = value;
    let take_ids = |rest: &mut &[u8]| -> Result<Vec<NodeId>> {
        let (count, tail) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| malformed(key, "truncated count"))?;
        let count = u32::from_be_bytes(*count) as usize;
        let id_bytes = count
            .checked_mul(8)
            .filter(|&n| n <= tail.len())
            .ok_or_else(|| malformed(key, "truncated id list"))?;
        let (ids, tail) = tail.split_at(id_bytes);
        *rest = tail;
        Ok(ids
            .chunks_exact(8)
            .map(|chunk| {
                let mut id = [0u8; 8];
                id.copy_from_slice(chunk);
                u64::from_be_bytes(id)
            })
            .collect())
    };
    let voters = take_ids(&mut rest)?;
    let learners = take_ids(&mut rest)?;
    if !rest.is_empty() {
        return Err(malformed(key, "trailing bytes"));
    }
    Ok(ConfState { voters, learners })
}

pub(crate) fn member_key(id: NodeId) -> Vec<u8> {
    let mut key = Vec::with_capacity(MEMBER_PREFIX.len() + 8);
    key.extend_from_slice(MEMBER_PREFIX);
    key.extend_from_slice(&id.to_be_bytes());
    key
}

pub(crate) fn decode_member_key(key: &[u8]) -> Result<NodeId> {
    let id = key
        .strip_prefix(MEMBER_PREFIX)
        .ok_or_else(|| malformed(key, "not a member key"))?;
    Ok(u64::from_be_bytes(fixed(key, id)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_state_round_trips_and_rejects_garbage() {
        let conf_state = ConfState {
            voters: vec![1, 2, 3],
            learners: vec![9],
        };
        let encoded = encode_conf_state(&conf_state);
        assert_eq!(decode_conf_state(&encoded).unwrap(), conf_state);
        assert_eq!(
            decode_conf_state(&encode_conf_state(&ConfState::default())).unwrap(),
            ConfState::default()
        );
        for cut in 0..encoded.len() {
            assert!(decode_conf_state(&encoded[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = encoded.clone();
        long.push(0);
        assert!(decode_conf_state(&long).is_err());
        assert!(decode_conf_state(&[0xFF; 4]).is_err());
    }

    #[test]
    fn applied_and_members_round_trip() {
        let applied = AppliedIndex { index: 7, term: 3 };
        assert_eq!(decode_applied(&encode_applied(applied)).unwrap(), applied);
        assert!(decode_applied(&[0; 15]).is_err());
        assert_eq!(decode_member_key(&member_key(42)).unwrap(), 42);
        assert!(decode_member_key(b"member/1").is_err());
    }
}
