//! `sluice-io`: the node's I/O seam, the only crate that depends on glommio (and through
//! it on io_uring).
//!
//! Storage, the protocol servers, the cluster transport and the shards see the small
//! types here rather than glommio itself: `File`, `AlignedBuf`, `IoBytes`, a few directory
//! calls and a clock (this file), TCP listeners and connections (`net`), the cross-shard
//! mesh (`mesh`), tasks, executors and local channels (`rt`). Everything here must run on
//! a glommio executor thread; none of it is `Send`.
//!
//! Guarantees: `File` is always opened with O_DIRECT (glommio DMA files), so a write that
//! completed has left this process and survives its kill -9; only `fdatasync` makes it
//! survive a power loss. Every error names the operation and the file.

pub mod faults;
pub mod mesh;
pub mod net;
pub mod rt;
mod sync;

pub use sync::{first_of, join_all, LocalFuture, Oneshot, OneshotSender, WaitQueue};

use std::future::Future;
use std::io;
use std::ops::{Deref, Range};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use glommio::io::{DmaBuffer, DmaFile, OpenOptions, ReadResult};

/// The alignment every O_DIRECT position, length and buffer address obeys here. 4 KiB
/// satisfies both 512-byte and 4 KiB logical-block devices, and equals the page size.
pub const IO_ALIGNMENT_BYTES: u64 = 4096;

/// Rounds `value` down to the I/O alignment.
#[must_use]
pub fn align_down(value: u64) -> u64 {
    value & !(IO_ALIGNMENT_BYTES - 1)
}

/// Rounds `value` up to the I/O alignment.
#[must_use]
pub fn align_up(value: u64) -> u64 {
    align_down(value + IO_ALIGNMENT_BYTES - 1)
}

/// A buffer whose address and capacity are aligned for O_DIRECT, owned and writable
/// while the log fills it. It is allocated outside glommio's short-lived I/O arena
/// because the log keeps written buffers as its cache.
pub struct AlignedBuf {
    inner: DmaBuffer,
}

impl AlignedBuf {
    /// A buffer of at least `bytes` bytes, rounded up to the alignment. Its contents
    /// are unspecified: the writer fills what it writes out, padding included. It is
    /// not zeroed because the log allocates one per write and zeroing a megabyte costs
    /// more than the copy of a small batch.
    #[must_use]
    pub fn with_capacity(bytes: usize) -> AlignedBuf {
        let capacity = align_up(bytes.max(1) as u64) as usize;
        AlignedBuf { inner: glommio::allocate_dma_buffer_global(capacity) }
    }

    #[must_use]
    pub fn capacity(&self) -> usize {
        self.inner.len()
    }

    #[must_use]
    pub fn as_slice(&self) -> &[u8] {
        self.inner.as_bytes()
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        self.inner.as_bytes_mut()
    }

    /// Ends writing into the buffer: keeps its first `len` bytes (`len` aligned) and
    /// makes it shareable between a disk write and the cache.
    #[must_use]
    pub fn freeze(mut self, len: usize) -> SharedBuf {
        assert!((len as u64).is_multiple_of(IO_ALIGNMENT_BYTES) && len <= self.capacity(), "freeze at {len}");
        let allocated = self.capacity();
        self.inner.trim_to_size(len);
        SharedBuf { inner: Rc::new(self.inner), allocated }
    }
}

/// A frozen `AlignedBuf`, shared without copying between an in-flight write and readers.
#[derive(Clone)]
pub struct SharedBuf {
    inner: Rc<DmaBuffer>,
    /// The allocation's size, which the buffer holds whatever its length.
    allocated: usize,
}

impl SharedBuf {
    #[must_use]
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    #[must_use]
    pub fn as_slice(&self) -> &[u8] {
        self.inner.as_bytes()
    }

    /// The memory the buffer holds: its whole allocation, not only its length.
    #[must_use]
    pub fn allocated_bytes(&self) -> usize {
        self.allocated
    }
}

/// The largest zero buffer `SharedBuf::zeros` hands out.
pub const ZEROS_BYTES_MAX: usize = 1 << 20;

