//! The file operations the log uses, behind a trait so
//! that tests can put [`crate::crash_fs::CrashFs`] underneath and lose every
//! write that was not synced.
//!
//! The trait is deliberately the short list of operations whose durability
//! the design reasons about: append, `fdatasync`, truncate, create, rename,
//! remove, and fsync of a directory. Anything else a caller wants must be
//! built from these, so that the crash tests see it. A log file
//! (`create_log`) runs ahead of its appends in zeros; `CrashFs` models that
//! too.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

pub trait FileSystem: Send + Sync + 'static {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names (not paths) of the regular files in `dir`.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>>;
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    fn file_len(&self, path: &Path) -> io::Result<u64>;
    /// A sequential reader, for files too large to hold in memory.
    fn open_read(&self, path: &Path) -> io::Result<Box<dyn Read + Send>>;
    /// Creates `path`, failing if it exists. Its directory entry is durable
    /// only after [`FileSystem::sync_dir`].
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn WritableFile>>;
    /// Creates `path` like [`FileSystem::create_new`], for a log whose
    /// reader takes zeros after its last record for its end: the file may
    /// be extended with zeros ahead of the appends, `extension_bytes` at a
    /// time, so that most syncs write only data and not also the file's new
    /// size.
    fn create_log(&self, path: &Path, extension_bytes: u64) -> io::Result<Box<dyn WritableFile>> {
        let _ = extension_bytes;
        self.create_new(path)
    }
    /// Opens an existing file for appending at its end.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn WritableFile>>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the creations, renames and removals in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

pub trait WritableFile: Send {
    fn append(&mut self, data: &[u8]) -> io::Result<()>;
    /// `fdatasync`: the contents (and length) written so far are durable
    /// when this returns `Ok`.
    fn sync_data(&mut self) -> io::Result<()>;
    /// Cuts the file to `len` bytes; later appends go there.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The real file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct StdFs;

/// A file of the real file system. Opened for appending (`O_APPEND`), or,
/// for a log (`create_log`), written in place ahead of which the file is
/// extended with zeros.
struct StdFile {
    file: File,
    /// Bytes appended: where the next append goes.
    len: u64,
    zero_extension: Option<ZeroExtension>,
}

/// A log file's size runs ahead of its contents: zeros are written up to
/// the next multiple of `step_bytes` before an append would pass the end,
/// and appends overwrite them in place. On ext4, `fdatasync` after an
/// append that changes the file's size must also write the inode (a
/// second I/O); after an append within the file it writes only data.
///
/// Invariant: the file's `len <= extended_to`, and every byte of the file
/// from `len` on is zero, so a reader sees the end of the records as the
/// start of the zeros (recovery's rule for a torn or unused tail).
struct ZeroExtension {
    /// The file's size.
    extended_to: u64,
    step_bytes: u64,
}

impl WritableFile for StdFile {
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        let end = self.len + data.len() as u64;
        match &mut self.zero_extension {
            None => self.file.write_all(data)?,
            Some(extension) => {
                use std::os::unix::fs::FileExt;
                if end > extension.extended_to {
                    let target = end.div_ceil(extension.step_bytes) * extension.step_bytes;
                    let zeros = vec![0u8; (target - extension.extended_to) as usize];
                    self.file.write_all_at(&zeros, extension.extended_to)?;
                    extension.extended_to = target;
                }
                self.file.write_all_at(data, self.len)?;
                debug_assert!(
                    end <= extension.extended_to,
                    "a log file's appends passed its size"
                );
            }
        }
        self.len = end;
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        self.len = len;
        if let Some(extension) = &mut self.zero_extension {
            extension.extended_to = len;
        }
        Ok(())
    }

    fn len(&self) -> u64 {
        self.len
    }
}

impl FileSystem for StdFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for item in std::fs::read_dir(dir)? {
            let item = item?;
            if item.file_type()?.is_file() {
                if let Some(name) = item.file_name().to_str() {
                    names.push(name.to_string());
                }
            }
        }
        Ok(names)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        Ok(std::fs::metadata(path)?.len())
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(io::BufReader::with_capacity(
            256 * 1024,
            File::open(path)?,
        )))
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(path)?;
        Ok(Box::new(StdFile {
            file,
            len: 0,
            zero_extension: None,
        }))
    }

    fn create_log(&self, path: &Path, extension_bytes: u64) -> io::Result<Box<dyn WritableFile>> {
        let file = OpenOptions::new().write(true).create_new(true).open(path)?;
        Ok(Box::new(StdFile {
            file,
            len: 0,
            zero_extension: Some(ZeroExtension {
                extended_to: 0,
                step_bytes: extension_bytes.max(1),
            }),
        }))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        // O_APPEND: after a `truncate` the next write lands at the new end
        // with no seek to keep in step.
        let file = OpenOptions::new().append(true).open(path)?;
        let len = file.metadata()?.len();
        Ok(Box::new(StdFile {
            file,
            len,
            zero_extension: None,
        }))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_file_runs_ahead_in_zeros_and_reads_back_what_was_appended() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        let mut file = StdFs.create_log(&path, 100).expect("create");
        let mut written = Vec::new();
        for round in 0u8..30 {
            let chunk = vec![round + 1; 7 + round as usize];
            file.append(&chunk).expect("append");
            written.extend_from_slice(&chunk);
            assert_eq!(file.len(), written.len() as u64);
        }
        file.sync_data().expect("sync");
        let on_disk = std::fs::read(&path).expect("read");
        assert_eq!(on_disk.len() % 100, 0, "extended in whole steps");
        assert!(on_disk.len() >= written.len() && on_disk.len() < written.len() + 100);
        assert_eq!(&on_disk[..written.len()], &written[..]);
        assert!(on_disk[written.len()..].iter().all(|&byte| byte == 0));

        // Cut back: the next append lands at the cut, and zeros follow it.
        file.truncate(50).expect("truncate");
        file.append(b"after the cut").expect("append");
        let on_disk = std::fs::read(&path).expect("read");
        assert_eq!(&on_disk[..50], &written[..50]);
        assert_eq!(&on_disk[50..63], b"after the cut");
        assert!(on_disk[63..].iter().all(|&byte| byte == 0));
        assert_eq!(file.len(), 63);
    }
}
