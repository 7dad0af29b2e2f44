//! T5 span corruption (Raffel et al. 2020; `t5.data.preprocessors.span_corruption`, HF
//! `run_t5_mlm_flax.py`). Rows of `raw_len` tokens (documents joined, each closed by EOS) are
//! split into alternating non-noise / noise spans with `random_spans_noise_mask`; each noise span
//! becomes one sentinel in `input_ids` and `sentinel + span` in `labels`; both end with EOS.
//! `raw_len` is chosen as in `compute_input_and_target_lengths`, so `input_ids` are exactly
//! `seq_len` and `labels` exactly the target length: no padding except in the last, short row.

use std::sync::Arc;

use arrow::array::{RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use rand::seq::SliceRandom;

use super::{fixed_list, fixed_list_field, list_values, Task, TaskContext};
use crate::error::Result;
use crate::task::mlm::IGNORE;

pub use crate::spec::compute_input_and_target_lengths;

/// Splits `items` into `segments` non-empty segments at random (T5 `_random_segmentation`).
fn random_segmentation(items: usize, segments: usize, rng: &mut impl rand::Rng, out: &mut Vec<usize>) {
    out.clear();
    if items == 0 {
        return;
    }
    let segments = segments.clamp(1, items);
    let mut first: Vec<bool> = (0..items - 1).map(|i| i < segments - 1).collect();
    first.shuffle(rng);
    let mut len = 1;
    for f in first {
        if f {
            out.push(len);
            len = 1;
        } else {
            len += 1;
        }
    }
    out.push(len);
}

/// T5's `random_spans_noise_mask`: `true` where a token is noise. Noise spans never start at 0.
pub fn random_spans_noise_mask(
    length: usize,
    noise_density: f64,
    mean_span: f64,
    rng: &mut impl rand::Rng,
) -> Vec<bool> {
    if length < 2 {
        return vec![false; length];
    }
    let noise = ((length as f64 * noise_density).round_ties_even() as usize).clamp(1, length - 1);
    let spans = ((noise as f64 / mean_span).round_ties_even() as usize).max(1);
    let (mut noise_lens, mut keep_lens) = (Vec::new(), Vec::new());
    random_segmentation(noise, spans, rng, &mut noise_lens);
    random_segmentation(length - noise, spans, rng, &mut keep_lens);
    let mut mask = Vec::with_capacity(length);
    for (k, n) in keep_lens.iter().zip(noise_lens.iter().chain(std::iter::repeat(&0))) {
        mask.extend(std::iter::repeat_n(false, *k));
        mask.extend(std::iter::repeat_n(true, *n));
    }
    mask.resize(length, false);
    mask
}

/// The span-corruption objective, configured.
#[derive(Debug, Clone)]
pub struct Span {
    pub seq_len: usize,
    pub raw_len: usize,
    pub target_len: usize,
    noise_density: f64,
    mean_span: f64,
    /// Sentinel ids in order of use: `<extra_id_0>`, `<extra_id_1>`, …
    sentinels: Arc<Vec<i32>>,
    eos: i32,
    pad: i32,
    schema: SchemaRef,
}

/// Schema: `example_key`, `input_ids` (seq_len), `labels` and `decoder_input_ids` (target length).
pub fn output_schema(seq_len: usize, target_len: usize) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("example_key", DataType::UInt64, false),
        fixed_list_field("input_ids", seq_len),
        fixed_list_field("labels", target_len),
        fixed_list_field("decoder_input_ids", target_len),
    ]))
}

impl Span {
    pub fn new(seq_len: usize, noise_density: f64, mean_span: f64, sentinels: Vec<i32>, eos: u32, pad: u32) -> Self {
        let (raw_len, target_len) = compute_input_and_target_lengths(seq_len, noise_density, mean_span);
        Span {
            seq_len,
            raw_len,
            target_len,
            noise_density,
            mean_span,
            sentinels: Arc::new(sentinels),
            eos: eos as i32,
            pad: pad as i32,
            schema: output_schema(seq_len, target_len),
        }
    }

    /// Noise spans in a full raw row: what the tokenizer must provide sentinels for.
    pub fn spans_needed(&self) -> usize {
        let noise = (self.raw_len as f64 * self.noise_density).round_ties_even() as usize;
        ((noise as f64 / self.mean_span).round_ties_even() as usize).max(1)
    }

    /// Corrupts one raw row of real tokens into (inputs, targets), each closed by EOS.
    pub fn corrupt(&self, tokens: &[i32], rng: &mut impl rand::Rng, inputs: &mut Vec<i32>, targets: &mut Vec<i32>) {
        let mask = random_spans_noise_mask(tokens.len(), self.noise_density, self.mean_span, rng);
        let mut span = 0;
        for (i, (&t, &noise)) in tokens.iter().zip(&mask).enumerate() {
            if noise {
                if i == 0 || !mask[i - 1] {
                    let s = self.sentinels[span.min(self.sentinels.len() - 1)];
                    inputs.push(s);
                    targets.push(s);
                    span += 1;
                }
                targets.push(t);
            } else {
                inputs.push(t);
            }
        }
        inputs.push(self.eos);
        targets.push(self.eos);
    }
}

impl Task for Span {
    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn apply(&self, batch: &RecordBatch, keys: &[u64], cx: &TaskContext) -> Result<RecordBatch> {
        let (raw, l, t) = (self.raw_len, self.seq_len, self.target_len);
        let ids = list_values(batch, "input_ids")?;
        let attention = list_values(batch, "attention_mask")?;
        let n = keys.len();
        let (mut inputs, mut labels, mut decoder) =
            (Vec::with_capacity(n * l), Vec::with_capacity(n * t), Vec::with_capacity(n * t));
        let (mut inp, mut tgt) = (Vec::with_capacity(l + 1), Vec::with_capacity(t + 1));
        for (row, &key) in keys.iter().enumerate() {
            let r = row * raw..(row + 1) * raw;
            let real = attention[r.clone()].iter().take_while(|&&a| a != 0).count();
            let mut rng = cx.rng(key);
            inp.clear();
            tgt.clear();
            self.corrupt(&ids[r][..real], &mut rng, &mut inp, &mut tgt);
            // Full rows fit exactly; only a short last row needs padding.
            inp.resize(l, self.pad);
            inputs.extend_from_slice(&inp[..l]);
            let start = labels.len();
            labels.extend(tgt.iter().copied().chain(std::iter::repeat(IGNORE)).take(t));
            decoder.push(self.pad);
            decoder.extend(labels[start..start + t - 1].iter().map(|&x| if x == IGNORE { self.pad } else { x }));
        }
        Ok(RecordBatch::try_new(
            self.schema.clone(),
            vec![
                Arc::new(UInt64Array::from(keys.to_vec())),
                fixed_list(inputs, l),
                fixed_list(labels, t),
                fixed_list(decoder, t),
            ],
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t5_lengths_for_512_are_568_and_114() {
        // Values from T5's `random_spans_helper` / HF `compute_input_and_target_lengths`.
        assert_eq!(compute_input_and_target_lengths(512, 0.15, 3.0), (568, 114));
        assert_eq!(compute_input_and_target_lengths(128, 0.15, 3.0), (141, 29));
        assert_eq!(compute_input_and_target_lengths(16, 0.15, 3.0), (17, 5));
    }
}
