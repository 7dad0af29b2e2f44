//! `pretext train`: the pipeline runs on the tokio runtime and hands ready batches through a
//! bounded channel to the trainer, which runs on the calling thread with candle. Every step
//! records how long it waited for data; checkpoints carry the stream cursor so a resumed run
//! continues with the next unseen batch, bit for bit on CPU.

pub mod batch;
pub mod checkpoint;
pub mod collapse;
pub mod hf;
mod kernels;
pub mod metrics;
pub mod models;
pub mod nn;
pub mod optim;
pub mod plot;
pub mod probe;
mod run;
mod trainer;
pub mod vocab_loss;

use std::path::PathBuf;

use candle_core::Device;

use crate::error::{Error, Result};
use crate::plan::{BuildOptions, Plan};
use crate::spec::{DeviceChoice, Pipeline, TrainSpec};
pub use run::train;
pub use trainer::{read_outcomes, StepOutcome, StepValues, Trainer};

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
    /// The device trained on, described (`cpu (2 threads)`, `cuda:0`).
    pub(crate) device: String,
    /// Steps done before this call (a resumed run's checkpoint).
    pub start_step: u64,
    /// Steps done by this call.
    pub steps: u64,
    /// `train.steps`.
    pub(crate) total_steps: u64,
    /// Tokens (images, table rows: see `unit`) trained on by this call.
    pub tokens: u64,
    /// What `tokens` counts: `tokens`, `images` or `rows`.
    pub unit: &'static str,
    pub seconds: f64,
    pub(crate) data_wait_seconds: f64,
    pub first_loss: Option<f64>,
    pub last_loss: Option<f64>,
    pub eval_loss: Option<f64>,
    /// The newest checkpoint written.
    pub checkpoint: Option<PathBuf>,
    /// The run directory (metrics, checkpoints).
    pub run_dir: PathBuf,
}

impl TrainReport {
    /// Share of the wall time spent waiting for data.
    pub fn data_wait_share(&self) -> f64 {
        self.data_wait_seconds / self.seconds.max(1e-9)
    }

    /// The lines `pretext train` prints on stderr when it ends (none when it had nothing to do).
    pub fn summary(&self) -> Vec<String> {
        if self.steps == 0 {
            return Vec::new();
        }
        let loss = match (self.first_loss, self.last_loss) {
            (Some(a), Some(b)) => format!("loss {a:.4} → {b:.4}"),
            _ => String::new(),
        };
        let eval = self.eval_loss.map(|e| format!(", eval loss {e:.4}")).unwrap_or_default();
        let mut lines = vec![format!(
            "trained steps {}..{} of {} on {} in {:.1}s: {loss}{eval}; {} {}/s; waited for data {:.1}% of the time",
            self.start_step + 1,
            self.start_step + self.steps,
            self.total_steps,
            self.device,
            self.seconds,
            crate::ground::human(self.tokens as f64 / self.seconds.max(1e-9)),
            self.unit,
            100.0 * self.data_wait_share()
        )];
        if let Some(c) = &self.checkpoint {
            lines.push(format!(
                "checkpoint: `{}`; metrics: `{}`",
                c.display(),
                self.run_dir.join("metrics.jsonl").display()
            ));
        }
        lines
    }
}

/// What to train, beyond the pipeline file: the command line's choices.
#[derive(Debug, Clone, Default)]
pub struct TrainRequest {
    /// `--run-dir`: metrics, checkpoints, a trained tokenizer; default `train.checkpoint.dir`,
    /// else `runs/<name>`.
    pub run_dir: Option<PathBuf>,
    /// `--resume`: continue from the newest checkpoint of the run directory.
    pub resume: bool,
    /// `--allow-new-data`: resume although the source data changed.
    pub allow_new_data: bool,
    /// Draw a progress bar on stderr.
    pub progress_bar: bool,
    /// Print a line per metrics record (when there is no progress bar).
    pub log_lines: bool,
}

/// Trains `pipeline` as `request` says: the run directory locked for the whole call and
/// checked (a fresh run refuses one that holds a run), the plan built for training, the
/// pipeline run on `rt` ahead of the trainer.
pub fn run_pipeline(rt: &tokio::runtime::Runtime, pipeline: Pipeline, request: &TrainRequest) -> Result<TrainReport> {
    let dir = crate::plan::run_dir(&pipeline, request.run_dir.clone());
    // Held from before the directory is checked (a tokenizer trained for the run is written
    // into it) to the end.
    let _lock = crate::ground::lock::DirLock::acquire(
        &dir,
        "`pretext train`",
        "wait for that run to finish (or stop it and continue it with `--resume`), or train into another directory with `--run-dir DIR`",
    )?;
    // Before the plan is built: a tokenizer trained for this run is written into the directory.
    checkpoint::check_run_dir(&dir, request.resume)?;
    tune_allocator();
    let build = BuildOptions {
        tokenizer_dir: Some(dir.clone()),
        reuse_tokenizer: request.resume,
        train: true,
        ..Default::default()
    };
    let plan = rt.block_on(Plan::build(pipeline, &build))?;
    let opts = TrainOptions {
        run_dir: dir,
        resume: request.resume,
        allow_new_data: request.allow_new_data,
        progress_bar: request.progress_bar,
        log_lines: request.log_lines,
    };
    train(rt, plan, &opts)
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

/// The training settings of a plan (defaults when its pipeline has no `train:` section).
pub fn settings(plan: &Plan) -> TrainSpec {
    plan.train.spec.clone()
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
