//! The text objectives beyond MLM: causal packing, T5 span corruption, contrastive views and
//! BART denoising. Invariants as property tests, T5's reference lengths, determinism across
//! worker counts, and the errors for sequences too short or tokenizers lacking a token.

mod common;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::UInt64Type;
use common::*;
use pretext::stream::{Packer, Packing};
use pretext::task::causal::{cu_seqlens, Causal};
use pretext::task::contrastive::{Contrastive, Views};
use pretext::task::denoise::Denoise;
use pretext::task::mlm::IGNORE;
use pretext::task::span::{compute_input_and_target_lengths, Span};
use pretext::task::{list_values, Task, TaskContext};
use pretext::tokenize::batch::tokenized_batch;
use proptest::prelude::*;

const EOS: i32 = 2;
const PAD: i32 = 0;

/// Packs documents (each closed by EOS) into rows of `len`.
fn pack(docs: &[Vec<i32>], len: usize, mode: Packing, template: bool) -> RecordBatch {
    let keys: Vec<u64> = (0..docs.len() as u64).map(|k| k * 7919 + 1).collect();
    let ids: Vec<Vec<i32>> = docs
        .iter()
        .map(|d| if template { [vec![1], d.clone(), vec![3]].concat() } else { [d.clone(), vec![EOS]].concat() })
        .collect();
    let special: Vec<Vec<i8>> = ids.iter().map(|d| d.iter().map(|&i| (i < 5) as i8).collect()).collect();
    let batch = tokenized_batch(&keys, &ids, &special, None);
    let mut p = Packer::with_mode(len, mode, false, PAD as u32);
    let mut out = p.push(&batch).unwrap();
    out.extend(p.finish().unwrap());
    arrow::compute::concat_batches(&out[0].schema(), &out).unwrap()
}

fn keys(b: &RecordBatch) -> Vec<u64> {
    b.column(0).as_primitive::<UInt64Type>().values().to_vec()
}

