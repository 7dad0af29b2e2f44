//! Generated, committed artefacts under `schemas/`: the pipeline JSON Schema and one description
//! per task of the Arrow schema it outputs. `pretext schema --write` regenerates them; a test
//! fails when the committed copies are stale.

use serde_json::json;

use crate::task::mlm;

/// `(relative path, contents)` of every generated schema file.
pub fn generated() -> Vec<(&'static str, String)> {
    let mut pipeline = serde_json::to_string_pretty(&crate::spec::json_schema()).expect("schema serializes");
    pipeline.push('\n');
    vec![("pipeline.schema.json", pipeline), ("tasks/mlm.json", task_doc())]
}

fn task_doc() -> String {
    // Describe with a symbolic width; the real width is `task.mlm.seq_len`.
    let schema = mlm::output_schema(128);
    let describe = |name: &str| {
        match name {
        "example_key" => "stable u64 key: the source key column's value (or its hash, or a hash of file and row); packed rows: derived from the first document's key and token offset",
        "input_ids" => "token ids after masking: selected tokens are the mask token (mask_token_prob), a random non-special id (random_token_prob) or unchanged",
        "attention_mask" => "1 for real tokens, 0 for padding (only the last packed row, or short documents without packing, are padded)",
        "labels" => "original id at selected positions, -100 elsewhere (PyTorch ignore_index)",
        "special_tokens_mask" => "1 for special tokens ([CLS], [SEP], padding, …), which are never selected",
        _ => "",
    }
    };
    let columns: Vec<_> = schema
        .fields()
        .iter()
        .map(|f| {
            let ty = match f.data_type() {
                arrow::datatypes::DataType::FixedSizeList(item, _) => {
                    format!("FixedSizeList<{}, seq_len>", item.data_type())
                }
                other => other.to_string(),
            };
            json!({"name": f.name(), "arrow_type": ty, "nullable": f.is_nullable(), "description": describe(f.name())})
        })
        .collect();
    let doc = json!({
        "task": "mlm",
        "description": "Masked language modelling (HuggingFace DataCollatorForLanguageModeling semantics); one row per example of seq_len tokens",
        "columns": columns,
    });
    let mut s = serde_json::to_string_pretty(&doc).expect("doc serializes");
    s.push('\n');
    s
}
