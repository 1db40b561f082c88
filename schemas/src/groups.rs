//! Where consumer groups and transactional ids live, as nodes and clients both compute
//! it: a group's committed offsets and its coordinator belong to one partition of the
//! internal offsets topic, a transactional id's state to one partition of the internal
//! transaction state topic, each chosen by hashing the id (FNV-1a). In a cluster the
//! coordinator is that partition's leader.

/// The internal topic holding committed offsets.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Its partitions: groups spread over them (and so over shards and nodes) by hash.
pub const OFFSETS_PARTITIONS: u32 = 8;

/// The internal topic holding transactions' state.
pub const TXN_TOPIC: &str = "__transaction_state";
/// Its partitions: transactional ids spread over them by hash.
pub const TXN_PARTITIONS: u32 = 8;

fn fnv1a(id: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in id.bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// The offsets partition of a group.
#[must_use]
pub fn offsets_partition(group: &str) -> u32 {
    fnv1a(group) % OFFSETS_PARTITIONS
}

/// The transaction state partition of a transactional id.
#[must_use]
pub fn txn_partition(transactional_id: &str) -> u32 {
    fnv1a(transactional_id) % TXN_PARTITIONS
}
