//! `pretext train` as a loop of small pieces: restore (or refuse) a run directory, start from a
//! `transformers` checkpoint, make the held-out batches, run the pipeline ahead on the tokio
//! runtime, then step: receive, train, evaluate, watch for collapse, log, checkpoint, and stop
//! gracefully at a signal.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::batch::TrainBatch;
use super::checkpoint::{self, Cursor, State};
use super::metrics::{Metrics, Window};
use super::trainer::Converter;
use super::{hf, select_device, TrainOptions, TrainReport};
use super::{read_outcomes, StepOutcome, StepValues, Trainer};
use crate::error::{Error, Result};
use crate::ground::{durable, human, identity, stop};
use crate::plan::Plan;
use crate::source::Split;
use crate::spec::TrainSpec;

type Ready = Result<(Cursor, TrainBatch)>;

/// Trains `plan` as its `train:` section says; the pipeline runs on `rt`.
pub fn train(rt: &tokio::runtime::Runtime, plan: Arc<Plan>, opts: &TrainOptions) -> Result<TrainReport> {
    let cfg = plan.train.spec.clone();
    let (device, device_name) = select_device(&cfg.device)?;
    let mut trainer = Trainer::new(&plan, &cfg, &device)?;
    let parameters = trainer.model.params.count();
    let run_dir = opts.run_dir.clone();
    std::fs::create_dir_all(&run_dir).map_err(|e| Error::io(&run_dir, "create directory", e))?;
    let state = restore(&plan, &mut trainer, opts)?;
    let start_step = state.step;
    if start_step == 0 {
        init_from(&plan, &mut trainer, opts)?;
    }
    save_pipeline(&plan, &run_dir)?;
    let metrics = Metrics::open(&run_dir, opts.resume.then_some(state.step))?;
    let (total_steps, unit, dir) = (cfg.steps, plan.train.unit, run_dir.clone());
    let report = |steps, tokens, seconds, wait: Duration, first_loss, state: &State, checkpoint| TrainReport {
        device: device_name.clone(),
        start_step,
        steps,
        tokens,
        seconds,
        data_wait_seconds: wait.as_secs_f64(),
        first_loss,
        last_loss: state.last_loss,
        eval_loss: state.last_eval_loss,
        checkpoint,
        total_steps,
        unit,
        run_dir: dir.clone(),
    };
    if start_step >= cfg.steps {
        eprintln!("the run in `{}` already has {start_step} of {} steps; nothing to do", run_dir.display(), cfg.steps);
        let last = checkpoint::list(&run_dir)?.last().map(|(_, p)| p.clone());
        return Ok(report(0, 0, 0.0, Duration::ZERO, None, &state, last));
    }
    eprintln!(
        "training: {} model, {} parameters, on {device_name}; steps {}..{}, {} rows per step",
        plan.train.model.kind(),
        human(parameters as f64),
        start_step + 1,
        cfg.steps,
        plan.batch_size * cfg.accumulate as usize
    );
    let (split, eval_batches) = held_out(rt, &plan, &trainer, &cfg)?;

    // The pipeline, on the runtime, ahead of the trainer by `prefetch` batches.
    let (tx, rx) = tokio::sync::mpsc::channel::<Ready>(cfg.prefetch as usize);
    let producer = rt.spawn(produce(plan.clone(), split, state.cursor.clone(), trainer.converter(), tx));
    let mut run = Run {
        window: state.window,
        state,
        trainer,
        metrics,
        eval_batches,
        bar: progress_bar(opts.progress_bar, start_step, cfg.steps),
        every: cfg.checkpoint.every_steps.unwrap_or(500),
        keep: cfg.checkpoint.keep.unwrap_or(3) as usize,
        start_step,
        run_dir,
        rx,
        producer,
        first_loss: None,
        unread: Vec::new(),
        last: None,
        last_checkpoint: None,
        wait: Duration::ZERO,
        tokens: 0,
        cfg,
    };
    let started = Instant::now();
    let result = run.steps(rt, &plan, opts);
    run.bar.finish_and_clear();
    run.producer.abort();
    result?;
    let steps = run.trainer.step - start_step;
    let seconds = started.elapsed().as_secs_f64();
    Ok(report(steps, run.tokens, seconds, run.wait, run.first_loss, &run.state, run.last_checkpoint))
}

