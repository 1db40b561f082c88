//! A Raft quorum over raft-rs: a replicated log of opaque commands, applied in log order to
//! a `StateMachine`, compacted by snapshots of that state machine. No I/O: what must be
//! durable comes out as a `Persist`, which the caller performs and acknowledges.
//!
//! Guarantees: a command whose `Applied` a voter reports was committed: a majority of
//! voters had it durable first, so it survives the loss of any minority, and every voter
//! applies the same commands in the same order (or takes a snapshot of them: a voter that
//! is behind the leader's first log index gets the leader's snapshot and replaces its
//! state with it). A proposal can be lost when leadership changes before it commits; the
//! proposer learns of success only from its `Applied` (matched by proposal id, unique
//! across the voter's restarts) and retries after a timeout, so commands should be
//! idempotent or carry what makes a retry harmless. Lives on: one thread (one shard) per
//! voter.
//!
//! Driving it: the caller moves `Output::messages` between voters, calls `tick` on a timer
//! and `poll` after every `tick`, `step`, `propose` and `persisted`. A poll's `persist`
//! must be performed (in the order the polls gave them) and acknowledged with
//! `persisted(number)`; meanwhile the quorum may be stepped (raft-rs's asynchronous ready
//! protocol). What may leave at once comes out at once (a leader's appends: Raft lets a
//! leader send entries while it writes them); every other message (votes, append
//! acknowledgements, anything a follower says) is held until every persist up to its poll's
//! was acknowledged, and only persisted entries are applied.
//!
//! Compaction: once the log written since the last snapshot passes
//! `QuorumConfig::log_bytes_max` or `log_entries_max`, the voter snapshots its state
//! machine at its applied index, drops the entries up to it, and its next persist carries
//! the snapshot and a new log segment (the hard state and the entries after the snapshot).
//! Persisting one: the segment is written and synced, then the snapshot installed
//! atomically, then older segments go; a crash in between leaves the old snapshot with its
//! segment, which still holds everything. The bytes are `controller::format`'s.
//!
//! Members: the quorum starts from the voters and learners it is opened with (the same on
//! every member of a new cluster); afterwards the members change one at a time through
//! committed configuration changes (`change_members`: raft's single-server changes, which
//! raft-rs allows only one of in flight). Every member applies them in log order, and a
//! snapshot carries the members at its index, so a restart comes back with the members
//! its log says, not those it was opened with. A member added later (a joining node) opens
//! with no members at all and waits for the leader, which takes a snapshot right after
//! adding it (its state machine cannot be rebuilt from the log: the log starts after the
//! cluster's bootstrap state) and sends it that snapshot. The leader never removes or
//! demotes itself: it hands leadership to a caught-up voter first. A quorum of one voter
//! elects itself when it opens.

use std::collections::{BTreeMap, VecDeque};

use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType, HardState, Message, MessageType, Snapshot,
};
use raft::storage::MemStorage;
use raft::{Config, GetEntriesContext, ProgressState, RaftState, RawNode, SnapshotStatus, StateRole, Storage};

use super::format::{encode_snapshot, push_record, LogContents, KIND_ENTRY, KIND_HARD_STATE, RECORD_HEADER_BYTES};

/// What the quorum orders: applied identically on every voter.
pub trait StateMachine {
    /// Applies one committed command and returns its result. It must be deterministic:
    /// the same commands in the same order give the same state and results everywhere.
    fn apply(&mut self, command: &[u8]) -> Vec<u8>;
    /// The whole state, encoded: what a snapshot holds. Equal states give equal bytes.
    fn snapshot(&self) -> Vec<u8>;
    /// Replaces the state with a snapshot's (one from `snapshot`, possibly another
    /// voter's); refuses bytes that do not decode, leaving the state as it was.
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), String>;
}

/// A committed command, applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// Its position in the log.
    pub index: u64,
    /// This voter's proposal id, when this voter proposed it (in this life or an earlier
    /// one: ids never repeat across restarts, see `Quorum::propose`).
    pub proposal: Option<u64>,
    pub command: Vec<u8>,
    pub result: Vec<u8>,
}

/// A snapshot to install: the file's bytes (`format::encode_snapshot`) and its index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotWrite {
    pub index: u64,
    pub file: Vec<u8>,
}

