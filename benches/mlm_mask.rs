//! MLM masking alone on pre-tokenized, packed rows (no I/O, no tokenizer), one thread.
//!
//! ```text
//! cargo bench --bench mlm_mask
//! ```
//! Throughput is in tokens (elements). Issue target: ≥ 30 M tokens/s on the 2-core machine.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pretext::spec::MlmSpec;
use pretext::stream::Packer;
use pretext::task::mlm::Mlm;
use pretext::task::{Task, TaskContext};
use pretext::tokenize::batch::tokenized_batch;

fn rows(seq_len: usize, n_docs: usize, words: bool) -> arrow::array::RecordBatch {
    let keys: Vec<u64> = (0..n_docs as u64).collect();
    let ids: Vec<Vec<i32>> = (0..n_docs)
        .map(|d| {
            (0..300)
                .map(|i| {
                    if i == 0 {
                        101
                    } else if i == 299 {
                        102
                    } else {
                        1000 + ((d * 7 + i * 13) % 29000) as i32
                    }
                })
                .collect()
        })
        .collect();
    let special: Vec<Vec<i8>> = ids.iter().map(|d| d.iter().map(|&i| (i < 1000) as i8).collect()).collect();
    let word_ids: Vec<Vec<i32>> = ids.iter().map(|d| (0..d.len() as i32).map(|j| j / 2).collect()).collect();
    let batch = tokenized_batch(&keys, &ids, &special, words.then_some(&word_ids[..]));
    let mut p = Packer::new(seq_len, true, words, 0);
    let mut out: Vec<_> = p.push(&batch).unwrap().into_iter().collect();
    out.extend(p.finish().unwrap());
    arrow::compute::concat_batches(&out[0].schema(), &out).unwrap()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("mlm_mask");
    for whole_word in [false, true] {
        let spec: MlmSpec =
            serde_json::from_value(serde_json::json!({"seq_len": 128, "whole_word": whole_word})).unwrap();
        let mlm = Mlm::new(&spec, 103, (1000..30522).collect()).unwrap();
        let batch = rows(128, 1000, whole_word);
        let keys: Vec<u64> =
            batch.column(0).as_any().downcast_ref::<arrow::array::UInt64Array>().unwrap().values().to_vec();
        let cx = TaskContext { seed: 42, epoch: 0 };
        g.throughput(Throughput::Elements((batch.num_rows() * 128) as u64));
        g.bench_function(if whole_word { "whole_word_seq128" } else { "token_seq128" }, |b| {
            b.iter(|| mlm.apply(&batch, &keys, &cx).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
