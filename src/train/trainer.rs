//! The trainer of one run: model, optimizer and schedule, one optimizer step at a time, with
//! the loss on held-out batches and the collapse monitor of embedding models.

use std::collections::BTreeMap;

use arrow::array::RecordBatch;
use candle_core::{DType, Device, Tensor};

use super::batch::{to_inputs, TaskKind, TrainBatch};
use super::collapse;
use super::models::{Model, ModelInput, Objective};
use super::nn::{ce, Fwd};
use super::optim::{self, AdamW};
use crate::error::{Error, Result};
use crate::ground::seeds;
use crate::plan::Plan;
use crate::spec::{DTypeSpec, OptimizerSpec, TrainSpec};

/// Model, optimizer and schedule: one optimizer step at a time.
pub struct Trainer {
    pub model: Model,
    pub opt: AdamW,
    pub cfg: TrainSpec,
    pub kind: TaskKind,
    pub device: Device,
    pub dtype: DType,
    pub pad_id: u32,
    pub vocab: u32,
    /// The longest token row the model positions (`seq_len`).
    pub max_len: usize,
    seed: u64,
    /// The contrastive temperature: `train.temperature`, else the task's recipe.
    pub temperature: f64,
    /// Optimizer steps done.
    pub step: u64,
}

/// The result of one optimizer step, still on the training device: a step reads nothing back,
/// so that a GPU runs ahead of the host until the values are wanted ([`StepOutcome::read`],
/// [`read_outcomes`]: at `log_every`, a checkpoint, the end).
#[derive(Debug, Clone)]
pub struct StepOutcome {
    /// The step's number (1-based), for the errors that name it.
    pub step: u64,
    /// Each micro-batch's loss, a scalar.
    losses: Vec<Tensor>,
    /// The sum of the squared gradients before clipping, a scalar.
    grad_sq: Tensor,
    pub lr: f64,
}

/// A step's values, read back from the device.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepValues {
    /// The mean of the micro-batches' losses.
    pub loss: f64,
    /// The global gradient norm before clipping.
    pub grad_norm: f64,
    pub lr: f64,
}

impl StepOutcome {
    /// This step's values (one device→host read); see [`read_outcomes`].
    #[cfg(any(test, feature = "internals"))]
    pub fn read(&self) -> Result<StepValues> {
        Ok(read_outcomes(std::slice::from_ref(self))?[0])
    }
}

/// The values of `steps` in one device→host read, checked in step order: the first loss or
/// gradient norm that is not finite is an error naming its step.
pub fn read_outcomes(steps: &[StepOutcome]) -> Result<Vec<StepValues>> {
    let values = read_scalars(steps.iter().flat_map(|s| s.losses.iter().chain(std::iter::once(&s.grad_sq))))?;
    let hint = "lower `train.optimizer.adamw.lr`, lengthen the warmup (`train.schedule.warmup_ratio`) or keep `clip_grad_norm` on";
    let mut values = values.into_iter();
    let mut out = Vec::with_capacity(steps.len());
    for s in steps {
        let mut loss_sum = 0.0;
        for _ in &s.losses {
            let value = values.next().unwrap_or(f32::NAN) as f64;
            if !value.is_finite() {
                return Err(Error::data_hint(format!("the training loss became {value} at step {}", s.step), hint));
            }
            loss_sum += value;
        }
        let grad_norm = (values.next().unwrap_or(f32::NAN) as f64).sqrt();
        if !grad_norm.is_finite() {
            return Err(Error::data_hint(format!("the gradient norm became {grad_norm} at step {}", s.step), hint));
        }
        out.push(StepValues { loss: loss_sum / s.losses.len().max(1) as f64, grad_norm, lr: s.lr });
    }
    Ok(out)
}

/// Scalar tensors of one device as f32 values, in one device→host read.
fn read_scalars<'a>(scalars: impl IntoIterator<Item = &'a Tensor>) -> Result<Vec<f32>> {
    let scalars: Vec<Tensor> = scalars
        .into_iter()
        .map(|t| t.to_dtype(DType::F32).and_then(|t| t.reshape(1)))
        .collect::<candle_core::Result<_>>()
        .map_err(ce)?;
    if scalars.is_empty() {
        return Ok(Vec::new());
    }
    Tensor::cat(&scalars, 0).and_then(|t| t.to_vec1::<f32>()).map_err(ce)
}

