//! Which partition a record goes to: Kafka's default partitioner, byte-for-byte.
//!
//! Guarantees:
//!
//! - A keyed record goes where Kafka's Java client (and librdkafka's `murmur2_random`,
//!   and kafka-python) would send it: `to_positive(murmur2(key)) % partitions`, with
//!   `murmur2` exactly Java's `Utils.murmur2`. Applications that mix Sluice and Kafka
//!   clients on one topic keep per-key ordering. An empty key is a key (it hashes);
//!   only a missing key is "no key".
//! - A record without a key sticks to one partition per topic until the producer
//!   starts a new batch for that topic (KIP-480, Kafka 2.4's `StickyPartitionCache`):
//!   the producer calls `on_new_batch` with the partition whose batch it just closed,
//!   and the next keyless record goes to a different partition, chosen at random. This
//!   fills batches instead of spreading single records over every partition.
//! - `partition` always returns a value below `partitions` when `partitions` is at
//!   least 1. A topic with no partitions has no valid answer; the producer refuses such
//!   topics before asking, and the partitioners return 0 rather than panic.
//! - State is one small map per partitioner, one entry per topic the producer has
//!   written to, behind a mutex that is never held across anything that blocks.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

/// Kafka's murmur2 seed (`Utils.murmur2`).
const MURMUR2_SEED: u32 = 0x9747_b28c;
/// murmur2's mixing constants.
const MURMUR2_M: u32 = 0x5bd1_e995;
const MURMUR2_R: u32 = 24;

