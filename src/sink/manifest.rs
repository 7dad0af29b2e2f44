//! The files beside the parts: `_progress.json` (rewritten after every finished part, so an
//! interrupted export can resume) and `_manifest.json` (written last: the export is complete).

use std::path::Path;

use arrow::datatypes::{DataType, Schema};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{Error, Result};

pub const MANIFEST: &str = "_manifest.json";
pub const PROGRESS: &str = "_progress.json";

/// One finished part file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub file: String,
    pub rows: u64,
    pub tokens: u64,
    /// Rows per mixture member.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub sources: std::collections::BTreeMap<String, u64>,
    pub bytes: u64,
    /// xxh3-64 of the file's bytes, hex.
    pub xxh3: String,
    /// Where the stream continues after this part (the resume point of `--resume`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<ResumePoint>,
}

/// A position between two examples: `skip` examples after the batch boundary `cursor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumePoint {
    pub cursor: crate::stream::StreamCursor,
    pub skip: u64,
}

/// State of an export in progress.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Progress {
    pub pipeline_hash: String,
    /// See [`crate::sink::export::fingerprint`].
    pub fingerprint: String,
    /// The fingerprint without the source data (see `export::settings_fingerprint`).
    #[serde(default)]
    pub settings_fingerprint: String,
    /// What the source data was (`Source::identity`).
    #[serde(default)]
    pub data: Value,
    pub pipeline: Value,
    pub parts: Vec<Part>,
}

impl Progress {
    pub fn read(dir: &Path) -> Result<Option<Progress>> {
        let p = dir.join(PROGRESS);
        match std::fs::read(&p) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                Error::env_hint(
                    format!("`{}` is damaged: {e}", p.display()),
                    "delete the output directory and export again",
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&p, "read", e)),
        }
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(Error::internal)?;
        crate::ground::durable::write_atomic(&dir.join(PROGRESS), &bytes)
    }
}

/// The HuggingFace `datasets` feature description of an Arrow type.
pub fn hf_feature(t: &DataType) -> Value {
    match t {
        DataType::FixedSizeList(f, n) => {
            json!({"feature": hf_feature(f.data_type()), "length": n, "_type": "Sequence"})
        }
        DataType::List(f) | DataType::LargeList(f) => {
            json!({"feature": hf_feature(f.data_type()), "_type": "Sequence"})
        }
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => json!({"dtype": "string", "_type": "Value"}),
        DataType::Boolean => json!({"dtype": "bool", "_type": "Value"}),
        DataType::Dictionary(_, v) if matches!(**v, DataType::Utf8 | DataType::LargeUtf8) => {
            json!({"dtype": "string", "_type": "Value"})
        }
        other => json!({"dtype": other.to_string().to_lowercase(), "_type": "Value"}),
    }
}

/// The `huggingface` schema metadata value, so `datasets.load_dataset("parquet", …)` restores
/// fixed-length sequence features.
pub fn hf_metadata(schema: &Schema) -> String {
    let features: serde_json::Map<String, Value> =
        schema.fields().iter().map(|f| (f.name().clone(), hf_feature(f.data_type()))).collect();
    json!({"info": {"features": features}}).to_string()
}

/// Field names and Arrow types, for the manifest.
pub fn describe_schema(schema: &Schema) -> Value {
    Value::Array(schema.fields().iter().map(|f| json!({"name": f.name(), "type": f.data_type().to_string()})).collect())
}
