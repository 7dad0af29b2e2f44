//! Fused CPU kernels (f32) with their backward passes: the linear layer, layer and group norm,
//! the attention probabilities (scale, mask, softmax, dropout), multi-head self-attention on
//! packed projections, GELU, the 3×3 convolution.
//!
//! Composed from candle's ops, each of these is a chain of element-wise passes, every one a fresh
//! allocation: the tanh GELU's backward alone is fourteen. Here each direction is one pass over
//! the data, split over rows (or blocks) on candle's thread pool. Work is split into fixed
//! blocks and partial sums are added in block order, so results do not depend on the number of
//! threads. Inner loops run under [`simd`] with the vector instructions the CPU has; sums keep
//! sixteen explicit lanes, so they add in the same order at every vector width, and the
//! transcendental functions are the branch-free ones of [`math`]. `nn.rs` uses these for f32 on
//! the CPU and the composed ops elsewhere; `tests/train.rs` checks each against the composed
//! version, forward and backward.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Storage, StorageRef, Tensor};
use gemm::{gemm, Parallelism};
use rayon::prelude::*;

/// Elements per block of the element-wise kernels.
const BLOCK: usize = 1 << 14;
/// Rows per block where a kernel sums over rows (layer norm's weight gradient).
const ROW_BLOCK: usize = 64;

/// A contiguous f32 slice of `s`, or an error naming the kernel.
pub(crate) fn slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> candle_core::Result<&'a [f32]> {
    let Some((a, b)) = l.contiguous_offsets() else { candle_core::bail!("{op}: the input is not contiguous") };
    Ok(&s.as_slice::<f32>()?[a..b])
}

/// The last dimension of a layout (the row length of the row-wise kernels).
fn row_len(l: &Layout) -> usize {
    *l.dims().last().unwrap_or(&1)
}

/// `g`'s values as a vector of its own, for a backward pass that computes in place over them.
fn grad_values(g: &Tensor) -> candle_core::Result<Vec<f32>> {
    g.flatten_all()?.to_vec1::<f32>()
}

/// A tensor's values as a contiguous f32 slice for a backward pass to read: in place when the
/// tensor is contiguous f32 on the CPU (the usual case), a copy otherwise.
enum Values<'a> {
    InPlace(StorageRef<'a>, std::ops::Range<usize>),
    Copied(Vec<f32>),
}

fn values(t: &Tensor) -> candle_core::Result<Values<'_>> {
    let (storage, layout) = t.storage_and_layout();
    if let (Storage::Cpu(CpuStorage::F32(_)), Some((a, b))) = (&*storage, layout.contiguous_offsets()) {
        return Ok(Values::InPlace(storage, a..b));
    }
    drop(storage);
    Ok(Values::Copied(grad_values(t)?))
}

impl std::ops::Deref for Values<'_> {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        match self {
            Values::InPlace(storage, range) => {
                let Storage::Cpu(CpuStorage::F32(v)) = &**storage else { unreachable!("checked by values()") };
                &v[range.clone()]
            }
            Values::Copied(v) => v,
        }
    }
}

fn tensor(values: Vec<f32>, like: &Tensor) -> candle_core::Result<Tensor> {
    Tensor::from_vec(values, like.shape(), like.device())
}

/// Runs `f` compiled for the best vector instructions the CPU has (pulp's run-time dispatch);
/// what `f` calls must be `#[inline(always)]` to share them.
#[inline(always)]
pub(crate) fn simd<R>(f: impl FnOnce() -> R) -> R {
    pulp::Arch::new().dispatch(f)
}

const LANES: usize = 16;

/// `Σ f(xᵢ, yᵢ)` over two slices of one length, in sixteen lanes (the same order at any vector
/// width).
#[inline(always)]
pub(crate) fn lane_sum2(x: &[f32], y: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let (xs, ys) = (x.chunks_exact(LANES), y.chunks_exact(LANES));
    let (x_rest, y_rest) = (xs.remainder(), ys.remainder());
    for (x, y) in xs.zip(ys) {
        for ((a, x), y) in acc.iter_mut().zip(x).zip(y) {
            *a += f(*x, *y);
        }
    }
    let mut total = 0f32;
    for a in acc {
        total += a;
    }
    for (x, y) in x_rest.iter().zip(y_rest) {
        total += f(*x, *y);
    }
    total
}

/// `Σ f(xᵢ)`, in sixteen lanes.
#[inline(always)]
pub(crate) fn lane_sum(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    lane_sum2(x, x, |x, _| f(x))
}

/// The largest value of `x` (−∞ for none).
#[inline(always)]
pub(crate) fn lane_max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a = a.max(*v);
        }
    }
    acc.iter().chain(rest).fold(f32::NEG_INFINITY, |m, &v| m.max(v))
}

/// The mean and 1/σ of one row.
#[inline(always)]
fn moments(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = lane_sum(x, |x| x) / n;
    let var = lane_sum(x, |x| (x - mean) * (x - mean)) / n;
    (mean, 1.0 / (var + eps).sqrt())
}

