//! A Raft quorum over raft-rs: a replicated log of opaque commands, durable in a
//! write-ahead log per voter, applied in log order to a `StateMachine`.
//!
//! Guarantees: a command whose `Applied` a voter reports was committed: a majority of
//! voters had it on disk (fsync) first, so it survives the loss of any minority, and
//! every voter applies the same commands in the same order. A proposal can be lost when
//! leadership changes before it commits; the proposer learns of success only from its
//! `Applied` (matched by proposal id, unique across the voter's restarts) and retries
//! after a timeout, so commands should be idempotent or carry what makes a retry
//! harmless. No I/O but the write-ahead log: the
//! caller moves `Output::messages` between voters, calls `tick` on a timer and `poll`
//! after every `tick`, `step` and `propose`. Lives on: one thread (one shard) per voter.
//!
//! Write-ahead log (`raft.wal` in the voter's directory): records of
//! `kind u8, length u32, crc32c u32, protobuf bytes` (kind 1 an entry, 2 the hard
//! state), appended and fsynced before the messages that depend on them leave. Opening
//! replays it into raft-rs's `MemStorage`; a torn last record (never acknowledged,
//! since the fsync did not complete) is cut off. The log is not compacted yet and the
//! voters are fixed at start (no membership changes).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, EntryType, HardState, Message};
use raft::storage::MemStorage;
use raft::{Config, RawNode, StateRole};

/// What the quorum orders: applied identically on every voter.
pub trait StateMachine {
    /// Applies one committed command and returns its result. It must be deterministic:
    /// the same commands in the same order give the same state and results everywhere.
    fn apply(&mut self, command: &[u8]) -> Vec<u8>;
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

/// What a `poll` produced.
#[derive(Debug, Default)]
pub struct Output {
    /// Raft messages to deliver: (voter id, encoded message).
    pub messages: Vec<(u64, Vec<u8>)>,
    /// Commands committed and applied, in log order.
    pub applied: Vec<Applied>,
}

#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    #[error("not the controller leader (the leader is {leader:?})")]
    NotLeader { leader: Option<u64> },
    #[error("malformed raft message: {0}")]
    Malformed(String),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error("controller log: {0}")]
    Io(#[from] io::Error),
}

/// Ticks without a leader's heartbeat before a voter stands for election (randomized by
/// raft-rs between this and twice this), and between a leader's heartbeats.
pub const ELECTION_TICKS: usize = 10;
pub const HEARTBEAT_TICKS: usize = 2;

const KIND_ENTRY: u8 = 1;
const KIND_HARD_STATE: u8 = 2;
const RECORD_HEADER_BYTES: usize = 9;

/// A write-ahead log record: its kind and payload.
type Record = (u8, Vec<u8>);

/// The voter's write-ahead log.
struct Wal {
    file: File,
    pending: Vec<u8>,
}

impl Wal {
    /// Opens (creating) the log and returns it with its records, cutting a torn tail.
    fn open(dir: &Path) -> io::Result<(Wal, Vec<Record>)> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("raft.wal");
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(&path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let mut records = Vec::new();
        let mut at = 0usize;
        while let Some(header) = bytes.get(at..at + RECORD_HEADER_BYTES) {
            let kind = header[0];
            let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
            let crc = u32::from_be_bytes([header[5], header[6], header[7], header[8]]);
            let start = at + RECORD_HEADER_BYTES;
            let Some(payload) = bytes.get(start..start + length) else { break };
            if crc32c::crc32c(payload) != crc || !matches!(kind, KIND_ENTRY | KIND_HARD_STATE) {
                break;
            }
            records.push((kind, payload.to_vec()));
            at = start + length;
        }
        if at < bytes.len() {
            tracing::warn!(path = %path.display(), valid = at, found = bytes.len(), "cutting a torn controller log tail");
            file.set_len(at as u64)?;
            file.sync_all()?;
        }
        Ok((Wal { file, pending: Vec::new() }, records))
    }

    fn push(&mut self, kind: u8, payload: &[u8]) {
        self.pending.push(kind);
        self.pending.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        self.pending.extend_from_slice(&crc32c::crc32c(payload).to_be_bytes());
        self.pending.extend_from_slice(payload);
    }

