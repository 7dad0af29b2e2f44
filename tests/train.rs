//! `pretext train`: gradients reach every parameter of every model, layers and losses agree with
//! reference values, loss falls, packed documents do not see each other, and a resumed run is
//! bit-identical to an uninterrupted one.

mod common;

use std::path::Path;
use std::sync::Arc;

use arrow::array::RecordBatch;
use candle_core::{DType, Device, Tensor};
use common::*;
use futures::StreamExt;
use pretext::plan::{BuildOptions, Plan};
use pretext::train::batch::{to_inputs, Inputs, TaskKind};
use pretext::train::models::{info_nce, Net, Objective};
use pretext::train::nn::{attention, layer_norm, Fwd, MASKED};
use pretext::train::vocab_loss::vocab_cross_entropy;
use pretext::train::{settings, train, TrainOptions, Trainer};

const TASKS: &[(&str, &str)] = &[
    ("mlm", "mlm: { seq_len: 48 }"),
    ("contrastive_text", "contrastive_text: { seq_len: 48, identical: true }"),
    ("causal", "causal: { seq_len: 48 }"),
    ("span", "span: { seq_len: 48 }"),
    ("denoise", "denoise: { seq_len: 48, mask_spans: 0.3 }"),
];

fn model_for(task: &str) -> &'static str {
    match task {
        "mlm" | "contrastive_text" => "encoder",
        "causal" => "decoder",
        _ => "seq2seq",
    }
}

/// A corpus and a pipeline training a tiny model for `task`.
fn setup(dir: &Path, task: &str, extra: &str) -> std::path::PathBuf {
    write_parquet(&dir.join("data/a.parquet"), &documents(300, 3));
    let (_, spec) = TASKS.iter().find(|(n, _)| *n == task).unwrap();
    let model = model_for(task);
    pipeline(
        dir,
        "p.yaml",
        &format!(
            "name: t\nsource: {{ path: data, key_column: id }}\ntask: {{ {spec} }}\n\
             stream: {{ batch_size: 8, workers: 2 }}\n\
             train:\n  model: {{ {model}: {{ layers: 2, hidden: 32, heads: 2, ffn: 64, dropout: 0.1 }} }}\n\
             \x20 optimizer: {{ adamw: {{ lr: 3.0e-3 }} }}\n  schedule: {{ warmup_steps: 2 }}\n  device: cpu\n{extra}"
        ),
    )
}

fn plan(file: &Path, sets: &[String]) -> (tokio::runtime::Runtime, Arc<Plan>) {
    let rt = pretext::cli::runtime().unwrap();
    let p = pretext::load_pipeline(file, sets).unwrap();
    let plan = rt.block_on(Plan::build(p, &BuildOptions::default())).unwrap();
    (rt, plan)
}

fn first_batch(rt: &tokio::runtime::Runtime, plan: &Arc<Plan>) -> RecordBatch {
    rt.block_on(async { plan.stream().next().await.unwrap().unwrap() })
}

#[test]
fn every_parameter_receives_a_gradient_in_every_model() {
    for (task, _) in TASKS {
        let dir = tempdir();
        let file = setup(dir.path(), task, "");
        let (rt, plan) = plan(&file, &[]);
        let trainer = Trainer::new(&plan, &settings(&plan), &Device::Cpu).unwrap();
        let batch = trainer.inputs(&first_batch(&rt, &plan)).unwrap();
        let loss = trainer.model.loss(&batch.inputs, &Fwd::train(0.1, 7), Objective::contrastive(0.05)).unwrap();
        let grads = loss.backward().unwrap();
        let unused = trainer.model.unused_prefixes();
        let mut checked = 0;
        for (name, var, _) in trainer.model.params.vars() {
            if unused.iter().any(|p| name.starts_with(p)) {
                continue;
            }
            let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{task}: `{name}` received no gradient"));
            let size = g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(size > 0.0 && size.is_finite(), "{task}: `{name}` has gradient norm {size}");
            checked += 1;
        }
        assert!(checked >= 20, "{task}: only {checked} parameters");
    }
}

/// Every text model trains in bf16 (weights and activations; f32 masters and losses): the loss
/// is finite, falls over a few steps on one batch, and the weights stay bf16. Run on the CPU's
/// bf16 kernels here; the trainer allows bf16 on CUDA only.
#[test]
fn every_text_model_trains_in_bf16_with_f32_masters() {
    for (task, _) in TASKS {
        let dir = tempdir();
        let file = setup(dir.path(), task, "");
        let (rt, plan) = plan(&file, &[]);
        let mut cfg = settings(&plan);
        cfg.clip_grad_norm = 1.0;
        let mut trainer = Trainer::with_dtype(&plan, &cfg, &Device::Cpu, candle_core::DType::BF16).unwrap();
        let batch = trainer.inputs(&first_batch(&rt, &plan)).unwrap();
        let losses: Vec<f64> =
            (0..6).map(|_| trainer.train_step(std::slice::from_ref(&batch)).unwrap().read().unwrap().loss).collect();
        assert!(losses.iter().all(|l| l.is_finite()), "{task}: {losses:?}");
        assert!(losses[5] < losses[0], "{task}: the loss did not fall on one batch: {losses:?}");
        for (name, var, _) in trainer.model.params.vars() {
            assert_eq!(var.dtype(), candle_core::DType::BF16, "{task}: `{name}`");
        }
    }
    // The trainer refuses bf16 on the CPU, saying why (`device: cpu` with bf16 is refused earlier,
    // by the pipeline's checks; `auto` finds no GPU in a CPU build).
    let dir = tempdir();
    let file = setup(dir.path(), "mlm", "  dtype: bf16\n");
    let (_rt, plan) = plan(&file, &["train.device=auto".to_string()]);
    let err = Trainer::new(&plan, &settings(&plan), &Device::Cpu).err().unwrap().to_string();
    assert!(err.contains("needs a CUDA device"), "{err}");
}