/// The state to start from: the newest checkpoint of the run directory when resuming (checked
/// to come from the same pipeline and data), else a fresh one; a fresh run refuses a directory
/// that holds one.
fn restore(plan: &Plan, trainer: &mut Trainer, opts: &TrainOptions) -> Result<State> {
    let run_dir = &opts.run_dir;
    let cfg = &plan.train.spec;
    let settings = checkpoint::run_settings(plan.resolved_json());
    let hash = checkpoint::settings_hash(&settings);
    let existing = checkpoint::list(run_dir)?;
    let fresh = State {
        version: checkpoint::STATE_VERSION,
        step: 0,
        cursor: Cursor::start(0, plan.sources.len()),
        pipeline_hash: hash.clone(),
        settings: settings.clone(),
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
        checkpoint::remove_torn(run_dir)?;
    }
    let dir = match (opts.resume, existing.last()) {
        (true, Some((_, dir))) => dir,
        (true, None) => {
            eprintln!("no checkpoint in `{}`: starting from step 0", run_dir.display());
            return Ok(fresh);
        }
        (false, _) => {
            checkpoint::check_run_dir(run_dir, false)?;
            return Ok(fresh);
        }
    };
    let old = checkpoint::read_state(dir)?;
    if old.pipeline_hash != hash {
        let diffs = identity::differences(&old.settings, &settings);
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
    let state = State { settings, pipeline_hash: hash, total_steps: cfg.steps, data, ..old };
    eprintln!("resuming from `{}` (step {})", dir.display(), state.step);
    Ok(state)
}

/// A fresh run may start from a `transformers` checkpoint (`train.init_from`).
fn init_from(plan: &Plan, trainer: &mut Trainer, opts: &TrainOptions) -> Result<()> {
    let Some(from) = &plan.train.init_from else { return Ok(()) };
    let family = hf::Family::of(&trainer.model, plan.task_name())?;
    let heads = plan.train.model.sizes().map(|s| s.heads).unwrap_or(0) as usize;
    let line = hf::load_pretrained(&trainer.model, family, heads, from)?;
    trainer.opt.sync_masters(&trainer.model.params)?;
    if opts.progress_bar || opts.log_lines {
        eprintln!("{line}");
    }
    Ok(())
}

/// The pipeline as run, for `pretext probe` and `export-model`: `pipeline.json`.
fn save_pipeline(plan: &Plan, run_dir: &Path) -> Result<()> {
    let base = plan.base_dir();
    let base_dir = std::fs::canonicalize(base).unwrap_or_else(|_| base.to_path_buf());
    let saved = serde_json::json!({
        "file": plan.pipeline_file().display().to_string(),
        "base_dir": base_dir.display().to_string(),
        "pipeline": plan.resolved_json(),
    });
    let text = serde_json::to_string_pretty(&saved).unwrap_or_default() + "\n";
    durable::write_atomic(&run_dir.join("pipeline.json"), text.as_bytes())
}

/// The split to train on, and the held-out batches (made once) when `train.eval` is set.
fn held_out(
    rt: &tokio::runtime::Runtime,
    plan: &Arc<Plan>,
    trainer: &Trainer,
    cfg: &TrainSpec,
) -> Result<(Split, Vec<TrainBatch>)> {
    let Some(e) = &cfg.eval else { return Ok((Split::All, Vec::new())) };
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
    Ok((Split::Train { fraction: e.fraction, seed: plan.seed }, batches))
}

/// Runs the pipeline from `start` forever (pass after pass), sending converted batches with
/// the cursor after each.
async fn produce(
    plan: Arc<Plan>,
    split: Split,
    start: Cursor,
    convert: Converter,
    tx: tokio::sync::mpsc::Sender<Ready>,
) {
    let mut stream = plan.batches_from(split, start);
    while let Some(item) = stream.next().await {
        let item = match item {
            Err(e) => Err(e),
            // Building masks and copying to the device is CPU work: off the async workers.
            Ok((b, cursor)) => {
                let convert = convert.clone();
                match tokio::task::spawn_blocking(move || convert.convert(&b)).await {
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

/// The loop's state between steps.
struct Run {
    cfg: TrainSpec,
    trainer: Trainer,
    state: State,
    /// The open logging window (saved with the state, so a resumed run logs the same lines).
    window: Window,
    metrics: Metrics,
    eval_batches: Vec<TrainBatch>,
    bar: ProgressBar,
    /// Checkpoint every this many steps, keeping the newest `keep`.
    every: u64,
    keep: usize,
    start_step: u64,
    run_dir: PathBuf,
    rx: tokio::sync::mpsc::Receiver<Ready>,
    producer: tokio::task::JoinHandle<()>,
    first_loss: Option<f64>,
    /// Steps whose loss and gradient norm are still on the device: read together at the next
    /// log, checkpoint or end ([`Run::settle`]).
    unread: Vec<StepOutcome>,
    /// The last step read back.
    last: Option<StepValues>,
    last_checkpoint: Option<PathBuf>,
    /// Waited for data and tokens trained on, in this process.
    wait: Duration,
    tokens: u64,
}

impl Run {
    /// Steps until `train.steps`, a signal, or an error.
    fn steps(&mut self, rt: &tokio::runtime::Runtime, plan: &Plan, opts: &TrainOptions) -> Result<()> {
        while self.trainer.step < self.cfg.steps {
            if let Some(signal) = stop::requested() {
                return Err(self.stopped(signal)?);
            }
            let started = Instant::now();
            let (micro, wait) = match self.receive(rt) {
                Ok(received) => received,
                Err(e) => return Err(self.data_failed(e)?),
            };
            let out = self.trainer.train_step(&micro)?;
            self.account(&micro, out, wait, started.elapsed());
            let step = self.trainer.step;
            let eval_due =
                self.cfg.eval.as_ref().is_some_and(|e| step.is_multiple_of(e.every_steps) || step == self.cfg.steps);
            let eval_loss = if eval_due && !self.eval_batches.is_empty() {
                self.trainer.eval_loss(&self.eval_batches)?
            } else {
                None
            };
            if eval_loss.is_some() {
                self.state.last_eval_loss = eval_loss;
            }
            let log_due = step.is_multiple_of(self.cfg.log_every) || step == self.cfg.steps || eval_loss.is_some();
            let collapse = self.watch_collapse(&micro, eval_due, log_due)?;
            if log_due || collapse.is_some() {
                self.log(plan, opts, eval_loss, collapse)?;
            }
            self.bar.inc(1);
            if step.is_multiple_of(self.every) || step == self.cfg.steps {
                self.last_checkpoint = Some(self.checkpoint()?);
            }
        }
        Ok(())
    }

    /// Keeps the steps done so far (a checkpoint of the last finished step, unless it has one)
    /// and says where the run stands: `None` before its first step, when nothing was saved.
    fn save_for_resume(&mut self) -> Result<Option<String>> {
        let step = self.trainer.step;
        if step > self.start_step && !step.is_multiple_of(self.every) {
            self.last_checkpoint = Some(self.checkpoint()?);
        }
        let steps = self.cfg.steps;
        Ok(match &self.last_checkpoint {
            Some(c) => Some(format!(
                "training stopped after step {step} of {steps}, checkpoint `{}`; continue it with `--resume`",
                c.display()
            )),
            None if step > 0 => Some(format!(
                "training stopped at step {step} of {steps} before any new step; continue it with `--resume`"
            )),
            None => None,
        })
    }

    /// A graceful stop: the steps done are kept, and the error says how to continue.
    fn stopped(&mut self, signal: i32) -> Result<Error> {
        let what = self.save_for_resume()?;
        let what = what.unwrap_or_else(|| "training stopped before its first step; nothing was saved".to_string());
        Ok(stop::stopped(signal, what))
    }

    /// The pipeline failed (a source the store gave up on, a damaged file): the steps done so
    /// far are kept as for a graceful stop, and the error's hint says how to continue.
    fn data_failed(&mut self, e: Error) -> Result<Error> {
        if matches!(e, Error::Internal(_)) {
            return Ok(e);
        }
        let Some(note) = self.save_for_resume()? else { return Ok(e) };
        Ok(match e {
            Error::Data { message, hint } => Error::Data { message, hint: Some(with_note(hint, note)) },
            Error::Env { message, hint } => Error::Env { message, hint: Some(with_note(hint, note)) },
            other => other,
        })
    }

    /// The micro-batches of the next step (`train.accumulate` of them), and how long they were
    /// waited for. The cursor moves past each one received.
    fn receive(&mut self, rt: &tokio::runtime::Runtime) -> Result<(Vec<TrainBatch>, Duration)> {
        let mut micro = Vec::with_capacity(self.cfg.accumulate as usize);
        let mut wait = Duration::ZERO;
        // A step is all its micro-batches or none: on an error, the cursor of the last step.
        let before = self.state.cursor.clone();
        for _ in 0..self.cfg.accumulate {
            let t = Instant::now();
            let received = self.rx.blocking_recv();
            wait += t.elapsed();
            let Some(received) = received else {
                // The producer ended without sending its error: it panicked.
                let why = match rt.block_on(&mut self.producer) {
                    Err(e) if e.is_panic() => format!("the pipeline panicked: {e}"),
                    _ => "the pipeline stopped without an error".to_string(),
                };
                return Err(Error::internal(why));
            };
            let (cursor, b) = match received {
                Ok(r) => r,
                Err(e) => {
                    self.state.cursor = before;
                    return Err(e);
                }
            };
            self.state.cursor = cursor;
            micro.push(b);
        }
        Ok((micro, wait))
    }

    /// Adds a finished step to the state and the logging window; its loss joins them when it is
    /// read back ([`Run::settle`]).
    fn account(&mut self, micro: &[TrainBatch], out: StepOutcome, wait: Duration, elapsed: Duration) {
        let tokens: u64 = micro.iter().map(|b| b.tokens as u64).sum();
        self.wait += wait;
        self.tokens += tokens;
        let s = &mut self.state;
        s.step = self.trainer.step;
        s.lr = out.lr;
        s.tokens_seen += tokens;
        s.train_seconds += elapsed.as_secs_f64();
        s.data_wait_seconds += wait.as_secs_f64();
        self.window.add(tokens, wait, elapsed);
        s.window = self.window;
        self.unread.push(out);
    }

    /// Reads back the losses and gradient norms of the steps since the last read, in one
    /// device→host transfer, and adds them to the state and the logging window. A loss or norm
    /// that is not finite is an error naming its step (and the weights after it are not saved).
    fn settle(&mut self) -> Result<()> {
        if self.unread.is_empty() {
            return Ok(());
        }
        let values = read_outcomes(&self.unread)?;
        self.unread.clear();
        for v in values {
            self.first_loss.get_or_insert(v.loss);
            self.state.last_loss = Some(v.loss);
            self.window.add_loss(v.loss);
            self.last = Some(v);
        }
        self.state.window = self.window;
        Ok(())
    }

    /// The collapse monitor: on the eval batches when they are due, else on this step's at a
    /// logging step; warns when the embeddings collapse.
    fn watch_collapse(
        &self,
        micro: &[TrainBatch],
        eval_due: bool,
        log_due: bool,
    ) -> Result<Option<super::collapse::Collapse>> {
        let monitored = if eval_due && !self.eval_batches.is_empty() {
            &self.eval_batches[..]
        } else if log_due && self.eval_batches.is_empty() {
            micro
        } else {
            return Ok(None);
        };
        let collapse = self.trainer.collapse(monitored)?;
        if let Some(c) = collapse.filter(|c| c.embedding_std < self.cfg.collapse_threshold) {
            let msg = format!(
                "warning: step {}: the embeddings are collapsing: std × √dim {:.4} (healthy ≈ 1; threshold {}), effective rank {:.2} of {}",
                self.trainer.step, c.embedding_std, self.cfg.collapse_threshold, c.effective_rank, c.dim
            );
            self.bar.suspend(|| {
                eprintln!(
                    "{msg}\n  hint: lower the learning rate, raise the temperature, or use stronger augmentations"
                )
            });
        }
        Ok(collapse)
    }

    /// Writes the window's metrics line, shows it, and opens a new window.
    fn log(
        &mut self,
        plan: &Plan,
        opts: &TrainOptions,
        eval_loss: Option<f64>,
        collapse: Option<super::collapse::Collapse>,
    ) -> Result<()> {
        self.settle()?;
        let step = self.trainer.step;
        let Some(last) = self.last else { return Ok(()) };
        let mut r = self.window.record(step, self.state.cursor.epoch, last, self.state.tokens_seen, eval_loss);
        r.embedding_std = collapse.map(|c| c.embedding_std);
        r.effective_rank = collapse.map(|c| c.effective_rank);
        if plan.sources.len() > 1 {
            let names = plan.sources.iter().map(|s| s.name.clone().unwrap_or_default());
            r.source_examples = Some(names.zip(self.state.cursor.mix.taken.iter().copied()).collect());
        }
        self.metrics.write(&r)?;
        self.metrics.flush()?;
        let msg = format!(
            "loss {:.4}{} lr {:.2e} | {} {}/s | data wait {:.1}%",
            r.loss,
            r.eval_loss.map(|e| format!(" (eval {e:.4})")).unwrap_or_default(),
            r.lr,
            human(r.tokens_per_s),
            unit_short(plan.train.unit),
            100.0 * r.data_wait_s / (r.data_wait_s + r.compute_s).max(1e-9)
        );
        if opts.progress_bar {
            self.bar.set_message(msg);
        } else if opts.log_lines {
            eprintln!("step {step}/{}: {msg}", self.cfg.steps);
        }
        self.window = Window::default();
        self.state.window = self.window;
        Ok(())
    }

    /// Saves the run after its last step, once that step's values have been read back and found
    /// finite.
    fn checkpoint(&mut self) -> Result<PathBuf> {
        self.settle()?;
        checkpoint::save(&self.run_dir, &self.trainer.model, &self.trainer.opt, &self.state, self.keep)
    }
}

/// The progress line's short unit: `tok`, `img` or `rows`.
fn unit_short(unit: &str) -> &str {
    match unit {
        "tokens" => "tok",
        "images" => "img",
        other => other,
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

/// `hint`, then `note` on its own line.
fn with_note(hint: Option<String>, note: String) -> String {
    match hint {
        Some(h) => format!("{h}\n  {note}"),
        None => note,
    }
}
