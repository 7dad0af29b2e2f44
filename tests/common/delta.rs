//! Delta tables written by hand: data files and commits of the transaction log.

use std::path::Path;

use serde_json::json;

use super::write_parquet;

/// The table's schema: `id` and `text` in the data files, `lang` a partition column.
pub fn schema_string() -> String {
    json!({"type": "struct", "fields": [
        {"name": "id", "type": "long", "nullable": false, "metadata": {}},
        {"name": "text", "type": "string", "nullable": true, "metadata": {}},
        {"name": "lang", "type": "string", "nullable": true, "metadata": {}},
    ]})
    .to_string()
}

/// Writes a data file of `docs` at `rel` inside the table and returns its `add` action.
pub fn add(table: &Path, rel: &str, docs: &[(i64, Option<String>)], lang: &str) -> serde_json::Value {
    let path = table.join(rel);
    write_parquet(&path, docs);
    let size = std::fs::metadata(&path).unwrap().len();
    json!({"add": {"path": rel, "partitionValues": {"lang": lang}, "size": size,
        "modificationTime": 1_700_000_000_000u64, "dataChange": true}})
}

/// Writes commit `version` of the table's log.
pub fn commit(table: &Path, version: u64, actions: &[serde_json::Value]) {
    let log = table.join("_delta_log");
    std::fs::create_dir_all(&log).unwrap();
    let mut text = String::new();
    for a in actions {
        text.push_str(&a.to_string());
        text.push('\n');
    }
    std::fs::write(log.join(format!("{version:020}.json")), text).unwrap();
}

/// The actions of a first commit: protocol, metadata (partitioned by `lang`), then `adds`.
pub fn create(adds: Vec<serde_json::Value>) -> Vec<serde_json::Value> {
    let mut v = vec![
        json!({"protocol": {"minReaderVersion": 1, "minWriterVersion": 2}}),
        json!({"metaData": {"id": "00000000-0000-0000-0000-000000000001", "format": {"provider": "parquet", "options": {}},
            "schemaString": schema_string(), "partitionColumns": ["lang"], "configuration": {}, "createdTime": 1_700_000_000_000u64}}),
    ];
    v.extend(adds);
    v
}
