//! Helpers shared by the crash tests and the child processes they start.
//!
//! The crash tests kill a writer process (`log-writer`) at random moments and then check
//! the log it left behind. For that check to be exact, both sides must agree on what
//! each batch was: `crash_batch(run, k)` regenerates the k-th batch of run `run` byte for
//! byte, and `BatchId::of` reads `(run, k)` back from any stored batch (it is encoded in
//! the batch's base timestamp, which the log never rewrites). `Ack` is the one line the
//! writer prints for each acknowledged append.
//!
//! `node_client` serves the node tests instead: a real `sluice-node` process and a blocking client of
//! its native protocol, for the node's integration tests (tests/node.rs). `json` reads
//! what the Kafka client scripts (tests/kafka, run by tests/kafka.rs) print, and `streaming`
//! runs such a script in the background and reads its lines as they come. `kafka_wire`
//! sends raw Kafka requests on a plain socket. `faults` fills a small file system and cuts
//! links between nodes, for the disk-full and chaos tests. `pki` makes CAs and
//! certificates with the openssl CLI, for the TLS tests. `log_check` verifies a log a
//! crash or an injected fault left behind, for the crash and storage-fault tests.

pub mod faults;
pub mod json;
pub mod kafka_wire;
pub mod log_check;
pub mod node_client;
pub mod pki;
pub mod streaming;

use sluice_schemas::batch::BatchHeader;
use sluice_schemas::records::{BatchBuilder, BatchConfig};
use sluice_schemas::Offset;

/// The writer's concurrent appenders: each has at most one append in flight, so at most
/// this many batches of a killed run can be on disk without an `ack` line for them.
pub const WRITER_TASKS: u32 = 4;

/// The most records in one generated batch.
pub const RECORDS_PER_BATCH_MAX: u32 = 20;

/// Which generated batch a stored batch is: the writer's run and the batch's sequence
/// number within that run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BatchId {
    pub run: u32,
    pub k: u32,
}

impl BatchId {
    /// The first record's timestamp: `run` in the high 32 bits, `k` in the low ones, so
    /// any stored batch says which generated batch it is.
    #[must_use]
    pub fn base_timestamp(self) -> i64 {
        (i64::from(self.run) << 32) | i64::from(self.k)
    }

    /// Reads the id back from a stored batch's header; `None` if the base timestamp
    /// could not have been written by `crash_batch`.
    #[must_use]
    pub fn of(header: &BatchHeader) -> Option<BatchId> {
        let ts = header.base_timestamp.get();
        if ts < 0 || ts >> 32 > i64::from(u32::MAX) {
            return None;
        }
        Some(BatchId { run: (ts >> 32) as u32, k: (ts & 0xffff_ffff) as u32 })
    }
}

impl std::fmt::Display for BatchId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "(run {}, k {})", self.run, self.k)
    }
}

/// xorshift64*: the seeded generator of the tests' random choices (kill delays, the chaos
/// nemesis, fuzzing clients), so that a printed seed repeats a run's choices.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0, which xorshift cannot leave, is taken as 1).
    #[must_use]
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in `low..=high`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next_u64() % (high - low + 1)
    }

    /// Uniform-ish in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// splitmix64: a tiny, well-mixed deterministic generator step.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The k-th batch of run `run`, the same bytes every time it is asked for. Half the
/// batches are tiny (records of up to 31 bytes), a third medium (64..512 bytes per
/// record) and the rest large (1 to 4 records of 1..8 KiB), so that batches of very
/// different sizes share writes, straddle pages and fill segments unevenly. Record
/// counts range over 1..=20. The base offset (bytes 0..8) is 0; the log rewrites it.
#[must_use]
pub fn crash_batch(id: BatchId) -> Vec<u8> {
    let mut state = id.base_timestamp() as u64 ^ 0x5eed_ba7c_0000_0000;
    let h = splitmix64(&mut state);
    let (count, value_min, value_span) = match h % 16 {
        0..=7 => (1 + (h >> 8) % u64::from(RECORDS_PER_BATCH_MAX), 0, 32),
        8..=12 => (1 + (h >> 8) % u64::from(RECORDS_PER_BATCH_MAX), 64, 448),
        _ => (1 + (h >> 8) % 4, 1024, 7168),
    };
    generated_batch(id, state, count, value_min, value_span)
}

/// The large batches that start each run of the large-then-small pattern.
pub const LARGE_BATCHES: u32 = 16;

/// The k-th batch of run `run` in the large-then-small pattern (`Pattern::LargeThenSmall`):
/// the first `LARGE_BATCHES` are about 1 MB (16 records of 60 KiB, under the log's
/// default 1 MiB batch limit), every later one a single record of 4,000 to 6,000 bytes.
#[must_use]
pub fn large_then_small_batch(id: BatchId) -> Vec<u8> {
    let state = id.base_timestamp() as u64 ^ 0x1a76_e5a1_0000_0000;
    if id.k < LARGE_BATCHES {
        generated_batch(id, state, 16, 60 << 10, 1)
    } else {
        generated_batch(id, state, 1, 4000, 2001)
    }
}

/// What a writer appends: its batches, and how many it keeps in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// `crash_batch`es, `WRITER_TASKS` appends in flight, forever.
    Mixed,
    /// `large_then_small_batch`es: the large ones `WRITER_TASKS` at a time, then the small
    /// ones one at a time, forever. The log zero-fills ahead of small writes only, so the
    /// first small writes zero-fill behind data that large writes put past the space
    /// zero-filled before them.
    LargeThenSmall,
}