impl SharedBuf {
    /// Zero bytes for zero-filling files ahead of their writes: the largest of the
    /// thread's shared zero buffers (4 KiB times a power of two, up to `ZEROS_BYTES_MAX`)
    /// that fits in `len` (at least 4 KiB). The buffers are allocated and zeroed once per
    /// thread and only ever read, so a fill costs no allocation, no zeroing and no page
    /// faults (a fresh megabyte per fill cost a third of a shard's CPU at 256 partitions).
    #[must_use]
    pub fn zeros(len: usize) -> SharedBuf {
        const SIZES: usize = (ZEROS_BYTES_MAX / IO_ALIGNMENT_BYTES as usize).trailing_zeros() as usize + 1;
        thread_local!(static ZEROS: std::cell::RefCell<[Option<SharedBuf>; SIZES]> = const {
            std::cell::RefCell::new([const { None }; SIZES])
        });
        let pages = (len.clamp(IO_ALIGNMENT_BYTES as usize, ZEROS_BYTES_MAX) / IO_ALIGNMENT_BYTES as usize).max(1);
        let class = pages.ilog2() as usize;
        ZEROS.with(|zeros| {
            zeros.borrow_mut()[class]
                .get_or_insert_with(|| {
                    let bytes = (IO_ALIGNMENT_BYTES as usize) << class;
                    let mut buf = AlignedBuf::with_capacity(bytes);
                    buf.as_mut_slice().fill(0);
                    buf.freeze(bytes)
                })
                .clone()
        })
    }

    /// A copy of the first `len` bytes (`len` aligned), as a buffer of its own.
    #[must_use]
    pub fn prefix(&self, len: usize) -> SharedBuf {
        let mut buf = AlignedBuf::with_capacity(len);
        buf.as_mut_slice()[..len].copy_from_slice(&self.as_slice()[..len]);
        buf.freeze(len)
    }
}

/// Bytes that came from the disk or the log's cache, shared without copying. Fetch hands
/// these to the socket as they are.
#[derive(Clone)]
pub struct IoBytes {
    source: IoSource,
    range: Range<usize>,
}

#[derive(Clone)]
enum IoSource {
    Cached(SharedBuf),
    Read(ReadResult),
}

impl IoBytes {
    /// A view of `range` within a cached buffer.
    #[must_use]
    pub fn cached(buf: SharedBuf, range: Range<usize>) -> IoBytes {
        assert!(range.end <= buf.len(), "cached range {range:?} beyond {}", buf.len());
        IoBytes { source: IoSource::Cached(buf), range }
    }

    /// The sub-range `range` (relative to this view).
    #[must_use]
    pub fn slice(&self, range: Range<usize>) -> IoBytes {
        assert!(range.start <= range.end && range.end <= self.len(), "slice {range:?} of {}", self.len());
        IoBytes { source: self.source.clone(), range: self.range.start + range.start..self.range.start + range.end }
    }

    /// Extends this view by `next` when `next` starts right where this one ends in the
    /// same buffer (consecutive batches of one read); returns whether it did.
    pub fn try_extend(&mut self, next: &IoBytes) -> bool {
        let same_source = match (&self.source, &next.source) {
            (IoSource::Cached(a), IoSource::Cached(b)) => Rc::ptr_eq(&a.inner, &b.inner),
            (IoSource::Read(a), IoSource::Read(b)) => std::ptr::eq(a.as_ptr(), b.as_ptr()),
            _ => false,
        };
        if !same_source || self.range.end != next.range.start {
            return false;
        }
        self.range.end = next.range.end;
        true
    }

    /// Whether these bytes were served from memory rather than read from the disk.
    #[must_use]
    pub fn is_cached(&self) -> bool {
        matches!(self.source, IoSource::Cached(_))
    }
}

impl Deref for IoBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        let all: &[u8] = match &self.source {
            IoSource::Cached(buf) => buf.as_slice(),
            IoSource::Read(read) => read,
        };
        &all[self.range.clone()]
    }
}

