//! The pipeline file, by phase: [`load`] parses YAML (one function, [`yaml::parse`]) and applies
//! `--set` overrides, [`schema_check`] checks the tree against the JSON Schema generated from the
//! typed pipeline ([`types`]), and [`rules`] checks what a schema cannot say (combinations of
//! fields). [`derived`] holds the facts that follow from a checked spec alone.
//!
//! Pure: nothing here touches the file system except reading the pipeline file itself, and
//! nothing here imports the stages that run a pipeline (`task`, `source`, `stream`, `train`,
//! `sink`): what a rule needs to know about them is stated here, and the stages use it.

mod derived;
mod load;
mod rules;
mod schema_check;
mod types;
pub mod yaml;

use serde_json::Value;

pub use crate::error::{SpecError, SpecErrors};
pub use derived::*;
pub use load::{forget_access, load, load_str, Pipeline};
pub use types::*;

/// One problem in a pipeline file, before it is tied to a file name.
#[derive(Debug, Clone)]
pub struct Issue {
    /// YAML path, e.g. `["task", "mlm", "mask_prob"]`.
    pub path: Vec<String>,
    /// Point at the key (unknown keys) instead of the value.
    pub at_key: bool,
    pub message: String,
    pub hint: Option<String>,
}

impl Issue {
    pub fn at(path: &[String], message: String, hint: Option<String>) -> Self {
        Issue { path: path.to_vec(), at_key: false, message, hint }
    }
    pub fn at_key(path: &[String], message: String, hint: Option<String>) -> Self {
        Issue { path: path.to_vec(), at_key: true, message, hint }
    }
}

/// The JSON Schema of the pipeline file.
pub fn json_schema() -> Value {
    let schema = schemars::schema_for!(PipelineSpec);
    serde_json::to_value(schema).expect("schema serializes")
}

/// The closest candidate to `word`, when one is close enough to be a likely misspelling.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let word = word.to_lowercase();
    let candidates: Vec<&str> = candidates.into_iter().collect();
    let close = candidates
        .iter()
        .map(|c| (*c, strsim::damerau_levenshtein(&word, c)))
        .filter(|(c, d)| *d <= (c.len().max(word.len()) / 3).max(1))
        .min_by_key(|(_, d)| *d)
        .map(|(c, _)| c);
    // A truncated key (`vocab` for `vocab_size`) is far by edit distance but obvious.
    close.or_else(|| candidates.into_iter().find(|c| word.len() >= 3 && (c.starts_with(&word) || word.starts_with(c))))
}

#[cfg(test)]
mod tests;
