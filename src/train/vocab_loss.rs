//! The cross-entropy of a vocabulary projection, `mean_i CE(rows_i · Wᵀ + b, target_i)`, as one
//! CPU kernel that never holds the logits of all rows.
//!
//! A causal LM's loss needs logits at every position: at 4,096 positions and a 30,522-word
//! vocabulary that is 500 MB, then as much again for log-softmax and for each gradient, every one
//! a fresh allocation that the kernel faults in and zeroes. The kernel here takes the rows a chunk
//! at a time: logits of the chunk (one GEMM into a reused buffer), softmax and loss row by row in
//! place, which turns the buffer into the logits' gradient, then that gradient's two GEMMs (into
//! the rows' gradient and, accumulated, the weight's). The forward pass therefore computes the
//! gradients too (as Liger-Kernel's fused linear cross-entropy does) and the backward pass only
//! scales them by the incoming gradient. Evaluation skips the gradient work.
//!
//! Elsewhere than f32 on the CPU (CUDA, bf16) the composed ops run: the projection, then
//! candle's cross-entropy.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::train::kernels::{exp_shifted, lane_max, lane_sum, math, matmul, simd, slice};
use crate::train::nn::{ce, fused};

/// Rows per chunk: the logits buffer is `CHUNK × vocab` floats (62 MB at 30,522 words). The
/// weight gradient is read and written once per chunk, so larger chunks spend less on that: at
/// the 4×256 decoder's shape the three GEMMs of 4,096 rows took 961 ms in chunks of 256 and
/// 771 ms in chunks of 512 (with the weight gradient accumulated transposed, as below).
const CHUNK: usize = 512;

/// Mean cross-entropy of `rows (n, h) · weightᵀ + bias` against `targets (n)` with `weight
/// (vocab, h)`; 0 when there is no row. `grads` is whether a backward pass will follow.
pub fn vocab_cross_entropy(
    rows: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    targets: &Tensor,
    grads: bool,
) -> Result<Tensor> {
    if targets.dim(0).map_err(ce)? == 0 {
        return Tensor::new(0f32, rows.device()).map_err(ce);
    }
    if !(fused(rows) && weight.dtype() == DType::F32) {
        return reference::vocab_cross_entropy(rows, weight, bias, targets);
    }
    let vocab = weight.dim(0).map_err(ce)?;
    let (zeros, has_bias) = match bias {
        Some(b) => (b.clone(), true),
        None => (Tensor::zeros(vocab, DType::F32, rows.device()).map_err(ce)?, false),
    };
    let targets = targets.to_dtype(DType::U32).and_then(|t| t.to_vec1::<u32>()).map_err(ce)?;
    if let Some(&t) = targets.iter().find(|&&t| t as usize >= vocab) {
        return Err(Error::internal(format!("target id {t} is outside the vocabulary of {vocab}")));
    }
    let op = VocabLoss { targets, has_bias, grads, saved: Mutex::new(None) };
    let contiguous = |t: &Tensor| t.contiguous().map_err(ce);
    contiguous(rows)?.apply_op3(&contiguous(weight)?, &contiguous(&zeros)?, op).map_err(ce)
}

/// The composed ops, for other devices and types and to test the kernel against.
pub mod reference {
    use super::*;

    pub fn vocab_cross_entropy(
        rows: &Tensor,
        weight: &Tensor,
        bias: Option<&Tensor>,
        targets: &Tensor,
    ) -> Result<Tensor> {
        let logits = rows.matmul(&weight.t().map_err(ce)?).map_err(ce)?;
        let logits = match bias {
            Some(b) => logits.broadcast_add(b).map_err(ce)?,
            None => logits,
        };
        let logits = logits.to_dtype(DType::F32).map_err(ce)?;
        candle_nn::loss::cross_entropy(&logits, targets).map_err(ce)
    }
}

/// Gradients of the mean loss: rows `(n, h)`, weight `(vocab, h)`, bias `(vocab)`.
type Saved = (Vec<f32>, Vec<f32>, Vec<f32>);

struct VocabLoss {
    targets: Vec<u32>,
    has_bias: bool,
    /// Whether to compute the gradients during the forward pass.
    grads: bool,
    saved: Mutex<Option<Saved>>,
}