impl Pattern {
    /// The batch `id` of this pattern, the same bytes every time.
    #[must_use]
    pub fn batch(self, id: BatchId) -> Vec<u8> {
        match self {
            Pattern::Mixed => crash_batch(id),
            Pattern::LargeThenSmall => large_then_small_batch(id),
        }
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Pattern::Mixed => "mixed",
            Pattern::LargeThenSmall => "large-then-small",
        })
    }
}

impl std::str::FromStr for Pattern {
    type Err = String;
    fn from_str(s: &str) -> Result<Pattern, String> {
        match s {
            "mixed" => Ok(Pattern::Mixed),
            "large-then-small" => Ok(Pattern::LargeThenSmall),
            other => Err(format!("unknown pattern {other:?} (mixed or large-then-small)")),
        }
    }
}

/// A batch of `count` records of `value_min..value_min + value_span` bytes each, drawn
/// from the generator `state`, with keys and timestamps that name `id`.
fn generated_batch(id: BatchId, mut state: u64, count: u64, value_min: u64, value_span: u64) -> Vec<u8> {
    let mut builder =
        BatchBuilder::new(BatchConfig::default()).unwrap_or_else(|e| panic!("the default batch config is valid: {e}"));
    let ts = id.base_timestamp();
    for i in 0..count {
        let key = format!("r{}-k{}-{i}", id.run, id.k);
        let value_bytes = value_min + splitmix64(&mut state) % value_span;
        // Up to 4 KiB drawn from the generator, repeated to the length: every page of a
        // large value is non-zero and differs from other records', and a debug build
        // makes a megabyte of it quickly.
        let drawn = value_bytes.min(4096).div_ceil(8);
        let block: Vec<u8> = (0..drawn).flat_map(|_| splitmix64(&mut state).to_le_bytes()).collect();
        let mut value = Vec::with_capacity(value_bytes as usize + block.len());
        while (value.len() as u64) < value_bytes {
            value.extend_from_slice(&block);
        }
        value.truncate(value_bytes as usize);
        builder
            .push(Some(key.as_bytes()), Some(&value), &[], ts + i as i64)
            .unwrap_or_else(|e| panic!("record {i} of batch {id} fits a batch: {e}"));
    }
    builder.finish().unwrap_or_else(|e| panic!("batch {id} finishes: {e}"))
}

/// Whether a batch the node stored is the batch a producer sent, byte for byte but for the
/// two fields the partition's leader writes, as Kafka's does: the base offset (bytes 0..8)
/// and the partition leader epoch (bytes 12..16). The CRC covers neither.
#[must_use]
pub fn stored_as_produced(stored: &[u8], produced: &[u8]) -> bool {
    stored.len() == produced.len()
        && stored.len() >= 16
        && stored[8..12] == produced[8..12]
        && stored[16..] == produced[16..]
}

/// One acknowledged append, as the writer prints it: `ack RUN K BASE LAST`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    pub id: BatchId,
    pub base_offset: Offset,
    pub last_offset: Offset,
}

impl Ack {
    /// The line the writer prints, newline included.
    #[must_use]
    pub fn line(&self) -> String {
        format!("ack {} {} {} {}\n", self.id.run, self.id.k, self.base_offset.0, self.last_offset.0)
    }

    /// Parses one line (without its newline); `None` if it is not an ack line.
    #[must_use]
    pub fn parse(line: &str) -> Option<Ack> {
        let mut words = line.split(' ');
        if words.next()? != "ack" {
            return None;
        }
        let run = words.next()?.parse().ok()?;
        let k = words.next()?.parse().ok()?;
        let base = words.next()?.parse().ok()?;
        let last = words.next()?.parse().ok()?;
        if words.next().is_some() {
            return None;
        }
        Some(Ack { id: BatchId { run, k }, base_offset: Offset(base), last_offset: Offset(last) })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use sluice_schemas::batch::check_producer_batch;

    #[test]
    fn generated_batches_are_valid_deterministic_and_carry_their_id() {
        let mut sizes = Vec::new();
        for k in 0..200 {
            let id = BatchId { run: 7, k };
            let a = crash_batch(id);
            assert_eq!(a, crash_batch(id), "batch {id} regenerates identically");
            let checked = check_producer_batch(&a).unwrap();
            assert_eq!(BatchId::of(checked.header()), Some(id));
            let pattern = Pattern::LargeThenSmall.batch(id);
            assert_eq!(BatchId::of(check_producer_batch(&pattern).unwrap().header()), Some(id));
            let expected = if k < LARGE_BATCHES { 960 << 10..1 << 20 } else { 4000..6200 };
            assert!(expected.contains(&pattern.len()), "pattern batch {id}: {} bytes", pattern.len());
            let count = checked.header().record_count();
            assert!((1..=RECORDS_PER_BATCH_MAX as i32).contains(&count));
            sizes.push(a.len());
        }
        assert_ne!(crash_batch(BatchId { run: 1, k: 3 }), crash_batch(BatchId { run: 2, k: 3 }));
        assert!(sizes.iter().any(|&s| s < 300), "some batches are tiny: {sizes:?}");
        assert!(sizes.iter().any(|&s| s > 4096), "some batches span pages: {sizes:?}");
    }

    #[test]
    fn ack_lines_round_trip_and_partial_lines_are_refused() {
        let ack = Ack { id: BatchId { run: 3, k: 41 }, base_offset: Offset(100), last_offset: Offset(119) };
        let line = ack.line();
        assert_eq!(Ack::parse(line.trim_end()), Some(ack));
        assert_eq!(Ack::parse("ack 3 41 100"), None);
        assert_eq!(Ack::parse("ready 0"), None);
    }
}
