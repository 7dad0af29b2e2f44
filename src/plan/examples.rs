//! A window's examples: its rows tokenized (in jobs of bounded size, on the blocking pool),
//! packed into rows of the task's length and made into examples, or for image and table rows
//! handed to the task (after its observer, if it has one); then shuffled inside the window.

use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch};
use futures::StreamExt;

use super::Plan;
use crate::error::Result;
use crate::ground::batches::BatchStream;
use crate::ground::seeds;
use crate::spec::TaskInput;
use crate::stream::{ordered_blocking, ordered_map, stateful, Packer, Packing, WindowShuffle};
use crate::task::{Task, TaskContext};
use crate::tokenize::batch::{split_text, tokenize_batch, tokens_schema, TOKENIZE_JOB_BYTES};

impl Plan {
    /// The examples of window `w` of member `i`, made from the window's `rows`, shuffled.
    pub(super) fn window_examples(
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
        } else if source.columns.input != TaskInput::Text {
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
                let seed = seeds::window(self.seed, w);
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
}

/// Rows a task's observer takes in between two snapshots.
const OBSERVED_ROWS: usize = 1024;

/// Image and table rows → examples: the task's observer (if any) sees every batch in scan order,
/// then `apply` runs on the blocking pool, `workers` batches at a time, in order.
fn record_examples(rows: BatchStream, task: Arc<dyn Task>, cx: TaskContext, workers: usize) -> BatchStream {
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
    let observed = rows.map(move |item| -> Result<_> {
        let batch = item?;
        let seen = observer.observe(&batch)?;
        Ok((batch, seen))
    });
    let out = ordered_blocking(observed, workers, move |(batch, seen)| {
        task.apply_observed(&batch, &keys_of(&batch), &cx, &seen)
    });
    BatchStream::new(schema, out)
}