/// MurmurHash2, 32-bit, exactly as Kafka's Java `Utils.murmur2`: seed `0x9747b28c`,
/// little-endian 4-byte words, the 1 to 3 tail bytes folded in with the C original's
/// switch fallthrough, then the final avalanche. Java's arithmetic is on signed ints
/// with `>>>`; wrapping u32 arithmetic with `>>` gives the same bits.
#[must_use]
pub fn murmur2(data: &[u8]) -> i32 {
    // Java's length is an int; keys over 2 GiB cannot exist on the wire, and
    // truncating is what the bits would be there anyway.
    let mut h = MURMUR2_SEED ^ (data.len() as u32);
    let words = data.chunks_exact(4);
    let tail = words.remainder();
    for word in words {
        let mut k = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
        k = k.wrapping_mul(MURMUR2_M);
        k ^= k >> MURMUR2_R;
        k = k.wrapping_mul(MURMUR2_M);
        h = h.wrapping_mul(MURMUR2_M);
        h ^= k;
    }
    if let Some(&b) = tail.get(2) {
        h ^= u32::from(b) << 16;
    }
    if let Some(&b) = tail.get(1) {
        h ^= u32::from(b) << 8;
    }
    if let Some(&b) = tail.first() {
        h ^= u32::from(b);
        h = h.wrapping_mul(MURMUR2_M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(MURMUR2_M);
    h ^= h >> 15;
    // Bit-for-bit: Java's result is this u32 read as an int.
    h as i32
}

/// Kafka's `Utils.toPositive`: clears the sign bit. Not `abs`, which would map
/// `i32::MIN` to itself and differ from Java for every negative hash.
#[must_use]
pub fn to_positive(n: i32) -> i32 {
    n & 0x7fff_ffff
}

/// The partition Kafka's default partitioner picks for a key, among `partitions`
/// (0 when there are none).
#[must_use]
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    // to_positive's result is never negative, so the conversion is lossless.
    let hash = to_positive(murmur2(key)) as u32;
    hash.checked_rem(partitions).unwrap_or(0)
}

/// Chooses a record's partition. The producer calls `partition` for every record and
/// `on_new_batch` when it closes a topic's batch and starts another.
pub trait Partitioner: Send + Sync {
    /// The partition, below `partitions`, for a record of `topic` with this key and
    /// value (`None` is a null key or value, not an empty one).
    fn partition(&self, topic: &str, key: Option<&[u8]>, value: Option<&[u8]>, partitions: u32) -> u32;

    /// The producer started a new batch for `topic` after the one for partition
    /// `previous`. Sticky partitioners move on; others ignore it.
    fn on_new_batch(&self, _topic: &str, _previous: u32) {}
}

/// xorshift64*: a few lines, no dependency, and plenty for spreading keyless records;
/// nothing here needs unpredictability.
#[derive(Debug)]
struct XorShift64(u64);

impl XorShift64 {
    /// Seeded from the clock and the state's address, so two partitioners started in
    /// the same nanosecond still differ. Zero (a fixed point) is replaced.
    fn from_time(salt: u64) -> Self {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        Self::with_seed(nanos ^ salt.rotate_left(32))
    }

    fn with_seed(seed: u64) -> Self {
        XorShift64(if seed == 0 { 0x9E37_79B9_7F4A_7C15 } else { seed })
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform enough in `0..n` for n >= 1 (the modulo bias of a 64-bit draw over a
    /// partition count is below 2^-32).
    fn below(&mut self, n: u32) -> u32 {
        // The remainder is below n, a u32.
        (self.next() % u64::from(n)) as u32
    }
}

/// A topic's sticky partition and the partition count it was chosen among.
#[derive(Clone, Copy, Debug)]
struct Sticky {
    partition: u32,
    partitions: u32,
}

#[derive(Debug)]
struct StickyState {
    rng: XorShift64,
    by_topic: HashMap<String, Sticky>,
}

impl StickyState {
    /// A random partition in `0..partitions` other than `avoid` when there is another.
    fn choose(&mut self, partitions: u32, avoid: Option<u32>) -> u32 {
        match avoid {
            Some(avoid) if avoid < partitions && partitions > 1 => {
                // Draw among the others, then step over `avoid`: one draw, no retry loop.
                let pick = self.rng.below(partitions - 1);
                if pick >= avoid {
                    pick + 1
                } else {
                    pick
                }
            }
            _ => self.rng.below(partitions.max(1)),
        }
    }
}

/// Kafka's default partitioner (Java client 2.4 to 3.2, KIP-480): murmur2 of the key for
/// keyed records; for keyless records, one sticky partition per topic, changed to a
/// different random partition each time `on_new_batch` reports that the sticky
/// partition's batch was closed.
#[derive(Debug)]
pub struct DefaultPartitioner {
    state: Mutex<StickyState>,
}

impl Default for DefaultPartitioner {
    fn default() -> Self {
        Self::new()
    }
}

impl DefaultPartitioner {
    /// A partitioner whose random choices are seeded from the clock.
    #[must_use]
    pub fn new() -> Self {
        let state = Mutex::new(StickyState { rng: XorShift64::with_seed(1), by_topic: HashMap::new() });
        // The address of the fresh state distinguishes partitioners made at once.
        let salt = &state as *const _ as u64;
        if let Ok(mut guard) = state.lock() {
            guard.rng = XorShift64::from_time(salt);
        }
        DefaultPartitioner { state }
    }

    /// A partitioner whose random choices replay from `seed`: for tests and
    /// simulations.
    #[must_use]
    pub fn with_seed(seed: u64) -> Self {
        DefaultPartitioner {
            state: Mutex::new(StickyState { rng: XorShift64::with_seed(seed), by_topic: HashMap::new() }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StickyState> {
        // Every update of the state is a single insert or field store, so a panic
        // elsewhere while the lock was held cannot have left it half-changed.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Partitioner for DefaultPartitioner {
    fn partition(&self, topic: &str, key: Option<&[u8]>, _value: Option<&[u8]>, partitions: u32) -> u32 {
        if let Some(key) = key {
            return partition_for_key(key, partitions);
        }
        if partitions == 0 {
            return 0;
        }
        let mut state = self.lock();
        match state.by_topic.get(topic).copied() {
            // Still valid: the topic may have grown since, but the sticky partition
            // exists, so stay (Java's cache does not react to growth either).
            Some(sticky) if sticky.partition < partitions => {
                if sticky.partitions != partitions {
                    state.by_topic.insert(topic.to_owned(), Sticky { partitions, ..sticky });
                }
                sticky.partition
            }
            _ => {
                let partition = state.choose(partitions, None);
                state.by_topic.insert(topic.to_owned(), Sticky { partition, partitions });
                partition
            }
        }
    }

    fn on_new_batch(&self, topic: &str, previous: u32) {
        let mut state = self.lock();
        // Only the batch of the sticky partition moves it on: a keyed record's batch
        // closing elsewhere says nothing about keyless traffic (Java compares
        // `prevPartition` with the cached partition the same way).
        if let Some(sticky) = state.by_topic.get(topic).copied() {
            if sticky.partition == previous {
                let partition = state.choose(sticky.partitions, Some(previous));
                state.by_topic.insert(topic.to_owned(), Sticky { partition, ..sticky });
            }
        }
    }
}

/// Kafka's `RoundRobinPartitioner`: every record, keyed or not, goes to the next
/// partition of its topic in turn, starting at 0. Keys are ignored, so per-key ordering
/// is lost; use it to spread load evenly.
#[derive(Debug, Default)]
pub struct RoundRobinPartitioner {
    next_by_topic: Mutex<HashMap<String, u32>>,
}

impl RoundRobinPartitioner {
    /// A partitioner whose topics all start at partition 0.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

impl Partitioner for RoundRobinPartitioner {
    fn partition(&self, topic: &str, _key: Option<&[u8]>, _value: Option<&[u8]>, partitions: u32) -> u32 {
        // A counter update cannot be left half-done, so a poisoned lock is still valid.
        let mut next_by_topic = self.next_by_topic.lock().unwrap_or_else(PoisonError::into_inner);
        let counter = match next_by_topic.get_mut(topic) {
            Some(counter) => counter,
            None => next_by_topic.entry(topic.to_owned()).or_insert(0),
        };
        let value = *counter;
        *counter = counter.wrapping_add(1);
        value.checked_rem(partitions).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// Kafka's own Java test vectors (`UtilsTest.testMurmur2`), plus the empty input.
    #[test]
    fn murmur2_matches_kafkas_java_test_vectors() {
        let cases: [(&[u8], i32); 7] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58_897_971),
            (b"abc", 479_470_107),
            (b"", 275_646_681),
        ];
        for (input, expected) in cases {
            assert_eq!(murmur2(input), expected, "murmur2({:?})", String::from_utf8_lossy(input));
        }
    }

    /// kafka-python's `test_murmur2_java_compatibility`: partitions out of 1000 that
    /// Kafka's Java partitioner chose for these keys.
    #[test]
    fn keyed_partition_matches_javas_choice_among_1000() {
        let cases: [(&[u8], u32); 6] =
            [(b"", 681), (b"a", 524), (b"ab", 434), (b"abc", 107), (b"123456789", 566), (b"\x00 ", 742)];
        let partitioner = DefaultPartitioner::with_seed(7);
        for (key, expected) in cases {
            assert_eq!(partition_for_key(key, 1000), expected, "key {key:?}");
            assert_eq!(partitioner.partition("t", Some(key), None, 1000), expected, "key {key:?}");
        }
    }

    #[test]
    fn to_positive_clears_the_sign_bit_rather_than_negating() {
        assert_eq!(to_positive(5), 5);
        assert_eq!(to_positive(-1), i32::MAX);
        assert_eq!(to_positive(i32::MIN), 0);
        assert_eq!(to_positive(-973_932_308), -973_932_308 & 0x7fff_ffff);
    }

    #[test]
    fn no_partitions_gives_zero_instead_of_panicking() {
        assert_eq!(partition_for_key(b"k", 0), 0);
        assert_eq!(DefaultPartitioner::with_seed(1).partition("t", None, None, 0), 0);
        assert_eq!(RoundRobinPartitioner::new().partition("t", None, None, 0), 0);
    }

    #[test]
    fn keyless_records_stick_until_a_new_batch_for_the_sticky_partition() {
        let p = DefaultPartitioner::with_seed(42);
        let first = p.partition("t", None, Some(b"v"), 8);
        for _ in 0..100 {
            assert_eq!(p.partition("t", None, Some(b"v"), 8), first);
        }
        // A batch closing on some other partition does not move keyless records.
        p.on_new_batch("t", (first + 1) % 8);
        assert_eq!(p.partition("t", None, None, 8), first);
        // The sticky partition's batch closing does, to a different partition.
        p.on_new_batch("t", first);
        let second = p.partition("t", None, None, 8);
        assert_ne!(second, first);
        assert!(second < 8);
        assert_eq!(p.partition("t", None, None, 8), second);
    }

    #[test]
    fn every_new_batch_moves_to_a_different_partition_and_all_get_used() {
        let p = DefaultPartitioner::with_seed(3);
        let mut seen = [0u32; 5];
        let mut current = p.partition("t", None, None, 5);
        for _ in 0..1000 {
            p.on_new_batch("t", current);
            let next = p.partition("t", None, None, 5);
            assert_ne!(next, current);
            seen[next as usize] += 1;
            current = next;
        }
        // Roughly uniform: each of 5 partitions gets about 200 of 1000 switches.
        assert!(seen.iter().all(|&n| n > 120), "{seen:?}");
    }

    #[test]
    fn topics_stick_independently() {
        let p = DefaultPartitioner::with_seed(11);
        let a = p.partition("a", None, None, 1000);
        let b = p.partition("b", None, None, 1000);
        p.on_new_batch("b", b);
        assert_eq!(p.partition("a", None, None, 1000), a);
        assert_ne!(p.partition("b", None, None, 1000), b);
    }

    #[test]
    fn a_single_partition_stays_put_and_a_shrunk_topic_is_rechosen() {
        let p = DefaultPartitioner::with_seed(5);
        assert_eq!(p.partition("t", None, None, 1), 0);
        p.on_new_batch("t", 0);
        assert_eq!(p.partition("t", None, None, 1), 0);

        let p = DefaultPartitioner::with_seed(5);
        let mut sticky = p.partition("t", None, None, 100);
        while sticky < 10 {
            p.on_new_batch("t", sticky);
            sticky = p.partition("t", None, None, 100);
        }
        assert!(p.partition("t", None, None, 10) < 10);
    }

    #[test]
    fn keyed_records_ignore_the_sticky_partition() {
        let p = DefaultPartitioner::with_seed(9);
        let _ = p.partition("t", None, None, 16);
        for key in [&b"alpha"[..], b"beta", b"", b"\xff\xfe"] {
            assert_eq!(p.partition("t", Some(key), None, 16), partition_for_key(key, 16));
        }
    }

    #[test]
    fn seeded_partitioners_replay_and_clock_seeded_ones_work() {
        let run = |p: &DefaultPartitioner| -> Vec<u32> {
            (0..20)
                .map(|_| {
                    let part = p.partition("t", None, None, 50);
                    p.on_new_batch("t", part);
                    part
                })
                .collect()
        };
        assert_eq!(run(&DefaultPartitioner::with_seed(77)), run(&DefaultPartitioner::with_seed(77)));
        assert!(run(&DefaultPartitioner::new()).iter().all(|&p| p < 50));
        assert!(XorShift64::with_seed(0).next() != 0, "zero seed must not be a fixed point");
    }

    #[test]
    fn round_robin_cycles_per_topic_for_keyed_and_keyless_records() {
        let p = RoundRobinPartitioner::new();
        let a: Vec<u32> = (0..7).map(|i| p.partition("a", (i % 2 == 0).then_some(&b"k"[..]), None, 3)).collect();
        assert_eq!(a, [0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(p.partition("b", None, None, 3), 0, "a new topic starts at 0");
        p.on_new_batch("a", 0);
        assert_eq!(p.partition("a", None, None, 3), 1, "new batches do not skip partitions");
    }

    #[test]
    fn partitioners_are_usable_as_trait_objects_across_threads() {
        let partitioners: Vec<std::sync::Arc<dyn Partitioner>> =
            vec![std::sync::Arc::new(DefaultPartitioner::new()), std::sync::Arc::new(RoundRobinPartitioner::new())];
        for p in partitioners {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let p = p.clone();
                    std::thread::spawn(move || (0..100).all(|_| p.partition("t", None, None, 4) < 4))
                })
                .collect();
            assert!(handles.into_iter().all(|h| h.join().unwrap()));
        }
    }
}
