//! Named fault-injection points of the partition log, for tests of its failure paths:
//! each point is armed by a test and fires once, where the log writes or syncs.

use std::cell::RefCell;

/// Named fault-injection points, for tests of the failure paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultPoint {
    /// The next segment write (a zero-fill's included) fails with EIO, writing nothing.
    Write,
    /// The next fdatasync fails with EIO.
    Fsync,
    /// The next segment write (a zero-fill's included) stores its first half, in whole
    /// pages, and then fails with ENOSPC, as a write that fills the disk does.
    NoSpace,
    /// The log stops dead between the next zero-fill and the data write it precedes: the
    /// zeros are on disk, the data write never happens, and the log is poisoned. That
    /// leaves the files as a process killed at that moment would; tests reopen the
    /// directory as the next process would (and `log-writer` kills itself there).
    DieAfterZeroFill,
}

/// Faults armed by a test; each fires once.
#[derive(Default)]
pub struct FaultInjector {
    armed: RefCell<Vec<FaultPoint>>,
}

impl FaultInjector {
    pub fn arm(&self, point: FaultPoint) {
        self.armed.borrow_mut().push(point);
    }

    /// Whether `point` was armed (it is disarmed now).
    pub(super) fn take(&self, point: FaultPoint) -> bool {
        let mut armed = self.armed.borrow_mut();
        let i = armed.iter().position(|p| *p == point);
        i.map(|i| armed.remove(i)).is_some()
    }

    /// An error naming `point` if it was armed.
    pub(super) fn fire(&self, point: FaultPoint) -> std::io::Result<()> {
        if self.take(point) {
            return Err(std::io::Error::other(format!("injected fault at {point:?}")));
        }
        Ok(())
    }
}