fn t(values: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_vec(values.to_vec(), shape, &Device::Cpu).unwrap()
}

fn close(got: &Tensor, want: &[f64], tol: f64) {
    let got = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!((*g as f64 - w).abs() < tol, "got {got:?}, want {want:?}");
    }
}

// Reference values: numpy in float64, written directly from the definitions
// (layer norm with biased variance and eps 1e-5; softmax(q·kᵀ/√d + bias)·v; mean of
// −log_softmax at the targets; InfoNCE over cosine similarities / temperature with the
// diagonal as targets). The script is in the closing note of the training issue.

#[test]
fn layer_norm_matches_reference() {
    let x = t(&[1., 2., 3., 4., -1., 0.5, 2., 0.], &[2, 4]);
    let y = layer_norm(&x, &t(&[1., 0.5, 2., -1.], &[4]), &t(&[0., 0.1, -0.2, 0.3], &[4]), 1e-5).unwrap();
    close(
        &y,
        &[-1.34163542, -0.1236059, 0.69442361, -1.04163542, -1.27016517, 0.15773478, 2.80220859, 0.64640868],
        1e-5,
    );
}

#[test]
fn layer_norm_gradient_matches_finite_differences() {
    let x0 = [0.3f32, -1.2, 2.0, 0.7, 0.1, -0.4];
    let w = t(&[1.5, -0.5, 0.8, 1.0, 2.0, 0.3], &[6]);
    let b = t(&[0.0; 6], &[6]);
    let c = t(&[0.2, -1.0, 0.5, 0.9, -0.3, 1.1], &[1, 6]);
    let f = |x: &Tensor| layer_norm(x, &w, &b, 1e-5).unwrap().mul(&c).unwrap().sum_all().unwrap();
    let var = candle_core::Var::from_tensor(&t(&x0, &[1, 6])).unwrap();
    let grads = f(var.as_tensor()).backward().unwrap();
    let g = grads.get(var.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let x64 = |i: usize, d: f32| {
        let mut v = x0;
        v[i] += d;
        f(&t(&v, &[1, 6])).to_scalar::<f32>().unwrap() as f64
    };
    for (i, &gi) in g.iter().enumerate() {
        let numeric = (x64(i, 1e-2) - x64(i, -1e-2)) / 2e-2;
        assert!((numeric - gi as f64).abs() < 2e-2, "coordinate {i}: autograd {gi} vs numeric {numeric}");
    }
}

#[test]
fn attention_matches_reference() {
    let q = t(&[0.1, 0.2, 0.3, -0.1, -0.5, 0.4], &[1, 1, 3, 2]);
    let k = t(&[0.2, 0.1, -0.3, 0.5, 0.4, 0.4], &[1, 1, 3, 2]);
    let v = t(&[1., 2., 3., -1., 0.5, 0.5], &[1, 1, 3, 2]);
    let bias = t(&[0., 0., -1e9], &[1, 1, 1, 3]);
    let y = attention(&q, &k, &v, Some(&bias), 1.0 / 2f64.sqrt(), &Fwd::eval()).unwrap();
    close(&y, &[2.0106062, 0.48409069, 1.93292572, 0.60061143, 2.14395005, 0.28407493], 1e-5);
}

#[test]
fn losses_match_reference() {
    let logits = t(&[1., 2., 0.5, -1., 0., 0., 0., 0., 3., -2., 1., 0.5], &[3, 4]);
    let targets = Tensor::new(&[0u32, 3, 1], &Device::Cpu).unwrap();
    // As the vocabulary projection of rows that are the logits themselves (an identity weight).
    let identity = Tensor::eye(4, DType::F32, &Device::Cpu).unwrap();
    for grads in [false, true] {
        let l = vocab_cross_entropy(&logits, &identity, None, &targets, grads).unwrap().to_scalar::<f32>().unwrap();
        assert!((l as f64 - 2.694576568961699).abs() < 1e-5, "{l}");
    }
    let a = t(&[1., 0., 0.6, 0.8, -1., 1.], &[3, 2]);
    let b = t(&[0.9, 0.1, 0.5, 0.9, 0., 1.], &[3, 2]);
    let l = info_nce(&a, &b, 0.5).unwrap().to_scalar::<f32>().unwrap();
    assert!((l as f64 - 0.5346202209913496).abs() < 1e-5, "{l}");
}

/// A one-row causal batch from its columns.
fn causal_row(ids: Vec<i32>, pos: Vec<i32>, seg: Vec<i32>, mask: Vec<i32>) -> RecordBatch {
    let w = ids.len();
    let cols = [
        ("input_ids", ids.clone()),
        ("labels", ids),
        ("position_ids", pos),
        ("segment_ids", seg),
        ("attention_mask", mask),
    ];
    let fields: Vec<arrow::datatypes::Field> =
        cols.iter().map(|(n, _)| pretext::task::fixed_list_field(n, w)).collect();
    let arrays = cols.iter().map(|(_, v)| pretext::task::fixed_list(v.clone(), w)).collect();
    RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), arrays).unwrap()
}

