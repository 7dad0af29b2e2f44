//! MLM statistics and invariants against HuggingFace `DataCollatorForLanguageModeling`
//! semantics (transformers `data/data_collator.py`, `torch_mask_tokens`): each non-special token
//! is selected with probability 0.15; selected tokens become `[MASK]` with probability 0.8, a
//! random token with 0.1, and stay with 0.1; labels are the original id where selected, −100
//! elsewhere.

use arrow::array::RecordBatch;
use pretext::spec::MlmSpec;
use pretext::stream::Packer;
use pretext::task::mlm::{Mlm, IGNORE};
use pretext::task::{list_values, Task, TaskContext};
use proptest::prelude::*;

const MASK: i32 = 4;
const VOCAB: i32 = 1000;

fn spec(seq_len: u32, whole_word: bool) -> MlmSpec {
    serde_json::from_value(serde_json::json!({"seq_len": seq_len, "whole_word": whole_word})).unwrap()
}

/// Rows of `seq_len` from documents: ids 5.. are ordinary, 0–4 special (`[CLS]`=2, `[SEP]`=3).
fn rows(docs: &[Vec<i32>], seq_len: usize, words: bool) -> RecordBatch {
    let keys: Vec<u64> = (0..docs.len() as u64).collect();
    let ids: Vec<Vec<i32>> = docs.iter().map(|d| [vec![2], d.clone(), vec![3]].concat()).collect();
    let special: Vec<Vec<i8>> = ids.iter().map(|d| d.iter().map(|&i| (i < 5) as i8).collect()).collect();
    let word_ids: Vec<Vec<i32>> = ids
        .iter()
        .map(|d| d.iter().enumerate().map(|(j, &i)| if i < 5 { -1 } else { j as i32 / 3 }).collect())
        .collect();
    let tok = pretext::tokenize::batch::tokenized_batch(&keys, &ids, &special, words.then_some(&word_ids[..]));
    let mut p = Packer::new(seq_len, true, words, 0);
    let mut out = Vec::new();
    out.extend(p.push(&tok).unwrap());
    out.extend(p.finish().unwrap());
    arrow::compute::concat_batches(&out[0].schema(), &out).unwrap()
}

fn apply(mlm: &Mlm, batch: &RecordBatch, seed: u64) -> RecordBatch {
    let keys: Vec<u64> =
        batch.column(0).as_any().downcast_ref::<arrow::array::UInt64Array>().unwrap().values().to_vec();
    mlm.apply(batch, &keys, &TaskContext { seed, epoch: 0 }).unwrap()
}

fn pool() -> Vec<i32> {
    (5..VOCAB).collect()
}

#[test]
fn selection_rate_and_80_10_10_split_match_huggingface() {
    let docs: Vec<Vec<i32>> =
        (0..2000).map(|d| (0..500).map(|i| 5 + ((d * 7919 + i * 104729) % (VOCAB - 5))).collect()).collect();
    let batch = rows(&docs, 128, false);
    let mlm = Mlm::new(&spec(128, false), MASK as u32, pool()).unwrap();
    let out = apply(&mlm, &batch, 42);
    let (orig, special) =
        (list_values(&batch, "input_ids").unwrap(), list_values(&batch, "special_tokens_mask").unwrap());
    let (input, labels) = (list_values(&out, "input_ids").unwrap(), list_values(&out, "labels").unwrap());
    let (mut eligible, mut selected, mut masked, mut random, mut kept) = (0u64, 0u64, 0u64, 0u64, 0u64);
    for i in 0..orig.len() {
        if special[i] != 0 {
            assert_eq!(labels[i], IGNORE, "special token selected");
            assert_eq!(input[i], orig[i]);
            continue;
        }
        eligible += 1;
        if labels[i] == IGNORE {
            assert_eq!(input[i], orig[i], "unselected token changed");
            continue;
        }
        assert_eq!(labels[i], orig[i]);
        selected += 1;
        if input[i] == MASK {
            masked += 1;
        } else if input[i] == orig[i] {
            kept += 1;
        } else {
            assert!(input[i] >= 5 && input[i] < VOCAB, "random replacement {} is special", input[i]);
            random += 1;
        }
    }
    assert!(eligible > 900_000);
    let rate = selected as f64 / eligible as f64;
    assert!((rate - 0.15).abs() < 0.01, "selection rate {rate}");
    // A random draw equal to the original id counts as "kept" (as in HF): 1/995 of 10%.
    let s = selected as f64;
    for (name, got, want) in
        [("mask", masked as f64 / s, 0.8), ("random", random as f64 / s, 0.1), ("kept", kept as f64 / s, 0.1)]
    {
        assert!((got - want).abs() < 0.02, "{name}: {got}");
    }
}

