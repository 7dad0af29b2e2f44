//! AdamW whose moments can be saved (candle's keeps them private), the learning-rate schedule and
//! global-norm gradient clipping.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{CpuStorage, DType, InplaceOp2, InplaceOp3, Layout, Tensor};

use crate::error::{Error, Result};
use crate::spec::{AdamWSpec, Decay, ScheduleSpec};
use crate::train::nn::{ce, check_same_keys, read_safetensors, Params};

/// AdamW with decoupled weight decay (Loshchilov & Hutter; PyTorch `torch.optim.AdamW`):
/// `p ← p − lr·wd·p − lr·m̂/(√v̂ + ε)`, weight decay only on parameters marked for it.
///
/// Parameters kept in a narrower type than f32 (bf16) get an f32 master copy: the update is
/// applied to the master and the parameter set to it rounded. Applied to a bf16 weight directly,
/// most updates would round away (near 1.0, bf16 moves in steps of 0.0078).
pub struct AdamW {
    pub cfg: AdamWSpec,
    /// Optimizer steps taken (bias correction uses it).
    pub step: u64,
    moments: BTreeMap<String, (Tensor, Tensor)>,
    /// f32 master weights of the parameters that are not f32.
    masters: BTreeMap<String, Tensor>,
}

impl AdamW {
    pub fn new(cfg: &AdamWSpec, params: &Params) -> Result<Self> {
        let moments = params
            .vars()
            .filter(|(name, _, _)| params.trainable(name))
            .map(|(name, var, _)| {
                // Two tensors, not one shared: the update writes the moments in place.
                let zeros = || var.zeros_like().and_then(|z| z.to_dtype(DType::F32)).map_err(ce);
                Ok((name.to_string(), (zeros()?, zeros()?)))
            })
            .collect::<Result<_>>()?;
        let mut opt = AdamW { cfg: cfg.clone(), step: 0, moments, masters: BTreeMap::new() };
        opt.sync_masters(params)?;
        Ok(opt)
    }

    /// Sets the master weights from the parameters (after they were loaded from elsewhere).
    pub fn sync_masters(&mut self, params: &Params) -> Result<()> {
        self.masters = params
            .vars()
            .filter(|(name, var, _)| params.trainable(name) && var.dtype() != DType::F32)
            .map(|(name, var, _)| Ok((name.to_string(), var.as_tensor().to_dtype(DType::F32).map_err(ce)?)))
            .collect::<Result<_>>()?;
        Ok(())
    }

    /// One update with learning rate `lr` from gradients by parameter name (tests, benches; the
    /// trainer clips: [`AdamW::update_scaled`]).
    ///
    /// On the CPU each parameter is updated in three in-place passes (both moments, then the
    /// weight) with no temporary tensors; elsewhere, and for tensors that are not contiguous, by
    /// candle's composed ops, which compute exactly the same values (see the tests).
    #[cfg(any(test, feature = "internals"))]
    pub fn update(&mut self, params: &Params, grads: &BTreeMap<String, Tensor>, lr: f64) -> Result<()> {
        self.update_with(params, grads, lr, None, true)
    }

    /// [`AdamW::update`] from the gradients times `scale`, an f32 scalar on their device (the
    /// clipping factor, [`clip_grad_norm`]).
    pub fn update_scaled(
        &mut self,
        params: &Params,
        grads: &BTreeMap<String, Tensor>,
        lr: f64,
        scale: Option<&Tensor>,
    ) -> Result<()> {
        self.update_with(params, grads, lr, scale, true)
    }

    /// [`AdamW::update`] through candle's composed ops only: the baseline of the fused passes
    /// (benches, tests).
    #[cfg(any(test, feature = "internals"))]
    pub fn update_composed(&mut self, params: &Params, grads: &BTreeMap<String, Tensor>, lr: f64) -> Result<()> {
        self.update_with(params, grads, lr, None, false)
    }

