//! Building blocks: a parameter store with seeded initialisation, layers whose ops carry a
//! backward pass (fused kernels for f32 on the CPU, `kernels.rs`; composed ops elsewhere), seeded
//! dropout.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{LazyLock, Mutex};

use candle_core::{DType, Device, Tensor, Var, D};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::error::{Error, Result};
use crate::train::kernels;

/// A tensor that depends only on a shape and a device (an index table, a mask): built on the host
/// and uploaded the first time a forward asks for it on that device, then shared by every later
/// forward, so a step uploads nothing but its batch. Keyed by `name` and `dims`; at most
/// [`SHAPE_CONSTANTS`] are kept and the cache starts over when full (batches of many lengths
/// could otherwise grow it without bound).
pub fn shape_constant(
    name: &'static str,
    dims: &[usize],
    device: &Device,
    build: impl FnOnce() -> candle_core::Result<Tensor>,
) -> candle_core::Result<Tensor> {
    type Cache = HashMap<(&'static str, Vec<usize>), Vec<(Device, Tensor)>>;
    static CACHE: LazyLock<Mutex<Cache>> = LazyLock::new(Default::default);
    let key = (name, dims.to_vec());
    {
        let cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        let found = cache.get(&key).and_then(|on| on.iter().find(|(d, _)| d.same_device(device)));
        if let Some((_, t)) = found {
            return Ok(t.clone());
        }
    }
    let t = build()?;
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if cache.values().map(Vec::len).sum::<usize>() >= SHAPE_CONSTANTS {
        cache.clear();
    }
    cache.entry(key).or_default().push((device.clone(), t.clone()));
    Ok(t)
}

/// How many [`shape_constant`]s are kept.
pub const SHAPE_CONSTANTS: usize = 64;

/// Converts a candle error into ours.
pub fn ce(e: candle_core::Error) -> Error {
    Error::internal(format!("tensor operation failed: {e}"))
}

/// Named trainable tensors. Every tensor's initial values depend only on the seed and its name,
/// so a model's weights do not depend on the order its parts are built in.
pub struct Params {
    vars: BTreeMap<String, (Var, bool)>,
    /// Names of parameters the optimizer leaves alone (BYOL's EMA target network).
    frozen: std::collections::BTreeSet<String>,
    /// Prepended to every name while building a copy of a network (`target.`).
    prefix: String,
    seed: u64,
    device: Device,
    dtype: DType,
}

impl Params {
    pub fn new(seed: u64, device: &Device, dtype: DType) -> Self {
        Params {
            vars: BTreeMap::new(),
            frozen: Default::default(),
            prefix: String::new(),
            seed,
            device: device.clone(),
            dtype,
        }
    }

    /// From now on, names get `prefix` and the parameters are frozen (`""` ends it).
    pub fn frozen_scope(&mut self, prefix: &str) {
        self.prefix = prefix.to_string();
    }

    /// Whether the optimizer updates `name`.
    pub fn trainable(&self, name: &str) -> bool {
        !self.frozen.contains(name)
    }

    /// Sets every frozen `prefix·X` to `tau · prefix·X + (1 − tau) · X` (an exponential moving
    /// average of the trained weights; `tau = 0` copies them).
    pub fn ema(&self, prefix: &str, tau: f64) -> Result<()> {
        for name in &self.frozen {
            let Some(source) = name.strip_prefix(prefix) else { continue };
            let (Some((t, _)), Some((o, _))) = (self.vars.get(name), self.vars.get(source)) else {
                return Err(Error::internal(format!("frozen `{name}` has no trained twin `{source}`")));
            };
            let v = if tau == 0.0 {
                o.as_tensor().clone()
            } else {
                ((t.as_tensor() * tau).map_err(ce)? + (o.as_tensor() * (1.0 - tau)).map_err(ce)?).map_err(ce)?
            };
            t.set(&v.detach()).map_err(ce)?;
        }
        Ok(())
    }

    #[cfg(any(test, feature = "internals"))]
    pub fn device(&self) -> &Device {
        &self.device
    }

    fn add(&mut self, name: &str, values: Vec<f32>, shape: &[usize], decay: bool) -> Result<Tensor> {
        let name = &format!("{}{name}", self.prefix);
        if !self.prefix.is_empty() {
            self.frozen.insert(name.clone());
        }
        if self.vars.contains_key(name) {
            return Err(Error::internal(format!("parameter `{name}` defined twice")));
        }
        let t = Tensor::from_vec(values, shape, &self.device).and_then(|t| t.to_dtype(self.dtype)).map_err(ce)?;
        let var = Var::from_tensor(&t).map_err(ce)?;
        let out = var.as_tensor().clone();
        self.vars.insert(name.to_string(), (var, decay));
        Ok(out)
    }

    /// A weight drawn from N(0, std²); weight decay applies.
    pub fn normal(&mut self, name: &str, shape: &[usize], std: f64) -> Result<Tensor> {
        let seed = crate::ground::seeds::parameter(self.seed, name);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let n = shape.iter().product();
        let values = (0..n)
            .map(|_| {
                let z: f64 = StandardNormal.sample(&mut rng);
                (z * std) as f32
            })
            .collect();
        self.add(name, values, shape, true)
    }

    /// A bias, zero-initialised; no weight decay.
    pub fn zeros(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.add(name, vec![0.0; shape.iter().product()], shape, false)
    }

    /// A norm's scale, one-initialised; no weight decay.
    pub fn ones(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.add(name, vec![1.0; shape.iter().product()], shape, false)
    }

    /// Parameters by name, with whether weight decay applies.
    pub fn vars(&self) -> impl Iterator<Item = (&str, &Var, bool)> {
        self.vars.iter().map(|(k, (v, d))| (k.as_str(), v, *d))
    }

    /// Number of scalar parameters.
    pub fn count(&self) -> usize {
        self.vars.values().map(|(v, _)| v.elem_count()).sum()
    }

    /// Writes every parameter to a safetensors file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let map: BTreeMap<String, Tensor> =
            self.vars.iter().map(|(k, (v, _))| (k.clone(), v.as_tensor().clone())).collect();
        candle_core::safetensors::save(&map.into_iter().collect::<std::collections::HashMap<_, _>>(), path)
            .map_err(|e| Error::env(format!("cannot write `{}`: {e}", path.display())))
    }

    /// Loads every parameter from a safetensors file; the names and shapes must match exactly.
    pub fn load(&self, path: &Path) -> Result<()> {
        let tensors = read_safetensors(path, &self.device)?;
        check_same_keys(path, tensors.keys(), self.vars.keys())?;
        for (name, (var, _)) in &self.vars {
            let t = &tensors[name];
            if t.dims() != var.dims() {
                return Err(Error::data(format!(
                    "`{}`: tensor `{name}` has shape {:?}, the model expects {:?}",
                    path.display(),
                    t.dims(),
                    var.dims()
                )));
            }
            var.set(&t.to_dtype(self.dtype).map_err(ce)?).map_err(ce)?;
        }
        Ok(())
    }
}