fn docs_strategy() -> impl Strategy<Value = Vec<Vec<i32>>> {
    prop::collection::vec(prop::collection::vec(5i32..500, 1..150), 1..25)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn causal_packing_loses_nothing_and_segments_follow_documents(docs in docs_strategy(), len in 2usize..90, best_fit in any::<bool>(), mask_across in any::<bool>()) {
        let mode = if best_fit { Packing::BestFit } else { Packing::Greedy };
        let rows = pack(&docs, len, mode, false);
        let task = Causal::new(len, EOS as u32, mask_across, true);
        let out = task.apply(&rows, &keys(&rows), &TaskContext { seed: 1, epoch: 0 }).unwrap();
        let (ids, labels) = (list_values(&out, "input_ids").unwrap(), list_values(&out, "labels").unwrap());
        let (pos, seg, att) = (list_values(&out, "position_ids").unwrap(), list_values(&out, "segment_ids").unwrap(), list_values(&out, "attention_mask").unwrap());
        let real: Vec<i32> = ids.iter().zip(att).filter(|(_, &a)| a != 0).map(|(&t, _)| t).collect();
        let mut expected: Vec<i32> = docs.iter().flat_map(|d| [d.clone(), vec![EOS]].concat()).collect();
        if best_fit {
            // Best fit reorders whole pieces: same multiset of documents, each piece intact.
            let mut a = real.clone();
            a.sort();
            expected.sort();
            prop_assert_eq!(a, expected);
        } else {
            prop_assert_eq!(real, expected);
        }
        for row in 0..out.num_rows() {
            let r = row * len..(row + 1) * len;
            let (ids, labels, pos, seg, att) = (&ids[r.clone()], &labels[r.clone()], &pos[r.clone()], &seg[r.clone()], &att[r]);
            for i in 0..len {
                if att[i] == 0 {
                    prop_assert_eq!((labels[i], seg[i], ids[i]), (IGNORE, 0, PAD));
                    continue;
                }
                let starts = i == 0 || ids[i - 1] == EOS;
                prop_assert_eq!(pos[i] == 0, starts);
                if i > 0 {
                    prop_assert_eq!(seg[i], seg[i - 1] + starts as i32);
                } else {
                    prop_assert_eq!(seg[i], 1);
                }
                let masked = mask_across && i > 0 && starts;
                prop_assert_eq!(labels[i], if masked { IGNORE } else { ids[i] });
            }
            let cu = cu_seqlens(seg);
            prop_assert_eq!(cu.len() as i32 - 1, *seg.iter().max().unwrap());
            prop_assert_eq!(*cu.last().unwrap() as usize, att.iter().filter(|&&a| a != 0).count());
        }
    }

    #[test]
    fn best_fit_keeps_every_short_document_in_one_row(docs in docs_strategy(), len in 20usize..90) {
        let rows = pack(&docs, len, Packing::BestFit, false);
        let ids = list_values(&rows, "input_ids").unwrap();
        for d in docs.iter().filter(|d| d.len() < len) {
            let piece = [d.clone(), vec![EOS]].concat();
            let whole = ids.chunks(len).any(|row| row.windows(piece.len()).any(|w| w == piece.as_slice()));
            prop_assert!(whole, "document split although it fits a row");
        }
    }

    #[test]
    fn span_inputs_and_targets_rebuild_the_original(docs in docs_strategy(), seq_len in 16usize..80, seed in any::<u64>()) {
        let sentinels: Vec<i32> = (0..100).map(|k| 999 - k).collect();
        let span = Span::new(seq_len, 0.15, 3.0, sentinels.clone(), EOS as u32, PAD as u32);
        let rows = pack(&docs, span.raw_len, Packing::Greedy, false);
        let out = span.apply(&rows, &keys(&rows), &TaskContext { seed, epoch: 0 }).unwrap();
        let (raw, att) = (list_values(&rows, "input_ids").unwrap(), list_values(&rows, "attention_mask").unwrap());
        let (inp, lab) = (list_values(&out, "input_ids").unwrap(), list_values(&out, "labels").unwrap());
        let t = span.target_len;
        for row in 0..out.num_rows() {
            let r = row * span.raw_len..(row + 1) * span.raw_len;
            let original: Vec<i32> = raw[r.clone()].iter().zip(&att[r]).filter(|(_, &a)| a != 0).map(|(&x, _)| x).collect();
            let inputs = &inp[row * seq_len..(row + 1) * seq_len];
            let labels: Vec<i32> = lab[row * t..(row + 1) * t].iter().copied().filter(|&x| x != IGNORE).collect();
            let full = original.len() == span.raw_len;
            if full {
                prop_assert!(inputs[seq_len - 1] == EOS || inputs.contains(&EOS));
                prop_assert_eq!(*labels.last().unwrap(), EOS);
                prop_assert_eq!(labels.len(), t);
            }
            // Rebuild: replace each sentinel in the inputs by the target span after it.
            let mut spans = std::collections::HashMap::new();
            let mut cur = None;
            for &x in &labels[..labels.len() - 1] {
                if sentinels.contains(&x) { cur = Some(x); spans.insert(x, Vec::new()); } else if let Some(c) = cur { spans.get_mut(&c).unwrap().push(x); }
            }
            let mut rebuilt = Vec::new();
            for &x in inputs.iter().take_while(|&&x| x != PAD) {
                if sentinels.contains(&x) { rebuilt.extend(&spans[&x]); } else { rebuilt.push(x); }
            }
            rebuilt.pop(); // the EOS closing the inputs
            prop_assert_eq!(rebuilt, original);
        }
    }
}

