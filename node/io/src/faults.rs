//! Storage faults at the seam, for tests: a failing disk (EIO on a write, a read or a
//! sync; a write that fills the disk part-way, ENOSPC) and a power loss (the writes no
//! completed sync covered are kept, lost or torn at a sector, and files whose directory
//! entry was never synced vanish), injected under everything that reads and writes files
//! through `File` (the partition log, its indexes and snapshots, the controller's log).
//!
//! A test installs a `Seam` on its executor's thread with a `decide` function (its own
//! seeded choices), runs the code under test, and may then end that "machine's life" with
//! `power_loss`. Without a seam installed (the node, always) every hook is one
//! thread-local read and does nothing.
//!
//! The model: a write's bytes are on the device when it completes (O_DIRECT), but in the
//! device's volatile cache until an fdatasync of its file, or a syncfs, that started after
//! it completed finishes without error. A sync that fails leaves the writes it covered
//! exposed to a power loss until a later sync succeeds (O_DIRECT data is not in the page
//! cache, so Linux's habit of forgetting dirty pages after a failed fsync does not apply;
//! the device's next flush writes out its cache). To undo a write at a power loss the
//! seam keeps the bytes it overwrote (read before the write is issued; zeros past the end
//! of the file). A file created since its directory's last sync may vanish. Truncation
//! and renames are taken as durable at once.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The size a power loss tears a write at: a device writes whole sectors or nothing.
pub const SECTOR_BYTES: usize = 512;

/// An operation the seam is about to perform, offered to the test's `decide`.
#[derive(Clone, Copy, Debug)]
pub enum Op<'a> {
    Write {
        path: &'a Path,
        position: u64,
        len: usize,
    },
    Read {
        path: &'a Path,
        position: u64,
        len: usize,
    },
    /// An fdatasync of `path`, or a syncfs when `path` is `None`.
    Sync {
        path: Option<&'a Path>,
    },
}

/// What the seam does with an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Proceed,
    /// Fails with this errno (`libc::EIO`, `libc::ENOSPC`) without touching the device.
    Fail(i32),
    /// Writes only the first `bytes` (rounded down to the I/O alignment) and then fails
    /// with this errno, as a write that fills the disk does.
    Partial {
        bytes: usize,
        errno: i32,
    },
}

/// What a power loss does to one write that no completed sync covered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Survival {
    Kept,
    Lost,
    /// Its first `sectors` sectors reached the platter, the rest did not.
    Torn {
        sectors: usize,
    },
}

/// The faults a seam injected and what a power loss did, for a test's report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub writes: u64,
    pub reads: u64,
    pub syncs: u64,
    pub write_errors: u64,
    pub partial_writes: u64,
    pub read_errors: u64,
    pub sync_errors: u64,
    pub power_losses: u64,
    pub writes_kept: u64,
    pub writes_lost: u64,
    pub writes_torn: u64,
    pub files_vanished: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        self.writes += o.writes;
        self.reads += o.reads;
        self.syncs += o.syncs;
        self.write_errors += o.write_errors;
        self.partial_writes += o.partial_writes;
        self.read_errors += o.read_errors;
        self.sync_errors += o.sync_errors;
        self.power_losses += o.power_losses;
        self.writes_kept += o.writes_kept;
        self.writes_lost += o.writes_lost;
        self.writes_torn += o.writes_torn;
        self.files_vanished += o.files_vanished;
    }
}

/// A write the device may still lose, with what it overwrote; or, once a sync made it
/// durable, only where it lies (its bytes are on the platter, so an older write that a
/// power loss undoes must not bring back what it overwrote there).
struct Undo {
    id: u64,
    position: u64,
    len: usize,
    /// The bytes it overwrote (emptied once it is durable).
    old: Vec<u8>,
    /// The write completed (only completed writes are covered by a sync that starts).
    completed: bool,
    durable: bool,
}

#[derive(Default)]
struct Tracked {
    undo: Vec<Undo>,
    /// Created since its directory's last completed sync.
    entry_unsynced: bool,
}

