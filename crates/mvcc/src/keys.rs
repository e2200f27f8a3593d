//! How MVCC versions are laid out as keys and values of an ordered
//! key-value engine.
//!
//! # Key layout
//!
//! ```text
//! escape(user_key) ++ 0x00 0x01 ++ be64(main ^ 1<<63) ++ be64(sub ^ 1<<63)
//! ```
//!
//! `escape` doubles every `0x00` byte of the user key into `0x00 0xFF`, so
//! the terminator `0x00 0x01` can never occur inside an escaped key. Flipping
//! the sign bit makes the big-endian bytes of an `i64` sort like the number.
//! Together this gives the one property everything relies on:
//!
//! > lexicographic order of encoded keys = order of `(user_key, revision)`
//!
//! Why it holds, comparing encodings of user keys `a < b`: either they differ
//! at a byte both have (if one of the two bytes is `0x00` it becomes
//! `0x00 0xFF`, still smaller than any non-zero byte and larger than the
//! terminator's `0x00 0x01`), or `a` is a proper prefix of `b`, where `a`'s
//! terminator `0x00 0x01` meets either a non-zero byte of `b` or `b`'s escaped
//! `0x00 0xFF`, both larger. Equal user keys share the escaped prefix and the
//! terminator, so the fixed-width revision decides. The property test in this
//! module checks this claim on random keys.
//!
//! Consequences used by range scans: every version of `k` lies in
//! `[escape(k) ++ 00 01, escape(k) ++ 00 02)`, and every version of every key
//! in `[start, end)` lies in `[escape(start) ++ 00 01, escape(end) ++ 00 01)`.
//!
//! # Value layout
//!
//! One tag byte: `0x01` followed by the opaque value of a put, or `0x00` alone
//! for a tombstone (a deletion is a version of the key, so that reads at
//! older revisions still see what was there).

use crate::error::{Error, Result};
use std::ops::Bound;

/// The largest key fjall accepts: its documentation says 65536 bytes, but
/// lsm-tree asserts `u16::try_from(len)` (it stores the length in a u16),
/// so 65535 is the most that does not panic. Encoded keys above it are
/// refused with [`Error::KeyTooLarge`].
pub const ENCODED_KEY_BYTES_MAX: usize = 65_535;

/// Bytes of the terminator plus the revision after the escaped user key.
const SUFFIX_BYTES: usize = 2 + 16;

/// The longest user key whose every version encodes, whatever its bytes:
/// escaping at most doubles a key (all zeros), then the suffix follows.
pub const USER_KEY_BYTES_MAX: usize = (ENCODED_KEY_BYTES_MAX - SUFFIX_BYTES) / 2;

const TERMINATOR: [u8; 2] = [0x00, 0x01];
/// Sorts after every version of a key and before the next user key.
const AFTER_VERSIONS: [u8; 2] = [0x00, 0x02];
const ESCAPED_ZERO: [u8; 2] = [0x00, 0xFF];

const TAG_TOMBSTONE: u8 = 0x00;
const TAG_PUT: u8 = 0x01;

/// A point in the store's history, as etcd counts it: `main` is the
/// cluster-wide revision of a write request, `sub` orders the changes within
/// one (a transaction).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision {
    pub main: i64,
    pub sub: i64,
}

impl Revision {
    pub const fn new(main: i64, sub: i64) -> Self {
        Revision { main, sub }
    }

    /// The last revision of main revision `main`: every `sub` of it sorts at
    /// or below this one. Used as the "≤ R" bound of historical reads.
    pub const fn last_of(main: i64) -> Self {
        Revision {
            main,
            sub: i64::MAX,
        }
    }

    /// 16 bytes whose lexicographic order is the order of revisions.
    pub fn to_ordered_bytes(self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&flip(self.main).to_be_bytes());
        out[8..].copy_from_slice(&flip(self.sub).to_be_bytes());
        out
    }

    /// Inverse of [`Revision::to_ordered_bytes`].
    pub fn from_ordered_bytes(bytes: [u8; 16]) -> Self {
        let mut main = [0u8; 8];
        let mut sub = [0u8; 8];
        main.copy_from_slice(&bytes[..8]);
        sub.copy_from_slice(&bytes[8..]);
        Revision {
            main: unflip(u64::from_be_bytes(main)),
            sub: unflip(u64::from_be_bytes(sub)),
        }
    }
}

fn flip(value: i64) -> u64 {
    (value as u64) ^ (1 << 63)
}