/// Reads a safetensors file onto `device`.
pub fn read_safetensors(path: &Path, device: &Device) -> Result<BTreeMap<String, Tensor>> {
    let tensors = candle_core::safetensors::load(path, device).map_err(|e| {
        Error::data_hint(
            format!("cannot read `{}` as safetensors: {e}", path.display()),
            "the checkpoint is damaged; resume from an older one or start afresh",
        )
    })?;
    Ok(tensors.into_iter().collect())
}

/// Strict key check (candle's `VarMap::load` silently skips unknown names).
pub fn check_same_keys<'a>(
    path: &Path,
    found: impl Iterator<Item = &'a String>,
    wanted: impl Iterator<Item = &'a String>,
) -> Result<()> {
    let found: std::collections::BTreeSet<&String> = found.collect();
    let wanted: std::collections::BTreeSet<&String> = wanted.collect();
    let missing: Vec<&&String> = wanted.difference(&found).collect();
    let unexpected: Vec<&&String> = found.difference(&wanted).collect();
    if missing.is_empty() && unexpected.is_empty() {
        return Ok(());
    }
    let show = |v: &[&&String]| v.iter().take(5).map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ");
    Err(Error::data_hint(
        format!(
            "`{}` does not match the model: {} missing tensor(s) [{}], {} unexpected [{}]",
            path.display(),
            missing.len(),
            show(&missing),
            unexpected.len(),
            show(&unexpected)
        ),
        "the model settings changed since this checkpoint was written; restore them or start a new run directory",
    ))
}

