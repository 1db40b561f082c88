//! The machine's own limits, measured with no Sluice involved: sequential O_DIRECT
//! write and read bandwidth on a directory's file system, fdatasync latency, and
//! loopback TCP bandwidth. `sluice-bench baseline` prints them, and
//! `--against-baseline` divides a result by them.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::{latency_histogram_us, mb_per_s, record_latency, AlignedBlock, BenchError, LatencySummary};

/// What `baseline` measured.
#[derive(Clone, Debug)]
pub struct Baseline {
    pub block_bytes: usize,
    pub direct_write_mb_s: f64,
    pub direct_read_mb_s: f64,
    pub fdatasync_latency_us: LatencySummary,
    pub loopback_tcp_mb_s: f64,
}

impl Baseline {
    /// One JSON object, fields named with their units.
    #[must_use]
    pub fn to_json(&self) -> String {
        format!(
            "{{\"block_bytes\":{},\"direct_write_mb_s\":{:.1},\"direct_read_mb_s\":{:.1},\"fdatasync_p50_us\":{},\"fdatasync_p99_us\":{},\"loopback_tcp_mb_s\":{:.1}}}",
            self.block_bytes,
            self.direct_write_mb_s,
            self.direct_read_mb_s,
            self.fdatasync_latency_us.p50_us,
            self.fdatasync_latency_us.p99_us,
            self.loopback_tcp_mb_s
        )
    }
}

/// Measures everything: `total_bytes` written then read with O_DIRECT in `block_bytes`
/// blocks in a scratch file under `dir`, 200 fdatasyncs of 4 KiB writes, and
/// `tcp_seconds` of loopback TCP.
pub fn measure(dir: &Path, block_bytes: usize, total_bytes: u64, tcp_seconds: f64) -> Result<Baseline, BenchError> {
    std::fs::create_dir_all(dir).map_err(|e| BenchError(format!("creating {}: {e}", dir.display())))?;
    let path = dir.join(format!("sluice-baseline-{}", std::process::id()));
    let result = (|| {
        let direct_write_mb_s = direct_write(&path, block_bytes, total_bytes)?;
        let direct_read_mb_s = direct_read(&path, block_bytes, total_bytes)?;
        let fdatasync_latency_us = fdatasync_latency(&path, 200)?;
        let loopback_tcp_mb_s = loopback_tcp(tcp_seconds)?;
        Ok(Baseline { block_bytes, direct_write_mb_s, direct_read_mb_s, fdatasync_latency_us, loopback_tcp_mb_s })
    })();
    let _ = std::fs::remove_file(&path);
    result
}

fn open_direct(path: &Path, write: bool) -> Result<std::fs::File, BenchError> {
    OpenOptions::new()
        .read(true)
        .write(write)
        .create(write)
        .truncate(write)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .map_err(|e| BenchError(format!("opening {} with O_DIRECT: {e}", path.display())))
}

/// Sequential O_DIRECT writes of `block_bytes`, queue depth 1.
pub fn direct_write(path: &Path, block_bytes: usize, total_bytes: u64) -> Result<f64, BenchError> {
    let file = open_direct(path, true)?;
    let block = AlignedBlock::filled_with(block_bytes, &crate::pattern(block_bytes))?;
    let blocks = total_bytes / block_bytes as u64;
    let started = Instant::now();
    for i in 0..blocks {
        file.write_all_at(block.as_slice(), i * block_bytes as u64)
            .map_err(|e| BenchError(format!("writing {}: {e}", path.display())))?;
    }
    Ok(mb_per_s(blocks * block_bytes as u64, started.elapsed()))
}

/// Sequential O_DIRECT reads of `block_bytes` of what `direct_write` wrote.
pub fn direct_read(path: &Path, block_bytes: usize, total_bytes: u64) -> Result<f64, BenchError> {
    let file = open_direct(path, false)?;
    let mut block = AlignedBlock::filled_with(block_bytes, &[0])?;
    let blocks = total_bytes / block_bytes as u64;
    let started = Instant::now();
    for i in 0..blocks {
        file.read_exact_at(block.as_mut_slice(), i * block_bytes as u64)
            .map_err(|e| BenchError(format!("reading {}: {e}", path.display())))?;
    }
    Ok(mb_per_s(blocks * block_bytes as u64, started.elapsed()))
}

/// The latency of a 4 KiB O_DIRECT write followed by fdatasync, `count` times.
pub fn fdatasync_latency(path: &Path, count: u64) -> Result<LatencySummary, BenchError> {
    let file = open_direct(path, true)?;
    let block = AlignedBlock::filled_with(4096, &crate::pattern(4096))?;
    let mut histogram = latency_histogram_us()?;
    for i in 0..count {
        let started = Instant::now();
        file.write_all_at(block.as_slice(), i * 4096).map_err(|e| BenchError(format!("writing: {e}")))?;
        // SAFETY: fdatasync on a descriptor we own.
        if unsafe { libc::fdatasync(file.as_raw_fd()) } != 0 {
            return Err(BenchError(format!("fdatasync: {}", std::io::Error::last_os_error())));
        }
        record_latency(&mut histogram, started.elapsed());
    }
    Ok(LatencySummary::of(&histogram))
}

/// One thread sends 1 MiB writes to another over 127.0.0.1 for `seconds`.
pub fn loopback_tcp(seconds: f64) -> Result<f64, BenchError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| BenchError(format!("loopback bind: {e}")))?;
    let address = listener.local_addr().map_err(|e| BenchError(e.to_string()))?;
    let reader = std::thread::spawn(move || -> u64 {
        let Ok((mut stream, _)) = listener.accept() else { return 0 };
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        total
    });
    let mut stream = std::net::TcpStream::connect(address).map_err(|e| BenchError(format!("loopback connect: {e}")))?;
    let chunk = crate::pattern(1 << 20);
    let started = Instant::now();
    let mut sent = 0u64;
    while started.elapsed() < Duration::from_secs_f64(seconds) {
        stream.write_all(&chunk).map_err(|e| BenchError(format!("loopback write: {e}")))?;
        sent += chunk.len() as u64;
    }
    drop(stream);
    let received = reader.join().map_err(|_| BenchError("loopback reader panicked".into()))?;
    let elapsed = started.elapsed();
    Ok(mb_per_s(received.min(sent), elapsed))
}
