//! The backend's root directory: which database generation is current, and
//! the file-system steps that make switching generations atomic.
//!
//! ```text
//! <root>/LOCK                  held (flock) while a Backend is open
//! <root>/CURRENT               "db-<generation as 16 hex digits>\n"
//! <root>/CURRENT.tmp           a CURRENT being written (leftover after a crash)
//! <root>/INIT                  present while the first generation is created
//! <root>/db-<generation>/      one fjall database; only CURRENT's is live
//! ```
//!
//! What this assumes of the disk: `rename` within a directory is atomic and
//! is durable once the directory is fsynced; fsynced file contents survive
//! power loss. Every step below is ordered so that a crash between any two
//! leaves CURRENT naming a complete database.

use crate::error::{Error, Result};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

pub(crate) const CURRENT: &str = "CURRENT";
const CURRENT_TEMP: &str = "CURRENT.tmp";
const LOCK: &str = "LOCK";
pub(crate) const INIT_MARKER: &str = "INIT";
const GENERATION_PREFIX: &str = "db-";

pub(crate) fn generation_dir_name(generation: u64) -> String {
    format!("{GENERATION_PREFIX}{generation:016x}")
}

/// `Some(generation)` for a name this module gives database directories.
fn parse_generation_dir_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix(GENERATION_PREFIX)?;
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// Holds the root's lock file locked; two backends on one root would remove
/// each other's databases as leftovers.
#[derive(Debug)]
pub(crate) struct RootLock {
    _file: File,
}

pub(crate) fn lock_root(root: &Path) -> Result<RootLock> {
    let path = root.join(LOCK);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(Error::io("open", &path))?;
    file.try_lock().map_err(|error| match error {
        fs::TryLockError::WouldBlock => Error::Io {
            operation: "lock (already in use by another backend)",
            path: path.clone(),
            source: std::io::Error::from(std::io::ErrorKind::WouldBlock),
        },
        fs::TryLockError::Error(source) => Error::Io {
            operation: "lock",
            path: path.clone(),
            source,
        },
    })?;
    Ok(RootLock { _file: file })
}

/// The generation CURRENT names, or `None` when there is no CURRENT.
pub(crate) fn read_current(root: &Path) -> Result<Option<u64>> {
    let path = root.join(CURRENT);
    let contents = match fs::read(&path) {
        Ok(contents) => contents,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(Error::io("read", &path)(error)),
    };
    let corrupt = || Error::Corrupt {
        path: path.clone(),
        detail: format!(
            "expected \"db-<16 hex digits>\\n\", found {:?}",
            String::from_utf8_lossy(&contents)
        ),
    };
    let text = std::str::from_utf8(&contents).map_err(|_| corrupt())?;
    let name = text.strip_suffix('\n').ok_or_else(corrupt)?;
    parse_generation_dir_name(name)
        .map(Some)
        .ok_or_else(corrupt)
}

/// Points CURRENT at `generation`: write a temporary file, fsync it, rename
/// it over CURRENT, fsync the directory. `after_temp_synced` runs between
/// the fsync and the rename (the install observer reports that moment).
pub(crate) fn write_current(
    root: &Path,
    generation: u64,
    after_temp_synced: &mut dyn FnMut(),
) -> Result<()> {
    let contents = format!("{}\n", generation_dir_name(generation));
    let temp = root.join(CURRENT_TEMP);
    {
        let mut file = File::create(&temp).map_err(Error::io("create", &temp))?;
        file.write_all(contents.as_bytes())
            .map_err(Error::io("write", &temp))?;
        file.sync_all().map_err(Error::io("fsync", &temp))?;
    }
    after_temp_synced();
    let current = root.join(CURRENT);
    fs::rename(&temp, &current).map_err(Error::io("rename CURRENT.tmp over", &current))?;
    fsync_dir(root)
}

