//! `pretext train`: the pipeline runs on the tokio runtime and hands ready batches through a
//! bounded channel to the trainer, which runs on the calling thread with candle. Every step
//! records how long it waited for data; checkpoints carry the stream cursor so a resumed run
//! continues with the next unseen batch, bit for bit on CPU.

pub mod batch;
pub mod checkpoint;
pub mod collapse;
pub mod hf;
pub mod metrics;
pub mod models;
pub mod nn;
pub mod optim;
pub mod plot;
pub mod probe;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use candle_core::{DType, Device, Tensor};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::sink::progress::human;
use crate::source::Split;
use crate::spec::{default_model, DTypeSpec, DeviceChoice, TrainSpec};
use batch::{to_inputs, TaskKind, TrainBatch};
use checkpoint::{Cursor, State};
use models::{Model, Objective};
use nn::{ce, Fwd};
use optim::AdamW;

/// Options that come from the command rather than the pipeline file.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Run directory: metrics, checkpoints, a trained tokenizer.
    pub run_dir: PathBuf,
    /// Continue from the newest checkpoint in `run_dir`.
    pub resume: bool,
    /// `--allow-new-data`: resume although the source data changed (a new Delta version).
    pub allow_new_data: bool,
    /// Draw a progress bar on stderr.
    pub progress_bar: bool,
    /// Print a line per metrics record when there is no progress bar.
    pub log_lines: bool,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct TrainReport {
    pub device: String,
    pub parameters: usize,
    pub start_step: u64,
    pub steps: u64,
    pub tokens: u64,
    pub seconds: f64,
    pub data_wait_seconds: f64,
    pub first_loss: Option<f64>,
    pub last_loss: Option<f64>,
    pub eval_loss: Option<f64>,
    pub checkpoint: Option<PathBuf>,
}

impl TrainReport {
    /// Share of the wall time spent waiting for data.
    pub fn data_wait_share(&self) -> f64 {
        self.data_wait_seconds / self.seconds.max(1e-9)
    }
}

/// Training allocates and frees tensors of the same large sizes every step. With glibc's mmap
/// threshold (and the fixed 1 MiB one that keeps `export`'s memory flat) each is a fresh mmap
/// whose pages the kernel zeroes on first touch: a quarter of a CPU step went to page faults.
/// Serving them from a heap that is not trimmed made steps 1.4-1.5× faster (`benches/train.rs`).
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; glibc serialises it internally.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20); // glibc's maximum on 64-bit
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// The training settings of a pipeline (defaults when it has no `train:` section).
pub fn settings(plan: &Plan) -> TrainSpec {
    plan.pipeline.spec.train.clone().unwrap_or_else(|| serde_json::from_str("{}").expect("train defaults"))
}

/// Picks the device for `train.device`, and describes it.
pub fn select_device(device: &str) -> Result<(Device, String)> {
    let cpu = || (Device::Cpu, format!("cpu ({} threads)", candle_core::utils::get_num_threads()));
    let cuda = |n: usize| -> Result<(Device, String)> {
        if !cfg!(feature = "cuda") {
            return Err(Error::env_hint(
                format!("`train.device: {device}` needs CUDA, and this pretext was built without it"),
                "build with `cargo build --release --features cuda`, or use `device: cpu`",
            ));
        }
        let d = Device::new_cuda(n).map_err(|e| {
            Error::env_hint(format!("cannot open CUDA device {n}: {e}"), "check `nvidia-smi`, or use `device: cpu`")
        })?;
        Ok((d, format!("cuda:{n}")))
    };
    match DeviceChoice::parse(device) {
        Some(DeviceChoice::Cpu) => Ok(cpu()),
        Some(DeviceChoice::Cuda(n)) => cuda(n),
        Some(DeviceChoice::Auto) if cfg!(feature = "cuda") && candle_core::utils::cuda_is_available() => {
            cuda(0).or_else(|_| Ok(cpu()))
        }
        Some(DeviceChoice::Auto) => Ok(cpu()),
        None => Err(Error::internal(format!("device {device:?} passed validation"))),
    }
}

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
    seed: u64,
    /// The contrastive temperature: `train.temperature`, else the task's recipe.
    pub temperature: f64,
    /// Optimizer steps done.
    pub step: u64,
}