fn unflip(value: u64) -> i64 {
    (value ^ (1 << 63)) as i64
}

fn push_escaped(out: &mut Vec<u8>, user_key: &[u8]) {
    for &byte in user_key {
        if byte == 0 {
            out.extend_from_slice(&ESCAPED_ZERO);
        } else {
            out.push(byte);
        }
    }
}

fn escaped_len(user_key: &[u8]) -> usize {
    user_key.len() + user_key.iter().filter(|&&b| b == 0).count()
}

fn check_len(len: usize) -> Result<()> {
    if len > ENCODED_KEY_BYTES_MAX {
        return Err(Error::KeyTooLarge {
            encoded_bytes: len,
            max_bytes: ENCODED_KEY_BYTES_MAX,
        });
    }
    Ok(())
}

/// The engine key of version `revision` of `user_key`.
///
/// Fails with [`Error::KeyTooLarge`] when the encoding exceeds
/// [`ENCODED_KEY_BYTES_MAX`].
pub fn encode_key(user_key: &[u8], revision: Revision) -> Result<Vec<u8>> {
    let len = escaped_len(user_key) + SUFFIX_BYTES;
    check_len(len)?;
    let mut out = Vec::with_capacity(len);
    push_escaped(&mut out, user_key);
    out.extend_from_slice(&TERMINATOR);
    out.extend_from_slice(&revision.to_ordered_bytes());
    debug_assert_eq!(out.len(), len);
    Ok(out)
}

/// Splits an engine key back into user key and revision.
pub fn decode_key(encoded: &[u8]) -> Result<(Vec<u8>, Revision)> {
    let mut user_key = Vec::with_capacity(encoded.len().saturating_sub(SUFFIX_BYTES));
    let mut position = 0;
    loop {
        match encoded.get(position) {
            None => return Err(Error::KeyDecode("no terminator")),
            Some(0) => match encoded.get(position + 1) {
                Some(0xFF) => {
                    user_key.push(0);
                    position += 2;
                }
                Some(0x01) => {
                    position += 2;
                    break;
                }
                Some(_) => return Err(Error::KeyDecode("0x00 followed by an invalid byte")),
                None => return Err(Error::KeyDecode("key ends inside an escape")),
            },
            Some(&byte) => {
                user_key.push(byte);
                position += 1;
            }
        }
    }
    let revision: [u8; 16] = encoded
        .get(position..)
        .and_then(|rest| rest.try_into().ok())
        .ok_or(Error::KeyDecode("revision is not exactly 16 bytes"))?;
    Ok((user_key, Revision::from_ordered_bytes(revision)))
}

/// The smallest engine key of any version of `user_key`.
pub(crate) fn versions_lower_bound(user_key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(escaped_len(user_key) + 2);
    push_escaped(&mut out, user_key);
    out.extend_from_slice(&TERMINATOR);
    out
}

/// A key greater than every version of `user_key` and smaller than any
/// version of the next user key.
pub(crate) fn versions_upper_bound(user_key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(escaped_len(user_key) + 2);
    push_escaped(&mut out, user_key);
    out.extend_from_slice(&AFTER_VERSIONS);
    out
}

/// The engine-key interval holding every version of `user_key`.
pub(crate) fn versions_of(user_key: &[u8]) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    (
        Bound::Included(versions_lower_bound(user_key)),
        Bound::Excluded(versions_upper_bound(user_key)),
    )
}

/// A half-open interval of user keys, `[start, end)`, or `[start, ∞)` when
/// `end` is `None`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRange {
    pub start: Vec<u8>,
    pub end: Option<Vec<u8>>,
}

impl KeyRange {
    /// Exactly one key.
    pub fn single(key: impl Into<Vec<u8>>) -> Self {
        let start = key.into();
        // No key lies strictly between `k` and `k ++ 0x00`.
        let mut end = start.clone();
        end.push(0);
        KeyRange {
            start,
            end: Some(end),
        }
    }

    /// `[start, end)`.
    pub fn new(start: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) -> Self {
        KeyRange {
            start: start.into(),
            end: Some(end.into()),
        }
    }

    /// `[start, ∞)`.
    pub fn from_key(start: impl Into<Vec<u8>>) -> Self {
        KeyRange {
            start: start.into(),
            end: None,
        }
    }

