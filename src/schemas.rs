//! Generated, committed artefacts under `schemas/`: the pipeline JSON Schema and one description
//! per task of the Arrow schema it outputs. `pretext schema --write` regenerates them; a test
//! fails when the committed copies are stale.

use arrow::datatypes::{DataType, SchemaRef};
use serde_json::json;

use crate::task::{causal, contrastive, denoise, mlm, span, tabular, vision};

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
        (
            "tasks/contrastive_image.json",
            task_doc_sized(
                "contrastive_image",
                "Augmented views of each image (SimCLR / BYOL / MoCo v2 recipes); planar channel-major pixels, normalised per channel; undecodable images are skipped and counted",
                vision::contrastive_schema(2, 3 * 32 * 32, true),
                &[
                    ("view_a", "first view: random resized crop → flip → colour jitter → grayscale → blur → solarize, as configured; (x − mean) / std per channel"),
                    ("view_b", "second view, drawn independently (BYOL: with its own recipe); `views: N` adds view_c, …"),
                    ("label", "the source's `label_column`, when set (for linear probes); nullable"),
                ],
                "channels·size·size",
                &[],
            ),
        ),
        (
            "tasks/mae.json",
            task_doc_sized(
                "mae",
                "Masked-autoencoder inputs (He et al. 2021): a randomly resized, flipped and normalised image, and a uniform random mask of exactly round(mask_ratio · patches) patches",
                vision::mae_schema(3 * 224 * 224, 196, true),
                &[
                    ("pixel_values", "the image, planar channel-major, (x − mean) / std per channel (HuggingFace ViTMAE's pixel_values); patch p covers rows (p / (size/patch_size))·patch_size … and columns (p mod (size/patch_size))·patch_size …"),
                    ("mask", "true where the patch is masked (MAE's mask = 1: removed, to be reconstructed)"),
                    ("ids_restore", "MAE's ids_restore: the rank of each patch in a random permutation; patches ranked below patches − masked are the kept ones, in rank order"),
                    ("label", "the source's `label_column`, when set; nullable"),
                ],
                "channels·size·size",
                &[("mask", "patches"), ("ids_restore", "patches")],
            ),
        ),
        (
            "tasks/denoise_image.json",
            task_doc_sized(
                "denoise_image",
                "Denoising-autoencoder pairs: the resized image, and a copy with gaussian noise, salt and pepper and/or random erasing (applied on [0, 1] pixels, then normalised)",
                vision::denoise_schema(3 * 32 * 32, true),
                &[
                    ("noisy", "the corrupted image, planar channel-major, normalised"),
                    ("clean", "the image, normalised the same way (the reconstruction target)"),
                    ("label", "the source's `label_column`, when set; nullable"),
                ],
                "channels·size·size",
                &[],
            ),
        ),
        (
            "tasks/scarf.json",
            tabular_doc(
                "scarf",
                "SCARF tabular corruption: exactly round(corruption_rate · columns) features per row (chosen from the example key alone) replaced by values drawn from each column's empirical marginal, a seeded reservoir sample of the stream",
            ),
        ),
        (
            "tasks/vime.json",
            tabular_doc(
                "vime",
                "VIME tabular corruption: each feature replaced with probability mask_prob by a value drawn from its column's empirical marginal (a seeded reservoir sample of the stream); the same columns as `scarf`",
            ),
        ),
    ]
}

fn tabular_doc(task: &str, description: &str) -> String {
    task_doc_sized(
        task,
        description,
        tabular::output_schema(16, true),
        &[
            ("features", "the row's features in `columns` order, as f32; nulls, NaN and infinities imputed (numeric: the reservoir median; categorical: its most frequent code); numeric columns standardised with the reservoir's mean and std when `standardize`"),
            ("corrupted", "features with the corrupted positions replaced by values drawn from the same column"),
            ("corruption_mask", "scarf: true where the feature was chosen for replacement; vime: true where the value changed (the mask-estimation target, 1·(x ≠ x̃))"),
            ("missing_mask", "true where the source value was null or not finite (and imputed)"),
            ("label", "the source's `label_column`, when set; nullable"),
        ],
        "columns",
        &[],
    )
}

fn task_doc(task: &str, description: &str, schema: SchemaRef, notes: &[(&str, &str)]) -> String {
    task_doc_sized(task, description, schema, notes, "seq_len", &[])
}

/// `task_doc` where fixed-size lists are `default_width` long unless `widths` names another.
fn task_doc_sized(
    task: &str,
    description: &str,
    schema: SchemaRef,
    notes: &[(&str, &str)],
    default_width: &str,
    widths: &[(&str, &str)],
) -> String {
    let columns: Vec<_> = schema
        .fields()
        .iter()
        .map(|f| {
            let ty = match f.data_type() {
                DataType::FixedSizeList(item, _) => {
                    let w = widths.iter().find(|(n, _)| n == f.name()).map(|(_, w)| *w).unwrap_or(default_width);
                    format!("FixedSizeList<{}, {w}>", item.data_type())
                }
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