/// Per-forward settings: training mode and the dropout stream. Dropout masks are drawn from an
/// RNG seeded by (seed, step, call number), so a resumed run draws the same masks.
///
/// On the CPU each call's mask comes from its own host RNG ([`Fwd::dropout_mask`], shared with
/// the fused kernels). On another device the mask is drawn there: the device's generator is
/// seeded once per forward from the same seed, then each call draws the next values in order, so
/// a forward's masks depend only on (seed, step, micro-batch) there too, and no mask crosses the
/// bus.
pub struct Fwd {
    pub train: bool,
    pub dropout: f64,
    seed: u64,
    calls: Cell<u64>,
    /// Whether this forward has seeded the device's generator.
    device_seeded: Cell<bool>,
}

impl Fwd {
    pub fn train(dropout: f64, seed: u64) -> Self {
        Fwd { train: true, dropout, seed, calls: Cell::new(0), device_seeded: Cell::new(false) }
    }

    pub fn eval() -> Self {
        Fwd { train: false, dropout: 0.0, seed: 0, calls: Cell::new(0), device_seeded: Cell::new(false) }
    }

    /// Inverted dropout: zeroes a share `p` of the values and scales the rest by 1/(1-p).
    pub fn dropout(&self, x: &Tensor) -> Result<Tensor> {
        if !x.device().is_cpu() {
            return match self.device_mask(x)? {
                Some(mask) => x.mul(&mask).map_err(ce),
                None => Ok(x.clone()),
            };
        }
        let Some(mask) = self.dropout_mask(x.elem_count()) else { return Ok(x.clone()) };
        let mask = Tensor::from_vec(mask, x.shape(), x.device()).and_then(|m| m.to_dtype(x.dtype())).map_err(ce)?;
        x.mul(&mask).map_err(ce)
    }

    /// The next dropout call's factors for `x`, drawn on `x`'s device (0, or 1/(1-p) for a
    /// value kept, in `x`'s type); `None` when there is no dropout. The first call of a forward
    /// seeds the device's generator; the CPU's cannot be seeded, so there the values come from
    /// candle's unseeded host generator (the CPU path uses [`Fwd::dropout_mask`] instead).
    fn device_mask(&self, x: &Tensor) -> Result<Option<Tensor>> {
        if !self.train || self.dropout <= 0.0 {
            return Ok(None);
        }
        self.calls.set(self.calls.get() + 1);
        let device = x.device();
        if !device.is_cpu() && !self.device_seeded.replace(true) {
            device.set_seed(crate::ground::seeds::dropout(self.seed, u64::MAX)).map_err(ce)?;
        }
        let keep = 1.0 - self.dropout;
        let f = || -> candle_core::Result<Tensor> {
            let uniform = Tensor::rand(0f32, 1f32, x.shape(), device)?;
            uniform.lt(keep)?.to_dtype(x.dtype())? * (1.0 / keep)
        };
        f().map(Some).map_err(ce)
    }

    /// The next dropout call's factors for `n` values (0, or 1/(1-p) for a value kept); `None`
    /// when there is no dropout.
    pub fn dropout_mask(&self, n: usize) -> Option<Vec<f32>> {
        if !self.train || self.dropout <= 0.0 {
            return None;
        }
        let call = self.calls.get();
        self.calls.set(call + 1);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(crate::ground::seeds::dropout(self.seed, call));
        let keep = 1.0 - self.dropout;
        let scale = (1.0 / keep) as f32;
        // Four 16-bit draws per 64-bit number.
        let threshold = (keep * 65536.0) as u32;
        let mut mask = Vec::with_capacity(n + 3);
        while mask.len() < n {
            let r: u64 = rng.random();
            for k in 0..4 {
                let v = ((r >> (16 * k)) & 0xffff) as u32;
                mask.push(if v < threshold { scale } else { 0.0 });
            }
        }
        mask.truncate(n);
        Some(mask)
    }
}