/// What must be durable before `Quorum::persisted(number)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Persist {
    /// The acknowledgement's number (persists are acknowledged in the order given).
    pub number: u64,
    /// With a snapshot: `records` are the whole new segment that follows it (write and
    /// sync it, then install the snapshot, then drop older segments). Without: `records`
    /// are appended to the current segment.
    pub snapshot: Option<SnapshotWrite>,
    /// Write-ahead log records (`format::push_record`).
    pub records: Vec<u8>,
    /// Sync before acknowledging: entries, a vote or a term are in it (a persist holding
    /// only a newer commit index needs none: a lower one after a crash is safe).
    pub sync: bool,
}

/// What a `poll` produced.
#[derive(Debug, Default)]
pub struct Output {
    /// Raft messages to deliver now: (voter id, encoded message).
    pub messages: Vec<(u64, Vec<u8>)>,
    /// Commands committed and applied, in log order.
    pub applied: Vec<Applied>,
    /// The state was replaced by a snapshot from the leader at this index (the commands up
    /// to it are not reported one by one).
    pub restored: Option<u64>,
    /// Writes to perform, then acknowledge with `persisted`.
    pub persist: Option<Persist>,
    /// A configuration change was applied: the members are now `Quorum::members`.
    pub members_changed: bool,
}

/// The quorum's members: those that vote and those that only follow the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Members {
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
}

impl Members {
    #[must_use]
    pub fn contains(&self, id: u64) -> bool {
        self.voters.contains(&id) || self.learners.contains(&id)
    }
}

/// One change of the members (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberChange {
    /// A new member that follows the log without voting (a node joining the cluster).
    AddLearner(u64),
    /// A learner that has caught up becomes a voter.
    Promote(u64),
    /// A voter becomes a learner (it keeps following the log).
    Demote(u64),
    /// A learner leaves the quorum (a node removed from the cluster).
    Remove(u64),
}

#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    #[error("not the controller leader (the leader is {leader:?})")]
    NotLeader { leader: Option<u64> },
    #[error("malformed raft message: {0}")]
    Malformed(String),
    #[error("controller log: {0}")]
    Log(String),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    /// A change of the members that is refused (it would not change them, or not safely).
    #[error("{0}")]
    Members(String),
    /// A change of the members that cannot be made yet: ask again shortly.
    #[error("{0}")]
    MembersBusy(String),
    /// The change would remove or demote the leader: leadership moves to `to` first; ask
    /// the new leader again.
    #[error("this voter leads the controller quorum: leadership is moving to {to} first, ask again there")]
    LeaderMoving { to: u64 },
}

/// Ticks without a leader's heartbeat before a voter stands for election (randomized by
/// raft-rs between this and twice this), and between a leader's heartbeats.
pub const ELECTION_TICKS: usize = 10;
pub const HEARTBEAT_TICKS: usize = 2;

/// The log written since the last snapshot that makes a voter take the next one. Every
/// entry since the snapshot is also in memory (raft-rs's `MemStorage`) and is read back at
/// start, so this bounds both; a snapshot costs the state machine's size (about 50 bytes a
/// partition: a 100,000-partition cluster's is ~5 MiB), written once per this many bytes of
/// log, so the writes it adds stay a fraction of the log's.
pub const CONTROLLER_LOG_BYTES_MAX: u64 = 16 << 20;
/// The same in entries: an entry costs raft-rs ~150 bytes of memory besides its data, and
/// a replay parses each one.
pub const CONTROLLER_LOG_ENTRIES_MAX: u64 = 65_536;
/// The largest state machine encoding a snapshot holds. Larger, the voter does not compact
/// (and says so): a snapshot travels to a lagging voter in one message, which the node's
/// transport bounds (`cluster::agent` asserts the two fit).
pub const SNAPSHOT_BYTES_MAX: usize = 32 << 20;
/// Ticks after sending a snapshot without the follower's answer before it is sent again
/// (raft-rs sends nothing more to a follower while its snapshot is in flight, and the
/// transport may lose it).
pub const SNAPSHOT_RETRY_TICKS: u64 = 2 * ELECTION_TICKS as u64;

/// When a voter compacts its log (see `CONTROLLER_LOG_BYTES_MAX`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuorumConfig {
    pub log_bytes_max: u64,
    pub log_entries_max: u64,
}

