//! The data plane: source documents → tokenized (parallel, ordered) → packed rows → task
//! examples (parallel, ordered) → shuffle window → batches, for every epoch. Every stage is a
//! lazy [`BatchStream`]; CPU work runs on the blocking pool through [`SpawnedTask`], at most
//! `workers` batches in flight, results in input order, so output never depends on timing.

mod mix;
mod pack;
mod shuffle;

use std::future::Future;
use std::sync::Arc;

use arrow::array::{Array, AsArray, Int32Array, Int8Array, ListArray, RecordBatch, UInt64Array};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::runtime::SpawnedTask;
use datafusion::error::DataFusionError;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::{Stream, StreamExt};

use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::source::{ScanOptions, Split, WindowStarts};
use crate::task::TaskContext;
use crate::tokenize::{Encoded, Framing, TextTokenizer};
use crate::BatchStream;
pub use mix::{source_field, with_source, Leftover, MemberPos, MixCounts, MixState, StreamCursor};
pub use pack::{row_key, rows_schema, Packer, Packing};
pub use shuffle::WindowShuffle;

/// Schema of tokenized documents: `example_key`, `input_ids: List<Int32>`,
/// `special_tokens_mask: List<Int8>` and, when asked for, `word_ids: List<Int32>`.
pub fn tokens_schema(words: bool) -> SchemaRef {
    let mut fields = vec![
        Field::new("example_key", DataType::UInt64, false),
        Field::new("input_ids", DataType::List(Arc::new(Field::new("item", DataType::Int32, false))), false),
        Field::new("special_tokens_mask", DataType::List(Arc::new(Field::new("item", DataType::Int8, false))), false),
    ];
    if words {
        fields.push(Field::new(
            "word_ids",
            DataType::List(Arc::new(Field::new("item", DataType::Int32, false))),
            false,
        ));
    }
    Arc::new(Schema::new(fields))
}

/// Builds a tokenized batch from plain vectors (tests and benches).
pub fn tokenized_batch(keys: &[u64], ids: &[Vec<i32>], special: &[Vec<i8>], words: Option<&[Vec<i32>]>) -> RecordBatch {
    let offsets = OffsetBuffer::from_lengths(ids.iter().map(Vec::len));
    let mut cols: Vec<Arc<dyn Array>> = vec![
        Arc::new(UInt64Array::from(keys.to_vec())),
        Arc::new(ListArray::new(
            Arc::new(Field::new("item", DataType::Int32, false)),
            offsets.clone(),
            Arc::new(Int32Array::from(ids.concat())),
            None,
        )),
        Arc::new(ListArray::new(
            Arc::new(Field::new("item", DataType::Int8, false)),
            offsets.clone(),
            Arc::new(Int8Array::from(special.concat())),
            None,
        )),
    ];
    if let Some(w) = words {
        cols.push(Arc::new(ListArray::new(
            Arc::new(Field::new("item", DataType::Int32, false)),
            offsets,
            Arc::new(Int32Array::from(w.concat())),
            None,
        )));
    }
    RecordBatch::try_new(tokens_schema(words.is_some()), cols).expect("consistent test batch")
}