/// `dst (m, n) = [dst +] lhs (m, k) · rhs (k, n)`, every matrix given by its row and column
/// strides (gemm, the library candle's matmuls use), on candle's threads when `parallel`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    lhs: &[f32],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[f32],
    (rhs_rs, rhs_cs): (usize, usize),
    parallel: bool,
) {
    let last = |rs: usize, cs: usize, rows: usize, cols: usize| (rows - 1) * rs + (cols - 1) * cs;
    assert!(dst.len() > last(dst_rs, 1, m, n) && lhs.len() > last(lhs_rs, lhs_cs, m, k));
    assert!(rhs.len() > last(rhs_rs, rhs_cs, k, n));
    let threads = if parallel { candle_core::utils::get_num_threads() } else { 1 };
    let parallelism = if threads > 1 { Parallelism::Rayon(threads) } else { Parallelism::None };
    // SAFETY: the asserts above keep every element the strides reach inside its slice, and `dst`
    // is borrowed mutably, so it overlaps neither operand.
    unsafe {
        gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// A linear layer, `y = x · Wᵀ + b` with `W` stored `(out, in)` (PyTorch's `nn.Linear`) or
/// `y = x · W + b` with `W` stored `(in, out)` (`transposed`, GPT-2's `Conv1D`), on rows
/// `(n, in)`: the bias is the GEMM's starting value. Backward: `dx = g · W`, `dW = gᵀ · x` (or
/// `xᵀ · g`), `db = Σ g` over rows; composed, candle adds the bias in a pass of its own and
/// accumulates every gradient into a zeroed tensor. With `mask`, dropout follows: `y ⊙ m` with
/// the factors `m` the caller drew, and the gradient `g ⊙ m` flows back (composed, the dropout's
/// product is a pass of its own each way, and its backward also computes a gradient for the
/// mask).
pub struct Linear {
    pub transposed: bool,
    pub has_bias: bool,
    pub mask: Option<Vec<f32>>,
}

impl Linear {
    /// `(rows, in, out)`, or an error.
    fn dims(&self, x: &[usize], w: &[usize]) -> candle_core::Result<(usize, usize, usize)> {
        let (&[n, i], &[a, b]) = (x, w) else {
            candle_core::bail!("linear: input {x:?} or weight {w:?} is not a matrix")
        };
        let (wi, wo) = if self.transposed { (a, b) } else { (b, a) };
        if wi != i {
            candle_core::bail!("linear: input {x:?} does not match weight {w:?}")
        }
        Ok((n, i, wo))
    }

    /// The strides of `W` read as the `(in, out)` matrix `Wᵀ` (or `W` when transposed).
    fn w_in_out(&self, i: usize, o: usize) -> (usize, usize) {
        if self.transposed {
            (o, 1)
        } else {
            (1, i)
        }
    }
}

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "pretext-linear"
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
        let (x, w, b) = (slice(s1, l1, self.name())?, slice(s2, l2, self.name())?, slice(s3, l3, self.name())?);
        let (n, i, o) = self.dims(l1.dims(), l2.dims())?;
        if b.len() != o {
            candle_core::bail!("linear: a bias of {} for {o} outputs", b.len())
        }
        let mut y = vec![0f32; n * o];
        if self.has_bias {
            y.par_chunks_mut(o * ROW_BLOCK).for_each(|y| y.chunks_exact_mut(o).for_each(|r| r.copy_from_slice(b)));
        }
        matmul((n, o, i), &mut y, o, self.has_bias, x, (i, 1), w, self.w_in_out(i, o), true);
        if let Some(mask) = &self.mask {
            if mask.len() != y.len() {
                candle_core::bail!("linear: a dropout mask of {} for {} outputs", mask.len(), y.len())
            }
            blocks2(
                &mut y,
                mask,
                #[inline(always)]
                |y, m| y.iter_mut().zip(m).for_each(|(y, m)| *y *= m),
            );
        }
        Ok((CpuStorage::F32(y), Shape::from((n, o))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, i, o) = self.dims(x.dims(), w.dims())?;
        let (xs, ws, g_values) = (values(x)?, values(w)?, values(g)?);
        let masked = self.mask.as_ref().map(|mask| {
            let mut gm = g_values.to_vec();
            blocks2(
                &mut gm,
                mask,
                #[inline(always)]
                |g, m| g.iter_mut().zip(m).for_each(|(g, m)| *g *= m),
            );
            gm
        });
        let gs: &[f32] = masked.as_deref().unwrap_or(&g_values);
        // dx (n, in) = g (n, out) · W as (out, in)
        let mut dx = vec![0f32; n * i];
        let (rs, cs) = self.w_in_out(i, o);
        matmul((n, i, o), &mut dx, i, false, gs, (o, 1), &ws, (cs, rs), true);
        let mut dw = vec![0f32; i * o];
        if self.transposed {
            // dW (in, out) = xᵀ (in, n) · g (n, out)
            matmul((i, o, n), &mut dw, o, false, &xs, (1, i), gs, (o, 1), true);
        } else {
            // dW (out, in) = gᵀ (out, n) · x (n, in)
            matmul((o, i, n), &mut dw, i, false, gs, (1, o), &xs, (i, 1), true);
        }
        let db = self.has_bias.then(|| {
            let mut db = vec![0f32; o];
            simd(
                #[inline(always)]
                || gs.chunks_exact(o).for_each(|g| db.iter_mut().zip(g).for_each(|(d, g)| *d += g)),
            );
            db
        });
        let db = db.map(|d| tensor(d, b)).transpose()?;
        Ok((Some(tensor(dx, x)?), Some(tensor(dw, w)?), db))
    }
}

/// The input's gradient of a normalisation over one group of values:
/// `dx = (ĝ − mean(ĝ) − x̂ · mean(ĝ ⊙ x̂)) · inv`, with `ĝ` the gradient times the scale.
#[inline(always)]
fn normalized_grad(dx: &mut [f32], gw: &[f32], xhat: &[f32], inv: f32) {
    let n = gw.len() as f32;
    let mean_g = lane_sum(gw, |v| v) / n;
    let mean_gx = lane_sum2(gw, xhat, |g, x| g * x) / n;
    for ((dx, gw), xh) in dx.iter_mut().zip(gw).zip(xhat) {
        *dx = (gw - mean_g - xh * mean_gx) * inv;
    }
}

/// The element-wise sum of per-block partial sums, added in block order (so the total does not
/// depend on which thread made which block).
fn sum_in_order<'a>(parts: impl Iterator<Item = &'a Vec<f32>>, n: usize) -> Vec<f32> {
    let mut total = vec![0f32; n];
    for part in parts {
        total.iter_mut().zip(part).for_each(|(a, v)| *a += v);
    }
    total
}