impl CustomOp3 for VocabLoss {
    fn name(&self) -> &'static str {
        "pretext-vocab-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (rows, weight, bias) =
            (slice(s1, l1, self.name())?, slice(s2, l2, self.name())?, slice(s3, l3, self.name())?);
        let (n, h) = l1.shape().dims2()?;
        let (vocab, h2) = l2.shape().dims2()?;
        if h2 != h || bias.len() != vocab || self.targets.len() != n {
            candle_core::bail!(
                "vocab loss: rows {n}×{h}, weight {vocab}×{h2}, bias {}, targets {}",
                bias.len(),
                self.targets.len()
            )
        }
        // The mean's factor: each row's loss and gradient count 1/n.
        let scale = 1.0 / n as f32;
        let mut logits = vec![0f32; CHUNK.min(n) * vocab];
        let mut losses = vec![0f64; n];
        let (mut d_rows, mut d_weight, mut d_bias) =
            if self.grads { (vec![0f32; n * h], vec![0f32; h * vocab], vec![0f32; vocab]) } else { Default::default() };
        for start in (0..n).step_by(CHUNK) {
            let c = CHUNK.min(n - start);
            let chunk_rows = &rows[start * h..(start + c) * h];
            let buf = &mut logits[..c * vocab];
            buf.par_chunks_mut(vocab).for_each(|row| row.copy_from_slice(bias));
            // logits (c, vocab) = bias + rows (c, h) · weightᵀ (h, vocab)
            matmul((c, vocab, h), buf, vocab, true, chunk_rows, (h, 1), weight, (1, h), true);
            let targets = &self.targets[start..start + c];
            let grads = self.grads;
            buf.par_chunks_mut(vocab).zip(&mut losses[start..start + c]).zip(targets).for_each(|((row, loss), &t)| {
                *loss = softmax_loss(row, t as usize, grads, scale);
            });
            if !self.grads {
                continue;
            }
            // d_rows (c, h) = d_logits (c, vocab) · weight (vocab, h)
            let d_chunk = &mut d_rows[start * h..(start + c) * h];
            matmul((c, h, vocab), d_chunk, h, false, buf, (vocab, 1), weight, (h, 1), true);
            // d_weightᵀ (h, vocab) += rowsᵀ (h, c) · d_logits (c, vocab), GEMM's faster layout here
            matmul((h, vocab, c), &mut d_weight, vocab, start > 0, chunk_rows, (1, h), buf, (vocab, 1), true);
            if self.has_bias {
                simd(
                    #[inline(always)]
                    || {
                        for row in buf.chunks_exact(vocab) {
                            d_bias.iter_mut().zip(row).for_each(|(d, g)| *d += g);
                        }
                    },
                );
            }
        }
        if self.grads {
            let d_weight = transpose(&d_weight, h, vocab);
            *self.saved.lock().expect("the vocab loss's gradients") = Some((d_rows, d_weight, d_bias));
        }
        let loss = losses.iter().sum::<f64>() / n as f64;
        Ok((CpuStorage::F32(vec![loss as f32]), Shape::from(())))
    }

    fn bwd(
        &self,
        rows: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Some((d_rows, d_weight, d_bias)) = self.saved.lock().expect("the vocab loss's gradients").take() else {
            candle_core::bail!("vocab loss: no gradients were computed (built for evaluation, or backward ran twice)")
        };
        let g = g.to_dtype(DType::F32)?;
        let scaled = |v: Vec<f32>, like: &Tensor| Tensor::from_vec(v, like.shape(), like.device())?.broadcast_mul(&g);
        let d_bias = if self.has_bias { Some(scaled(d_bias, bias)?) } else { None };
        Ok((Some(scaled(d_rows, rows)?), Some(scaled(d_weight, weight)?), d_bias))
    }
}

/// The `(cols, rows)` transpose of a row-major `(rows, cols)` matrix, in tiles.
fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const TILE: usize = 32;
    let mut out = vec![0f32; m.len()];
    out.par_chunks_mut(TILE * rows).enumerate().for_each(|(t, block)| {
        // Output rows `t·TILE ..` are input columns.
        let (c0, width) = (t * TILE, block.len() / rows);
        for r0 in (0..rows).step_by(TILE) {
            for c in c0..c0 + width {
                for r in r0..(r0 + TILE).min(rows) {
                    block[(c - c0) * rows + r] = m[r * cols + c];
                }
            }
        }
    });
    out
}

/// One row's loss, `logsumexp(row) − row[target]`. With `grads`, the row becomes the gradient of
/// `scale ×` that loss: `scale · (softmax(row) − onehot(target))`.
fn softmax_loss(row: &mut [f32], target: usize, grads: bool, scale: f32) -> f64 {
    let picked = row[target];
    let loss = simd(
        #[inline(always)]
        || {
            if grads {
                let (max, sum) = exp_shifted(row);
                let k = scale / sum;
                row.iter_mut().for_each(|v| *v *= k);
                sum.ln() + max - picked
            } else {
                let max = lane_max(row);
                lane_sum(row, |v| math::exp(v - max)).ln() + max - picked
            }
        },
    );
    if grads {
        row[target] -= scale;
    }
    loss as f64
}