/// A causal batch of one row holding two documents: [doc1 (5 tokens)] [doc2 (7 tokens)].
fn packed_row(doc2: &[i32]) -> RecordBatch {
    let mut ids = vec![10, 11, 12, 13, 2];
    ids.extend_from_slice(doc2);
    let pos: Vec<i32> = (0..5).chain(0..7).collect();
    let seg: Vec<i32> = [1; 5].into_iter().chain([2; 7]).collect();
    causal_row(ids, pos, seg, vec![1; 12])
}

#[test]
fn packed_documents_do_not_attend_to_each_other() {
    let dir = tempdir();
    let file = setup(dir.path(), "causal", "");
    let (_rt, plan) = plan(&file, &[]);
    let trainer = Trainer::new(&plan, &settings(&plan), &Device::Cpu).unwrap();
    let Net::Decoder(m) = &trainer.model.net else { panic!("decoder expected") };
    let hidden = |row: RecordBatch| {
        let b = to_inputs(TaskKind::Causal, &row, 0, 1000, &Device::Cpu, DType::F32).unwrap();
        let Inputs::Causal { ids, positions, bias, .. } = &b.inputs else { panic!() };
        m.hidden(ids, positions, bias, &Fwd::eval()).unwrap().squeeze(0).unwrap().to_vec2::<f32>().unwrap()
    };
    let a = hidden(packed_row(&[20, 21, 22, 23, 24, 25, 2]));
    let b = hidden(packed_row(&[90, 91, 92, 93, 94, 95, 2]));
    // The first document's outputs do not change when the second one's tokens do …
    assert_eq!(a[..5], b[..5]);
    assert_ne!(a[5..], b[5..]);
    // … and the second document's outputs equal those of the same document alone at the
    // start of a row (positions restart, nothing before it is visible).
    let alone = hidden(causal_row(
        [20, 21, 22, 23, 24, 25, 2, 0, 0, 0, 0, 0].to_vec(),
        (0..12).collect(),
        [1; 7].into_iter().chain([0; 5]).collect(),
        [1; 7].into_iter().chain([0; 5]).collect(),
    ));
    for i in 0..7 {
        for (x, y) in a[5 + i].iter().zip(&alone[i]) {
            assert!((x - y).abs() < 1e-5, "position {i}: {x} vs {y}");
        }
    }
}

#[test]
fn a_tiny_model_learns_on_the_quickstart_data() {
    let file = repo().join("pipelines/quickstart.yaml");
    let dir = tempdir();
    let sets: Vec<String> = [
        "train.model={encoder: {layers: 1, hidden: 64, heads: 2, ffn: 128, dropout: 0.0}}",
        "train.steps=100",
        "train.batch_size=16",
        "train.schedule={warmup_steps: 10}",
        "train.optimizer={adamw: {lr: 2.0e-3}}",
        "train.eval={fraction: 0.05, every_steps: 50, batches: 4}",
        "task.mlm.seq_len=64",
        "stream.batch_size=16",
    ]
    .map(String::from)
    .to_vec();
    let rt = pretext::cli::runtime().unwrap();
    let p = pretext::load_pipeline(&file, &sets).unwrap();
    let build = BuildOptions { tokenizer_dir: Some(dir.path().to_path_buf()), ..Default::default() };
    let plan = rt.block_on(Plan::build(p, &build)).unwrap();
    let opts = TrainOptions {
        run_dir: dir.path().join("run"),
        resume: false,
        allow_new_data: false,
        progress_bar: false,
        log_lines: false,
    };
    let report = train(&rt, plan, &opts).unwrap();
    let (first, last) = (report.first_loss.unwrap(), report.last_loss.unwrap());
    assert_eq!(report.steps, 100);
    assert!(last < first - 1.0, "loss {first} → {last}");
    assert!(report.eval_loss.unwrap() < first - 1.0, "eval loss {:?}", report.eval_loss);
    let metrics = pretext::train::metrics::read(&dir.path().join("run")).unwrap();
    assert_eq!(metrics.last().unwrap().step, 100);
    assert!(metrics.iter().filter(|r| r.eval_loss.is_some()).count() == 2);
}

/// Metrics without the timing columns.
fn losses(run: &Path) -> Vec<(u64, f64, f64, f64, Option<f64>)> {
    pretext::train::metrics::read(run)
        .unwrap()
        .into_iter()
        .map(|r| (r.step, r.loss, r.lr, r.grad_norm, r.eval_loss))
        .collect()
}

