//! What the store keeps with each put version: the payload of the
//! backend's opaque [`crate::VersionRecord::Put`].
//!
//! # Layout
//!
//! ```text
//! format u8 (= 1)
//! created.main i64 BE, created.sub i64 BE   the put that created the key's generation
//! version i64 BE                            1 for the creating put, +1 per put since
//! lease i64 BE
//! value (the rest)
//! ```
//!
//! A version says which generation it belongs to and its place in it, so
//! the key index can be rebuilt from the engine alone, even after
//! compaction removed a generation's first versions (the creation and the
//! version number are then nowhere else). Tombstones are the backend's own
//! (a tag, no payload).

use crate::keys::Revision;

const FORMAT: u8 = 1;

/// Bytes before the value.
pub(crate) const HEADER_BYTES: usize = 1 + 8 + 8 + 8 + 8;

/// One put version, borrowing its value from the encoding it was read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PutRecord<'a> {
    pub(crate) created: Revision,
    pub(crate) version: i64,
    pub(crate) lease: i64,
    pub(crate) value: &'a [u8],
}

impl<'a> PutRecord<'a> {
    /// Everything before the value; the value follows it in the engine
    /// (written as two parts, so the value is copied once).
    pub(crate) fn header(&self) -> [u8; HEADER_BYTES] {
        let mut out = [0u8; HEADER_BYTES];
        out[0] = FORMAT;
        out[1..9].copy_from_slice(&self.created.main.to_be_bytes());
        out[9..17].copy_from_slice(&self.created.sub.to_be_bytes());
        out[17..25].copy_from_slice(&self.version.to_be_bytes());
        out[25..33].copy_from_slice(&self.lease.to_be_bytes());
        out
    }

    /// Reads a record back; `Err` says what is wrong with it.
    pub(crate) fn decode(payload: &'a [u8]) -> Result<Self, &'static str> {
        let (header, value) = payload
            .split_first_chunk::<HEADER_BYTES>()
            .ok_or("record shorter than its header")?;
        if header[0] != FORMAT {
            return Err("unknown record format");
        }
        let field = |at: usize| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(&header[at..at + 8]);
            i64::from_be_bytes(bytes)
        };
        let record = PutRecord {
            created: Revision::new(field(1), field(9)),
            version: field(17),
            lease: field(25),
            value,
        };
        if record.created.main < 1 || record.created.sub < 0 {
            return Err("creation revision out of range");
        }
        if record.version < 1 {
            return Err("version below 1");
        }
        Ok(record)
    }
}

/// [`PutRecord::decode`] as a check only: what a snapshot installer runs
/// on every put it receives.
pub(crate) fn check(payload: &[u8]) -> Result<(), &'static str> {
    PutRecord::decode(payload).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let record = PutRecord {
            created: Revision::new(7, 2),
            version: 3,
            lease: -5,
            value: b"\x00value",
        };
        let mut encoded = record.header().to_vec();
        encoded.extend_from_slice(record.value);
        assert_eq!(PutRecord::decode(&encoded), Ok(record));
        let empty = PutRecord {
            value: b"",
            ..record
        };
        assert_eq!(PutRecord::decode(&empty.header()), Ok(empty));
    }

    #[test]
    fn damaged_records_are_errors() {
        let record = PutRecord {
            created: Revision::new(7, 2),
            version: 3,
            lease: 0,
            value: b"v",
        };
        let header = record.header();
        assert!(PutRecord::decode(&header[..HEADER_BYTES - 1]).is_err());
        assert!(PutRecord::decode(b"").is_err());
        let mut format = header;
        format[0] = 9;
        assert!(PutRecord::decode(&format).is_err());
        let zero_version = PutRecord {
            version: 0,
            ..record
        };
        assert!(PutRecord::decode(&zero_version.header()).is_err());
        let uncreated = PutRecord {
            created: Revision::new(0, 0),
            ..record
        };
        assert!(PutRecord::decode(&uncreated.header()).is_err());
    }
}