impl std::fmt::Debug for IoBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IoBytes({} bytes, cached: {})", self.len(), self.is_cached())
    }
}

fn glommio_error(e: glommio::GlommioError<()>) -> io::Error {
    match e {
        glommio::GlommioError::IoError(e) => e,
        glommio::GlommioError::EnhancedIoError { source, .. } => source,
        other => io::Error::other(other.to_string()),
    }
}

/// Tunes glibc's malloc for the log's write buffers in a program that keeps it (the crash
/// tests' log writer; the node and log-bench use mimalloc); call once at process start,
/// before the shards start.
///
/// The log allocates an aligned buffer per write (up to `write_buffer_bytes`) and keeps
/// written buffers as its cache. With glibc's defaults every buffer over 128 KiB is a
/// fresh mmap, freed with munmap when the cache evicts it: at 1 MiB appends that cost a
/// page fault per 4 KiB written and halved append throughput in `log-bench`. Raising the
/// mmap and trim thresholds keeps the buffers in the heap, where freed ones are reused
/// with their pages already mapped.
pub fn tune_allocator() {
    /// glibc caps the mmap threshold at 32 MiB on 64-bit systems.
    const MMAP_THRESHOLD_BYTES: libc::c_int = 32 << 20;
    const TRIM_THRESHOLD_BYTES: libc::c_int = 256 << 20;
    // SAFETY: mallopt only changes allocator parameters; it is called before the node's
    // threads allocate concurrently. On a C library without these options it is a no-op
    // returning 0, which we ignore: the setting is a speed-up, not a requirement.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
        libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES);
    }
}

/// Turns transparent huge pages off for this process (`PR_SET_THP_DISABLE`); call once
/// at process start, before the shards start.
///
/// The log's write buffers are aligned allocations that live in the cache until it
/// evicts them, and mimalloc asks for huge pages for its arenas (`MADV_HUGEPAGE`), then
/// returns parts of them to the kernel as buffers are freed. Every later touch of such a
/// range faulted in and zeroed a whole 2 MiB page again: at 1,024 partitions (1 KiB
/// records, 16 KiB batches, a cache still filling) `perf` put 47% of the shard's CPU in
/// `clear_page_erms` under those faults, and the node's memory grew to 2.4 times the bytes
/// it had cached. With 4 KiB pages the kernel zeroes only what is touched. Returns the
/// error when the kernel refuses (then the node runs on as it is).
pub fn disable_transparent_huge_pages() -> std::io::Result<()> {
    // SAFETY: prctl with PR_SET_THP_DISABLE takes plain integers and changes only this
    // process's memory policy.
    let done = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if done == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Makes glommio learn, before the first direct-I/O file on `dir`'s device is opened,
/// whether that device supports polled I/O. Every `File` open and creation calls it, so
/// no other file can be the first.
///
/// glommio probes this once per device and thread by reading the first page of the
/// first DMA file opened there. When that file is empty, the read succeeds without
/// reaching the device, glommio wrongly concludes the device can poll, and every later
/// read fails with EOPNOTSUPP on devices that cannot (virtio disks, loop devices, most
/// cloud volumes). So we open a file with a written first page first, which makes the
/// probe real: a one-page file we write, or, when the disk is too full for one, an
/// existing file of at least a page near `dir`.
pub async fn probe_device(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    // glommio keeps its answer per thread, so do we.
    thread_local!(static PROBED: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) });
    let device = std::fs::metadata(dir)?.dev();
    if PROBED.with(|p| p.borrow().contains(&device)) {
        return Ok(());
    }
    let path = dir.join(format!(".sluice-probe-{}", std::process::id()));
    let written = (|| {
        use std::io::Write;
        let mut f = std::fs::File::create(&path)?;
        f.write_all(&[0u8; IO_ALIGNMENT_BYTES as usize])?;
        f.sync_all()
    })();
    let probe = match written {
        Ok(()) => Some(path.clone()),
        Err(e) => {
            remove_file(&path)?;
            let found = file_of_a_page_near(dir, device);
            if found.is_none() {
                return Err(io::Error::new(
                    e.kind(),
                    format!(
                        "cannot learn whether the device of {} supports polled I/O: writing a probe file failed \
                         ({e}) and no file of a page is there to read",
                        dir.display()
                    ),
                ));
            }
            found
        }
    };
    if let Some(probe) = probe {
        let opened = open_dma(&probe, false).await;
        if probe == path {
            remove_file(&path)?;
        }
        opened?.close().await?;
    }
    PROBED.with(|p| p.borrow_mut().push(device));
    Ok(())
}