    fn update_with(
        &mut self,
        params: &Params,
        grads: &BTreeMap<String, Tensor>,
        lr: f64,
        scale: Option<&Tensor>,
        fused: bool,
    ) -> Result<()> {
        self.step += 1;
        let c = &self.cfg;
        let k = StepConstants::new(c, lr, self.step);
        // On the CPU the factor is read where it is (no transfer) and applied inside the moment
        // passes.
        let host_scale = match scale {
            Some(s) if s.device().is_cpu() => s.to_scalar::<f32>().map_err(ce)?,
            _ => 1.0,
        };
        for (name, var, decay) in params.vars() {
            let Some(g) = grads.get(name).filter(|_| params.trainable(name)) else { continue };
            let (m, v) = self.moments.get_mut(name).expect("a moment per parameter");
            let master = self.masters.get_mut(name);
            let decay = decay && c.weight_decay > 0.0;
            let f = || -> candle_core::Result<()> {
                let g = g.to_dtype(DType::F32)?;
                let weight = match &master {
                    Some(w) => (*w).clone(),
                    None => var.as_tensor().clone(),
                };
                if fused && [&weight, &*m, &*v, &g].iter().all(|t| t.device().is_cpu() && t.is_contiguous()) {
                    let scale = host_scale;
                    m.inplace_op2(&g, &Moment { beta: k.beta1, squared: false, scale })?;
                    v.inplace_op2(&g, &Moment { beta: k.beta2, squared: true, scale })?;
                    weight.inplace_op3(m, v, &Apply { k, decay })?;
                    if master.is_some() {
                        var.set(&weight.to_dtype(var.dtype())?)?;
                    }
                    return Ok(());
                }
                let g = match scale {
                    Some(s) => g.broadcast_mul(s)?,
                    None => g,
                };
                *m = ((&*m * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
                *v = ((&*v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
                let p = weight.to_dtype(DType::F32)?;
                let p = if decay { (&p * (1.0 - lr * c.weight_decay))? } else { p };
                let step = ((&*m / k.bc1)? / ((&*v / k.bc2)?.sqrt()? + c.eps)?)?;
                let p = (p - (step * lr)?)?;
                var.set(&p.to_dtype(var.dtype())?)?;
                if let Some(w) = master {
                    *w = p;
                }
                Ok(())
            };
            f().map_err(ce)?;
        }
        Ok(())
    }

    /// Writes the moments (`<name>.exp_avg`, `<name>.exp_avg_sq`, PyTorch's names) and the master
    /// weights (`<name>.master`).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut map = BTreeMap::new();
        for (name, (m, v)) in &self.moments {
            map.insert(format!("{name}.exp_avg"), m.clone());
            map.insert(format!("{name}.exp_avg_sq"), v.clone());
        }
        for (name, w) in &self.masters {
            map.insert(format!("{name}.master"), w.clone());
        }
        candle_core::safetensors::save(&map.into_iter().collect::<std::collections::HashMap<_, _>>(), path)
            .map_err(|e| Error::env(format!("cannot write `{}`: {e}", path.display())))
    }

    /// Restores the moments saved by [`AdamW::save`]; the names must match exactly.
    pub fn load(&mut self, path: &Path, step: u64) -> Result<()> {
        let device = self.moments.values().next().map(|(m, _)| m.device().clone()).unwrap_or(candle_core::Device::Cpu);
        let tensors = read_safetensors(path, &device)?;
        let mut wanted: Vec<String> =
            self.moments.keys().flat_map(|n| [format!("{n}.exp_avg"), format!("{n}.exp_avg_sq")]).collect();
        wanted.extend(self.masters.keys().map(|n| format!("{n}.master")));
        check_same_keys(path, tensors.keys(), wanted.iter())?;
        for (name, w) in self.masters.iter_mut() {
            let t = &tensors[&format!("{name}.master")];
            if t.dims() != w.dims() {
                return Err(Error::data(format!("`{}`: `{name}.master` has the wrong shape", path.display())));
            }
            *w = t.to_dtype(DType::F32).map_err(ce)?;
        }
        for (name, (m, v)) in self.moments.iter_mut() {
            let load = |suffix: &str, into: &mut Tensor| -> Result<()> {
                let t = &tensors[&format!("{name}.{suffix}")];
                if t.dims() != into.dims() {
                    return Err(Error::data(format!("`{}`: `{name}.{suffix}` has the wrong shape", path.display())));
                }
                *into = t.to_dtype(DType::F32).map_err(ce)?;
                Ok(())
            };
            load("exp_avg", m)?;
            load("exp_avg_sq", v)?;
        }
        self.step = step;
        Ok(())
    }
}

/// One step's AdamW scalars, rounded to f32 as candle's `tensor * f64` (an affine map in the
/// tensor's type) rounds them, so that the fused passes and the composed ops agree bit for bit.
#[derive(Clone, Copy)]
struct StepConstants {
    beta1: (f32, f32),
    beta2: (f32, f32),
    /// `1 / (1 − β₁ᵗ)`, `1 / (1 − β₂ᵗ)`: candle divides by a scalar as a multiply by its inverse.
    inv_bc1: f32,
    inv_bc2: f32,
    bc1: f64,
    bc2: f64,
    eps: f32,
    lr: f32,
    /// `1 − lr · weight_decay`.
    shrink: f32,
}

impl StepConstants {
    fn new(c: &AdamWSpec, lr: f64, step: u64) -> Self {
        let bc1 = 1.0 - c.beta1.powi(step as i32);
        let bc2 = 1.0 - c.beta2.powi(step as i32);
        StepConstants {
            beta1: (c.beta1 as f32, (1.0 - c.beta1) as f32),
            beta2: (c.beta2 as f32, (1.0 - c.beta2) as f32),
            inv_bc1: (1.0 / bc1) as f32,
            inv_bc2: (1.0 / bc2) as f32,
            bc1,
            bc2,
            eps: c.eps as f32,
            lr: lr as f32,
            shrink: (1.0 - lr * c.weight_decay) as f32,
        }
    }
}

/// The contiguous f32 slice of a CPU storage.
fn slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> candle_core::Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("{op}: expects a contiguous f32 tensor"),
    }
}

fn slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout, op: &str) -> candle_core::Result<&'a mut [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&mut v[a..b]),
        _ => candle_core::bail!("{op}: expects a contiguous f32 tensor"),
    }
}

