//! Scanning a source: the items of a pass (row groups, or whole files) in their order (seeded
//! per epoch when shuffling), a saved position sought without reading what lies before it, the
//! next items opened ahead while one streams, and each batch read handed to [`RowReader`] for
//! its rows and their windows.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::runtime::SpawnedTask;
use datafusion::prelude::SessionContext;
use futures::StreamExt;

use super::frame::{frame, new_context, partition_values, provably_empty, FrameError};
use super::layout::{read_failed, Shard};
use super::open::Source;
use super::position::{ScanStart, WindowStarts};
use super::row_groups::ObjectCache;
use super::rows::RowReader;
use super::split::{split_windows, Sharder, Split};
use crate::error::{Error, Result};
use crate::ground::batches::BatchStream;
use crate::spec::{Format, TaskInput};

/// How to scan: see [`Source::scan`].
#[derive(Debug, Clone, Default)]
pub struct ScanOptions {
    pub shuffle_seed: Option<u64>,
    pub count: bool,
    /// Which documents: all, or one side of a held-out split.
    pub split: Split,
    /// Where to begin (default: the start of the epoch).
    pub start: ScanStart,
    /// Rows of the split per window (see [`Source::scan_windows`]); 0: one window.
    pub window_rows: u64,
    /// The first window wanted: a scan sharded by blocks seeks to it without reading the rows
    /// before it.
    pub from_window: u64,
    /// Receives where each window begins, as the scan reaches it.
    pub starts: Option<Arc<WindowStarts>>,
}

impl Source {
    /// Streams the documents of `shard`, lazily: nothing is read before the first poll.
    /// `opts.shuffle` permutes the file order with a seed (per epoch); `opts.count` adds to
    /// [`SourceStats`] (once per run, not per epoch).
    pub fn scan(&self, shard: Shard, opts: ScanOptions) -> BatchStream {
        let schema = self.scan_schema();
        BatchStream::new(schema, self.scan_inner(shard, opts, None).map(|r| r.map(|(_, b)| b)))
    }

