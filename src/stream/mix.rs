//! Weighted mixtures: the examples of several sources interleaved by a deterministic schedule.
//!
//! Position `n` of the mixture goes to the source `i` with the largest deficit
//! `w_i · (n + 1) − c_i` (`c_i`: examples taken from it so far; ties to the first listed). This
//! keeps every source within one example of its share over every prefix of the stream, needs
//! no random numbers (so it cannot drift), and its whole state is the counts, so a cursor of a
//! few integers restores it exactly. Each source's own examples arrive already shuffled in its
//! windows; the schedule only decides whose turn it is.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow::array::{ArrayRef, DictionaryArray, Int16Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int16Type, Schema, SchemaRef};
use datafusion::error::DataFusionError;
use futures::StreamExt;

use crate::error::{Error, Result};
use crate::spec::MixtureStop;
use crate::BatchStream;

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

/// The schedule's state: how many examples each member gave, and how often it restarted.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct MixState {
    /// Examples taken from each member in this pass.
    pub taken: Vec<u64>,
    /// How many times each member ran out and restarted in this pass.
    pub restarts: Vec<u32>,
}

impl MixState {
    pub fn new(n: usize) -> Self {
        MixState { taken: vec![0; n], restarts: vec![0; n] }
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

/// Opens member `i`'s examples for its `restart`-th pass (the caller maps that to an epoch).
pub type Opener = Arc<dyn Fn(usize, u32) -> BatchStream + Send + Sync>;

struct Member {
    stream: Option<BatchStream>,
    batch: Option<RecordBatch>,
    row: usize,
    /// Where `batch` sits in the chunk being assembled.
    slot: Option<usize>,
    done_once: bool,
}

struct Mixer {
    open: Opener,
    weights: Vec<f64>,
    stop: MixtureStop,
    schema: SchemaRef,
    names: ArrayRef,
    members: Vec<Member>,
    state: MixState,
    chunk: usize,
    counts: Arc<MixCounts>,
    finished: bool,
}

impl Mixer {
    /// Makes member `i`'s next row current: `Ok(false)` when the mixture ends here.
    async fn advance(&mut self, i: usize) -> Result<bool> {
        loop {
            let m = &mut self.members[i];
            if let Some(b) = &m.batch {
                if m.row < b.num_rows() {
                    return Ok(true);
                }
                m.batch = None;
                m.slot = None;
            }
            let stream = match m.stream.as_mut() {
                Some(s) => s,
                None => m.stream.insert((self.open)(i, self.state.restarts[i])),
            };
            match stream.next().await {
                Some(b) => {
                    let b = b.map_err(Error::from)?;
                    m.batch = Some(b);
                    m.row = 0;
                }
                None => {
                    // Member `i` ran out.
                    m.stream = None;
                    m.done_once = true;
                    let all_done = self.members.iter().zip(&self.weights).all(|(m, w)| m.done_once || *w <= 0.0);
                    let went_empty = self.state.taken[i] == 0;
                    match self.stop {
                        MixtureStop::FirstExhausted => return Ok(false),
                        MixtureStop::AllExhausted if all_done => return Ok(false),
                        _ if went_empty => {
                            return Err(Error::data(format!(
                                "mixture source #{i} produced no examples, so it cannot be cycled"
                            )))
                        }
                        _ => self.state.restarts[i] += 1,
                    }
                }
            }
        }
    }

    /// Up to `chunk` rows of the mixture; an empty batch when it ended.
    async fn next_chunk(&mut self) -> Result<Option<RecordBatch>> {
        if self.finished {
            return Ok(None);
        }
        let mut batches: Vec<RecordBatch> = Vec::new();
        for m in &mut self.members {
            m.slot = None;
        }
        let mut picks: Vec<(usize, usize)> = Vec::with_capacity(self.chunk);
        let mut members: Vec<i16> = Vec::with_capacity(self.chunk);
        while picks.len() < self.chunk {
            let Some(i) = self.state.next(&self.weights) else {
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
                    batches.push(m.batch.clone().expect("advance made a row current"));
                    m.slot = Some(batches.len() - 1);
                    batches.len() - 1
                }
            };
            picks.push((slot, m.row));
            m.row += 1;
            members.push(i as i16);
            self.state.taken[i] += 1;
            self.counts.examples[i].fetch_add(1, Ordering::Relaxed);
        }
        if picks.is_empty() {
            return Ok(None);
        }
        let refs: Vec<&RecordBatch> = batches.iter().collect();
        let mixed = arrow::compute::interleave_record_batch(&refs, &picks)?;
        let keys = Int16Array::from(members);
        let source: ArrayRef = Arc::new(DictionaryArray::<Int16Type>::try_new(keys, self.names.clone())?);
        let mut columns = mixed.columns().to_vec();
        columns.push(source);
        Ok(Some(RecordBatch::try_new(self.schema.clone(), columns)?))
    }
}

/// The mixture of the members `open` gives, in chunks of `chunk` rows, until `stop` says.
#[allow(clippy::too_many_arguments)]
pub fn mix(
    open: Opener,
    names: &[String],
    weights: &[f64],
    stop: MixtureStop,
    member_schema: &SchemaRef,
    chunk: usize,
    counts: Arc<MixCounts>,
    state: MixState,
) -> BatchStream {
    let schema = with_source(member_schema);
    let mixer = Mixer {
        open,
        weights: weights.to_vec(),
        stop,
        schema: schema.clone(),
        names: Arc::new(StringArray::from(names.to_vec())),
        members: (0..names.len())
            .map(|_| Member { stream: None, batch: None, row: 0, slot: None, done_once: false })
            .collect(),
        state,
        chunk: chunk.max(1),
        counts,
        finished: false,
    };
    let s = futures::stream::unfold(mixer, |mut m| async move {
        match m.next_chunk().await {
            Ok(Some(b)) => Some((Ok(b), m)),
            Ok(None) => None,
            Err(e) => {
                m.finished = true;
                Some((Err(DataFusionError::from(e)), m))
            }
        }
    });
    Box::pin(datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(schema, s))
}