/// Layer norm over the last dimension, `y = (x − mean) / √(var + eps) · w + b`. Backward, with
/// `x̂` the normalised row and `ĝ = g ⊙ w`: `dx = (ĝ − mean(ĝ) − x̂ · mean(ĝ ⊙ x̂)) / σ`,
/// `dw = Σ g ⊙ x̂`, `db = Σ g` over rows.
pub struct LayerNorm {
    pub eps: f64,
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "pretext-layer-norm"
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
        let (x, w, b) = (slice(s1, l1, self.name())?, slice(s2, l2, self.name())?, slice(s3, l3, self.name())?);
        let n = row_len(l1);
        if w.len() != n || b.len() != n {
            candle_core::bail!("layer norm: rows of {n}, weight {} and bias {}", w.len(), b.len())
        }
        let eps = self.eps as f32;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(ROW_BLOCK * n).zip(x.par_chunks(ROW_BLOCK * n)).for_each(|(y, x)| {
            simd(
                #[inline(always)]
                || {
                    for (y, x) in y.chunks_exact_mut(n).zip(x.chunks_exact(n)) {
                        let (mean, inv) = moments(x, eps);
                        for (((y, x), w), b) in y.iter_mut().zip(x).zip(w).zip(b) {
                            *y = (x - mean) * inv * w + b;
                        }
                    }
                },
            )
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (xs, ws, gs) = (values(x)?, values(w)?, values(g)?);
        let n = ws.len();
        let eps = self.eps as f32;
        let mut dx = vec![0f32; xs.len()];
        // Per block of rows: its share of dw and db, summed below in block order.
        let partial: Vec<(Vec<f32>, Vec<f32>)> = dx
            .par_chunks_mut(ROW_BLOCK * n)
            .zip(xs.par_chunks(ROW_BLOCK * n).zip(gs.par_chunks(ROW_BLOCK * n)))
            .map(|(dx, (x, g))| {
                let (mut dw, mut db) = (vec![0f32; n], vec![0f32; n]);
                let (mut xhat, mut gw) = (vec![0f32; n], vec![0f32; n]);
                simd(
                    #[inline(always)]
                    || {
                        for ((dx, x), g) in dx.chunks_exact_mut(n).zip(x.chunks_exact(n)).zip(g.chunks_exact(n)) {
                            let (mean, inv) = moments(x, eps);
                            for ((((xh, gw), x), g), w) in
                                xhat.iter_mut().zip(gw.iter_mut()).zip(x).zip(g).zip(ws.iter())
                            {
                                *xh = (x - mean) * inv;
                                *gw = g * w;
                            }
                            for (((dw, db), g), xh) in dw.iter_mut().zip(db.iter_mut()).zip(g).zip(&xhat) {
                                *dw += g * xh;
                                *db += g;
                            }
                            normalized_grad(dx, &gw, &xhat, inv);
                        }
                    },
                );
                (dw, db)
            })
            .collect();
        let dw = sum_in_order(partial.iter().map(|p| &p.0), n);
        let db = sum_in_order(partial.iter().map(|p| &p.1), n);
        Ok((Some(tensor(dx, x)?), Some(tensor(dw, w)?), Some(tensor(db, b)?)))
    }
}

/// Sets `z` to `exp(z − max z)` and returns the sum.
#[inline(always)]
pub(crate) fn exp_shifted(z: &mut [f32]) -> (f32, f32) {
    let max = lane_max(z);
    z.iter_mut().for_each(|v| *v = math::exp(*v - max));
    (max, lane_sum(z, |v| v))
}

/// One row's softmax, in place over `z`.
#[inline(always)]
fn softmax_row(z: &mut [f32]) {
    let (_, sum) = exp_shifted(z);
    let inv = 1.0 / sum;
    z.iter_mut().for_each(|v| *v *= inv);
}

/// `dz = y ⊙ (g − Σ g ⊙ y)` for one row, in place over `g`.
#[inline(always)]
fn softmax_grad_row(y: &[f32], g: &mut [f32]) {
    let dot = lane_sum2(y, g, |y, g| y * g);
    g.iter_mut().zip(y).for_each(|(g, y)| *g = y * (*g - dot));
}

/// `f` on blocks of `x` and the matching blocks of `y` (the same length), in parallel.
fn blocks2(x: &mut [f32], y: &[f32], f: impl Fn(&mut [f32], &[f32]) + Sync) {
    x.par_chunks_mut(BLOCK).zip(y.par_chunks(BLOCK)).for_each(|(x, y)| {
        simd(
            #[inline(always)]
            || f(x, y),
        )
    });
}

/// `f(x)` element by element.
fn map(x: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    blocks2(
        &mut y,
        x,
        #[inline(always)]
        |y, x| y.iter_mut().zip(x).for_each(|(y, &x)| *y = f(x)),
    );
    y
}

/// `g ⊙= f(x)` element by element.
fn scale_by(g: &mut [f32], x: &[f32], f: impl Fn(f32) -> f32 + Sync) {
    blocks2(
        g,
        x,
        #[inline(always)]
        |g, x| g.iter_mut().zip(x).for_each(|(g, &x)| *g *= f(x)),
    );
}

/// `f` on every `n`-long row of `x` and `y` (the same length), blocks of rows in parallel.
fn rows2(x: &mut [f32], y: &[f32], n: usize, f: impl Fn(&mut [f32], &[f32]) + Sync) {
    let block = (BLOCK / n.max(1)).max(1) * n;
    x.par_chunks_mut(block).zip(y.par_chunks(block)).for_each(|(x, y)| {
        simd(
            #[inline(always)]
            || x.chunks_exact_mut(n).zip(y.chunks_exact(n)).for_each(|(x, y)| f(x, y)),
        )
    });
}

/// Attention probabilities from raw scores: `dropout(softmax(scale · scores + bias))` in one
/// pass. `bias` is broadcast to the scores' shape (its last dimension real or broadcast) and
/// carries no gradient. `mask` holds the dropout factors (0 or 1/keep), drawn by the caller.
/// Backward: `d scores = scale · p ⊙ (m ⊙ g − Σ p ⊙ m ⊙ g)` with `p` the probabilities before
/// dropout, kept from the forward pass when there is a mask.
pub struct AttentionProbs {
    pub scale: f32,
    pub mask: Option<Vec<f32>>,
    pub saved: Mutex<Option<Vec<f32>>>,
}

impl CustomOp2 for AttentionProbs {
    fn name(&self) -> &'static str {
        "pretext-attention-probs"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let scores = slice(s1, l1, self.name())?;
        let bias = &s2.as_slice::<f32>()?[l2.start_offset()..];
        let dims = l1.dims();
        let (rank, n) = (dims.len(), row_len(l1));
        let strides = l2.stride();
        if l2.dims() != dims || strides[rank - 1] > 1 {
            candle_core::bail!("attention probs: the bias does not broadcast over the scores as expected")
        }
        // Where row `r` of the bias starts: `r` split into its indices over the leading dims.
        let bias_row = |mut r: usize| {
            let mut offset = 0;
            for d in (0..rank - 1).rev() {
                offset += (r % dims[d]) * strides[d];
                r /= dims[d];
            }
            offset
        };
        let scale = self.scale;
        let mut p = vec![0f32; scores.len()];
        let block = (BLOCK / n).max(1);
        p.par_chunks_mut(block * n).zip(scores.par_chunks(block * n)).enumerate().for_each(|(i, (p, s))| {
            simd(
                #[inline(always)]
                || {
                    for (k, (p, s)) in p.chunks_exact_mut(n).zip(s.chunks_exact(n)).enumerate() {
                        let b = &bias[bias_row(i * block + k)..];
                        if strides[rank - 1] == 1 {
                            p.iter_mut().zip(s).zip(b).for_each(|((p, s), b)| *p = scale * s + b);
                        } else {
                            p.iter_mut().zip(s).for_each(|(p, s)| *p = scale * s + b[0]);
                        }
                        softmax_row(p);
                    }
                },
            )
        });
        let Some(mask) = &self.mask else { return Ok((CpuStorage::F32(p), l1.shape().clone())) };
        if mask.len() != p.len() {
            candle_core::bail!("attention probs: a dropout mask of {} for {} scores", mask.len(), p.len())
        }
        let mut out = p.clone();
        blocks2(
            &mut out,
            mask,
            #[inline(always)]
            |o, m| o.iter_mut().zip(m).for_each(|(o, m)| *o *= m),
        );
        *self.saved.lock().expect("the attention probabilities") = Some(p);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        scores: &Tensor,
        _bias: &Tensor,
        res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let mut dz = grad_values(g)?;
        let n = scores.dim(candle_core::D::Minus1)?;
        let p = match &self.mask {
            None => grad_values(res)?,
            Some(mask) => {
                blocks2(
                    &mut dz,
                    mask,
                    #[inline(always)]
                    |g, m| g.iter_mut().zip(m).for_each(|(g, m)| *g *= m),
                );
                let saved = self.saved.lock().expect("the attention probabilities").take();
                saved.ok_or_else(|| candle_core::Error::Msg("attention probs: backward ran twice".into()))?
            }
        };
        let scale = self.scale;
        rows2(
            &mut dz,
            &p,
            n,
            #[inline(always)]
            |g, p| {
                softmax_grad_row(p, g);
                g.iter_mut().for_each(|g| *g *= scale);
            },
        );
        Ok((Some(tensor(dz, scores)?), None))
    }
}

