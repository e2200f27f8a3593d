//! A test-only, in-memory [`FileSystem`] that remembers what was synced and
//! can crash: [`CrashFs::crash`] throws away every write, creation, rename
//! and removal that no `fdatasync` or directory fsync made durable, the way
//! a power cut does. Tests use it to show that every sync the log relies on
//! is really there. It must never be used outside tests.
//!
//! The model, per POSIX as the log relies on it:
//! - file contents (and length) become durable at `sync_data` of that file;
//! - a directory's entries (creations, renames, removals) become durable at
//!   `sync_dir` of that directory;
//! - directories themselves are created durably (the log's directory exists
//!   before the log is opened; modelling its own fsync would test nothing);
//! - optionally a crash keeps a random prefix of a file's unsynced appended
//!   bytes, as a write cut short by a power loss would.
//!
//! A crash returns a new `CrashFs` for the restarted process; the old one
//! and every file handle opened through it stop working, like the dead
//! process's file descriptors: a writer thread still running cannot change
//! the state the restarted process sees.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::fs::{FileSystem, WritableFile};

#[derive(Clone, Default)]
pub struct CrashFs {
    state: Arc<Mutex<State>>,
    /// The life this handle belongs to; see [`CrashFs::crash`].
    generation: u64,
}

#[derive(Default)]
struct Inode {
    data: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Default)]
struct Directory {
    current: BTreeMap<String, u64>,
    durable: BTreeMap<String, u64>,
}

#[derive(Default)]
struct State {
    inodes: HashMap<u64, Inode>,
    next_inode: u64,
    directories: HashMap<PathBuf, Directory>,
    /// Bumped by every crash; handles carry the generation they were made in.
    generation: u64,
    syncs: u64,
    /// Syncs after this many succeed fail with EIO.
    fail_syncs_after: Option<u64>,
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{}", path.display()))
}

fn split(path: &Path) -> io::Result<(PathBuf, String)> {
    match (
        path.parent(),
        path.file_name().and_then(|name| name.to_str()),
    ) {
        (Some(parent), Some(name)) => Ok((parent.to_path_buf(), name.to_string())),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a file path", path.display()),
        )),
    }
}

impl State {
    fn lookup(&self, path: &Path) -> io::Result<u64> {
        let (dir, name) = split(path)?;
        self.directories
            .get(&dir)
            .and_then(|directory| directory.current.get(&name))
            .copied()
            .ok_or_else(|| not_found(path))
    }

    fn count_sync(&mut self) -> io::Result<()> {
        if let Some(limit) = self.fail_syncs_after {
            if self.syncs >= limit {
                return Err(io::Error::other("injected fsync failure (CrashFs)"));
            }
        }
        self.syncs += 1;
        Ok(())
    }
}

/// SplitMix64: enough randomness to pick how much of a torn write survives.
fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl CrashFs {
    pub fn new() -> Self {
        CrashFs::default()
    }

    fn lock_any(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock already failed; the
        // state is still the best evidence to look at.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The state, if this handle has not been outlived by a crash.
    fn lock(&self) -> io::Result<MutexGuard<'_, State>> {
        let state = self.lock_any();
        if state.generation != self.generation {
            return Err(io::Error::other("file system handle from before a crash"));
        }
        Ok(state)
    }

    /// Loses everything not synced and returns the file system the
    /// restarted process sees. With `torn_seed`, each file whose unsynced
    /// change is a pure append keeps a random prefix of it.
    pub fn crash(&self, torn_seed: Option<u64>) -> CrashFs {
        let mut state = self.lock_any();
        state.generation += 1;
        let generation = state.generation;
        let mut random = torn_seed.unwrap_or(0);
        for directory in state.directories.values_mut() {
            directory.current = directory.durable.clone();
        }
        for inode in state.inodes.values_mut() {
            let appended_only =
                inode.data.len() > inode.durable.len() && inode.data.starts_with(&inode.durable);
            let mut survivor = inode.durable.clone();
            if torn_seed.is_some() && appended_only {
                let unsynced = inode.data.len() - inode.durable.len();
                let keep = (next_random(&mut random) % (unsynced as u64 + 1)) as usize;
                survivor.extend_from_slice(&inode.data[inode.durable.len()..][..keep]);
            }
            inode.data = survivor.clone();
            inode.durable = survivor;
        }
        let referenced: std::collections::HashSet<u64> = state
            .directories
            .values()
            .flat_map(|directory| directory.durable.values().copied())
            .collect();
        state.inodes.retain(|inode, _| referenced.contains(inode));
        CrashFs {
            state: self.state.clone(),
            generation,
        }
    }

    /// Makes every sync after the next `successes` fail with EIO.
    pub fn fail_syncs_after(&self, successes: u64) {
        let mut state = self.lock_any();
        state.fail_syncs_after = Some(state.syncs + successes);
    }

    /// Number of successful syncs (file and directory) so far.
    pub fn syncs(&self) -> u64 {
        self.lock_any().syncs
    }

    /// Overwrites bytes of an existing file, durably: for corruption tests.
    pub fn corrupt(&self, path: &Path, offset: usize, xor: u8) -> io::Result<()> {
        let mut state = self.lock()?;
        let inode = state.lookup(path)?;
        let file = state
            .inodes
            .get_mut(&inode)
            .ok_or_else(|| not_found(path))?;
        let byte = file.data.get_mut(offset).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "corrupt: offset past end")
        })?;
        *byte ^= xor;
        file.durable = file.data.clone();
        Ok(())
    }
}