/// Tokenizes one batch of documents (`example_key`, `text`).
pub fn tokenize_batch(
    tok: &TextTokenizer,
    batch: &RecordBatch,
    framing: Framing,
    max_len: Option<usize>,
    words: bool,
) -> Result<RecordBatch> {
    let keys = batch.column(0).clone();
    let text = batch.column(1).as_string_view();
    let mut enc = Encoded::default();
    let mut offsets = Vec::with_capacity(text.len() + 1);
    offsets.push(0i32);
    for i in 0..text.len() {
        tok.encode_framed(text.value(i), framing, max_len, words, &mut enc)?;
        let end = i32::try_from(enc.ids.len())
            .map_err(|_| Error::data("a batch of documents has more than 2^31 tokens; lower the source batch size"))?;
        offsets.push(end);
    }
    let offsets = OffsetBuffer::new(offsets.into());
    let mut cols: Vec<Arc<dyn Array>> = vec![
        keys,
        Arc::new(ListArray::new(
            Arc::new(Field::new("item", DataType::Int32, false)),
            offsets.clone(),
            Arc::new(Int32Array::from(enc.ids)),
            None,
        )),
        Arc::new(ListArray::new(
            Arc::new(Field::new("item", DataType::Int8, false)),
            offsets.clone(),
            Arc::new(Int8Array::from(enc.special)),
            None,
        )),
    ];
    if words {
        cols.push(Arc::new(ListArray::new(
            Arc::new(Field::new("item", DataType::Int32, false)),
            offsets,
            Arc::new(Int32Array::from(enc.words)),
            None,
        )));
    }
    Ok(RecordBatch::try_new(tokens_schema(words), cols)?)
}

/// Applies `f` to every batch on the blocking pool, `workers` at a time, keeping input order.
pub fn ordered_map<F>(input: BatchStream, schema: SchemaRef, workers: usize, f: F) -> BatchStream
where
    F: Fn(RecordBatch) -> Result<RecordBatch> + Send + Sync + 'static,
{
    adapt(schema, ordered_blocking(input, workers, f))
}

/// Runs `f` on every item of `input` on the blocking pool, at most `workers` at once, and yields
/// the results in input order.
///
/// A task of its own pulls `input` and starts the jobs, so work goes on while the consumer is
/// busy elsewhere (writing a part, say). A `buffered` stream would start a job only when its
/// consumer polls it, and each stage would wait for the slowest one downstream. At most
/// `workers` finished results wait for the consumer. A failed job yields its error in its
/// place; a failed input ends the stream with its error; a panic in a job or while pulling the
/// input yields an error too, so the stream never ends early without one.
fn ordered_blocking<T, F>(
    input: impl Stream<Item = datafusion::error::Result<T>> + Send + 'static,
    workers: usize,
    f: F,
) -> impl Stream<Item = datafusion::error::Result<RecordBatch>> + Send + 'static
where
    T: Send + 'static,
    F: Fn(T) -> Result<RecordBatch> + Send + Sync + 'static,
{
    type Job = std::result::Result<SpawnedTask<Result<RecordBatch>>, DataFusionError>;
    enum St<S, F> {
        Idle(S, Arc<F>),
        Running(tokio::sync::mpsc::Receiver<Job>, Option<SpawnedTask<()>>),
    }
    let workers = workers.max(1);
    let start = St::Idle(Box::pin(input), Arc::new(f));
    // The driver is spawned on the first poll, inside the runtime that polls it.
    futures::stream::unfold(start, move |st| async move {
        let (mut rx, mut driver) = match st {
            St::Running(rx, driver) => (rx, driver),
            St::Idle(mut input, f) => {
                let (tx, rx) = tokio::sync::mpsc::channel::<Job>(workers);
                let permits = Arc::new(tokio::sync::Semaphore::new(workers));
                let driver = SpawnedTask::spawn(async move {
                    loop {
                        let Ok(permit) = permits.clone().acquire_owned().await else { return };
                        let job = match input.next().await {
                            None => return,
                            Some(Err(e)) => Err(e),
                            Some(Ok(item)) => {
                                let f = f.clone();
                                Ok(SpawnedTask::spawn_blocking(move || {
                                    let r = f(item);
                                    drop(permit);
                                    r
                                }))
                            }
                        };
                        let failed = job.is_err();
                        if tx.send(job).await.is_err() || failed {
                            return;
                        }
                    }
                });
                (rx, Some(driver))
            }
        };
        let out = match rx.recv().await {
            Some(Ok(job)) => match job.join().await {
                Ok(r) => r.map_err(DataFusionError::from),
                Err(e) => Err(DataFusionError::from(Error::internal(format!("a worker thread failed: {e}")))),
            },
            Some(Err(e)) => Err(e),
            // The channel closes when the driver ends: make sure it ended without a panic.
            None => match driver.take()?.join().await {
                Ok(()) => return None,
                Err(e) => Err(DataFusionError::from(Error::internal(format!("a pipeline stage failed: {e}")))),
            },
        };
        Some((out, St::Running(rx, driver)))
    })
    .fuse()
}