/// A regular file of at least a page on device `device`, in `dir`, its subdirectories,
/// its parent or the parent's subdirectories (a partition's segments, a data
/// directory's other partitions). Looks at a bounded number of entries.
fn file_of_a_page_near(dir: &Path, device: u64) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    const ENTRIES_MAX: usize = 10_000;
    let mut dirs = vec![dir.to_path_buf()];
    if let Some(parent) = dir.parent() {
        dirs.push(parent.to_path_buf());
    }
    let mut seen = 0;
    let mut i = 0;
    while i < dirs.len() && seen < ENTRIES_MAX {
        let Ok(entries) = std::fs::read_dir(&dirs[i]) else {
            i += 1;
            continue;
        };
        let top = i < 2;
        for entry in entries.flatten().take(ENTRIES_MAX - seen) {
            seen += 1;
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_file() && meta.dev() == device && meta.len() >= IO_ALIGNMENT_BYTES {
                return Some(entry.path());
            }
            if meta.is_dir() && top {
                dirs.push(entry.path());
            }
        }
        i += 1;
    }
    None
}

/// Opens a DMA file without probing (the probe's own open).
async fn open_dma(path: &Path, writable: bool) -> io::Result<File> {
    let inner = OpenOptions::new().read(true).write(writable).dma_open(path).await.map_err(glommio_error)?;
    Ok(File { inner, path: path.to_path_buf() })
}

/// A file opened for direct I/O through io_uring.
pub struct File {
    inner: DmaFile,
    path: PathBuf,
}

impl File {
    /// Creates a new file (it must not exist) for reading and writing.
    pub async fn create_new(path: &Path) -> io::Result<File> {
        probe_device(parent_of(path)).await?;
        let inner =
            OpenOptions::new().read(true).write(true).create_new(true).dma_open(path).await.map_err(glommio_error)?;
        faults::created(path);
        Ok(File { inner, path: path.to_path_buf() })
    }