impl Trainer {
    /// A freshly initialised model for `plan`'s task on `device`.
    pub fn new(plan: &Plan, cfg: &TrainSpec, device: &Device) -> Result<Trainer> {
        let dtype = match cfg.dtype {
            DTypeSpec::F32 => DType::F32,
            // bf16 weights and activations, f32 master weights in the optimizer, losses in f32.
            // BYOL's target moves by (1 − τ) ≈ 0.004 of the difference per step, which bf16
            // rounds away, and frozen parameters have no master copy.
            DTypeSpec::Bf16 if cfg.byol.is_some() => return Err(Error::env_hint(
                "`train.dtype: bf16` with `train.byol`: the target network's small EMA steps would round away in bf16",
                "use `dtype: f32` for BYOL",
            )),
            DTypeSpec::Bf16 if device.is_cuda() => DType::BF16,
            DTypeSpec::Bf16 => {
                return Err(Error::env_hint(
                    "`train.dtype: bf16` needs a CUDA device, and training runs on the CPU",
                    "use `dtype: f32` (on the CPU it is the faster one), or `device: cuda:0` with a CUDA build",
                ))
            }
        };
        Self::with_dtype(plan, cfg, device, dtype)
    }

    /// [`Trainer::new`] with the parameter type given (`BF16` on the CPU too, for tests).
    pub fn with_dtype(plan: &Plan, cfg: &TrainSpec, device: &Device, dtype: DType) -> Result<Trainer> {
        let kind = TaskKind::of(&plan.task_spec);
        // A model the caller set in `cfg` wins over the plan's (the task's default).
        let spec = cfg.model.as_ref().unwrap_or(&plan.train.model);
        let (vocab, max_len) = (plan.train.vocab, plan.train.max_len);
        let input = ModelInput { spec, kind, vocab, max_len, byol: cfg.byol.as_ref(), seed: plan.seed };
        let model = Model::new(&input, device, dtype)?;
        let OptimizerSpec::Adamw(a) = &cfg.optimizer;
        let opt = AdamW::new(a, &model.params)?;
        Ok(Trainer {
            model,
            opt,
            cfg: cfg.clone(),
            kind,
            device: device.clone(),
            dtype,
            pad_id: plan.pad_id,
            vocab: vocab as u32,
            max_len,
            seed: plan.seed,
            temperature: cfg.temperature.unwrap_or(plan.train.temperature),
            step: 0,
        })
    }

    /// The loss settings of this run.
    pub fn objective(&self) -> Objective {
        Objective { temperature: self.temperature, norm_pix_loss: self.cfg.norm_pix_loss }
    }

    /// Converts an Arrow batch of the task's examples into model inputs.
    pub fn inputs(&self, batch: &RecordBatch) -> Result<TrainBatch> {
        self.converter().convert(batch)
    }

    /// What converts batches for this trainer, to run on another thread.
    pub fn converter(&self) -> Converter {
        Converter {
            kind: self.kind,
            pad_id: self.pad_id,
            vocab: self.vocab,
            max_len: self.max_len,
            device: self.device.clone(),
            dtype: self.dtype,
        }
    }

    /// One optimizer step over `micro` batches (gradients summed, each loss divided by their
    /// number). Nothing is read back from the device: the loss and the gradient norm stay there
    /// (see [`StepOutcome`]), and clipping scales the update there.
    pub fn train_step(&mut self, micro: &[TrainBatch]) -> Result<StepOutcome> {
        let n = micro.len().max(1) as f64;
        let mut grads: BTreeMap<String, Tensor> = BTreeMap::new();
        let mut losses = Vec::with_capacity(micro.len());
        for (i, b) in micro.iter().enumerate() {
            let seed = seeds::step(self.seed, self.step, i as u64);
            let fwd = Fwd::train(self.model.dropout, seed);
            let loss = self.model.loss(&b.inputs, &fwd, self.objective())?;
            losses.push(loss.detach());
            let scaled = if n > 1.0 { (loss / n).map_err(ce)? } else { loss };
            let store = scaled.backward().map_err(ce)?;
            for (name, var, _) in self.model.params.vars() {
                if let Some(g) = store.get(var.as_tensor()) {
                    match grads.get_mut(name) {
                        Some(acc) => *acc = (&*acc + g).map_err(ce)?,
                        None => {
                            grads.insert(name.to_string(), g.clone());
                        }
                    }
                }
            }
        }
        let clip = optim::clip_grad_norm(&grads, self.cfg.clip_grad_norm)?;
        let OptimizerSpec::Adamw(a) = &self.cfg.optimizer;
        let lr = optim::learning_rate(a.lr, &self.cfg.schedule, self.step, self.cfg.steps);
        self.opt.update_scaled(&self.model.params, &grads, lr, clip.scale.as_ref())?;
        self.step += 1;
        self.model.after_step(self.cfg.byol.as_ref(), self.step, self.cfg.steps)?;
        Ok(StepOutcome { step: self.step, losses, grad_sq: clip.sum_sq, lr })
    }

