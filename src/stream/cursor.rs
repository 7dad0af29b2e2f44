//! The stream's position, as checkpoints and resumable exports save it: per member of a
//! mixture, the window reached and how far into it, and the mixture's schedule; and the
//! rebalancing of the cursors of one world size into those of another (elastic resume).

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::source::{Blocks, ScanStart, Shard};

/// The schedule's state in one pass: how many examples each member gave, how often it ran out
/// and restarted, and whether it ran out at least once.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MixState {
    pub taken: Vec<u64>,
    pub restarts: Vec<u32>,
    pub done: Vec<bool>,
}

impl MixState {
    pub fn new(n: usize) -> Self {
        MixState { taken: vec![0; n], restarts: vec![0; n], done: vec![false; n] }
    }

    /// The member whose turn it is, or `None` when no member has weight.
    pub fn next(&self, weights: &[f64]) -> Option<usize> {
        let n: u64 = self.taken.iter().sum();
        let mut best: Option<(usize, f64)> = None;
        for (i, &w) in weights.iter().enumerate() {
            if w <= 0.0 {
                continue;
            }
            let deficit = w * (n + 1) as f64 - self.taken[i] as f64;
            if best.is_none_or(|(_, d)| deficit > d + 1e-12) {
                best = Some((i, deficit));
            }
        }
        best.map(|(i, _)| i)
    }
}

/// How far a member's current pass has been delivered: `offset` examples of window `window`,
/// whose rows the scan reaches from `start` (`None`: the start of the pass). After an elastic
/// resume, `leftovers` (other ranks' unfinished shares of earlier windows) come first.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MemberPos {
    pub window: u64,
    pub offset: u64,
    pub start: Option<ScanStart>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leftovers: Vec<Leftover>,
}

/// One rank's share of windows `window ..= through` (`through` unset: `window` alone), the
/// first `offset` examples of `window` delivered before the world size changed: the rank of
/// the old world finishes nowhere, so a rank of the new world delivers the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leftover {
    pub shard: Shard,
    pub window: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub through: Option<u64>,
    pub offset: u64,
    /// Where the scan reaches the window's rows from.
    pub start: Option<ScanStart>,
}

/// Where a stream stands after a batch: restoring it continues with the next batch exactly.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StreamCursor {
    /// The shard that delivered the batches (`None`: set when first used).
    #[serde(default)]
    pub(crate) shard: Option<Shard>,
    /// The pass over the data (`stream.epochs` counts them).
    pub(crate) epoch: u32,
    /// Batches delivered in this pass.
    pub(crate) batches: u64,
    /// The pass is over: restoring gives the next pass.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) finished: bool,
    pub(crate) mix: MixState,
    /// Per source, in the order written.
    pub(crate) members: Vec<MemberPos>,
}

impl StreamCursor {
    /// The pass the cursor is in (counted from 0).
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Batches delivered in this pass.
    pub fn batches(&self) -> u64 {
        self.batches
    }

    /// The start of pass `epoch` over `n` sources.
    pub fn start(epoch: u32, n: usize) -> Self {
        StreamCursor {
            shard: None,
            epoch,
            batches: 0,
            finished: false,
            mix: MixState::new(n),
            members: vec![MemberPos::default(); n],
        }
    }