/// The installed seam: the test's choices and what the device may still lose.
struct Seam {
    decide: Box<dyn FnMut(Op<'_>) -> Verdict>,
    /// Injection is paused (tracking goes on): a test checking what is stored.
    paused: bool,
    /// Whether writes are tracked for `power_loss` (each costs a read of what it
    /// overwrites, kept until a sync covers it); `inject` leaves them alone.
    track: bool,
    files: BTreeMap<PathBuf, Tracked>,
    next_id: u64,
    counts: Counts,
}

thread_local!(static SEAM: RefCell<Option<Seam>> = const { RefCell::new(None) });

/// Installs a seam on this thread, replacing any other; `decide` is asked about every
/// write, read and sync, and writes are tracked for `power_loss`.
pub fn install(decide: impl FnMut(Op<'_>) -> Verdict + 'static) {
    install_seam(Box::new(decide), true);
}

/// Installs a seam that only injects what `decide` says, tracking nothing for a power
/// loss (a running node's `--storage-faults`: no extra read per write, no memory kept).
pub fn inject(decide: impl FnMut(Op<'_>) -> Verdict + 'static) {
    install_seam(Box::new(decide), false);
}

fn install_seam(decide: Box<dyn FnMut(Op<'_>) -> Verdict>, track: bool) {
    let seam = Seam { decide, paused: false, track, files: BTreeMap::new(), next_id: 0, counts: Counts::default() };
    SEAM.with(|s| *s.borrow_mut() = Some(seam));
}

/// Removes this thread's seam and returns its counts.
pub fn uninstall() -> Counts {
    SEAM.with(|s| s.borrow_mut().take().map(|s| s.counts).unwrap_or_default())
}

/// Pauses or resumes injection (tracking for a power loss goes on).
pub fn pause(paused: bool) {
    with_seam(|s| s.paused = paused);
}

/// Writes issued and not completed yet: a power loss waits for none (the executor's
/// in-flight requests must be done before the files are rewritten under them).
#[must_use]
pub fn writes_in_flight() -> usize {
    with_seam(|s| s.files.values().flat_map(|t| &t.undo).filter(|u| !u.completed).count()).unwrap_or(0)
}

/// The power goes out: every write no completed sync covered is kept, lost or torn as
/// `survival` says (asked newest first, per file in path order), and files created since
/// their directory's last sync vanish where `vanish` says so. Afterwards the device holds
/// only what it would after the outage, and nothing is tracked any more. Call it with no
/// write in flight (`writes_in_flight`), after the code under test stopped using the files.
pub fn power_loss(
    mut survival: impl FnMut(&Path, u64, usize) -> Survival,
    mut vanish: impl FnMut(&Path) -> bool,
) -> io::Result<Counts> {
    let files = with_seam(|s| {
        s.counts.power_losses += 1;
        std::mem::take(&mut s.files)
    })
    .unwrap_or_default();
    let mut counts = Counts::default();
    for (path, tracked) in files {
        if tracked.entry_unsynced && vanish(&path) {
            remove(&path)?;
            counts.files_vanished += 1;
            continue;
        }
        if tracked.undo.is_empty() {
            continue;
        }
        let file = match std::fs::OpenOptions::new().write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        // Newest first; a newer write that survives keeps its bytes over older undone ones.
        let mut kept: Vec<(u64, u64)> = Vec::new();
        for undo in tracked.undo.iter().rev().filter(|u| u.len > 0) {
            let len = undo.len;
            let end = undo.position + len as u64;
            if undo.durable {
                kept.push((undo.position, end));
                continue;
            }
            let from = match survival(&path, undo.position, len) {
                Survival::Kept => {
                    counts.writes_kept += 1;
                    kept.push((undo.position, end));
                    continue;
                }
                Survival::Lost => {
                    counts.writes_lost += 1;
                    undo.position
                }
                Survival::Torn { sectors } => {
                    counts.writes_torn += 1;
                    let at = (undo.position + (sectors * SECTOR_BYTES) as u64).min(end);
                    kept.push((undo.position, at));
                    at
                }
            };
            for (start, stop) in uncovered(from, end, &kept) {
                let old = &undo.old[(start - undo.position) as usize..(stop - undo.position) as usize];
                file.write_all_at(old, start)?;
            }
        }
        file.sync_all()?;
    }
    with_seam(|s| s.counts += counts);
    Ok(counts)
}

/// The parts of `from..end` no range of `kept` covers.
fn uncovered(from: u64, end: u64, kept: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut parts = vec![(from, end)];
    for &(k0, k1) in kept {
        parts = parts
            .into_iter()
            .flat_map(|(a, b)| {
                if k1 <= a || k0 >= b {
                    vec![(a, b)]
                } else {
                    [(a, k0.max(a)), (k1.min(b), b)].into_iter().filter(|(x, y)| x < y).collect()
                }
            })
            .collect();
    }
    parts
}

fn remove(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn with_seam<T>(f: impl FnOnce(&mut Seam) -> T) -> Option<T> {
    SEAM.with(|s| s.borrow_mut().as_mut().map(f))
}

fn key(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The error an injected fault returns: the errno's kind and text, the file, "(injected)".
pub(crate) fn injected(errno: i32, what: &str, path: &Path) -> io::Error {
    let e = io::Error::from_raw_os_error(errno);
    io::Error::new(e.kind(), format!("{what} {}: {e} (injected)", path.display()))
}

impl Seam {
    fn verdict(&mut self, op: Op<'_>) -> Verdict {
        if self.paused {
            Verdict::Proceed
        } else {
            (self.decide)(op)
        }
    }
}

/// Before a write of `len` bytes at `position`: what to do (a partial write's bytes
/// rounded down to the I/O alignment), and the id of the write's undo record when it goes
/// ahead (wholly or in part) and writes are tracked. The record is made before the
/// write is issued, so a write abandoned in flight can still be undone.
pub(crate) fn before_write(path: &Path, position: u64, len: usize) -> io::Result<(Verdict, Option<u64>)> {
    let Some((verdict, track)) = with_seam(|s| {
        s.counts.writes += 1;
        let v = match s.verdict(Op::Write { path, position, len }) {
            Verdict::Partial { bytes, errno } => {
                Verdict::Partial { bytes: crate::align_down(bytes.min(len) as u64) as usize, errno }
            }
            other => other,
        };
        match v {
            Verdict::Proceed => {}
            Verdict::Fail(_) => s.counts.write_errors += 1,
            Verdict::Partial { .. } => s.counts.partial_writes += 1,
        }
        (v, s.track)
    }) else {
        return Ok((Verdict::Proceed, None));
    };
    let written = match verdict {
        Verdict::Proceed => len,
        Verdict::Fail(_) => 0,
        Verdict::Partial { bytes, .. } => bytes,
    };
    if written == 0 || !track {
        return Ok((verdict, None));
    }
    let mut old = vec![0u8; written];
    let file = std::fs::File::open(path)?;
    let mut at = 0;
    while at < written {
        match file.read_at(&mut old[at..], position + at as u64)? {
            0 => break, // past the end of the file: zeros
            n => at += n,
        }
    }
    let id = with_seam(|s| {
        let id = s.next_id;
        s.next_id += 1;
        let undo = Undo { id, position, len: written, old, completed: false, durable: false };
        s.files.entry(key(path)).or_default().undo.push(undo);
        id
    });
    Ok((verdict, id))
}

/// The write with undo record `id` completed (or failed after reaching the device).
pub(crate) fn write_done(path: &Path, id: Option<u64>) {
    let Some(id) = id else { return };
    with_seam(|s| {
        if let Some(u) = s.files.get_mut(&key(path)).and_then(|t| t.undo.iter_mut().find(|u| u.id == id)) {
            u.completed = true;
        }
    });
}

/// Before a read: an error to return instead, if one is injected.
pub(crate) fn before_read(path: &Path, position: u64, len: usize) -> io::Result<()> {
    let verdict = with_seam(|s| {
        s.counts.reads += 1;
        let v = s.verdict(Op::Read { path, position, len });
        if v != Verdict::Proceed {
            s.counts.read_errors += 1;
        }
        v
    });
    match verdict {
        Some(Verdict::Fail(errno) | Verdict::Partial { errno, .. }) => Err(injected(errno, "reading", path)),
        _ => Ok(()),
    }
}

/// A sync about to start: of one file, or of every file (`None`, a syncfs). Returns the
/// writes it covers (those completed now), or the injected error.
pub(crate) fn before_sync(path: Option<&Path>) -> io::Result<Vec<u64>> {
    let path_key = path.map(key);
    let result = with_seam(|s| {
        s.counts.syncs += 1;
        let verdict = s.verdict(Op::Sync { path });
        match verdict {
            Verdict::Proceed => Ok(s
                .files
                .iter()
                .filter(|(p, _)| path_key.as_ref().is_none_or(|k| k == *p))
                .flat_map(|(_, t)| &t.undo)
                .filter(|u| u.completed && !u.durable)
                .map(|u| u.id)
                .collect()),
            Verdict::Fail(errno) | Verdict::Partial { errno, .. } => {
                s.counts.sync_errors += 1;
                Err(errno)
            }
        }
    });
    match result {
        None => Ok(Vec::new()),
        Some(Ok(covered)) => Ok(covered),
        Some(Err(errno)) => Err(injected(errno, "syncing", path.unwrap_or(Path::new("the file system")))),
    }
}

/// A sync finished: the writes it covered are durable unless it failed. Durable writes
/// are remembered only while an older write that a power loss may undo lies beneath them.
pub(crate) fn after_sync(covered: &[u64], ok: bool) {
    if covered.is_empty() || !ok {
        return;
    }
    with_seam(|s| {
        for t in s.files.values_mut() {
            for u in t.undo.iter_mut().filter(|u| covered.contains(&u.id)) {
                u.durable = true;
                u.old = Vec::new();
            }
            let first_undoable = t.undo.iter().position(|u| !u.durable).unwrap_or(t.undo.len());
            t.undo.drain(..first_undoable);
        }
    });
}

/// A file was truncated to `len`: what lay past it is gone whatever happens.
pub(crate) fn truncated(path: &Path, len: u64) {
    with_seam(|s| {
        if let Some(t) = s.files.get_mut(&key(path)) {
            t.undo.retain(|u| u.position < len);
            for u in &mut t.undo {
                let keep = (len - u.position).min(u.len as u64) as usize;
                u.len = keep;
                u.old.truncate(keep);
            }
        }
    });
}

/// A file was created: its directory entry is not durable until the directory is synced.
pub(crate) fn created(path: &Path) {
    with_seam(|s| {
        if s.track {
            s.files.entry(key(path)).or_default().entry_unsynced = true;
        }
    });
}

/// A file was removed (or renamed away): nothing of it is tracked any more.
pub(crate) fn removed(path: &Path) {
    with_seam(|s| s.files.remove(&key(path)));
}

/// A file was renamed over `to`: what is tracked for `from` is tracked for `to`.
pub(crate) fn renamed(from: &Path, to: &Path) {
    with_seam(|s| {
        if let Some(t) = s.files.remove(&key(from)) {
            s.files.insert(key(to), t);
        }
    });
}

/// A sync of directory `dir` is about to start: the files whose entries it covers.
pub(crate) fn before_dir_sync(dir: &Path) -> Vec<PathBuf> {
    let dir = key(dir);
    with_seam(|s| {
        s.files
            .iter()
            .filter(|(path, t)| t.entry_unsynced && path.parent() == Some(dir.as_path()))
            .map(|(path, _)| path.clone())
            .collect()
    })
    .unwrap_or_default()
}

/// The directory sync that covered `entries` completed: they are durable.
pub(crate) fn dir_synced(entries: &[PathBuf]) {
    with_seam(|s| {
        for path in entries {
            if let Some(t) = s.files.get_mut(path) {
                t.entry_unsynced = false;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::uncovered;

    #[test]
    fn uncovered_parts_leave_out_every_kept_range() {
        assert_eq!(uncovered(0, 100, &[]), vec![(0, 100)]);
        assert_eq!(uncovered(0, 100, &[(10, 20), (50, 200)]), vec![(0, 10), (20, 50)]);
        assert_eq!(uncovered(0, 100, &[(0, 100)]), Vec::<(u64, u64)>::new());
        assert_eq!(uncovered(40, 60, &[(0, 45), (55, 70)]), vec![(45, 55)]);
    }
}