    /// Like [`Source::scan`] (or ready-made examples of schema `examples`), from `opts.start`,
    /// each batch tagged with its window: the split's rows `w · window_rows ..` (counted over
    /// all ranks) form window `w`, so windows are the same for every world size. A batch never
    /// spans two windows.
    pub fn scan_windows(
        &self,
        shard: Shard,
        opts: ScanOptions,
        examples: Option<SchemaRef>,
    ) -> futures::stream::BoxStream<'static, Result<(u64, RecordBatch)>> {
        self.scan_inner(shard, opts, examples)
    }

    fn scan_inner(
        &self,
        shard: Shard,
        opts: ScanOptions,
        examples: Option<SchemaRef>,
    ) -> futures::stream::BoxStream<'static, Result<(u64, RecordBatch)>> {
        // What a pass reads in order: files, or row groups when the source has them.
        let n = self.row_groups.as_ref().map(|u| u.groups.len()).unwrap_or(self.files.len());
        let mut order: Vec<usize> = (0..n).collect();
        if let Some(seed) = opts.shuffle_seed {
            use rand::seq::SliceRandom;
            use rand::SeedableRng;
            order.shuffle(&mut rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed));
        }
        let window_rows = if opts.window_rows == 0 { u64::MAX } else { opts.window_rows };
        // Row groups of the whole split: ranks take blocks of the pass's rows (positions), so
        // each opens only the row groups of its block.
        let blocks = self.blocks(opts.split);
        let mut bases = Vec::new();
        let mut start = opts.start;
        if let (Some(units), Some(blocks)) = (&self.row_groups, blocks) {
            let mut at = 0;
            for &g in &order {
                bases.push(at);
                at += units.groups[g].rows;
            }
            // Seek to the block, the first window asked for, or the saved start, whichever is last.
            let block = blocks.range(shard);
            let from = block.start.max(opts.from_window.saturating_mul(window_rows)).max(opts.start.ordinal);
            if from > opts.start.ordinal || opts.start == ScanStart::default() {
                let k = if from >= units.rows { order.len() } else { bases.partition_point(|&b| b <= from) - 1 };
                let row = match order.get(k) {
                    Some(&g) => units.groups[g].first_row + (from - bases[k]),
                    None => 0,
                };
                let counts = (from == opts.start.ordinal).then_some(opts.start.counts).flatten();
                start = ScanStart { file: k as u64, row, ordinal: from, counts };
            }
        }
        if opts.count {
            self.stats.restore(start.counts.unwrap_or_default());
        }
        let source = Arc::new(self.clone());
        let state = ScanState {
            source: source.clone(),
            first: None,
            prefetch: std::collections::VecDeque::new(),
            ahead: match (&self.remote, self.format) {
                (Some(_), _) => Ahead { items: REMOTE_AHEAD, bytes: REMOTE_AHEAD_BYTES, first_any_size: true },
                (None, Format::Pretext) => Ahead { items: READY_AHEAD, bytes: u64::MAX, first_any_size: true },
                (None, _) => Ahead { items: 1, bytes: LOCAL_AHEAD_BYTES, first_any_size: false },
            },
            ctx: new_context(self.remote.as_ref()),
            columns: Arc::new(self.columns.read(examples.as_ref())),
            cache: self.row_groups.as_ref().and_then(|u| u.scan_cache(opts.shuffle_seed.is_none())),
            order,
            bases,
            next_file: start.file as usize,
            current: None,
            rows: RowReader {
                source,
                count: opts.count,
                counted_current: false,
                sharder: Sharder {
                    ordinal: start.ordinal,
                    shard,
                    split: opts.split,
                    window_rows,
                    starts: opts.starts.clone(),
                    file: start.file,
                    block: blocks.map(|b| b.range(shard)),
                    recorded: None,
                    base: 0,
                },
            },
            skip: start,
            examples,
            ready: std::collections::VecDeque::new(),
        };
        let stream = futures::stream::try_unfold(state, |mut st| async move {
            loop {
                if let Some(item) = st.ready.pop_front() {
                    return Ok(Some((item, st)));
                }
                if let Some((stream, file_idx, row)) = st.current.as_mut() {
                    let next = match st.first.take() {
                        Some(b) => Some(Ok(b)),
                        None => stream.next().await,
                    };
                    match next {
                        Some(batch) => {
                            let batch = batch
                                .map_err(|e| read_failed(&st.source.files[*file_idx].path.display().to_string(), e))?;
                            let mut start = *row;
                            *row += batch.num_rows() as u64;
                            let fi = *file_idx;
                            let mut batch = batch;
                            // Resuming inside this file: its first rows were delivered before.
                            if st.rows.sharder.file == st.skip.file && start < st.skip.row {
                                let drop = (st.skip.row - start).min(batch.num_rows() as u64) as usize;
                                batch = batch.slice(drop, batch.num_rows() - drop);
                                start += drop as u64;
                                if batch.num_rows() == 0 {
                                    continue;
                                }
                            }
                            let (out, windows) = match st.examples.clone() {
                                Some(schema) => st.rows.examples(&batch, fi, start, &schema)?,
                                None if st.source.columns.input == TaskInput::Text => {
                                    st.rows.documents(&batch, fi, start)?
                                }
                                None => st.rows.records(&batch, fi, start)?,
                            };
                            st.ready.extend(split_windows(&out, &windows)?);
                            continue;
                        }
                        None => st.current = None,
                    }
                }
                if st.next_file >= st.order.len() || st.past_block(st.next_file) {
                    return Ok(None);
                }
                let k = st.next_file;
                let item = st.order[k];
                st.rows.sharder.file = k as u64;
                st.next_file += 1;
                // Where reading starts in this item (a resumed scan starts inside one).
                let skip = if k as u64 == st.skip.file { st.skip.row } else { 0 };
                // The item opened ahead while the previous one streamed, or opened now; either
                // way the items after it start opening before it is awaited.
                if !matches!(st.prefetch.front(), Some((p, _)) if *p == k && skip == 0) {
                    st.prefetch.clear();
                    let (source, ctx, columns) = (st.source.clone(), st.ctx.clone(), st.columns.clone());
                    let task = SpawnedTask::spawn(open_item(source, ctx, columns, st.cache.clone(), item, skip));
                    st.prefetch.push_back((k, task));
                }
                let mut next = st.prefetch.back().map(|(p, _)| p + 1).unwrap_or(k + 1);
                // Items opened ahead: see `ScanState::ahead`.
                let bytes_of = |st: &ScanState, k: usize| match &st.source.row_groups {
                    Some(units) => units.group_bytes(units.groups[st.order[k]]),
                    None => st.source.files[st.order[k]].bytes,
                };
                let ahead = st.ahead;
                let mut in_flight: u64 = st.prefetch.iter().skip(1).map(|(p, _)| bytes_of(&st, *p)).sum();
                while st.prefetch.len() <= ahead.items
                    && next < st.order.len()
                    && !st.past_block(next)
                    && ((ahead.first_any_size && st.prefetch.len() == 1)
                        || in_flight.saturating_add(bytes_of(&st, next)) <= ahead.bytes)
                {
                    in_flight += bytes_of(&st, next);
                    let (source, ctx, columns) = (st.source.clone(), st.ctx.clone(), st.columns.clone());
                    let item = st.order[next];
                    let task = SpawnedTask::spawn(open_item(source, ctx, columns, st.cache.clone(), item, 0));
                    st.prefetch.push_back((next, task));
                    next += 1;
                }
                let (_, task) = st.prefetch.pop_front().expect("the current item was just queued");
                let opened =
                    task.join().await.map_err(|e| Error::internal(format!("opening a file stopped: {e}")))??;
                let (fi, first_group) = match &st.source.row_groups {
                    Some(units) => {
                        let g = units.groups[item];
                        st.rows.sharder.base = st.bases.get(k).map(|b| b.wrapping_sub(g.first_row)).unwrap_or(0);
                        (g.file, g.index == 0)
                    }
                    None => (item, true),
                };
                match opened {
                    Opened::Pruned => {
                        if st.rows.count {
                            st.source.stats.files_pruned.fetch_add(1, Ordering::Relaxed);
                        }
                        continue;
                    }
                    Opened::Stream(stream, first) => {
                        // A file counts as read with its first row group.
                        st.rows.counted_current = first_group;
                        if st.rows.count && st.rows.counted_current {
                            st.source.stats.files_read.fetch_add(1, Ordering::Relaxed);
                        }
                        let row = match &st.source.row_groups {
                            Some(units) => units.groups[item].first_row.max(skip),
                            None => 0,
                        };
                        st.current = Some((stream, fi, row));
                        st.first = first;
                    }
                }
            }
        });
        Box::pin(stream)
    }
}