/// `y = x Wᵀ + b` with `W` stored `(out, in)` (PyTorch `nn.Linear`), or `y = x W + b` with `W`
/// stored `(in, out)` (GPT-2's `Conv1D`).
pub struct Linear {
    w: Tensor,
    b: Option<Tensor>,
    transposed: bool,
}

impl Linear {
    /// A PyTorch-layout linear layer `name.weight (out, in)`, `name.bias (out)`.
    pub fn new(p: &mut Params, name: &str, input: usize, output: usize, bias: bool, std: f64) -> Result<Self> {
        let w = p.normal(&format!("{name}.weight"), &[output, input], std)?;
        let b = if bias { Some(p.zeros(&format!("{name}.bias"), &[output])?) } else { None };
        Ok(Linear { w, b, transposed: false })
    }

    /// A GPT-2 `Conv1D`: `name.weight (in, out)`, `name.bias (out)`.
    pub fn conv1d(p: &mut Params, name: &str, input: usize, output: usize, std: f64) -> Result<Self> {
        let w = p.normal(&format!("{name}.weight"), &[input, output], std)?;
        let b = Some(p.zeros(&format!("{name}.bias"), &[output])?);
        Ok(Linear { w, b, transposed: true })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        linear(x, &self.w, self.b.as_ref(), self.transposed)
    }

    /// `fwd.dropout(self.forward(x))`, the dropout fused into the layer on the CPU in f32.
    pub fn forward_dropout(&self, x: &Tensor, fwd: &Fwd) -> Result<Tensor> {
        linear_dropout(x, &self.w, self.b.as_ref(), self.transposed, fwd)
    }
}

/// `x Wᵀ + b` over the last dimension of `x`, with `W` stored `(out, in)`, or `x W + b` with `W`
/// stored `(in, out)` when `transposed` (fused on the CPU in f32).
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>, transposed: bool) -> Result<Tensor> {
    linear_dropout(x, w, b, transposed, &Fwd::eval())
}

/// [`linear`] followed by `fwd.dropout`, in one kernel on the CPU in f32 (the same mask).
pub fn linear_dropout(x: &Tensor, w: &Tensor, b: Option<&Tensor>, transposed: bool, fwd: &Fwd) -> Result<Tensor> {
    if !(fused(x) && w.dtype() == DType::F32) {
        return fwd.dropout(&reference::linear(x, w, b, transposed)?);
    }
    let f = || -> candle_core::Result<Tensor> {
        let mut dims = x.dims().to_vec();
        let input = *dims.last().expect("linear input has a last dimension");
        let output = w.dim(if transposed { 1 } else { 0 })?;
        let rows = x.reshape((x.elem_count() / input, input))?.contiguous()?;
        let (b, has_bias) = match b {
            Some(b) => (b.contiguous()?, true),
            None => (Tensor::zeros(output, DType::F32, x.device())?, false),
        };
        *dims.last_mut().unwrap() = output;
        let mask = fwd.dropout_mask(rows.dim(0)? * output);
        rows.apply_op3(&w.contiguous()?, &b, kernels::Linear { transposed, has_bias, mask })?.reshape(dims)
    };
    f().map_err(ce)
}

/// Layer normalisation over the last dimension, composed from differentiable ops.
pub struct LayerNorm {
    w: Tensor,
    b: Tensor,
    eps: f64,
}