/// Multi-head self-attention on packed projections. `qkv (B, T, 3·H)` holds each position's
/// query, key and value side by side (GPT-2's `c_attn` output, or three stacked linears); the
/// output `(B, T, H)` has the heads merged. Per batch row and head, with `q`, `k`, `v` the head's
/// `(T, d)` slices: `o = (m ⊙ p) v`, `p = softmax(scale · q kᵀ + bias)`, `m` the dropout factors.
/// `bias` is broadcast to `(B, heads, T, T)` and carries no gradient.
///
/// Composed, this is three narrows and head splits (each a copy, each with a zero-padded
/// full-width gradient in backward), two batched matmuls, the probabilities and a head merge.
/// Here it is one pass per batch row, its GEMMs read the heads through strides, and the
/// probabilities before dropout are kept for the backward pass:
/// `dv = (m ⊙ p)ᵀ g`, `dp = m ⊙ (g vᵀ)`, `ds = scale · p ⊙ (dp − Σ p ⊙ dp)`, `dq = ds k`,
/// `dk = dsᵀ q`. Each batch row is one task, so results do not depend on the thread count.
pub struct Attention {
    pub heads: usize,
    pub scale: f32,
    pub mask: Option<Vec<f32>>,
    pub saved: Mutex<Option<Vec<f32>>>,
}

impl Attention {
    /// `(B, T, H, d)` of a packed input, or an error.
    fn dims(&self, dims: &[usize]) -> candle_core::Result<(usize, usize, usize, usize)> {
        let &[b, t, h3] = dims else { candle_core::bail!("attention: input {dims:?} is not (B, T, 3·H)") };
        if self.heads == 0 || !h3.is_multiple_of(3 * self.heads) {
            candle_core::bail!("attention: {h3} packed features do not split into q, k, v of {} heads", self.heads)
        }
        Ok((b, t, h3 / 3, h3 / 3 / self.heads))
    }
}