impl Default for QuorumConfig {
    fn default() -> QuorumConfig {
        QuorumConfig { log_bytes_max: CONTROLLER_LOG_BYTES_MAX, log_entries_max: CONTROLLER_LOG_ENTRIES_MAX }
    }
}

fn encode(message: &impl protobuf::Message) -> Result<Vec<u8>, QuorumError> {
    message.write_to_bytes().map_err(|e| QuorumError::Malformed(e.to_string()))
}

/// A proposal's context: the proposer's id and its proposal id.
fn context(proposer: u64, proposal: u64) -> Vec<u8> {
    let mut c = proposer.to_be_bytes().to_vec();
    c.extend_from_slice(&proposal.to_be_bytes());
    c
}

fn parse_context(bytes: &[u8]) -> Option<(u64, u64)> {
    let proposer = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
    let proposal = u64::from_be_bytes(bytes.get(8..16)?.try_into().ok()?);
    Some((proposer, proposal))
}

/// Sends raft-rs's log lines to `tracing` (debug and below: it is chatty).
struct TracingDrain;

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record<'_>, _: &slog::OwnedKVList) -> Result<(), slog::Never> {
        match record.level() {
            slog::Level::Critical | slog::Level::Error => tracing::error!("raft: {}", record.msg()),
            slog::Level::Warning => tracing::warn!("raft: {}", record.msg()),
            slog::Level::Info => tracing::debug!("raft: {}", record.msg()),
            _ => tracing::trace!("raft: {}", record.msg()),
        }
        Ok(())
    }
}

/// raft-rs's in-memory log, plus the latest snapshot with its data: raft-rs sends that one
/// to a follower behind the log's first index (`MemStorage` would send an empty one).
struct QuorumStore {
    mem: MemStorage,
    snapshot: Snapshot,
}

impl QuorumStore {
    fn snapshot_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }
}

impl Storage for QuorumStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.mem.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.mem.entries(low, high, max_size, context)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.mem.term(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        self.mem.first_index()
    }

    fn last_index(&self) -> raft::Result<u64> {
        self.mem.last_index()
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let index = self.snapshot_index();
        if index == 0 || index < request_index {
            return Err(raft::Error::Store(raft::StorageError::SnapshotTemporarilyUnavailable));
        }
        Ok(self.snapshot.clone())
    }
}

/// The writes of the poll in progress.
#[derive(Default)]
struct Pending {
    records: Vec<u8>,
    entries: u64,
    sync: bool,
    snapshot: Option<SnapshotWrite>,
    /// The snapshot is the leader's, restored in this poll, at this index.
    restored: Option<u64>,
}

impl Pending {
    fn push(&mut self, kind: u8, payload: &[u8]) {
        push_record(&mut self.records, kind, payload);
        if kind == KIND_ENTRY {
            self.entries += 1;
        }
    }

    fn is_empty(&self) -> bool {
        self.records.is_empty() && self.snapshot.is_none()
    }
}

/// One voter of the quorum.
pub struct Quorum<S> {
    id: u64,
    node: RawNode<QuorumStore>,
    state: S,
    config: QuorumConfig,
    /// The last proposal id handed out: the term it was made in (high 32 bits) and a
    /// counter within the term (low 32 bits).
    last_proposal: u64,
    /// The last index applied to `state` (or restored into it).
    applied: u64,
    pending: Pending,
    /// raft-rs's number of the last ready taken.
    last_ready: u64,
    /// The number of the last `Persist` handed out, and the last acknowledged (or, with
    /// none outstanding, the last ready: a ready with nothing to write is as durable as
    /// the ones before it).
    issued: u64,
    durable: u64,
    /// Messages that may leave once the persist of their number is acknowledged.
    held: VecDeque<(u64, Vec<Message>)>,
    /// A snapshot from the leader whose persist is outstanding: (persist number, index).
    /// raft-rs may count it applied only once it is durable.
    restoring: Option<(u64, u64)>,
    /// What the current log segment holds (the compaction trigger).
    segment_bytes: u64,
    segment_entries: u64,
    ticks: u64,
    /// Snapshots in flight to followers: voter -> the tick it was sent at.
    snapshots_sent: BTreeMap<u64, u64>,
    /// A snapshot over `SNAPSHOT_BYTES_MAX` was refused (said once).
    oversized_said: bool,
    /// A learner was added: take a snapshot at the next poll, whatever the log's size
    /// (the new member can only start from one).
    snapshot_wanted: bool,
}

