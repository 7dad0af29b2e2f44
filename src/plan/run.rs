//! Running a plan: one pass over its sources from a cursor (each member's windows scanned,
//! made into examples, shuffled, and mixed into batches, each with the cursor after it),
//! endless passes for training, and the elastic rebalancing of cursors across world sizes.

use std::sync::Arc;

use arrow::array::RecordBatch;
use futures::StreamExt;

use super::Plan;
use crate::error::{Error, Result};
use crate::ground::batches::BatchStream;
use crate::ground::seeds;
use crate::source::{ScanOptions, ScanStart, Shard, Split, WindowStarts};
use crate::spec::Format;
use crate::stream::{mix, MemberPos, Opener, StreamCursor, WindowedScan, Windows, OWN};

/// How a pass is cut into windows and positions, which cursors and resumable exports depend on.
/// 2: Parquet sources without `sql` are read by row group, and their windows count positions.
/// 3: a task's observer snapshots every 1024 rows of a window, not after every source batch.
pub const STREAM_VERSION: u32 = 3;

/// Rows of the source per window when shuffling is off (see [`Plan::window_rows`]).
pub const DEFAULT_WINDOW_ROWS: u64 = 65_536;

/// Part of a member's stream: a shard's rows of some windows, from a scan position.
#[derive(Debug, Clone, Copy)]
struct Segment {
    shard: Shard,
    start: Option<ScanStart>,
    first: u64,
    last: Option<u64>,
    skip: u64,
}

impl Plan {
    /// Member `i`'s examples of one run over its data (`epoch`), from `pos`: its leftovers
    /// first (after an elastic resume), then its own share, each item tagged with its segment
    /// and window, shuffled inside each window when configured. Window starts go to `starts`.
    pub(crate) fn member_windows(
        self: &Arc<Self>,
        i: usize,
        epoch: u32,
        split: Split,
        pos: MemberPos,
        starts: Arc<WindowStarts>,
    ) -> Windows {
        let mut segments: Vec<Windows> = Vec::new();
        for (j, l) in pos.leftovers.iter().enumerate() {
            let last = Some(l.through.unwrap_or(l.window));
            let seg = Segment { shard: l.shard, start: l.start, first: l.window, last, skip: l.offset };
            segments.push(self.segment(i, epoch, split, seg, None, j));
        }
        // The first pass counts what it reads; a resumed one continues the counts saved with its
        // window start.
        let counted = pos.leftovers.is_empty() && (pos.start.is_none_or(|s| s.counts.is_some()));
        let fresh = pos.start.is_none() && pos.window == 0 && pos.offset == 0;
        let own = Segment { shard: self.shard, start: pos.start, first: pos.window, last: None, skip: pos.offset };
        let count = (fresh || counted) && epoch == 0 && split == Split::All;
        segments.push(self.segment(i, epoch, split, own, Some((starts, count)), OWN));
        futures::stream::iter(segments).flatten().boxed()
    }

    /// One segment of a member's stream: `seg.shard`'s share of windows `seg.first ..=
    /// seg.last`, scanning from `seg.start`, the first `seg.skip` examples dropped.
    fn segment(
        self: &Arc<Self>,
        i: usize,
        epoch: u32,
        split: Split,
        seg: Segment,
        own: Option<(Arc<WindowStarts>, bool)>,
        tag: usize,
    ) -> Windows {
        let source = &self.sources[i];
        // With shuffling on, every epoch also reads the files in its own seeded order.
        let shuffle_seed = self.shuffle_window.map(|_| seeds::file_order(self.seed, epoch));
        let opts = ScanOptions {
            shuffle_seed,
            count: own.as_ref().is_some_and(|o| o.1),
            split,
            start: seg.start.unwrap_or_default(),
            window_rows: self.window_rows(),
            from_window: seg.first,
            starts: own.map(|o| o.0),
        };
        let pretext = source.format == Format::Pretext;
        let scan = source.scan_windows(seg.shard, opts, pretext.then(|| self.task.output_schema()));
        let rows_schema = if pretext { self.task.output_schema() } else { source.scan_schema() };
        let scan = Arc::new(WindowedScan::new(scan, rows_schema));
        let plan = self.clone();
        let windows = futures::stream::unfold(scan, move |scan| {
            let plan = plan.clone();
            async move {
                loop {
                    let w = match scan.next_window().await? {
                        Ok(w) => w,
                        Err(e) => {
                            let failed: Windows = futures::stream::once(async move { Err(e) }).boxed();
                            return Some((failed, scan));
                        }
                    };
                    if seg.last.is_some_and(|l| w > l) {
                        return None;
                    }
                    let rows = scan.rows(w);
                    if w < seg.first {
                        // Read past (another segment delivers this window).
                        let mut rows = rows;
                        while let Some(r) = rows.next().await {
                            if let Err(e) = r {
                                let failed: Windows = futures::stream::once(async move { Err(e) }).boxed();
                                return Some((failed, scan));
                            }
                        }
                        continue;
                    }
                    let examples = plan.window_examples(i, epoch, w, rows, pretext);
                    let tagged: Windows = examples.map(move |r| r.map(|b| (tag, w, b))).boxed();
                    return Some((tagged, scan));
                }
            }
        })
        .flatten();
        // Resuming inside a window: its first `skip` examples were delivered before.
        let (skip_window, mut skip) = (seg.first, seg.skip);
        windows
            .filter_map(move |item| {
                let out = match item {
                    Ok((t, w, b)) if w == skip_window && skip > 0 => {
                        let n = (skip as usize).min(b.num_rows());
                        skip -= n as u64;
                        (n < b.num_rows()).then(|| Ok((t, w, b.slice(n, b.num_rows() - n))))
                    }
                    other => Some(other),
                };
                futures::future::ready(out)
            })
            .boxed()
    }