impl CustomOp2 for Attention {
    fn name(&self) -> &'static str {
        "pretext-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let qkv = slice(s1, l1, self.name())?;
        let (b, t, h, d) = self.dims(l1.dims())?;
        let heads = self.heads;
        let bias = &s2.as_slice::<f32>()?[l2.start_offset()..];
        let st = l2.stride();
        if l2.dims() != [b, heads, t, t] || st[3] > 1 {
            candle_core::bail!("attention: the bias does not broadcast over the scores as expected")
        }
        if let Some(m) = &self.mask {
            if m.len() != b * heads * t * t {
                candle_core::bail!("attention: a dropout mask of {} for {} scores", m.len(), b * heads * t * t)
            }
        }
        let (h3, tt, scale) = (3 * h, t * t, self.scale);
        let mut out = vec![0f32; b * t * h];
        let mut probs = vec![0f32; b * heads * tt];
        out.par_chunks_mut(t * h).zip(probs.par_chunks_mut(heads * tt)).enumerate().for_each(|(bi, (out, probs))| {
            let x = &qkv[bi * t * h3..(bi + 1) * t * h3];
            let mut dropped = vec![0f32; if self.mask.is_some() { tt } else { 0 }];
            for (hi, p) in probs.chunks_exact_mut(tt).enumerate() {
                // p = q kᵀ, kᵀ read through strides.
                matmul((t, t, d), p, t, false, &x[hi * d..], (h3, 1), &x[h + hi * d..], (1, h3), false);
                simd(
                    #[inline(always)]
                    || {
                        for (ti, row) in p.chunks_exact_mut(t).enumerate() {
                            let bias = &bias[bi * st[0] + hi * st[1] + ti * st[2]..];
                            if st[3] == 1 {
                                row.iter_mut().zip(bias).for_each(|(s, b)| *s = scale * *s + b);
                            } else {
                                row.iter_mut().for_each(|s| *s = scale * *s + bias[0]);
                            }
                            softmax_row(row);
                        }
                    },
                );
                let p: &[f32] = match &self.mask {
                    None => p,
                    Some(mask) => {
                        let m = &mask[(bi * heads + hi) * tt..][..tt];
                        simd(
                            #[inline(always)]
                            || dropped.iter_mut().zip(&*p).zip(m).for_each(|((o, p), m)| *o = p * m),
                        );
                        &dropped
                    }
                };
                matmul((t, d, t), &mut out[hi * d..], h, false, p, (t, 1), &x[2 * h + hi * d..], (h3, 1), false);
            }
        });
        *self.saved.lock().expect("the attention probabilities") = Some(probs);
        Ok((CpuStorage::F32(out), Shape::from((b, t, h))))
    }

    fn bwd(
        &self,
        qkv: &Tensor,
        _bias: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (b, t, h, d) = self.dims(qkv.dims())?;
        let probs = self.saved.lock().expect("the attention probabilities").take();
        let probs = probs.ok_or_else(|| candle_core::Error::Msg("attention: backward ran twice".into()))?;
        let (x_values, g_values) = (values(qkv)?, values(g)?);
        let (qkv_all, g_all): (&[f32], &[f32]) = (&x_values, &g_values);
        let (heads, h3, tt, scale) = (self.heads, 3 * h, t * t, self.scale);
        let mut dqkv = vec![0f32; b * t * h3];
        dqkv.par_chunks_mut(t * h3).zip(probs.par_chunks(heads * tt)).enumerate().for_each(|(bi, (dx, probs))| {
            let x = &qkv_all[bi * t * h3..(bi + 1) * t * h3];
            let g = &g_all[bi * t * h..(bi + 1) * t * h];
            let mut dp = vec![0f32; tt];
            let mut dropped = vec![0f32; if self.mask.is_some() { tt } else { 0 }];
            for (hi, p) in probs.chunks_exact(tt).enumerate() {
                let m = self.mask.as_ref().map(|mask| &mask[(bi * heads + hi) * tt..][..tt]);
                let pm: &[f32] = match m {
                    None => p,
                    Some(m) => {
                        simd(
                            #[inline(always)]
                            || dropped.iter_mut().zip(p).zip(m).for_each(|((o, p), m)| *o = p * m),
                        );
                        &dropped
                    }
                };
                let (q, k, v) = (&x[hi * d..], &x[h + hi * d..], &x[2 * h + hi * d..]);
                let g = &g[hi * d..];
                // dv = (m ⊙ p)ᵀ g
                matmul((t, d, t), &mut dx[2 * h + hi * d..], h3, false, pm, (1, t), g, (h, 1), false);
                // dp = m ⊙ (g vᵀ), then ds in place
                matmul((t, t, d), &mut dp, t, false, g, (h, 1), v, (1, h3), false);
                simd(
                    #[inline(always)]
                    || {
                        if let Some(m) = m {
                            dp.iter_mut().zip(m).for_each(|(g, m)| *g *= m);
                        }
                        for (p, g) in p.chunks_exact(t).zip(dp.chunks_exact_mut(t)) {
                            softmax_grad_row(p, g);
                            g.iter_mut().for_each(|g| *g *= scale);
                        }
                    },
                );
                // dq = ds k, dk = dsᵀ q
                matmul((t, d, t), &mut dx[hi * d..], h3, false, &dp, (t, 1), k, (h3, 1), false);
                matmul((t, d, t), &mut dx[h + hi * d..], h3, false, &dp, (1, t), q, (h3, 1), false);
            }
        });
        Ok((Some(tensor(dqkv, qkv)?), None))
    }
}

/// `√(2/π)`, as candle's tanh GELU writes it.
#[allow(clippy::excessive_precision)]
const SQRT_TWO_OVER_PI: f32 = 0.79788456080286535587989211986876373;

/// GELU, exact (`x · Φ(x)`, BERT's `gelu`) or with the tanh approximation (GPT-2's
/// `gelu_new`). Backward, exact: `Φ(x) + x · φ(x)`; tanh:
/// `½(1 + t) + ½x(1 − t²) · √(2/π)(1 + 3 · 0.044715 x²)` with `t` the tanh, in full precision
/// (candle's composed tanh backward rounds its constants to six digits). erf and tanh are those
/// of [`math`] (candle's forward calls libm's).
pub struct Gelu {
    pub exact: bool,
}

/// `1/√(2π)`, the normal density's factor.
const INV_SQRT_2PI: f32 = 0.5 * std::f32::consts::FRAC_2_SQRT_PI * std::f32::consts::FRAC_1_SQRT_2;

#[inline(always)]
fn gelu_exact(x: f32) -> f32 {
    (math::erf(x * std::f32::consts::FRAC_1_SQRT_2) + 1.0) * 0.5 * x
}

#[inline(always)]
fn gelu_exact_slope(x: f32) -> f32 {
    let cdf = 0.5 * (1.0 + math::erf(x * std::f32::consts::FRAC_1_SQRT_2));
    cdf + x * math::exp(-0.5 * x * x) * INV_SQRT_2PI
}

#[inline(always)]
fn gelu_tanh(x: f32) -> f32 {
    0.5 * x * (1.0 + math::tanh(SQRT_TWO_OVER_PI * x * (1.0 + 0.044715 * x * x)))
}

#[inline(always)]
fn gelu_tanh_slope(x: f32) -> f32 {
    let t = math::tanh(SQRT_TWO_OVER_PI * x * (1.0 + 0.044715 * x * x));
    0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * SQRT_TWO_OVER_PI * (1.0 + 3.0 * 0.044715 * x * x)
}

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "pretext-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = slice(s, l, self.name())?;
        let out = if self.exact { map(x, gelu_exact) } else { map(x, gelu_tanh) };
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let (x, mut dx) = (values(arg)?, grad_values(g)?);
        if self.exact {
            scale_by(&mut dx, &x, gelu_exact_slope)
        } else {
            scale_by(&mut dx, &x, gelu_tanh_slope)
        }
        Ok(Some(tensor(dx, arg)?))
    }
}

/// Group normalisation of `(B, C, H, W)` over `groups` channel groups, with a scale and a shift
/// per channel, and with `relu` a ReLU after it in the same pass. Backward as [`LayerNorm`]'s over
/// each group, with `ĝ = g · γ_c`, and `dγ_c = Σ g ⊙ x̂`, `dβ_c = Σ g` over the images and pixels
/// of channel `c`; with `relu`, `g` is first zeroed where the normalised value was negative
/// (recomputed by the forward's expression, so the mask is the forward's to the bit; a value of
/// exactly 0 passes its gradient, as candle's `relu` does).
pub struct GroupNorm {
    pub groups: usize,
    pub eps: f64,
    pub relu: bool,
}

impl GroupNorm {
    /// `(B, C, H·W)` of an input, or an error.
    fn dims(&self, dims: &[usize]) -> candle_core::Result<(usize, usize, usize)> {
        let &[b, c, h, w] = dims else { candle_core::bail!("group norm: input {dims:?} is not (B, C, H, W)") };
        if self.groups == 0 || !c.is_multiple_of(self.groups) {
            candle_core::bail!("group norm: {c} channels do not split into {} groups", self.groups)
        }
        Ok((b, c, h * w))
    }
}