    /// Elastic resume: the cursors of every rank of a world (all after the same number of
    /// batches, as data-parallel training keeps them) become cursors for `world_size` new
    /// ranks that together deliver exactly what the old ranks had not. `blocks[i]` is how source
    /// `i` is sharded by blocks, with its rows per window (`None`: by rows; see
    /// `Plan::rebalance`).
    ///
    /// By rows, each old rank's unfinished windows up to the furthest any rank reached become
    /// leftovers dealt round-robin, and the windows after them are shared by the new world. By
    /// blocks, everything the old ranks had left becomes leftovers, dealt as contiguous runs of
    /// equally many windows. Mixture counts carry over (summed).
    pub(crate) fn rebalance(
        old: &[StreamCursor],
        world_size: u64,
        blocks: &[Option<(Blocks, u64)>],
    ) -> Result<Vec<StreamCursor>> {
        let first = old.first().ok_or_else(|| crate::Error::data("no cursors to rebalance"))?;
        let old_world = old.len() as u64;
        let epoch = first.epoch;
        if old.iter().any(|c| c.epoch != epoch || c.members.len() != first.members.len()) {
            return Err(crate::Error::data_hint(
                "the cursors to rebalance are from different passes or pipelines",
                "give the cursors of every rank of one run, saved after the same step",
            ));
        }
        for (r, c) in old.iter().enumerate() {
            if c.shard.is_some_and(|s| s.rank != r as u64 || s.world_size != old_world) {
                return Err(crate::Error::data_hint(
                    format!("cursor {r} belongs to rank {:?} of another world", c.shard),
                    "give the cursors of ranks 0 … world_size-1 in rank order",
                ));
            }
        }
        if world_size == 0 {
            return Err(crate::Error::data("the new world size must be at least 1"));
        }
        let n = first.members.len();
        if let Some(i) = (0..n).find(|&i| old.iter().any(|c| c.mix.restarts[i] != first.mix.restarts[i])) {
            return Err(crate::Error::data_hint(
                format!("the ranks are in different runs over source #{i} (some restarted it): their positions cannot be combined"),
                "resume with the same world size, or from a checkpoint taken before any source ran out",
            ));
        }
        let mut out: Vec<StreamCursor> = (0..world_size)
            .map(|r| StreamCursor {
                shard: Some(Shard { rank: r, world_size }),
                epoch,
                batches: 0,
                finished: old.iter().all(|c| c.finished),
                mix: MixState::new(n),
                members: vec![MemberPos::default(); n],
            })
            .collect();
        let shard_of = |r: usize, c: &StreamCursor| c.shard.unwrap_or(Shard { rank: r as u64, world_size: old_world });
        for i in 0..n {
            // A member that ran out in this pass restarted: its positions are per run, and a
            // restarted run is shared like a fresh one.
            let mut items: Vec<Leftover> = Vec::new();
            for c in old {
                items.extend(c.members[i].leftovers.iter().copied());
            }
            match blocks.get(i).copied().flatten() {
                Some((b, window_rows)) => {
                    let lasts: Vec<Option<u64>> =
                        old.iter().enumerate().map(|(r, c)| b.last_window(shard_of(r, c), window_rows)).collect();
                    // By blocks: each old rank's rest of its block, as window runs.
                    for (r, c) in old.iter().enumerate() {
                        let m = &c.members[i];
                        if let Some(l) = lasts[r].filter(|&l| m.window <= l) {
                            items.push(Leftover {
                                shard: shard_of(r, c),
                                window: m.window,
                                through: Some(l),
                                offset: m.offset,
                                start: m.start,
                            });
                        }
                    }
                    let end = lasts.iter().flatten().max().map(|l| l + 1).unwrap_or(0);
                    deal_runs(&mut out, i, items);
                    for c in &mut out {
                        // Nothing of the new blocks is left before the end.
                        c.members[i].window = end;
                    }
                }
                None => {
                    let w_max = old.iter().map(|c| c.members[i].window).max().unwrap_or(0);
                    let reached = old.iter().any(|c| c.members[i].start.is_some() || c.members[i].offset > 0);
                    if reached {
                        for (r, c) in old.iter().enumerate() {
                            let m = &c.members[i];
                            for w in m.window..=w_max {
                                items.push(Leftover {
                                    shard: shard_of(r, c),
                                    window: w,
                                    through: None,
                                    offset: if w == m.window { m.offset } else { 0 },
                                    start: m.start,
                                });
                            }
                        }
                    }
                    // The earliest start any rank knows reaches every later window's rows.
                    let start = old.iter().filter_map(|c| c.members[i].start).min_by_key(|s| s.ordinal);
                    for (j, item) in items.into_iter().enumerate() {
                        out[j % world_size as usize].members[i].leftovers.push(item);
                    }
                    for c in &mut out {
                        c.members[i].window = if reached { w_max + 1 } else { 0 };
                        c.members[i].start = start;
                    }
                }
            }
        }
        // The schedule continues from the combined counts, spread over the new ranks.
        for i in 0..n {
            let taken: u64 = old.iter().map(|c| c.mix.taken[i]).sum();
            let restarts = old.iter().map(|c| c.mix.restarts[i]).max().unwrap_or(0);
            let done = old.iter().any(|c| c.mix.done[i]);
            for (r, c) in out.iter_mut().enumerate() {
                c.mix.taken[i] = taken / world_size + u64::from((r as u64) < taken % world_size);
                c.mix.restarts[i] = restarts;
                c.mix.done[i] = done;
            }
        }
        Ok(out)
    }
}

/// Deals `items` (runs of windows) to the new ranks' member `i` as contiguous runs holding
/// equally many windows (within one): a run cut in two continues from its cut window.
fn deal_runs(out: &mut [StreamCursor], i: usize, items: Vec<Leftover>) {
    let total: u64 = items.iter().map(|l| l.through.unwrap_or(l.window) - l.window + 1).sum();
    let ranks = out.len() as u64;
    let share = |r: u64| r * total / ranks..(r + 1) * total / ranks;
    let mut at = 0u64;
    for l in items {
        let len = l.through.unwrap_or(l.window) - l.window + 1;
        for r in 0..ranks {
            let s = share(r);
            let (from, to) = (s.start.max(at), s.end.min(at + len));
            if from >= to {
                continue;
            }
            let cut = from - at;
            let piece = Leftover {
                window: l.window + cut,
                through: Some(l.window + (to - at) - 1),
                offset: if cut == 0 { l.offset } else { 0 },
                start: if cut == 0 { l.start } else { None },
                ..l
            };
            out[r as usize].members[i].leftovers.push(piece);
        }
        at += len;
    }
}
