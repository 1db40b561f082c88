//! Strong identifier types shared by the node and the client.
//!
//! A partition offset, a leader epoch and a partition id are different things; keeping
//! them different types means the compiler refuses to add an epoch to an offset. Each
//! type carries only the arithmetic that means something for it.

use std::fmt;

/// The position of a record in its partition: 0 for the first record ever appended,
/// one more for each record after it. Stored as u64 on disk and on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Offset(pub u64);

impl Offset {
    /// The offset `count` records after this one.
    #[must_use]
    pub fn plus(self, count: u64) -> Offset {
        Offset(self.0 + count)
    }

    /// How many records lie between `earlier` and this offset (`self - earlier`).
    /// Panics if `earlier` is after `self`: that is a bug in the caller.
    #[must_use]
    pub fn records_since(self, earlier: Offset) -> u64 {
        assert!(earlier <= self, "offset {earlier} is after {self}");
        self.0 - earlier.0
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A partition's leader epoch: bumped each time its leadership changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct LeaderEpoch(pub u32);

impl fmt::Display for LeaderEpoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The index of a partition within its topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PartitionId(pub u32);

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A producer id, handed out by the node for idempotent and transactional producers;
/// -1 (none) on the wire is `None` in our code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProducerId(pub u64);

impl fmt::Display for ProducerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