impl<S: StateMachine> Quorum<S> {
    /// Opens member `id` (one of `voters`, or of `learners`: members that receive and
    /// apply the log but never vote or lead) from what its log holds: `state` is replaced
    /// by the snapshot's, if there is one, and every committed command after it is applied
    /// again by the next `poll`s.
    pub fn open(
        id: u64,
        voters: &[u64],
        learners: &[u64],
        log: LogContents,
        state: S,
        config: QuorumConfig,
    ) -> Result<Quorum<S>, QuorumError> {
        Quorum::open_with(id, voters, learners, log, state, config, None)
    }

    /// Simulations only: `open` with a fixed election timeout of `election_ticks` (raft-rs
    /// draws it from the thread's random generator otherwise, which a seeded replay cannot
    /// reproduce; the simulator draws a different one per voter from its seed).
    #[cfg(test)]
    pub(crate) fn open_for_simulation(
        id: u64,
        voters: &[u64],
        log: LogContents,
        state: S,
        config: QuorumConfig,
        election_ticks: usize,
    ) -> Result<Quorum<S>, QuorumError> {
        Quorum::open_with(id, voters, &[], log, state, config, Some(election_ticks))
    }

    fn open_with(
        id: u64,
        voters: &[u64],
        learners: &[u64],
        log: LogContents,
        mut state: S,
        config: QuorumConfig,
        fixed_election_ticks: Option<usize>,
    ) -> Result<Quorum<S>, QuorumError> {
        let members = ConfState::from((voters.to_vec(), learners.to_vec()));
        let mem = MemStorage::new_with_conf_state(members.clone());
        let mut snapshot = Snapshot::default();
        if let Some(mut stored) = log.snapshot {
            let index = stored.get_metadata().index;
            state
                .restore(stored.get_data())
                .map_err(|e| QuorumError::Log(format!("the snapshot at index {index}: {e}")))?;
            // The members are those at the snapshot's index (older snapshots, taken before
            // members could change, may hold none: the configured ones).
            if stored.get_metadata().get_conf_state().voters.is_empty() {
                stored.mut_metadata().set_conf_state(members);
            }
            mem.wl().apply_snapshot(stored.clone())?;
            snapshot = stored;
        }
        let snapshot_index = snapshot.get_metadata().index;
        let (mut segment_bytes, mut segment_entries) = (0u64, 0u64);
        for (kind, payload) in log.records {
            segment_bytes += (RECORD_HEADER_BYTES + payload.len()) as u64;
            if kind == KIND_ENTRY {
                segment_entries += 1;
                let entry = Entry::parse_from_bytes(&payload).map_err(|e| QuorumError::Log(e.to_string()))?;
                if entry.index <= snapshot_index {
                    continue; // In the snapshot already.
                }
                let last = mem.last_index()?;
                if entry.index > last + 1 {
                    return Err(QuorumError::Log(format!("entry {} follows entry {last}: a gap", entry.index)));
                }
                mem.wl().append(&[entry])?;
            } else {
                assert_eq!(kind, KIND_HARD_STATE, "format::scan_records returns known kinds only");
                let mut hs = HardState::parse_from_bytes(&payload).map_err(|e| QuorumError::Log(e.to_string()))?;
                hs.commit = hs.commit.max(snapshot_index);
                mem.wl().set_hardstate(hs);
            }
        }
        let mut raft_config = Config {
            id,
            election_tick: ELECTION_TICKS,
            heartbeat_tick: HEARTBEAT_TICKS,
            pre_vote: true,
            check_quorum: true,
            ..Config::default()
        };
        if let Some(ticks) = fixed_election_ticks {
            // raft-rs draws from [min, max): a range of one is fixed.
            raft_config.min_election_tick = ticks.max(ELECTION_TICKS);
            raft_config.max_election_tick = raft_config.min_election_tick + 1;
        }
        raft_config.validate()?;
        let logger = slog::Logger::root(TracingDrain, slog::o!());
        let mut node = RawNode::new(&raft_config, QuorumStore { mem, snapshot }, &logger)?;
        if voters == [id] {
            // Alone, it needs nobody's vote: no reason to wait out an election timeout.
            node.campaign()?;
        }
        Ok(Quorum {
            id,
            node,
            state,
            config,
            last_proposal: 0,
            applied: snapshot_index,
            pending: Pending::default(),
            last_ready: 0,
            issued: 0,
            durable: 0,
            held: VecDeque::new(),
            restoring: None,
            segment_bytes,
            segment_entries,
            ticks: 0,
            snapshots_sent: BTreeMap::new(),
            oversized_said: false,
            snapshot_wanted: false,
        })
    }

