//! Helpers shared by Sluice's benchmarks: producer batches of an exact size, aligned
//! buffers for O_DIRECT baselines, CPU pinning, and latency and throughput summaries.
//!
//! Nothing here measures anything by itself; the binaries under `src/bin` do. The
//! helpers return errors rather than panic, so a benchmark that cannot run says why.

use std::alloc::Layout;
use std::fmt;
use std::ptr::NonNull;
use std::time::Duration;

use hdrhistogram::Histogram;
use sluice_schemas::records::{BatchBuilder, BatchConfig};

pub mod baseline;

/// The alignment of O_DIRECT buffers, positions and lengths used by the baselines: the
/// same 4 KiB the node's I/O seam uses (`sluice_node::io::IO_ALIGNMENT_BYTES`).
pub const DIRECT_IO_ALIGNMENT_BYTES: usize = 4096;

/// Bytes of a RecordBatch v2 header, before the first record.
const BATCH_HEADER_BYTES: usize = 61;

/// Why a benchmark could not run, in words for the person who started it.
#[derive(Debug)]
pub struct BenchError(pub String);

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BenchError {}

impl From<String> for BenchError {
    fn from(message: String) -> Self {
        BenchError(message)
    }
}

/// Builds one uncompressed producer batch of exactly `batch_bytes` bytes: a single
/// record with a short key and a value sized to fill the batch. Its value bytes are a
/// pseudo-random pattern so that nothing along the way can compress or dedupe them.
///
/// The record's length fields are varints, so the value length that gives an exact size
/// is found by a few rounds of correction; at a varint boundary the key length is
/// changed instead.
pub fn exact_batch(batch_bytes: usize, timestamp_ms: i64) -> Result<Vec<u8>, BenchError> {
    if batch_bytes < BATCH_HEADER_BYTES + 16 {
        return Err(BenchError(format!("a batch of {batch_bytes} bytes is too small to hold a header and a record")));
    }
    let value = pattern(batch_bytes);
    let key_source = b"log-bench-key-00";
    for key_bytes in 1..=key_source.len() {
        let key = &key_source[..key_bytes];
        let builder =
            BatchBuilder::new(BatchConfig::default()).map_err(|e| BenchError(format!("starting a batch: {e}")))?;
        let mut value_bytes = batch_bytes - BATCH_HEADER_BYTES - 16;
        for _round in 0..8 {
            let size = builder
                .size_bytes_with(Some(key), Some(&value[..value_bytes]), &[], timestamp_ms)
                .map_err(|e| BenchError(format!("sizing a batch of {batch_bytes} bytes: {e}")))?;
            if size == batch_bytes {
                let mut builder = builder;
                builder
                    .push(Some(key), Some(&value[..value_bytes]), &[], timestamp_ms)
                    .map_err(|e| BenchError(format!("filling a batch of {batch_bytes} bytes: {e}")))?;
                let batch = builder
                    .finish()
                    .map_err(|e| BenchError(format!("finishing a batch of {batch_bytes} bytes: {e}")))?;
                if batch.len() != batch_bytes {
                    return Err(BenchError(format!("built a batch of {} bytes instead of {batch_bytes}", batch.len())));
                }
                return Ok(batch);
            }
            let corrected = value_bytes as i64 + batch_bytes as i64 - size as i64;
            if corrected < 0 || corrected as usize > value.len() {
                break;
            }
            value_bytes = corrected as usize;
        }
    }
    Err(BenchError(format!("found no single-record batch of exactly {batch_bytes} bytes")))
}

