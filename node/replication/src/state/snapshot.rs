//! `ClusterState`'s snapshot encoding: the whole replicated state in bytes, for the
//! controller quorum's snapshots (log compaction, and voters too far behind the leader's
//! log). Deterministic: the maps are ordered, so equal states encode to equal bytes.
//!
//! Layout, in the family of the command encoding (same `ENCODING_VERSION`, same field
//! encodings): version, `TAG_STATE`, the next partition id (u32); the nodes (u32 count;
//! each id u32, incarnation as an optional u64, fenced, shutting down); the partitions
//! (u32 count; each its `PartitionState`, config (min ISR u32, unclean flag), unclean
//! elections u64, last AlterPartition as an optional (leader epoch u32, request id u64));
//! the topics (u32 count; each name, replication factor u16, partition ids (u32 count,
//! u32 each), configs (u32 count, key and value strings)); the producer ids (the next
//! block's first id u64, u32 count; each node u32, incarnation u64, first id u64, count
//! u64), a section that snapshots written before producer ids were allocated lack (their
//! state starts at id 0); the SCRAM credentials (u32 count; each user string, mechanism
//! number u8, salt, iterations u32, stored key, server key), a section older snapshots lack
//! (no users); the ACLs (u32 count; each resource type u8, pattern type u8, resource name,
//! principal and host strings, operation u8, permission u8), a section older snapshots
//! lack (no ACLs); the advertised listeners (u32 count of the nodes that have any; each
//! node id u32, then its list: u32 count, each name and host strings, port u16), a
//! section older snapshots lack (no listeners); the reassignments in progress (u32 count;
//! each partition id u32, target and original replica lists), a section older snapshots
//! lack (none); the nodes' endpoints (u32 count of the nodes that announced them; each node
//! id u32, native and cluster address strings, rack as a flag and a string), a section
//! older snapshots lack (none announced). Decoding checks every count against the
//! bytes left, refuses duplicates and trailing bytes.

use std::collections::BTreeMap;

use crate::ClusterPartitionId;
use sluice_schemas::ids::LeaderEpoch;

use super::{
    ClusterState, DecodeError, NodeRecord, PartitionRecord, ProducerIdBlock, Reader, Reassignment, TopicRecord, Writer,
    ENCODING_VERSION,
};
use crate::{Incarnation, NodeId, PartitionConfig};

/// The tag of a whole state (commands use 1-15, outcomes 100).
const TAG_STATE: u8 = 101;

impl ClusterState {
    /// The whole state's bytes (see the module doc).
    #[must_use]
    pub fn encode_snapshot(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.u8(ENCODING_VERSION);
        w.u8(TAG_STATE);
        w.u32(self.next_partition);
        w.u32(count(self.nodes.len()));
        for (id, record) in &self.nodes {
            w.u32(id.0);
            w.optional_u64(record.incarnation.map(|i| i.0));
            w.bool(record.fenced);
            w.bool(record.shutting_down);
        }
        w.u32(count(self.partitions.len()));
        for record in self.partitions.values() {
            w.state(&record.state);
            w.u32(record.config.min_insync_replicas);
            w.bool(record.config.unclean_leader_election);
            w.u64(record.unclean_elections);
            match record.last_alter {
                Some((epoch, request_id)) => {
                    w.bool(true);
                    w.u32(epoch.0);
                    w.u64(request_id);
                }
                None => w.bool(false),
            }
        }
        w.u32(count(self.topics.len()));
        for (name, topic) in &self.topics {
            w.string(name);
            w.u16(topic.replication_factor);
            w.u32(count(topic.partitions.len()));
            topic.partitions.iter().for_each(|p| w.u32(p.0));
            w.u32(count(topic.configs.len()));
            for (key, value) in &topic.configs {
                w.string(key);
                w.string(value);
            }
        }
        w.u64(self.next_producer_id);
        w.u32(count(self.producer_ids.len()));
        for (node, block) in &self.producer_ids {
            w.u32(node.0);
            w.u64(block.incarnation.0);
            w.u64(block.first);
            w.u64(block.count);
        }
        w.u32(count(self.scram.len()));
        for ((user, mechanism), credential) in &self.scram {
            w.string(user);
            w.u8(mechanism.number());
            w.scram(credential);
        }
        w.u32(count(self.acls.len()));
        self.acls.iter().for_each(|acl| w.acl(acl));
        let advertising: Vec<(&NodeId, &NodeRecord)> =
            self.nodes.iter().filter(|(_, record)| !record.listeners.is_empty()).collect();
        w.u32(count(advertising.len()));
        for (id, record) in advertising {
            w.u32(id.0);
            w.listeners(&record.listeners);
        }
        let moving: Vec<(ClusterPartitionId, &Reassignment)> = self.reassignments().collect();
        w.u32(count(moving.len()));
        for (id, m) in moving {
            w.u32(id.0);
            w.nodes(&m.target);
            w.nodes(&m.original);
        }
        let announced: Vec<(&NodeId, &super::NodeEndpoints)> =
            self.nodes.iter().filter_map(|(id, record)| record.endpoints.as_ref().map(|e| (id, e))).collect();
        w.u32(count(announced.len()));
        for (id, endpoints) in announced {
            w.u32(id.0);
            w.endpoints(endpoints);
        }
        w.0
    }