/// Creates an empty file and makes its existence durable.
pub(crate) fn create_synced(path: &Path) -> Result<()> {
    File::create(path)
        .and_then(|file| file.sync_all())
        .map_err(Error::io("create", path))?;
    match path.parent() {
        Some(parent) => fsync_dir(parent),
        None => Ok(()),
    }
}

pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|file| file.sync_all())
        .map_err(Error::io("fsync directory", dir))
}

/// Fsyncs every file and directory under `dir`, and `dir` itself.
///
/// Used on a freshly built database before it becomes current, so that its
/// durability does not depend on which of its own writes fjall chose to
/// sync (files first, then the directory that names them).
pub(crate) fn fsync_tree(dir: &Path) -> Result<()> {
    let entries = fs::read_dir(dir).map_err(Error::io("list", dir))?;
    for entry in entries {
        let entry = entry.map_err(Error::io("list", dir))?;
        let path = entry.path();
        let file_type = entry.file_type().map_err(Error::io("stat", &path))?;
        if file_type.is_dir() {
            fsync_tree(&path)?;
        } else if file_type.is_file() {
            File::open(&path)
                .and_then(|file| file.sync_all())
                .map_err(Error::io("fsync", &path))?;
        }
    }
    fsync_dir(dir)
}

/// Database directories under `root`, by generation.
pub(crate) fn generation_dirs(root: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(root).map_err(Error::io("list", root))? {
        let entry = entry.map_err(Error::io("list", root))?;
        if let Some(generation) = entry
            .file_name()
            .to_str()
            .and_then(parse_generation_dir_name)
        {
            found.push((generation, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// Removes what an interrupted install or generation switch left behind:
/// every database directory but `live`, and a stray CURRENT.tmp. Anything
/// else in the root is not ours and is left alone.
pub(crate) fn remove_leftovers(root: &Path, live: u64) -> Result<()> {
    let mut removed_any = false;
    for (generation, path) in generation_dirs(root)? {
        if generation != live {
            tracing::info!(path = %path.display(), "removing leftover database directory");
            fs::remove_dir_all(&path).map_err(Error::io("remove", &path))?;
            removed_any = true;
        }
    }
    let temp = root.join(CURRENT_TEMP);
    match fs::remove_file(&temp) {
        Ok(()) => removed_any = true,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(Error::io("remove", &temp)(error)),
    }
    if removed_any {
        fsync_dir(root)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_names_round_trip() {
        for generation in [0, 1, 0xdead_beef, u64::MAX] {
            assert_eq!(
                parse_generation_dir_name(&generation_dir_name(generation)),
                Some(generation)
            );
        }
        assert_eq!(parse_generation_dir_name("db-1"), None);
        assert_eq!(parse_generation_dir_name("db-000000000000000g"), None);
        assert_eq!(parse_generation_dir_name("xx-0000000000000001"), None);
    }

    #[test]
    fn current_is_written_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_current(dir.path()).unwrap(), None);
        write_current(dir.path(), 7, &mut || {}).unwrap();
        assert_eq!(read_current(dir.path()).unwrap(), Some(7));
        fs::write(dir.path().join(CURRENT), b"db-7\n").unwrap();
        assert!(matches!(
            read_current(dir.path()),
            Err(Error::Corrupt { .. })
        ));
    }

    #[test]
    fn leftovers_are_removed_and_strangers_kept() {
        let dir = tempfile::tempdir().unwrap();
        for generation in [1, 2, 3] {
            fs::create_dir(dir.path().join(generation_dir_name(generation))).unwrap();
        }
        fs::write(dir.path().join(CURRENT_TEMP), b"x").unwrap();
        fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        remove_leftovers(dir.path(), 2).unwrap();
        let names: Vec<(u64, PathBuf)> = generation_dirs(dir.path()).unwrap();
        assert_eq!(names.len(), 1);
        assert_eq!(names[0].0, 2);
        assert!(!dir.path().join(CURRENT_TEMP).exists());
        assert!(dir.path().join("notes.txt").exists());
    }
}