/// What `tokens_per_s` counts for a task: tokens, images (every view) or table rows.
pub fn unit(task: &crate::spec::TaskSpec) -> &'static str {
    match task.input() {
        crate::spec::TaskInput::Text => "tokens",
        crate::spec::TaskInput::Image => "images",
        crate::spec::TaskInput::Table => "rows",
    }
}

fn unit_short(task: &crate::spec::TaskSpec) -> &'static str {
    match unit(task) {
        "tokens" => "tok",
        "images" => "img",
        other => other,
    }
}

/// The default contrastive temperature of a task's recipe.
pub fn default_temperature(task: &crate::spec::TaskSpec) -> f64 {
    match task {
        crate::spec::TaskSpec::ContrastiveImage(_) => 0.5,
        crate::spec::TaskSpec::Scarf(_) => 1.0,
        _ => 0.05,
    }
}

/// The result of one optimizer step.
#[derive(Debug, Clone, Copy)]
pub struct StepOutcome {
    pub loss: f64,
    pub grad_norm: f64,
    pub lr: f64,
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
        let kind = TaskKind::of(&plan.pipeline.spec.task);
        let spec = cfg.model.clone().unwrap_or_else(|| default_model(&plan.pipeline.spec.task));
        let task = &plan.pipeline.spec.task;
        // The models of image and table tasks take their sizes from the task.
        let (vocab, max_len) = match task {
            crate::spec::TaskSpec::Scarf(_) | crate::spec::TaskSpec::Vime(_) => (task.table_columns().len(), 1),
            crate::spec::TaskSpec::Mae(t) => (0, t.patch_size as usize),
            _ => (plan.tokenizer.vocab_size as usize, plan.seq_len.max(1)),
        };
        let model = Model::new(&spec, kind, vocab, max_len, cfg.byol.as_ref(), plan.seed, device, dtype)?;
        let crate::spec::OptimizerSpec::Adamw(a) = &cfg.optimizer;
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
            seed: plan.seed,
            temperature: cfg.temperature.unwrap_or_else(|| default_temperature(task)),
            step: 0,
        })
    }

    /// The loss settings of this run.
    pub fn objective(&self) -> Objective {
        Objective { temperature: self.temperature, norm_pix_loss: self.cfg.norm_pix_loss }
    }

    /// Converts an Arrow batch of the task's examples into model inputs.
    pub fn inputs(&self, batch: &RecordBatch) -> Result<TrainBatch> {
        to_inputs(self.kind, batch, self.pad_id, self.vocab, &self.device, self.dtype)
    }

    /// One optimizer step over `micro` batches (gradients summed, each loss divided by their number).
    pub fn train_step(&mut self, micro: &[TrainBatch]) -> Result<StepOutcome> {
        let n = micro.len().max(1) as f64;
        let mut grads: BTreeMap<String, Tensor> = BTreeMap::new();
        let mut loss_sum = 0.0;
        for (i, b) in micro.iter().enumerate() {
            let seed = xxhash_rust::xxh3::xxh3_64_with_seed(
                &[self.step.to_le_bytes(), (i as u64).to_le_bytes()].concat(),
                self.seed,
            );
            let fwd = Fwd::train(self.model.dropout, seed);
            let loss = self.model.loss(&b.inputs, &fwd, self.objective())?;
            let value = loss.to_dtype(DType::F32).and_then(|l| l.to_scalar::<f32>()).map_err(ce)? as f64;
            if !value.is_finite() {
                return Err(Error::data_hint(
                    format!("the training loss became {value} at step {}", self.step + 1),
                    "lower `train.optimizer.adamw.lr`, lengthen `train.schedule.warmup_steps` or keep `clip_grad_norm` on",
                ));
            }
            loss_sum += value;
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
        let grad_norm = optim::clip_grad_norm(&mut grads, self.cfg.clip_grad_norm)?;
        if !grad_norm.is_finite() {
            return Err(Error::data_hint(
                format!("the gradient norm became {grad_norm} at step {}", self.step + 1),
                "lower `train.optimizer.adamw.lr`, lengthen `train.schedule.warmup_steps` or keep `clip_grad_norm` on",
            ));
        }
        let crate::spec::OptimizerSpec::Adamw(a) = &self.cfg.optimizer;
        let lr = optim::learning_rate(a.lr, &self.cfg.schedule, self.step, self.cfg.steps);
        self.opt.update(&self.model.params, &grads, lr)?;
        self.step += 1;
        self.model.after_step(self.cfg.byol.as_ref(), self.step, self.cfg.steps)?;
        Ok(StepOutcome { loss: loss_sum / n, grad_norm, lr })
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

    /// Mean loss over `batches` without dropout, weighted by their loss positions.
    pub fn eval_loss(&self, batches: &[TrainBatch]) -> Result<Option<f64>> {
        let fwd = Fwd::eval();
        let (mut sum, mut count) = (0.0, 0usize);
        for b in batches {
            if b.loss_tokens == 0 {
                continue;
            }
            let loss = self.model.loss(&b.inputs, &fwd, self.objective())?;
            let loss = loss.to_dtype(DType::F32).and_then(|l| l.to_scalar::<f32>()).map_err(ce)? as f64;
            sum += loss * b.loss_tokens as f64;
            count += b.loss_tokens;
        }
        Ok((count > 0).then(|| sum / count as f64))
    }
}

type Ready = Result<(Cursor, TrainBatch)>;

/// Runs the pipeline from `start` forever (pass after pass), sending converted batches with
/// the cursor after each.
async fn produce(
    plan: Arc<Plan>,
    split: Split,
    start: Cursor,
    convert: impl Fn(RecordBatch) -> Result<TrainBatch> + Send + Sync + Clone + 'static,
    tx: tokio::sync::mpsc::Sender<Ready>,
) {
    let mut stream = plan.batches_from(split, start);
    while let Some(item) = stream.next().await {
        let item = match item {
            Err(e) => Err(e),
            // Building masks and copying to the device is CPU work: off the async workers.
            Ok((b, cursor)) => {
                let convert = convert.clone();
                match tokio::task::spawn_blocking(move || convert(b)).await {
                    Ok(t) => t.map(|t| (cursor, t)),
                    Err(e) => Err(Error::internal(format!("converting a batch stopped: {e}"))),
                }
            }
        };
        let failed = item.is_err();
        if tx.send(item).await.is_err() || failed {
            return;
        }
    }
    let _ = tx
        .send(Err(Error::data_hint(
            "the source produced no training examples",
            "check `source.path`, `source.sql` and the eval split (`train.eval.fraction`)",
        )))
        .await;
}

/// Trains `plan` as its `train:` section says; the pipeline runs on `rt`.
pub fn train(rt: &tokio::runtime::Runtime, plan: Arc<Plan>, opts: &TrainOptions) -> Result<TrainReport> {
    let cfg = settings(&plan);
    let (device, device_name) = select_device(&cfg.device)?;
    let mut trainer = Trainer::new(&plan, &cfg, &device)?;
    let parameters = trainer.model.params.count();
    let run_dir = opts.run_dir.clone();
    std::fs::create_dir_all(&run_dir).map_err(|e| Error::io(&run_dir, "create directory", e))?;

    // Resume, or refuse to mix two runs in one directory.
    let settings_json = checkpoint::run_settings(&plan.pipeline);
    let hash = checkpoint::settings_hash(&settings_json);
    let existing = checkpoint::list(&run_dir)?;
    let mut state = State {
        version: checkpoint::STATE_VERSION,
        step: 0,
        cursor: Cursor::start(0, plan.sources.len()),
        pipeline_hash: hash.clone(),
        settings: settings_json.clone(),
        data: plan.data_identity(),
        lr: 0.0,
        tokens_seen: 0,
        train_seconds: 0.0,
        data_wait_seconds: 0.0,
        last_loss: None,
        last_eval_loss: None,
        total_steps: cfg.steps,
        window: Window::default(),
    };
    if opts.resume {
        checkpoint::remove_torn(&run_dir)?;
    }
    match (opts.resume, existing.last()) {
        (true, Some((_, dir))) => {
            let old = checkpoint::read_state(dir)?;
            if old.pipeline_hash != hash {
                let diffs = checkpoint::differences(&old.settings, &settings_json);
                return Err(Error::data_hint(
                    format!(
                        "`{}` was written by a different pipeline; changed since: {}",
                        dir.display(),
                        if diffs.is_empty() { "(unknown)".to_string() } else { diffs.join("; ") }
                    ),
                    "restore those settings to resume, or train into a new directory (`--run-dir`)",
                ));
            }
            let data = plan.data_identity();
            if !old.data.is_null() && old.data != data {
                let change = crate::source::describe_data_change(&old.data, &data);
                if !opts.allow_new_data {
                    return Err(Error::data_hint(
                        format!("the source data changed since `{}` was written: {change}", dir.display()),
                        "pass `--allow-new-data` to continue on the new data, pin the data (`source.version` for Delta), or train into a new directory",
                    ));
                }
                eprintln!("note: the source data changed ({change}); continuing on the new data (`--allow-new-data`)");
            }
            trainer.model.params.load(&dir.join("model.safetensors"))?;
            trainer.opt.load(&dir.join("optimizer.safetensors"), old.step)?;
            trainer.step = old.step;
            if old.total_steps != cfg.steps {
                eprintln!(
                    "note: `train.steps` changed from {} to {}: the learning-rate schedule now ends at step {}",
                    old.total_steps, cfg.steps, cfg.steps
                );
            }
            state = State {
                settings: settings_json.clone(),
                pipeline_hash: hash.clone(),
                total_steps: cfg.steps,
                data: plan.data_identity(),
                ..old
            };
            eprintln!("resuming from `{}` (step {})", dir.display(), state.step);
        }
        (true, None) => {
            eprintln!("no checkpoint in `{}`: starting from step 0", run_dir.display());
        }
        (false, _) => checkpoint::check_run_dir(&run_dir, false)?,
    }
    let start_step = state.step;
    // A fresh run may start from a `transformers` checkpoint.
    if let (0, Some(from)) = (start_step, &cfg.init_from) {
        let from = plan.pipeline.resolve_path(from);
        let family = hf::Family::of(&trainer.model, plan.pipeline.spec.task_name())?;
        let heads = cfg.model.as_ref().unwrap_or(&default_model(&plan.pipeline.spec.task)).sizes().map(|s| s.heads);
        let line = hf::load_pretrained(&trainer.model, family, heads.unwrap_or(0) as usize, &from)?;
        trainer.opt.sync_masters(&trainer.model.params)?;
        if opts.progress_bar || opts.log_lines {
            eprintln!("{line}");
        }
    }
    // The pipeline as run, for `pretext probe`.
    let base_dir = std::fs::canonicalize(&plan.pipeline.base_dir).unwrap_or_else(|_| plan.pipeline.base_dir.clone());
    let saved = serde_json::json!({
        "file": plan.pipeline.file.display().to_string(),
        "base_dir": base_dir.display().to_string(),
        "pipeline": plan.pipeline.resolved_json(),
    });
    crate::plan::write_atomic(
        &run_dir.join("pipeline.json"),
        (serde_json::to_string_pretty(&saved).unwrap_or_default() + "\n").as_bytes(),
    )?;
    let mut metrics = metrics::Metrics::open(&run_dir, opts.resume.then_some(state.step))?;
    if start_step >= cfg.steps {
        eprintln!("the run in `{}` already has {start_step} of {} steps; nothing to do", run_dir.display(), cfg.steps);
        return Ok(TrainReport {
            device: device_name,
            parameters,
            start_step,
            steps: 0,
            tokens: 0,
            seconds: 0.0,
            data_wait_seconds: 0.0,
            first_loss: None,
            last_loss: state.last_loss,
            eval_loss: state.last_eval_loss,
            checkpoint: checkpoint::list(&run_dir)?.last().map(|(_, p)| p.clone()),
        });
    }
    eprintln!(
        "training: {} model, {} parameters, on {device_name}; steps {}..{}, {} rows per step",
        cfg.model.as_ref().unwrap_or(&default_model(&plan.pipeline.spec.task)).kind(),
        human(parameters as f64),
        start_step + 1,
        cfg.steps,
        plan.batch_size * cfg.accumulate as usize
    );

    // The held-out batches, made once.
    let (train_split, eval_batches) = match &cfg.eval {
        None => (Split::All, Vec::new()),
        Some(e) => {
            let eval = Split::Eval { fraction: e.fraction, seed: plan.seed };
            let batches: Vec<TrainBatch> = rt.block_on(async {
                let mut s = plan.epoch_batches(0, eval).take(e.batches as usize);
                let mut out = Vec::new();
                while let Some(b) = s.next().await {
                    out.push(trainer.inputs(&b?)?);
                }
                Ok::<_, Error>(out)
            })?;
            if batches.is_empty() {
                eprintln!("warning: the eval split (fraction {}) holds no documents; no eval loss", e.fraction);
            }
            (Split::Train { fraction: e.fraction, seed: plan.seed }, batches)
        }
    };

    // The pipeline, on the runtime.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Ready>(cfg.prefetch as usize);
    let (kind, pad, vocab, dev, dtype) = (trainer.kind, trainer.pad_id, trainer.vocab, device.clone(), trainer.dtype);
    let convert = move |b: RecordBatch| to_inputs(kind, &b, pad, vocab, &dev, dtype);
    let mut producer = rt.spawn(produce(plan.clone(), train_split, state.cursor.clone(), convert, tx));

    let bar = progress_bar(opts.progress_bar, start_step, cfg.steps);
    let every = cfg.checkpoint.every_steps.unwrap_or(500);
    let keep = cfg.checkpoint.keep.unwrap_or(3) as usize;
    let started = Instant::now();
    let (mut wait_total, mut tokens_total) = (Duration::ZERO, 0u64);
    let mut window = state.window;
    let mut first_loss = None;
    let mut last_checkpoint = None;
    let result = (|| -> Result<()> {
        while trainer.step < cfg.steps {
            if let Some(signal) = crate::stop::requested() {
                // A graceful stop: a checkpoint of the last finished step, unless it has one.
                let step = trainer.step;
                let saved_now = step > start_step && step % every != 0;
                if saved_now {
                    last_checkpoint = Some(checkpoint::save(&run_dir, &trainer.model, &trainer.opt, &state, keep)?);
                }
                let what = match &last_checkpoint {
                    Some(c) => format!(
                        "training stopped after step {step} of {}, checkpoint `{}`; continue it with `--resume`",
                        cfg.steps,
                        c.display()
                    ),
                    None if step > 0 => format!(
                        "training stopped at step {step} of {} before any new step; continue it with `--resume`",
                        cfg.steps
                    ),
                    None => "training stopped before its first step; nothing was saved".to_string(),
                };
                return Err(crate::stop::stopped(signal, what));
            }
            let step_start = Instant::now();
            let mut micro = Vec::with_capacity(cfg.accumulate as usize);
            let mut wait = Duration::ZERO;
            for _ in 0..cfg.accumulate {
                let t = Instant::now();
                let received = rx.blocking_recv();
                wait += t.elapsed();
                let Some(received) = received else {
                    // The producer ended without sending its error: it panicked.
                    let why = match rt.block_on(&mut producer) {
                        Err(e) if e.is_panic() => format!("the pipeline panicked: {e}"),
                        _ => "the pipeline stopped without an error".to_string(),
                    };
                    return Err(Error::internal(why));
                };
                let (cursor, b) = received?;
                state.cursor = cursor;
                micro.push(b);
            }
            let out = trainer.train_step(&micro)?;
            let tokens: u64 = micro.iter().map(|b| b.tokens as u64).sum();
            let elapsed = step_start.elapsed();
            first_loss.get_or_insert(out.loss);
            wait_total += wait;
            tokens_total += tokens;
            state.step = trainer.step;
            state.lr = out.lr;
            state.last_loss = Some(out.loss);
            state.tokens_seen += tokens;
            state.train_seconds += elapsed.as_secs_f64();
            state.data_wait_seconds += wait.as_secs_f64();
            window.add(out.loss, tokens, wait, elapsed);
            state.window = window;
            let step = trainer.step;
            let eval_due = cfg.eval.as_ref().is_some_and(|e| step % e.every_steps == 0 || step == cfg.steps);
            let eval_loss = if eval_due && !eval_batches.is_empty() { trainer.eval_loss(&eval_batches)? } else { None };
            if eval_loss.is_some() {
                state.last_eval_loss = eval_loss;
            }
            let log_due = step % cfg.log_every == 0 || step == cfg.steps || eval_loss.is_some();
            // The collapse monitor: on the eval batches when they are due, else on this step's.
            let monitored = if eval_due && !eval_batches.is_empty() {
                Some(&eval_batches[..])
            } else if log_due && eval_batches.is_empty() {
                Some(&micro[..])
            } else {
                None
            };
            let collapse = match monitored {
                Some(batches) => trainer.collapse(batches)?,
                None => None,
            };
            if let Some(c) = collapse {
                if c.embedding_std < cfg.collapse_threshold {
                    let msg = format!(
                        "warning: step {step}: the embeddings are collapsing: std × √dim {:.4} (healthy ≈ 1; threshold {}), effective rank {:.2} of {}",
                        c.embedding_std, cfg.collapse_threshold, c.effective_rank, c.dim
                    );
                    bar.suspend(|| eprintln!("{msg}\n  hint: lower the learning rate, raise the temperature, or use stronger augmentations"));
                }
            }
            if log_due || collapse.is_some() {
                let mut r = window.record(step, state.cursor.epoch, out, state.tokens_seen, eval_loss);
                r.embedding_std = collapse.map(|c| c.embedding_std);
                r.effective_rank = collapse.map(|c| c.effective_rank);
                if plan.sources.len() > 1 {
                    r.source_examples = Some(
                        plan.sources
                            .iter()
                            .zip(&state.cursor.mix.taken)
                            .map(|(s, n)| (s.name.clone().unwrap_or_default(), *n))
                            .collect(),
                    );
                }
                metrics.write(&r)?;
                metrics.flush()?;
                let msg = format!(
                    "loss {:.4}{} lr {:.2e} | {} {}/s | data wait {:.1}%",
                    r.loss,
                    r.eval_loss.map(|e| format!(" (eval {e:.4})")).unwrap_or_default(),
                    r.lr,
                    human(r.tokens_per_s),
                    unit_short(&plan.pipeline.spec.task),
                    100.0 * r.data_wait_s / (r.data_wait_s + r.compute_s).max(1e-9)
                );
                if opts.progress_bar {
                    bar.set_message(msg);
                } else if opts.log_lines {
                    eprintln!("step {step}/{}: {msg}", cfg.steps);
                }
                window = Window::default();
                state.window = window;
            }
            bar.inc(1);
            if step % every == 0 || step == cfg.steps {
                last_checkpoint = Some(checkpoint::save(&run_dir, &trainer.model, &trainer.opt, &state, keep)?);
            }
        }
        Ok(())
    })();
    bar.finish_and_clear();
    drop(rx);
    producer.abort();
    result?;
    Ok(TrainReport {
        device: device_name,
        parameters,
        start_step,
        steps: trainer.step - start_step,
        tokens: tokens_total,
        seconds: started.elapsed().as_secs_f64(),
        data_wait_seconds: wait_total.as_secs_f64(),
        first_loss,
        last_loss: state.last_loss,
        eval_loss: state.last_eval_loss,
        checkpoint: last_checkpoint,
    })
}

/// Sums over a logging window (saved in checkpoints, so a resumed run logs the same lines).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Window {
    loss: f64,
    steps: u64,
    tokens: u64,
    wait_s: f64,
    wall_s: f64,
}

impl Window {
    fn add(&mut self, loss: f64, tokens: u64, wait: Duration, wall: Duration) {
        self.loss += loss;
        self.steps += 1;
        self.tokens += tokens;
        self.wait_s += wait.as_secs_f64();
        self.wall_s += wall.as_secs_f64();
    }

    fn record(
        &self,
        step: u64,
        epoch: u32,
        last: StepOutcome,
        tokens_seen: u64,
        eval_loss: Option<f64>,
    ) -> metrics::Record {
        metrics::Record {
            step,
            epoch,
            loss: self.loss / self.steps.max(1) as f64,
            lr: last.lr,
            grad_norm: last.grad_norm,
            tokens_per_s: self.tokens as f64 / self.wall_s.max(1e-9),
            data_wait_s: self.wait_s,
            compute_s: (self.wall_s - self.wait_s).max(0.0),
            tokens_seen,
            eval_loss,
            embedding_std: None,
            effective_rank: None,
            source_examples: None,
        }
    }
}

fn progress_bar(visible: bool, done: u64, total: u64) -> ProgressBar {
    let target = if visible { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
    let bar = ProgressBar::with_draw_target(Some(total), target);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} steps {elapsed_precise} (eta {eta}) {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(done);
    bar
}
