//! Training the image and table tasks: every parameter gets a gradient, tiny SimCLR / MAE /
//! denoising / SCARF / VIME runs lower their loss, the collapse monitor tells a collapsed encoder
//! from a random one, and `pretext probe` reports a held-out accuracy.

mod common;

use std::path::Path;
use std::sync::Arc;

use arrow::array::{BinaryArray, Float64Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use candle_core::{Device, Tensor};
use common::*;
use futures::StreamExt;
use parquet::arrow::ArrowWriter;
use pretext::plan::{BuildOptions, Plan};
use pretext::train::nn::Fwd;
use pretext::train::{settings, Trainer};

/// `n` 16×16 PNG images of four classes: a bright square in one of the four quadrants.
fn write_images(path: &Path, n: usize) {
    let images: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let class = i % 4;
            let img = image::RgbImage::from_fn(16, 16, |x, y| {
                let q = (x >= 8) as usize + 2 * (y >= 8) as usize;
                let v = ((x * 7 + y * 13 + i as u32 * 3) % 40) as u8;
                image::Rgb(if q == class { [220, 200 - v, 60 + v] } else { [v, v / 2, 30] })
            });
            let mut out = std::io::Cursor::new(Vec::new());
            image::DynamicImage::ImageRgb8(img).write_to(&mut out, image::ImageOutputFormat::Png).unwrap();
            out.into_inner()
        })
        .collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("image", DataType::Binary, false),
        Field::new("label", DataType::Int64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from((0..n as i64).collect::<Vec<_>>())),
            Arc::new(BinaryArray::from(images.iter().map(|b| b.as_slice()).collect::<Vec<_>>())),
            Arc::new(Int64Array::from((0..n as i64).map(|i| i % 4).collect::<Vec<_>>())),
        ],
    )
    .unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut w = ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// `n` rows of 6 features in two clusters (the label), with nulls in `x2`.
fn write_table(path: &Path, n: usize) {
    let mut fields = vec![Field::new("id", DataType::Int64, false)];
    let mut cols: Vec<Arc<dyn arrow::array::Array>> =
        vec![Arc::new(Int64Array::from((0..n as i64).collect::<Vec<_>>()))];
    for j in 0..6 {
        fields.push(Field::new(format!("x{j}"), DataType::Float64, true));
        let v: Vec<Option<f64>> = (0..n)
            .map(|i| {
                let centre = if i % 2 == 0 { 1.0 } else { -1.0 } * (j as f64 + 1.0);
                let noise = ((i * 7919 + j * 104729) % 1000) as f64 / 1000.0 - 0.5;
                if j == 2 && i % 9 == 0 {
                    None
                } else {
                    Some(centre + noise)
                }
            })
            .collect();
        cols.push(Arc::new(Float64Array::from(v)));
    }
    fields.push(Field::new("label", DataType::Int64, false));
    cols.push(Arc::new(Int64Array::from((0..n as i64).map(|i| i % 2).collect::<Vec<_>>())));
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), cols).unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut w = ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

const TASKS: &[(&str, &str, &str)] = &[
    (
        "simclr",
        "contrastive_image: { image: { size: 16 }, augment: { blur: { p: 0.0 } } }",
        "vit: { patch_size: 4, layers: 1, hidden: 32, heads: 2, projection: 16 }",
    ),
    (
        "byol_views",
        "contrastive_image: { image: { size: 16, channels: 1 }, preset: byol, views: 3 }",
        "vit: { patch_size: 8, layers: 1, hidden: 16, heads: 2, projection: 8 }",
    ),
    (
        "cnn",
        "contrastive_image: { image: { size: 16 }, augment: { blur: { p: 0.0 } } }",
        "cnn: { widths: [8, 16], projection: 16 }",
    ),
    (
        "mae",
        "mae: { image: { size: 16 }, patch_size: 4 }",
        "vit: { layers: 1, hidden: 32, heads: 2, decoder_layers: 1, decoder_hidden: 16 }",
    ),
    (
        "denoise",
        "denoise_image: { image: { size: 16 }, gaussian: 0.2 }",
        "vit: { patch_size: 4, layers: 1, hidden: 32, heads: 2 }",
    ),
    (
        "scarf",
        "scarf: { columns: [x0, x1, x2, x3, x4, x5], standardize: true }",
        "mlp: { layers: 2, hidden: 32, projection: 16 }",
    ),
    ("vime", "vime: { columns: [x0, x1, x2, x3, x4, x5], standardize: true }", "mlp: { layers: 2, hidden: 32 }"),
];