/// `m ← β·m + (1 − β)·g` (or `g²` for the second moment), in place, with `g` the gradient times
/// `scale` (the clipping factor; `g · 1` is `g` exactly, so 1 leaves it as it is).
struct Moment {
    beta: (f32, f32),
    squared: bool,
    scale: f32,
}

impl InplaceOp2 for Moment {
    fn name(&self) -> &'static str {
        "adamw-moment"
    }

    fn cpu_fwd(&self, dst: &mut CpuStorage, l: &Layout, g: &CpuStorage, gl: &Layout) -> candle_core::Result<()> {
        let m = slice_mut(dst, l, self.name())?;
        let g = slice(g, gl, self.name())?;
        if m.len() != g.len() {
            candle_core::bail!("{}: {} moments for {} gradients", self.name(), m.len(), g.len());
        }
        let (b, rest) = self.beta;
        let s = self.scale;
        if self.squared {
            m.iter_mut().zip(g).for_each(|(m, &g)| *m = *m * b + ((g * s) * (g * s)) * rest);
        } else {
            m.iter_mut().zip(g).for_each(|(m, &g)| *m = *m * b + (g * s) * rest);
        }
        Ok(())
    }
}

/// `p ← p·(1 − lr·wd) − lr · m̂ / (√v̂ + ε)` from the updated moments, in place.
struct Apply {
    k: StepConstants,
    decay: bool,
}

impl InplaceOp3 for Apply {
    fn name(&self) -> &'static str {
        "adamw-apply"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        l: &Layout,
        m: &CpuStorage,
        ml: &Layout,
        v: &CpuStorage,
        vl: &Layout,
    ) -> candle_core::Result<()> {
        let p = slice_mut(dst, l, self.name())?;
        let (m, v) = (slice(m, ml, self.name())?, slice(v, vl, self.name())?);
        if p.len() != m.len() || p.len() != v.len() {
            candle_core::bail!("{}: {} weights for {} and {} moments", self.name(), p.len(), m.len(), v.len());
        }
        let k = self.k;
        for ((p, &m), &v) in p.iter_mut().zip(m).zip(v) {
            let update = (m * k.inv_bc1) / ((v * k.inv_bc2).sqrt() + k.eps);
            let w = if self.decay { *p * k.shrink } else { *p };
            *p = w - update * k.lr;
        }
        Ok(())
    }
}

