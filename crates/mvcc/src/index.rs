//! The key index: for every key, the revisions at which it was written,
//! grouped into generations (a generation runs from a creation to a
//! deletion). Answers "which revision of key K is visible at revision R"
//! without touching the engine.
//!
//! It lives in memory and holds no values: its size follows the number of
//! keys and retained versions. The engine holds everything needed to
//! rebuild it (`KeyHistory::restore`, called by the store at open).

use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

use bytes::Bytes;

use crate::keys::Revision;

/// One life of a key: created at `revisions[0]`, then modified; ended by a
/// deletion at `deleted`, if it was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Generation {
    /// The creating put; kept after compaction drops its revision.
    pub(crate) created: Revision,
    /// Version of `revisions[0]` (1 until compaction drops older ones).
    pub(crate) first_version: i64,
    pub(crate) revisions: Vec<Revision>,
    pub(crate) deleted: Option<Revision>,
}

/// What the index knows of one visible version of a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VersionInfo {
    pub modified: Revision,
    pub created: Revision,
    /// Writes since creation, 1 after the creating put.
    pub version: i64,
}

/// One version as the engine holds it, for [`KeyHistory::restore`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RestoredVersion {
    Put { created: Revision, version: i64 },
    Tombstone,
}

/// A version [`KeyIndex::compact`] dropped, for the store to remove from
/// the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DroppedVersion {
    pub key: Bytes,
    pub revision: Revision,
    pub tombstone: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct KeyHistory {
    /// Oldest first. Invariant: only the last generation may be open.
    pub(crate) generations: Vec<Generation>,
}

impl KeyHistory {
    fn visible_at(&self, at: i64) -> Option<VersionInfo> {
        // Newest generation whose creation is at or before `at`.
        let generation = self.generations.iter().rev().find(|generation| {
            generation
                .revisions
                .first()
                .is_some_and(|first| first.main <= at)
        })?;
        if generation.deleted.is_some_and(|deleted| deleted.main <= at) {
            return None;
        }
        let position = generation
            .revisions
            .iter()
            .rposition(|revision| revision.main <= at)?;
        Some(VersionInfo {
            modified: generation.revisions[position],
            created: generation.created,
            version: generation.first_version + position as i64,
        })
    }

    /// Records a put at `revision`: the open generation continues, or a new
    /// one starts. Returns what the index now knows of the new version.
    pub(crate) fn record_put(&mut self, revision: Revision) -> VersionInfo {
        match self.generations.last_mut() {
            Some(generation) if generation.deleted.is_none() => {
                generation.revisions.push(revision);
                VersionInfo {
                    modified: revision,
                    created: generation.created,
                    version: generation.first_version + generation.revisions.len() as i64 - 1,
                }
            }
            _ => {
                self.generations.push(Generation {
                    created: revision,
                    first_version: 1,
                    revisions: vec![revision],
                    deleted: None,
                });
                VersionInfo {
                    modified: revision,
                    created: revision,
                    version: 1,
                }
            }
        }
    }

    /// Appends a version read back from the engine. Versions must come in
    /// revision order; what they say of themselves (creation, version
    /// number) must continue the history so far. `Err` says what does not.
    pub(crate) fn restore(
        &mut self,
        revision: Revision,
        stored: RestoredVersion,
    ) -> Result<(), String> {
        if let Some(last) = self.last_revision() {
            if revision <= last {
                return Err(format!("follows revision {last:?}"));
            }
        }
        let open = self
            .generations
            .last_mut()
            .filter(|generation| generation.deleted.is_none());
        match (open, stored) {
            (Some(generation), RestoredVersion::Tombstone) => {
                generation.deleted = Some(revision);
            }
            (Some(generation), RestoredVersion::Put { created, version }) => {
                let expected = generation.first_version + generation.revisions.len() as i64;
                if created != generation.created || version != expected {
                    return Err(format!(
                        "says created at {created:?}, version {version}; its generation \
                         expects created at {:?}, version {expected}",
                        generation.created
                    ));
                }
                generation.revisions.push(revision);
            }
            (None, RestoredVersion::Tombstone) => {
                return Err("is a deletion of a key that does not exist".into());
            }
            (None, RestoredVersion::Put { created, version }) => {
                let consistent = if version == 1 {
                    created == revision
                } else {
                    version > 1 && created < revision
                };
                if !consistent {
                    return Err(format!(
                        "starts a generation, but says created at {created:?}, version {version}"
                    ));
                }
                self.generations.push(Generation {
                    created,
                    first_version: version,
                    revisions: vec![revision],
                    deleted: None,
                });
            }
        }
        Ok(())
    }