impl CustomOp3 for GroupNorm {
    fn name(&self) -> &'static str {
        "pretext-group-norm"
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
        let (x, gamma, beta) = (slice(s1, l1, self.name())?, slice(s2, l2, self.name())?, slice(s3, l3, self.name())?);
        let (_, c, hw) = self.dims(l1.dims())?;
        if gamma.len() != c || beta.len() != c {
            candle_core::bail!("group norm: {c} channels, scale {} and shift {}", gamma.len(), beta.len())
        }
        let eps = self.eps as f32;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(c * hw).zip(x.par_chunks(c * hw)).for_each(|(y, x)| {
            simd(
                #[inline(always)]
                || {
                    let group = c / self.groups * hw;
                    for (g, (y, x)) in y.chunks_exact_mut(group).zip(x.chunks_exact(group)).enumerate() {
                        let (mean, inv) = moments(x, eps);
                        for (k, (y, x)) in y.chunks_exact_mut(hw).zip(x.chunks_exact(hw)).enumerate() {
                            let ch = g * (c / self.groups) + k;
                            let (scale, shift) = (inv * gamma[ch], beta[ch] - mean * inv * gamma[ch]);
                            if self.relu {
                                y.iter_mut().zip(x).for_each(|(y, x)| *y = (x * scale + shift).max(0.0));
                            } else {
                                y.iter_mut().zip(x).for_each(|(y, x)| *y = x * scale + shift);
                            }
                        }
                    }
                },
            )
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (_, c, hw) = self.dims(x.dims())?;
        let (xs, gammas, betas, gs) = (values(x)?, values(gamma)?, values(beta)?, values(g)?);
        let (eps, per) = (self.eps as f32, c / self.groups);
        let group = per * hw;
        let relu = self.relu;
        let mut dx = vec![0f32; xs.len()];
        // Per image: its share of dγ and dβ, summed below in image order.
        let partial: Vec<(Vec<f32>, Vec<f32>)> = dx
            .par_chunks_mut(c * hw)
            .zip(xs.par_chunks(c * hw).zip(gs.par_chunks(c * hw)))
            .map(|(dx, (x, g))| {
                let (mut dgamma, mut dbeta) = (vec![0f32; c], vec![0f32; c]);
                let (mut xhat, mut gw) = (vec![0f32; group], vec![0f32; group]);
                let mut passed = if relu { vec![0f32; group] } else { Vec::new() };
                simd(
                    #[inline(always)]
                    || {
                        for (gi, ((dx, x), g)) in
                            dx.chunks_exact_mut(group).zip(x.chunks_exact(group)).zip(g.chunks_exact(group)).enumerate()
                        {
                            let (mean, inv) = moments(x, eps);
                            for k in 0..per {
                                let ch = gi * per + k;
                                let span = k * hw..(k + 1) * hw;
                                let (xh, gwk) = (&mut xhat[span.clone()], &mut gw[span.clone()]);
                                let xk = &x[span.clone()];
                                let gk = if relu {
                                    let (scale, shift) = (inv * gammas[ch], betas[ch] - mean * inv * gammas[ch]);
                                    let out = &mut passed[span.clone()];
                                    for ((o, x), g) in out.iter_mut().zip(xk).zip(&g[span]) {
                                        *o = if x * scale + shift >= 0.0 { *g } else { 0.0 };
                                    }
                                    &*out
                                } else {
                                    &g[span]
                                };
                                for (((xh, gw), x), g) in xh.iter_mut().zip(gwk.iter_mut()).zip(xk).zip(gk) {
                                    *xh = (x - mean) * inv;
                                    *gw = g * gammas[ch];
                                }
                                dgamma[ch] += lane_sum2(gk, xh, |g, x| g * x);
                                dbeta[ch] += lane_sum(gk, |g| g);
                            }
                            normalized_grad(dx, &gw, &xhat, inv);
                        }
                    },
                );
                (dgamma, dbeta)
            })
            .collect();
        let dgamma = sum_in_order(partial.iter().map(|p| &p.0), c);
        let dbeta = sum_in_order(partial.iter().map(|p| &p.1), c);
        Ok((Some(tensor(dx, x)?), Some(tensor(dgamma, gamma)?), Some(tensor(dbeta, beta)?)))
    }
}

/// `relu(a + b)` for two tensors of one shape (a residual connection and its activation) in one
/// pass; backward passes `g` to both where `a + b ≥ 0` (candle's `relu` convention).
pub struct AddRelu;

impl CustomOp2 for AddRelu {
    fn name(&self) -> &'static str {
        "pretext-add-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (a, b) = (slice(s1, l1, self.name())?, slice(s2, l2, self.name())?);
        if l1.dims() != l2.dims() {
            candle_core::bail!("add-relu: shapes {:?} and {:?} differ", l1.dims(), l2.dims())
        }
        let mut out = a.to_vec();
        blocks2(
            &mut out,
            b,
            #[inline(always)]
            |o, b| o.iter_mut().zip(b).for_each(|(o, b)| *o = (*o + b).max(0.0)),
        );
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (a_values, b_values) = (values(a)?, values(b)?);
        let mut dx = grad_values(g)?;
        dx.par_chunks_mut(BLOCK).zip(a_values.par_chunks(BLOCK).zip(b_values.par_chunks(BLOCK))).for_each(
            |(g, (a, b))| {
                simd(
                    #[inline(always)]
                    || {
                        for ((g, a), b) in g.iter_mut().zip(a).zip(b) {
                            *g = if a + b >= 0.0 { *g } else { 0.0 };
                        }
                    },
                )
            },
        );
        let dx = tensor(dx, a)?;
        Ok((Some(dx.clone()), Some(dx)))
    }
}

/// Images per block of the convolution's weight gradient (a partial sum per block).
const IMAGE_BLOCK: usize = 8;

/// A 3×3 convolution with padding 1 and no bias, `(B, Cᵢ, H, W) * (Cₒ, Cᵢ, 3, 3)`, as im2col and
/// one GEMM per image, the images in parallel. Backward: `dW = Σ_b dY_b · colsᵀ_b` (summed per
/// block of images, the blocks in order) and `dX_b = col2im(Wᵀ · dY_b)`. (One GEMM per block of
/// 8 images, their patch matrices side by side, was 1.36x slower at the SimCLR CNN's shapes.) candle's own conv2d
/// has the same forward, but its backward runs a direct transposed convolution that was 10× slower
/// than PyTorch at the SimCLR CNN's shapes.
pub struct Conv3x3 {
    pub stride: usize,
}

