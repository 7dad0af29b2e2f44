use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::plan::{BuildOptions, Plan};
use crate::spec::{ModelSpec, TaskInput};
use crate::train::hf::{self, Family, Shape};
use crate::train::{settings, Trainer};

/// A run's model at one checkpoint, with what an export needs to describe it.
pub struct Loaded {
    pub trainer: Trainer,
    pub family: Family,
    pub spec: ModelSpec,
    pub plan: std::sync::Arc<Plan>,
    pub checkpoint: PathBuf,
}

/// Loads the text model of the run in `run_dir` at checkpoint `step` (default: the newest), on
/// the CPU.
pub fn load(run_dir: &Path, step: Option<u64>) -> Result<Loaded> {
    let saved = super::saved::SavedRun::open(run_dir)?;
    let checkpoint = saved.checkpoint(step)?;
    let pipeline = saved.pipeline(&["stream.epochs=1".to_string()])?;
    let task = pipeline.task().name().to_string();
    if pipeline.task().input() != TaskInput::Text {
        return Err(Error::env_hint(
            format!(
                "task `{task}` trains an image or table model, which `transformers` has no matching class for here"
            ),
            "export-model writes the BERT encoder (mlm, contrastive_text) and the GPT-2 decoder (causal)",
        ));
    }
    let rt = super::runtime()?;
    // A trained tokenizer is the one the run saved.
    let build =
        BuildOptions { tokenizer_dir: Some(run_dir.to_path_buf()), reuse_tokenizer: true, ..Default::default() };
    let plan = rt.block_on(Plan::build(pipeline, &build))?;
    let cfg = settings(&plan);
    // On the CPU in f32, whatever the run trained in (bf16 weights load converted).
    let trainer = Trainer::with_dtype(&plan, &cfg, &candle_core::Device::Cpu, candle_core::DType::F32)?;
    trainer.model.params.load(&checkpoint.join("model.safetensors"))?;
    let family = Family::of(&trainer.model, &task)?;
    let spec = plan.train.model.clone();
    Ok(Loaded { trainer, family, spec, plan, checkpoint })
}

pub fn run(run_dir: &Path, to: &Path, step: Option<u64>) -> Result<i32> {
    let loaded = load(run_dir, step)?;
    let plan = &loaded.plan;
    let shape = Shape {
        spec: &loaded.spec,
        vocab: plan.tokenizer.vocab_size as usize,
        max_len: plan.seq_len.max(1),
        specials: plan.tokenizer.specials.clone(),
    };
    let out = hf::export(&loaded.trainer.model, loaded.family, &shape, plan.tokenizer_file.as_deref(), to)?;
    if let ModelSpec::Encoder(e) = &loaded.spec {
        if out.family == Family::Bert && e.pooling == crate::spec::Pooling::Mean {
            eprintln!(
                "note: the run pools by the mean over real tokens, BertModel's `pooler_output` by the first token: for pretext's embedding, average `last_hidden_state` over `attention_mask`, then apply `model.pooler.dense` and tanh"
            );
        }
    }
    println!(
        "wrote `{}` as a `transformers` {} ({} tensors, {} parameters) from `{}`",
        to.display(),
        out.family.class(),
        out.tensors,
        out.parameters,
        loaded.checkpoint.display()
    );
    let auto = match out.family {
        Family::BertMlm => "AutoModelForMaskedLM",
        Family::Bert => "AutoModel",
        Family::Gpt2 => "AutoModelForCausalLM",
    };
    println!("load it with `transformers.{auto}.from_pretrained(\"{}\")`", to.display());
    if !out.tokenizer {
        eprintln!(
            "note: the run used the built-in byte vocabulary, which has no tokenizer.json: no tokenizer was written (ids are bytes 0–255, then the special tokens)"
        );
    }
    Ok(0)
}