fn setup(dir: &Path, name: &str, extra: &str) -> std::path::PathBuf {
    let (_, task, model) = TASKS.iter().find(|(n, _, _)| *n == name).unwrap();
    let source = if task.starts_with("scarf") || task.starts_with("vime") {
        write_table(&dir.join("t.parquet"), 400);
        "t.parquet"
    } else {
        write_images(&dir.join("img.parquet"), 96);
        "img.parquet"
    };
    pipeline(
        dir,
        "p.yaml",
        &format!(
            "name: {name}\nseed: 3\nsource: {{ path: {source}, key_column: id, label_column: label }}\ntask: {{ {task} }}\n\
             stream: {{ batch_size: 32 }}\n\
             train:\n  model: {{ {model} }}\n  optimizer: {{ adamw: {{ lr: 3.0e-3, weight_decay: 0.0 }} }}\n  schedule: {{ warmup_steps: 1, decay: constant }}\n  device: cpu\n{extra}"
        ),
    )
}

fn plan(file: &Path) -> (tokio::runtime::Runtime, Arc<Plan>) {
    let rt = pretext::cli::runtime().unwrap();
    let p = pretext::load_pipeline(file, &[]).unwrap();
    let plan = rt.block_on(Plan::build(p, &BuildOptions::default())).unwrap();
    (rt, plan)
}

fn batches(rt: &tokio::runtime::Runtime, plan: &Arc<Plan>, n: usize) -> Vec<RecordBatch> {
    rt.block_on(async { plan.stream().take(n).map(|b| b.unwrap()).collect::<Vec<_>>().await })
}

#[test]
fn every_parameter_receives_a_gradient() {
    for (name, _, _) in TASKS {
        let dir = tempdir();
        let (rt, plan) = plan(&setup(dir.path(), name, ""));
        let trainer = Trainer::new(&plan, &settings(&plan), &Device::Cpu).unwrap();
        let batch = trainer.inputs(&batches(&rt, &plan, 1)[0]).unwrap();
        let loss = trainer.model.loss(&batch.inputs, &Fwd::train(0.0, 1), trainer.objective()).unwrap();
        let grads = loss.backward().unwrap();
        let mut checked = 0;
        for (pname, var, _) in trainer.model.params.vars() {
            if trainer.model.unused_prefixes().iter().any(|p| pname.starts_with(p)) {
                continue;
            }
            let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{name}: `{pname}` received no gradient"));
            let size = g.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(size > 0.0 && size.is_finite(), "{name}: `{pname}` has gradient norm {size}");
            checked += 1;
        }
        assert!(checked >= 6, "{name}: only {checked} parameters");
    }
}

#[test]
fn tiny_runs_lower_their_loss() {
    for (name, _, _) in TASKS {
        let dir = tempdir();
        let (rt, plan) = plan(&setup(dir.path(), name, "  steps: 30\n"));
        let mut trainer = Trainer::new(&plan, &settings(&plan), &Device::Cpu).unwrap();
        let fixed: Vec<_> = batches(&rt, &plan, 2).iter().map(|b| trainer.inputs(b).unwrap()).collect();
        let before = trainer.eval_loss(&fixed).unwrap().unwrap();
        for step in 0..30 {
            trainer.train_step(std::slice::from_ref(&fixed[step % 2])).unwrap();
        }
        let after = trainer.eval_loss(&fixed).unwrap().unwrap();
        assert!(after < before * 0.95, "{name}: loss {before} → {after}");
    }
}

