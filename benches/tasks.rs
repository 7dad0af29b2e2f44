//! Every text objective on pre-tokenized rows (no I/O, no tokenizer), one thread, so
//! regressions in the per-token work show up. Throughput is in input tokens.
//!
//! ```text
//! cargo bench --bench tasks
//! ```
//! Issue target: each objective ≥ 20 M tokens/s on the 2-core machine.

use arrow::array::{RecordBatch, UInt64Array};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pretext::stream::{Packer, Packing};
use pretext::task::causal::Causal;
use pretext::task::contrastive::{Contrastive, Views};
use pretext::task::denoise::Denoise;
use pretext::task::mlm::Mlm;
use pretext::task::span::Span;
use pretext::task::{Task, TaskContext};
use pretext::tokenize::batch::tokenized_batch;

/// 1,000 documents of 300 tokens (ids ≥ 1000 ordinary, 101/102 framing), packed into rows.
fn rows(len: usize, mode: Packing, template: bool) -> RecordBatch {
    let keys: Vec<u64> = (0..1000).collect();
    let ids: Vec<Vec<i32>> = (0..1000usize)
        .map(|d| {
            let body: Vec<i32> = (0..298).map(|i| 1000 + ((d * 7 + i * 13) % 29000) as i32).collect();
            if template {
                [vec![101], body, vec![102]].concat()
            } else {
                [body, vec![2]].concat()
            }
        })
        .collect();
    let special: Vec<Vec<i8>> = ids.iter().map(|d| d.iter().map(|&i| (i < 1000) as i8).collect()).collect();
    let batch = tokenized_batch(&keys, &ids, &special, None);
    let mut p = Packer::with_mode(len, mode, false, 0);
    let mut out = p.push(&batch).unwrap();
    out.extend(p.finish().unwrap());
    arrow::compute::concat_batches(&out[0].schema(), &out).unwrap()
}

fn run(c: &mut Criterion, name: &str, task: &dyn Task, batch: &RecordBatch, len: usize) {
    let keys = batch.column(0).as_any().downcast_ref::<UInt64Array>().unwrap().values().to_vec();
    let cx = TaskContext { seed: 42, epoch: 0 };
    let mut g = c.benchmark_group("tasks");
    g.throughput(Throughput::Elements((batch.num_rows() * len) as u64));
    g.bench_function(name, |b| b.iter(|| task.apply(batch, &keys, &cx).unwrap()));
    g.finish();
}

fn bench(c: &mut Criterion) {
    let mlm_spec = serde_json::from_value(serde_json::json!({"seq_len": 128})).unwrap();
    run(
        c,
        "mlm_seq128",
        &Mlm::new(&mlm_spec, 103, (1000..30522).collect()).unwrap(),
        &rows(128, Packing::Greedy, true),
        128,
    );
    run(c, "causal_seq1024", &Causal::new(1024, 2, true, true), &rows(1024, Packing::Greedy, false), 1024);
    let span = Span::new(512, 0.15, 3.0, (0..100).map(|k| 32099 - k).collect(), 2, 0);
    let raw = span.raw_len;
    run(c, "span_seq512", &span, &rows(raw, Packing::Greedy, false), raw);
    let views = Views { crop: Some((16, 96)), token_dropout: 0.1, mask_prob: 0.1, identical: false };
    run(
        c,
        "contrastive_seq128",
        &Contrastive::new(128, views, Some(103), 0),
        &rows(128, Packing::PerDocument, true),
        128,
    );
    let denoise = Denoise::new(128, 0.3, 3.0, 0.0, true, 103, 0, (0..30522).map(|i| i % 97 == 0).collect()).unwrap();
    run(c, "denoise_seq128", &denoise, &rows(128, Packing::PerDocument, true), 128);
}

criterion_group!(benches, bench);
criterion_main!(benches);
