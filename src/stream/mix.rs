//! The last stage: members' examples → batches of `batch_size`, each with the cursor after it.
//!
//! With several sources (a mixture), position `n` goes to the source `i` with the largest
//! deficit `w_i · (n + 1) − c_i` (`c_i`: examples taken from it so far; ties to the first
//! listed). This keeps every source within one example of its share over every prefix of the
//! stream and needs no random numbers, so it cannot drift. Each member's examples arrive in
//! windows (see `Plan::member_windows`), already shuffled; the stage counts how far into its
//! current window each member is, which with the window's start position and the schedule's
//! counts is the whole [`StreamCursor`]: restoring it regenerates one window per member, not
//! the stream before it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow::array::{ArrayRef, DictionaryArray, Int16Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int16Type, Schema, SchemaRef};
use futures::stream::BoxStream;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::source::{Blocks, ScanStart, Shard, WindowStarts};
use crate::spec::MixtureStop;

/// The `source` column: the member's name, dictionary-encoded.
pub fn source_field() -> Field {
    Field::new("source", DataType::Dictionary(Box::new(DataType::Int16), Box::new(DataType::Utf8)), false)
}

/// `schema` with the `source` column appended.
pub fn with_source(schema: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(source_field());
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// Examples delivered per member (all epochs), for metrics and summaries.
#[derive(Debug, Default)]
pub struct MixCounts {
    pub examples: Vec<AtomicU64>,
}

impl MixCounts {
    pub fn new(n: usize) -> Self {
        MixCounts { examples: (0..n).map(|_| AtomicU64::new(0)).collect() }
    }
}

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
    pub shard: Option<Shard>,
    /// The pass over the data (`stream.epochs` counts them).
    pub epoch: u32,
    /// Batches delivered in this pass.
    pub batches: u64,
    /// The pass is over: restoring gives the next pass.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub finished: bool,
    pub mix: MixState,
    /// Per source, in the order written.
    pub members: Vec<MemberPos>,
}