    /// Opens an existing file for reading, and for writing when `writable`.
    pub async fn open(path: &Path, writable: bool) -> io::Result<File> {
        probe_device(parent_of(path)).await?;
        open_dma(path, writable).await
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes all of `buf` at `position` (aligned). Returns only when the write
    /// completed: the kernel has the data, so it outlives this process.
    pub async fn write_at(&self, buf: &SharedBuf, position: u64) -> io::Result<()> {
        assert!(position.is_multiple_of(IO_ALIGNMENT_BYTES), "unaligned write position {position}");
        let len = buf.len();
        let (verdict, undo) = faults::before_write(&self.path, position, len)?;
        let injected = match verdict {
            faults::Verdict::Proceed => None,
            faults::Verdict::Fail(errno) => return Err(faults::injected(errno, "writing", &self.path)),
            faults::Verdict::Partial { bytes, errno } => Some((bytes, errno)),
        };
        if let Some((bytes, errno)) = injected {
            if bytes > 0 {
                let written = self.inner.write_rc_at(buf.prefix(bytes).inner, position).await;
                faults::write_done(&self.path, undo);
                written.map_err(glommio_error)?;
            }
            return Err(faults::injected(errno, "writing", &self.path));
        }
        let written = self.inner.write_rc_at(buf.inner.clone(), position).await;
        faults::write_done(&self.path, undo);
        let written = written.map_err(glommio_error)?;
        if written != len {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write: {written} of {len} bytes at position {position}"),
            ));
        }
        Ok(())
    }

    /// Reads up to `len` bytes at `position` (any alignment); fewer at the end of file.
    pub async fn read_at(&self, position: u64, len: usize) -> io::Result<IoBytes> {
        faults::before_read(&self.path, position, len)?;
        let read = self.inner.read_at(position, len).await.map_err(glommio_error)?;
        let n = read.len();
        Ok(IoBytes { source: IoSource::Read(read), range: 0..n })
    }

    /// Flushes written data (and the metadata needed to read it) to stable storage.
    pub async fn fdatasync(&self) -> io::Result<()> {
        let covered = faults::before_sync(Some(&self.path))?;
        let synced = self.inner.fdatasync().await.map_err(glommio_error);
        faults::after_sync(&covered, synced.is_ok());
        synced
    }

    /// syncfs(2) of the file system holding this file: commits every file's metadata
    /// (one journal commit) and flushes the device's write cache. Runs on glommio's
    /// blocking thread pool: the call may take milliseconds and must not stall the shard.
    pub async fn syncfs(&self) -> io::Result<()> {
        use std::os::unix::io::AsRawFd;
        // A duplicate descriptor, so the blocking thread never sees one this file closed.
        let covered = faults::before_sync(None)?;
        let fd = dup_cloexec(self.inner.as_raw_fd())?;
        let synced = glommio::executor()
            .spawn_blocking(move || {
                // SAFETY: `fd` is a descriptor this call owns (dup'ed above); closed here.
                let rc = unsafe { libc::syncfs(fd) };
                let result = if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) };
                // SAFETY: as above; nothing else uses `fd`.
                unsafe { libc::close(fd) };
                result
            })
            .await;
        faults::after_sync(&covered, synced.is_ok());
        synced
    }

    pub async fn truncate(&self, len: u64) -> io::Result<()> {
        self.inner.truncate(len).await.map_err(glommio_error)?;
        faults::truncated(&self.path, len);
        Ok(())
    }

    pub async fn size(&self) -> io::Result<u64> {
        self.inner.file_size().await.map_err(glommio_error)
    }

    pub async fn close(self) -> io::Result<()> {
        self.inner.close().await.map_err(glommio_error)
    }
}

/// dup(2) with close-on-exec.
fn dup_cloexec(fd: std::os::unix::io::RawFd) -> io::Result<std::os::unix::io::RawFd> {
    // SAFETY: fcntl on a descriptor this process holds open; it returns a new one or -1.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if new < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(new)
    }
}

/// Writes `bytes` to `path` atomically: a temporary file is written, synced, checked to
/// hold exactly `bytes`' length and renamed over `path`, and the directory is synced. A
/// failed write (a full disk) leaves `path` as it was. Used for small metadata files
/// (indexes, checkpoints), never on the record path.
pub async fn write_file_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    remove_file(&tmp)?;
    let file = File::create_new(&tmp).await?;
    let written = async {
        let len = bytes.len();
        if len > 0 {
            let padded = align_up(len as u64) as usize;
            let mut buf = AlignedBuf::with_capacity(padded);
            buf.as_mut_slice()[..len].copy_from_slice(bytes);
            buf.as_mut_slice()[len..padded].fill(0);
            file.write_at(&buf.freeze(padded), 0).await?;
            file.truncate(len as u64).await?;
        }
        file.fdatasync().await?;
        let size = file.size().await?;
        if size != len as u64 {
            return Err(io::Error::other(format!("{} holds {size} bytes after writing {len}", tmp.display())));
        }
        Ok(())
    }
    .await;
    let closed = file.close().await;
    if let Err(e) = written.and(closed) {
        let _ = remove_file(&tmp);
        return Err(e);
    }
    rename(&tmp, path)?;
    sync_dir(parent_of(path)).await
}

/// Renames a file over another (not durable until the directory is synced).
pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::rename(from, to)?;
    faults::renamed(from, to);
    Ok(())
}