    /// Collapse statistics of the embeddings of `batches` (at most 512 rows); `None` for tasks
    /// without embeddings.
    pub fn collapse(&self, batches: &[TrainBatch]) -> Result<Option<collapse::Collapse>> {
        let (mut values, mut rows, mut dim) = (Vec::new(), 0usize, 0usize);
        for b in batches {
            if rows >= 512 {
                break;
            }
            let Some(e) = self.model.embeddings(&b.inputs)? else { return Ok(None) };
            let (r, d) = e.dims2().map_err(ce)?;
            let e =
                e.to_dtype(DType::F32).and_then(|e| e.flatten_all()).and_then(|e| e.to_vec1::<f32>()).map_err(ce)?;
            values.extend(e);
            rows += r;
            dim = d;
        }
        Ok((rows > 0).then(|| collapse::measure(&values, rows, dim)))
    }

    /// Mean loss over `batches` without dropout, weighted by their loss positions; their losses
    /// are read back from the device together, once.
    pub fn eval_loss(&self, batches: &[TrainBatch]) -> Result<Option<f64>> {
        let fwd = Fwd::eval();
        let (mut losses, mut weights) = (Vec::new(), Vec::new());
        for b in batches {
            if b.loss_tokens == 0 {
                continue;
            }
            let loss = self.model.loss(&b.inputs, &fwd, self.objective())?;
            losses.push(loss);
            weights.push(b.loss_tokens);
        }
        if losses.is_empty() {
            return Ok(None);
        }
        let losses = read_scalars(&losses)?;
        let sum: f64 = losses.iter().zip(&weights).map(|(&l, &w)| l as f64 * w as f64).sum();
        Ok(Some(sum / weights.iter().sum::<usize>() as f64))
    }
}

/// Turns Arrow batches into a trainer's inputs: on the trainer's device, with its padding id
/// and vocabulary, rows no longer than its model positions.
#[derive(Debug, Clone)]
pub struct Converter {
    kind: TaskKind,
    pad_id: u32,
    vocab: u32,
    max_len: usize,
    device: Device,
    dtype: DType,
}

impl Converter {
    /// The inputs of one batch of the task's examples.
    pub fn convert(&self, batch: &RecordBatch) -> Result<TrainBatch> {
        // `seq_len` reaches the model twice: its position table was sized from the plan, and
        // the rows carry their own width. A row wider than the table cannot be positioned.
        if self.kind.positions_tokens() {
            if let Ok(field) = batch.schema().field_with_name("input_ids") {
                if let arrow::datatypes::DataType::FixedSizeList(_, width) = field.data_type() {
                    if *width as usize > self.max_len {
                        return Err(Error::data_hint(
                            format!(
                                "the batches hold rows of {width} tokens, but the model positions at most {} (the task's `seq_len`)",
                                self.max_len
                            ),
                            "train on examples made with this pipeline's `seq_len` (a `format: pretext` source must be exported with the same task settings)",
                        ));
                    }
                }
            }
        }
        to_inputs(self.kind, batch, self.pad_id, self.vocab, &self.device, self.dtype)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(step: u64, losses: &[f32], grad_sq: f32) -> StepOutcome {
        let scalar = |v: f32| Tensor::new(v, &Device::Cpu).unwrap();
        StepOutcome { step, losses: losses.iter().map(|&l| scalar(l)).collect(), grad_sq: scalar(grad_sq), lr: 0.5 }
    }

    #[test]
    fn steps_are_read_back_together_and_the_first_bad_value_names_its_step() {
        let read = read_outcomes(&[outcome(1, &[2.0], 9.0), outcome(2, &[1.0, 2.0], 16.0)]).unwrap();
        assert_eq!(
            read,
            [StepValues { loss: 2.0, grad_norm: 3.0, lr: 0.5 }, StepValues { loss: 1.5, grad_norm: 4.0, lr: 0.5 }]
        );
        assert!(read_outcomes(&[]).unwrap().is_empty());
        let e =
            read_outcomes(&[outcome(4, &[1.0], 1.0), outcome(5, &[1.0, f32::NAN], 1.0), outcome(6, &[f32::NAN], 1.0)])
                .unwrap_err()
                .to_string();
        assert!(e.contains("the training loss became NaN at step 5"), "{e}");
        let e = read_outcomes(&[outcome(7, &[1.0], f32::INFINITY)]).unwrap_err().to_string();
        assert!(e.contains("the gradient norm became inf at step 7"), "{e}");
    }
}
