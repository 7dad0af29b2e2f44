//! AdamW whose moments can be saved (candle's keeps them private), the learning-rate schedule and
//! global-norm gradient clipping.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Tensor};

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
                let z = var.zeros_like().map_err(ce)?.to_dtype(DType::F32).map_err(ce)?;
                Ok((name.to_string(), (z.clone(), z)))
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

    /// One update with learning rate `lr` from gradients by parameter name.
    pub fn update(&mut self, params: &Params, grads: &BTreeMap<String, Tensor>, lr: f64) -> Result<()> {
        self.step += 1;
        let c = &self.cfg;
        let bc1 = 1.0 - c.beta1.powi(self.step as i32);
        let bc2 = 1.0 - c.beta2.powi(self.step as i32);
        for (name, var, decay) in params.vars() {
            let Some(g) = grads.get(name).filter(|_| params.trainable(name)) else { continue };
            let mut f = || -> candle_core::Result<()> {
                let g = g.to_dtype(DType::F32)?;
                let (m, v) = self.moments.get_mut(name).expect("a moment per parameter");
                *m = ((&*m * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
                *v = ((&*v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
                let master = self.masters.get_mut(name);
                let p = match &master {
                    Some(w) => (*w).clone(),
                    None => var.as_tensor().to_dtype(DType::F32)?,
                };
                let p = if decay && c.weight_decay > 0.0 { (&p * (1.0 - lr * c.weight_decay))? } else { p };
                let step = ((&*m / bc1)? / ((&*v / bc2)?.sqrt()? + c.eps)?)?;
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

/// The learning rate at optimizer step `step` (0-based) of `total`: linear warmup over
/// `warmup_steps` (the first step already uses 1/warmup of the peak), then cosine or linear decay
/// to `min_lr_ratio` × peak at `total`.
pub fn learning_rate(peak: f64, s: &ScheduleSpec, step: u64, total: u64) -> f64 {
    if step < s.warmup_steps {
        return peak * (step + 1) as f64 / s.warmup_steps as f64;
    }
    let span = total.saturating_sub(s.warmup_steps).max(1) as f64;
    let progress = ((step - s.warmup_steps) as f64 / span).min(1.0);
    let shape = match s.decay {
        Decay::Constant => 1.0,
        Decay::Linear => 1.0 - progress,
        Decay::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
    };
    peak * (s.min_lr_ratio + (1.0 - s.min_lr_ratio) * shape)
}

/// The global L2 norm of the gradients; when `max_norm > 0` and the norm is larger, scales them
/// down to `max_norm` (PyTorch `clip_grad_norm_`). Returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut BTreeMap<String, Tensor>, max_norm: f64) -> Result<f64> {
    let mut total = 0f64;
    for g in grads.values() {
        total += g.to_dtype(DType::F32).and_then(|g| g.sqr()?.sum_all()?.to_scalar::<f32>()).map_err(ce)? as f64;
    }
    let norm = total.sqrt();
    if max_norm > 0.0 && norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        for g in grads.values_mut() {
            *g = (&*g * scale).map_err(ce)?;
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine() {
        let s = ScheduleSpec { warmup_steps: 10, decay: Decay::Cosine, min_lr_ratio: 0.1 };
        assert!((learning_rate(1.0, &s, 0, 110) - 0.1).abs() < 1e-12);
        assert!((learning_rate(1.0, &s, 9, 110) - 1.0).abs() < 1e-12);
        assert!((learning_rate(1.0, &s, 10, 110) - 1.0).abs() < 1e-12);
        assert!((learning_rate(1.0, &s, 60, 110) - 0.55).abs() < 1e-12);
        assert!((learning_rate(1.0, &s, 110, 110) - 0.1).abs() < 1e-12);
        let l = ScheduleSpec { warmup_steps: 0, decay: Decay::Linear, min_lr_ratio: 0.0 };
        assert!((learning_rate(2.0, &l, 25, 100) - 1.5).abs() < 1e-12);
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