    #[must_use]
    pub fn id(&self) -> u64 {
        self.id
    }

    #[must_use]
    pub fn state(&self) -> &S {
        &self.state
    }

    /// The Raft term this voter is in.
    #[must_use]
    pub fn term(&self) -> u64 {
        self.node.raft.term
    }

    /// The index of the latest snapshot (0: none yet); the log before it is gone.
    #[must_use]
    pub fn snapshot_index(&self) -> u64 {
        self.node.store().snapshot_index()
    }

    /// The last index applied to the state machine (or restored into it).
    #[must_use]
    pub fn applied_index(&self) -> u64 {
        self.applied
    }

    /// Leads, and has applied every command committed before its term (its term's first
    /// entry committed and everything up to it applied): its state is the latest committed
    /// one, so decisions may be made on it (KRaft's leader waits the same way).
    #[must_use]
    pub fn leader_ready(&self) -> bool {
        let raft = &self.node.raft;
        let log = &raft.raft_log;
        raft.state == StateRole::Leader
            && log.applied >= log.committed
            && log.term(log.committed).is_ok_and(|term| term == raft.term)
    }

    /// The leader this voter knows of.
    #[must_use]
    pub fn leader(&self) -> Option<u64> {
        let leader = self.node.raft.leader_id;
        (leader != raft::INVALID_ID).then_some(leader)
    }

    #[must_use]
    pub fn is_leader(&self) -> bool {
        self.node.raft.state == StateRole::Leader
    }

    /// The members, as this member last applied them.
    #[must_use]
    pub fn members(&self) -> Members {
        let cs = self.node.raft.prs().conf().to_conf_state();
        let (mut voters, mut learners) = (cs.voters, cs.learners);
        voters.sort_unstable();
        learners.sort_unstable();
        Members { voters, learners }
    }

    /// Proposes one change of the members (on the leader, with every command before its
    /// term applied). It takes effect once committed and applied (`Output::members_changed`);
    /// raft-rs drops a change proposed while another is in flight, so callers check
    /// `members` afterwards and ask again. Refused: a change with nothing to do, a
    /// promotion of a learner that has not caught up with the log, the removal of a voter
    /// (demote it first), the last voter's demotion; the leader's own demotion moves
    /// leadership to the most caught-up voter first (`QuorumError::LeaderMoving`).
    pub fn change_members(&mut self, change: MemberChange) -> Result<(), QuorumError> {
        if !self.leader_ready() {
            return Err(QuorumError::NotLeader { leader: self.leader() });
        }
        let raft = &self.node.raft;
        if raft.pending_conf_index > raft.raft_log.applied {
            return Err(QuorumError::MembersBusy("another change of the controller quorum is in progress".into()));
        }
        let members = self.members();
        let (id, kind) = match change {
            MemberChange::AddLearner(id) => {
                if members.contains(id) {
                    return Err(QuorumError::Members(format!("{id} is a member already")));
                }
                (id, ConfChangeType::AddLearnerNode)
            }
            MemberChange::Promote(id) => {
                if !members.learners.contains(&id) {
                    return Err(QuorumError::Members(format!("{id} is not a learner of the controller quorum")));
                }
                let matched = raft.prs().get(id).map_or(0, |p| p.matched);
                if matched < raft.raft_log.committed {
                    return Err(QuorumError::MembersBusy(format!(
                        "{id} has not caught up with the controller log yet ({matched} of {} entries)",
                        raft.raft_log.committed
                    )));
                }
                (id, ConfChangeType::AddNode)
            }
            MemberChange::Demote(id) => {
                if !members.voters.contains(&id) {
                    return Err(QuorumError::Members(format!("{id} is not a voter of the controller quorum")));
                }
                if members.voters.len() == 1 {
                    return Err(QuorumError::Members(format!("{id} is the only voter")));
                }
                if id == self.id {
                    let to = members
                        .voters
                        .iter()
                        .filter(|v| **v != self.id)
                        .max_by_key(|v| raft.prs().get(**v).map_or(0, |p| p.matched))
                        .copied()
                        .unwrap_or(self.id);
                    self.node.transfer_leader(to);
                    return Err(QuorumError::LeaderMoving { to });
                }
                (id, ConfChangeType::AddLearnerNode)
            }
            MemberChange::Remove(id) => {
                if members.voters.contains(&id) {
                    return Err(QuorumError::Members(format!("{id} is a voter: demote it first")));
                }
                if !members.learners.contains(&id) {
                    return Err(QuorumError::Members(format!("{id} is not a member of the controller quorum")));
                }
                (id, ConfChangeType::RemoveNode)
            }
        };
        let mut cc = ConfChangeV2::default();
        let mut single = raft::eraftpb::ConfChangeSingle { node_id: id, ..Default::default() };
        single.set_change_type(kind);
        cc.mut_changes().push(single);
        self.node.propose_conf_change(Vec::new(), cc)?;
        Ok(())
    }

