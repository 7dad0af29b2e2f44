//! Properties that must hold for any input, checked on every `cargo test` (the `fuzz/` targets
//! check the same ones under libFuzzer): the pipeline parser and checker give a pipeline or spec
//! errors for any YAML, never a panic; the text and tabular objectives keep their invariants for
//! any token sequences, lengths, settings and feature values.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{Array, AsArray, Float64Array, RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, Field, Float32Type, Schema, UInt64Type};
use pretext::stream::{Packer, Packing};
use pretext::task::contrastive::{Contrastive, Views};
use pretext::task::denoise::Denoise;
use pretext::task::mlm::IGNORE;
use pretext::task::tabular::{Corruption, Tabular};
use pretext::task::{list_values, Task, TaskContext};
use pretext::tokenize::batch::tokenized_batch;
use proptest::prelude::*;

/// `PROPTEST_CASES` when set (a longer campaign), else `n`.
fn cases(n: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(n)
}

const KEYS: &[&str] = &[
    "name",
    "source",
    "path",
    "text_column",
    "key_column",
    "sql",
    "format",
    "task",
    "mlm",
    "causal",
    "span",
    "contrastive_text",
    "denoise",
    "mae",
    "scarf",
    "vime",
    "contrastive_image",
    "seq_len",
    "mask_prob",
    "packing",
    "whole_word",
    "crop",
    "min_tokens",
    "max_tokens",
    "identical",
    "columns",
    "image",
    "size",
    "patch_size",
    "stream",
    "shuffle",
    "window_rows",
    "workers",
    "batch_size",
    "epochs",
    "shard",
    "rank",
    "world_size",
    "export",
    "rows_per_file",
    "row_group_rows",
    "compression",
    "zstd_level",
    "tokenizer",
    "file",
    "train",
    "bytes",
    "vocab_size",
    "seed",
    "model",
    "steps",
    "mixture",
    "weight",
    "sources",
    "bogus",
];

