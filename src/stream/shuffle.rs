//! Seeded shuffle inside bounded windows.

use arrow::array::RecordBatch;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::error::Result;
use crate::ground::seeds;

/// Rows per shuffled batch handed out.
const OUT_ROWS: usize = 4096;

/// Collects up to `window` rows, permutes them with an RNG seeded by `(seed, epoch, window
/// index)`, and hands them out. Memory is bounded by the window.
pub struct WindowShuffle {
    window: usize,
    seed: u64,
    epoch: u32,
    index: u64,
    pending: Vec<RecordBatch>,
    rows: usize,
}

impl WindowShuffle {
    pub fn new(window: usize, seed: u64, epoch: u32) -> Self {
        WindowShuffle { window, seed, epoch, index: 0, pending: Vec::new(), rows: 0 }
    }

    /// Adds rows; returns a shuffled window when one is full.
    pub fn push(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        let mut batch = batch;
        loop {
            let room = self.window - self.rows;
            if batch.num_rows() < room {
                self.rows += batch.num_rows();
                self.pending.push(batch);
                return Ok(out);
            }
            self.pending.push(batch.slice(0, room));
            self.rows += room;
            out.extend(self.flush()?);
            batch = batch.slice(room, batch.num_rows() - room);
            if batch.num_rows() == 0 {
                return Ok(out);
            }
        }
    }

    /// Shuffles and returns what is pending (the last, partial window at the end of an epoch),
    /// in batches of [`OUT_ROWS`] drawn straight from the pending batches: a window costs its
    /// rows once more, where a concatenation and a `take` of it cost them twice.
    pub fn flush(&mut self) -> Result<Vec<RecordBatch>> {
        if self.rows == 0 {
            return Ok(Vec::new());
        }
        let mut order: Vec<u32> = (0..self.rows as u32).collect();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seeds::shuffle_chunk(self.seed, self.epoch, self.index));
        order.shuffle(&mut rng);
        // (pending batch, row in it) of every row of the window, in arrival order.
        let at: Vec<(usize, usize)> =
            self.pending.iter().enumerate().flat_map(|(b, batch)| (0..batch.num_rows()).map(move |r| (b, r))).collect();
        let pending: Vec<&RecordBatch> = self.pending.iter().collect();
        let out = order
            .chunks(OUT_ROWS)
            .map(|c| {
                let picks: Vec<(usize, usize)> = c.iter().map(|&i| at[i as usize]).collect();
                arrow::compute::interleave_record_batch(&pending, &picks)
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        self.pending.clear();
        self.rows = 0;
        self.index += 1;
        Ok(out)
    }
}
