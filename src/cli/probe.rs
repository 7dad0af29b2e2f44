use std::path::Path;

use arrow::array::{Array, AsArray};
use futures::StreamExt;

use crate::error::{Error, Result};
use crate::plan::{BuildOptions, Plan};
use crate::source::Split;
use crate::spec::{TaskInput, TaskSpec};
use crate::train::probe::{majority, Classifier, Labelled};
use crate::train::{checkpoint, settings, Trainer};

/// Steps of the probe's optimiser.
const ITERATIONS: usize = 300;

/// The most distinct labels a probe takes.
const MAX_CLASSES: usize = 1000;

/// Fits a linear probe on the frozen encoder of the run in `run_dir` and reports its held-out
/// accuracy next to the same encoder at initialisation and the majority class.
pub fn run(run_dir: &Path, label_column: Option<&str>, max_rows: usize, sets: &[String]) -> Result<i32> {
    let saved = super::saved::SavedRun::open(run_dir)?;
    let checkpoint_dir = saved.checkpoint(None)?;

    // Probe on plain images: no random crops, flips or colour changes.
    let task = saved.section("task");
    let mut overrides = vec!["stream.epochs=1".to_string()];
    if task.get("contrastive_image").is_some() {
        overrides.push("task.contrastive_image.augment={crop: {scale: [1.0, 1.0], ratio: [1.0, 1.0]}, flip: 0.0, color_jitter: {p: 0.0}, grayscale: 0.0, blur: {p: 0.0}, solarize: {p: 0.0}}".into());
    }
    if task.get("mae").is_some() {
        overrides.push("task.mae.crop={scale: [1.0, 1.0], ratio: [1.0, 1.0]}".into());
        overrides.push("task.mae.flip=0.0".into());
    }
    if let Some(col) = label_column {
        overrides.push(format!("source.label_column={col}"));
    }
    overrides.extend(sets.iter().cloned());
    let pipeline = saved.pipeline(&overrides)?;
    if pipeline.task().input() == TaskInput::Text {
        return Err(Error::env_hint(
            format!("task `{}` reads text, which carries no label column to probe", pipeline.task().name()),
            "probes work on the image and table tasks (contrastive_image, mae, denoise_image, scarf, vime)",
        ));
    }
    if pipeline.primary_source().label_column.is_none() {
        return Err(Error::env_hint(
            "the run's pipeline has no `source.label_column`",
            "name the column holding the class ids: `pretext probe <run> --label-column label`",
        ));
    }
    let rt = super::runtime()?;
    let plan = rt.block_on(Plan::build(pipeline, &BuildOptions::default()))?;
    let fraction = plan.train.spec.eval.as_ref().map(|e| e.fraction).unwrap_or(0.2);
    let cfg = settings(&plan);
    let device = candle_core::Device::Cpu;
    // In f32, whatever the run trained in (bf16 weights load converted).
    let trained = Trainer::with_dtype(&plan, &cfg, &device, candle_core::DType::F32)?;
    trained.model.params.load(&checkpoint_dir.join("model.safetensors"))?;
    let initial = Trainer::with_dtype(&plan, &cfg, &device, candle_core::DType::F32)?;

    let classes = std::cell::RefCell::new(std::collections::BTreeMap::<i64, usize>::new());
    let collect = |split: Split| -> Result<(Labelled, Labelled)> {
        rt.block_on(async {
            let (mut a, mut b) = (Labelled::default(), Labelled::default());
            let mut stream = plan.epoch_batches(0, split);
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                let labels =
                    batch.column_by_name("label").ok_or_else(|| Error::internal("examples without `label`"))?;
                let labels = labels
                    .as_primitive_opt::<arrow::datatypes::Int64Type>()
                    .ok_or_else(|| Error::data(format!("`label` is {}, not Int64", labels.data_type())))?;
                let inputs = trained.inputs(&batch)?;
                let embed = |t: &Trainer| -> Result<(Vec<f32>, usize)> {
                    let f = t
                        .model
                        .features(&inputs.inputs)?
                        .ok_or_else(|| Error::internal("no features for this task"))?;
                    let d = f.dim(1).map_err(crate::train::nn::ce)?;
                    let v = f.flatten_all().and_then(|f| f.to_vec1::<f32>()).map_err(crate::train::nn::ce)?;
                    Ok((v, d))
                };
                let ((fa, d), (fb, _)) = (embed(&trained)?, embed(&initial)?);
                for i in 0..batch.num_rows() {
                    if labels.is_null(i) {
                        continue;
                    }
                    // Class ids are remapped to 0..classes in order of first appearance.
                    let next = classes.borrow().len();
                    let l = *classes.borrow_mut().entry(labels.value(i)).or_insert(next);
                    if l >= MAX_CLASSES {
                        return Err(Error::data_hint(
                            format!("the label column holds more than {MAX_CLASSES} distinct classes"),
                            "a linear probe needs class ids; pick a coarser label column",
                        ));
                    }
                    for (side, f) in [(&mut a, &fa), (&mut b, &fb)] {
                        side.dim = d;
                        side.features.extend_from_slice(&f[i * d..(i + 1) * d]);
                        side.labels.push(l);
                    }
                }
                if a.len() >= max_rows {
                    break;
                }
            }
            Ok((a, b))
        })
    };
    let (train_t, train_i) = collect(Split::Train { fraction, seed: plan.seed })?;
    let (test_t, test_i) = collect(Split::Eval { fraction, seed: plan.seed })?;
    if train_t.is_empty() || test_t.is_empty() {
        return Err(Error::data_hint(
            format!("the split left {} rows to fit and {} to test on", train_t.len(), test_t.len()),
            "the probe needs labelled rows on both sides of the split (`train.eval.fraction`, default 0.2)",
        ));
    }
    let classes = classes.borrow().len();
    if classes < 2 {
        return Err(Error::data("every row has the same label: there is nothing to classify"));
    }
    let fit = |train: &Labelled, test: &Labelled| -> Result<(f64, f64)> {
        let clf = Classifier::fit(train, classes, ITERATIONS)?;
        Ok((clf.accuracy(train), clf.accuracy(test)))
    };
    let (fit_t, acc_t) = fit(&train_t, &test_t)?;
    let (_, acc_i) = fit(&train_i, &test_i)?;
    let base = majority(&train_t, &test_t, classes);
    let step = checkpoint::read_state(&checkpoint_dir)?.step;
    let report = serde_json::json!({
        "checkpoint": checkpoint_dir.display().to_string(),
        "step": step,
        "label_column": plan.label_column,
        "classes": classes,
        "train_rows": train_t.len(),
        "test_rows": test_t.len(),
        "features": train_t.dim,
        "accuracy": acc_t,
        "train_accuracy": fit_t,
        "initial_encoder_accuracy": acc_i,
        "majority_accuracy": base,
    });
    let out = run_dir.join("probe.json");
    std::fs::write(&out, serde_json::to_string_pretty(&report).unwrap_or_default() + "\n")
        .map_err(|e| Error::io(&out, "write", e))?;
    println!(
        "linear probe on `{}` ({classes} classes, {} features): held-out accuracy {:.3} with the encoder at step {step}, {:.3} at initialisation, {:.3} for the majority class ({} rows fitted, {} held out)",
        plan.label_column.as_deref().unwrap_or("label"),
        train_t.dim,
        acc_t,
        acc_i,
        base,
        train_t.len(),
        test_t.len()
    );
    if !matches!(plan.task_spec, TaskSpec::Scarf(_) | TaskSpec::Vime(_)) && acc_t <= acc_i {
        eprintln!("note: the trained encoder probes no better than its initialisation; train longer or check the loss curve (`pretext plot`)");
    }
    eprintln!("wrote `{}`", out.display());
    Ok(0)
}