    /// etcd's reading of a request's `key` and `range_end`: an empty
    /// `range_end` means `key` alone, `"\0"` means every key `≥ key`,
    /// anything else is the exclusive end.
    pub fn from_etcd(key: &[u8], range_end: &[u8]) -> Self {
        match range_end {
            [] => KeyRange::single(key),
            [0] => KeyRange::from_key(key),
            end => KeyRange::new(key, end),
        }
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && self.end.as_deref().is_none_or(|end| key < end)
    }

    pub fn is_empty(&self) -> bool {
        self.end
            .as_deref()
            .is_some_and(|end| end <= self.start.as_slice())
    }

    /// The engine-key interval holding every version of every key in range.
    pub(crate) fn encoded_bounds(&self) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
        (
            Bound::Included(versions_lower_bound(&self.start)),
            match &self.end {
                Some(end) => Bound::Excluded(versions_lower_bound(end)),
                None => Bound::Unbounded,
            },
        )
    }
}

/// What one version of a key holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VersionRecord {
    /// The key was written; the bytes are opaque to the backend (the MVCC
    /// layer decides what a value record holds).
    Put(Vec<u8>),
    /// The key was deleted at this revision.
    Tombstone,
}

impl VersionRecord {
    pub fn is_tombstone(&self) -> bool {
        matches!(self, VersionRecord::Tombstone)
    }

    /// The engine value of this record.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            VersionRecord::Tombstone => vec![TAG_TOMBSTONE],
            VersionRecord::Put(value) => encode_put(value),
        }
    }

    /// Inverse of [`VersionRecord::encode`].
    pub fn decode(encoded: &[u8]) -> Result<Self> {
        Ok(match decode_value(encoded)? {
            Some(value) => VersionRecord::Put(value.to_vec()),
            None => VersionRecord::Tombstone,
        })
    }
}

/// The engine value of a put, without building a [`VersionRecord`] first
/// (one copy of the value instead of two on the write path).
pub(crate) fn encode_put(value: &[u8]) -> Vec<u8> {
    encode_put_parts(&[value])
}

/// The engine value of a put whose value is the concatenation of `parts`.
pub(crate) fn encode_put_parts(parts: &[&[u8]]) -> Vec<u8> {
    let len = parts.iter().map(|part| part.len()).sum::<usize>();
    let mut out = Vec::with_capacity(1 + len);
    out.push(TAG_PUT);
    for part in parts {
        out.extend_from_slice(part);
    }
    out
}

/// The payload of an encoded put (without copying it), `None` for a
/// tombstone.
pub(crate) fn decode_value(encoded: &[u8]) -> Result<Option<&[u8]>> {
    match encoded.split_first() {
        Some((&TAG_PUT, value)) => Ok(Some(value)),
        Some((&TAG_TOMBSTONE, [])) => Ok(None),
        Some((&TAG_TOMBSTONE, _)) => Err(Error::ValueDecode("tombstone with a payload")),
        Some(_) => Err(Error::ValueDecode("unknown tag")),
        None => Err(Error::ValueDecode("empty value")),
    }
}

/// One version of one key, as read back from the backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    pub key: Vec<u8>,
    pub revision: Revision,
    pub record: VersionRecord,
}

impl Version {
    /// Decodes an engine key-value pair of the MVCC keyspace.
    pub fn decode(encoded_key: &[u8], encoded_value: &[u8]) -> Result<Self> {
        let (key, revision) = decode_key(encoded_key)?;
        Ok(Version {
            key,
            revision,
            record: VersionRecord::decode(encoded_value)?,
        })
    }

    pub fn is_tombstone(&self) -> bool {
        self.record.is_tombstone()
    }

    /// The value of a put, `None` for a tombstone.
    pub fn value(&self) -> Option<&[u8]> {
        match &self.record {
            VersionRecord::Put(value) => Some(value),
            VersionRecord::Tombstone => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn revision() -> impl Strategy<Value = Revision> {
        prop_oneof![
            (any::<i64>(), any::<i64>()).prop_map(|(m, s)| Revision::new(m, s)),
            (0i64..4, 0i64..4).prop_map(|(m, s)| Revision::new(m, s)),
        ]
    }

    /// Short keys over a tiny alphabet that includes the bytes the escaping
    /// cares about, so prefixes and zero bytes are common.
    fn user_key() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(prop::sample::select(vec![0u8, 1, 2, 0xFE, 0xFF]), 0..6),
            prop::collection::vec(any::<u8>(), 0..20),
        ]
    }