struct CrashFile {
    state: Arc<Mutex<State>>,
    inode: u64,
    generation: u64,
}

impl CrashFile {
    fn with_inode<T>(
        &self,
        action: impl FnOnce(&mut State, u64) -> io::Result<T>,
    ) -> io::Result<T> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.generation != self.generation {
            return Err(io::Error::other("file handle from before a crash"));
        }
        action(&mut state, self.inode)
    }
}

impl WritableFile for CrashFile {
    fn append(&mut self, data: &[u8]) -> io::Result<()> {
        self.with_inode(|state, inode| {
            if let Some(file) = state.inodes.get_mut(&inode) {
                file.data.extend_from_slice(data);
            }
            Ok(())
        })
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.with_inode(|state, inode| {
            state.count_sync()?;
            if let Some(file) = state.inodes.get_mut(&inode) {
                file.durable = file.data.clone();
            }
            Ok(())
        })
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.with_inode(|state, inode| {
            if let Some(file) = state.inodes.get_mut(&inode) {
                file.data.resize(len as usize, 0);
            }
            Ok(())
        })
    }

    fn len(&self) -> u64 {
        self.with_inode(|state, inode| {
            Ok(state.inodes.get(&inode).map_or(0, |file| file.data.len()) as u64)
        })
        .unwrap_or(0)
    }
}

impl FileSystem for CrashFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock()?;
        for ancestor in dir.ancestors() {
            state.directories.entry(ancestor.to_path_buf()).or_default();
        }
        Ok(())
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = self.lock()?;
        let directory = state.directories.get(dir).ok_or_else(|| not_found(dir))?;
        Ok(directory.current.keys().cloned().collect())
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let state = self.lock()?;
        let inode = state.lookup(path)?;
        Ok(state
            .inodes
            .get(&inode)
            .map(|file| file.data.clone())
            .unwrap_or_default())
    }

    fn file_len(&self, path: &Path) -> io::Result<u64> {
        let state = self.lock()?;
        let inode = state.lookup(path)?;
        Ok(state.inodes.get(&inode).map_or(0, |file| file.data.len()) as u64)
    }

    fn open_read(&self, path: &Path) -> io::Result<Box<dyn io::Read + Send>> {
        Ok(Box::new(io::Cursor::new(self.read(path)?)))
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        let (dir, name) = split(path)?;
        let mut state = self.lock()?;
        let inode = state.next_inode;
        let generation = state.generation;
        let directory = state
            .directories
            .get_mut(&dir)
            .ok_or_else(|| not_found(&dir))?;
        if directory.current.contains_key(&name) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{}", path.display()),
            ));
        }
        directory.current.insert(name, inode);
        state.next_inode += 1;
        state.inodes.insert(inode, Inode::default());
        Ok(Box::new(CrashFile {
            state: self.state.clone(),
            inode,
            generation,
        }))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        let state = self.lock()?;
        let inode = state.lookup(path)?;
        Ok(Box::new(CrashFile {
            state: self.state.clone(),
            inode,
            generation: state.generation,
        }))
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let (dir, name) = split(path)?;
        let mut state = self.lock()?;
        let directory = state
            .directories
            .get_mut(&dir)
            .ok_or_else(|| not_found(&dir))?;
        directory
            .current
            .remove(&name)
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (from_dir, from_name) = split(from)?;
        let (to_dir, to_name) = split(to)?;
        let mut state = self.lock()?;
        let inode = state
            .directories
            .get_mut(&from_dir)
            .and_then(|directory| directory.current.remove(&from_name))
            .ok_or_else(|| not_found(from))?;
        state
            .directories
            .get_mut(&to_dir)
            .ok_or_else(|| not_found(&to_dir))?
            .current
            .insert(to_name, inode);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.lock()?;
        state.count_sync()?;
        let directory = state
            .directories
            .get_mut(dir)
            .ok_or_else(|| not_found(dir))?;
        directory.durable = directory.current.clone();
        Ok(())
    }
}
