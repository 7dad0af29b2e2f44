//! Training benches (custom harness: each measurement is a whole training run).
//!
//! 1. Overlap: steps/s of `pretext train` fed live by the pipeline, against the same model
//!    stepping over the same batches already in memory, and the share of time the live trainer
//!    waited for data. Medians of `PRETEXT_BENCH_REPS` runs (default 3).
//! 2. Encoder throughput: tokens/s of a BERT-style encoder (layers 4, hidden 256, heads 4,
//!    seq_len 128, batch 32) over in-memory MLM batches.
//! 3. The AdamW update over that encoder's parameters: the fused in-place passes against
//!    candle's composed ops, alternating, same gradients.
//!
//! `PRETEXT_BENCH_TOKENIZER` (a tokenizer.json, default: a WordPiece vocabulary trained on the
//! corpus) and `PRETEXT_BENCH_CORPUS` (Parquet with a `text` column, default `data/quickstart`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use pretext::plan::{BuildOptions, Plan};
use pretext::train::batch::TrainBatch;
use pretext::train::{settings, train, TrainOptions, Trainer};

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|s| !s.is_empty())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn write_pipeline(dir: &Path, model: &str, steps: u64) -> PathBuf {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let corpus = env("PRETEXT_BENCH_CORPUS").map(PathBuf::from).unwrap_or_else(|| repo.join("data/quickstart"));
    let tokenizer = match env("PRETEXT_BENCH_TOKENIZER") {
        Some(t) => format!("{{ file: {t} }}"),
        None => "{ train: { model: wordpiece, vocab_size: 8000, sample_rows: 5000 } }".into(),
    };
    let yaml = format!(
        "name: bench\nsource: {{ path: {} }}\ntokenizer: {tokenizer}\ntask: {{ mlm: {{ seq_len: 128 }} }}\n\
         stream: {{ batch_size: 32, shuffle: {{ window_rows: 4096 }} }}\n\
         train:\n  model: {{ encoder: {model} }}\n  steps: {steps}\n  schedule: {{ warmup_steps: 2 }}\n  device: cpu\n  log_every: 1\n\
         \x20 checkpoint: {{ every_steps: 1000000, keep: 1 }}\n",
        corpus.display()
    );
    let p = dir.join("bench.yaml");
    std::fs::write(&p, yaml).unwrap();
    p
}

fn build(rt: &tokio::runtime::Runtime, file: &Path, dir: &Path) -> Arc<Plan> {
    let p = pretext::load_pipeline(file, &[]).unwrap();
    let build = BuildOptions { tokenizer_dir: Some(dir.to_path_buf()), reuse_tokenizer: true, ..Default::default() };
    rt.block_on(Plan::build(p, &build)).unwrap()
}

fn batches(rt: &tokio::runtime::Runtime, plan: &Arc<Plan>, trainer: &Trainer, n: usize) -> Vec<TrainBatch> {
    rt.block_on(async {
        let mut s = plan.stream();
        let mut out = Vec::new();
        while out.len() < n {
            let Some(b) = s.next().await else { break };
            out.push(trainer.inputs(&b.unwrap()).unwrap());
        }
        out
    })
}