    /// The newest revision of any change recorded.
    pub(crate) fn last_revision(&self) -> Option<Revision> {
        let generation = self.generations.last()?;
        generation.deleted.or(generation.revisions.last().copied())
    }

    pub(crate) fn visible(&self, at: i64) -> Option<VersionInfo> {
        self.visible_at(at)
    }

    fn is_live(&self) -> bool {
        self.generations
            .last()
            .is_some_and(|generation| generation.deleted.is_none())
    }
}

/// A key in the ordered set, with its first eight bytes beside it as a
/// big-endian number (zero-padded). Ordering by that number first is the
/// byte order of the keys, and it decides most comparisons without reading
/// the key's bytes, which live elsewhere on the heap: a B-tree descent then
/// touches its nodes only, not one key allocation per comparison.
#[derive(Clone, Debug)]
struct OrderedKey {
    prefix: u64,
    key: Bytes,
}

impl OrderedKey {
    fn new(key: Bytes) -> Self {
        let mut first = [0u8; 8];
        let len = key.len().min(8);
        first[..len].copy_from_slice(&key[..len]);
        OrderedKey {
            prefix: u64::from_be_bytes(first),
            key,
        }
    }
}

impl PartialEq for OrderedKey {
    fn eq(&self, other: &Self) -> bool {
        self.prefix == other.prefix && self.key == other.key
    }
}

impl Eq for OrderedKey {}

impl PartialOrd for OrderedKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OrderedKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // Different zero-padded prefixes differ where the keys' bytes do
        // (or where one key ended and the other has a non-zero byte), so
        // they order the keys; equal ones need the whole keys ("a" < "a\0").
        self.prefix
            .cmp(&other.prefix)
            .then_with(|| self.key[..].cmp(&other.key[..]))
    }
}

#[derive(Clone, Debug, Default)]
pub struct KeyIndex {
    /// Every key's history, for point lookups: a put or get is one hash
    /// lookup. (With a B-tree alone, its descent, a cache miss per level,
    /// was most of the cost of applying a put with 100,000 keys.)
    histories: HashMap<Bytes, KeyHistory>,
    /// The same keys in order, for ranges, compaction and snapshots.
    /// Invariant: exactly the keys of `histories`.
    ordered: BTreeSet<OrderedKey>,
}

impl KeyIndex {
    pub fn put(&mut self, key: &Bytes, revision: Revision) -> VersionInfo {
        match self.histories.get_mut(key) {
            Some(history) => history.record_put(revision),
            None => self.insert_created(key.clone(), revision),
        }
    }

    /// The history of `key`, to read and then extend with one lookup.
    pub(crate) fn history_mut(&mut self, key: &[u8]) -> Option<&mut KeyHistory> {
        self.histories.get_mut(key)
    }

    /// Starts the history of a key the index does not have.
    ///
    /// The index keeps its own copy of the key: a request's key is a slice
    /// of its whole log entry (value included), and keeping that slice kept
    /// the entry's buffer alive for as long as the key exists: ~1 KiB per
    /// key of a 1 KiB-value load, most of a member's memory (measured:
    /// 420 MiB resident after 400,000 puts of 1 KiB on 200,000 keys, one
    /// member; 190 MiB with the copy).
    pub(crate) fn insert_created(&mut self, key: Bytes, revision: Revision) -> VersionInfo {
        let mut history = KeyHistory::default();
        let info = history.record_put(revision);
        self.insert_history(Bytes::copy_from_slice(&key), history);
        info
    }

    /// Adds a key with its whole history (rebuild from the engine).
    pub(crate) fn insert_history(&mut self, key: Bytes, history: KeyHistory) {
        let known = self.histories.insert(key.clone(), history).is_some();
        debug_assert!(!known, "a key's history is inserted once");
        self.ordered.insert(OrderedKey::new(key));
        debug_assert_eq!(self.histories.len(), self.ordered.len());
    }