/// Text per tokenizer job. Rows come in batches of a fixed count, and a batch of long documents
/// can hold most of a corpus (one of 4096 rows held 11 of a corpus's 20 MB): as one job, it
/// would run on one core while the others wait.
const TOKENIZE_JOB_BYTES: usize = 512 << 10;

/// Cuts batches of documents (`example_key`, `text: Utf8View`) into zero-copy slices of at most
/// `max_bytes` of text (or one document, if longer).
fn split_text(input: BatchStream, max_bytes: usize) -> BatchStream {
    let schema = input.schema();
    let out = input
        .map(move |item| {
            let pieces = match item {
                Err(e) => vec![Err(e)],
                Ok(batch) => {
                    let text = batch.column(1).as_string_view();
                    let mut pieces = Vec::new();
                    let (mut start, mut bytes) = (0, 0);
                    for (i, view) in text.views().iter().enumerate() {
                        // The low 32 bits of a view are the string's length.
                        let len = *view as u32 as usize;
                        if i > start && bytes + len > max_bytes {
                            pieces.push(Ok(batch.slice(start, i - start)));
                            (start, bytes) = (i, 0);
                        }
                        bytes += len;
                    }
                    if start > 0 {
                        pieces.push(Ok(batch.slice(start, batch.num_rows() - start)));
                    } else {
                        pieces.push(Ok(batch));
                    }
                    pieces
                }
            };
            futures::stream::iter(pieces)
        })
        .flatten();
    adapt(schema, out)
}

/// A stream transform with state and an end-of-stream flush.
fn stateful<S, P, F, Fut>(input: BatchStream, schema: SchemaRef, state: S, push: P, finish: F) -> BatchStream
where
    S: Send + 'static,
    P: FnMut(&mut S, RecordBatch) -> Result<Vec<RecordBatch>> + Send + 'static,
    F: FnOnce(S) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Vec<RecordBatch>>> + Send + 'static,
{
    struct St<S, P, F> {
        input: BatchStream,
        state: Option<(S, P, F)>,
    }
    let s = futures::stream::unfold(St { input, state: Some((state, push, finish)) }, |mut st| async move {
        let (state, push, _) = st.state.as_mut()?;
        match st.input.next().await {
            Some(Ok(batch)) => {
                let r = push(state, batch);
                if r.is_err() {
                    st.state = None;
                }
                Some((r, st))
            }
            Some(Err(e)) => {
                st.state = None;
                Some((Err(Error::from(e)), st))
            }
            None => {
                let (state, _, finish) = st.state.take()?;
                Some((finish(state).await, st))
            }
        }
    })
    .map(|r: Result<Vec<RecordBatch>>| match r {
        Ok(v) => futures::stream::iter(v.into_iter().map(Ok)).left_stream(),
        Err(e) => futures::stream::iter(std::iter::once(Err(DataFusionError::from(e)))).right_stream(),
    })
    .flatten();
    Box::pin(RecordBatchStreamAdapter::new(schema, s))
}

fn adapt(
    schema: SchemaRef,
    s: impl Stream<Item = datafusion::error::Result<RecordBatch>> + Send + 'static,
) -> BatchStream {
    Box::pin(RecordBatchStreamAdapter::new(schema, s))
}

/// Rows a task's observer takes in between two snapshots.
const OBSERVED_ROWS: usize = 1024;