/// A YAML value built from pretext's own keys and awkward scalars.
fn yaml_value() -> impl Strategy<Value = String> {
    let scalar = prop_oneof![
        any::<i64>().prop_map(|i| i.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        Just(".nan".to_string()),
        Just("-.inf".to_string()),
        Just("null".to_string()),
        Just("~".to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        "[a-z_*./]{0,12}".prop_map(|s| format!("'{s}'")),
        Just("auto".to_string()),
        Just("data".to_string()),
        Just("'SELECT text FROM source'".to_string()),
        Just("{}".to_string()),
        Just("[]".to_string()),
    ];
    scalar.prop_recursive(4, 40, 6, |inner| {
        prop_oneof![
            prop::collection::vec((prop::sample::select(KEYS), inner.clone()), 0..6).prop_map(|kv| {
                let items: Vec<String> = kv.into_iter().map(|(k, v)| format!("{k}: {v}")).collect();
                format!("{{ {} }}", items.join(", "))
            }),
            prop::collection::vec(inner, 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
        ]
    })
}

fn pipeline_text() -> impl Strategy<Value = String> {
    prop::collection::vec((prop::sample::select(KEYS), yaml_value()), 0..8)
        .prop_map(|kv| kv.into_iter().map(|(k, v)| format!("{k}: {v}\n")).collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(512), .. ProptestConfig::default() })]

    /// Any pipeline made of pretext's keys gives a pipeline or spec errors, each naming where.
    #[test]
    fn the_parser_and_checker_never_panic_on_pipelines(text in pipeline_text(), set in prop::option::of((prop::sample::select(KEYS), yaml_value()))) {
        let sets: Vec<String> = set.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        if let Err(errors) = pretext::spec::load_str(&text, "p.yaml", PathBuf::from("."), &sets) {
            prop_assert!(!errors.to_string().is_empty());
        }
    }

    /// Nor on arbitrary text.
    #[test]
    fn the_parser_never_panics_on_arbitrary_text(text in "\\PC{0,200}") {
        let _ = pretext::spec::load_str(&text, "p.yaml", PathBuf::from("."), &[]);
    }
}

const PAD: i32 = 0;

/// Documents framed `[CLS] doc [SEP]` (ids 1 and 3), one per row of `len`.
fn rows(docs: &[Vec<i32>], len: usize) -> RecordBatch {
    let keys: Vec<u64> = (0..docs.len() as u64).map(|k| k * 7919 + 1).collect();
    let ids: Vec<Vec<i32>> = docs.iter().map(|d| [vec![1], d.clone(), vec![3]].concat()).collect();
    let special: Vec<Vec<i8>> = ids.iter().map(|d| d.iter().map(|&i| (i < 5) as i8).collect()).collect();
    let batch = tokenized_batch(&keys, &ids, &special, None);
    let mut p = Packer::with_mode(len, Packing::PerDocument, false, PAD as u32);
    let mut out = p.push(&batch).unwrap();
    out.extend(p.finish().unwrap());
    arrow::compute::concat_batches(&out[0].schema(), &out).unwrap()
}

fn keys(b: &RecordBatch) -> Vec<u64> {
    b.column(0).as_primitive::<UInt64Type>().values().to_vec()
}

/// `inner` is a subsequence of `doc`.
fn subsequence(inner: &[i32], doc: &[i32]) -> bool {
    let mut it = doc.iter();
    inner.iter().all(|x| it.any(|y| y == x))
}

fn docs() -> impl Strategy<Value = Vec<Vec<i32>>> {
    prop::collection::vec(prop::collection::vec(5i32..300, 0..120), 1..12)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(256), .. ProptestConfig::default() })]

    #[test]
    fn contrastive_views_are_subsequences_of_their_document(
        docs in docs(), len in 4usize..70, lo in 1usize..20, extra in 0usize..30,
        dropout in 0.0f64..1.0, mask in 0.0f64..1.0, identical in any::<bool>(), seed in any::<u64>(),
    ) {
        let batch = rows(&docs, len);
        let views = Views { crop: Some((lo, lo + extra)), token_dropout: dropout, mask_prob: mask, identical };
        let task = Contrastive::new(len, views, Some(4), PAD as u32);
        let out = task.apply(&batch, &keys(&batch), &TaskContext { seed, epoch: 0 }).unwrap();
        prop_assert_eq!(out.num_rows(), batch.num_rows());
        let inputs = list_values(&batch, "input_ids").unwrap();
        for side in ["input_ids_a", "input_ids_b"] {
            let v = list_values(&out, side).unwrap();
            prop_assert_eq!(v.len(), out.num_rows() * len);
            for row in 0..out.num_rows() {
                let doc: Vec<i32> = inputs[row * len..(row + 1) * len].iter().copied().filter(|&x| x >= 5).collect();
                let view: Vec<i32> = v[row * len..(row + 1) * len].iter().copied().filter(|&x| x >= 5).collect();
                prop_assert!(subsequence(&view, &doc), "{side} row {row}: {view:?} is not drawn from {doc:?}");
            }
        }
    }

    #[test]
    fn denoise_labels_are_the_row_and_inputs_a_subsequence(
        docs in docs(), len in 4usize..70, ratio in 0.0f64..0.9, lambda in 0.5f64..6.0,
        delete in 0.0f64..0.9, permute in any::<bool>(), seed in any::<u64>(),
    ) {
        let batch = rows(&docs, len);
        let task = Denoise::new(len, ratio, lambda, delete, permute, 4, PAD as u32, vec![false; 400]).unwrap();
        let out = task.apply(&batch, &keys(&batch), &TaskContext { seed, epoch: 0 }).unwrap();
        prop_assert_eq!(out.num_rows(), batch.num_rows());
        let (inputs, labels, given) =
            (list_values(&out, "input_ids").unwrap(), list_values(&out, "labels").unwrap(), list_values(&batch, "input_ids").unwrap());
        for row in 0..out.num_rows() {
            let r = row * len..(row + 1) * len;
            let original: Vec<i32> = given[r.clone()].iter().copied().filter(|&x| x != PAD).collect();
            let target: Vec<i32> = labels[r.clone()].iter().copied().filter(|&x| x != IGNORE).collect();
            prop_assert_eq!(&target, &original);
            let doc: Vec<i32> = original.iter().copied().filter(|&x| x >= 5).collect();
            let inner: Vec<i32> = inputs[r].iter().copied().filter(|&x| x >= 5).collect();
            if !permute {
                prop_assert!(subsequence(&inner, &doc));
            }
        }
    }

    #[test]
    fn tabular_corruption_keeps_its_counts_and_flags_every_missing_value(
        values in prop::collection::vec(prop::collection::vec(prop_oneof![
            4 => (-1e6f64..1e6).prop_map(Some),
            1 => Just(None),
            1 => Just(Some(f64::NAN)),
            1 => Just(Some(f64::INFINITY)),
        ], 1..6), 1..40),
        rate in 0.0f64..1.0, bernoulli in any::<bool>(), standardize in any::<bool>(), seed in any::<u64>(),
    ) {
        let c = values[0].len();
        let n = values.len();
        let names: Vec<String> = (0..c).map(|j| format!("f{j}")).collect();
        let mut fields = vec![Field::new("id", DataType::UInt64, false)];
        let mut cols: Vec<Arc<dyn Array>> = vec![Arc::new(UInt64Array::from_iter_values(0..n as u64))];
        for (j, name) in names.iter().enumerate() {
            fields.push(Field::new(name, DataType::Float64, true));
            cols.push(Arc::new(Float64Array::from(values.iter().map(|r| r.get(j).copied().flatten()).collect::<Vec<_>>())));
        }
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap();
        let corruption = if bernoulli { Corruption::Bernoulli(rate) } else { Corruption::Exact(rate) };
        let task = Tabular::new(names, &[], corruption, 16, standardize, false);
        let out = task.apply(&batch, &keys(&batch), &TaskContext { seed, epoch: 0 }).unwrap();
        prop_assert_eq!(out.num_rows(), n);
        let floats = |name: &str| out.column_by_name(name).unwrap().as_fixed_size_list().values().as_primitive::<Float32Type>().values().to_vec();
        let bools = |name: &str| { let v = out.column_by_name(name).unwrap().as_fixed_size_list().values().as_boolean().clone(); (0..v.len()).map(|i| v.value(i)).collect::<Vec<bool>>() };
        let (features, corrupted, cmask, missing) = (floats("features"), floats("corrupted"), bools("corruption_mask"), bools("missing_mask"));
        prop_assert!(features.iter().chain(&corrupted).all(|x| x.is_finite()), "a non-finite value came out");
        for (row, r) in values.iter().enumerate() {
            for j in 0..c {
                let absent = r.get(j).copied().flatten().is_none_or(|v| !v.is_finite());
                prop_assert_eq!(missing[row * c + j], absent);
            }
            if let Some(k) = task.exact_count() {
                prop_assert_eq!(cmask[row * c..(row + 1) * c].iter().filter(|&&m| m).count(), k);
            }
        }
    }
}
