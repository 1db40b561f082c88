//! The replication throttle (`--replication-throttled-rate`, Kafka's
//! `leader.replication.throttled.rate`): a token bucket for the bytes a shard's leaders
//! send to replicas outside the ISR (new replicas of a move, followers catching up after a
//! restart), so copying data does not take the disk and network from producers and
//! in-sync followers. Replicas in the ISR are never throttled: acks=all does not wait on it.
//!
//! A throttled fetch answer first waits until the bucket holds tokens (at most
//! `WAIT_MAX`, under the follower's fetch timeout; then it goes out empty and the follower
//! asks again), carries at most what the bucket holds (at least one whole batch), and its
//! bytes are taken from the bucket, which may go below zero (the next answers wait longer).
//!
//! Lives on: one per shard (`ReplicaHost`), its rate the node's divided among its shards.

use std::cell::Cell;
use std::time::{Duration, Instant};

use crate::io;

/// The longest a throttled answer waits for the bucket (the node's followers send a fetch
/// again after 2 s without an answer).
pub const WAIT_MAX: Duration = Duration::from_millis(500);
/// The least the bucket holds when full, however low the rate.
const BURST_MIN: f64 = 64.0 * 1024.0;

pub struct Throttle {
    /// Bytes per second.
    rate: f64,
    /// The most the bucket holds: a tenth of a second's worth (at least `BURST_MIN`).
    burst: f64,
    tokens: Cell<f64>,
    last: Cell<Instant>,
    /// Bytes sent through the bucket, and milliseconds answers waited on it (counters).
    bytes: Cell<u64>,
    waited_ms: Cell<u64>,
}

impl Throttle {
    /// A bucket of `rate` bytes per second, full.
    #[must_use]
    pub fn new(rate: u64) -> Throttle {
        let rate = rate.max(1) as f64;
        let burst = (rate / 10.0).max(BURST_MIN);
        Throttle {
            rate,
            burst,
            tokens: Cell::new(burst),
            last: Cell::new(Instant::now()),
            bytes: Cell::new(0),
            waited_ms: Cell::new(0),
        }
    }

    fn refill(&self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last.get()).as_secs_f64();
        self.tokens.set((self.tokens.get() + elapsed * self.rate).min(self.burst));
        self.last.set(now);
    }

    /// Waits (at most `WAIT_MAX`) until the bucket holds tokens; returns how many bytes
    /// the answer may carry, 0 when it must go out empty.
    pub async fn allowance(&self) -> u64 {
        let started = Instant::now();
        let deadline = started + WAIT_MAX;
        loop {
            let now = Instant::now();
            self.refill(now);
            let tokens = self.tokens.get();
            if tokens >= 1.0 {
                self.count_wait(started);
                return tokens as u64;
            }
            if now >= deadline {
                self.count_wait(started);
                return 0;
            }
            let needed = Duration::from_secs_f64((1.0 - tokens) / self.rate);
            io::sleep(needed.min(deadline - now)).await;
        }
    }

    fn count_wait(&self, started: Instant) {
        self.waited_ms.set(self.waited_ms.get() + started.elapsed().as_millis() as u64);
    }

    /// `bytes` went out through the bucket.
    pub fn take(&self, bytes: u64) {
        self.refill(Instant::now());
        self.tokens.set(self.tokens.get() - bytes as f64);
        self.bytes.set(self.bytes.get() + bytes);
    }

    /// (bytes sent through the bucket, milliseconds answers waited on it).
    #[must_use]
    pub fn counters(&self) -> (u64, u64) {
        (self.bytes.get(), self.waited_ms.get())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]

    use super::*;

    /// The bucket starts full (a tenth of a second's worth), lends what it holds, and after
    /// a debt makes the next answer wait until it refilled.
    #[test]
    fn the_bucket_lends_what_it_holds_and_makes_debtors_wait() {
        let executor = io::rt::LocalExecutorBuilder::new(io::rt::Placement::Unbound).make();
        executor.expect("an executor").run(async {
            let t = Throttle::new(1 << 20);
            let full = t.allowance().await;
            assert!((100_000..=110_000).contains(&full), "a tenth of a second of 1 MiB/s: {full}");
            t.take(300_000);
            let started = Instant::now();
            let next = t.allowance().await;
            let waited = started.elapsed();
            assert!(next >= 1, "tokens once the debt is paid");
            assert!(waited >= Duration::from_millis(150), "a debt of about 0.19 s is waited out: {waited:?}");
            assert_eq!(t.counters().0, 300_000);
            t.take(10 << 20);
            assert_eq!(t.allowance().await, 0, "a debt of 10 s is more than an answer waits");
        });
    }
}
