//! pyarrow and HuggingFace `datasets` load an export with the right types and shapes.
//! `.ci/run` installs both and sets `PRETEXT_REQUIRE_INTEROP=1`, so there this test cannot skip.

mod common;

use std::process::Command;

use common::*;

/// Whether `python` imports `modules`; where CI sets `require` (it installs them), their
/// absence fails the test instead of skipping it.
fn importable(python: &str, modules: &str, require: &str) -> bool {
    let ready = Command::new(python)
        .args(["-c", &format!("import {modules}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ready {
        assert!(
            std::env::var_os(require).is_none(),
            "{modules} are required here ({require}) but {python} cannot import them"
        );
        eprintln!("skipped: {python} cannot import {modules}");
    }
    ready
}

/// Whether python3 has pyarrow and datasets (`PRETEXT_REQUIRE_INTEROP` in CI).
fn python_ready() -> bool {
    importable("python3", "pyarrow, datasets, numpy", "PRETEXT_REQUIRE_INTEROP")
}

/// Runs python3 offline with `args`, its HuggingFace cache in `dir`.
fn python(dir: &std::path::Path, args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new("python3")
        .args(args)
        .env("HF_DATASETS_OFFLINE", "1")
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", dir.join("hf"))
        .output()
        .unwrap()
}

#[test]
fn python_loads_the_export() {
    if !python_ready() {
        return;
    }
    let t = tempdir();
    write_parquet(&t.path().join("data/a.parquet"), &documents(400, 8));
    let p = pipeline(
        t.path(),
        "p.yaml",
        "name: i\nsource: { path: data }\ntask: { mlm: { seq_len: 48 } }\nexport: { rows_per_file: 500 }\n",
    );
    let o = pretext(&["export", p.to_str().unwrap(), "--out", "out", "--quiet"], t.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let script = repo().join("tests/interop/check_export.py");
    let out = t.path().join("out");
    let o = python(t.path(), &[script.as_os_str(), out.as_os_str(), "48".as_ref()]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("ok: pyarrow and datasets read"), "{}", stdout(&o));
}

/// An image export (MAE: float pixels, bool masks, int32 ids) loads in `datasets` with its
/// fixed-length features and reshapes to `(channels, size, size)` images.
#[test]
fn python_loads_an_image_export() {
    if !python_ready() {
        return;
    }
    use std::sync::Arc;
    let t = tempdir();
    let (n, s) = (12usize, 16usize);
    let item = Arc::new(arrow::datatypes::Field::new("item", arrow::datatypes::DataType::UInt8, false));
    let values: Vec<u8> = (0..n * 3 * s * s).map(|i| (i * 31 % 251) as u8).collect();
    let pixels = arrow::array::FixedSizeListArray::new(
        item.clone(),
        (3 * s * s) as i32,
        Arc::new(arrow::array::UInt8Array::from(values)),
        None,
    );
    let schema = Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("id", arrow::datatypes::DataType::Int64, false),
        arrow::datatypes::Field::new(
            "pixels",
            arrow::datatypes::DataType::FixedSizeList(item, (3 * s * s) as i32),
            false,
        ),
    ]));
    let batch = arrow::array::RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(arrow::array::Int64Array::from((0..n as i64).collect::<Vec<_>>())), Arc::new(pixels)],
    )
    .unwrap();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(t.path().join("px.parquet")).unwrap(), schema, None)
            .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let p = pipeline(
        t.path(),
        "p.yaml",
        "name: i\nsource: { path: px.parquet, key_column: id, image_column: pixels, image_shape: [3, 16, 16] }\ntask: { mae: { image: { size: 16 }, patch_size: 4 } }\n",
    );
    let o = pretext(&["export", p.to_str().unwrap(), "--out", "out", "--quiet"], t.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let script = r#"
import glob, sys
import numpy as np
from datasets import Sequence, Value, load_dataset
files = sorted(glob.glob(sys.argv[1] + "/part-*.parquet"))
ds = load_dataset("parquet", data_files=files, split="train")
f = ds.features
assert f["pixel_values"].feature == Value("float32") and f["pixel_values"].length == 768, f
assert f["mask"].feature == Value("bool") and f["mask"].length == 16, f
assert f["ids_restore"].feature == Value("int32") and f["ids_restore"].length == 16, f
b = ds.with_format("numpy")[:4]
imgs = b["pixel_values"].reshape(-1, 3, 16, 16)
assert imgs.shape == (4, 3, 16, 16) and imgs.dtype == np.float32
assert (b["mask"].sum(axis=1) == 12).all()
print("ok: image export", len(ds))
"#;
    let out = t.path().join("out");
    let o = python(t.path(), &["-c".as_ref(), script.as_ref(), out.as_os_str()]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("ok: image export 12"), "{}", stdout(&o));
}