/// The geometry of one convolution.
#[derive(Clone, Copy)]
struct ConvShape {
    ci: usize,
    h: usize,
    w: usize,
    co: usize,
    ho: usize,
    wo: usize,
    stride: usize,
}

impl ConvShape {
    /// Rows of the im2col matrix (`Cᵢ·9`) and its columns (output pixels).
    fn k(&self) -> usize {
        self.ci * 9
    }

    fn pixels(&self) -> usize {
        self.ho * self.wo
    }

    /// Values in an image's zero-bordered planes.
    fn padded(&self) -> usize {
        self.ci * (self.h + 2) * self.padded_w()
    }

    /// Width of a plane with its border of one zero on each side.
    fn padded_w(&self) -> usize {
        self.w + 2
    }

    /// Copies each `(H, W)` plane of `x` into the middle of a zero-bordered `(H+2, W+2)` plane of
    /// `padded` (whose border stays 0).
    #[inline(always)]
    fn pad(&self, x: &[f32], padded: &mut [f32]) {
        let (pw, plane) = (self.padded_w(), (self.h + 2) * self.padded_w());
        for (p, x) in padded.chunks_exact_mut(plane).zip(x.chunks_exact(self.h * self.w)) {
            for (row, line) in p[pw..].chunks_exact_mut(pw).zip(x.chunks_exact(self.w)) {
                row[1..=self.w].copy_from_slice(line);
            }
        }
    }

    /// The `(Cᵢ·9, Ho·Wo)` patch matrix of one image, from its zero-bordered planes (no bounds to
    /// test: the border supplies the padding's zeros).
    #[inline(always)]
    fn im2col(&self, padded: &[f32], cols: &mut [f32]) {
        let (p, s, pw) = (self.pixels(), self.stride, self.padded_w());
        let plane = (self.h + 2) * pw;
        for (ci, src) in padded.chunks_exact(plane).enumerate() {
            for (kk, row) in cols[ci * 9 * p..(ci + 1) * 9 * p].chunks_exact_mut(p).enumerate() {
                let (ky, kx) = (kk / 3, kk % 3);
                for (oy, out) in row.chunks_exact_mut(self.wo).enumerate() {
                    let line = &src[(oy * s + ky) * pw + kx..];
                    if s == 1 {
                        out.copy_from_slice(&line[..self.wo]);
                    } else {
                        out.iter_mut().zip(line.iter().step_by(s)).for_each(|(o, v)| *o = *v);
                    }
                }
            }
        }
    }

    /// Adds the patch matrix `cols` back onto the pixels they came from (the inverse of im2col)
    /// in the zero-bordered planes `padded`, then copies their middles to `x`.
    #[inline(always)]
    fn col2im(&self, cols: &[f32], padded: &mut [f32], x: &mut [f32]) {
        let (p, s, pw) = (self.pixels(), self.stride, self.padded_w());
        let plane = (self.h + 2) * pw;
        padded.fill(0.0);
        for (ci, dst) in padded.chunks_exact_mut(plane).enumerate() {
            for (kk, row) in cols[ci * 9 * p..(ci + 1) * 9 * p].chunks_exact(p).enumerate() {
                let (ky, kx) = (kk / 3, kk % 3);
                for (oy, from) in row.chunks_exact(self.wo).enumerate() {
                    let line = &mut dst[(oy * s + ky) * pw + kx..];
                    if s == 1 {
                        line[..self.wo].iter_mut().zip(from).for_each(|(x, v)| *x += v);
                    } else {
                        line.iter_mut().step_by(s).zip(from).for_each(|(x, v)| *x += v);
                    }
                }
            }
        }
        for (p, x) in padded.chunks_exact(plane).zip(x.chunks_exact_mut(self.h * self.w)) {
            for (row, line) in p[pw..].chunks_exact(pw).zip(x.chunks_exact_mut(self.w)) {
                line.copy_from_slice(&row[1..=self.w]);
            }
        }
    }
}

impl Conv3x3 {
    fn shape(&self, x: &[usize], w: &[usize]) -> candle_core::Result<(usize, ConvShape)> {
        let (&[b, ci, h, wi], &[co, ci2, 3, 3]) = (x, w) else {
            candle_core::bail!("conv3x3: input {x:?} and kernel {w:?} are not (B, C, H, W) and (Co, C, 3, 3)")
        };
        if ci != ci2 || h == 0 || wi == 0 {
            candle_core::bail!("conv3x3: input {x:?} does not match kernel {w:?}")
        }
        let out = |n: usize| (n + 2 - 3) / self.stride + 1;
        Ok((b, ConvShape { ci, h, w: wi, co, ho: out(h), wo: out(wi), stride: self.stride }))
    }
}

impl CustomOp2 for Conv3x3 {
    fn name(&self) -> &'static str {
        "pretext-conv3x3"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, w) = (slice(s1, l1, self.name())?, slice(s2, l2, self.name())?);
        let (b, c) = self.shape(l1.dims(), l2.dims())?;
        let (k, p) = (c.k(), c.pixels());
        let mut y = vec![0f32; b * c.co * p];
        y.par_chunks_mut(c.co * p).zip(x.par_chunks(c.ci * c.h * c.w)).for_each(|(y, x)| {
            let (mut padded, mut cols) = (vec![0f32; c.padded()], vec![0f32; k * p]);
            c.pad(x, &mut padded);
            c.im2col(&padded, &mut cols);
            // y (Co, P) = W (Co, K) · cols (K, P)
            matmul((c.co, p, k), y, p, false, w, (k, 1), &cols, (p, 1), false);
        });
        Ok((CpuStorage::F32(y), Shape::from((b, c.co, c.ho, c.wo))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (b, c) = self.shape(x.dims(), w.dims())?;
        let (xs, ws, gs) = (values(x)?, values(w)?, values(g)?);
        let (k, p, image) = (c.k(), c.pixels(), c.ci * c.h * c.w);
        let mut dx = vec![0f32; b * image];
        let partial: Vec<Vec<f32>> = dx
            .par_chunks_mut(IMAGE_BLOCK * image)
            .zip(xs.par_chunks(IMAGE_BLOCK * image).zip(gs.par_chunks(IMAGE_BLOCK * c.co * p)))
            .map(|(dx, (x, g))| {
                let (mut cols, mut dcols, mut dw) = (vec![0f32; k * p], vec![0f32; k * p], vec![0f32; c.co * k]);
                // The input's zero-bordered planes (the border stays 0), and the gradient's.
                let (mut padded, mut dpadded) = (vec![0f32; c.padded()], vec![0f32; c.padded()]);
                for (i, ((dx, x), g)) in
                    dx.chunks_exact_mut(image).zip(x.chunks_exact(image)).zip(g.chunks_exact(c.co * p)).enumerate()
                {
                    c.pad(x, &mut padded);
                    c.im2col(&padded, &mut cols);
                    // dW (Co, K) += dY (Co, P) · colsᵀ (P, K)
                    matmul((c.co, k, p), &mut dw, k, i > 0, g, (p, 1), &cols, (1, p), false);
                    // dcols (K, P) = Wᵀ (K, Co) · dY (Co, P)
                    matmul((k, p, c.co), &mut dcols, p, false, &ws, (1, k), g, (p, 1), false);
                    c.col2im(&dcols, &mut dpadded, dx);
                }
                dw
            })
            .collect();
        let dw = sum_in_order(partial.iter(), c.co * k);
        Ok((Some(tensor(dx, x)?), Some(tensor(dw, w)?)))
    }
}