#[test]
fn span_lengths_match_t5_and_statistics_hold() {
    assert_eq!(compute_input_and_target_lengths(512, 0.15, 3.0), (568, 114));
    let sentinels: Vec<i32> = (0..100).map(|k| 999 - k).collect();
    let span = Span::new(512, 0.15, 3.0, sentinels.clone(), EOS as u32, PAD as u32);
    assert_eq!((span.raw_len, span.target_len), (568, 114));
    let docs: Vec<Vec<i32>> = (0..400).map(|d| (0..700).map(|i| 5 + (d * 31 + i) % 900).collect()).collect();
    let rows = pack(&docs, span.raw_len, Packing::Greedy, false);
    let out = span.apply(&rows, &keys(&rows), &TaskContext { seed: 3, epoch: 0 }).unwrap();
    let (inp, lab) = (list_values(&out, "input_ids").unwrap(), list_values(&out, "labels").unwrap());
    let (mut noise, mut total, mut spans) = (0usize, 0usize, 0usize);
    for row in 0..out.num_rows() - 1 {
        let inputs = &inp[row * 512..(row + 1) * 512];
        let labels = &lab[row * 114..(row + 1) * 114];
        assert!(!inputs.contains(&PAD) && !labels.contains(&IGNORE), "full rows need no padding");
        let s = labels.iter().filter(|x| sentinels.contains(x)).count();
        spans += s;
        noise += 114 - s - 1;
        total += 568;
    }
    let density = noise as f64 / total as f64;
    assert!((density - 0.15).abs() < 0.02, "{density}");
    let mean = noise as f64 / spans as f64;
    assert!((mean - 3.0).abs() < 0.3, "{mean}");
}

#[test]
fn contrastive_views_are_corruptions_of_their_document() {
    let docs: Vec<Vec<i32>> =
        (0..300).map(|d| (0..(10 + d % 50)).map(|i| 5 + (d * 13 + i * 7) % 400).collect()).collect();
    let rows = pack(&docs, 64, Packing::PerDocument, true);
    let views = Views { crop: Some((4, 12)), token_dropout: 0.1, mask_prob: 0.0, identical: false };
    let task = Contrastive::new(64, views, None, PAD as u32);
    let out = task.apply(&rows, &keys(&rows), &TaskContext { seed: 5, epoch: 0 }).unwrap();
    let mut differ = 0;
    for (row, doc) in docs.iter().enumerate() {
        let mut pair = Vec::new();
        for side in ["input_ids_a", "input_ids_b"] {
            let v = &list_values(&out, side).unwrap()[row * 64..(row + 1) * 64];
            let inner: Vec<i32> = v.iter().copied().filter(|&x| x >= 5).collect();
            assert!(v[0] == 1 && v.contains(&3), "special tokens kept");
            assert!(!inner.is_empty() && inner.len() <= 12);
            // A subsequence of a contiguous window of the document.
            let mut it = doc.iter();
            assert!(inner.iter().all(|x| it.any(|y| y == x)), "view is not a subsequence");
            pair.push(inner);
        }
        differ += (pair[0] != pair[1]) as usize;
    }
    assert!(differ > 250, "views should usually differ: {differ}");
}

#[test]
fn denoise_labels_are_the_original_and_inputs_a_corruption() {
    let docs: Vec<Vec<i32>> =
        (0..300).map(|d| (0..(20 + d % 40)).map(|i| 10 + (d * 17 + i * 3) % 400).collect()).collect();
    let rows = pack(&docs, 64, Packing::PerDocument, true);
    let task = Denoise::new(64, 0.3, 3.0, 0.1, false, 4, PAD as u32, vec![false; 500]).unwrap();
    let out = task.apply(&rows, &keys(&rows), &TaskContext { seed: 9, epoch: 0 }).unwrap();
    let (inp, lab) = (list_values(&out, "input_ids").unwrap(), list_values(&out, "labels").unwrap());
    let (mut kept, mut total) = (0, 0);
    for (row, doc) in docs.iter().enumerate() {
        let labels: Vec<i32> = lab[row * 64..(row + 1) * 64].iter().copied().filter(|&x| x != IGNORE).collect();
        assert_eq!(labels, [vec![1], doc.clone(), vec![3]].concat());
        let inner: Vec<i32> = inp[row * 64..(row + 1) * 64].iter().copied().filter(|&x| x >= 10).collect();
        let mut it = doc.iter();
        assert!(inner.iter().all(|x| it.any(|y| y == x)), "inputs are not a subsequence of the document");
        assert!(inp[row * 64..(row + 1) * 64].contains(&4), "no mask token");
        kept += inner.len();
        total += doc.len();
    }
    // 30% infilled and 10% of the rest deleted: about 63% kept.
    let share = kept as f64 / total as f64;
    assert!((0.55..0.72).contains(&share), "{share}");
}

