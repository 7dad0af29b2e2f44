//! `metrics.jsonl` and `metrics.csv` in the run directory: one line per logging window.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One metrics line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub step: u64,
    pub epoch: u32,
    /// Mean training loss over the steps since the previous line.
    pub loss: f64,
    pub lr: f64,
    /// Global gradient norm before clipping, at this step.
    pub grad_norm: f64,
    /// Token positions per second over the window (waiting included); images (every view) per
    /// second for image tasks, rows per second for table tasks.
    pub tokens_per_s: f64,
    /// Seconds spent waiting for data in the window.
    pub data_wait_s: f64,
    /// Seconds spent computing in the window.
    pub compute_s: f64,
    pub tokens_seen: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_loss: Option<f64>,
    /// Collapse monitor (see [`crate::train::collapse`]): std of the l2-normalised embeddings × √dim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_std: Option<f64>,
    /// Collapse monitor: effective rank of the embeddings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_rank: Option<f64>,
    /// A mixture: examples trained on from each source in this pass (JSON lines only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_examples: Option<std::collections::BTreeMap<String, u64>>,
}

const COLUMNS: &str =
    "step,epoch,loss,lr,grad_norm,tokens_per_s,data_wait_s,compute_s,tokens_seen,eval_loss,embedding_std,effective_rank";

pub struct Metrics {
    jsonl: std::fs::File,
    csv: std::fs::File,
    dir: PathBuf,
}

impl Metrics {
    /// Opens the metrics files of `dir`; keeps the lines up to `keep_through` (a resumed run's
    /// checkpoint step) and drops later ones, which a crashed run wrote after its checkpoint.
    pub fn open(dir: &Path, keep_through: Option<u64>) -> Result<Metrics> {
        let jsonl_path = dir.join("metrics.jsonl");
        let csv_path = dir.join("metrics.csv");
        let kept: Vec<Record> = match keep_through {
            Some(step) => read(dir)?.into_iter().filter(|r| r.step <= step).collect(),
            None => Vec::new(),
        };
        // Rewrite the kept lines into temporary files, then rename them over the old ones, so a
        // crash here leaves the old history intact.
        let tmp = |p: &Path| p.with_extension(format!("{}.tmp", p.extension().unwrap_or_default().to_string_lossy()));
        let create = |p: &Path| std::fs::File::create(p).map_err(|e| Error::io(p, "create", e));
        let (jsonl_tmp, csv_tmp) = (tmp(&jsonl_path), tmp(&csv_path));
        let mut m = Metrics { jsonl: create(&jsonl_tmp)?, csv: create(&csv_tmp)?, dir: dir.to_path_buf() };
        writeln!(m.csv, "{COLUMNS}").map_err(|e| Error::io(&csv_path, "write", e))?;
        for r in &kept {
            m.write(r)?;
        }
        m.flush()?;
        for (from, to) in [(&jsonl_tmp, &jsonl_path), (&csv_tmp, &csv_path)] {
            crate::ground::durable::rename(from, to)?;
        }
        Ok(m)
    }

    pub fn write(&mut self, r: &Record) -> Result<()> {
        let line = serde_json::to_string(r).map_err(|e| Error::internal(format!("metrics: {e}")))?;
        writeln!(self.jsonl, "{line}").map_err(|e| Error::io(&self.dir.join("metrics.jsonl"), "write", e))?;
        let opt = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
        let (eval, std, rank) = (opt(r.eval_loss), opt(r.embedding_std), opt(r.effective_rank));
        writeln!(
            self.csv,
            "{},{},{},{},{},{},{},{},{},{eval},{std},{rank}",
            r.step, r.epoch, r.loss, r.lr, r.grad_norm, r.tokens_per_s, r.data_wait_s, r.compute_s, r.tokens_seen
        )
        .map_err(|e| Error::io(&self.dir.join("metrics.csv"), "write", e))
    }

    pub fn flush(&mut self) -> Result<()> {
        self.jsonl.flush().and_then(|_| self.csv.flush()).map_err(|e| Error::io(&self.dir, "flush metrics in", e))
    }
}

/// Reads `metrics.jsonl` of a run directory.
pub fn read(dir: &Path) -> Result<Vec<Record>> {
    let p = dir.join("metrics.jsonl");
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(&p, "read", e)),
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut out = Vec::with_capacity(lines.len());
    for (i, l) in lines.iter().enumerate() {
        match serde_json::from_str(l) {
            Ok(r) => out.push(r),
            // A crash can cut the last line short; it is rewritten by the resumed run.
            Err(_) if i + 1 == lines.len() => {}
            Err(e) => return Err(Error::data(format!("`{}` line {}: {e}", p.display(), i + 1))),
        }
    }
    Ok(out)
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
    /// A step's tokens and times; its loss follows with [`Window::add_loss`] once read back.
    pub(super) fn add(&mut self, tokens: u64, wait: Duration, wall: Duration) {
        self.steps += 1;
        self.tokens += tokens;
        self.wait_s += wait.as_secs_f64();
        self.wall_s += wall.as_secs_f64();
    }

    pub(super) fn add_loss(&mut self, loss: f64) {
        self.loss += loss;
    }

    pub(super) fn record(
        &self,
        step: u64,
        epoch: u32,
        last: super::StepValues,
        tokens_seen: u64,
        eval_loss: Option<f64>,
    ) -> Record {
        Record {
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