#[test]
fn the_collapse_monitor_flags_a_constant_encoder_and_not_a_random_one() {
    for name in ["simclr", "mae", "scarf"] {
        let dir = tempdir();
        let (rt, plan) = plan(&setup(dir.path(), name, ""));
        let trainer = Trainer::new(&plan, &settings(&plan), &Device::Cpu).unwrap();
        let fixed: Vec<_> = batches(&rt, &plan, 2).iter().map(|b| trainer.inputs(b).unwrap()).collect();
        let healthy = trainer.collapse(&fixed).unwrap().unwrap();
        assert!(
            healthy.embedding_std > 0.1 && healthy.effective_rank > 1.5,
            "{name}: random encoder looks collapsed: {healthy:?}"
        );
        // Collapse it: the last layer before the embedding outputs its bias alone.
        let last = match name {
            "simclr" | "scarf" => "projection.2.weight",
            _ => "vit.layernorm.weight",
        };
        for (pname, var, _) in trainer.model.params.vars() {
            if pname == last {
                var.set(&var.as_tensor().zeros_like().unwrap()).unwrap();
            }
        }
        if name == "mae" {
            // A zero LayerNorm scale leaves the LayerNorm bias: make it nonzero so the output is a
            // constant vector rather than zeros.
            for (pname, var, _) in trainer.model.params.vars() {
                if pname == "vit.layernorm.bias" {
                    var.set(&Tensor::ones(var.dims(), var.dtype(), &Device::Cpu).unwrap()).unwrap();
                }
            }
        }
        let collapsed = trainer.collapse(&fixed).unwrap().unwrap();
        assert!(collapsed.embedding_std < 0.01, "{name}: {collapsed:?}");
        assert!(collapsed.effective_rank < 1.01, "{name}: {collapsed:?}");
    }
}