/// The Python that has torch and transformers: `PRETEXT_TORCH_PYTHON`, else python3. `.ci/run`
/// installs CPU PyTorch and sets `PRETEXT_REQUIRE_TORCH=1`, so there this test cannot skip.
fn torch_python() -> Option<String> {
    let python = std::env::var("PRETEXT_TORCH_PYTHON").unwrap_or_else(|_| "python3".into());
    importable(&python, "torch, transformers, numpy", "PRETEXT_REQUIRE_TORCH").then_some(python)
}

/// Trains a tiny model for `task` (`name: { settings }`) for 3 steps in `dir/run`.
fn tiny_run(dir: &std::path::Path, task: &str, model: &str, tokenizer: &str) -> std::path::PathBuf {
    write_parquet(&dir.join("data/a.parquet"), &documents(200, 5));
    let p = pipeline(
        dir,
        "p.yaml",
        &format!(
            "name: m\nsource: {{ path: data, key_column: id }}\ntokenizer: {tokenizer}\ntask: {{ {task} }}\n\
             stream: {{ batch_size: 8 }}\n\
             train:\n  model: {{ {model}: {{ layers: 2, hidden: 32, heads: 4, ffn: 48, dropout: 0.1 }} }}\n\
             \x20 steps: 3\n  schedule: {{ warmup_steps: 1 }}\n  device: cpu\n"
        ),
    );
    let o = pretext(&["train", p.to_str().unwrap(), "--run-dir", "run", "--quiet"], dir);
    assert!(o.status.success(), "{}", stderr(&o));
    dir.join("run")
}

