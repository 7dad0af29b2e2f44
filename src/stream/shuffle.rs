//! Seeded shuffle inside bounded windows.

use arrow::array::{RecordBatch, UInt32Array};
use arrow::datatypes::SchemaRef;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::error::Result;

/// Collects up to `window` rows, permutes them with an RNG seeded by `(seed, epoch, window
/// index)`, and hands them out. Memory is bounded by the window.
pub struct WindowShuffle {
    schema: SchemaRef,
    window: usize,
    seed: u64,
    epoch: u32,
    index: u64,
    pending: Vec<RecordBatch>,
    rows: usize,
}

impl WindowShuffle {
    pub fn new(schema: SchemaRef, window: usize, seed: u64, epoch: u32) -> Self {
        WindowShuffle { schema, window, seed, epoch, index: 0, pending: Vec::new(), rows: 0 }
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
            out.push(self.flush()?.expect("window is full"));
            batch = batch.slice(room, batch.num_rows() - room);
            if batch.num_rows() == 0 {
                return Ok(out);
            }
        }
    }

    /// Shuffles and returns what is pending (the last, partial window at the end of an epoch).
    pub fn flush(&mut self) -> Result<Option<RecordBatch>> {
        if self.rows == 0 {
            return Ok(None);
        }
        let all = arrow::compute::concat_batches(&self.schema, &self.pending)?;
        let mut order: Vec<u32> = (0..all.num_rows() as u32).collect();
        let mut bytes = [0u8; 20];
        bytes[..8].copy_from_slice(&self.seed.to_le_bytes());
        bytes[8..12].copy_from_slice(&self.epoch.to_le_bytes());
        bytes[12..].copy_from_slice(&self.index.to_le_bytes());
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(xxhash_rust::xxh3::xxh3_64_with_seed(&bytes, 0x5348_5546));
        order.shuffle(&mut rng);
        let taken = arrow::compute::take_record_batch(&all, &UInt32Array::from(order))?;
        self.pending.clear();
        self.rows = 0;
        self.index += 1;
        Ok(Some(taken))
    }
}