/// A file made ready to stream: its first batch already read (so the footer and the first
/// row group are fetched), or pruned by `sql` on its partition values.
enum Opened {
    Pruned,
    Stream(BatchStream, Option<RecordBatch>),
}

/// Opens item `item` of a pass (a row group, or a file when the source has none) from its row
/// `skip` (counted in its file) and reads its first batch.
async fn open_item(
    source: Arc<Source>,
    ctx: SessionContext,
    columns: Arc<Vec<String>>,
    cache: Option<Arc<ObjectCache>>,
    item: usize,
    skip: u64,
) -> Result<Opened> {
    let mut stream = match &source.row_groups {
        Some(units) => {
            let g = units.groups[item];
            let f = &source.files[g.file];
            source.stats.row_groups_opened.fetch_add(1, Ordering::Relaxed);
            let constants = partition_values(f, source.delta.as_ref())
                .map_err(|e| Error::data(format!("partition values of `{}`: {e}", f.relative)))?;
            units.open(g, skip.saturating_sub(g.first_row), &columns, &constants, f, cache.as_deref())?
        }
        None => {
            let f = &source.files[item];
            // `source.sql` names the file's table `source`: each open registers it in a context
            // of its own, as items open concurrently (ahead, and on a store 16 at a time).
            let ctx = if source.sql.is_some() { new_context(source.remote.as_ref()) } else { ctx };
            let df = frame(&ctx, f, source.reading()).await.map_err(|e| match e {
                FrameError::Read(e) => {
                    Error::data(format!("cannot read `{}`: {}", f.path.display(), e.strip_backtrace()))
                }
                FrameError::Sql(m, _) => Error::data(format!("`source.sql` on `{}`: {m}", f.relative)),
            })?;
            if source.sql.is_some() && !f.partitions.is_empty() {
                let plan = df
                    .clone()
                    .into_optimized_plan()
                    .map_err(|e| Error::data(format!("`source.sql` on `{}`: {}", f.relative, e.strip_backtrace())))?;
                if provably_empty(&plan) {
                    return Ok(Opened::Pruned);
                }
            }
            let stream = df
                .execute_stream()
                .await
                .map_err(|e| Error::data(format!("cannot read `{}`: {}", f.path.display(), e.strip_backtrace())))?;
            BatchStream::from_datafusion(stream)
        }
    };
    let path = || match &source.row_groups {
        Some(units) => source.files[units.groups[item].file].path.display().to_string(),
        None => source.files[item].path.display().to_string(),
    };
    let first = match stream.next().await {
        Some(b) => Some(b.map_err(|e| read_failed(&path(), e))?),
        None => None,
    };
    Ok(Opened::Stream(stream, first))
}