/// The learning rate at optimizer step `step` (0-based) of `total`: linear warmup over
/// [`ScheduleSpec::warmup`] steps (the first step already uses 1/warmup of the peak), then cosine
/// or linear decay to `min_lr_ratio` × peak at `total`.
pub fn learning_rate(peak: f64, s: &ScheduleSpec, step: u64, total: u64) -> f64 {
    let warmup = s.warmup(total);
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let progress = ((step - warmup) as f64 / span).min(1.0);
    let shape = match s.decay {
        Decay::Constant => 1.0,
        Decay::Linear => 1.0 - progress,
        Decay::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
    };
    peak * (s.min_lr_ratio + (1.0 - s.min_lr_ratio) * shape)
}

/// Global-norm clipping computed on the gradients' device (PyTorch `clip_grad_norm_`), with
/// nothing read back: the update multiplies the gradients by `scale`.
pub struct Clip {
    /// The sum of the squared gradients (f32 scalar): the norm before clipping is its root.
    pub sum_sq: Tensor,
    /// `min(1, max_norm / (norm + 1e-6))` (f32 scalar); `None` when clipping is off.
    pub scale: Option<Tensor>,
}

/// The gradients' global L2 norm and, when `max_norm > 0`, the factor that scales them down to
/// `max_norm` when it is larger. The factor is computed in f64 and rounded once to f32, as a
/// host-side `gradient * scale` rounds it, and it is exactly 1 when the norm is within bounds.
pub fn clip_grad_norm(grads: &BTreeMap<String, Tensor>, max_norm: f64) -> Result<Clip> {
    let device = grads.values().next().map(|g| g.device().clone()).unwrap_or(candle_core::Device::Cpu);
    let f = || -> candle_core::Result<Clip> {
        let mut sum_sq: Option<Tensor> = None;
        for g in grads.values() {
            let s = g.to_dtype(DType::F32)?.sqr()?.sum_all()?;
            sum_sq = Some(match sum_sq {
                None => s,
                Some(t) => (t + s)?,
            });
        }
        let sum_sq = match sum_sq {
            Some(s) => s,
            None => Tensor::new(0f32, &device)?,
        };
        let scale = if max_norm > 0.0 {
            let denominator = (sum_sq.to_dtype(DType::F64)?.sqrt()? + 1e-6)?;
            let scale = (denominator.recip()? * max_norm)?.minimum(1.0)?;
            Some(scale.to_dtype(DType::F32)?)
        } else {
            None
        };
        Ok(Clip { sum_sq, scale })
    };
    f().map_err(ce)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine() {
        let s = ScheduleSpec { warmup_steps: Some(10), decay: Decay::Cosine, min_lr_ratio: 0.1, ..Default::default() };
        assert!((learning_rate(1.0, &s, 0, 110) - 0.1).abs() < 1e-12);
        assert!((learning_rate(1.0, &s, 9, 110) - 1.0).abs() < 1e-12);
        assert!((learning_rate(1.0, &s, 10, 110) - 1.0).abs() < 1e-12);
        assert!((learning_rate(1.0, &s, 60, 110) - 0.55).abs() < 1e-12);
        assert!((learning_rate(1.0, &s, 110, 110) - 0.1).abs() < 1e-12);
        let l = ScheduleSpec { warmup_steps: Some(0), decay: Decay::Linear, ..Default::default() };
        assert!((learning_rate(2.0, &l, 25, 100) - 1.5).abs() < 1e-12);
    }

    #[test]
    fn warmup_ratio_follows_the_run_length() {
        let default = ScheduleSpec::default();
        assert_eq!(default.warmup(1000), 60);
        assert_eq!(default.warmup(5), 1, "rounded up, as transformers does");
        assert_eq!(default.warmup(0), 0);
        let r = ScheduleSpec { warmup_ratio: Some(0.5), ..Default::default() };
        assert_eq!(r.warmup(7), 4);
        let tenth = ScheduleSpec { warmup_ratio: Some(0.1), ..Default::default() };
        assert_eq!(tenth.warmup(300), 30, "0.1 × 300 is 30 although f64 says 30.000000000000004");
        assert_eq!(ScheduleSpec { warmup_ratio: Some(0.13), ..Default::default() }.warmup(150), 20);
        assert!((learning_rate(1.0, &r, 3, 7) - 1.0).abs() < 1e-12);
        assert!((learning_rate(1.0, &r, 0, 7) - 0.25).abs() < 1e-12);
        let fixed = ScheduleSpec { warmup_steps: Some(100), ..Default::default() };
        assert_eq!(fixed.warmup(5000), 100);
    }

    #[test]
    fn adamw_matches_the_closed_form_first_steps() {
        // Worked by hand from PyTorch's AdamW update (lr 0.1, weight decay 0.5, p = 1, gradient 2
        // at both steps): bias-corrected m̂ = 2 and v̂ = 4 at both steps, so each step moves by
        // lr · 2/√4 = 0.1 after decaying p by (1 − lr·wd) = 0.95:
        // step 1: 1 · 0.95 − 0.1 = 0.85; step 2: 0.85 · 0.95 − 0.1 = 0.7075.
        let device = candle_core::Device::Cpu;
        let mut p = Params::new(0, &device, DType::F32);
        p.normal("w", &[1], 0.0).unwrap();
        let var = p.vars().next().unwrap().1.clone();
        var.set(&Tensor::new(&[1f32], &device).unwrap()).unwrap();
        let cfg = AdamWSpec { lr: 0.1, weight_decay: 0.5, beta1: 0.9, beta2: 0.999, eps: 1e-8 };
        let mut opt = AdamW::new(&cfg, &p).unwrap();
        let grads: BTreeMap<String, Tensor> = [("w".to_string(), Tensor::new(&[2f32], &device).unwrap())].into();
        opt.update(&p, &grads, 0.1).unwrap();
        let v = var.as_tensor().to_vec1::<f32>().unwrap()[0];
        assert!((v - 0.85).abs() < 1e-6, "{v}");
        opt.update(&p, &grads, 0.1).unwrap();
        let v = var.as_tensor().to_vec1::<f32>().unwrap()[0];
        assert!((v - 0.7075).abs() < 1e-6, "{v}");
    }

    /// The fused in-place passes give exactly the composed ops' values: weights (decayed and not,
    /// f32 and bf16 with an f32 master) and both moments, over several steps of random gradients,
    /// clipped at every other step.
    #[test]
    fn the_fused_update_equals_the_composed_one_bit_for_bit() {
        let device = candle_core::Device::Cpu;
        let cfg = AdamWSpec { lr: 3e-3, weight_decay: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8 };
        for dtype in [DType::F32, DType::BF16] {
            let make = || {
                let mut p = Params::new(7, &device, dtype);
                p.normal("decayed", &[37, 5], 0.5).unwrap();
                p.zeros("bias", &[11]).unwrap();
                p
            };
            let (fused, composed) = (make(), make());
            let mut a = AdamW::new(&cfg, &fused).unwrap();
            let mut b = AdamW::new(&cfg, &composed).unwrap();
            for step in 0..6u64 {
                let grads: BTreeMap<String, Tensor> = fused
                    .vars()
                    .map(|(name, var, _)| {
                        let g = Tensor::randn(0f32, 1.0, var.dims(), &device).unwrap().to_dtype(dtype).unwrap();
                        (name.to_string(), g)
                    })
                    .collect();
                let lr = learning_rate(cfg.lr, &ScheduleSpec::default(), step, 6);
                let clip = clip_grad_norm(&grads, if step % 2 == 1 { 1.0 } else { 0.0 }).unwrap();
                assert_eq!(clip.scale.is_some(), step % 2 == 1);
                a.update_with(&fused, &grads, lr, clip.scale.as_ref(), true).unwrap();
                b.update_with(&composed, &grads, lr, clip.scale.as_ref(), false).unwrap();
            }
            let flat = |t: &Tensor| t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for ((name, x, _), (_, y, _)) in fused.vars().zip(composed.vars()) {
                assert_eq!(flat(x.as_tensor()), flat(y.as_tensor()), "{dtype:?} {name}");
                assert_eq!(flat(&a.moments[name].0), flat(&b.moments[name].0), "{dtype:?} {name} m");
                assert_eq!(flat(&a.moments[name].1), flat(&b.moments[name].1), "{dtype:?} {name} v");
                if dtype != DType::F32 {
                    assert_eq!(flat(&a.masters[name]), flat(&b.masters[name]), "{name} master");
                }
            }
        }
    }

    /// Clipping on the device gives the factor a host computes (PyTorch's
    /// `max_norm / (norm + 1e-6)`, at most 1), and an update by the clipped gradients: the same
    /// weights as one from gradients scaled beforehand.
    #[test]
    fn clipping_on_the_device_scales_the_update_as_scaling_the_gradients_does() {
        let device = candle_core::Device::Cpu;
        let cfg = AdamWSpec { lr: 1e-2, weight_decay: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8 };
        let make = || {
            let mut p = Params::new(3, &device, DType::F32);
            p.normal("w", &[9, 4], 0.5).unwrap();
            p
        };
        let (clipped, prescaled) = (make(), make());
        let g = Tensor::randn(0f32, 1.0, (9, 4), &device).unwrap();
        let grads: BTreeMap<String, Tensor> = [("w".to_string(), g.clone())].into();
        let norm = (g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() as f64).sqrt();
        let clip = clip_grad_norm(&grads, 0.5).unwrap();
        assert_eq!((clip.sum_sq.to_scalar::<f32>().unwrap() as f64).sqrt(), norm);
        let want = (0.5 / (norm + 1e-6)) as f32;
        let scale = clip.scale.as_ref().unwrap();
        assert_eq!(scale.to_scalar::<f32>().unwrap(), want);
        let loose = clip_grad_norm(&grads, norm * 2.0).unwrap().scale.unwrap();
        assert_eq!(loose.to_scalar::<f32>().unwrap(), 1.0, "within bounds the gradients stay as they are");

        let mut a = AdamW::new(&cfg, &clipped).unwrap();
        a.update_scaled(&clipped, &grads, 1e-2, Some(scale)).unwrap();
        let mut b = AdamW::new(&cfg, &prescaled).unwrap();
        let scaled: BTreeMap<String, Tensor> = [("w".to_string(), (&g * want as f64).unwrap())].into();
        b.update(&prescaled, &scaled, 1e-2).unwrap();
        let w = |p: &Params| p.vars().next().unwrap().1.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(w(&clipped), w(&prescaled));
        assert_ne!(w(&clipped), w(&make()), "the update moved the weights");
    }

    #[test]
    fn bf16_parameters_keep_updates_too_small_for_bf16_in_their_master_weights() {
        // Steps of 1e-4 near 1.0, where bf16 moves in steps of 2⁻⁷ ≈ 0.0078: applied to the bf16
        // weight each one would round away; the f32 master keeps them.
        let device = candle_core::Device::Cpu;
        let mut p = Params::new(0, &device, DType::BF16);
        p.ones("w", &[1]).unwrap();
        let var = p.vars().next().unwrap().1.clone();
        let cfg = AdamWSpec { lr: 1e-4, weight_decay: 0.0, beta1: 0.9, beta2: 0.999, eps: 1e-8 };
        let mut opt = AdamW::new(&cfg, &p).unwrap();
        let grads: BTreeMap<String, Tensor> =
            [("w".to_string(), Tensor::new(&[1f32], &device).unwrap().to_dtype(DType::BF16).unwrap())].into();
        let value = |var: &candle_core::Var| var.as_tensor().to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap()[0];
        for _ in 0..10 {
            opt.update(&p, &grads, 1e-4).unwrap();
        }
        // Ten steps of 1e-4: the master is at 0.999, the weight still rounds to 1.0.
        let master = opt.masters["w"].to_vec1::<f32>().unwrap()[0];
        assert!((master - 0.999).abs() < 1e-5, "{master}");
        assert_eq!(value(&var), 1.0);
        for _ in 0..30 {
            opt.update(&p, &grads, 1e-4).unwrap();
        }
        // Forty steps: 0.996, which bf16 rounds to 0.99609375.
        assert_eq!(value(&var), 0.99609375);
        // The masters survive a save and load.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("opt.safetensors");
        opt.save(&file).unwrap();
        let mut again = AdamW::new(&cfg, &p).unwrap();
        again.load(&file, opt.step).unwrap();
        assert_eq!(again.masters["w"].to_vec1::<f32>().unwrap(), opt.masters["w"].to_vec1::<f32>().unwrap());
    }
}
