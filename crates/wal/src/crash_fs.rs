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
//! - log files (`create_log`) run ahead of their appends in zeros, in the
//!   same steps as the real ones, and appends overwrite the zeros;
//! - optionally a crash keeps a random prefix of a file's unsynced change
//!   (appended bytes, or bytes written over a log file's zeros), as a write
//!   cut short by a power loss would.
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
    /// A file sync held back by [`CrashFs::hold_file_sync`].
    hold: Arc<SyncHold>,
    /// The life this handle belongs to; see [`CrashFs::crash`].
    generation: u64,
}

/// Lets a test stop the writer inside one file sync and act meanwhile.
#[derive(Default)]
pub struct SyncHold {
    state: Mutex<HoldState>,
    changed: std::sync::Condvar,
}

#[derive(Default)]
struct HoldState {
    /// File syncs still to pass before the held one.
    armed: Option<u64>,
    /// A sync is waiting.
    reached: bool,
    released: bool,
}

impl SyncHold {
    fn lock(&self) -> MutexGuard<'_, HoldState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Called by every file sync before it does anything.
    fn pass(&self) {
        let mut hold = self.lock();
        match hold.armed {
            Some(0) => {
                hold.armed = None;
                hold.reached = true;
                self.changed.notify_all();
                while !hold.released {
                    hold = self
                        .changed
                        .wait(hold)
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                }
            }
            Some(remaining) => hold.armed = Some(remaining - 1),
            None => {}
        }
    }

    /// Waits until the held sync has started, or `timeout` passes.
    pub fn wait_reached(&self, timeout: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut hold = self.lock();
        while !hold.reached {
            let now = std::time::Instant::now();
            if now >= deadline {
                return false;
            }
            hold = self
                .changed
                .wait_timeout(hold, deadline - now)
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
        true
    }

    /// Lets the held sync go on (after a crash, it fails like every call
    /// through a handle from before the crash).
    pub fn release(&self) {
        let mut hold = self.lock();
        hold.released = true;
        self.changed.notify_all();
    }
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
    /// change is an append or an overwrite past its durable contents keeps
    /// a random prefix of it.
    pub fn crash(&self, torn_seed: Option<u64>) -> CrashFs {
        let mut state = self.lock_any();
        state.generation += 1;
        let generation = state.generation;
        let mut random = torn_seed.unwrap_or(0);
        for directory in state.directories.values_mut() {
            directory.current = directory.durable.clone();
        }
        for inode in state.inodes.values_mut() {
            let mut survivor = inode.durable.clone();
            // The unsynced change of a file that only grew or was written
            // in place past its durable contents (appends, including over a
            // log file's zeros): from the first byte that differs to the
            // end of the new contents. A torn write keeps a prefix of it.
            let first_change = inode
                .data
                .iter()
                .zip(&inode.durable)
                .position(|(new, old)| new != old)
                .unwrap_or(inode.data.len().min(inode.durable.len()));
            let grew_or_overwrote =
                inode.data.len() >= inode.durable.len() && first_change < inode.data.len();
            if torn_seed.is_some() && grew_or_overwrote {
                let unsynced = inode.data.len() - first_change;
                let keep = (next_random(&mut random) % (unsynced as u64 + 1)) as usize;
                let kept_to = first_change + keep;
                survivor.truncate(first_change);
                survivor.extend_from_slice(&inode.data[first_change..kept_to]);
                if let Some(rest) = inode.durable.get(kept_to..) {
                    survivor.extend_from_slice(rest);
                }
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
            hold: self.hold.clone(),
            generation,
        }
    }

    fn create_file(
        &self,
        path: &Path,
        zero_extension: Option<ZeroExtension>,
    ) -> io::Result<Box<dyn WritableFile>> {
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
            hold: self.hold.clone(),
            inode,
            generation,
            zero_extension,
        }))
    }

    /// Holds the file sync after the next `passing` ones (directory syncs
    /// do not count) until [`SyncHold::release`].
    pub fn hold_file_sync(&self, passing: u64) -> Arc<SyncHold> {
        self.hold.lock().armed = Some(passing);
        self.hold.clone()
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
    hold: Arc<SyncHold>,
    inode: u64,
    generation: u64,
    /// Set for a log file (`create_log`).
    zero_extension: Option<ZeroExtension>,
}

/// A log file runs ahead of its appends in zeros, `step_bytes` at a time,
/// as the real one does; `appended` is where the next append goes.
#[derive(Clone, Copy)]
struct ZeroExtension {
    appended: u64,
    step_bytes: u64,
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
        let extension = self.zero_extension;
        self.with_inode(|state, inode| {
            if let Some(file) = state.inodes.get_mut(&inode) {
                match extension {
                    None => file.data.extend_from_slice(data),
                    Some(extension) => {
                        let start = extension.appended as usize;
                        let end = start + data.len();
                        if end > file.data.len() {
                            let step = extension.step_bytes;
                            let extended = (end as u64).div_ceil(step) * step;
                            file.data.resize(extended as usize, 0);
                        }
                        file.data[start..end].copy_from_slice(data);
                    }
                }
            }
            Ok(())
        })?;
        if let Some(extension) = &mut self.zero_extension {
            extension.appended += data.len() as u64;
        }
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.hold.pass();
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
        })?;
        if let Some(extension) = &mut self.zero_extension {
            extension.appended = len;
        }
        Ok(())
    }

    fn len(&self) -> u64 {
        if let Some(extension) = self.zero_extension {
            return extension.appended;
        }
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
        self.create_file(path, None)
    }

    fn create_log(&self, path: &Path, extension_bytes: u64) -> io::Result<Box<dyn WritableFile>> {
        self.create_file(
            path,
            Some(ZeroExtension {
                appended: 0,
                step_bytes: extension_bytes.max(1),
            }),
        )
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        let state = self.lock()?;
        let inode = state.lookup(path)?;
        Ok(Box::new(CrashFile {
            state: self.state.clone(),
            hold: self.hold.clone(),
            inode,
            generation: state.generation,
            zero_extension: None,
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