/// `len` bytes of a fixed xorshift sequence.
#[must_use]
pub fn pattern(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// A zero-initialised heap buffer whose address is aligned for O_DIRECT, for the
/// baselines that call the kernel directly rather than through glommio.
pub struct AlignedBlock {
    data: NonNull<u8>,
    layout: Layout,
}

impl AlignedBlock {
    /// A block of `len` bytes (a positive multiple of the alignment) holding `contents`
    /// repeated from its start.
    pub fn filled_with(len: usize, contents: &[u8]) -> Result<AlignedBlock, BenchError> {
        if len == 0 || !len.is_multiple_of(DIRECT_IO_ALIGNMENT_BYTES) {
            return Err(BenchError(format!(
                "an O_DIRECT block must be a positive multiple of {DIRECT_IO_ALIGNMENT_BYTES} bytes, not {len}"
            )));
        }
        let layout = Layout::from_size_align(len, DIRECT_IO_ALIGNMENT_BYTES)
            .map_err(|e| BenchError(format!("layout for {len} bytes: {e}")))?;
        // SAFETY: the layout's size is not zero (checked above).
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let Some(data) = NonNull::new(raw) else {
            return Err(BenchError(format!("out of memory allocating {len} aligned bytes")));
        };
        let mut block = AlignedBlock { data, layout };
        if !contents.is_empty() {
            for chunk in block.as_mut_slice().chunks_mut(contents.len()) {
                chunk.copy_from_slice(&contents[..chunk.len()]);
            }
        }
        Ok(block)
    }

    #[must_use]
    pub fn len(&self) -> usize {
        self.layout.size()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.layout.size() == 0
    }

    #[must_use]
    pub fn as_ptr(&self) -> *const u8 {
        self.data.as_ptr()
    }

    #[must_use]
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `data` points to `layout.size()` initialised bytes owned by `self`.
        unsafe { std::slice::from_raw_parts(self.data.as_ptr(), self.layout.size()) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.data.as_ptr(), self.layout.size()) }
    }
}

impl Drop for AlignedBlock {
    fn drop(&mut self) {
        // SAFETY: `data` came from `alloc_zeroed` with this very layout.
        unsafe { std::alloc::dealloc(self.data.as_ptr(), self.layout) }
    }
}

/// Pins the calling thread to one CPU, so a baseline runs where the glommio executor it
/// is compared with runs (`Placement::Fixed(cpu)`).
pub fn pin_current_thread(cpu: usize) -> Result<(), BenchError> {
    // SAFETY: cpu_set_t is plain bytes, for which all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if cpu >= 8 * std::mem::size_of::<libc::cpu_set_t>() {
        return Err(BenchError(format!("CPU {cpu} is beyond what cpu_set_t can name")));
    }
    // SAFETY: CPU_SET writes inside `set`; `cpu` was checked against its capacity.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: pid 0 is the calling thread; the set lives across the call.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc != 0 {
        return Err(BenchError(format!("pinning a thread to CPU {cpu}: {}", std::io::Error::last_os_error())));
    }
    Ok(())
}

/// A latency histogram in microseconds, from 1 µs to 10 minutes at 3 significant digits.
pub fn latency_histogram_us() -> Result<Histogram<u64>, BenchError> {
    Histogram::new_with_bounds(1, 600_000_000, 3).map_err(|e| BenchError(format!("latency histogram: {e}")))
}

/// Records `elapsed` in a histogram made by `latency_histogram_us`, clamping values
/// outside its range rather than failing.
pub fn record_latency(histogram: &mut Histogram<u64>, elapsed: Duration) {
    let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX).max(1);
    histogram.saturating_record(us);
}

/// The latency figures a benchmark reports, in microseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

impl LatencySummary {
    #[must_use]
    pub fn of(histogram: &Histogram<u64>) -> LatencySummary {
        LatencySummary {
            count: histogram.len(),
            p50_us: histogram.value_at_quantile(0.50),
            p90_us: histogram.value_at_quantile(0.90),
            p99_us: histogram.value_at_quantile(0.99),
            p999_us: histogram.value_at_quantile(0.999),
            max_us: histogram.max(),
        }
    }
}

/// Decimal megabytes (10^6 bytes) per second, the unit of every bandwidth reported.
#[must_use]
pub fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return 0.0;
    }
    bytes as f64 / secs / 1e6
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn exact_batches_have_the_asked_size_and_pass_the_producer_check() {
        for bytes in [4096, 16 << 10, 64 << 10, 1 << 20, 127, 128, 200, 16_384 + 3] {
            let batch = exact_batch(bytes, 1_700_000_000_000).unwrap();
            assert_eq!(batch.len(), bytes);
            sluice_schemas::batch::check_producer_batch(&batch).unwrap();
        }
    }

    #[test]
    fn aligned_blocks_are_aligned_and_repeat_their_contents() {
        let block = AlignedBlock::filled_with(8192, &[1, 2, 3]).unwrap();
        assert_eq!(block.as_ptr() as usize % DIRECT_IO_ALIGNMENT_BYTES, 0);
        assert_eq!(&block.as_slice()[..7], &[1, 2, 3, 1, 2, 3, 1]);
        assert!(AlignedBlock::filled_with(100, &[]).is_err());
    }
}