/// Image and table rows → examples: the task's observer (if any) sees every batch in scan order,
/// then `apply` runs on the blocking pool, `workers` batches at a time, in order.
fn record_examples(
    rows: BatchStream,
    task: Arc<dyn crate::task::Task>,
    cx: TaskContext,
    workers: usize,
) -> BatchStream {
    let schema = task.output_schema();
    let keys_of = |b: &RecordBatch| b.column(0).as_primitive::<arrow::datatypes::UInt64Type>().values().to_vec();
    let Some(mut observer) = task.observer(&cx) else {
        return ordered_map(rows, schema, workers, move |b| task.apply(&b, &keys_of(&b), &cx));
    };
    // What the observer has seen when a row is corrupted must not depend on how the source is
    // batched: it observes, and snapshots, every OBSERVED_ROWS rows of the window.
    let coalescer = arrow::compute::BatchCoalescer::new(rows.schema(), OBSERVED_ROWS);
    let rows = stateful(
        rows,
        coalescer.schema(),
        coalescer,
        |c, b| {
            c.push_batch(b)?;
            Ok(std::iter::from_fn(|| c.next_completed_batch()).collect())
        },
        |mut c| async move {
            c.finish_buffered_batch()?;
            Ok(c.next_completed_batch().into_iter().collect())
        },
    );
    let observed = rows.map(move |item| -> datafusion::error::Result<_> {
        let batch = item?;
        let seen = observer.observe(&batch).map_err(DataFusionError::from)?;
        Ok((batch, seen))
    });
    let out = ordered_blocking(observed, workers, move |(batch, seen)| {
        task.apply_observed(&batch, &keys_of(&batch), &cx, &seen)
    });
    adapt(schema, out)
}

/// How a pass is cut into windows and positions, which cursors and resumable exports depend on.
/// 2: Parquet sources without `sql` are read by row group, and their windows count positions.
/// 3: a task's observer snapshots every 1024 rows of a window, not after every source batch.
pub const STREAM_VERSION: u32 = 3;

/// Rows of the source per window when shuffling is off (see [`Plan::window_rows`]).
pub const DEFAULT_WINDOW_ROWS: u64 = 65_536;

/// Part of a member's stream: a shard's rows of some windows, from a scan position.
#[derive(Debug, Clone, Copy)]
struct Segment {
    shard: crate::source::Shard,
    start: Option<crate::source::ScanStart>,
    first: u64,
    last: Option<u64>,
    skip: u64,
}

/// A stream handing out the items of a shared, window-tagged scan one window at a time.
struct SharedScan {
    scan: futures::stream::BoxStream<'static, Result<(u64, RecordBatch)>>,
    peeked: Option<Result<(u64, RecordBatch)>>,
}

impl SharedScan {
    async fn peek_window(&mut self) -> Option<std::result::Result<u64, ()>> {
        if self.peeked.is_none() {
            self.peeked = self.scan.next().await;
        }
        match self.peeked.as_ref()? {
            Ok((w, _)) => Some(Ok(*w)),
            Err(_) => Some(Err(())),
        }
    }
}

/// The rows of window `w` from a shared scan, as a [`BatchStream`] of `schema`.
fn window_rows_of(shared: Arc<tokio::sync::Mutex<SharedScan>>, w: u64, schema: SchemaRef) -> BatchStream {
    let s = futures::stream::unfold(shared, move |shared| async move {
        let item = {
            let mut g = shared.lock().await;
            match g.peek_window().await? {
                Ok(x) if x != w => return None,
                _ => g.peeked.take()?,
            }
        };
        Some((item.map(|(_, b)| b).map_err(DataFusionError::from), shared))
    });
    adapt(schema, s)
}

impl Plan {
    /// The schema of the examples: the task's, with the `source` column of a mixture.
    pub fn output_schema(&self) -> SchemaRef {
        let schema = self.task.output_schema();
        if self.sources.len() > 1 {
            with_source(&schema)
        } else {
            schema
        }
    }

