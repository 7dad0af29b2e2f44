//! Pretext objectives. A [`Task`] turns a batch of fixed-length token rows into examples; it is
//! stateless per batch and draws every random decision from a per-example RNG seeded by
//! `(seed, epoch, example_key)`, so output never depends on how work was split across threads.

pub mod causal;
pub mod contrastive;
pub mod denoise;
pub mod mlm;
pub mod span;
pub mod tabular;
pub mod vision;

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, FixedSizeListArray, Int32Array, RecordBatch};
use arrow::datatypes::{ArrowPrimitiveType, DataType, Field, Int32Type, SchemaRef};
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::error::{Error, Result};

/// What a task may depend on besides its batch.
#[derive(Debug, Clone, Copy)]
pub struct TaskContext {
    pub seed: u64,
    pub epoch: u32,
}

impl TaskContext {
    /// The RNG of one example: a pure function of `(seed, epoch, key)`.
    pub fn rng(&self, key: u64) -> Xoshiro256PlusPlus {
        Xoshiro256PlusPlus::seed_from_u64(crate::ground::seeds::example(self.seed, self.epoch, key))
    }
}

/// A pretext objective applied to rows of `seq_len` tokens.
pub trait Task: Send + Sync {
    /// The Arrow schema of the examples this task produces.
    fn output_schema(&self) -> SchemaRef;
    /// Turns token rows (see [`crate::stream::rows_schema`]) into examples. `keys` are the rows'
    /// `example_key`s, the only input to their randomness besides `cx`.
    fn apply(&self, batch: &RecordBatch, keys: &[u64], cx: &TaskContext) -> Result<RecordBatch>;
    /// A sequential stage that sees every input batch of an epoch in scan order before `apply`
    /// (SCARF's per-column marginals). Default: none.
    fn observer(&self, _cx: &TaskContext) -> Option<Box<dyn Observer>> {
        None
    }
    /// `apply` with what the observer returned for this batch.
    fn apply_observed(
        &self,
        batch: &RecordBatch,
        keys: &[u64],
        cx: &TaskContext,
        _seen: &Observed,
    ) -> Result<RecordBatch> {
        self.apply(batch, keys, cx)
    }
}

/// What an [`Observer`] hands to [`Task::apply_observed`] for one batch.
pub type Observed = Arc<dyn std::any::Any + Send + Sync>;

/// State a task builds up over the stream, in scan order.
pub trait Observer: Send {
    /// Sees the next input batch and returns the state its examples are made with.
    fn observe(&mut self, batch: &RecordBatch) -> Result<Observed>;
}

/// A non-null `FixedSizeList<Int32>` column of `width` from contiguous values (no per-element work).
pub fn fixed_list(values: Vec<i32>, width: usize) -> ArrayRef {
    let field = Arc::new(Field::new("item", DataType::Int32, false));
    Arc::new(FixedSizeListArray::new(field, width as i32, Arc::new(Int32Array::from(values)), None))
}

/// The field of a `FixedSizeList<Int32>` column of `width`.
pub fn fixed_list_field(name: &str, width: usize) -> Field {
    Field::new(name, DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Int32, false)), width as i32), false)
}

/// The flat values of a `FixedSizeList<Int32>` column.
pub fn list_values<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a [i32]> {
    primitive_list_values::<Int32Type>(batch, name)
}

/// The flat values of a non-null `FixedSizeList` column of primitive `T`.
pub fn primitive_list_values<'a, T: ArrowPrimitiveType>(batch: &'a RecordBatch, name: &str) -> Result<&'a [T::Native]> {
    let col = batch
        .column_by_name(name)
        .ok_or_else(|| Error::internal(format!("column `{name}` missing from task input")))?;
    let list = col.as_fixed_size_list_opt().ok_or_else(|| {
        Error::internal(format!("column `{name}` is {}, expected a fixed-size list", col.data_type()))
    })?;
    let values = list
        .values()
        .as_primitive_opt::<T>()
        .ok_or_else(|| Error::internal(format!("column `{name}` does not hold {}", T::DATA_TYPE)))?;
    let start = list.offset() * list.value_length() as usize;
    Ok(&values.values()[start..start + list.len() * list.value_length() as usize])
}

/// One per-document row split into its framing: `ids[..lead]` are leading special tokens
/// (`[CLS]`), `ids[lead..real - trail]` the body, `ids[real - trail..real]` the trailing ones.
pub struct FramedRow<'a> {
    pub ids: &'a [i32],
    pub lead: usize,
    pub real: usize,
    pub trail: usize,
}

impl<'a> FramedRow<'a> {
    pub fn prefix(&self) -> &'a [i32] {
        &self.ids[..self.lead]
    }
    pub fn body(&self) -> &'a [i32] {
        &self.ids[self.lead..self.real - self.trail]
    }
    pub fn suffix(&self) -> &'a [i32] {
        &self.ids[self.real - self.trail..self.real]
    }
}

/// The rows of a per-document batch (`input_ids`, `special_tokens_mask`, `attention_mask` of
/// `width`), split into framing and body.
pub fn framed_rows(batch: &RecordBatch, width: usize) -> Result<Vec<FramedRow<'_>>> {
    let ids = list_values(batch, "input_ids")?;
    let special = list_values(batch, "special_tokens_mask")?;
    let attention = list_values(batch, "attention_mask")?;
    Ok((0..batch.num_rows())
        .map(|row| {
            let r = row * width..(row + 1) * width;
            let (ids, special, att) = (&ids[r.clone()], &special[r.clone()], &attention[r]);
            let real = att.iter().take_while(|&&a| a != 0).count();
            let lead = special[..real].iter().take_while(|&&s| s != 0).count();
            let trail = special[lead..real].iter().rev().take_while(|&&s| s != 0).count();
            FramedRow { ids, lead, real, trail }
        })
        .collect())
}

/// Appends `values` cut to `width` and padded with `pad` to `ids`, and its attention to `mask`.
pub fn push_padded(ids: &mut Vec<i32>, mask: &mut Vec<i32>, values: &[i32], width: usize, pad: i32) {
    let len = values.len().min(width);
    ids.extend_from_slice(&values[..len]);
    ids.extend(std::iter::repeat_n(pad, width - len));
    mask.extend(std::iter::repeat_n(1, len));
    mask.extend(std::iter::repeat_n(0, width - len));
}

/// The usual example schema: `example_key: UInt64`, then one `FixedSizeList<Int32, seq_len>`
/// per name.
pub fn key_and_lists(seq_len: usize, names: &[&str]) -> SchemaRef {
    let mut fields = vec![Field::new("example_key", DataType::UInt64, false)];
    fields.extend(names.iter().map(|n| fixed_list_field(n, seq_len)));
    Arc::new(arrow::datatypes::Schema::new(fields))
}