    /// Advances the voter's clock by one tick.
    pub fn tick(&mut self) {
        self.ticks += 1;
        if self.restoring.is_some() {
            // raft-rs counts the leader's snapshot applied only once it is durable, and
            // cannot stand for election before that (it reads the log from its applied
            // index, which the snapshot dropped); the leader it came from is alive anyway.
            return;
        }
        self.node.tick();
        let ticks = self.ticks;
        let stale: Vec<u64> = self
            .snapshots_sent
            .iter()
            .filter(|(_, at)| ticks - **at >= SNAPSHOT_RETRY_TICKS)
            .map(|(to, _)| *to)
            .collect();
        for to in stale {
            self.snapshots_sent.remove(&to);
            if self.node.raft.prs().get(to).is_some_and(|pr| pr.state == ProgressState::Snapshot) {
                // Lost on the way (or its answer was): raft-rs sends it again once told.
                self.node.report_snapshot(to, SnapshotStatus::Failure);
            }
        }
    }

    /// Takes a message from another voter.
    pub fn step(&mut self, bytes: &[u8]) -> Result<(), QuorumError> {
        let message = Message::parse_from_bytes(bytes).map_err(|e| QuorumError::Malformed(e.to_string()))?;
        if self.restoring.is_some() && message.get_msg_type() == MessageType::MsgTimeoutNow {
            return Ok(()); // No election before the snapshot is durable (see `tick`).
        }
        self.node.step(message)?;
        Ok(())
    }

    /// Proposes a command (on the leader) and returns its proposal id, which the
    /// command's `Applied` carries once it is committed. Ids are the term (high 32 bits)
    /// and a counter within it: a voter leads a term at most once, even across restarts,
    /// so an id never names two proposals (a restarted voter re-applies entries it
    /// proposed in an earlier life, with their earlier ids).
    pub fn propose(&mut self, command: Vec<u8>) -> Result<u64, QuorumError> {
        if !self.is_leader() {
            return Err(QuorumError::NotLeader { leader: self.leader() });
        }
        let term = self.term();
        assert!(term < 1 << 32, "raft term {term} beyond the proposal id's 32 bits");
        let term_base = term << 32;
        let proposal = if self.last_proposal >= term_base { self.last_proposal + 1 } else { term_base + 1 };
        assert!(proposal < term_base + (1 << 32), "more than 2^32 proposals in term {term}");
        self.node.propose(context(self.id, proposal), command)?;
        self.last_proposal = proposal;
        Ok(proposal)
    }

    /// The persist numbered `number` (and every one before it) is durable.
    pub fn persisted(&mut self, number: u64) {
        assert!(
            number > self.durable && number <= self.issued,
            "persist {number} acknowledged, but {} was the last acknowledged and {} the last handed out",
            self.durable,
            self.issued
        );
        self.durable = number;
        self.node.on_persist_ready(number);
        if let Some((at, index)) = self.restoring {
            if number >= at {
                self.restoring = None;
                self.node.advance_apply_to(index);
            }
        }
    }

