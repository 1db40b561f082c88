//! Where consumer groups live, as nodes and clients both compute it: a group's committed
//! offsets and its coordinator belong to one partition of the internal offsets topic,
//! chosen by hashing the group id (FNV-1a). In a cluster the coordinator is that
//! partition's leader.

/// The internal topic holding committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Its partitions: groups spread over them (and so over shards and nodes) by hash.
pub const OFFSETS_PARTITIONS: u32 = 8;

/// The offsets partition of a group.
#[must_use]
pub fn offsets_partition(group: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in group.bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash % OFFSETS_PARTITIONS
}