/// Branch-free `exp`, `erf` and `tanh` for f32, so that the loops above vectorise (a call into
/// libm per element does not). exp and erf are PyTorch's for its vectorised CPU kernels: exp by
/// Cody–Waite range reduction and Cephes' polynomial (about 1 ulp), erf by Abramowitz & Stegun
/// 7.1.26 (absolute error 1.5e-7 in exact arithmetic, 6e-7 in f32); tanh is Cephes'.
#[allow(clippy::excessive_precision)] // the published constants, rounded by the compiler
pub mod math {
    /// `eˣ`; exactly 0 below −87.3 (where f32's `eˣ` is subnormal or 0).
    #[inline(always)]
    pub fn exp(x: f32) -> f32 {
        const LN2_HI: f32 = 0.693_359_4;
        const LN2_LO: f32 = -2.121_944_4e-4;
        let c = x.clamp(-87.3, 88.7);
        // Round to the nearest integer by adding 1.5·2²³ (no rounding instruction before SSE4.1).
        let k = (c * std::f32::consts::LOG2_E + 12_582_912.0) - 12_582_912.0;
        let r = c - k * LN2_HI - k * LN2_LO;
        let p = 1.987_569_1e-4;
        let p = p * r + 1.398_199_9e-3;
        let p = p * r + 8.333_452e-3;
        let p = p * r + 4.166_579_6e-2;
        let p = p * r + 1.666_666_5e-1;
        let p = p * r + 5.000_000_1e-1;
        let e = p * r * r + r + 1.0;
        let scaled = e * f32::from_bits(((k as i32 + 127) as u32) << 23);
        if x < -87.3 {
            0.0
        } else {
            scaled
        }
    }

    /// The error function.
    #[inline(always)]
    pub fn erf(x: f32) -> f32 {
        let a = x.abs();
        let t = 1.0 / (1.0 + 0.327_591_1 * a);
        let p = 1.061_405_4;
        let p = p * t - 1.453_152_1;
        let p = p * t + 1.421_413_7;
        let p = p * t - 0.284_496_72;
        let p = p * t + 0.254_829_6;
        let y = 1.0 - p * t * exp(-a * a);
        y.copysign(x)
    }

    /// The hyperbolic tangent, as Cephes' `tanhf` computes it, without branches: an odd
    /// polynomial below |x| = 0.625 (relative error about 1 ulp near 0, where GELU's inputs
    /// mostly are), `1 − 2 / (e^2|x| + 1)` above. A form with only the second branch was 3e-7 off
    /// in absolute terms near 0 (large in relative terms), which moved the decoder's weights
    /// 2.1e-4 of their scale from transformers' in six steps of the parity test.
    #[inline(always)]
    pub fn tanh(x: f32) -> f32 {
        let a = x.abs();
        let z = x * x;
        let p = -5.704_988_7e-3;
        let p = p * z + 2.063_908_9e-2;
        let p = p * z - 5.373_971_6e-2;
        let p = p * z + 1.333_144_2e-1;
        let p = p * z - 3.333_328_2e-1;
        let small = p * z * x + x;
        let large = (1.0 - 2.0 / (exp(2.0 * a.min(44.0)) + 1.0)).copysign(x);
        if a < 0.625 {
            small
        } else {
            large
        }
    }
}

#[cfg(test)]
mod tests {
    use super::math;

    /// The functions against f64 libm over [−30, 30] and the ends of exp's range.
    #[test]
    fn fast_math_is_as_accurate_as_stated() {
        let xs = (-300_000..=300_000).map(|i| i as f32 * 1e-4).chain([-87.0, -80.0, 80.0, 88.0]);
        let (mut exp_rel, mut erf_abs, mut tanh_abs, mut tanh_rel) = (0f64, 0f64, 0f64, 0f64);
        for x in xs {
            let e = (x as f64).exp();
            exp_rel = exp_rel.max((math::exp(x) as f64 - e).abs() / e);
            erf_abs = erf_abs.max((math::erf(x) as f64 - libm::erf(x as f64)).abs());
            let t = (x as f64).tanh();
            tanh_abs = tanh_abs.max((math::tanh(x) as f64 - t).abs());
            if t != 0.0 {
                tanh_rel = tanh_rel.max((math::tanh(x) as f64 - t).abs() / t.abs());
            }
        }
        assert!(exp_rel < 3e-7, "exp: relative error {exp_rel:e}");
        assert!(erf_abs < 1e-6, "erf: absolute error {erf_abs:e}");
        assert!(tanh_abs < 2e-7, "tanh: absolute error {tanh_abs:e}");
        assert!(tanh_rel < 5e-7, "tanh: relative error {tanh_rel:e}");
        assert!(math::tanh(1e-30) == 1e-30 && math::tanh(-1e-6) == -1e-6);
        assert_eq!(math::exp(-90.0), 0.0);
        assert_eq!(math::exp(f32::NEG_INFINITY), 0.0);
        assert!(math::erf(0.0).abs() < 2e-7 && math::erf(-4.0) == -math::erf(4.0));
        assert_eq!(math::tanh(-50.0), -1.0);
    }
}