    /// Rows of the source per window: the unit of shuffling, sharding and resumption. Every
    /// `window_rows` rows of the split (counted over all ranks) make one window; packing starts
    /// afresh in each window, and its examples are shuffled in windows of `window_rows` examples.
    pub fn window_rows(&self) -> u64 {
        self.shuffle_window.map(|w| w as u64).unwrap_or(DEFAULT_WINDOW_ROWS)
    }

    /// Member `i`'s examples of one run over its data (`epoch`), from `pos`: its leftovers
    /// first (after an elastic resume), then its own share, each item tagged with its segment
    /// and window, shuffled inside each window when configured. Window starts go to `starts`.
    pub fn member_windows(
        self: &Arc<Self>,
        i: usize,
        epoch: u32,
        split: Split,
        pos: MemberPos,
        starts: Arc<WindowStarts>,
    ) -> mix::Windows {
        let mut segments: Vec<mix::Windows> = Vec::new();
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
        segments.push(self.segment(i, epoch, split, own, Some((starts, count)), mix::OWN));
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
    ) -> mix::Windows {
        let source = &self.sources[i];
        // With shuffling on, every epoch also reads the files in its own seeded order.
        let shuffle_seed = self
            .shuffle_window
            .map(|_| xxhash_rust::xxh3::xxh3_64_with_seed(&(epoch as u64).to_le_bytes(), self.seed ^ 0x4649_4c45));
        let opts = ScanOptions {
            shuffle_seed,
            count: own.as_ref().is_some_and(|o| o.1),
            split,
            start: seg.start.unwrap_or_default(),
            window_rows: self.window_rows(),
            from_window: seg.first,
            starts: own.map(|o| o.0),
        };
        let pretext = source.format == crate::spec::Format::Pretext;
        let scan = source.scan_windows(seg.shard, opts, pretext.then(|| self.task.output_schema()));
        let rows_schema = if pretext { self.task.output_schema() } else { source.scan_schema() };
        let shared = Arc::new(tokio::sync::Mutex::new(SharedScan { scan, peeked: None }));
        let plan = self.clone();
        let windows = futures::stream::unfold(shared, move |shared| {
            let plan = plan.clone();
            let rows_schema = rows_schema.clone();
            async move {
                loop {
                    let peeked = shared.lock().await.peek_window().await;
                    let w = match peeked? {
                        Ok(w) => w,
                        Err(()) => {
                            let e = shared.lock().await.peeked.take().and_then(|r| r.err())?;
                            let failed: mix::Windows = futures::stream::once(async move { Err(e) }).boxed();
                            return Some((failed, shared));
                        }
                    };
                    if seg.last.is_some_and(|l| w > l) {
                        return None;
                    }
                    let rows = window_rows_of(shared.clone(), w, rows_schema.clone());
                    if w < seg.first {
                        // Read past (another segment delivers this window).
                        let mut rows = rows;
                        while let Some(r) = rows.next().await {
                            if let Err(e) = r {
                                let failed: mix::Windows =
                                    futures::stream::once(async move { Err(Error::from(e)) }).boxed();
                                return Some((failed, shared));
                            }
                        }
                        continue;
                    }
                    let examples = plan.window_examples(i, epoch, w, rows, pretext);
                    let tagged: mix::Windows =
                        examples.map(move |r| r.map(|b| (tag, w, b)).map_err(Error::from)).boxed();
                    return Some((tagged, shared));
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

    /// The examples of window `w` of member `i`, made from the window's `rows`, shuffled.
    fn window_examples(
        self: &Arc<Self>,
        i: usize,
        epoch: u32,
        w: u64,
        rows: BatchStream,
        pretext: bool,
    ) -> BatchStream {
        let source = &self.sources[i];
        let schema = self.task.output_schema();
        let examples = if pretext {
            rows
        } else if source.input != crate::spec::TaskInput::Text {
            record_examples(rows, self.task.clone(), TaskContext { seed: self.seed, epoch }, self.workers)
        } else {
            let cx = TaskContext { seed: self.seed, epoch };
            let tok = self.tokenizer.clone();
            let max_len = if self.packing == Packing::PerDocument { Some(self.row_len) } else { None };
            let (words, framing) = (self.whole_word, self.framing);
            let rows = split_text(rows, TOKENIZE_JOB_BYTES);
            let tokens = ordered_map(rows, tokens_schema(words), self.workers, move |b| {
                tokenize_batch(&tok, &b, framing, max_len, words)
            });
            let packer = Packer::with_mode(self.row_len, self.packing, words, self.pad_id);
            let packed = stateful(
                tokens,
                packer.schema(),
                packer,
                |p, b| Ok(p.push(&b)?.into_iter().collect()),
                |mut p| async move { Ok(p.finish()?.into_iter().collect()) },
            );
            let task = self.task.clone();
            ordered_map(packed, schema.clone(), self.workers, move |b| {
                let keys = b.column(0).as_primitive::<arrow::datatypes::UInt64Type>().values().to_vec();
                task.apply(&b, &keys, &cx)
            })
        };
        match self.shuffle_window {
            None => examples,
            Some(size) => {
                // Each window draws its own permutations.
                let seed = xxhash_rust::xxh3::xxh3_64_with_seed(&w.to_le_bytes(), self.seed ^ 0x5749_4e44);
                let sh = WindowShuffle::new(size, seed, epoch);
                stateful(
                    examples,
                    schema,
                    sh,
                    |s, b| s.push(b),
                    |mut s| async move { Ok(s.flush()?.into_iter().collect()) },
                )
            }
        }
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
        let open: mix::Opener = Arc::new(move |i, restart, pos, starts| {
            plan.member_windows(i, epoch + restart * epochs, split, pos, starts)
        });
        let names: Vec<String> = self.sources.iter().map(|s| s.name.clone().unwrap_or_default()).collect();
        mix::mix(
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
    /// (see [`StreamCursor::rebalance`]).
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
        adapt(schema, epochs.flatten())
    }

    /// One epoch of one side of a split, shuffled when configured, in batches of `batch_size`.
    pub fn epoch_batches(self: &Arc<Self>, epoch: u32, split: Split) -> BatchStream {
        let schema = self.output_schema();
        let s = self
            .pass_from(split, StreamCursor::start(epoch, self.sources.len()))
            .map(|r| r.map(|(b, _)| b).map_err(DataFusionError::from));
        adapt(schema, s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::StringViewArray;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn docs(texts: &[&str]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("example_key", DataType::UInt64, false),
            Field::new("text", DataType::Utf8View, false),
        ]));
        let keys = UInt64Array::from_iter_values(0..texts.len() as u64);
        RecordBatch::try_new(schema, vec![Arc::new(keys), Arc::new(StringViewArray::from(texts.to_vec()))]).unwrap()
    }

    fn from_batches(batches: Vec<datafusion::error::Result<RecordBatch>>) -> BatchStream {
        let schema = batches.iter().find_map(|b| b.as_ref().ok()).map(|b| b.schema()).unwrap();
        adapt(schema, futures::stream::iter(batches))
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
    }

    #[test]
    fn text_is_cut_into_jobs_of_bounded_size_without_losing_a_row() {
        let texts = ["aaaa", "bb", "cccccccccc", "d", "ee", "", "ffff"];
        let batch = docs(&texts);
        let out: Vec<RecordBatch> = rt().block_on(async {
            split_text(from_batches(vec![Ok(batch.clone()), Ok(docs(&[]))]), 6).map(|b| b.unwrap()).collect().await
        });
        let sizes: Vec<Vec<usize>> =
            out.iter().map(|b| b.column(1).as_string_view().iter().map(|s| s.unwrap().len()).collect()).collect();
        // At most 6 bytes a piece, a longer document alone; the empty batch passes through.
        assert_eq!(sizes, vec![vec![4, 2], vec![10], vec![1, 2, 0], vec![4], vec![]]);
        let rows: Vec<&RecordBatch> = out.iter().filter(|b| b.num_rows() > 0).collect();
        let joined = arrow::compute::concat_batches(&batch.schema(), rows).unwrap();
        assert_eq!(joined, batch);
    }

    #[test]
    fn ordered_jobs_keep_input_order_whatever_their_durations() {
        let batches: Vec<_> = (0..24u64).map(|i| Ok(docs(&[&i.to_string()]))).collect();
        let out: Vec<u64> = rt().block_on(async {
            let s = ordered_blocking(futures::stream::iter(batches), 3, |b: RecordBatch| {
                let n: u64 = b.column(1).as_string_view().value(0).parse().unwrap();
                std::thread::sleep(std::time::Duration::from_millis((n * 7) % 11));
                Ok(b)
            });
            s.map(|b| b.unwrap().column(1).as_string_view().value(0).parse::<u64>().unwrap()).collect().await
        });
        assert_eq!(out, (0..24).collect::<Vec<_>>());
    }

    #[test]
    fn jobs_run_ahead_while_the_consumer_is_busy_but_only_so_far() {
        let done = Arc::new(AtomicUsize::new(0));
        let counted = done.clone();
        let ran = rt().block_on(async move {
            let batches: Vec<_> = (0..100).map(|_| Ok(docs(&["x"]))).collect();
            let mut s = Box::pin(ordered_blocking(futures::stream::iter(batches), 2, move |b| {
                counted.fetch_add(1, Ordering::SeqCst);
                Ok(b)
            }));
            s.next().await.unwrap().unwrap();
            // The consumer is away: the stage goes on without being polled.
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            done.load(Ordering::SeqCst)
        });
        // One delivered, `workers` waiting in the channel, one waiting to be sent.
        assert!((3..=5).contains(&ran), "{ran} jobs ran");
    }

    #[test]
    fn a_failed_input_a_failed_job_or_a_panic_ends_the_stream_with_an_error() {
        let rt = rt();
        let ok = || Ok(docs(&["x"]));
        let collect = |s: futures::stream::BoxStream<'static, datafusion::error::Result<RecordBatch>>| {
            rt.block_on(s.collect::<Vec<_>>())
        };
        let failed_input = vec![ok(), Err(DataFusionError::Execution("bad row group".into())), ok()];
        let out = collect(ordered_blocking(futures::stream::iter(failed_input), 2, Ok).boxed());
        assert_eq!(out.len(), 2);
        assert!(out[1].as_ref().unwrap_err().to_string().contains("bad row group"));

        let out = collect(
            ordered_blocking(futures::stream::iter(vec![ok(), ok(), ok()]), 2, |b: RecordBatch| {
                if b.num_rows() == 1 {
                    Err(Error::data("a job failed"))
                } else {
                    Ok(b)
                }
            })
            .boxed(),
        );
        assert!(out[0].as_ref().unwrap_err().to_string().contains("a job failed"));

        let out = collect(
            ordered_blocking(futures::stream::iter(vec![ok()]), 2, |_: RecordBatch| -> Result<RecordBatch> {
                panic!("boom")
            })
            .boxed(),
        );
        assert!(out[0].as_ref().unwrap_err().to_string().contains("worker thread failed"), "{out:?}");

        // A panic while pulling the input must not pass for the end of the stream.
        let panicking = futures::stream::iter(0..3).map(move |i| {
            assert!(i < 1, "the input panicked");
            ok()
        });
        let out = collect(ordered_blocking(panicking, 2, Ok).boxed());
        assert!(out.last().unwrap().as_ref().unwrap_err().to_string().contains("stage failed"), "{out:?}");
    }
}
