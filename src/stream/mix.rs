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

use super::cursor::{MemberPos, StreamCursor};
use crate::error::Result;
use crate::source::WindowStarts;
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