#[test]
fn whole_word_masking_selects_all_pieces_of_a_word() {
    let docs: Vec<Vec<i32>> = (0..200).map(|d| (0..300).map(|i| 5 + (d + i) % 900).collect()).collect();
    let batch = rows(&docs, 64, true);
    let mlm = Mlm::new(&spec(64, true), MASK as u32, pool()).unwrap();
    let out = apply(&mlm, &batch, 1);
    let words = list_values(&batch, "word_ids").unwrap();
    let labels = list_values(&out, "labels").unwrap();
    let (mut selected, mut eligible) = (0, 0);
    for row in 0..batch.num_rows() {
        let r = row * 64..(row + 1) * 64;
        let (w, l) = (&words[r.clone()], &labels[r]);
        for i in 1..64 {
            if w[i] >= 0 && w[i] == w[i - 1] {
                assert_eq!(l[i] == IGNORE, l[i - 1] == IGNORE, "word split across selection");
            }
        }
        eligible += w.iter().filter(|&&x| x >= 0).count();
        selected += l.iter().filter(|&&x| x != IGNORE).count();
    }
    let rate = selected as f64 / eligible as f64;
    assert!((rate - 0.15).abs() < 0.02, "{rate}");
}

#[test]
fn same_key_same_masks_regardless_of_batching() {
    let docs: Vec<Vec<i32>> = (0..50).map(|d| (0..100).map(|i| 5 + (d * 31 + i) % 900).collect()).collect();
    let batch = rows(&docs, 32, false);
    let mlm = Mlm::new(&spec(32, false), MASK as u32, pool()).unwrap();
    let whole = apply(&mlm, &batch, 9);
    let halves: Vec<RecordBatch> =
        [batch.slice(0, 17), batch.slice(17, batch.num_rows() - 17)].iter().map(|b| apply(&mlm, b, 9)).collect();
    let joined = arrow::compute::concat_batches(&whole.schema(), &halves).unwrap();
    assert_eq!(whole, joined);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// For arbitrary documents and lengths: labels are −100 exactly where the input is
    /// unchanged-and-unselected, special tokens and padding are never selected, and packing loses
    /// or duplicates no token.
    #[test]
    fn masking_invariants(docs in prop::collection::vec(prop::collection::vec(5i32..VOCAB, 0..200), 1..20), seq_len in 8u32..80, p in 0.0f64..1.0, seed in any::<u64>()) {
        let batch = rows(&docs, seq_len as usize, false);
        let mut s = spec(seq_len, false);
        s.mask_prob = p;
        let mlm = Mlm::new(&s, MASK as u32, pool()).unwrap();
        let out = apply(&mlm, &batch, seed);
        let orig = list_values(&batch, "input_ids").unwrap();
        let special = list_values(&batch, "special_tokens_mask").unwrap();
        let attention = list_values(&out, "attention_mask").unwrap();
        let (input, labels) = (list_values(&out, "input_ids").unwrap(), list_values(&out, "labels").unwrap());
        for i in 0..orig.len() {
            if special[i] != 0 || attention[i] == 0 {
                prop_assert_eq!(labels[i], IGNORE);
                prop_assert_eq!(input[i], orig[i]);
            } else if labels[i] == IGNORE {
                prop_assert_eq!(input[i], orig[i]);
            } else {
                prop_assert_eq!(labels[i], orig[i]);
            }
        }
        // Packing: the real tokens of all rows, in order, are the documents with [CLS]/[SEP].
        let real: Vec<i32> = orig.iter().zip(attention).filter(|(_, &a)| a != 0).map(|(&t, _)| t).collect();
        let expected: Vec<i32> = docs.iter().flat_map(|d| [vec![2], d.clone(), vec![3]].concat()).collect();
        prop_assert_eq!(real, expected);
    }
}