    /// Every key with its history, in key order.
    pub(crate) fn histories_in_order(&self) -> impl Iterator<Item = (&Bytes, &KeyHistory)> + '_ {
        self.ordered
            .iter()
            .map(|ordered| &ordered.key)
            .filter_map(|key| {
                let history = self.histories.get(key);
                debug_assert!(history.is_some(), "ordered key {key:?} has no history");
                history.map(|history| (key, history))
            })
    }

    /// Ends the key's current generation. Returns false if it was not live.
    pub fn delete(&mut self, key: &Bytes, revision: Revision) -> bool {
        let Some(history) = self.histories.get_mut(key) else {
            return false;
        };
        match history.generations.last_mut() {
            Some(generation) if generation.deleted.is_none() => {
                generation.deleted = Some(revision);
                true
            }
            _ => false,
        }
    }

    /// Removes every change of `key` made at revision `main`, which must be
    /// the newest revision in the index (a write being undone): its puts,
    /// the generations they created, its deletion marks. The key is
    /// forgotten if nothing older remains.
    pub(crate) fn forget_changes_at(&mut self, key: &[u8], main: i64) {
        let Some(history) = self.histories.get_mut(key) else {
            return;
        };
        for generation in &mut history.generations {
            debug_assert!(
                generation
                    .revisions
                    .iter()
                    .all(|revision| revision.main <= main),
                "undoing revision {main} of {key:?}, which has newer changes"
            );
            generation
                .revisions
                .retain(|revision| revision.main != main);
            if generation
                .deleted
                .is_some_and(|deleted| deleted.main == main)
            {
                generation.deleted = None;
            }
        }
        history
            .generations
            .retain(|generation| !generation.revisions.is_empty());
        if history.generations.is_empty() {
            if let Some((key, _)) = self.histories.remove_entry(key) {
                self.ordered.remove(&OrderedKey::new(key));
            }
        }
        debug_assert_eq!(self.histories.len(), self.ordered.len());
    }

    pub fn get(&self, key: &[u8], at: i64) -> Option<VersionInfo> {
        self.histories.get(key)?.visible_at(at)
    }

    /// [`KeyIndex::get`] with the index's own copy of the key: one hash
    /// lookup, where a range over the ordered set would descend the B-tree
    /// (comparing keys) and skip the invisible keys after `key`.
    pub fn get_entry(&self, key: &[u8], at: i64) -> Option<(&Bytes, VersionInfo)> {
        let (key, history) = self.histories.get_key_value(key)?;
        history.visible_at(at).map(|info| (key, info))
    }

    /// Keys in `[start, end)` visible at `at`, in key order. `end = None`
    /// means unbounded.
    pub fn range<'a>(
        &'a self,
        start: &[u8],
        end: Option<&[u8]>,
        at: i64,
    ) -> impl Iterator<Item = (&'a Bytes, VersionInfo)> + 'a {
        let upper = match end {
            Some(end) => Bound::Excluded(OrderedKey::new(Bytes::copy_from_slice(end))),
            None => Bound::Unbounded,
        };
        let lower = Bound::Included(OrderedKey::new(Bytes::copy_from_slice(start)));
        let empty = matches!((&lower, &upper), (Bound::Included(l), Bound::Excluded(u)) if l >= u);
        let iter = if empty {
            None
        } else {
            Some(self.ordered.range((lower, upper)))
        };
        iter.into_iter().flatten().filter_map(move |ordered| {
            let key = &ordered.key;
            let history = self.histories.get(key)?;
            history.visible_at(at).map(|info| (key, info))
        })
    }

    /// Whether `key` currently exists.
    pub fn is_live(&self, key: &[u8]) -> bool {
        self.histories.get(key).is_some_and(KeyHistory::is_live)
    }

    /// Forgets history older than `at`: for every key, only what a read at
    /// `at` or later can see survives. Returns every version no longer
    /// reachable (puts and deletions), for the caller to drop from storage.
    pub fn compact(&mut self, at: i64) -> Vec<DroppedVersion> {
        let mut dropped = Vec::new();
        let mut forgotten = Vec::new();
        self.histories.retain(|key, history| {
            let mut kept = Vec::new();
            let put = |revision| DroppedVersion {
                key: key.clone(),
                revision,
                tombstone: false,
            };
            for generation in history.generations.drain(..) {
                if let Some(deleted) = generation.deleted {
                    if deleted.main <= at {
                        // The whole generation ended at or before `at`.
                        dropped.extend(generation.revisions.into_iter().map(put));
                        dropped.push(DroppedVersion {
                            key: key.clone(),
                            revision: deleted,
                            tombstone: true,
                        });
                        continue;
                    }
                }
                // Keep the newest revision at or before `at`, and all later.
                let keep_from = generation
                    .revisions
                    .iter()
                    .rposition(|revision| revision.main <= at)
                    .unwrap_or(0);
                let mut generation = generation;
                dropped.extend(generation.revisions.drain(..keep_from).map(put));
                generation.first_version += keep_from as i64;
                kept.push(generation);
            }
            history.generations = kept;
            let keep = !history.generations.is_empty();
            if !keep {
                forgotten.push(key.clone());
            }
            keep
        });
        for key in forgotten {
            self.ordered.remove(&OrderedKey::new(key));
        }
        debug_assert_eq!(self.histories.len(), self.ordered.len());
        dropped
    }

    pub fn key_count(&self) -> usize {
        self.histories.len()
    }

    /// Every recorded change at or before `at`, in key order and, within a
    /// key, in revision order: `(key, revision, is_deletion)`.
    pub fn changes_until(&self, at: i64) -> impl Iterator<Item = (&Bytes, Revision, bool)> + '_ {
        self.histories_in_order().flat_map(move |(key, history)| {
            history.generations.iter().flat_map(move |generation| {
                let puts = generation
                    .revisions
                    .iter()
                    .filter(move |revision| revision.main <= at)
                    .map(move |&revision| (key, revision, false));
                let deletion = generation
                    .deleted
                    .filter(|deleted| deleted.main <= at)
                    .map(|deleted| (key, deleted, true));
                puts.chain(deletion)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> Bytes {
        Bytes::copy_from_slice(text.as_bytes())
    }

    /// Ordered keys sort exactly as their bytes do, zeros, short keys and
    /// shared prefixes included.
    #[test]
    fn ordered_keys_sort_as_their_bytes() {
        let mut state = 0x5eed_u64;
        let mut next = move || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let mut keys: Vec<Bytes> = [
            "",
            "\0",
            "a",
            "a\0",
            "a\0\0",
            "ab",
            "abcdefgh",
            "abcdefgh\0",
            "abcdefghi",
        ]
        .iter()
        .map(|text| key(text))
        .collect();
        for _ in 0..2000 {
            let len = (next() % 12) as usize;
            // Few distinct byte values, so that prefixes and zeros collide.
            let bytes: Vec<u8> = (0..len)
                .map(|_| [0u8, 1, 0x61, 0xff][(next() % 4) as usize])
                .collect();
            keys.push(Bytes::from(bytes));
        }
        for a in &keys {
            for b in keys.iter().take(300) {
                let ordered = OrderedKey::new(a.clone()).cmp(&OrderedKey::new(b.clone()));
                assert_eq!(ordered, a[..].cmp(&b[..]), "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn versions_restart_after_a_delete() {
        let mut index = KeyIndex::default();
        index.put(&key("a"), Revision::new(2, 0));
        index.put(&key("a"), Revision::new(3, 0));
        assert!(index.delete(&key("a"), Revision::new(4, 0)));
        index.put(&key("a"), Revision::new(5, 0));
        assert_eq!(index.get(b"a", 1), None);
        assert_eq!(
            index.get(b"a", 3).map(|v| (v.version, v.created.main)),
            Some((2, 2))
        );
        assert_eq!(index.get(b"a", 4), None);
        assert_eq!(
            index.get(b"a", 9).map(|v| (v.version, v.created.main)),
            Some((1, 5))
        );
    }

    #[test]
    fn compaction_keeps_what_later_reads_see() {
        let mut index = KeyIndex::default();
        index.put(&key("a"), Revision::new(2, 0));
        index.put(&key("a"), Revision::new(3, 0));
        index.put(&key("b"), Revision::new(4, 0));
        index.delete(&key("b"), Revision::new(5, 0));
        let dropped = index.compact(4);
        assert_eq!(
            dropped,
            vec![DroppedVersion {
                key: key("a"),
                revision: Revision::new(2, 0),
                tombstone: false
            }]
        );
        assert_eq!(index.get(b"a", 4).map(|v| v.modified.main), Some(3));
        assert_eq!(index.get(b"b", 4).map(|v| v.modified.main), Some(4));
        let mut dropped = index.compact(5);
        dropped.sort_by_key(|version| version.revision);
        assert_eq!(
            dropped,
            vec![
                DroppedVersion {
                    key: key("b"),
                    revision: Revision::new(4, 0),
                    tombstone: false
                },
                DroppedVersion {
                    key: key("b"),
                    revision: Revision::new(5, 0),
                    tombstone: true
                },
            ]
        );
        assert_eq!(index.key_count(), 1, "b's only generation ended at 5");
    }

    #[test]
    fn range_is_half_open_and_ordered() {
        let mut index = KeyIndex::default();
        for (n, name) in ["a", "b", "c"].iter().enumerate() {
            index.put(&key(name), Revision::new(n as i64 + 2, 0));
        }
        let keys: Vec<&Bytes> = index.range(b"a", Some(b"c"), 10).map(|(k, _)| k).collect();
        assert_eq!(keys, vec![&key("a"), &key("b")]);
        assert_eq!(index.range(b"b", None, 10).count(), 2);
        assert_eq!(index.range(b"c", Some(b"a"), 10).count(), 0);
    }
}
