//! A training run on disk, as `pretext train` left it: the pipeline it ran (`pipeline.json`)
//! and its checkpoints. What `probe` and `export-model` start from.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::spec::Pipeline;
use crate::train::checkpoint;

pub struct SavedRun {
    /// `pipeline.json`: `file`, `base_dir` and the resolved `pipeline`.
    pub doc: serde_json::Value,
    /// Where it was read from, for messages.
    pub name: String,
    pub dir: PathBuf,
}

impl SavedRun {
    pub fn open(run_dir: &Path) -> Result<SavedRun> {
        let saved = run_dir.join("pipeline.json");
        let text = std::fs::read_to_string(&saved).map_err(|e| {
            Error::env_hint(
                format!("cannot read `{}`: {e}", saved.display()),
                "point at a run directory written by `pretext train` (it saves the pipeline it ran as pipeline.json)",
            )
        })?;
        let doc: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::data(format!("`{}`: {e}", saved.display())))?;
        Ok(SavedRun { doc, name: saved.display().to_string(), dir: run_dir.to_path_buf() })
    }

    /// The resolved pipeline's section `key` (`task`, `train`, …).
    pub fn section(&self, key: &str) -> &serde_json::Value {
        &self.doc["pipeline"][key]
    }

    /// The pipeline the run ran, with `overrides` (`key=value`) applied.
    pub fn pipeline(&self, overrides: &[String]) -> Result<Pipeline> {
        let base_dir = self.doc["base_dir"].as_str().map(PathBuf::from).unwrap_or_else(|| ".".into());
        let text = serde_json::to_string(&self.doc["pipeline"]).map_err(|e| Error::internal(e.to_string()))?;
        crate::spec::load_str(&text, &self.name, base_dir, overrides).map_err(Error::Spec)
    }

    /// The checkpoint of step `step`, or the newest.
    pub fn checkpoint(&self, step: Option<u64>) -> Result<PathBuf> {
        let all = checkpoint::list(&self.dir)?;
        let found = match step {
            None => all.last(),
            Some(s) => all.iter().find(|(k, _)| *k == s),
        };
        match (found, step) {
            (Some((_, dir)), _) => Ok(dir.clone()),
            (None, None) => Err(Error::env_hint(
                format!("`{}` holds no checkpoint", self.dir.display()),
                "train first: `pretext train <pipeline>`",
            )),
            (None, Some(s)) => Err(Error::env_hint(
                format!("`{}` holds no checkpoint of step {s}", self.dir.display()),
                format!(
                    "steps with a checkpoint: {}",
                    all.iter().map(|(k, _)| k.to_string()).collect::<Vec<_>>().join(", ")
                ),
            )),
        }
    }
}