fn export(dir: &std::path::Path, task: &str, out: &str, sets: &[&str]) -> Result<Vec<(String, Vec<u8>)>, String> {
    let yaml = format!("name: o\nsource: {{ path: data, key_column: id }}\ntask: {{ {task} }}\nstream: {{ shuffle: {{ window_rows: 50 }} }}\nexport: {{ rows_per_file: 120 }}\n");
    let p = pipeline(dir, &format!("{out}.yaml"), &yaml);
    let mut args = vec!["export", p.to_str().unwrap(), "--out", out, "--quiet"];
    for s in sets {
        args.extend(["--set", s]);
    }
    let o = pretext(&args, dir);
    if !o.status.success() {
        return Err(stderr(&o));
    }
    Ok(dir_files(&dir.join(out)).into_iter().filter(|(n, _)| n.starts_with("part-")).collect())
}

const TASKS: &[&str] = &[
    "causal: { seq_len: 64 }",
    "causal: { seq_len: 64, pack: best_fit, mask_across_documents: true }",
    "span: { seq_len: 48 }",
    "contrastive_text: { seq_len: 48, crop: { min_tokens: 8, max_tokens: 32 }, token_dropout: 0.1, mask_prob: 0.1 }",
    "contrastive_text: { seq_len: 48, identical: true }",
    "denoise: { seq_len: 64, delete: 0.1, permute_sentences: true }",
];

#[test]
fn every_objective_is_identical_for_any_worker_count() {
    let t = tempdir();
    write_parquet(&t.path().join("data/a.parquet"), &documents(150, 1));
    write_parquet(
        &t.path().join("data/b.parquet"),
        &documents(120, 2).into_iter().map(|(i, s)| (i + 1000, s)).collect::<Vec<_>>(),
    );
    for (i, task) in TASKS.iter().enumerate() {
        let one = export(t.path(), task, &format!("w1-{i}"), &["stream.workers=1", "stream.batch_size=7"]).unwrap();
        let four = export(t.path(), task, &format!("w4-{i}"), &["stream.workers=4"]).unwrap();
        assert!(!one.is_empty(), "{task}");
        assert_eq!(one, four, "{task}");
    }
}

#[test]
fn sequences_too_short_and_missing_tokens_are_clear_errors() {
    let t = tempdir();
    write_parquet(&t.path().join("data/a.parquet"), &documents(20, 1));
    let err = export(t.path(), "span: { seq_len: 4 }", "e1", &[]).unwrap_err();
    assert!(
        err.contains("task.span.seq_len: seq_len 4 is too small for span corruption")
            && err.contains("the minimum is 10"),
        "{err}"
    );
    let err = export(t.path(), "contrastive_text: { seq_len: 32 }", "e2", &[]).unwrap_err();
    assert!(err.contains("no view generator"), "{err}");
    // A trained WordPiece vocabulary has no `<extra_id_N>` sentinels.
    let err = export(t.path(), "span: { seq_len: 64 }", "e3", &["tokenizer={train: {vocab_size: 300}}"]).unwrap_err();
    assert!(
        err.contains("needs 3 sentinel tokens (`<extra_id_0>` …) but the tokenizer") && err.contains("has 0"),
        "{err}"
    );
    // A tokenizer.json with a padding token but no end-of-text token.
    let vocab: std::collections::HashMap<String, u32> =
        [("[PAD]".to_string(), 0), ("[UNK]".to_string(), 1)].into_iter().collect();
    let model = tokenizers::models::wordlevel::WordLevel::builder()
        .vocab(vocab.into_iter().collect())
        .unk_token("[UNK]".into())
        .build()
        .unwrap();
    let mut tok = tokenizers::Tokenizer::new(model);
    tok.add_special_tokens([tokenizers::AddedToken::from("[PAD]", true)]).unwrap();
    tok.save(t.path().join("tok.json"), false).unwrap();
    let err = export(t.path(), "causal: { seq_len: 64 }", "e4", &["tokenizer={file: tok.json}"]).unwrap_err();
    assert!(err.contains("has no end-of-text token") && err.contains("`task.causal` needs"), "{err}");
}