impl LayerNorm {
    pub fn new(p: &mut Params, name: &str, size: usize, eps: f64) -> Result<Self> {
        Ok(LayerNorm {
            w: p.ones(&format!("{name}.weight"), &[size])?,
            b: p.zeros(&format!("{name}.bias"), &[size])?,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        layer_norm(x, &self.w, &self.b, self.eps)
    }
}

/// `(x - mean) / sqrt(var + eps) * w + b` over the last dimension (biased variance, as PyTorch).
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    if fused(x) && w.dtype() == DType::F32 {
        let c = |t: &Tensor| t.contiguous().map_err(ce);
        return c(x)?.apply_op3(&c(w)?, &c(b)?, kernels::LayerNorm { eps }).map_err(ce);
    }
    reference::layer_norm(x, w, b, eps)
}

/// Whether the fused CPU kernels below apply (f32 on the CPU); otherwise composed ops are used.
pub(crate) fn fused(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

/// T5's scale-only RMS norm: `x / sqrt(mean(x²) + eps) * w`.
pub struct RmsNorm {
    w: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn new(p: &mut Params, name: &str, size: usize) -> Result<Self> {
        Ok(RmsNorm { w: p.ones(&format!("{name}.weight"), &[size])?, eps: 1e-6 })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let f = || -> candle_core::Result<Tensor> {
            let h = x.dim(D::Minus1)? as f64;
            let ms = (x.sqr()?.sum_keepdim(D::Minus1)? / h)?;
            x.broadcast_div(&(ms + self.eps)?.sqrt()?)?.broadcast_mul(&self.w)
        };
        f().map_err(ce)
    }
}

/// GELU, exact (`x · Φ(x)`) or with the tanh approximation (fused on the CPU in f32).
pub fn gelu(x: &Tensor, exact: bool) -> Result<Tensor> {
    if fused(x) {
        return x.contiguous().and_then(|x| x.apply_op1(kernels::Gelu { exact })).map_err(ce);
    }
    reference::gelu(x, exact)
}

/// A 3×3 convolution with padding 1 and no bias of `(B, C, H, W)` by `(Co, C, 3, 3)` (fused on
/// the CPU in f32; candle's conv2d elsewhere).
pub fn conv3x3(x: &Tensor, w: &Tensor, stride: usize) -> Result<Tensor> {
    if fused(x) && w.dtype() == DType::F32 {
        let c = |t: &Tensor| t.contiguous().map_err(ce);
        return c(x)?.apply_op2(&c(w)?, kernels::Conv3x3 { stride }).map_err(ce);
    }
    reference::conv3x3(x, w, stride)
}

/// The composed versions of the fused kernels: what runs on other devices and types, and what
/// the tests compare the kernels against.
pub mod reference {
    use super::*;

    pub fn softmax(x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::softmax(x, D::Minus1).map_err(ce)
    }

    pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
        candle_nn::ops::layer_norm_slow(x, w, b, eps as f32).map_err(ce)
    }

    pub fn conv3x3(x: &Tensor, w: &Tensor, stride: usize) -> Result<Tensor> {
        x.conv2d(w, 1, stride, 1, 1).map_err(ce)
    }

    pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>, transposed: bool) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let input = *dims.last().expect("linear input has a last dimension");
        let x2 = x.reshape((x.elem_count() / input, input)).map_err(ce)?;
        let y = if transposed { x2.matmul(w) } else { x2.matmul(&w.t().map_err(ce)?) }.map_err(ce)?;
        let y = match b {
            Some(b) => y.broadcast_add(b).map_err(ce)?,
            None => y,
        };
        let mut out = dims;
        *out.last_mut().unwrap() = y.dim(1).map_err(ce)?;
        y.reshape(out).map_err(ce)
    }

    pub fn gelu(x: &Tensor, exact: bool) -> Result<Tensor> {
        if exact { x.gelu_erf() } else { x.gelu() }.map_err(ce)
    }

    /// Multi-head self-attention on packed projections: narrowed, split into heads, attended,
    /// merged.
    pub fn self_attention(qkv: &Tensor, heads: usize, bias: Option<&Tensor>, scale: f64, fwd: &Fwd) -> Result<Tensor> {
        let h = qkv.dim(2).map_err(ce)? / 3;
        let part = |i: usize| qkv.narrow(2, i * h, h).map_err(ce).and_then(|t| split_heads(&t, heads));
        let (q, k, v) = (part(0)?, part(1)?, part(2)?);
        let scores = q.matmul(&k.t().map_err(ce)?).map_err(ce)?;
        merge_heads(&attention_probs(&scores, bias, scale, fwd)?.matmul(&v).map_err(ce)?)
    }

    /// `dropout(softmax(scale · scores + bias))`.
    pub fn attention_probs(scores: &Tensor, bias: Option<&Tensor>, scale: f64, fwd: &Fwd) -> Result<Tensor> {
        let scores = if scale != 1.0 { (scores * scale).map_err(ce)? } else { scores.clone() };
        let scores = match bias {
            Some(b) => scores.broadcast_add(b).map_err(ce)?,
            None => scores,
        };
        fwd.dropout(&softmax(&scores)?)
    }
}

