//! The one error type of the crate.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// fjall failed. After a failed commit or persist fjall poisons the
    /// database and refuses further writes: the node must stop and recover
    /// from its log (what it does with a failed fsync of the WAL, too).
    #[error("storage engine: {0}")]
    Engine(#[from] fjall::Error),

    #[error("{operation} {path}: {source}")]
    Io {
        operation: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    /// Something on disk is not what this crate writes.
    #[error("corrupt state in {path}: {detail}")]
    Corrupt { path: PathBuf, detail: String },

    /// The on-disk format is from a different version of this crate.
    #[error("unsupported storage format version {found} (this build reads {supported})")]
    UnsupportedFormat { found: u32, supported: u32 },

    #[error("encoded key of {encoded_bytes} bytes is over the limit of {max_bytes}")]
    KeyTooLarge {
        encoded_bytes: usize,
        max_bytes: usize,
    },

    #[error("malformed MVCC key: {0}")]
    KeyDecode(&'static str),

    #[error("malformed MVCC value: {0}")]
    ValueDecode(&'static str),

    #[error("malformed metadata record {key:?}: {detail}")]
    MetaDecode { key: String, detail: &'static str },

    /// A batch tried to set an applied index at or below the current one:
    /// the caller would apply an entry twice.
    #[error("applied index must increase: it is {applied}, the batch sets {attempted}")]
    AppliedRegression { applied: u64, attempted: u64 },

    /// A snapshot chunk failed its checksum.
    #[error("snapshot chunk {chunk_index}: checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    SnapshotChecksum {
        chunk_index: u64,
        stored: u32,
        computed: u32,
    },

    /// A snapshot chunk is not in the format, or out of sequence.
    #[error("snapshot chunk {chunk_index}: {detail}")]
    SnapshotMalformed { chunk_index: u64, detail: String },

    /// An installer was handed to a backend other than the one that made it.
    #[error("snapshot installer at {installer} does not belong to the backend at {root}")]
    ForeignInstaller { installer: PathBuf, root: PathBuf },

    /// An earlier engine failure left the MVCC store's memory out of step
    /// with its engine; only reopening it helps.
    #[error("the store failed earlier and must be reopened")]
    StoreFailed,

    /// The snapshot stream ended (or was installed) before its end record.
    #[error("snapshot stream incomplete: {0}")]
    SnapshotIncomplete(String),
}

impl Error {
    pub(crate) fn io(
        operation: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            operation,
            path,
            source,
        }
    }
}