/// Items (row groups or files) of an object store opened ahead of the one streaming.
const REMOTE_AHEAD: usize = 16;

/// Local row groups of text (or images, or tables) are opened ahead only while this small:
/// the page cache makes local reads quick, and a large one held open ahead (a whole file, for
/// files written as one row group) was the largest term in peak memory that grew with the
/// corpus (two row groups' bytes and pages alive instead of one).
const LOCAL_AHEAD_BYTES: u64 = 4 << 20;

/// Local row groups of ready-made examples opened (that is, decoded) ahead of the one
/// streaming. Their rows are handed on without further work, so with one ahead the next
/// decode started only as the current one was taken, and a 2-core pass ran on 1.4 cores.
const READY_AHEAD: usize = 2;

/// Bytes (compressed) of those items at most.
const REMOTE_AHEAD_BYTES: u64 = 64 << 20;

/// How far a scan opens items ahead of the one streaming.
#[derive(Debug, Clone, Copy)]
struct Ahead {
    /// Items at most.
    items: usize,
    /// Their compressed bytes at most, all together.
    bytes: u64,
    /// Whether the first item ahead is opened whatever its size.
    first_any_size: bool,
}

struct ScanState {
    source: Arc<Source>,
    /// The current item's first batch, read when it was opened.
    first: Option<RecordBatch>,
    /// The next items in the order (by position), being opened while the current one streams.
    prefetch: std::collections::VecDeque<(usize, SpawnedTask<Result<Opened>>)>,
    /// How far to open ahead.
    ahead: Ahead,
    ctx: SessionContext,
    /// The columns read from row groups.
    columns: Arc<Vec<String>>,
    /// Whole small objects fetched in this scan, for their other row groups.
    cache: Option<Arc<ObjectCache>>,
    /// The pass's items: row groups of `source.row_groups`, or files.
    order: Vec<usize>,
    /// With blocks: the position of each item's first row in the pass.
    bases: Vec<u64>,
    next_file: usize,
    current: Option<(BatchStream, usize, u64)>,
    /// Which rows of the current item the pass keeps.
    rows: RowReader,
    /// Where a resumed scan begins: rows before it in its file are dropped.
    skip: ScanStart,
    /// `Some(task schema)` when reading ready-made examples.
    examples: Option<SchemaRef>,
    /// Window-tagged batches ready to hand out.
    ready: std::collections::VecDeque<(u64, RecordBatch)>,
}

impl ScanState {
    /// Whether the item at position `k` lies past the shard's block.
    fn past_block(&self, k: usize) -> bool {
        matches!((&self.rows.sharder.block, self.bases.get(k)), (Some(b), Some(&base)) if base >= b.end)
    }
}