/// Rows `ids` of an embedding table `(vocab, hidden)`; `ids` of any shape.
pub fn embed(table: &Tensor, ids: &Tensor) -> Result<Tensor> {
    let mut dims = ids.dims().to_vec();
    let flat = ids.flatten_all().map_err(ce)?;
    let rows = table.index_select(&flat, 0).map_err(ce)?;
    dims.push(table.dim(1).map_err(ce)?);
    rows.reshape(dims).map_err(ce)
}

/// Multi-head attention over `(batch, heads, len, head_dim)` tensors. `bias` is added to the
/// scores (masks are large negative values) and broadcasts to `(batch, heads, q_len, k_len)`.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, bias: Option<&Tensor>, scale: f64, fwd: &Fwd) -> Result<Tensor> {
    let scores = q.matmul(&k.t().map_err(ce)?).map_err(ce)?;
    attention_probs(&scores, bias, scale, fwd)?.matmul(v).map_err(ce)
}

/// `dropout(softmax(scale · scores + bias))`, one fused kernel on the CPU in f32 where the bias
/// is a constant (a mask); a learned bias (T5's relative positions) takes the composed ops.
pub fn attention_probs(scores: &Tensor, bias: Option<&Tensor>, scale: f64, fwd: &Fwd) -> Result<Tensor> {
    let constant = bias.is_none_or(|b| !b.track_op() && b.dtype() == DType::F32);
    if !(fused(scores) && constant) {
        return reference::attention_probs(scores, bias, scale, fwd);
    }
    let f = || -> candle_core::Result<Tensor> {
        let bias = match bias {
            Some(b) => b.broadcast_as(scores.shape())?,
            None => Tensor::zeros(1, DType::F32, scores.device())?.broadcast_as(scores.shape())?,
        };
        let mask = fwd.dropout_mask(scores.elem_count());
        let op = kernels::AttentionProbs { scale: scale as f32, mask, saved: Default::default() };
        scores.contiguous()?.apply_op2(&bias, op)
    };
    f().map_err(ce)
}

/// Multi-head self-attention on packed projections `qkv (B, T, 3·H)` (each position's query, key
/// and value side by side): `(B, T, H)` with the heads merged. `bias` is added to the scores and
/// broadcasts to `(B, heads, T, T)`. One fused kernel on the CPU in f32 where the bias is a
/// constant (a mask); composed ops elsewhere.
pub fn self_attention(qkv: &Tensor, heads: usize, bias: Option<&Tensor>, scale: f64, fwd: &Fwd) -> Result<Tensor> {
    let constant = bias.is_none_or(|b| !b.track_op() && b.dtype() == DType::F32);
    if !(fused(qkv) && constant) {
        return reference::self_attention(qkv, heads, bias, scale, fwd);
    }
    let f = || -> candle_core::Result<Tensor> {
        let (b, t, _) = qkv.dims3()?;
        let scores = (b, heads, t, t);
        let bias = match bias {
            Some(bias) => bias.broadcast_as(scores)?,
            None => Tensor::zeros(1, DType::F32, qkv.device())?.broadcast_as(scores)?,
        };
        let mask = fwd.dropout_mask(b * heads * t * t);
        let op = kernels::Attention { heads, scale: scale as f32, mask, saved: Default::default() };
        qkv.contiguous()?.apply_op2(&bias, op)
    };
    f().map_err(ce)
}