/// Reads a whole (small) file, or `None` when it does not exist.
pub async fn read_file(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let file = match File::open(path, false).await {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let size = file.size().await?;
    let bytes = file.read_at(0, size as usize).await?.to_vec();
    file.close().await?;
    Ok(Some(bytes))
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Makes the directory's entries (created, renamed, removed files) durable.
pub async fn sync_dir(dir: &Path) -> io::Result<()> {
    // glommio opens directories relative to no directory fd, so the path must be absolute.
    let dir = std::path::absolute(dir)?;
    let entries = faults::before_dir_sync(&dir);
    let d = glommio::io::Directory::open(&dir).await.map_err(glommio_error)?;
    d.sync().await.map_err(glommio_error)?;
    faults::dir_synced(&entries);
    d.close().await.map_err(glommio_error)
}

/// Removes a file; a file that is already gone is not an error.
pub fn remove_file(path: &Path) -> io::Result<()> {
    faults::removed(path);
    match std::fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Runs `future` as a detached task on this shard's executor.
pub fn spawn_detached<F>(future: F)
where
    F: Future<Output = ()> + 'static,
{
    glommio::spawn_local(future).detach();
}

/// Runs `work` on the executor's blocking thread pool (glommio's, on the shard's own
/// placement) and waits for its result: CPU work of a millisecond or more (a PLAIN
/// login's PBKDF2) that must not stall the shard's other tasks.
pub async fn run_blocking<F, R>(work: F) -> R
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    glommio::executor().spawn_blocking(work).await
}

/// Waits `duration` without blocking the executor.
pub async fn sleep(duration: Duration) {
    glommio::timer::sleep(duration).await;
}

/// Runs `future`, giving up after `timeout`: `None` when it timed out.
pub async fn timeout<T>(timeout: Duration, future: impl Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(future.await) }, async {
        sleep(timeout).await;
        None
    })
    .await
}

/// Milliseconds since the Unix epoch, the unit of record timestamps. This is the one
/// wall-clock read of the storage layer; tests replace it with a manual clock. It is
/// `Send` so that configs holding it can cross to the shard threads.
#[derive(Clone, Default)]
pub struct Clock {
    fixed_ms: Option<std::sync::Arc<std::sync::atomic::AtomicI64>>,
}

impl Clock {
    /// The wall clock.
    #[must_use]
    pub fn system() -> Clock {
        Clock::default()
    }

    /// A clock that reads `ms` until `set` moves it (for tests of time-based rules).
    #[must_use]
    pub fn manual(ms: i64) -> Clock {
        Clock { fixed_ms: Some(std::sync::Arc::new(std::sync::atomic::AtomicI64::new(ms))) }
    }

    /// Moves a manual clock (no effect on the system clock).
    pub fn set(&self, ms: i64) {
        if let Some(fixed) = &self.fixed_ms {
            fixed.store(ms, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[must_use]
    pub fn now_ms(&self) -> i64 {
        match &self.fixed_ms {
            Some(ms) => ms.load(std::sync::atomic::Ordering::SeqCst),
            None => SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0),
        }
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Clock({})", self.now_ms())
    }
}

#[cfg(test)]
mod tests {
    use super::{SharedBuf, IO_ALIGNMENT_BYTES, ZEROS_BYTES_MAX};

    /// Zero buffers: the largest 4 KiB power-of-two size that fits (4 KiB at least,
    /// `ZEROS_BYTES_MAX` at most), all zeros, the same buffer for the same size.
    #[test]
    fn zero_buffers_are_the_largest_power_of_two_pages_that_fit_and_are_shared() {
        let page = IO_ALIGNMENT_BYTES as usize;
        for (asked, got) in [(1, page), (page, page), (3 * page, 2 * page), (100 * page, 64 * page)] {
            assert_eq!(SharedBuf::zeros(asked).len(), got, "zeros({asked})");
        }
        assert_eq!(SharedBuf::zeros(5 * ZEROS_BYTES_MAX).len(), ZEROS_BYTES_MAX);
        let (a, b) = (SharedBuf::zeros(ZEROS_BYTES_MAX), SharedBuf::zeros(ZEROS_BYTES_MAX + page));
        assert!(std::rc::Rc::ptr_eq(&a.inner, &b.inner), "one buffer per size");
        assert!(a.as_slice().iter().all(|&b| b == 0));
    }
}