    /// A state from `encode_snapshot`'s bytes.
    pub fn decode_snapshot(bytes: &[u8]) -> Result<ClusterState, DecodeError> {
        let mut r = Reader { bytes, at: 0 };
        let tag = r.header()?;
        if tag != TAG_STATE {
            return r.err(format!("tag {tag} is not a cluster state"));
        }
        let next_partition = r.u32()?;
        // Each node takes at least 7 bytes, each partition 30, each topic 12: a larger count
        // is malformed, not a reason to allocate.
        let nodes = bounded(&mut r, 7)?;
        let mut state = ClusterState { next_partition, ..ClusterState::default() };
        for _ in 0..nodes {
            let id = NodeId(r.u32()?);
            let incarnation = r.optional_u64()?.map(Incarnation);
            let record = NodeRecord {
                incarnation,
                fenced: r.bool()?,
                shutting_down: r.bool()?,
                listeners: Vec::new(),
                endpoints: None,
            };
            if state.nodes.insert(id, record).is_some() {
                return r.err(format!("node {id} listed twice"));
            }
        }
        let partitions = bounded(&mut r, 30)?;
        for _ in 0..partitions {
            let partition_state = r.state()?;
            let config = PartitionConfig { min_insync_replicas: r.u32()?, unclean_leader_election: r.bool()? };
            let unclean_elections = r.u64()?;
            let last_alter = if r.bool()? { Some((LeaderEpoch(r.u32()?), r.u64()?)) } else { None };
            let id = partition_state.partition;
            let record =
                PartitionRecord { state: partition_state, config, unclean_elections, last_alter, reassignment: None };
            if state.partitions.insert(id, record).is_some() {
                return r.err(format!("partition {id} listed twice"));
            }
        }
        let topics = bounded(&mut r, 12)?;
        for _ in 0..topics {
            let name = r.string()?;
            let replication_factor = r.u16()?;
            let ids = bounded(&mut r, 4)?;
            let partitions = (0..ids).map(|_| r.u32().map(ClusterPartitionId)).collect::<Result<Vec<_>, _>>()?;
            let pairs = bounded(&mut r, 4)?;
            let mut configs = BTreeMap::new();
            for _ in 0..pairs {
                let key = r.string()?;
                configs.insert(key, r.string()?);
            }
            let topic = TopicRecord { partitions, replication_factor, configs };
            if state.topics.insert(name.clone(), topic).is_some() {
                return r.err(format!("topic {name} listed twice"));
            }
        }
        if r.at < r.bytes.len() {
            state.next_producer_id = r.u64()?;
            for _ in 0..bounded(&mut r, 28)? {
                let node = NodeId(r.u32()?);
                let block = ProducerIdBlock { incarnation: Incarnation(r.u64()?), first: r.u64()?, count: r.u64()? };
                if state.producer_ids.insert(node, block).is_some() {
                    return r.err(format!("producer ids of node {node} listed twice"));
                }
            }
        }
        if r.at < r.bytes.len() {
            // Each credential takes at least 13 bytes (empty name, mechanism, empty fields).
            for _ in 0..bounded(&mut r, 13)? {
                let user = r.string()?;
                let mechanism = r.mechanism()?;
                let credential = r.scram()?;
                if state.scram.insert((user.clone(), mechanism), credential).is_some() {
                    return r.err(format!("the {} credential of user {user:?} listed twice", mechanism.name()));
                }
            }
        }
        if r.at < r.bytes.len() {
            // Each ACL takes at least 10 bytes.
            for _ in 0..bounded(&mut r, 10)? {
                let acl = r.acl()?;
                if !state.acls.insert(acl.clone()) {
                    return r.err(format!("ACL {acl:?} listed twice"));
                }
            }
        }
        if r.at < r.bytes.len() {
            // Each node's entry takes at least 8 bytes (its id and its list's count).
            for _ in 0..bounded(&mut r, 8)? {
                let id = NodeId(r.u32()?);
                let listeners = r.listeners()?;
                let Some(record) = state.nodes.get_mut(&id) else {
                    return r.err(format!("listeners of node {id}, which is not in the state"));
                };
                if listeners.is_empty() {
                    return r.err(format!("node {id} listed with no listeners"));
                }
                if !record.listeners.is_empty() {
                    return r.err(format!("listeners of node {id} listed twice"));
                }
                record.listeners = listeners;
            }
        }
        if r.at < r.bytes.len() {
            // Each move takes at least 8 bytes (its partition id and two empty lists).
            for _ in 0..bounded(&mut r, 8)? {
                let id = ClusterPartitionId(r.u32()?);
                let moving = Reassignment { target: r.nodes()?, original: r.nodes()? };
                let Some(record) = state.partitions.get_mut(&id) else {
                    return r.err(format!("a reassignment of partition {id}, which is not in the state"));
                };
                if record.reassignment.is_some() {
                    return r.err(format!("the reassignment of partition {id} listed twice"));
                }
                if moving.target.is_empty() || record.state.replicas != moving.replicas() {
                    return r.err(format!("the reassignment of partition {id} does not match its replicas"));
                }
                record.reassignment = Some(moving);
            }
        }
        if r.at < r.bytes.len() {
            // Each node's entry takes at least 9 bytes (its id, two empty strings, no rack).
            for _ in 0..bounded(&mut r, 9)? {
                let id = NodeId(r.u32()?);
                let endpoints = r.endpoints()?;
                let Some(record) = state.nodes.get_mut(&id) else {
                    return r.err(format!("endpoints of node {id}, which is not in the state"));
                };
                if record.endpoints.replace(endpoints).is_some() {
                    return r.err(format!("endpoints of node {id} listed twice"));
                }
            }
        }
        r.finish()?;
        Ok(state)
    }
}

