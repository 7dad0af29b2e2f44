//! Which rows a process reads: a deterministic held-out split of documents, how a pass's rows
//! are shared between ranks (every `world_size`-th row, or blocks of row groups), and which
//! window each row falls in.

use std::sync::Arc;

use arrow::array::RecordBatch;

use super::layout::Shard;
use super::position::{ScanStart, WindowStart, WindowStarts};
use crate::error::Result;

/// A deterministic document split: a document is held out when a hash of its key and the seed
/// falls below `fraction` of the hash range, so the split does not depend on order or sharding.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum Split {
    #[default]
    All,
    /// Documents not held out.
    Train { fraction: f64, seed: u64 },
    /// The held-out documents.
    Eval { fraction: f64, seed: u64 },
}

impl Split {
    /// Whether the document with `key` belongs to this side.
    pub(crate) fn contains(&self, key: u64) -> bool {
        let held_out = |fraction: f64, seed: u64| {
            let h = crate::ground::seeds::eval_split(seed, key);
            (h as f64) < fraction * 18_446_744_073_709_551_616.0
        };
        match *self {
            Split::All => true,
            Split::Train { fraction, seed } => !held_out(fraction, seed),
            Split::Eval { fraction, seed } => held_out(fraction, seed),
        }
    }
}

/// Which rows belong to this split and shard. By rows: the shard takes every `world_size`-th
/// row of the split, counted in scan order, and every `window_rows` rows of the split make a
/// window. By blocks: the shard takes the rows of its block of positions in the pass, and
/// every `window_rows` positions make a window.
pub(super) struct Sharder {
    pub(super) ordinal: u64,
    pub(super) shard: Shard,
    pub(super) split: Split,
    pub(super) window_rows: u64,
    pub(super) starts: Option<Arc<WindowStarts>>,
    /// Position of the item being read in the pass's order.
    pub(super) file: u64,
    /// The shard's block of positions, when sharding by blocks.
    pub(super) block: Option<std::ops::Range<u64>>,
    /// By blocks: the window whose start was recorded last.
    pub(super) recorded: Option<u64>,
    /// By blocks: the position of the current file's row 0 (`row + base` is a row's position).
    pub(super) base: u64,
}

impl Sharder {
    /// Whether the next row that passed the filters (the `row`-th of its file) belongs to this
    /// split and shard, and its window.
    pub(super) fn mine(&mut self, key: u64, row: u64, counts: impl FnOnce() -> Option<[u64; 7]>) -> (bool, u64) {
        if let Some(block) = &self.block {
            let p = row.wrapping_add(self.base);
            let window = p / self.window_rows;
            if !block.contains(&p) {
                return (false, window);
            }
            if self.recorded != Some(window) {
                self.recorded = Some(window);
                if let Some(starts) = &self.starts {
                    let at = ScanStart { file: self.file, row, ordinal: p, counts: counts() };
                    starts.record(WindowStart { window, at });
                }
            }
            return (true, window);
        }
        let window = self.ordinal / self.window_rows;
        if !self.split.contains(key) {
            return (false, window);
        }
        if self.ordinal.is_multiple_of(self.window_rows) {
            if let Some(starts) = &self.starts {
                let at = ScanStart { file: self.file, row, ordinal: self.ordinal, counts: counts() };
                starts.record(WindowStart { window, at });
            }
        }
        let mine = self.ordinal % self.shard.world_size == self.shard.rank;
        self.ordinal += 1;
        (mine, window)
    }
}

/// Cuts a filtered batch into runs of one window each (`windows`: the window of every row).
pub(super) fn split_windows(batch: &RecordBatch, windows: &[u64]) -> Result<Vec<(u64, RecordBatch)>> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=windows.len() {
        if i == windows.len() || windows[i] != windows[start] {
            out.push((windows[start], batch.slice(start, i - start)));
            start = i;
        }
    }
    Ok(out)
}

/// A rank's block of a pass when sharding by row groups: rank `r` of `w` takes the rows
/// `r·n/w .. (r+1)·n/w` of the pass's row order (`n` rows in all), so the blocks cover the rows,
/// never overlap and differ by at most one row, and a rank opens only the row groups its block
/// touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocks {
    pub rows: u64,
}

impl Blocks {
    /// The positions (in the pass's row order) of `shard`'s block.
    pub fn range(&self, shard: Shard) -> std::ops::Range<u64> {
        let at = |r: u64| ((r as u128 * self.rows as u128) / shard.world_size.max(1) as u128) as u64;
        at(shard.rank)..at(shard.rank + 1)
    }

    /// The last window holding rows of `shard`'s block (`None`: an empty block).
    pub fn last_window(&self, shard: Shard, window_rows: u64) -> Option<u64> {
        let r = self.range(shard);
        (r.end > r.start).then(|| (r.end - 1) / window_rows.max(1))
    }
}