    /// One pass (`epoch`) over the sources from `cursor`, in batches of `batch_size`, each
    /// with the cursor after it. A mixture interleaves its members' examples by weight.
    pub fn pass_from(
        self: &Arc<Self>,
        split: Split,
        cursor: StreamCursor,
    ) -> futures::stream::BoxStream<'static, Result<(RecordBatch, StreamCursor)>> {
        let plan = self.clone();
        let epochs = self.epochs.max(1);
        let epoch = cursor.epoch;
        if let Some(s) = cursor.shard.filter(|s| *s != self.shard) {
            let e = Error::data_hint(
                format!(
                    "the stream position was saved by rank {} of {}, and this is rank {} of {}",
                    s.rank, s.world_size, self.shard.rank, self.shard.world_size
                ),
                "resume with the same RANK / WORLD_SIZE (`stream.shard`), or rebalance the ranks' cursors for the new world (`Plan::rebalance`)",
            );
            return futures::stream::once(async move { Err(e) }).boxed();
        }
        let mut cursor = cursor;
        cursor.shard = Some(self.shard);
        // A member's `r`-th restart within pass `epoch` reads as epoch `epoch + r · epochs`, so
        // no two runs over a member draw the same masks or order.
        let open: Opener = Arc::new(move |i, restart, pos, starts| {
            plan.member_windows(i, epoch + restart * epochs, split, pos, starts)
        });
        let names: Vec<String> = self.sources.iter().map(|s| s.name.clone().unwrap_or_default()).collect();
        mix(
            open,
            &names,
            &self.weights,
            self.stop,
            &self.task.output_schema(),
            self.batch_size,
            self.mix_counts.clone(),
            cursor,
        )
    }

    /// Elastic resume: the cursors every rank of a world saved after the same batch, turned
    /// into cursors for `world_size` ranks that together deliver exactly the rest of the pass
    /// (see `StreamCursor::rebalance`).
    pub fn rebalance(&self, old: &[StreamCursor], world_size: u64, split: Split) -> Result<Vec<StreamCursor>> {
        let blocks: Vec<_> = self.sources.iter().map(|s| s.blocks(split).map(|b| (b, self.window_rows()))).collect();
        StreamCursor::rebalance(old, world_size, &blocks)
    }

    /// Batches from `cursor` on, pass after pass without end (training), each with the cursor
    /// after it.
    pub fn batches_from(
        self: &Arc<Self>,
        split: Split,
        cursor: StreamCursor,
    ) -> futures::stream::BoxStream<'static, Result<(RecordBatch, StreamCursor)>> {
        struct Passes {
            plan: Arc<Plan>,
            current: futures::stream::BoxStream<'static, Result<(RecordBatch, StreamCursor)>>,
            epoch: u32,
            produced: bool,
        }
        let first = Passes {
            plan: self.clone(),
            current: self.pass_from(split, cursor.clone()),
            epoch: cursor.epoch,
            // A cursor saved at the very end of a pass restores to an empty rest of that pass.
            produced: true,
        };
        // A fresh pass that yields nothing ends the stream (an empty source would otherwise spin).
        futures::stream::unfold(first, move |mut st| async move {
            loop {
                match st.current.next().await {
                    Some(item) => {
                        st.produced = true;
                        return Some((item, st));
                    }
                    None if !st.produced => return None,
                    None => {
                        st.epoch += 1;
                        st.produced = false;
                        let n = st.plan.sources.len();
                        st.current = st.plan.pass_from(split, StreamCursor::start(st.epoch, n));
                    }
                }
            }
        })
        .boxed()
    }

    /// Every epoch's examples, shuffled when configured, in batches of `batch_size`.
    /// A batch never spans two epochs, so no example appears twice in one batch.
    pub fn stream(self: &Arc<Self>) -> BatchStream {
        let schema = self.output_schema();
        let plan = self.clone();
        let epochs = futures::stream::iter(0..self.epochs).map(move |epoch| plan.epoch_batches(epoch, Split::All));
        BatchStream::new(schema, epochs.flatten())
    }

    /// One epoch of one side of a split, shuffled when configured, in batches of `batch_size`.
    pub fn epoch_batches(self: &Arc<Self>, epoch: u32, split: Split) -> BatchStream {
        let schema = self.output_schema();
        let s = self.pass_from(split, StreamCursor::start(epoch, self.sources.len())).map(|r| r.map(|(b, _)| b));
        BatchStream::new(schema, s)
    }
}
