//! Every random stream of a run, derived from the pipeline's `seed`. Each stream has a named
//! salt here and a function that derives its seed; no salt is written anywhere else, so two
//! streams can never share one by accident, and changing one is a visible change to the output
//! (exports record `STREAM_VERSION`, checkpoints `STATE_VERSION`).
//!
//! The values are fixed: they are part of the bytes every existing export and checkpoint holds.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

/// `"FILE"`: the order in which an epoch reads the files (or row groups) when shuffling.
const FILE_ORDER: u64 = 0x4649_4c45;
/// `"WIND"`: the seed of one window's example shuffle.
const WINDOW: u64 = 0x5749_4e44;
/// `"SHUF"`: the permutation of one chunk of a window's examples.
const SHUFFLE_CHUNK: u64 = 0x5348_5546;
/// `"EVAL"`: which documents are held out for evaluation.
const EVAL_SPLIT: u64 = 0x4556_414c;
/// `"SCARF\0\0\0"`: the reservoir sample of a table column's marginal (xored with the column).
const MARGINAL: u64 = 0x5343_4152_4600_0000;

/// The seed of the file (row group) order of `epoch`.
pub fn file_order(seed: u64, epoch: u32) -> u64 {
    xxh3_64_with_seed(&(epoch as u64).to_le_bytes(), seed ^ FILE_ORDER)
}

/// The seed of window `window`'s example shuffle (its chunks are drawn from it by
/// [`shuffle_chunk`]).
pub fn window(seed: u64, window: u64) -> u64 {
    xxh3_64_with_seed(&window.to_le_bytes(), seed ^ WINDOW)
}

/// The seed of the `index`-th shuffle of a window shuffled with `window_seed` in `epoch`.
pub fn shuffle_chunk(window_seed: u64, epoch: u32, index: u64) -> u64 {
    let mut bytes = [0u8; 20];
    bytes[..8].copy_from_slice(&window_seed.to_le_bytes());
    bytes[8..12].copy_from_slice(&epoch.to_le_bytes());
    bytes[12..].copy_from_slice(&index.to_le_bytes());
    xxh3_64_with_seed(&bytes, SHUFFLE_CHUNK)
}

/// The hash that places document `key` in the eval split (held out below the fraction).
pub fn eval_split(seed: u64, key: u64) -> u64 {
    xxh3_64_with_seed(&key.to_le_bytes(), seed ^ EVAL_SPLIT)
}

/// The seed of one example's RNG: a pure function of `(seed, epoch, key)`.
pub fn example(seed: u64, epoch: u32, key: u64) -> u64 {
    let mut bytes = [0u8; 20];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    bytes[8..12].copy_from_slice(&epoch.to_le_bytes());
    bytes[12..].copy_from_slice(&key.to_le_bytes());
    xxh3_64(&bytes)
}

/// The key whose example RNG samples column `column`'s marginal (SCARF, VIME).
pub fn marginal_key(column: usize) -> u64 {
    MARGINAL ^ column as u64
}

/// The seed of the initial value of parameter `name`.
pub fn parameter(seed: u64, name: &str) -> u64 {
    xxh3_64_with_seed(name.as_bytes(), seed)
}

/// The seed of micro-batch `micro`'s dropout masks in optimizer step `step` (counted from 0).
pub fn step(seed: u64, step: u64, micro: u64) -> u64 {
    xxh3_64_with_seed(&[step.to_le_bytes(), micro.to_le_bytes()].concat(), seed)
}

/// The seed of the `call`-th dropout mask drawn in a forward pass seeded with `pass_seed`.
pub fn dropout(pass_seed: u64, call: u64) -> u64 {
    xxh3_64_with_seed(&call.to_le_bytes(), pass_seed)
}
