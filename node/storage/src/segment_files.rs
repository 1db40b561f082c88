//! Closed segments' files, opened on demand from a bounded pool per shard.
//!
//! A log holds only its active segment's file open. A read, a timestamp lookup, the
//! cleaner or recovery that needs a closed segment asks the pool, which keeps the most
//! recently used files open up to `ShardLimits::segment_files_max` and closes the least
//! recently used past it. So the descriptors a node holds grow with its partitions (one
//! each) plus a fixed pool, not with partitions times segments.
//!
//! A file leaves the pool when its segment is deleted or replaced (`forget`, so a deleted
//! file's space is freed and a renamed-over path is opened anew) and when its log closes
//! (`forget_dir`). A reader that took a file keeps it open until it is done with it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use sluice_io::File;

/// The pool's size when the shard sets none.
pub const SEGMENT_FILES_MAX_DEFAULT: usize = 1024;

#[derive(Default)]
struct Pool {
    /// Each open file and when it was last used (a counter).
    files: HashMap<PathBuf, (Rc<File>, u64)>,
    clock: u64,
}

/// Counters of the pool, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmentFileStats {
    pub open: u64,
    pub max: u64,
    pub opens: u64,
    pub evictions: u64,
}

thread_local! {
    static POOL: RefCell<Pool> = RefCell::new(Pool::default());
    static MAX: Cell<usize> = const { Cell::new(SEGMENT_FILES_MAX_DEFAULT) };
    static STATS: Cell<SegmentFileStats> = const { Cell::new(SegmentFileStats { open: 0, max: 0, opens: 0, evictions: 0 }) };
}

/// Sets this shard's pool size (`configure_shard`).
pub(crate) fn set_max(max: usize) {
    MAX.with(|m| m.set(max.max(1)));
}

/// The closed segment file at `path`, from the pool or opened (read-only) into it.
pub(crate) async fn get(path: &Path) -> std::io::Result<Rc<File>> {
    let hit = POOL.with(|p| {
        let mut p = p.borrow_mut();
        p.clock += 1;
        let now = p.clock;
        p.files.get_mut(path).map(|(file, used)| {
            *used = now;
            file.clone()
        })
    });
    if let Some(file) = hit {
        return Ok(file);
    }
    let opened = Rc::new(File::open(path, false).await?);
    STATS.with(|s| s.set(SegmentFileStats { opens: s.get().opens + 1, ..s.get() }));
    let max = MAX.with(Cell::get);
    Ok(POOL.with(|p| {
        let mut p = p.borrow_mut();
        p.clock += 1;
        let now = p.clock;
        // Another task may have opened it meanwhile: keep one.
        let file = p.files.entry(path.to_path_buf()).or_insert((opened, now)).0.clone();
        while p.files.len() > max {
            let Some(oldest) = p.files.iter().min_by_key(|(_, (_, used))| *used).map(|(k, _)| k.clone()) else {
                break;
            };
            p.files.remove(&oldest);
            STATS.with(|s| s.set(SegmentFileStats { evictions: s.get().evictions + 1, ..s.get() }));
        }
        file
    }))
}

/// Drops the pool's file at `path` (its segment was deleted or replaced).
pub(crate) fn forget(path: &Path) {
    POOL.with(|p| p.borrow_mut().files.remove(path));
}

/// Drops the pool's files of the log in `dir` (it closed).
pub(crate) fn forget_dir(dir: &Path) {
    POOL.with(|p| p.borrow_mut().files.retain(|path, _| path.parent() != Some(dir)));
}

/// This shard's pool counters.
#[must_use]
pub fn stats() -> SegmentFileStats {
    let open = POOL.with(|p| p.borrow().files.len()) as u64;
    let max = MAX.with(Cell::get) as u64;
    SegmentFileStats { open, max, ..STATS.with(Cell::get) }
}
