//! The controller log's bytes, with no I/O: the write-ahead log's records and the snapshot
//! file. The node stores them in files (`controller::wal`), the simulator in memory
//! (`MemoryLog`); both read them back here, so a torn tail or a bad CRC is treated alike.
//!
//! Write-ahead log segment: records of `kind u8, length u32, crc32c u32, payload`
//! (big-endian; the CRC covers the payload; kind 1 a raft-rs `Entry`, 2 a `HardState`,
//! both protobuf) back to back. Segment `n` holds what follows the snapshot at index `n`
//! (0: no snapshot yet) and starts with the hard state. Zero bytes after the last record
//! are padding (O_DIRECT writes whole pages), not a record; any other bytes that do not
//! read as a record end the log there: a torn write, which was never acknowledged since
//! its fsync did not complete.
//!
//! Snapshot file: `magic "SLQS", version u8, length u32, payload, crc32c u32`, the CRC
//! over everything before it; the payload is a raft-rs `Snapshot` (its index, term and
//! members, and the state machine's own versioned encoding as data).

use protobuf::Message as _;
use raft::eraftpb::Snapshot;

/// A record holding one raft-rs `Entry`.
pub const KIND_ENTRY: u8 = 1;
/// A record holding a raft-rs `HardState` (term, vote, commit); the last one counts.
pub const KIND_HARD_STATE: u8 = 2;
/// kind u8, length u32, crc32c u32.
pub const RECORD_HEADER_BYTES: usize = 9;

const SNAPSHOT_MAGIC: [u8; 4] = *b"SLQS";
/// The snapshot file's layout version; bumped on any change.
pub const SNAPSHOT_FILE_VERSION: u8 = 1;
/// magic, version, length before the payload; the CRC after it.
const SNAPSHOT_HEADER_BYTES: usize = 9;
const SNAPSHOT_TRAILER_BYTES: usize = 4;

/// A write-ahead log record: its kind and payload.
pub type Record = (u8, Vec<u8>);

/// Appends one record to `out`.
pub fn push_record(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    assert!(matches!(kind, KIND_ENTRY | KIND_HARD_STATE), "unknown controller log record kind {kind}");
    assert!(payload.len() <= u32::MAX as usize, "a controller log record of {} bytes", payload.len());
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_be_bytes());
    out.extend_from_slice(payload);
}

/// What a segment's bytes hold.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Scan {
    pub records: Vec<Record>,
    /// Where the last whole record ends: the segment's length once a torn tail is cut.
    pub valid_bytes: usize,
    /// Bytes other than zero padding follow the last record (a torn write).
    pub torn: bool,
}

/// Reads a segment's records up to the first that is not whole and intact.
#[must_use]
pub fn scan_records(bytes: &[u8]) -> Scan {
    let mut records = Vec::new();
    let mut at = 0usize;
    while let Some(header) = bytes.get(at..at + RECORD_HEADER_BYTES) {
        let kind = header[0];
        let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        let crc = u32::from_be_bytes([header[5], header[6], header[7], header[8]]);
        let start = at + RECORD_HEADER_BYTES;
        let Some(payload) = bytes.get(start..start + length) else { break };
        if !matches!(kind, KIND_ENTRY | KIND_HARD_STATE) || crc32c::crc32c(payload) != crc {
            break;
        }
        records.push((kind, payload.to_vec()));
        at = start + length;
    }
    let torn = bytes[at..].iter().any(|b| *b != 0);
    Scan { records, valid_bytes: at, torn }
}

/// The snapshot file's bytes.
#[must_use]
pub fn encode_snapshot(snapshot: &Snapshot) -> Vec<u8> {
    let payload = match snapshot.write_to_bytes() {
        Ok(payload) => payload,
        Err(e) => panic!("a raft snapshot does not encode: {e}"),
    };
    assert!(payload.len() <= u32::MAX as usize, "a controller snapshot of {} bytes", payload.len());
    let length = payload.len() as u32;
    let mut out = Vec::with_capacity(SNAPSHOT_HEADER_BYTES + payload.len() + SNAPSHOT_TRAILER_BYTES);
    out.extend_from_slice(&SNAPSHOT_MAGIC);
    out.push(SNAPSHOT_FILE_VERSION);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&payload);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// Reads a snapshot file, checking its magic, version, length and CRC.