fn count(len: usize) -> u32 {
    assert!(len <= u32::MAX as usize, "{len} items in one list of the cluster state");
    len as u32
}

/// Reads a count of items that take at least `item_bytes` each, refusing one the bytes
/// left cannot hold.
fn bounded(r: &mut Reader<'_>, item_bytes: usize) -> Result<usize, DecodeError> {
    let count = r.u32()? as usize;
    let left = r.bytes.len() - r.at;
    if count > left / item_bytes {
        return r.err(format!("{count} items of at least {item_bytes} bytes in {left} bytes"));
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::state::{AclBinding, Command, ScramCredential, ScramMechanism};
    use crate::{AdvertisedListener, PartitionEpoch};

    fn ids(nodes: &[u32]) -> Vec<NodeId> {
        nodes.iter().map(|n| NodeId(*n)).collect()
    }

    /// A state with every kind of record in every shape: registered, fenced, shutting down
    /// and never-registered nodes; a leaderless partition; an unclean election; an
    /// answered AlterPartition; topics with configs; a deleted topic's used ids.
    fn busy_state() -> ClusterState {
        let config = PartitionConfig { min_insync_replicas: 2, unclean_leader_election: false };
        let unclean = PartitionConfig { min_insync_replicas: 1, unclean_leader_election: true };
        let mut state = ClusterState::new(&ids(&[1, 2, 3, 4, 5]), &[(ClusterPartitionId(0), ids(&[1, 2, 3]), config)]);
        for n in 1..=4 {
            state.apply_command(&Command::RegisterNode { node: NodeId(n), incarnation: Incarnation(u64::from(n)) });
        }
        let partition = state.partition(ClusterPartitionId(0)).unwrap().clone();
        state.apply_command(&Command::AlterPartition(crate::AlterPartition {
            node: partition.leader.unwrap(),
            incarnation: Incarnation(1),
            partition: ClusterPartitionId(0),
            leader_epoch: partition.leader_epoch,
            partition_epoch: partition.partition_epoch,
            isr: ids(&[1]),
            request_id: 9,
        }));
        let topic = |name: &str, assignments: Vec<Vec<NodeId>>, config| Command::SetTopic {
            name: name.to_string(),
            replication_factor: 2,
            configs: vec![
                ("retention.ms".to_string(), "100".to_string()),
                ("cleanup.policy".to_string(), "compact".to_string()),
            ],
            assignments,
            config,
        };
        state.apply_command(&topic("orders", vec![ids(&[2, 3]), ids(&[3, 4])], config));
        state.apply_command(&topic("gone", vec![ids(&[1, 2])], config));
        state.apply_command(&Command::DeleteTopic { name: "gone".to_string() });
        state.apply_command(&topic("risky", vec![ids(&[4, 1])], unclean));
        // orders-0 (n2, n3) moving to (n3, n1): n1 is added, n2 removed.
        let moving = Command::Reassign { partition: ClusterPartitionId(1), target: Some(ids(&[3, 1])) };
        assert!(state.apply_command(&moving).accepted);
        state.apply_command(&Command::ControlledShutdown { node: NodeId(4), incarnation: Incarnation(4) });
        state.apply_command(&Command::FenceNode { node: NodeId(1), incarnation: Incarnation(1) });
        state.apply_command(&Command::ElectPreferred {
            partition: ClusterPartitionId(1),
            partition_epoch: PartitionEpoch(0),
        });
        for (node, after) in [(2, None), (3, None), (2, Some(0))] {
            let command =
                Command::AllocateProducerIds { node: NodeId(node), incarnation: Incarnation(node.into()), after };
            assert!(state.apply_command(&command).accepted);
        }
        for (user, mechanism) in
            [("alice", ScramMechanism::Sha256), ("alice", ScramMechanism::Sha512), ("bob", ScramMechanism::Sha512)]
        {
            let credential = ScramCredential {
                salt: user.as_bytes().to_vec(),
                iterations: 4096,
                stored_key: vec![mechanism.number(); 32],
                server_key: vec![7; 32],
            };
            state.apply_command(&Command::SetScramCredential { user: user.to_string(), mechanism, credential });
        }
        let acl = |name: &str, permission| AclBinding {
            resource_type: 2,
            pattern_type: 4,
            resource_name: name.to_string(),
            principal: "User:bob".to_string(),
            host: "*".to_string(),
            operation: 3,
            permission,
        };
        state.apply_command(&Command::CreateAcls { acls: vec![acl("orders-", 3), acl("orders-secret", 2)] });
        // n2 announced itself with a rack, n6 joined (unknown until it announced), n3 has none.
        for (node, rack) in [(2, Some("rack-a")), (6, None)] {
            let endpoints = crate::state::NodeEndpoints {
                native: format!("127.0.0.{node}:7000"),
                cluster: format!("127.0.0.{node}:7100"),
                rack: rack.map(str::to_string),
            };
            assert!(state.apply_command(&Command::AnnounceNode { node: NodeId(node), endpoints }).accepted);
        }
        // n2 and n4 (shutting down) advertise listeners, n3 none; n4's are kept by its next life.
        let listener =
            |name: &str, host: &str, port| AdvertisedListener { name: name.to_string(), host: host.to_string(), port };
        for (node, listeners) in [
            (2, vec![listener("INTERNAL", "10.0.0.2", 9092), listener("EXTERNAL", "n2.example.com", 9093)]),
            (4, vec![listener("PLAINTEXT", "", 0)]),
        ] {
            let command =
                Command::SetListeners { node: NodeId(node), incarnation: Incarnation(node.into()), listeners };
            assert!(state.apply_command(&command).accepted);
        }
        state
    }

    /// Bytes the endpoint section at the end of `state`'s snapshot takes.
    fn endpoints_section_bytes(state: &ClusterState) -> usize {
        let announced = state.nodes().filter_map(|(_, r)| r.endpoints.as_ref());
        4 + announced
            .map(|e| 4 + 2 + e.native.len() + 2 + e.cluster.len() + 1 + e.rack.as_ref().map_or(0, |r| 2 + r.len()))
            .sum::<usize>()
    }
    /// Bytes the reassignment section (before the endpoint one) of `state`'s snapshot takes.
    fn reassignment_section_bytes(state: &ClusterState) -> usize {
        4 + state.reassignments().map(|(_, m)| 4 + 2 + 4 * m.target.len() + 2 + 4 * m.original.len()).sum::<usize>()
    }

    /// Bytes the listener section (before the reassignment one) of `state`'s snapshot takes.
    fn listener_section_bytes(state: &ClusterState) -> usize {
        4 + state
            .nodes
            .values()
            .filter(|r| !r.listeners.is_empty())
            .map(|r| 4 + 4 + r.listeners.iter().map(|l| 2 + l.name.len() + 2 + l.host.len() + 2).sum::<usize>())
            .sum::<usize>()
    }

    /// Bytes the ACL section at the end of `state`'s snapshot takes.
    fn acl_section_bytes(state: &ClusterState) -> usize {
        4 + state
            .acls
            .iter()
            .map(|a| 2 + 3 * 2 + a.resource_name.len() + a.principal.len() + a.host.len() + 2)
            .sum::<usize>()
    }

    /// Bytes the SCRAM section at the end of `state`'s snapshot takes.
    fn scram_section_bytes(state: &ClusterState) -> usize {
        4 + state
            .scram
            .iter()
            .map(|((user, _), c)| {
                2 + user.len() + 1 + 2 + c.salt.len() + 4 + 2 + c.stored_key.len() + 2 + c.server_key.len()
            })
            .sum::<usize>()
    }

    /// Bytes the producer-id section (before the SCRAM one) of `state`'s snapshot takes.
    fn producer_section_bytes(state: &ClusterState) -> usize {
        8 + 4 + 28 * state.producer_ids.len()
    }

    /// A state decodes to itself and encodes again to the same bytes, including the empty
    /// state; the busy state really has what it claims (so the round trip covers it).
    #[test]
    fn a_state_round_trips_byte_for_byte() {
        let state = busy_state();
        assert!(state.node(NodeId(5)).unwrap().incarnation.is_none());
        assert!(state.node(NodeId(4)).unwrap().shutting_down && state.is_fenced(NodeId(1)));
        assert!(state.partition_record(ClusterPartitionId(0)).unwrap().last_alter.is_some());
        assert!(state.topic("gone").is_none() && state.topic("risky").is_some());
        assert_eq!((state.scram_credentials().len(), state.acls().len()), (3, 2));
        assert_eq!(state.node(NodeId(2)).unwrap().listeners.len(), 2);
        assert!(state.node(NodeId(4)).unwrap().shutting_down && state.node(NodeId(4)).unwrap().listeners.len() == 1);
        assert!(state.partition(ClusterPartitionId(0)).unwrap().leader.is_none(), "n1, the last ISR member, is fenced");
        assert_eq!(state.producer_id_block(NodeId(2)).map(|b| b.first), Some(2 * crate::state::PRODUCER_ID_BLOCK));
        let bytes = state.encode_snapshot();
        let decoded = ClusterState::decode_snapshot(&bytes).unwrap();
        assert_eq!(decoded, state);
        assert_eq!(decoded.encode_snapshot(), bytes);
        assert_eq!(decoded.place(2, 2), state.place(2, 2), "placement reads the same state");
        let empty = ClusterState::default();
        assert_eq!(ClusterState::decode_snapshot(&empty.encode_snapshot()).unwrap(), empty);
    }

    /// Cut, extended, re-versioned or re-tagged bytes, a duplicated node and an absurd
    /// count are refused with an error, never a panic or a large allocation.
    #[test]
    fn malformed_snapshots_are_refused() {
        let state = busy_state();
        let bytes = state.encode_snapshot();
        // A snapshot from before endpoints ends where their section starts, one from before
        // reassignments where theirs does, and so on for listeners, ACLs, SCRAM users and
        // producer ids.
        let before_endpoints = bytes.len() - endpoints_section_bytes(&state);
        let before_moves = before_endpoints - reassignment_section_bytes(&state);
        let before_listeners = before_moves - listener_section_bytes(&state);
        let before_acls = before_listeners - acl_section_bytes(&state);
        let before_users = before_acls - scram_section_bytes(&state);
        let older = before_users - producer_section_bytes(&state);
        let sections = [older, before_users, before_acls, before_listeners, before_moves, before_endpoints];
        for cut in (0..bytes.len()).filter(|cut| !sections.contains(cut)) {
            assert!(ClusterState::decode_snapshot(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let without = ClusterState::decode_snapshot(&bytes[..older]).unwrap();
        assert!(without.producer_id_block(NodeId(2)).is_none() && without.next_producer_id == 0);
        let no_users = ClusterState::decode_snapshot(&bytes[..before_users]).unwrap();
        assert!(no_users.scram_credentials().is_empty() && no_users.producer_id_block(NodeId(2)).is_some());
        let no_acls = ClusterState::decode_snapshot(&bytes[..before_acls]).unwrap();
        assert!(no_acls.acls().is_empty() && no_acls.scram_credentials().len() == 3);
        let no_listeners = ClusterState::decode_snapshot(&bytes[..before_listeners]).unwrap();
        assert!(no_listeners.nodes().all(|(_, r)| r.listeners.is_empty()) && no_listeners.acls().len() == 2);
        let mut expected = state.clone();
        expected.nodes.values_mut().for_each(|r| r.endpoints = None);
        let no_endpoints = ClusterState::decode_snapshot(&bytes[..before_endpoints]).unwrap();
        assert_eq!(no_endpoints, expected, "everything else as it was");
        expected.partitions.values_mut().for_each(|r| r.reassignment = None);
        let no_moves = ClusterState::decode_snapshot(&bytes[..before_moves]).unwrap();
        assert_eq!(no_moves.reassignments().count(), 0);
        assert_eq!(no_moves, expected, "everything else as it was");
        expected.nodes.values_mut().for_each(|r| r.listeners.clear());
        assert_eq!(no_listeners, expected, "everything else as it was");
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(ClusterState::decode_snapshot(&longer).is_err());
        let mut version = bytes.clone();
        version[0] = ENCODING_VERSION + 1;
        assert!(ClusterState::decode_snapshot(&version).is_err());
        let mut tag = bytes.clone();
        tag[1] = 1;
        assert!(ClusterState::decode_snapshot(&tag).is_err());
        // Two nodes, both n1.
        let mut twice = vec![ENCODING_VERSION, TAG_STATE, 0, 0, 0, 0, 0, 0, 0, 2];
        for _ in 0..2 {
            twice.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0]);
        }
        twice.extend_from_slice(&[0; 8]);
        assert!(ClusterState::decode_snapshot(&twice).unwrap_err().what.contains("twice"));
        let absurd = [ENCODING_VERSION, TAG_STATE, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff];
        assert!(ClusterState::decode_snapshot(&absurd).is_err());
        // The listener section naming a node twice, a node the state lacks, or a node
        // with an empty list.
        let section = |entries: &[(u32, usize)]| {
            let mut w = Writer::default();
            w.u32(entries.len() as u32);
            for (node, count) in entries {
                w.u32(*node);
                w.listeners(&vec![AdvertisedListener { name: "A".into(), host: "h".into(), port: 1 }; *count]);
            }
            [&bytes[..before_listeners], &w.0[..]].concat()
        };
        assert!(ClusterState::decode_snapshot(&section(&[(3, 1)])).is_ok());
        let cases =
            [(vec![(3, 1), (3, 2)], "twice"), (vec![(9, 1)], "not in the state"), (vec![(3, 0)], "no listeners")];
        for (entries, what) in cases {
            let e = ClusterState::decode_snapshot(&section(&entries)).unwrap_err();
            assert!(e.what.contains(what), "{entries:?}: {e}");
        }
    }
}