impl StreamCursor {
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
    /// [`crate::plan::Plan::rebalance`]).
    ///
    /// By rows, each old rank's unfinished windows up to the furthest any rank reached become
    /// leftovers dealt round-robin, and the windows after them are shared by the new world. By
    /// blocks, everything the old ranks had left becomes leftovers, dealt as contiguous runs of
    /// equally many windows. Mixture counts carry over (summed).
    pub fn rebalance(
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

/// Which part of a member's stream an item comes from: leftover `j`, or the member's own share.
pub const OWN: usize = usize::MAX;

/// Examples of one member tagged with their segment (see [`OWN`]) and window.
pub type Windows = BoxStream<'static, Result<(usize, u64, RecordBatch)>>;

/// Opens member `i`'s examples for its `restart`-th run in this pass, from `pos`, recording
/// window starts into the given table.
pub type Opener = Arc<dyn Fn(usize, u32, MemberPos, Arc<WindowStarts>) -> Windows + Send + Sync>;

struct Member {
    stream: Option<Windows>,
    starts: Arc<WindowStarts>,
    batch: Option<(usize, u64, RecordBatch)>,
    /// Leftovers of the opened stream already finished and dropped from `pos`.
    finished_leftovers: usize,
    row: usize,
    /// Where `batch` sits in the chunk being assembled.
    slot: Option<usize>,
    pos: MemberPos,
}

struct Mixer {
    open: Opener,
    weights: Vec<f64>,
    stop: MixtureStop,
    schema: SchemaRef,
    /// The member names, when the `source` column is added (a mixture).
    names: Option<ArrayRef>,
    members: Vec<Member>,
    cursor: StreamCursor,
    chunk: usize,
    counts: Arc<MixCounts>,
    finished: bool,
}

impl Mixer {
    /// Makes member `i`'s next row current: `Ok(false)` when the pass ends here.
    async fn advance(&mut self, i: usize) -> Result<bool> {
        loop {
            let m = &mut self.members[i];
            if let Some((seg, w, b)) = &m.batch {
                if m.row < b.num_rows() {
                    // Leftovers before this item's segment are finished.
                    let live = if *seg == OWN { usize::MAX } else { *seg };
                    while m.finished_leftovers < live && !m.pos.leftovers.is_empty() {
                        m.pos.leftovers.remove(0);
                        m.finished_leftovers += 1;
                    }
                    if *seg == OWN && *w != m.pos.window {
                        m.pos.window = *w;
                        m.pos.offset = 0;
                        m.pos.start = m.starts.get(*w).map(|s| s.at);
                    }
                    // A leftover over several windows moves on to the next.
                    if let Some(l) = m.pos.leftovers.first_mut().filter(|l| *seg != OWN && *w != l.window) {
                        l.window = *w;
                        l.offset = 0;
                        l.start = None;
                    }
                    return Ok(true);
                }
                m.batch = None;
                m.slot = None;
            }
            let stream = match m.stream.as_mut() {
                Some(s) => s,
                None => {
                    m.finished_leftovers = 0;
                    let s = (self.open)(i, self.cursor.mix.restarts[i], m.pos.clone(), m.starts.clone());
                    m.stream.insert(s)
                }
            };
            match stream.next().await {
                Some(item) => {
                    m.batch = Some(item?);
                    m.row = 0;
                }
                None => {
                    // Member `i` ran out.
                    m.stream = None;
                    m.pos = MemberPos::default();
                    m.starts = Arc::new(WindowStarts::default());
                    let mix = &mut self.cursor.mix;
                    mix.done[i] = true;
                    let all_done = mix.done.iter().zip(&self.weights).all(|(d, w)| *d || *w <= 0.0);
                    match self.stop {
                        MixtureStop::FirstExhausted => return Ok(false),
                        MixtureStop::AllExhausted if all_done => return Ok(false),
                        _ if mix.taken[i] == 0 && mix.restarts[i] == 0 => {
                            // A source with nothing to give cannot be cycled: end the pass.
                            return Ok(false);
                        }
                        _ => mix.restarts[i] += 1,
                    }
                }
            }
        }
    }

    /// The next `chunk` rows (fewer at the end of the pass) and the cursor after them.
    async fn next_chunk(&mut self) -> Result<Option<(RecordBatch, StreamCursor)>> {
        if self.finished || self.cursor.finished {
            return Ok(None);
        }
        let mut batches: Vec<RecordBatch> = Vec::new();
        for m in &mut self.members {
            m.slot = None;
        }
        let mut picks: Vec<(usize, usize)> = Vec::with_capacity(self.chunk);
        let mut members: Vec<i16> = Vec::with_capacity(self.chunk);
        while picks.len() < self.chunk {
            let Some(i) = self.cursor.mix.next(&self.weights) else {
                self.finished = true;
                break;
            };
            if !self.advance(i).await? {
                self.finished = true;
                break;
            }
            let m = &mut self.members[i];
            let slot = match m.slot {
                Some(s) => s,
                None => {
                    batches.push(m.batch.as_ref().map(|(_, _, b)| b.clone()).expect("advance made a row current"));
                    m.slot = Some(batches.len() - 1);
                    batches.len() - 1
                }
            };
            picks.push((slot, m.row));
            m.row += 1;
            match m.batch.as_ref().map(|(seg, _, _)| *seg) {
                Some(OWN) | None => m.pos.offset += 1,
                Some(_) => m.pos.leftovers[0].offset += 1,
            }
            members.push(i as i16);
            self.cursor.mix.taken[i] += 1;
        }
        if picks.is_empty() {
            return Ok(None);
        }
        let mut per_member = vec![0u64; self.members.len()];
        for &i in &members {
            per_member[i as usize] += 1;
        }
        for (c, n) in self.counts.examples.iter().zip(per_member) {
            c.fetch_add(n, Ordering::Relaxed);
        }
        // Consecutive rows of one batch (a single source, mostly) are a zero-copy slice.
        let (slot, first) = picks[0];
        let contiguous = picks.iter().enumerate().all(|(k, &(s, r))| s == slot && r == first + k);
        let mixed = if contiguous {
            batches[slot].slice(first, picks.len())
        } else {
            let refs: Vec<&RecordBatch> = batches.iter().collect();
            arrow::compute::interleave_record_batch(&refs, &picks)?
        };
        let mut columns = mixed.columns().to_vec();
        if let Some(names) = &self.names {
            let keys = Int16Array::from(members);
            columns.push(Arc::new(DictionaryArray::<Int16Type>::try_new(keys, names.clone())?));
        }
        self.cursor.batches += 1;
        self.cursor.finished = self.finished;
        self.cursor.members = self.members.iter().map(|m| m.pos.clone()).collect();
        Ok(Some((RecordBatch::try_new(self.schema.clone(), columns)?, self.cursor.clone())))
    }
}

/// One pass of the members `open` gives, from `cursor`, in batches of `chunk` rows, each with
/// the cursor after it; a mixture (`names.len() > 1`) adds the `source` column.
#[allow(clippy::too_many_arguments)]
pub fn mix(
    open: Opener,
    names: &[String],
    weights: &[f64],
    stop: MixtureStop,
    member_schema: &SchemaRef,
    chunk: usize,
    counts: Arc<MixCounts>,
    cursor: StreamCursor,
) -> BoxStream<'static, Result<(RecordBatch, StreamCursor)>> {
    let mixture = names.len() > 1;
    let schema = if mixture { with_source(member_schema) } else { member_schema.clone() };
    let mixer = Mixer {
        open,
        weights: weights.to_vec(),
        stop,
        schema,
        names: mixture.then(|| Arc::new(StringArray::from(names.to_vec())) as ArrayRef),
        members: cursor
            .members
            .iter()
            .map(|pos| Member {
                stream: None,
                starts: Arc::new(WindowStarts::default()),
                batch: None,
                finished_leftovers: 0,
                row: 0,
                slot: None,
                pos: pos.clone(),
            })
            .collect(),
        cursor,
        chunk: chunk.max(1),
        counts,
        finished: false,
    };
    futures::stream::unfold(mixer, |mut m| async move {
        match m.next_chunk().await {
            Ok(Some(item)) => Some((Ok(item), m)),
            Ok(None) => None,
            Err(e) => {
                m.finished = true;
                Some((Err(e), m))
            }
        }
    })
    .boxed()
}