/// The three projections of `x` by `q`, `k` and `v` side by side, `(…, 3·out)`, as one linear
/// layer over their stacked weights (the packed input of [`self_attention`]). The three must
/// share a layout and all have biases or none.
pub fn qkv(x: &Tensor, q: &Linear, k: &Linear, v: &Linear) -> Result<Tensor> {
    if q.transposed != k.transposed || q.transposed != v.transposed {
        return Err(Error::internal("stacked projections of different layouts"));
    }
    let out_dim = if q.transposed { 1 } else { 0 };
    let w = Tensor::cat(&[&q.w, &k.w, &v.w], out_dim).map_err(ce)?;
    let b = match (&q.b, &k.b, &v.b) {
        (Some(a), Some(b), Some(c)) => Some(Tensor::cat(&[a, b, c], 0).map_err(ce)?),
        (None, None, None) => None,
        _ => return Err(Error::internal("stacked projections with and without biases")),
    };
    linear(x, &w, b.as_ref(), q.transposed)
}

/// `(batch, len, heads·head_dim)` → `(batch, heads, len, head_dim)`, contiguous.
pub fn split_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, t, h) = x.dims3().map_err(ce)?;
    x.reshape((b, t, heads, h / heads)).and_then(|x| x.transpose(1, 2)).and_then(|x| x.contiguous()).map_err(ce)
}

/// The inverse of [`split_heads`].
pub fn merge_heads(x: &Tensor) -> Result<Tensor> {
    let (b, nh, t, hd) = x.dims4().map_err(ce)?;
    x.transpose(1, 2).and_then(|x| x.contiguous()).and_then(|x| x.reshape((b, t, nh * hd))).map_err(ce)
}

/// The additive score value for a masked position: large and negative but finite, so a fully
/// masked row (padding) gives a uniform distribution instead of NaN.
pub const MASKED: f32 = -1.0e9;

#[cfg(test)]
mod tests {
    use super::*;

    /// The draw other devices use, run on the CPU (whose generator cannot be seeded, so only
    /// the mask's values and share are checked here; `scripts/gpu-smoke.sh` checks that two runs
    /// on a GPU print the same losses).
    #[test]
    fn device_masks_keep_the_share_and_scale() {
        let x = Tensor::ones((64, 1000), DType::F32, &Device::Cpu).unwrap();
        let fwd = Fwd::train(0.25, 3);
        let mask = fwd.device_mask(&x).unwrap().expect("dropout is on");
        assert_eq!((mask.dims(), mask.dtype()), (x.dims(), DType::F32));
        let values = mask.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let scale = (1.0 / 0.75) as f32;
        assert!(values.iter().all(|&v| v == 0.0 || v == scale), "every factor is 0 or 1/(1-p)");
        let kept = values.iter().filter(|&&v| v != 0.0).count() as f64 / values.len() as f64;
        assert!((kept - 0.75).abs() < 0.01, "kept {kept}, want 0.75");
        assert_eq!(fwd.calls.get(), 1, "a device draw counts as a call, as a host one does");
        let half = x.to_dtype(DType::BF16).unwrap();
        assert_eq!(fwd.device_mask(&half).unwrap().unwrap().dtype(), DType::BF16);
        assert!(Fwd::eval().device_mask(&x).unwrap().is_none());
        assert!(Fwd::train(0.0, 3).device_mask(&x).unwrap().is_none());
    }

    #[test]
    fn shape_constants_are_built_once_per_shape() {
        let built = Cell::new(0);
        let get = |n: usize| {
            shape_constant("test.arange", &[n], &Device::Cpu, || {
                built.set(built.get() + 1);
                Tensor::arange(0u32, n as u32, &Device::Cpu)
            })
            .unwrap()
        };
        assert_eq!(get(5).to_vec1::<u32>().unwrap(), vec![0, 1, 2, 3, 4]);
        assert_eq!(get(5).dims(), &[5]);
        assert_eq!(get(3).to_vec1::<u32>().unwrap(), vec![0, 1, 2]);
        // Other tests share the cache and may have cleared it in between; at most one rebuild.
        assert!((2..=3).contains(&built.get()), "built {} times", built.get());
    }
}