    proptest! {
        #[test]
        fn decoding_inverts_encoding(key in user_key(), rev in revision()) {
            let encoded = encode_key(&key, rev).unwrap();
            prop_assert_eq!(decode_key(&encoded).unwrap(), (key, rev));
        }

        #[test]
        fn encoded_order_is_key_then_revision_order(
            a in user_key(), ra in revision(), b in user_key(), rb in revision()
        ) {
            let ea = encode_key(&a, ra).unwrap();
            let eb = encode_key(&b, rb).unwrap();
            prop_assert_eq!(ea.cmp(&eb), (&a, ra).cmp(&(&b, rb)));
        }

        #[test]
        fn range_bounds_hold_exactly_the_keys_in_range(
            start in user_key(), end in user_key(), key in user_key(), rev in revision()
        ) {
            let encoded = encode_key(&key, rev).unwrap();
            for range in [KeyRange::new(start.clone(), end.clone()), KeyRange::from_key(start.clone()), KeyRange::single(start.clone())] {
                let bounds = range.encoded_bounds();
                prop_assert_eq!(
                    std::ops::RangeBounds::contains(&bounds, &encoded),
                    range.contains(&key),
                    "range {:?} key {:?}", range, key
                );
            }
            let versions = versions_of(&key);
            prop_assert!(std::ops::RangeBounds::contains(&versions, &encoded));
            let other = encode_key(&start, rev).unwrap();
            prop_assert_eq!(std::ops::RangeBounds::contains(&versions, &other), start == key);
        }

        #[test]
        fn revision_bytes_order_like_revisions(a in revision(), b in revision()) {
            prop_assert_eq!(a.to_ordered_bytes().cmp(&b.to_ordered_bytes()), a.cmp(&b));
            prop_assert_eq!(Revision::from_ordered_bytes(a.to_ordered_bytes()), a);
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..40)) {
            let _ = decode_key(&bytes);
            let _ = VersionRecord::decode(&bytes);
        }
    }

    #[test]
    fn malformed_keys_are_errors() {
        assert!(decode_key(b"abc").is_err());
        assert!(decode_key(b"a\x00").is_err());
        assert!(decode_key(b"a\x00\x02").is_err());
        assert!(decode_key(b"a\x00\x01short").is_err());
        let mut long = encode_key(b"a", Revision::new(1, 0)).unwrap();
        long.push(0);
        assert!(decode_key(&long).is_err());
    }

    #[test]
    fn etcd_range_conventions() {
        assert_eq!(
            KeyRange::from_etcd(b"a", b""),
            KeyRange::single(b"a".to_vec())
        );
        assert!(KeyRange::from_etcd(b"a", b"").contains(b"a"));
        assert!(!KeyRange::from_etcd(b"a", b"").contains(b"a\x00"));
        assert!(KeyRange::from_etcd(b"a", b"\x00").contains(b"zzzz"));
        assert!(!KeyRange::from_etcd(b"b", b"\x00").contains(b"a"));
        assert!(KeyRange::from_etcd(b"\x00", b"\x00").contains(b"\x00"));
        assert!(KeyRange::from_etcd(b"b", b"a").is_empty());
    }

    #[test]
    fn oversized_keys_are_refused() {
        let key = vec![0u8; ENCODED_KEY_BYTES_MAX / 2];
        assert!(matches!(
            encode_key(&key, Revision::new(1, 0)),
            Err(Error::KeyTooLarge { .. })
        ));
    }

    #[test]
    fn every_key_up_to_the_user_limit_encodes() {
        let zeros = vec![0u8; USER_KEY_BYTES_MAX];
        let encoded = encode_key(&zeros, Revision::new(i64::MAX, i64::MAX)).unwrap();
        assert!(encoded.len() <= ENCODED_KEY_BYTES_MAX);
        let too_long = vec![0u8; USER_KEY_BYTES_MAX + 1];
        assert!(encode_key(&too_long, Revision::new(1, 0)).is_err());
    }

    #[test]
    fn value_records_round_trip() {
        for record in [
            VersionRecord::Tombstone,
            VersionRecord::Put(vec![]),
            VersionRecord::Put(b"\x00v".to_vec()),
        ] {
            assert_eq!(VersionRecord::decode(&record.encode()).unwrap(), record);
        }
        assert!(VersionRecord::decode(b"").is_err());
        assert!(VersionRecord::decode(b"\x00x").is_err());
        assert!(VersionRecord::decode(b"\x07").is_err());
    }
}
