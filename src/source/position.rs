//! Where a scan is: a position in one epoch's scan, and where each window of it began. Cursors
//! and resumable exports save these, so their meaning is fixed (see `STREAM_VERSION`).

/// A position in one epoch's scan: the `row`-th row (after `sql`) of the `file`-th file in the
/// epoch's file order, which is the `ordinal`-th row of the split (all ranks counted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScanStart {
    pub file: u64,
    pub row: u64,
    pub ordinal: u64,
    /// The first pass's read counters at this row ([`SourceStats::counters`]), so a resumed
    /// export's manifest counts every row once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<[u64; 7]>,
}

/// Where a window begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WindowStart {
    pub window: u64,
    pub at: ScanStart,
}

/// The starts of the windows a scan has reached (the most recent ones).
#[derive(Debug, Default)]
pub struct WindowStarts(std::sync::Mutex<std::collections::VecDeque<WindowStart>>);

impl WindowStarts {
    const KEEP: usize = 64;

    pub fn record(&self, start: WindowStart) {
        if let Ok(mut v) = self.0.lock() {
            if v.back().is_some_and(|b| b.window >= start.window) {
                return;
            }
            v.push_back(start);
            while v.len() > Self::KEEP {
                v.pop_front();
            }
        }
    }

    pub fn get(&self, window: u64) -> Option<WindowStart> {
        self.0.lock().ok()?.iter().rev().find(|s| s.window == window).copied()
    }
}