#[test]
fn resumed_training_is_bit_identical_and_a_changed_pipeline_is_refused() {
    let dir = tempdir();
    let file = setup(
        dir.path(),
        "mlm",
        "  steps: 12\n  accumulate: 2\n  log_every: 4\n  checkpoint: { every_steps: 6, keep: 5 }\n  eval: { fraction: 0.1, every_steps: 4, batches: 2 }\n",
    );
    // The stream is shuffled so the cursor must really carry the position.
    let yaml =
        std::fs::read_to_string(&file).unwrap().replace("workers: 2 }", "workers: 2, shuffle: { window_rows: 64 } }");
    std::fs::write(&file, yaml).unwrap();
    let run = |run_dir: &str, extra: &[&str]| {
        let mut args = vec!["train", "p.yaml", "--quiet", "--run-dir", run_dir];
        args.extend_from_slice(extra);
        pretext(&args, dir.path())
    };
    let o = run("full", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("trained steps 1..12 of 12"), "{}", stderr(&o));

    // A crash after the step-6 checkpoint: the run directory holds checkpoint 6 and metrics
    // written after it.
    let full = dir.path().join("full");
    let cut = dir.path().join("cut");
    std::fs::create_dir_all(&cut).unwrap();
    for entry in std::fs::read_dir(&full).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name == "checkpoint-0000006" {
            std::fs::create_dir_all(cut.join(&name)).unwrap();
            for f in std::fs::read_dir(&p).unwrap() {
                let f = f.unwrap().path();
                std::fs::copy(&f, cut.join(&name).join(f.file_name().unwrap())).unwrap();
            }
        } else if p.is_file() {
            std::fs::copy(&p, cut.join(&name)).unwrap();
        }
    }
    // Without --resume the directory is refused.
    let o = run("cut", &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--resume"), "{}", stderr(&o));
    // A different pipeline is refused, naming what changed.
    let o = run("cut", &["--resume", "--set", "task.mlm.mask_prob=0.2"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("task.mlm.mask_prob: 0.15 → 0.2"), "{}", stderr(&o));
    // Resuming continues from step 7 and ends where the uninterrupted run ended, bit for bit.
    let o = run("cut", &["--resume"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("trained steps 7..12 of 12"), "{}", stderr(&o));
    for f in ["model.safetensors", "optimizer.safetensors"] {
        let a = std::fs::read(full.join("checkpoint-0000012").join(f)).unwrap();
        let b = std::fs::read(cut.join("checkpoint-0000012").join(f)).unwrap();
        assert!(a == b, "{f} differs after resuming");
    }
    assert_eq!(losses(&full), losses(&cut));
    let state = |d: &Path| {
        let s: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("checkpoint-0000012/state.json")).unwrap()).unwrap();
        (s["cursor"].clone(), s["tokens_seen"].clone())
    };
    assert_eq!(state(&full), state(&cut));
    // Nothing left to do at the end.
    let o = run("cut", &["--resume"]);
    assert!(o.status.success() && stderr(&o).contains("nothing to do"), "{}", stderr(&o));
}

