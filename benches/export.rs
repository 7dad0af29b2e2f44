//! End-to-end MLM export, Parquet → Parquet (seq_len 128, packing), against the limit of the
//! same run: the tokenizer alone over the same texts with the same number of threads.
//!
//! ```text
//! cargo bench --bench export
//! PRETEXT_BENCH_TOKENIZER=/path/to/bert/tokenizer.json PRETEXT_BENCH_CORPUS=/path/to/corpus.parquet \
//!     cargo bench --bench export
//! ```
//! Without the variables it uses a generated corpus and the built-in byte tokenizer. Throughput
//! is in tokens; `benches/README.md` says how to get the BERT tokenizer and a real corpus.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{Array, AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pretext::plan::{BuildOptions, Plan};
use pretext::sink::export::{export, ExportOptions};
use pretext::tokenize::{Encoded, TextTokenizer};

fn generated_corpus(dir: &std::path::Path) -> PathBuf {
    let words = [
        "the",
        "river",
        "stone",
        "quietly",
        "remembers",
        "north",
        "window",
        "paper",
        "light",
        "seven",
        "gardens",
        "across",
        "morning",
    ];
    let mut x = 88172645463325252u64;
    let texts: Vec<String> = (0..20_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let n = 20 + (x % 200) as usize;
            (0..n).map(|i| words[(x as usize + i * 7) % words.len()]).collect::<Vec<_>>().join(" ")
        })
        .collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("text", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(Int64Array::from_iter_values(0..texts.len() as i64)), Arc::new(StringArray::from(texts))],
    )
    .unwrap();
    let path = dir.join("corpus.parquet");
    let mut w = parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    path
}

fn bench(c: &mut Criterion) {
    let scratch = tempfile::tempdir().unwrap();
    let corpus =
        std::env::var_os("PRETEXT_BENCH_CORPUS").map(PathBuf::from).unwrap_or_else(|| generated_corpus(scratch.path()));
    let tokenizer = std::env::var("PRETEXT_BENCH_TOKENIZER").ok();
    // The task, as YAML: MLM by default; e.g. `causal: { seq_len: 128 }` for causal packing.
    let task = std::env::var("PRETEXT_BENCH_TASK").unwrap_or_else(|_| "mlm: { seq_len: 128 }".into());
    let tok_yaml = match &tokenizer {
        Some(t) => format!("{{ file: '{t}' }}"),
        None => "{ bytes: {} }".into(),
    };
    // More export settings, as YAML keys: e.g. `compression: lz4`.
    let export_yaml = std::env::var("PRETEXT_BENCH_EXPORT").map(|e| format!(", {e}")).unwrap_or_default();
    let yaml = format!(
        "name: bench\nsource: {{ path: '{}' }}\ntokenizer: {tok_yaml}\ntask: {{ {task} }}\nstream: {{ workers: auto, batch_size: 1024 }}\nexport: {{ rows_per_file: 1000000{export_yaml} }}\n",
        corpus.display()
    );
    let pipeline = pretext::spec::load_str(&yaml, "bench.yaml", PathBuf::from("."), &[]).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let plan = rt.block_on(Plan::build(pipeline.clone(), &BuildOptions::default())).unwrap();
    // Token count of one export, for the throughput figure.
    let out = scratch.path().join("probe");
    let report = rt.block_on(export(plan.clone(), &ExportOptions::local(out))).unwrap();
    let texts: Vec<String> = rt.block_on(pretext::plan::sample_texts(plan.source(), usize::MAX)).unwrap();
    let workers = plan.workers();

    let mut g = c.benchmark_group("export");
    g.sample_size(10);
    g.throughput(Throughput::Elements(report.tokens));
    let mut run = 0;
    g.bench_function("export_parquet_to_parquet", |b| {
        b.iter(|| {
            run += 1;
            let dir = scratch.path().join(format!("run{run}"));
            rt.block_on(export(plan.clone(), &ExportOptions::local(dir.clone()))).unwrap();
            std::fs::remove_dir_all(dir).unwrap();
        })
    });
    // The limit: the tokenizer alone on the same texts, same thread count.
    let tok: TextTokenizer = plan.tokenizer().clone();
    let framing = plan.framing();
    let chunks: Vec<Vec<String>> = texts.chunks(texts.len().div_ceil(workers)).map(|c| c.to_vec()).collect();
    // Every chunk on its own thread, as the workers split a pass.
    let tokenize_all = |tok: &TextTokenizer| {
        std::thread::scope(|s| {
            for chunk in &chunks {
                let tok = tok.clone();
                s.spawn(move || {
                    let mut enc = Encoded::default();
                    for t in chunk {
                        tok.encode_framed(t, framing, None, false, &mut enc).unwrap();
                        enc.clear();
                    }
                });
            }
        })
    };
    g.bench_function("tokenizer_alone", |b| b.iter(|| tokenize_all(&tok)));
    // The same through `tokenizers` (pretext's fast BERT encoder off): what it buys.
    if tok.is_fast() {
        let reference = tok.reference();
        g.bench_function("tokenizer_alone_reference", |b| b.iter(|| tokenize_all(&reference)));
    }
    // And a plain read of the text column.
    g.bench_function("parquet_read_text", |b| {
        b.iter(|| {
            let f = std::fs::File::open(&corpus).unwrap();
            let r = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f).unwrap().build().unwrap();
            r.map(|b| b.unwrap().column(1).as_string_opt::<i32>().map(|s| s.len()).unwrap_or(0)).sum::<usize>()
        })
    });
    g.finish();

    // Training from the export: a pass over it as `format: pretext` (ready-made examples, in
    // batches), next to a plain read of the same files.
    let probe = scratch.path().join("probe");
    let yaml = format!(
        "name: read\nsource: {{ path: '{}', format: pretext }}\ntokenizer: {tok_yaml}\ntask: {{ {task} }}\nstream: {{ batch_size: 1024 }}\n",
        probe.display()
    );
    let pipeline = pretext::spec::load_str(&yaml, "read.yaml", PathBuf::from("."), &[]).unwrap();
    let reader = rt.block_on(Plan::build(pipeline, &BuildOptions::default())).unwrap();
    let parts: Vec<PathBuf> = std::fs::read_dir(&probe)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    let mut g = c.benchmark_group("read_export");
    g.sample_size(10);
    g.throughput(Throughput::Elements(report.tokens));
    g.bench_function("pretext_pass", |b| {
        b.iter(|| {
            rt.block_on(async {
                use futures::StreamExt;
                let mut s = reader.stream();
                let mut n = 0;
                while let Some(batch) = s.next().await {
                    n += batch.unwrap().num_rows();
                }
                assert_eq!(n as u64, report.rows);
                n
            })
        })
    });
    g.bench_function("parquet_read_all_columns", |b| {
        b.iter(|| {
            parts
                .iter()
                .map(|p| {
                    let f = std::fs::File::open(p).unwrap();
                    let r = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
                        .unwrap()
                        .build()
                        .unwrap();
                    r.map(|b| b.unwrap().num_rows()).sum::<usize>()
                })
                .sum::<usize>()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