#[test]
fn train_then_probe_from_the_command_line() {
    let dir = tempdir();
    let file = setup(dir.path(), "simclr", "  steps: 4\n  log_every: 2\n  eval: { fraction: 0.25, every_steps: 2 }\n");
    let o = pretext(&["train", file.to_str().unwrap(), "--quiet", "--run-dir", "run"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let metrics = std::fs::read_to_string(dir.path().join("run/metrics.jsonl")).unwrap();
    assert!(metrics.contains("\"embedding_std\"") && metrics.contains("\"effective_rank\""), "{metrics}");
    assert!(std::fs::read_to_string(dir.path().join("run/metrics.csv")).unwrap().starts_with("step,"));
    let o = pretext(&["probe", "run"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("held-out accuracy"), "{}", stdout(&o));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("run/probe.json")).unwrap()).unwrap();
    assert_eq!(report["classes"], 4);
    assert_eq!(report["step"], 4);
    let acc = report["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc));
    assert_eq!(report["train_rows"].as_u64().unwrap() + report["test_rows"].as_u64().unwrap(), 96);
    // A run without labels is refused with the flag to use.
    let o = pretext(&["probe", "nowhere"], dir.path());
    assert!(!o.status.success());
    assert!(stderr(&o).contains("pipeline.json"), "{}", stderr(&o));
}

#[test]
fn byol_trains_the_online_network_and_moves_the_target_by_ema() {
    let dir = tempdir();
    let file = setup(dir.path(), "byol_views", "  byol: { ema: 0.9, predictor_hidden: 16 }\n  steps: 20\n");
    let cnn = tempdir();
    let (_, cnn_plan) = plan(&setup(cnn.path(), "cnn", "  byol: {}\n"));
    let t = Trainer::new(&cnn_plan, &settings(&cnn_plan), &Device::Cpu).unwrap();
    assert!(t.model.params.vars().any(|(n, _, _)| n == "target.cnn.stem.conv.weight"), "BYOL works with the CNN too");
    let (rt, plan) = plan(&file);
    let mut trainer = Trainer::new(&plan, &settings(&plan), &Device::Cpu).unwrap();
    let names: Vec<String> = trainer.model.params.vars().map(|(n, _, _)| n.to_string()).collect();
    assert!(names.iter().any(|n| n.starts_with("predictor.")), "{names:?}");
    assert!(names.contains(&"target.vit.layernorm.weight".to_string()), "{names:?}");
    let value = |t: &Trainer, name: &str| -> Vec<f32> {
        let (_, v, _) = t.model.params.vars().find(|(n, _, _)| *n == name).unwrap();
        v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap()
    };
    // The target starts as a copy of the online network.
    let w = "vit.encoder.layer.0.attention.attention.query.weight";
    assert_eq!(value(&trainer, w), value(&trainer, &format!("target.{w}")));
    let fixed: Vec<_> = batches(&rt, &plan, 2).iter().map(|b| trainer.inputs(b).unwrap()).collect();
    // Gradients reach every online parameter and no target one.
    let loss = trainer.model.loss(&fixed[0].inputs, &Fwd::train(0.0, 1), trainer.objective()).unwrap();
    let grads = loss.backward().unwrap();
    for (name, var, _) in trainer.model.params.vars() {
        let g = grads.get(var.as_tensor());
        if name.starts_with("target.") {
            assert!(g.is_none(), "`{name}` must not be trained");
        } else {
            let size = g.unwrap_or_else(|| panic!("`{name}` received no gradient")).abs().unwrap().sum_all().unwrap();
            assert!(size.to_scalar::<f32>().unwrap() > 0.0, "`{name}`");
        }
    }
    let before = trainer.eval_loss(&fixed).unwrap().unwrap();
    let (online0, target0) = (value(&trainer, w), value(&trainer, &format!("target.{w}")));
    trainer.train_step(std::slice::from_ref(&fixed[0])).unwrap();
    // One step: target = τ·target + (1 − τ)·online, τ = 1 − 0.1·(cos(π/20) + 1)/2.
    let tau = 1.0 - 0.1 * ((std::f64::consts::PI / 20.0).cos() + 1.0) / 2.0;
    let (online1, target1) = (value(&trainer, w), value(&trainer, &format!("target.{w}")));
    assert_ne!(online0, online1);
    for i in 0..online1.len() {
        let want = tau * target0[i] as f64 + (1.0 - tau) * online1[i] as f64;
        assert!((target1[i] as f64 - want).abs() < 1e-6, "{} vs {want}", target1[i]);
    }
    for step in 1..20 {
        trainer.train_step(std::slice::from_ref(&fixed[step % 2])).unwrap();
    }
    let after = trainer.eval_loss(&fixed).unwrap().unwrap();
    assert!(after < before, "BYOL loss {before} → {after}");
}

/// The CNN's layers (a stride-2 convolution and group norm, as the CNN composes them) against
/// finite differences, in f64 so the differences are exact enough to compare.
#[test]
fn cnn_layer_gradients_match_finite_differences() {
    use candle_core::{DType, Var};
    use pretext::train::models::cnn::group_norm;
    let dev = Device::Cpu;
    let x = Tensor::randn(0f64, 1.0, (2, 3, 9, 9), &dev).unwrap();
    let w = Var::from_tensor(&Tensor::randn(0f64, 0.3, (4, 3, 3, 3), &dev).unwrap()).unwrap();
    let gamma = Var::from_tensor(&Tensor::randn(1f64, 0.2, 4, &dev).unwrap()).unwrap();
    let beta = Var::from_tensor(&Tensor::randn(0f64, 0.2, 4, &dev).unwrap()).unwrap();
    let r = Tensor::randn(0f64, 1.0, (2, 4, 5, 5), &dev).unwrap();
    let f = || -> f64 {
        let y = x.conv2d(w.as_tensor(), 1, 2, 1, 1).unwrap();
        let y = group_norm(&y, gamma.as_tensor(), beta.as_tensor(), 2).unwrap();
        (y.relu().unwrap() * &r).unwrap().sum_all().unwrap().to_scalar::<f64>().unwrap()
    };
    let y = x.conv2d(w.as_tensor(), 1, 2, 1, 1).unwrap();
    assert_eq!(y.dims(), &[2, 4, 5, 5]);
    let loss = (group_norm(&y, gamma.as_tensor(), beta.as_tensor(), 2).unwrap().relu().unwrap() * &r)
        .unwrap()
        .sum_all()
        .unwrap();
    let grads = loss.backward().unwrap();
    for (name, var) in [("conv", &w), ("gamma", &gamma), ("beta", &beta)] {
        let g = grads.get(var.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let orig = var.as_tensor().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let dims = var.dims().to_vec();
        for i in 0..orig.len() {
            let at = |delta: f64| {
                let mut v = orig.clone();
                v[i] += delta;
                var.set(&Tensor::from_vec(v, dims.as_slice(), &dev).unwrap()).unwrap();
                f()
            };
            let numeric = (at(1e-6) - at(-1e-6)) / 2e-6;
            var.set(&Tensor::from_vec(orig.clone(), dims.as_slice(), &dev).unwrap().to_dtype(DType::F64).unwrap())
                .unwrap();
            assert!(
                (numeric - g[i]).abs() < 1e-5 * (1.0 + g[i].abs()),
                "{name}[{i}]: analytic {}, numeric {numeric}",
                g[i]
            );
        }
    }
}
