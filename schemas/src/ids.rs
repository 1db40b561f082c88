//! Strong identifier types shared by the node and the client.
//!
//! A partition offset, a leader epoch and a partition's name are different things; keeping
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

    /// As the protocols carry offsets: a signed 64-bit number (offsets never reach 2^63).
    #[must_use]
    pub fn as_i64(self) -> i64 {
        i64::try_from(self.0).unwrap_or(i64::MAX)
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

/// A partition named as clients name it: its topic and its index within the topic. The
/// key of everything kept per partition, on the node and in the client.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: u32,
}

impl TopicPartition {
    #[must_use]
    pub fn new(topic: impl Into<String>, partition: u32) -> TopicPartition {
        TopicPartition { topic: topic.into(), partition }
    }
}

impl<S: Into<String>> From<(S, u32)> for TopicPartition {
    fn from((topic, partition): (S, u32)) -> TopicPartition {
        TopicPartition::new(topic, partition)
    }
}

impl fmt::Display for TopicPartition {
    /// Kafka's `topic-partition`, as logs and partition directories name it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
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