/// `pretext export-model` writes BERT and GPT-2 directories that `transformers` loads with no
/// missing or unexpected keys and that compute pretext's logits; the directory `transformers`
/// saves again starts a pretext run (`train.init_from`) with exactly those weights.
#[test]
fn transformers_loads_exported_models_and_pretext_starts_from_them() {
    let Some(python) = torch_python() else { return };
    let cases = [
        ("mlm", "mlm: { seq_len: 24 }", "encoder", "{ train: { vocab_size: 300 } }", "mlm"),
        ("causal", "causal: { seq_len: 24 }", "decoder", "{ bytes: {} }", "causal"),
        ("contrastive_text", "contrastive_text: { seq_len: 24, identical: true }", "encoder", "{ bytes: {} }", "bare"),
    ];
    for (task, spec, model, tokenizer, kind) in cases {
        let t = tempdir();
        let run = tiny_run(t.path(), spec, model, tokenizer);
        let o = pretext(&["export-model", "run", "--to", "hf"], t.path());
        assert!(o.status.success(), "{task}: {}", stderr(&o));
        assert!(stdout(&o).contains("wrote `hf` as a `transformers`"), "{}", stdout(&o));

        // pretext's logits and tokens for the check.
        let loaded = pretext::cli::export_model::load(&run, None).unwrap();
        let vocab = loaded.plan.tokenizer().vocab_size;
        let ids: Vec<u32> = (0..20u32).map(|i| (i * 37 + 5) % (vocab - 3) + 3).collect();
        let logits =
            if kind == "bare" { vec![] } else { pretext::train::hf::logits(&loaded.trainer.model, &ids).unwrap() };
        let text = "alpha river stone quiet morning";
        let mut enc = pretext::tokenize::Encoded::default();
        loaded.plan.tokenizer().encode_framed(text, loaded.plan.framing(), None, false, &mut enc).unwrap();
        let resave = t.path().join("resaved");
        let check = serde_json::json!({
            "ids": ids, "logits": logits, "text": text, "text_ids": enc.ids, "resave": resave,
        });
        std::fs::write(t.path().join("check.json"), check.to_string()).unwrap();
        let script = repo().join("tests/interop/check_model.py");
        let o = Command::new(&python)
            .arg(&script)
            .args([t.path().join("hf"), kind.into(), t.path().join("check.json")])
            .env("HF_HUB_OFFLINE", "1")
            .env("HF_HOME", t.path().join("hf-home"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{task}: {}{}", stdout(&o), stderr(&o));
        assert!(stdout(&o).contains("ok: "), "{}", stdout(&o));
        eprintln!("{task}: {}", stdout(&o).trim());

        // A new run from what transformers saved starts with the same weights.
        let o = pretext(
            &["train", "p.yaml", "--run-dir", "again", "--set", &format!("train.init_from={}", resave.display())],
            t.path(),
        );
        assert!(o.status.success(), "{task}: {}", stderr(&o));
        assert!(stderr(&o).contains("initialised"), "{}", stderr(&o));
        let pipeline = pretext::load_pipeline(&t.path().join("p.yaml"), &[]).unwrap();
        let rt = pretext::cli::runtime().unwrap();
        let build = pretext::plan::BuildOptions {
            tokenizer_dir: Some(run.clone()),
            reuse_tokenizer: true,
            ..Default::default()
        };
        let plan = rt.block_on(pretext::plan::Plan::build(pipeline, &build)).unwrap();
        let cfg = pretext::train::settings(&plan);
        let fresh = pretext::train::Trainer::new(&plan, &cfg, &candle_core::Device::Cpu).unwrap();
        let family = pretext::train::hf::Family::of(&fresh.model, task).unwrap();
        pretext::train::hf::load_pretrained(&fresh.model, family, 4, &resave).unwrap();
        if kind != "bare" {
            assert_eq!(pretext::train::hf::logits(&fresh.model, &ids).unwrap(), logits, "{task}");
        }
        for (name, var, _) in loaded.trainer.model.params.vars() {
            // The heads transformers' class has no place for start fresh.
            if (kind == "mlm" && name.starts_with("bert.pooler.")) || (kind == "bare" && name.starts_with("cls.")) {
                continue;
            }
            let theirs = fresh.model.params.vars().find(|(n, _, _)| *n == name).unwrap().1;
            let a = var.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let b = theirs.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(a, b, "{task}: `{name}` after the round trip");
        }
    }
}

/// pretext's trainer and `transformers` + `torch.optim.AdamW`, from the same weights on the same
/// batches (a pretext export, read in order by both) with dropout 0: the encoder
/// (`BertForMaskedLM`) and the decoder (`GPT2LMHeadModel`, given pretext's document-wise causal
/// attention of packed rows as a 4D mask), 6 AdamW steps with warmup, linear decay, weight decay
/// and clipping. Tolerances: losses to a relative 1e-4 at every step, every weight to 1e-4 of its
/// tensor's largest magnitude. Measured: losses 1e-7 apart, weights 4e-6 (encoder) and 4e-5
/// (decoder), the size of the difference between transformers' own run and the same run with
/// each batch's gradient summed in two halves (printed beside it). Key biases are left out (see
/// `tests/interop/train_parity.py`).
#[test]
fn pretext_and_transformers_train_to_the_same_weights() {
    let Some(python) = torch_python() else { return };
    let cases = [
        ("mlm", "mlm: { seq_len: 24 }", "encoder"),
        ("causal", "causal: { seq_len: 24, reset_position_ids: false }", "decoder"),
    ];
    for (kind, task, model) in cases {
        let clip = 0.5;
        let t = tempdir();
        let d = t.path();
        write_parquet(&d.join("data/a.parquet"), &documents(120, 9));
        let train = format!(
            "train:\n  model: {{ {model}: {{ layers: 2, hidden: 32, heads: 4, ffn: 48, dropout: 0.0 }} }}\n\
             \x20 steps: 6\n  log_every: 1\n  clip_grad_norm: {clip}\n  optimizer: {{ adamw: {{ lr: 0.003, weight_decay: 0.1 }} }}\n\
             \x20 schedule: {{ warmup_steps: 2, decay: linear, min_lr_ratio: 0.1 }}\n  device: cpu\n"
        );
        // The examples, exported once; the common initial weights, from a short first run.
        let source =
            format!("name: p\nsource: {{ path: data }}\ntask: {{ {task} }}\nstream: {{ batch_size: 8 }}\n{train}");
        let p = pipeline(d, "source.yaml", &source);
        let o = pretext(&["export", p.to_str().unwrap(), "--out", "ex", "--quiet"], d);
        assert!(o.status.success(), "{kind}: {}", stderr(&o));
        let first = ["--set", "train.steps=1", "--set", "train.schedule.warmup_steps=1"];
        let o = pretext(&[&["train", p.to_str().unwrap(), "--run-dir", "first", "--quiet"][..], &first].concat(), d);
        assert!(o.status.success(), "{kind}: {}", stderr(&o));
        let o = pretext(&["export-model", "first", "--to", "init"], d);
        assert!(o.status.success(), "{kind}: {}", stderr(&o));
        // pretext's run: from those weights, on the export's rows in order.
        let yaml = format!(
            "name: q\nsource: {{ path: ex, format: pretext }}\ntask: {{ {task} }}\nstream: {{ batch_size: 8 }}\n{train}  init_from: init\n"
        );
        let q = pipeline(d, "parity.yaml", &yaml);
        let o = pretext(&["train", q.to_str().unwrap(), "--run-dir", "run", "--quiet"], d);
        assert!(o.status.success(), "{kind}: {}", stderr(&o));
        let o = pretext(&["export-model", "run", "--to", "final"], d);
        assert!(o.status.success(), "{kind}: {}", stderr(&o));
        let records = pretext::train::metrics::read(&d.join("run")).unwrap();
        assert_eq!(records.len(), 6, "{kind}");
        let settings = serde_json::json!({
            "batch_size": 8, "lrs": records.iter().map(|r| r.lr).collect::<Vec<_>>(),
            "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.1, "clip_grad_norm": clip,
        });
        std::fs::write(d.join("settings.json"), settings.to_string()).unwrap();
        let o = Command::new(&python)
            .arg(repo().join("tests/interop/train_parity.py"))
            .args([d.join("init"), d.join("final"), d.join("ex"), kind.into(), d.join("settings.json")])
            .env("HF_HUB_OFFLINE", "1")
            .env("HF_HOME", d.join("hf-home"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{kind}: {}{}", stdout(&o), stderr(&o));
        let theirs: serde_json::Value = serde_json::from_str(stdout(&o).lines().last().unwrap()).unwrap();
        let losses: Vec<f64> = serde_json::from_value(theirs["losses"].clone()).unwrap();
        for (r, l) in records.iter().zip(&losses) {
            assert!(
                (r.loss - l).abs() <= 1e-4 * l.abs(),
                "{kind}: step {}: pretext {} vs transformers {l}",
                r.step,
                r.loss
            );
        }
        let diffs = theirs["diffs"].as_object().unwrap();
        assert!(diffs.len() > 10, "{kind}: {diffs:?}");
        let mut worst = (String::new(), 0.0f64, 0.0f64);
        for (name, v) in diffs {
            let [diff, spread] = [0, 2].map(|i| v[i].as_f64().unwrap() / v[1].as_f64().unwrap().max(1e-12));
            assert!(diff <= 1e-4, "{kind}: `{name}` differs by {diff:.2e} of its scale (two-halves run: {spread:.2e})");
            if diff > worst.1 {
                worst = (name.clone(), diff, spread);
            }
        }
        eprintln!(
            "{kind}: losses {losses:?}; largest weight difference {:.2e} of its tensor's scale (`{}`; two-halves run: {:.2e})",
            worst.1, worst.0, worst.2
        );
    }
}