pub fn decode_snapshot(bytes: &[u8]) -> Result<Snapshot, String> {
    if bytes.len() < SNAPSHOT_HEADER_BYTES + SNAPSHOT_TRAILER_BYTES {
        return Err(format!("{} bytes, shorter than a snapshot's header and checksum", bytes.len()));
    }
    if bytes[..4] != SNAPSHOT_MAGIC {
        return Err(format!("magic {:?} is not a controller snapshot's", &bytes[..4]));
    }
    if bytes[4] != SNAPSHOT_FILE_VERSION {
        return Err(format!("snapshot file version {}, this node reads {SNAPSHOT_FILE_VERSION}", bytes[4]));
    }
    let length = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) as usize;
    let expected = SNAPSHOT_HEADER_BYTES + length + SNAPSHOT_TRAILER_BYTES;
    if bytes.len() != expected {
        return Err(format!("{} bytes, the header says {expected}", bytes.len()));
    }
    let (body, trailer) = bytes.split_at(SNAPSHOT_HEADER_BYTES + length);
    let crc = u32::from_be_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    if crc32c::crc32c(body) != crc {
        return Err("checksum mismatch".to_string());
    }
    Snapshot::parse_from_bytes(&body[SNAPSHOT_HEADER_BYTES..]).map_err(|e| format!("snapshot payload: {e}"))
}

/// What a voter's stored log holds when it opens: its latest snapshot and the records of
/// the segment that follows it.
#[derive(Debug, Default)]
pub struct LogContents {
    pub snapshot: Option<Snapshot>,
    pub records: Vec<Record>,
}

/// The controller log in memory, for simulations and tests: the same bytes a node's files
/// hold, and what a machine crash leaves of them (bytes written since the last sync are
/// lost, but for a prefix: a torn write).
#[cfg(test)]
#[derive(Debug, Default)]
pub struct MemoryLog {
    snapshot: Option<Vec<u8>>,
    segment: Vec<u8>,
    synced: usize,
}

#[cfg(test)]
impl MemoryLog {
    /// Performs a persist as the node's `controller::wal` does: a snapshot replaces the
    /// segment (synced, as the node syncs it before installing the snapshot); records
    /// without one are appended, synced when asked.
    pub fn write(&mut self, persist: &super::quorum::Persist) {
        match &persist.snapshot {
            Some(snapshot) => {
                self.segment.clone_from(&persist.records);
                self.snapshot = Some(snapshot.file.clone());
                self.synced = self.segment.len();
            }
            None => {
                self.segment.extend_from_slice(&persist.records);
                if persist.sync {
                    self.synced = self.segment.len();
                }
            }
        }
    }

    /// Bytes written but not synced.
    #[must_use]
    pub fn unsynced_bytes(&self) -> usize {
        self.segment.len() - self.synced
    }

    /// A machine crash: of the bytes not synced, only the first `kept` survive.
    pub fn crash(&mut self, kept: usize) {
        self.segment.truncate(self.synced + kept.min(self.unsynced_bytes()));
    }