    fn flush(&mut self, sync: bool) -> io::Result<()> {
        if !self.pending.is_empty() {
            self.file.write_all(&self.pending)?;
            self.pending.clear();
        }
        if sync {
            self.file.sync_data()?;
        }
        Ok(())
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

/// One voter of the quorum.
pub struct Quorum<S> {
    id: u64,
    node: RawNode<MemStorage>,
    wal: Wal,
    state: S,
    /// The last proposal id handed out: the term it was made in (high 32 bits) and a
    /// counter within the term (low 32 bits).
    last_proposal: u64,
    /// fsync the write-ahead log (off only in simulations, whose crashes keep every write).
    sync: bool,
}

impl<S: StateMachine> Quorum<S> {
    /// Opens member `id` (one of `voters`, or of `learners`: members that receive and
    /// apply the log but never vote or lead) with its log in `dir`, replaying what it
    /// holds; every committed command is applied again to `state` by the next `poll`s.
    pub fn open(id: u64, voters: &[u64], learners: &[u64], dir: &Path, state: S) -> Result<Quorum<S>, QuorumError> {
        Quorum::open_with(id, voters, learners, dir, state, None)
    }

    /// Simulations only: `open` without fsync (a simulated crash drops the voter but keeps
    /// every byte written) and with a fixed election timeout of `election_ticks` (raft-rs
    /// draws it from the thread's random generator otherwise, which a seeded replay
    /// cannot reproduce; the simulator draws a different one per voter from its seed).
    #[cfg(test)]
    pub(crate) fn open_for_simulation(
        id: u64,
        voters: &[u64],
        dir: &Path,
        state: S,
        election_ticks: usize,
    ) -> Result<Quorum<S>, QuorumError> {
        let mut quorum = Quorum::open_with(id, voters, &[], dir, state, Some(election_ticks))?;
        quorum.sync = false;
        Ok(quorum)
    }

    fn open_with(
        id: u64,
        voters: &[u64],
        learners: &[u64],
        dir: &Path,
        state: S,
        fixed_election_ticks: Option<usize>,
    ) -> Result<Quorum<S>, QuorumError> {
        let (wal, records) = Wal::open(dir)?;
        let storage = MemStorage::new_with_conf_state(ConfState::from((voters.to_vec(), learners.to_vec())));
        {
            let mut core = storage.wl();
            for (kind, payload) in records {
                if kind == KIND_ENTRY {
                    let entry = Entry::parse_from_bytes(&payload).map_err(|e| QuorumError::Malformed(e.to_string()))?;
                    core.append(&[entry])?;
                } else {
                    let hs =
                        HardState::parse_from_bytes(&payload).map_err(|e| QuorumError::Malformed(e.to_string()))?;
                    core.set_hardstate(hs);
                }
            }
        }
        let mut config = Config {
            id,
            election_tick: ELECTION_TICKS,
            heartbeat_tick: HEARTBEAT_TICKS,
            pre_vote: true,
            check_quorum: true,
            ..Config::default()
        };
        if let Some(ticks) = fixed_election_ticks {
            // raft-rs draws from [min, max): a range of one is fixed.
            config.min_election_tick = ticks.max(ELECTION_TICKS);
            config.max_election_tick = config.min_election_tick + 1;
        }
        config.validate()?;
        let logger = slog::Logger::root(TracingDrain, slog::o!());
        let node = RawNode::new(&config, storage, &logger)?;
        Ok(Quorum { id, node, wal, state, last_proposal: 0, sync: true })
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

    /// Advances the voter's clock by one tick.
    pub fn tick(&mut self) {
        self.node.tick();
    }

    /// Takes a message from another voter.
    pub fn step(&mut self, bytes: &[u8]) -> Result<(), QuorumError> {
        let message = Message::parse_from_bytes(bytes).map_err(|e| QuorumError::Malformed(e.to_string()))?;
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

    /// Persists what raft-rs decided, applies what committed, and returns the messages to
    /// send. Call it after every `tick`, `step` and `propose`.
    pub fn poll(&mut self) -> Result<Output, QuorumError> {
        let mut out = Output::default();
        while self.node.has_ready() {
            let mut ready = self.node.ready();
            for m in ready.take_messages() {
                out.messages.push((m.to, encode(&m)?));
            }
            self.apply(ready.take_committed_entries(), &mut out);
            if !ready.entries().is_empty() {
                for entry in ready.entries() {
                    self.wal.push(KIND_ENTRY, &encode(entry)?);
                }
                self.node.mut_store().wl().append(ready.entries())?;
            }
            if let Some(hs) = ready.hs() {
                self.wal.push(KIND_HARD_STATE, &encode(hs)?);
                self.node.mut_store().wl().set_hardstate(hs.clone());
            }
            // Entries and votes are on disk before anything that depends on them leaves.
            self.wal.flush(self.sync)?;
            for m in ready.take_persisted_messages() {
                out.messages.push((m.to, encode(&m)?));
            }
            let mut light = self.node.advance(ready);
            if let Some(commit) = light.commit_index() {
                let mut core = self.node.mut_store().wl();
                core.mut_hard_state().set_commit(commit);
                let hs = core.hard_state().clone();
                drop(core);
                // A lower commit index after a crash is safe: raft-rs learns it again.
                self.wal.push(KIND_HARD_STATE, &encode(&hs)?);
                self.wal.flush(false)?;
            }
            for m in light.take_messages() {
                out.messages.push((m.to, encode(&m)?));
            }
            self.apply(light.take_committed_entries(), &mut out);
            self.node.advance_apply();
        }
        Ok(out)
    }

    fn apply(&mut self, entries: Vec<Entry>, out: &mut Output) {
        for entry in entries {
            // Empty entries are the no-ops a new leader appends.
            if entry.get_entry_type() != EntryType::EntryNormal || entry.data.is_empty() {
                continue;
            }
            let result = self.state.apply(&entry.data);
            let proposal = parse_context(&entry.context).filter(|(p, _)| *p == self.id).map(|(_, id)| id);
            out.applied.push(Applied { index: entry.index, proposal, command: entry.data.to_vec(), result });
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::replication::sim::Rng;

    /// Records every command it applies, and answers with the command.
    #[derive(Default)]
    struct Recorder {
        applied: Vec<Vec<u8>>,
    }

    impl StateMachine for Recorder {
        fn apply(&mut self, command: &[u8]) -> Vec<u8> {
            self.applied.push(command.to_vec());
            command.to_vec()
        }
    }

    /// Voters over a simulated network: messages are delayed, reordered and lost; voters
    /// crash (losing everything but their write-ahead log) and come back.
    struct Cluster {
        dir: tempfile::TempDir,
        voters: Vec<u64>,
        nodes: BTreeMap<u64, Option<Quorum<Recorder>>>,
        in_flight: Vec<(u64, u64, Vec<u8>)>,
        rng: Rng,
        /// Commands acknowledged to a proposer: (command, the index it committed at).
        acknowledged: Vec<(Vec<u8>, u64)>,
        /// Every command any voter applied at each index (must be one).
        by_index: BTreeMap<u64, BTreeSet<Vec<u8>>>,
    }

    impl Cluster {
        fn new(size: u64, seed: u64) -> Cluster {
            let dir = tempfile::tempdir().unwrap();
            let voters: Vec<u64> = (1..=size).collect();
            let mut cluster = Cluster {
                dir,
                voters: voters.clone(),
                nodes: BTreeMap::new(),
                in_flight: Vec::new(),
                rng: Rng(seed),
                acknowledged: Vec::new(),
                by_index: BTreeMap::new(),
            };
            for id in voters {
                cluster.start(id);
            }
            cluster
        }

        fn start(&mut self, id: u64) {
            let dir = self.dir.path().join(format!("voter-{id}"));
            // Seeded election timeouts (raft-rs's own draw is not), no fsync (a simulated
            // crash keeps every byte written): a seed replays exactly, and fast.
            let ticks = ELECTION_TICKS + self.rng.range(0, ELECTION_TICKS as u64 - 1) as usize;
            let quorum = Quorum::open_for_simulation(id, &self.voters, &dir, Recorder::default(), ticks).unwrap();
            self.nodes.insert(id, Some(quorum));
        }

        fn collect(&mut self, from: u64, out: Output) {
            for (to, bytes) in out.messages {
                self.in_flight.push((from, to, bytes));
            }
            for a in out.applied {
                self.by_index.entry(a.index).or_default().insert(a.result.clone());
                if a.proposal.is_some() {
                    self.acknowledged.push((a.result, a.index));
                }
            }
        }

        /// One step: a tick, a delivery, a proposal, a crash or a restart.
        fn step(&mut self, step: u64) {
            let ids: Vec<u64> = self.nodes.keys().copied().collect();
            let id = ids[self.rng.range(0, ids.len() as u64 - 1) as usize];
            match self.rng.range(0, 99) {
                0..=29 => {
                    if let Some(Some(q)) = self.nodes.get_mut(&id) {
                        q.tick();
                        let out = q.poll().unwrap();
                        self.collect(id, out);
                    }
                }
                30..=79 if !self.in_flight.is_empty() => {
                    // Any message in flight may arrive next (reordering); some are lost.
                    let i = self.rng.range(0, self.in_flight.len() as u64 - 1) as usize;
                    let (_, to, bytes) = self.in_flight.swap_remove(i);
                    if self.rng.percent(10) {
                        return;
                    }
                    if let Some(Some(q)) = self.nodes.get_mut(&to) {
                        let _ = q.step(&bytes);
                        let out = q.poll().unwrap();
                        self.collect(to, out);
                    }
                }
                80..=93 => {
                    if let Some(Some(q)) = self.nodes.get_mut(&id) {
                        if q.is_leader() {
                            let command = format!("command-{step}").into_bytes();
                            q.propose(command).unwrap();
                            let out = q.poll().unwrap();
                            self.collect(id, out);
                        }
                    }
                }
                94..=96 => {
                    // A crash: all but a minority stay up.
                    let down = self.nodes.values().filter(|n| n.is_none()).count();
                    if down < (self.voters.len() - 1) / 2 {
                        self.nodes.insert(id, None);
                    }
                }
                _ => {
                    if self.nodes.get(&id).is_some_and(Option::is_none) {
                        self.start(id);
                    }
                }
            }
        }

        /// Every applied index has one command, and every acknowledged command is applied
        /// at its index by every voter that got that far.
        fn check(&self, seed: u64, step: u64) {
            for (index, commands) in &self.by_index {
                assert_eq!(commands.len(), 1, "seed {seed} step {step}: voters applied different commands at {index}");
            }
            for (command, index) in &self.acknowledged {
                let at = self.by_index.get(index).and_then(|c| c.iter().next());
                assert_eq!(at, Some(command), "seed {seed} step {step}: acknowledged command lost at {index}");
            }
        }
    }

    /// A write-ahead log whose last record was torn by a crash opens with the records
    /// before it, and the file is cut there.
    #[test]
    fn a_torn_log_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, records) = Wal::open(dir.path()).unwrap();
        assert!(records.is_empty());
        wal.push(KIND_ENTRY, b"first");
        wal.push(KIND_HARD_STATE, b"second");
        wal.flush(true).unwrap();
        drop(wal);
        let path = dir.path().join("raft.wal");
        let whole = std::fs::metadata(&path).unwrap().len();
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[KIND_ENTRY, 0, 0, 0, 50, 1, 2, 3, 4, b'x']).unwrap();
        drop(file);
        let (_, records) = Wal::open(dir.path()).unwrap();
        assert_eq!(records, vec![(KIND_ENTRY, b"first".to_vec()), (KIND_HARD_STATE, b"second".to_vec())]);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), whole);
    }

    /// A quorum of 3 (and of 5) commits commands through message loss, reordering,
    /// crashes of a minority and restarts from the write-ahead log: every voter applies
    /// the same command at each index, and no acknowledged command is lost.
    #[test]
    fn voters_agree_on_every_index_through_loss_crashes_and_restarts() {
        let seeds: u64 = std::env::var("QUORUM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
        let steps: u64 = std::env::var("QUORUM_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(2000);
        for seed in 0..seeds {
            for size in [3, 5] {
                let mut cluster = Cluster::new(size, seed * 7919 + size);
                for step in 0..steps {
                    cluster.step(step);
                    cluster.check(seed, step);
                }
                // Heal: everyone up, no loss, until all voters applied the same log.
                for id in cluster.voters.clone() {
                    if cluster.nodes.get(&id).is_some_and(Option::is_none) {
                        cluster.start(id);
                    }
                }
                for _ in 0..2000 {
                    let ids = cluster.voters.clone();
                    for id in ids {
                        let q = cluster.nodes.get_mut(&id).unwrap().as_mut().unwrap();
                        q.tick();
                        let out = q.poll().unwrap();
                        cluster.collect(id, out);
                    }
                    while let Some((_, to, bytes)) = cluster.in_flight.pop() {
                        let q = cluster.nodes.get_mut(&to).unwrap().as_mut().unwrap();
                        let _ = q.step(&bytes);
                        let out = q.poll().unwrap();
                        cluster.collect(to, out);
                    }
                }
                cluster.check(seed, steps);
                let logs: BTreeSet<Vec<Vec<u8>>> =
                    cluster.nodes.values().map(|q| q.as_ref().unwrap().state().applied.clone()).collect();
                assert_eq!(logs.len(), 1, "seed {seed}: voters' applied commands differ after healing");
                assert!(!cluster.acknowledged.is_empty(), "seed {seed}: nothing was ever committed");
            }
        }
    }
}