    /// Takes what raft-rs decided: applies what committed and is durable here, collects
    /// what must be persisted, and returns the messages that may leave now. Call it after
    /// every `tick`, `step`, `propose` and `persisted`.
    pub fn poll(&mut self) -> Result<Output, QuorumError> {
        let mut out = Output::default();
        let mut after_persist = Vec::new();
        while self.node.has_ready() {
            let mut ready = self.node.ready();
            self.last_ready = ready.number();
            self.send(ready.take_messages(), &mut out)?;
            if !ready.snapshot().is_empty() {
                self.restore(ready.snapshot().clone(), &mut out)?;
            }
            self.apply(ready.take_committed_entries(), &mut out);
            if !ready.entries().is_empty() {
                for entry in ready.entries() {
                    self.pending.push(KIND_ENTRY, &encode(entry)?);
                }
                self.node.mut_store().mem.wl().append(ready.entries())?;
            }
            if let Some(hs) = ready.hs() {
                self.pending.push(KIND_HARD_STATE, &encode(hs)?);
                self.node.mut_store().mem.wl().set_hardstate(hs.clone());
            }
            self.pending.sync |= ready.must_sync();
            after_persist.extend(ready.take_persisted_messages());
            // raft-rs reads what this ready wrote from the store; it becomes durable later.
            self.node.advance_append_async(ready);
        }
        self.maybe_compact()?;
        if !self.pending.is_empty() {
            out.persist = Some(self.issue());
        } else if self.durable == self.issued && self.last_ready > self.durable {
            self.node.on_persist_ready(self.last_ready);
            self.durable = self.last_ready;
            self.issued = self.last_ready;
        }
        if !after_persist.is_empty() {
            self.held.push_back((self.issued, after_persist));
        }
        while self.held.front().is_some_and(|(number, _)| *number <= self.durable) {
            if let Some((_, messages)) = self.held.pop_front() {
                self.send(messages, &mut out)?;
            }
        }
        Ok(out)
    }

    fn issue(&mut self) -> Persist {
        let pending = std::mem::take(&mut self.pending);
        let number = self.last_ready;
        assert!(number > self.issued, "persist {number} after {} was handed out", self.issued);
        self.issued = number;
        if let Some(index) = pending.restored {
            self.restoring = Some((number, index));
        }
        if pending.snapshot.is_some() {
            self.segment_bytes = 0;
            self.segment_entries = 0;
        }
        self.segment_bytes += pending.records.len() as u64;
        self.segment_entries += pending.entries;
        Persist { number, snapshot: pending.snapshot, records: pending.records, sync: pending.sync }
    }

    fn send(&mut self, messages: Vec<Message>, out: &mut Output) -> Result<(), QuorumError> {
        for m in messages {
            if m.get_msg_type() == MessageType::MsgSnapshot {
                self.snapshots_sent.insert(m.to, self.ticks);
            }
            out.messages.push((m.to, encode(&m)?));
        }
        Ok(())
    }

    fn apply(&mut self, entries: Vec<Entry>, out: &mut Output) {
        let Some(last) = entries.last().map(|e| e.index) else { return };
        for entry in entries {
            if entry.get_entry_type() != EntryType::EntryNormal {
                self.apply_conf_change(&entry, out);
                continue;
            }
            // Empty entries are the no-ops a new leader appends.
            if entry.data.is_empty() {
                continue;
            }
            let result = self.state.apply(&entry.data);
            let proposal = parse_context(&entry.context).filter(|(p, _)| *p == self.id).map(|(_, id)| id);
            out.applied.push(Applied { index: entry.index, proposal, command: entry.data.to_vec(), result });
        }
        self.applied = last;
        self.node.advance_apply_to(last);
    }