    /// Opens the log as the node's `wal` does: returns what it holds and cuts a torn tail,
    /// so that what is appended next is read back after the records before it.
    pub fn open(&mut self) -> Result<LogContents, String> {
        let snapshot = self.snapshot.as_deref().map(decode_snapshot).transpose()?;
        let scan = scan_records(&self.segment);
        self.segment.truncate(scan.valid_bytes);
        self.synced = self.synced.min(scan.valid_bytes);
        Ok(LogContents { snapshot, records: scan.records })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn two_records() -> Vec<u8> {
        let mut bytes = Vec::new();
        push_record(&mut bytes, KIND_ENTRY, b"first");
        push_record(&mut bytes, KIND_HARD_STATE, b"");
        bytes
    }

    /// Records read back as written; zero padding after them (O_DIRECT pages) is the clean
    /// end of the log, not a torn tail.
    #[test]
    fn records_round_trip_and_zero_padding_is_not_torn() {
        let mut bytes = two_records();
        let whole = bytes.len();
        bytes.resize(4096, 0);
        let scan = scan_records(&bytes);
        assert_eq!(scan.records, vec![(KIND_ENTRY, b"first".to_vec()), (KIND_HARD_STATE, Vec::new())]);
        assert_eq!((scan.valid_bytes, scan.torn), (whole, false));
        assert_eq!(scan_records(&[]), Scan::default());
    }

    /// A record cut short, one whose CRC does not match its payload, and one of an unknown
    /// kind each end the log at the record before them, and are reported as torn.
    #[test]
    fn a_torn_or_corrupt_record_ends_the_log() {
        let good = two_records();
        let mut cut = good.clone();
        push_record(&mut cut, KIND_ENTRY, b"third record");
        let cut = &cut[..cut.len() - 3];
        let mut bad_crc = good.clone();
        push_record(&mut bad_crc, KIND_ENTRY, b"third");
        let last = bad_crc.len() - 1;
        bad_crc[last] ^= 1;
        let mut bad_kind = good.clone();
        bad_kind.extend_from_slice(&[7, 0, 0, 0, 0, 0, 0, 0, 0]);
        let mut huge_length = good.clone();
        huge_length.extend_from_slice(&[KIND_ENTRY, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4, 5]);
        for bytes in [cut, &bad_crc[..], &bad_kind[..], &huge_length[..]] {
            let scan = scan_records(bytes);
            assert_eq!(scan.records.len(), 2);
            assert_eq!((scan.valid_bytes, scan.torn), (good.len(), true));
        }
    }

    /// A crash keeps what was synced and may keep a torn piece of what was not; opening
    /// cuts that piece, so a record appended and synced afterwards is read back (found by
    /// the quorum test: appended after a torn record, a synced entry was lost).
    #[test]
    fn the_memory_log_loses_unsynced_bytes_and_cuts_a_torn_piece_at_open() {
        use crate::quorum::Persist;
        let append = |payload: &[u8], sync| {
            let mut records = Vec::new();
            push_record(&mut records, KIND_ENTRY, payload);
            Persist { number: 1, snapshot: None, records, sync }
        };
        let mut log = MemoryLog::default();
        log.write(&append(b"synced", true));
        log.write(&append(b"not synced", false));
        assert_eq!(log.unsynced_bytes(), RECORD_HEADER_BYTES + 10);
        log.crash(RECORD_HEADER_BYTES + 3);
        let payloads =
            |log: &mut MemoryLog| log.open().unwrap().records.into_iter().map(|(_, p)| p).collect::<Vec<_>>();
        assert_eq!(payloads(&mut log), vec![b"synced".to_vec()]);
        log.write(&append(b"after", true));
        log.crash(0);
        assert_eq!(payloads(&mut log), vec![b"synced".to_vec(), b"after".to_vec()]);
    }

    fn snapshot() -> Snapshot {
        let mut snapshot = Snapshot::default();
        snapshot.mut_metadata().index = 41;
        snapshot.mut_metadata().term = 7;
        snapshot.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
        snapshot.mut_metadata().mut_conf_state().learners = vec![4];
        snapshot.data = b"the state".to_vec().into();
        snapshot
    }

    /// A snapshot file reads back as written; any flipped bit, a cut, an extension or
    /// another version is refused with an error.
    #[test]
    fn snapshot_files_round_trip_and_refuse_damage() {
        let bytes = encode_snapshot(&snapshot());
        assert_eq!(decode_snapshot(&bytes).unwrap(), snapshot());
        for i in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x10;
            assert!(decode_snapshot(&flipped).is_err(), "bit flipped at byte {i}");
        }
        for cut in 0..bytes.len() {
            assert!(decode_snapshot(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_snapshot(&longer).is_err());
        let mut version = bytes;
        version[4] = SNAPSHOT_FILE_VERSION + 1;
        assert!(decode_snapshot(&version).unwrap_err().contains("version"));
    }
}