/// Steps/s of `steps` steps over in-memory batches, from a fresh model.
fn in_memory(plan: &Arc<Plan>, data: &[TrainBatch]) -> (f64, f64) {
    let mut trainer = Trainer::new(plan, &settings(plan), &candle_core::Device::Cpu).unwrap();
    let t = Instant::now();
    let mut tokens = 0;
    for b in data {
        trainer.train_step(std::slice::from_ref(b)).unwrap();
        tokens += b.tokens;
    }
    let secs = t.elapsed().as_secs_f64();
    (data.len() as f64 / secs, tokens as f64 / secs)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("train: bench");
        return;
    }
    // As `pretext train` does; `PRETEXT_BENCH_MALLOC=default` keeps glibc's defaults.
    if env("PRETEXT_BENCH_MALLOC").as_deref() != Some("default") {
        pretext::train::tune_allocator();
    }
    let reps: usize = env("PRETEXT_BENCH_REPS").and_then(|s| s.parse().ok()).unwrap_or(3);
    let steps: u64 = env("PRETEXT_BENCH_STEPS").and_then(|s| s.parse().ok()).unwrap_or(20);
    let rt = pretext::cli::runtime().unwrap();
    let tmp = tempfile::tempdir().unwrap();

    // 1. Overlap with a small model (the quickstart's).
    let file = write_pipeline(tmp.path(), "{ layers: 2, hidden: 128, heads: 4, ffn: 512, dropout: 0.1 }", steps);
    let plan = build(&rt, &file, tmp.path());
    let probe = Trainer::new(&plan, &settings(&plan), &candle_core::Device::Cpu).unwrap();
    let data = batches(&rt, &plan, &probe, steps as usize);
    drop(probe);
    let (mut live, mut memory, mut wait) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..reps {
        let run = tmp.path().join(format!("run{rep}"));
        let opts = TrainOptions {
            run_dir: run.clone(),
            resume: false,
            allow_new_data: false,
            progress_bar: false,
            log_lines: false,
        };
        let report = train(&rt, plan.clone(), &opts).unwrap();
        // Step time from the metrics (excludes start-up and the final checkpoint write).
        let records = pretext::train::metrics::read(&run).unwrap();
        let wall: f64 = records.iter().map(|r| r.data_wait_s + r.compute_s).sum();
        let waited: f64 = records.iter().map(|r| r.data_wait_s).sum();
        live.push(report.steps as f64 / wall);
        wait.push(waited / wall);
        memory.push(in_memory(&plan, &data).0);
    }
    let (l, m) = (median(live.clone()), median(memory.clone()));
    println!("overlap (encoder 2×128, seq 128, batch 32, {steps} steps, {reps} runs):");
    println!("  live pipeline   {l:.3} steps/s   (runs: {live:.3?})");
    println!("  in memory       {m:.3} steps/s   (runs: {memory:.3?})");
    println!("  ratio live/memory {:.3}; data-wait share (median) {:.2}%", l / m, 100.0 * median(wait));

    // 2. Encoder throughput at the reference size.
    let dir = tmp.path().join("big");
    std::fs::create_dir_all(&dir).unwrap();
    let file = write_pipeline(&dir, "{ layers: 4, hidden: 256, heads: 4, dropout: 0.1 }", steps);
    let plan = build(&rt, &file, tmp.path());
    let probe = Trainer::new(&plan, &settings(&plan), &candle_core::Device::Cpu).unwrap();
    let n = (steps as usize).min(10);
    let data = batches(&rt, &plan, &probe, n);
    drop(probe);
    let tps: Vec<f64> = (0..reps).map(|_| in_memory(&plan, &data).1).collect();
    println!(
        "encoder 4×256 (vocab {}), seq 128, batch 32, {n} steps: {:.0} tokens/s median (runs: {tps:.0?})",
        plan.tokenizer().vocab_size,
        median(tps.clone())
    );

    // 3. The optimizer's update alone, over the same encoder's parameters.
    let mut trainer = Trainer::new(&plan, &settings(&plan), &candle_core::Device::Cpu).unwrap();
    let params = &trainer.model.params;
    let grads: std::collections::BTreeMap<String, candle_core::Tensor> = params
        .vars()
        .map(|(name, var, _)| {
            (name.to_string(), candle_core::Tensor::randn(0f32, 1e-3, var.dims(), var.device()).unwrap())
        })
        .collect();
    let (mut fused, mut composed) = (Vec::new(), Vec::new());
    let updates = 10;
    for _ in 0..reps.max(3) {
        let t = Instant::now();
        for _ in 0..updates {
            trainer.opt.update(params, &grads, 1e-4).unwrap();
        }
        fused.push(t.elapsed().as_secs_f64() * 1e3 / updates as f64);
        let t = Instant::now();
        for _ in 0..updates {
            trainer.opt.update_composed(params, &grads, 1e-4).unwrap();
        }
        composed.push(t.elapsed().as_secs_f64() * 1e3 / updates as f64);
    }
    let (f, c) = (median(fused.clone()), median(composed.clone()));
    println!(
        "adamw update over {} parameters: fused {f:.1} ms, composed {c:.1} ms median ({:.2}× faster; runs: {fused:.1?} / {composed:.1?})",
        params.count(),
        c / f
    );
}