    /// Applies a committed change of the members (every member does, in log order). One
    /// raft-rs refuses is refused on every member alike.
    fn apply_conf_change(&mut self, entry: &Entry, out: &mut Output) {
        let before = self.members();
        let changed = match entry.get_entry_type() {
            EntryType::EntryConfChangeV2 => ConfChangeV2::parse_from_bytes(&entry.data)
                .map_err(|e| e.to_string())
                .and_then(|cc| self.node.apply_conf_change(&cc).map_err(|e| e.to_string())),
            _ => ConfChange::parse_from_bytes(&entry.data)
                .map_err(|e| e.to_string())
                .and_then(|cc| self.node.apply_conf_change(&cc).map_err(|e| e.to_string())),
        };
        match changed {
            Ok(cs) => {
                tracing::info!(
                    "controller member {}: the quorum's voters are now {:?}, its learners {:?}",
                    self.id,
                    cs.voters,
                    cs.learners
                );
                let added = cs.learners.iter().any(|l| !before.contains(*l));
                self.node.mut_store().mem.wl().set_conf_state(cs);
                self.snapshot_wanted |= added && self.is_leader();
                out.members_changed = true;
            }
            Err(e) => tracing::error!("controller member {}: a configuration change is refused: {e}", self.id),
        }
    }

    /// The leader's snapshot replaces the state and the log; the log restarts after it.
    fn restore(&mut self, snapshot: Snapshot, out: &mut Output) -> Result<(), QuorumError> {
        let index = snapshot.get_metadata().index;
        assert!(index > self.node.store().snapshot_index(), "raft-rs restores only snapshots past the log's");
        self.state
            .restore(snapshot.get_data())
            .map_err(|e| QuorumError::Malformed(format!("the leader's snapshot at index {index}: {e}")))?;
        let store = self.node.mut_store();
        store.mem.wl().apply_snapshot(snapshot.clone())?;
        let file = encode_snapshot(&snapshot);
        store.snapshot = snapshot;
        self.applied = index;
        out.restored = Some(index);
        // What this poll wrote so far was for the old segment, and the snapshot supersedes
        // its entries; the hard state carries its votes and terms into the new one.
        let hs = store.mem.rl().hard_state().clone();
        self.pending = Pending {
            sync: true,
            snapshot: Some(SnapshotWrite { index, file }),
            restored: Some(index),
            ..Pending::default()
        };
        self.pending.push(KIND_HARD_STATE, &encode(&hs)?);
        Ok(())
    }

    /// Takes a snapshot at the applied index once the segment passed its limits.
    fn maybe_compact(&mut self) -> Result<(), QuorumError> {
        let bytes = self.segment_bytes + self.pending.records.len() as u64;
        let entries = self.segment_entries + self.pending.entries;
        let over = bytes > self.config.log_bytes_max || entries > self.config.log_entries_max || self.snapshot_wanted;
        let index = self.applied;
        if !over || self.restoring.is_some() || self.pending.snapshot.is_some() || index <= self.snapshot_index() {
            return Ok(());
        }
        self.snapshot_wanted = false;
        let data = self.state.snapshot();
        if data.len() > SNAPSHOT_BYTES_MAX {
            if !std::mem::replace(&mut self.oversized_said, true) {
                tracing::error!(
                    "controller voter {}: the cluster state takes {} bytes, over the {SNAPSHOT_BYTES_MAX} a snapshot \
                     holds; its log is no longer compacted",
                    self.id,
                    data.len()
                );
            }
            return Ok(());
        }
        let store = self.node.mut_store();
        let term = store.term(index)?;
        let mut snapshot = Snapshot::default();
        let meta = snapshot.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(store.mem.initial_state()?.conf_state);
        snapshot.set_data(data.into());
        // raft-rs keeps the entry at `index` as the log's first (its term is needed to
        // match the next append); the snapshot is what a voter behind it gets.
        store.mem.wl().compact(index)?;
        let last = store.mem.last_index()?;
        let after = if last > index {
            store.mem.entries(index + 1, last + 1, None, GetEntriesContext::empty(false))?
        } else {
            Vec::new()
        };
        let hs = store.mem.rl().hard_state().clone();
        let file = encode_snapshot(&snapshot);
        store.snapshot = snapshot;
        let mut pending = Pending { sync: true, snapshot: Some(SnapshotWrite { index, file }), ..Pending::default() };
        pending.push(KIND_HARD_STATE, &encode(&hs)?);
        for entry in &after {
            pending.push(KIND_ENTRY, &encode(entry)?);
        }
        tracing::debug!(
            "controller voter {} compacts its log at index {index} ({bytes} bytes, {entries} entries since the last \
             snapshot; {} entries follow it)",
            self.id,
            after.len()
        );
        self.pending = pending;
        Ok(())
    }
}
