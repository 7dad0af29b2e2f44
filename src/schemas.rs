//! Generated, committed artefacts under `schemas/`: the pipeline JSON Schema and one description
//! per task of the Arrow schema it outputs. `pretext schema --write` regenerates them; a test
//! fails when the committed copies are stale.

use arrow::datatypes::{DataType, SchemaRef};
use serde_json::json;

use crate::task::{causal, contrastive, denoise, mlm, span};

const KEY: &str = "stable u64 key: the source key column's value (or its hash, or a hash of file and row); packed rows: derived from the first document's key and token offset";

/// `(relative path, contents)` of every generated schema file.
pub fn generated() -> Vec<(&'static str, String)> {
    let mut pipeline = serde_json::to_string_pretty(&crate::spec::json_schema()).expect("schema serializes");
    pipeline.push('\n');
    vec![
        ("pipeline.schema.json", pipeline),
        (
            "tasks/mlm.json",
            task_doc(
                "mlm",
                "Masked language modelling (HuggingFace DataCollatorForLanguageModeling semantics); one row of seq_len tokens per example",
                mlm::output_schema(128),
                &[
                    ("input_ids", "token ids after masking: selected tokens are the mask token (mask_token_prob), a random non-special id (random_token_prob) or unchanged"),
                    ("attention_mask", "1 for real tokens, 0 for padding (only the last packed row, or short documents without packing, are padded)"),
                    ("labels", "original id at selected positions, -100 elsewhere (PyTorch ignore_index)"),
                    ("special_tokens_mask", "1 for special tokens ([CLS], [SEP], padding, …), which are never selected"),
                ],
            ),
        ),
        (
            "tasks/causal.json",
            task_doc(
                "causal",
                "Next-token prediction over packed documents, each closed by EOS; labels are aligned with input_ids and the model shifts (HuggingFace convention)",
                causal::output_schema(128),
                &[
                    ("input_ids", "packed token ids; documents end with EOS; padding only at the end of the last (greedy) or of best-fit rows"),
                    ("labels", "input_ids, -100 at padding and (mask_across_documents) at the first token of a document that follows another in the row"),
                    ("position_ids", "0, 1, … restarting at every document start (reset_position_ids), else 0 … seq_len-1"),
                    ("segment_ids", "1, 2, … per document inside the row, 0 for padding; cu_seqlens = the indices where it changes, plus the real length"),
                    ("attention_mask", "1 for real tokens, 0 for padding"),
                ],
            ),
        ),
        (
            "tasks/span.json",
            task_doc(
                "span",
                "T5 span corruption: raw rows of compute_input_and_target_lengths(seq_len) tokens (512 → 568) become inputs of exactly seq_len and targets of exactly the target length (512 → 114)",
                span::output_schema(128, 29),
                &[
                    ("input_ids", "non-noise tokens with one sentinel per noise span (<extra_id_0>, <extra_id_1>, …), then EOS; FixedSizeList<Int32, seq_len>"),
                    ("labels", "each sentinel followed by its noise span, then EOS; FixedSizeList<Int32, target_len>; -100 only in the padded last row"),
                    ("decoder_input_ids", "labels shifted right with the start id (the padding id, as T5)"),
                ],
            ),
        ),
        (
            "tasks/contrastive_text.json",
            task_doc(
                "contrastive_text",
                "Two views per document (SimCSE / DeCLUTR): crop → token dropout → mask, or identical views; no example twice in one batch",
                contrastive::output_schema(128),
                &[
                    ("input_ids_a", "first view with the tokenizer's special tokens, padded"),
                    ("attention_mask_a", "1 for the first view's real tokens"),
                    ("input_ids_b", "second view"),
                    ("attention_mask_b", "1 for the second view's real tokens"),
                ],
            ),
        ),
        (
            "tasks/denoise.json",
            task_doc(
                "denoise",
                "BART-style denoising: sentence permutation, text infilling (Poisson span lengths, one mask per span) and token deletion",
                denoise::output_schema(128),
                &[
                    ("input_ids", "the corrupted document, padded"),
                    ("labels", "the original document (truncated to seq_len with its special tokens), -100 at padding"),
                    ("attention_mask", "1 for the corrupted input's real tokens"),
                ],
            ),
        ),
    ]
}

fn task_doc(task: &str, description: &str, schema: SchemaRef, notes: &[(&str, &str)]) -> String {
    let columns: Vec<_> = schema
        .fields()
        .iter()
        .map(|f| {
            let ty = match f.data_type() {
                DataType::FixedSizeList(item, _) => format!("FixedSizeList<{}, seq_len>", item.data_type()),
                other => other.to_string(),
            };
            let text = if f.name() == "example_key" {
                KEY
            } else {
                notes.iter().find(|(n, _)| n == f.name()).map(|(_, d)| *d).unwrap_or("")
            };
            json!({"name": f.name(), "arrow_type": ty, "nullable": f.is_nullable(), "description": text})
        })
        .collect();
    let mut s = serde_json::to_string_pretty(&json!({"task": task, "description": description, "columns": columns}))
        .expect("doc serializes");
    s.push('\n');
    s
}