#[test]
fn plot_writes_png_and_svg() {
    let dir = tempdir();
    let file = setup(
        dir.path(),
        "causal",
        "  steps: 6\n  log_every: 1\n  eval: { fraction: 0.1, every_steps: 3, batches: 1 }\n",
    );
    let o = pretext(&["train", file.to_str().unwrap(), "--quiet", "--run-dir", "run"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let o = pretext(&["plot", "run"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let png = std::fs::read(dir.path().join("run/metrics.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let svg = std::fs::read_to_string(dir.path().join("run/metrics.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("polyline"), "{}", &svg[..svg.len().min(400)]);
    let o = pretext(&["plot", "nowhere"], dir.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no metrics"), "{}", stderr(&o));
}

#[test]
fn train_settings_are_checked() {
    let dir = tempdir();
    let file = setup(dir.path(), "mlm", "");
    let yaml =
        std::fs::read_to_string(&file).unwrap().replace("encoder:", "decoder:").replace("device: cpu", "device: gpu7");
    std::fs::write(&file, yaml).unwrap();
    let o = pretext(&["validate", "p.yaml"], dir.path());
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("train.model.decoder") && e.contains("trains `encoder`, not `decoder`"), "{e}");
    assert!(e.contains("train.device") && e.contains("cuda:N"), "{e}");
}

#[test]
fn fused_kernels_match_the_composed_ops_forward_and_backward() {
    use pretext::train::models::cnn::{add_relu, group_norm, group_norm_relu, reference_group_norm};
    use pretext::train::nn::{attention_probs, conv3x3, gelu, linear, linear_dropout, reference, self_attention};
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 2.0, (3, 5, 17), &dev).unwrap();
    let w = Tensor::randn(1f32, 0.3, 17, &dev).unwrap();
    let b = Tensor::randn(0f32, 0.3, 17, &dev).unwrap();
    // Attention scores (batch 3, heads 2, 5 queries, 17 keys) and two masks as the models build
    // them: padding `(B, 1, 1, T)` and a causal one `(B, 1, T, T)`.
    let scores = Tensor::randn(0f32, 2.0, (3, 2, 5, 17), &dev).unwrap();
    let pad: Vec<f32> = (0..3 * 17).map(|i| if i % 17 > 12 + i / 17 { MASKED } else { 0.0 }).collect();
    let pad = Tensor::from_vec(pad, (3, 1, 1, 17), &dev).unwrap();
    let causal: Vec<f32> = (0..3 * 5 * 17).map(|i| if i % 17 > (i / 17) % 5 { MASKED } else { 0.0 }).collect();
    let causal = Tensor::from_vec(causal, (3, 1, 5, 17), &dev).unwrap();
    // Non-square images whose sizes stride 2 does not divide (candle's own conv backward, the
    // reference, mis-sizes the gradient when height and width differ in parity at stride 2).
    let images = Tensor::randn(0f32, 1.0, (2, 3, 7, 9), &dev).unwrap();
    let square = Tensor::randn(0f32, 1.0, (9, 3, 8, 8), &dev).unwrap();
    let kernel = Tensor::randn(0f32, 0.5, (4, 3, 3, 3), &dev).unwrap();
    // Linear layers over (3, 5, 17) inputs: PyTorch's (out, in) weight, and GPT-2's (in, out).
    let (w_out_in, w_in_out) =
        (Tensor::randn(0f32, 0.5, (6, 17), &dev).unwrap(), Tensor::randn(0f32, 0.5, (17, 6), &dev).unwrap());
    let bias6 = Tensor::randn(0f32, 0.5, 6, &dev).unwrap();
    let maps = Tensor::randn(0.5f32, 2.0, (2, 6, 3, 5), &dev).unwrap();
    let (gamma, beta) = (Tensor::randn(1f32, 0.3, 6, &dev).unwrap(), Tensor::randn(0f32, 0.3, 6, &dev).unwrap());
    // About half of `maps + residual` is negative, so the ReLUs cut both ways.
    let residual = Tensor::randn(-0.5f32, 2.0, (2, 6, 3, 5), &dev).unwrap();
    type Op<'a> = &'a dyn Fn(&[Tensor]) -> Tensor;
    let conv = |stride: usize, fused: bool| {
        move |v: &[Tensor]| {
            let f = if fused { conv3x3 } else { reference::conv3x3 };
            f(&v[0], &v[1], stride).unwrap()
        }
    };
    let probs = |bias: Option<&Tensor>, dropout: f64, fused: bool| {
        let (bias, fwd) = (bias.cloned(), Fwd::train(dropout, 7));
        move |v: &[Tensor]| {
            let f = if fused { attention_probs } else { reference::attention_probs };
            f(&v[0], bias.as_ref(), 0.25, &fwd).unwrap()
        }
    };
    // Self-attention on packed projections: batch 3, 6 positions, 2 heads of 4 (q, k, v side by
    // side), with a padding mask and a causal one over two packed documents (4 + 2 positions).
    let packed = Tensor::randn(0f32, 1.0, (3, 6, 24), &dev).unwrap();
    let pad6: Vec<f32> = (0..3 * 6).map(|i| if i % 6 > 3 + i / 6 { MASKED } else { 0.0 }).collect();
    let pad6 = Tensor::from_vec(pad6, (3, 1, 1, 6), &dev).unwrap();
    let docs: Vec<f32> = (0..3 * 36)
        .map(|i| {
            let (q, k) = ((i / 6) % 6, i % 6);
            if k > q || (q >= 4 && k < 4) {
                MASKED
            } else {
                0.0
            }
        })
        .collect();
    let docs = Tensor::from_vec(docs, (3, 1, 6, 6), &dev).unwrap();
    let attend = |bias: Option<&Tensor>, dropout: f64, fused: bool| {
        let (bias, fwd) = (bias.cloned(), Fwd::train(dropout, 11));
        move |v: &[Tensor]| {
            let f = if fused { self_attention } else { reference::self_attention };
            f(&v[0], 2, bias.as_ref(), 0.5, &fwd).unwrap()
        }
    };
    type Boxed = Box<dyn Fn(&[Tensor]) -> Tensor>;
    let cases: Vec<(&str, Vec<&Tensor>, Boxed, Boxed)> = vec![
        (
            "self-attention, no bias",
            vec![&packed],
            Box::new(attend(None, 0.0, true)),
            Box::new(attend(None, 0.0, false)),
        ),
        (
            "self-attention, padding",
            vec![&packed],
            Box::new(attend(Some(&pad6), 0.0, true)),
            Box::new(attend(Some(&pad6), 0.0, false)),
        ),
        (
            "self-attention, packed documents, dropout",
            vec![&packed],
            Box::new(attend(Some(&docs), 0.3, true)),
            Box::new(attend(Some(&docs), 0.3, false)),
        ),
        (
            "layer norm",
            vec![&x, &w, &b],
            Box::new(|v| layer_norm(&v[0], &v[1], &v[2], 1e-5).unwrap()),
            Box::new(|v| reference::layer_norm(&v[0], &v[1], &v[2], 1e-5).unwrap()),
        ),
        (
            "gelu",
            vec![&x],
            Box::new(|v| gelu(&v[0], true).unwrap()),
            Box::new(|v| reference::gelu(&v[0], true).unwrap()),
        ),
        (
            "tanh gelu",
            vec![&x],
            Box::new(|v| gelu(&v[0], false).unwrap()),
            Box::new(|v| reference::gelu(&v[0], false).unwrap()),
        ),
        ("attention, no bias", vec![&scores], Box::new(probs(None, 0.0, true)), Box::new(probs(None, 0.0, false))),
        (
            "attention, padding",
            vec![&scores],
            Box::new(probs(Some(&pad), 0.0, true)),
            Box::new(probs(Some(&pad), 0.0, false)),
        ),
        (
            "attention, causal, dropout",
            vec![&scores],
            Box::new(probs(Some(&causal), 0.3, true)),
            Box::new(probs(Some(&causal), 0.3, false)),
        ),
        (
            "linear",
            vec![&x, &w_out_in, &bias6],
            Box::new(|v| linear(&v[0], &v[1], Some(&v[2]), false).unwrap()),
            Box::new(|v| reference::linear(&v[0], &v[1], Some(&v[2]), false).unwrap()),
        ),
        (
            "linear, dropout",
            vec![&x, &w_in_out, &bias6],
            Box::new(|v| linear_dropout(&v[0], &v[1], Some(&v[2]), true, &Fwd::train(0.3, 5)).unwrap()),
            Box::new(|v| {
                Fwd::train(0.3, 5).dropout(&reference::linear(&v[0], &v[1], Some(&v[2]), true).unwrap()).unwrap()
            }),
        ),
        (
            "linear, (in, out) weight, no bias",
            vec![&x, &w_in_out],
            Box::new(|v| linear(&v[0], &v[1], None, true).unwrap()),
            Box::new(|v| reference::linear(&v[0], &v[1], None, true).unwrap()),
        ),
        (
            "group norm",
            vec![&maps, &gamma, &beta],
            Box::new(|v| group_norm(&v[0], &v[1], &v[2], 3).unwrap()),
            Box::new(|v| reference_group_norm(&v[0], &v[1], &v[2], 3).unwrap()),
        ),
        (
            "group norm, relu",
            vec![&maps, &gamma, &beta],
            Box::new(|v| group_norm_relu(&v[0], &v[1], &v[2], 3).unwrap()),
            Box::new(|v| reference_group_norm(&v[0], &v[1], &v[2], 3).unwrap().relu().unwrap()),
        ),
        (
            "add, relu",
            vec![&maps, &residual],
            Box::new(|v| add_relu(&v[0], &v[1]).unwrap()),
            Box::new(|v| (&v[0] + &v[1]).unwrap().relu().unwrap()),
        ),
        ("conv, stride 1", vec![&images, &kernel], Box::new(conv(1, true)), Box::new(conv(1, false))),
        ("conv, stride 2", vec![&images, &kernel], Box::new(conv(2, true)), Box::new(conv(2, false))),
        // More images than one block of the weight gradient's partial sums.
        ("conv, 9 even images", vec![&square, &kernel], Box::new(conv(2, true)), Box::new(conv(2, false))),
    ];
    let diff = |a: &Tensor, b: &Tensor| a.sub(b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    for (name, inputs, fused, composed) in &cases {
        let run = |f: Op| {
            let vars: Vec<candle_core::Var> =
                inputs.iter().map(|t| candle_core::Var::from_tensor(t).unwrap()).collect();
            let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
            let y = f(&tensors);
            // A weighted sum, so that the outputs' gradients differ (the same weights both times).
            let c = Tensor::arange(0f32, y.elem_count() as f32, &dev).unwrap();
            let c = ((c * 0.37).unwrap().sin().unwrap() + 1.2).unwrap().reshape(y.shape()).unwrap();
            let store = y.mul(&c).unwrap().sum_all().unwrap().backward().unwrap();
            let grads: Vec<Tensor> = tensors.iter().map(|t| store.get(t).unwrap().clone()).collect();
            (y, grads)
        };
        // Equal forward values with dropout: the kernel applies the masks `Fwd::dropout` draws.
        let (y1, g1) = run(fused.as_ref());
        let (y2, g2) = run(composed.as_ref());
        assert!(diff(&y1, &y2) < 1e-5, "{name}: forward differs by {}", diff(&y1, &y2));
        for (i, (a, b)) in g1.iter().zip(&g2).enumerate() {
            let scale = b.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap().max(1.0);
            assert!(diff(a, b) < 1e-4 * scale, "{name}: the gradient of input {i} differs by {}", diff(a, b));
        }
    }
}

#[test]
fn the_fused_vocabulary_loss_matches_the_composed_ops_forward_and_backward() {
    use pretext::train::vocab_loss::reference;
    let dev = Device::Cpu;
    // 600 rows: a full chunk of 512 and a partial one.
    let (n, h, vocab) = (600, 24, 1000);
    let rows = Tensor::randn(0f32, 1.0, (n, h), &dev).unwrap();
    let weight = Tensor::randn(0f32, 0.5, (vocab, h), &dev).unwrap();
    let bias = Tensor::randn(0f32, 0.5, vocab, &dev).unwrap();
    let targets: Vec<u32> = (0..n as u32).map(|i| (i * 7919 + 13) % vocab as u32).collect();
    let targets = Tensor::new(targets.as_slice(), &dev).unwrap();
    let diff = |a: &Tensor, b: &Tensor| a.sub(b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    for with_bias in [false, true] {
        let vars: Vec<candle_core::Var> =
            [&rows, &weight, &bias].iter().map(|t| candle_core::Var::from_tensor(t).unwrap()).collect();
        let run = |fused: bool| {
            let (r, w, b) = (vars[0].as_tensor(), vars[1].as_tensor(), vars[2].as_tensor());
            let b = with_bias.then_some(b);
            // Scaled, so the incoming gradient is not 1.
            let loss = if fused {
                vocab_cross_entropy(r, w, b, &targets, true).unwrap()
            } else {
                reference::vocab_cross_entropy(r, w, b, &targets).unwrap()
            };
            let store = (&loss * 3.0).unwrap().backward().unwrap();
            let grads: Vec<Option<Tensor>> = vars.iter().map(|v| store.get(v.as_tensor()).cloned()).collect();
            (loss.to_scalar::<f32>().unwrap(), grads)
        };
        let ((l1, g1), (l2, g2)) = (run(true), run(false));
        assert!((l1 - l2).abs() < 1e-5 * l2.abs(), "bias {with_bias}: loss {l1} against {l2}");
        for (i, (a, b)) in g1.iter().zip(&g2).enumerate() {
            match (a, b) {
                (Some(a), Some(b)) => {
                    let scale = b.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                    assert!(diff(a, b) < 1e-5 * scale, "bias {with_bias}: gradient {i} differs by {}", diff(a, b));
                }
                (None, None) => assert!(i == 2 && !with_bias),
                _ => panic!("bias {with_bias}: gradient {i} is present in one version only"),
            }
        }
        // Without gradients (evaluation) the loss is the same, and a backward pass is refused.
        let b = with_bias.then_some(&bias);
        let eval = vocab_cross_entropy(&rows, &weight, b, &targets, false).unwrap();
        assert_eq!(eval.to_scalar::<f32>().unwrap(), l1);
        let v = candle_core::Var::from_tensor(&rows).unwrap();
        let e = vocab_cross_entropy(v.as_tensor(), &weight, b, &targets, false).unwrap().backward();
        assert!(e.is_err_and(|e| e.to_string().contains("no gradients were computed")));
    }
    // No row: a loss of 0.
    let none = Tensor::zeros(0, DType::U32, &dev).unwrap();
    let empty = rows.narrow(0, 0, 0).unwrap();
    assert_eq!(vocab_cross_entropy(&empty, &weight, None, &none, true).unwrap().to_scalar::<f32>().unwrap(), 0.0);
}

#[test]
fn trains_from_an_export_without_regenerating_it() {
    let dir = tempdir();
    let file = setup(dir.path(), "causal", "  steps: 4\n  log_every: 1\n");
    let o = pretext(&["export", "p.yaml", "--quiet", "--out", "ex"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let yaml = std::fs::read_to_string(&file)
        .unwrap()
        .replace("source: { path: data, key_column: id }", "source: { path: ex, format: pretext }");
    std::fs::write(dir.path().join("q.yaml"), &yaml).unwrap();
    let o = pretext(&["train", "q.yaml", "--quiet", "--run-dir", "run"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("trained steps 1..4 of 4"), "{}", stderr(&o));
    // The examples read back are the exported ones, in order.
    let (rt, plan) = plan(&dir.path().join("q.yaml"), &[]);
    let got = first_batch(&rt, &plan);
    let exported = read_export(&dir.path().join("ex"));
    assert_eq!(got.column(1), &exported[0].slice(0, got.num_rows()).column(1).clone());
    // An export of another task shape is refused, naming the column.
    std::fs::write(dir.path().join("r.yaml"), yaml.replace("seq_len: 48", "seq_len: 32")).unwrap();
    let o = pretext(&["train", "r.yaml", "--quiet", "--run-dir", "run2"], dir.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("does not hold `task.causal` examples") && stderr(&o).contains("input_ids"),
        "{}",
        stderr(&o)
    );
}

/// Every shipped pipeline trains with `--set train.steps=5` and nothing else: the defaults (warmup
/// as a share of `steps`, eval and checkpoint cadence) and what the pipelines write fit any run
/// length. The pipelines with no `train:` section (the default model on long byte sequences) also
/// get a small batch, for the test's time only: the batch plays no part in the schedule's rules.
#[test]
fn every_example_pipeline_trains_for_five_steps() {
    let dir = tempdir();
    let mut trained = 0;
    for entry in std::fs::read_dir(repo().join("pipelines")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let run = dir.path().join(&name);
        let mut args = vec!["train", path.to_str().unwrap(), "--quiet", "--run-dir", run.to_str().unwrap()];
        args.extend(["--set", "train.steps=5"]);
        if !std::fs::read_to_string(&path).unwrap().contains("\ntrain:") {
            args.extend(["--set", "stream.batch_size=4"]);
        }
        let o = pretext(&args, dir.path());
        assert!(o.status.success(), "{name}: {}", stderr(&o));
        assert!(stderr(&o).contains("trained steps 1..5 of 5"), "{name}: {}", stderr(&o));
        assert!(run.join("checkpoint-0000005/model.safetensors").is_file(), "{name}");
        trained += 1;
    }
    assert!(trained >= 12, "only {trained} example pipelines");
}

/// Starts `pretext train p.yaml --quiet ARGS` in `dir`, to be killed or signalled.
fn spawn_train(dir: &Path, args: &[&str], stderr: std::process::Stdio) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_pretext"))
        .args(["train", "p.yaml", "--quiet"])
        .args(args)
        .current_dir(dir)
        .env_remove("RANK")
        .env_remove("WORLD_SIZE")
        .stderr(stderr)
        .spawn()
        .unwrap()
}

#[test]
fn a_killed_run_resumes_to_the_same_weights() {
    let dir = tempdir();
    setup(dir.path(), "causal", "  steps: 60\n  log_every: 1\n  checkpoint: { every_steps: 3, keep: 2 }\n");
    let o = pretext(&["train", "p.yaml", "--quiet", "--run-dir", "full"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));

    let killed = dir.path().join("killed");
    let mut child = spawn_train(dir.path(), &["--run-dir", "killed"], std::process::Stdio::null());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while !killed.join("checkpoint-0000006").exists() {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before it could be killed");
        assert!(std::time::Instant::now() < deadline, "no checkpoint appeared");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL: no clean-up runs
    child.wait().unwrap();
    assert!(!killed.join("checkpoint-0000060").exists(), "the run finished before the kill");

    let o = pretext(&["train", "p.yaml", "--quiet", "--run-dir", "killed", "--resume"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    for f in ["model.safetensors", "optimizer.safetensors"] {
        let a = std::fs::read(dir.path().join("full/checkpoint-0000060").join(f)).unwrap();
        let b = std::fs::read(killed.join("checkpoint-0000060").join(f)).unwrap();
        assert!(a == b, "{f} differs after the kill and resume");
    }
    assert_eq!(losses(&dir.path().join("full")), losses(&killed));
    // Only the newest `keep` checkpoints remain, and no temporary directory.
    let names: Vec<String> =
        std::fs::read_dir(&killed).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
    assert_eq!(names.iter().filter(|n| n.starts_with("checkpoint-")).count(), 2, "{names:?}");
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
}

#[test]
fn ids_outside_the_vocabulary_are_refused() {
    let err = to_inputs(TaskKind::Causal, &packed_row(&[20, 21, 22, 23, 24, 95, 2]), 0, 50, &Device::Cpu, DType::F32)
        .err()
        .expect("an id above the vocabulary");
    assert!(err.to_string().contains("holds 95; only ids below 50"), "{err}");
}

#[test]
fn sigint_and_sigterm_stop_training_with_a_checkpoint_that_resumes_exactly() {
    let dir = tempdir();
    setup(dir.path(), "causal", "  steps: 40\n  log_every: 1\n  checkpoint: { every_steps: 25, keep: 2 }\n");
    let o = pretext(&["train", "p.yaml", "--quiet", "--run-dir", "full"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    for (signal, code, name) in [(libc::SIGINT, 130, "SIGINT"), (libc::SIGTERM, 143, "SIGTERM")] {
        let run = dir.path().join(name);
        let child = spawn_train(dir.path(), &["--run-dir", name], std::process::Stdio::piped());
        // Once a few steps are logged.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
        let logged =
            |p: &Path| std::fs::read_to_string(p.join("metrics.jsonl")).map(|s| s.lines().count()).unwrap_or(0);
        while logged(&run) < 3 {
            assert!(std::time::Instant::now() < deadline, "no steps were logged");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        // SAFETY: sends a signal to a child process we started and have not reaped.
        assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "{err}");
        assert!(err.contains(&format!("stopped by {name}: training stopped after step")), "{err}");
        let saved = pretext::train::checkpoint::list(&run).unwrap();
        let (step, _) = saved.last().expect("a checkpoint of the last step");
        assert!((3..40).contains(step), "stopped at step {step}");
        // A checkpoint torn by a kill while it was written is ignored, with a message.
        std::fs::create_dir_all(run.join(".checkpoint-0000039.tmp")).unwrap();
        std::fs::write(run.join(".checkpoint-0000039.tmp/model.safetensors"), b"torn").unwrap();
        let o = pretext(&["train", "p.yaml", "--quiet", "--run-dir", name, "--resume"], dir.path());
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stderr(&o).contains("ignoring") && stderr(&o).contains("incomplete checkpoint"), "{}", stderr(&o));
        for f in ["model.safetensors", "optimizer.safetensors"] {
            let a = std::fs::read(dir.path().join("full/checkpoint-0000040").join(f)).unwrap();
            let b = std::fs::read(run.join("checkpoint-0000040").join(f)).unwrap();
            assert!(a == b, "{name}: {f} differs after the stop and resume");
        }
        assert_eq!(losses(&dir.path().join("full")), losses(&run), "{name}");
    }
}

#[test]
fn a_run_killed_at_random_moments_resumes_exactly() {
    // A checkpoint every step: many of the kills land while one is being written.
    let dir = tempdir();
    setup(dir.path(), "causal", "  steps: 30\n  log_every: 1\n  checkpoint: { every_steps: 1, keep: 2 }\n");
    let o = pretext(&["train", "p.yaml", "--quiet", "--run-dir", "full"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let run = dir.path().join("killed");
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let (mut kills, mut torn) = (0, 0);
    loop {
        let mut args = vec!["--run-dir", "killed"];
        if run.exists() {
            args.push("--resume");
        }
        let mut child = spawn_train(dir.path(), &args, std::process::Stdio::null());
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        // Killed after 1 to 3 more logged steps, then 0 to 15 ms on: inside a step, or inside
        // the checkpoint written after it.
        let logged =
            |p: &Path| std::fs::read_to_string(p.join("metrics.jsonl")).map(|s| s.lines().count()).unwrap_or(0);
        let target = logged(&run) + 1 + (state % 3) as usize;
        let delay = std::time::Duration::from_millis((state >> 8) % 16);
        let finished = loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success());
                break true;
            }
            if logged(&run) >= target || kills >= 8 {
                std::thread::sleep(delay);
                break child.try_wait().unwrap().is_some();
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        if finished {
            break;
        }
        if kills >= 8 {
            // Enough kills: let this run finish.
            assert!(child.wait().unwrap().success());
            break;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        torn += pretext::train::checkpoint::torn(&run).unwrap().len();
    }
    eprintln!("{kills} kills, {torn} of them while a checkpoint was written");
    assert!(kills >= 5, "only {kills} kills");
    for f in ["model.safetensors", "optimizer.safetensors"] {
        let a = std::fs::read(dir.path().join("full/checkpoint-0000030").join(f)).unwrap();
        let b = std::fs::read(run.join("checkpoint-0000030").join(f)).unwrap();
        assert!(a == b, "{f} differs after {kills} kills");
    }
    assert_eq!(losses(&dir.path().join("full")), losses(&run));
}

/// Warmup the user wrote that does not fit is an error naming the key they wrote; the default
/// (a share of `steps`) never is.
#[test]
fn warmup_that_does_not_fit_names_the_key_written() {
    let dir = tempdir();
    setup(dir.path(), "causal", "  steps: 60\n");
    let check = |sets: &[&str]| {
        let mut args = vec!["validate", "p.yaml"];
        for s in sets {
            args.extend(["--set", s]);
        }
        pretext(&args, dir.path())
    };
    assert!(check(&["train.schedule={}"]).status.success());
    let o = check(&["train.schedule={warmup_steps: 100}"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("train.schedule.warmup_steps: warmup_steps 100 is more than steps 60"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("warmup_ratio"), "{}", stderr(&o));
    let o = check(&["train.schedule={warmup_steps: 5, warmup_ratio: 0.1}"]);
    assert!(stderr(&o).contains("`warmup_steps` and `warmup_ratio` are both given"), "{}", stderr(&o));
    let o = check(&["train.schedule={warmup_ratio: 1.5}"]);
    assert!(stderr(&o).contains("train.schedule.warmup_ratio"), "{}", stderr(&o));
}
