//! What data a source reads, for resumption checks: its identity, and how two identities
//! differ, in words.

use super::open::Source;

impl Source {
    /// What data the source reads, for resumption checks: a hash of the file names and sizes,
    /// their count, and the Delta table version.
    pub fn identity(&self) -> serde_json::Value {
        let files: Vec<_> = self.files.iter().map(|f| serde_json::json!([f.relative, f.bytes])).collect();
        let digest = crate::ground::identity::hash_hex(serde_json::Value::Array(files).to_string().as_bytes());
        serde_json::json!({
            "files": self.files.len(),
            "files_xxh3": digest,
            "delta_version": self.delta.as_ref().map(|d| d.version),
        })
    }
}

/// How the data changed between two [`Source::identity`] values, in words.
pub fn describe_data_change(old: &serde_json::Value, new: &serde_json::Value) -> String {
    if let (Some(a), Some(b)) = (old.as_array(), new.as_array()) {
        if let Some((x, y)) = a.iter().zip(b).find(|(x, y)| x != y) {
            return format!("source `{}`: {}", y["name"].as_str().unwrap_or("?"), describe_data_change(x, y));
        }
        return "the list of sources changed".into();
    }
    match (old["delta_version"].as_u64(), new["delta_version"].as_u64()) {
        (Some(a), Some(b)) if a != b => format!("the Delta table was at version {a}, it is now at version {b}"),
        _ => format!(
            "the source files changed ({} file(s) then, {} now, or their names or sizes differ)",
            old["files"].as_u64().map(|n| n.to_string()).unwrap_or_else(|| "?".into()),
            new["files"].as_u64().map(|n| n.to_string()).unwrap_or_else(|| "?".into())
        ),
    }
}
