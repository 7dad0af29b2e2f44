//! Checkpoints: `checkpoint-<step>/{model.safetensors, optimizer.safetensors, state.json}`,
//! written into a hidden temporary directory and renamed into place, so a crash never leaves a
//! half-written checkpoint that looks complete.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::ground::durable;
use crate::train::models::Model;
use crate::train::optim::AdamW;

/// 2: the stream position is a [`StreamCursor`] (window, offset, mixture state), not a batch count.
/// 3: cursors of Parquet sources without `sql` name row groups and positions
///    ([`crate::stream::STREAM_VERSION`] 2).
pub const STATE_VERSION: u32 = 3;

pub use crate::stream::StreamCursor as Cursor;

/// `state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    /// Optimizer steps done.
    pub step: u64,
    pub cursor: Cursor,
    /// Hash of the settings a resumed run must share (see [`run_settings`]).
    pub pipeline_hash: String,
    /// Those settings, to say which differ when the hash does not match.
    pub settings: Value,
    /// The source data trained on (`Source::identity`: files, Delta version).
    #[serde(default)]
    pub data: Value,
    /// The learning rate of the last step.
    pub lr: f64,
    pub tokens_seen: u64,
    pub train_seconds: f64,
    pub data_wait_seconds: f64,
    pub last_loss: Option<f64>,
    pub last_eval_loss: Option<f64>,
    /// `train.steps` the schedule was computed for.
    pub total_steps: u64,
    /// The open metrics window.
    pub window: super::metrics::Window,
}

/// The resolved pipeline (see [`crate::spec::Pipeline::resolved_json`]) without what may change between a run and its resumption: the name,
/// export settings, worker count, and the run's bookkeeping (`steps`, `checkpoint`, `prefetch`,
/// `log_every`, `eval.every_steps`, `device`).
pub fn run_settings(resolved: Value) -> Value {
    let mut v = resolved;
    if let Some(o) = v.as_object_mut() {
        o.remove("name");
        o.remove("export");
        crate::spec::forget_access(o);
        if let Some(s) = o.get_mut("stream").and_then(Value::as_object_mut) {
            s.remove("workers");
            // `stream.epochs` bounds exports only; training runs `train.steps` steps.
            s.remove("epochs");
        }
        if let Some(t) = o.get_mut("train").and_then(Value::as_object_mut) {
            for k in ["steps", "checkpoint", "prefetch", "log_every", "device"] {
                t.remove(k);
            }
            if let Some(e) = t.get_mut("eval").and_then(Value::as_object_mut) {
                e.remove("every_steps");
            }
        }
    }
    v
}

/// The hash a resumed run's settings must match.
pub fn settings_hash(settings: &Value) -> String {
    crate::ground::identity::json_hash_hex(settings)
}

/// The checkpoints in `run_dir`, oldest first.
pub fn list(run_dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(run_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io(run_dir, "read directory", e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(run_dir, "read directory", e))?;
        let name = entry.file_name().to_string_lossy().to_string();
        if let Some(step) = name.strip_prefix("checkpoint-").and_then(|s| s.parse::<u64>().ok()) {
            if entry.path().join("state.json").is_file() {
                out.push((step, entry.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Checkpoints a run stopped while writing (`.checkpoint-N.tmp`): never read, removed by
/// [`remove_torn`].
pub fn torn(run_dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(run_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(run_dir, "read directory", e)),
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name().to_string_lossy().to_string();
            n.starts_with(".checkpoint-") && n.ends_with(".tmp")
        })
        .map(|e| e.path())
        .collect();
    out.sort();
    Ok(out)
}

/// Removes the torn checkpoints of `run_dir`, saying so.
pub fn remove_torn(run_dir: &Path) -> Result<()> {
    for t in torn(run_dir)? {
        eprintln!("note: ignoring `{}`: an incomplete checkpoint (the run stopped while writing it)", t.display());
        std::fs::remove_dir_all(&t).map_err(|e| Error::io(&t, "remove", e))?;
    }
    Ok(())
}

/// Writes a checkpoint for `state.step` and deletes all but the newest `keep`.
pub fn save(run_dir: &Path, model: &Model, opt: &AdamW, state: &State, keep: usize) -> Result<PathBuf> {
    let name = format!("checkpoint-{:07}", state.step);
    let tmp = run_dir.join(format!(".{name}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, "remove", e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, "create directory", e))?;
    model.params.save(&tmp.join("model.safetensors"))?;
    opt.save(&tmp.join("optimizer.safetensors"))?;
    let json = serde_json::to_string_pretty(state).map_err(|e| Error::internal(format!("state.json: {e}")))?;
    std::fs::write(tmp.join("state.json"), json).map_err(|e| Error::io(&tmp, "write state.json in", e))?;
    for f in ["model.safetensors", "optimizer.safetensors", "state.json"] {
        durable::sync_file(&tmp.join(f))?;
    }
    let dest = run_dir.join(&name);
    if dest.exists() {
        std::fs::remove_dir_all(&dest).map_err(|e| Error::io(&dest, "replace", e))?;
    }
    durable::rename(&tmp, &dest)?;
    // The rename must be durable before older checkpoints are deleted.
    durable::sync_dir(run_dir)?;
    let all = list(run_dir)?;
    for (_, old) in all.iter().take(all.len().saturating_sub(keep)) {
        std::fs::remove_dir_all(old).map_err(|e| Error::io(old, "remove old checkpoint", e))?;
    }
    Ok(dest)
}

/// Reads `state.json` of a checkpoint.
pub fn read_state(dir: &Path) -> Result<State> {
    let p = dir.join("state.json");
    let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, "read", e))?;
    let state: State = serde_json::from_str(&text).map_err(|e| {
        Error::data_hint(
            format!("`{}` is not a valid checkpoint state: {e}", p.display()),
            "resume from an older checkpoint",
        )
    })?;
    if state.version != STATE_VERSION {
        return Err(Error::data(format!(
            "`{}` has checkpoint version {}, this pretext reads version {STATE_VERSION}",
            p.display(),
            state.version
        )));
    }
    Ok(state)
}

/// Refuses to start a fresh run in a directory that holds one (before anything is written
/// there, a trained tokenizer included).
pub fn check_run_dir(run_dir: &Path, resume: bool) -> Result<()> {
    if resume {
        return Ok(());
    }
    if let Some((_, dir)) = list(run_dir)?.last() {
        return Err(Error::env_hint(
            format!("`{}` already holds a run (`{}`)", run_dir.display(), dir.display()),
            "continue it with `--resume`, or choose another directory with `--run-dir`",
        ));
    }
    Ok(())
}
