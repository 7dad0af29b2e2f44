//! HuggingFace `transformers` interop, both ways.
//!
//! - [`export`] writes a run's text model as a `transformers` model directory: `config.json`,
//!   `model.safetensors` and the tokenizer. The MLM encoder is a `BertForMaskedLM`, the
//!   contrastive encoder a `BertModel` (with its pooler), the decoder a `GPT2LMHeadModel`. The
//!   models already name and lay out their tensors as those classes do (see
//!   [`super::models::encoder`] and [`super::models::decoder`]), so the weights are written
//!   as they are, leaving out the head the class has no place for.
//! - [`load_pretrained`] (`train.init_from`) starts a run from such a directory, or from any
//!   BERT or GPT-2 checkpoint of the same sizes: names saved by other versions (`gamma`/`beta`,
//!   GPT-2 without its `transformer.` prefix, tied copies of the embeddings, attention-mask
//!   buffers) are mapped or dropped; every other difference is an error that names it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::spec::{BlockSizes, ModelSpec};
use crate::tokenize::Specials;
#[cfg(any(test, feature = "internals"))]
use crate::train::batch::View;
use crate::train::models::{Model, Net};
use crate::train::nn::{ce, read_safetensors};
#[cfg(any(test, feature = "internals"))]
use crate::train::nn::{Fwd, MASKED};

/// The `transformers` class a model is exported as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `BertForMaskedLM` (the MLM encoder; no pooler).
    BertMlm,
    /// `BertModel` (the contrastive encoder: its pooler, no MLM head).
    Bert,
    /// `GPT2LMHeadModel` (the decoder; the LM head is the tied token embeddings).
    Gpt2,
}

impl Family {
    /// The family of `model`, or an error naming what cannot be exported.
    pub fn of(model: &Model, task: &str) -> Result<Family> {
        match (&model.net, model.kind) {
            (Net::Encoder(_), crate::train::batch::TaskKind::Mlm) => Ok(Family::BertMlm),
            (Net::Encoder(_), _) => Ok(Family::Bert),
            (Net::Decoder(_), _) => Ok(Family::Gpt2),
            _ => Err(Error::env_hint(
                format!("task `{task}` trains a model `transformers` has no matching class for here"),
                "export-model writes the BERT encoder (mlm, contrastive_text) and the GPT-2 decoder (causal)",
            )),
        }
    }

    pub fn class(self) -> &'static str {
        match self {
            Family::BertMlm => "BertForMaskedLM",
            Family::Bert => "BertModel",
            Family::Gpt2 => "GPT2LMHeadModel",
        }
    }

    /// Whether pretext's parameter `name` belongs in this class's state dict, and under which name.
    fn hf_name(self, name: &str) -> Option<String> {
        match self {
            Family::BertMlm => (!name.starts_with("bert.pooler.")).then(|| name.to_string()),
            // `BertModel` is the bare encoder: no `bert.` prefix, no MLM head.
            Family::Bert => name.strip_prefix("bert.").map(str::to_string),
            Family::Gpt2 => Some(name.to_string()),
        }
    }
}

/// What [`export`] wrote.
#[derive(Debug)]
pub struct Exported {
    pub family: Family,
    pub tensors: usize,
    pub parameters: usize,
    /// Whether a tokenizer was written (the built-in byte vocabulary has no `tokenizer.json`).
    pub tokenizer: bool,
}

/// The model's settings that `config.json` records.
pub struct Shape<'a> {
    pub spec: &'a ModelSpec,
    pub vocab: usize,
    pub max_len: usize,
    pub specials: Specials,
}

/// The `config.json` of `family` with these sizes.
fn config(family: Family, s: &BlockSizes, shape: &Shape) -> Value {
    let sp = &shape.specials;
    match family {
        Family::BertMlm | Family::Bert => json!({
            "architectures": [family.class()],
            "model_type": "bert",
            "vocab_size": shape.vocab,
            "hidden_size": s.hidden,
            "num_hidden_layers": s.layers,
            "num_attention_heads": s.heads,
            "intermediate_size": s.ffn(),
            // pretext's encoder uses the exact (erf) GELU.
            "hidden_act": "gelu",
            "hidden_dropout_prob": s.dropout,
            "attention_probs_dropout_prob": s.dropout,
            "max_position_embeddings": shape.max_len,
            "type_vocab_size": 2,
            "initializer_range": 0.02,
            "layer_norm_eps": 1e-12,
            "pad_token_id": sp.pad,
            "position_embedding_type": "absolute",
            "tie_word_embeddings": true,
            "torch_dtype": "float32",
        }),
        Family::Gpt2 => json!({
            "architectures": [family.class()],
            "model_type": "gpt2",
            "vocab_size": shape.vocab,
            "n_positions": shape.max_len,
            "n_embd": s.hidden,
            "n_layer": s.layers,
            "n_head": s.heads,
            "n_inner": s.ffn(),
            // pretext's decoder uses the tanh approximation of GELU, as GPT-2.
            "activation_function": "gelu_new",
            "resid_pdrop": s.dropout,
            "embd_pdrop": s.dropout,
            "attn_pdrop": s.dropout,
            "layer_norm_epsilon": 1e-5,
            "initializer_range": 0.02,
            "scale_attn_weights": true,
            "bos_token_id": sp.bos.or(sp.eos).or(sp.cls),
            "eos_token_id": sp.eos.or(sp.sep),
            "pad_token_id": sp.pad,
            "tie_word_embeddings": true,
            "torch_dtype": "float32",
        }),
    }
}

/// Writes `model` into `to` as a `transformers` model directory: `config.json`,
/// `model.safetensors` (float32) and, when the run used a `tokenizer.json`, that file with a
/// `tokenizer_config.json` naming its special tokens.
pub fn export(model: &Model, family: Family, shape: &Shape, tokenizer: Option<&Path>, to: &Path) -> Result<Exported> {
    let s = shape.spec.sizes().ok_or_else(|| Error::internal("export of a model without transformer sizes"))?;
    std::fs::create_dir_all(to).map_err(|e| Error::io(to, "create directory", e))?;
    let mut tensors: BTreeMap<String, Tensor> = BTreeMap::new();
    for (name, var, _) in model.params.vars() {
        if let Some(hf) = family.hf_name(name) {
            let t = var.as_tensor().to_dtype(DType::F32).and_then(|t| t.to_device(&Device::Cpu)).map_err(ce)?;
            tensors.insert(hf, t);
        }
    }
    let parameters = tensors.values().map(|t| t.elem_count()).sum();
    // `transformers` refuses a safetensors file without `format: pt` in its metadata.
    let metadata: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    let weights = to.join("model.safetensors");
    safetensors::serialize_to_file(&tensors, Some(metadata), &weights)
        .map_err(|e| Error::env(format!("cannot write `{}`: {e}", weights.display())))?;
    write_json(&to.join("config.json"), &config(family, &s, shape))?;
    let tokenizer = match tokenizer {
        Some(file) => {
            let dest = to.join("tokenizer.json");
            std::fs::copy(file, &dest).map_err(|e| Error::io(file, "copy", e))?;
            write_json(&to.join("tokenizer_config.json"), &tokenizer_config(file, &shape.specials, shape.max_len)?)?;
            true
        }
        None => false,
    };
    Ok(Exported { family, tensors: tensors.len(), parameters, tokenizer })
}

/// `tokenizer_config.json`: the fast tokenizer class over `tokenizer.json`, with the special
/// tokens pretext resolved (by text, as `transformers` wants them).
fn tokenizer_config(file: &Path, specials: &Specials, max_len: usize) -> Result<Value> {
    let tok = tokenizers::Tokenizer::from_file(file)
        .map_err(|e| Error::env(format!("cannot read tokenizer `{}`: {e}", file.display())))?;
    let mut cfg = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": max_len,
        "clean_up_tokenization_spaces": false,
    });
    let named = [
        ("pad_token", specials.pad),
        ("unk_token", specials.unk),
        ("cls_token", specials.cls),
        ("sep_token", specials.sep),
        ("mask_token", specials.mask),
        ("bos_token", specials.bos),
        ("eos_token", specials.eos),
    ];
    for (key, id) in named {
        if let Some(text) = id.and_then(|id| tok.id_to_token(id)) {
            cfg[key] = Value::String(text);
        }
    }
    Ok(cfg)
}

fn write_json(path: &Path, v: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(v).map_err(|e| Error::internal(e.to_string()))? + "\n";
    std::fs::write(path, text).map_err(|e| Error::io(path, "write", e))
}

/// The model's logits for one unpadded sequence `ids` (below the vocabulary size, at most the
/// model's `seq_len` of them), `(len, vocab)` row-major, as the
/// exported `transformers` model computes them: the encoder's MLM head at every position
/// (attention over the whole sequence), the decoder's next-token logits (causal attention,
/// positions from 0). For checking an export against `transformers`.
#[cfg(any(test, feature = "internals"))]
pub fn logits(model: &Model, ids: &[u32]) -> Result<Vec<f32>> {
    let device = model.params.device().clone();
    let t = ids.len();
    let fwd = Fwd::eval();
    let ids_t = Tensor::from_vec(ids.to_vec(), (1, t), &device).map_err(ce)?;
    let all = Tensor::arange(0u32, t as u32, &device).map_err(ce)?;
    let out = match &model.net {
        Net::Encoder(e) => {
            let view = View {
                ids: ids_t,
                pad_bias: Tensor::zeros((1, 1, 1, t), DType::F32, &device).map_err(ce)?,
                mask: Tensor::ones((1, t), DType::F32, &device).map_err(ce)?,
            };
            e.mlm_logits(&e.hidden(&view, &fwd)?, &all)?
        }
        Net::Decoder(d) => {
            let causal: Vec<f32> = (0..t * t).map(|k| if k % t <= k / t { 0.0 } else { MASKED }).collect();
            let bias = Tensor::from_vec(causal, (1, 1, t, t), &device).map_err(ce)?;
            let positions = all.reshape((1, t)).map_err(ce)?;
            d.logits(&d.hidden(&ids_t, &positions, &bias, &fwd)?, &all)?
        }
        _ => return Err(Error::internal("logits of a model that is not a text encoder or decoder")),
    };
    out.to_dtype(DType::F32).and_then(|l| l.flatten_all()).and_then(|l| l.to_vec1::<f32>()).map_err(ce)
}

/// The name pretext gives a tensor of a HuggingFace checkpoint, `None` for one it does not use
/// (tied copies of the embeddings, buffers, the next-sentence head).
fn pretext_name(family: Family, name: &str) -> Option<String> {
    // Checkpoints converted from TensorFlow name norm scales and shifts `gamma` and `beta`.
    let name = name.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias");
    match family {
        Family::BertMlm | Family::Bert => {
            if name.starts_with("cls.seq_relationship.")
                || name.starts_with("cls.predictions.decoder.")
                || name.ends_with("embeddings.position_ids")
            {
                return None;
            }
            if name.starts_with("cls.") || name.starts_with("bert.") {
                Some(name)
            } else {
                // A bare `BertModel`.
                Some(format!("bert.{name}"))
            }
        }
        Family::Gpt2 => {
            if name == "lm_head.weight" || name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias") {
                return None;
            }
            Some(if name.starts_with("transformer.") { name } else { format!("transformer.{name}") })
        }
    }
}

/// Loads the weights of the `transformers` model directory (or safetensors file) `from` into
/// `model` (with `heads` attention heads), whose layout must match: every tensor of the model
/// must be there with its shape, except that a position table may be longer (its first rows are
/// taken: a 512-position BERT starts a 128-token model) and a head the checkpoint's class lacks
/// (BERT's pooler or MLM head, whole) keeps its fresh initialisation. A `config.json` beside the
/// weights must agree on what shapes do not show: heads, activation, untied output head. Nothing
/// is set unless everything fits. Returns a line saying what was loaded.
pub fn load_pretrained(model: &Model, family: Family, heads: usize, from: &Path) -> Result<String> {
    let file = weights_file(from)?;
    if let Some(dir) = file.parent() {
        check_config(&dir.join("config.json"), family, heads)?;
    }
    let found = read_safetensors(&file, &Device::Cpu)?;
    let mut mapped: BTreeMap<String, (String, Tensor)> = BTreeMap::new();
    for (name, t) in found {
        if let Some(p) = pretext_name(family, &name) {
            if let Some((first, _)) = mapped.get(&p) {
                return Err(Error::data(format!(
                    "`{}` holds both `{first}` and `{name}`, which are the same tensor (`{p}`)",
                    file.display()
                )));
            }
            mapped.insert(p, (name, t));
        }
    }
    let wanted: BTreeMap<&str, &candle_core::Var> = model.params.vars().map(|(n, v, _)| (n, v)).collect();
    let unexpected: Vec<String> =
        mapped.iter().filter(|(p, _)| !wanted.contains_key(p.as_str())).map(|(_, (n, _))| n.clone()).collect();
    // A head the checkpoint's class has no place for may be absent, but only as a whole.
    let heads_of = ["bert.pooler.", "cls.predictions."];
    let absent_head = |n: &str| heads_of.iter().any(|h| n.starts_with(h) && !mapped.keys().any(|k| k.starts_with(h)));
    let missing: Vec<String> =
        wanted.keys().filter(|k| !mapped.contains_key(**k) && !absent_head(k)).map(|k| k.to_string()).collect();
    let show = |v: &[String]| v.iter().take(5).map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ");
    if !missing.is_empty() || !unexpected.is_empty() {
        return Err(Error::data_hint(
            format!(
                "`{}` is not a {} of this model's layout: {} tensor(s) missing [{}], {} unexpected [{}]",
                file.display(),
                family.class(),
                missing.len(),
                show(&missing),
                unexpected.len(),
                show(&unexpected),
            ),
            "set `train.model` to the checkpoint's architecture (layers, hidden, heads, ffn), or start without `train.init_from`",
        ));
    }
    // Every shape is checked before anything is set.
    let mut plan: Vec<(&candle_core::Var, Tensor)> = Vec::new();
    let mut fresh = Vec::new();
    for (name, var) in &wanted {
        let Some((_, t)) = mapped.get(*name) else {
            fresh.push(name.to_string());
            continue;
        };
        let want = var.dims();
        let positions = name.ends_with("position_embeddings.weight") || name.ends_with("wpe.weight");
        let t = match t.dims() {
            [rows, width] if positions && t.dims() != want && *width == want[1] && *rows >= want[0] => {
                t.narrow(0, 0, want[0]).map_err(ce)?
            }
            _ => t.clone(),
        };
        if t.dims() != want {
            return Err(Error::data_hint(
                format!("`{}`: tensor `{name}` has shape {:?}, the model expects {:?}", file.display(), t.dims(), want),
                "set `train.model` and the tokenizer to the checkpoint's (vocabulary size, hidden size, ffn), or start without `train.init_from`",
            ));
        }
        plan.push((var, t));
    }
    let loaded = plan.len();
    for (var, t) in plan {
        var.set(&t.to_dtype(var.dtype()).and_then(|t| t.to_device(var.device())).map_err(ce)?).map_err(ce)?;
    }
    let mut line = format!("initialised {loaded} tensors from `{}`", file.display());
    if !fresh.is_empty() {
        let heads: std::collections::BTreeSet<&str> =
            fresh.iter().map(|n| if n.starts_with("bert.pooler.") { "the pooler" } else { "the MLM head" }).collect();
        let heads = heads.into_iter().collect::<Vec<_>>().join(" and ");
        line += &format!("; the {} tensors of {heads} start fresh (the checkpoint has none)", fresh.len());
    }
    Ok(line)
}

/// Refuses a `config.json` (when there is one) that describes another model than `family` with
/// `heads` heads in what the tensor shapes do not show.
fn check_config(path: &Path, family: Family, heads: usize) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(()) };
    let cfg: Value =
        serde_json::from_str(&text).map_err(|e| Error::data(format!("`{}` is not JSON: {e}", path.display())))?;
    let get = |k: &str| cfg.get(k).filter(|v| !v.is_null());
    let mut wrong = Vec::new();
    let (model_type, heads_key, act_key, acts): (&str, &str, &str, &[&str]) = match family {
        Family::BertMlm | Family::Bert => ("bert", "num_attention_heads", "hidden_act", &["gelu"]),
        Family::Gpt2 => ("gpt2", "n_head", "activation_function", &["gelu_new", "gelu_pytorch_tanh"]),
    };
    if let Some(t) = get("model_type").and_then(Value::as_str).filter(|t| *t != model_type) {
        wrong.push(format!("model_type is `{t}`, not `{model_type}`"));
    }
    if let Some(n) = get(heads_key).and_then(Value::as_u64).filter(|&n| n as usize != heads && heads > 0) {
        wrong.push(format!("{heads_key} is {n}, the model has {heads} heads"));
    }
    if let Some(a) = get(act_key).and_then(Value::as_str).filter(|a| !acts.contains(a)) {
        wrong.push(format!("{act_key} is `{a}`, the model computes `{}`", acts[0]));
    }
    if get("tie_word_embeddings").and_then(Value::as_bool) == Some(false) {
        wrong.push("tie_word_embeddings is false: its output head is not the embeddings, as the model's is".into());
    }
    if family == Family::Gpt2 && get("scale_attn_by_inverse_layer_idx").and_then(Value::as_bool) == Some(true) {
        wrong.push("scale_attn_by_inverse_layer_idx is true".into());
    }
    if matches!(family, Family::BertMlm | Family::Bert)
        && get("position_embedding_type").and_then(Value::as_str).is_some_and(|t| t != "absolute")
    {
        wrong.push("position_embedding_type is not `absolute`".into());
    }
    if wrong.is_empty() {
        return Ok(());
    }
    Err(Error::data_hint(
        format!("`{}` describes another model: {}", path.display(), wrong.join("; ")),
        "set `train.model` to match the checkpoint, or start without `train.init_from`",
    ))
}

/// `from/model.safetensors`, or `from` itself when it is a file.
fn weights_file(from: &Path) -> Result<PathBuf> {
    if from.is_file() {
        return Ok(from.to_path_buf());
    }
    let file = from.join("model.safetensors");
    if file.is_file() {
        return Ok(file);
    }
    let hint = if from.join("pytorch_model.bin").is_file() {
        "the directory holds only `pytorch_model.bin`: save it as safetensors (`model.save_pretrained(dir, safe_serialization=True)`)"
    } else {
        "point `train.init_from` at a `transformers` model directory (with model.safetensors) or at a .safetensors file"
    };
    Err(Error::env_hint(format!("`{}` holds no model.safetensors", from.display()), hint))
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use candle_core::{DType, Device, Tensor};

    use super::{load_pretrained, logits, Family};
    use crate::spec::{BlockSizes, ModelSpec};
    use crate::train::batch::TaskKind;
    use crate::train::models::{Model, ModelInput};

    fn sizes() -> BlockSizes {
        BlockSizes { layers: 2, hidden: 16, heads: 2, ffn: Some(24), dropout: 0.0 }
    }

    fn decoder(seed: u64, max_len: usize) -> Model {
        let spec = ModelSpec::Decoder(sizes());
        let input = ModelInput { spec: &spec, kind: TaskKind::Causal, vocab: 50, max_len, byol: None, seed };
        Model::new(&input, &Device::Cpu, DType::F32).unwrap()
    }

    /// `model`'s tensors renamed by `rename` (`None` drops one), plus `extra`, saved as a
    /// checkpoint in `dir`.
    fn save(
        model: &Model,
        dir: &std::path::Path,
        rename: impl Fn(&str) -> Option<String>,
        extra: Vec<(&str, Tensor)>,
    ) -> std::path::PathBuf {
        let mut map: BTreeMap<String, Tensor> =
            model.params.vars().filter_map(|(n, v, _)| rename(n).map(|n| (n, v.as_tensor().clone()))).collect();
        map.extend(extra.into_iter().map(|(k, v)| (k.to_string(), v)));
        let file = dir.join("model.safetensors");
        let meta: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
        safetensors::serialize_to_file(&map, Some(meta), &file).unwrap();
        file
    }

    #[test]
    fn an_original_gpt2_checkpoint_loads_with_its_longer_position_table() {
        let dir = tempfile::tempdir().unwrap();
        let source = decoder(1, 40);
        // GPT-2 as OpenAI released it: no `transformer.` prefix, mask buffers, a tied head.
        let wpe = source.params.vars().find(|(n, _, _)| *n == "transformer.wpe.weight").unwrap().1.as_tensor().clone();
        save(
            &source,
            dir.path(),
            |n| Some(n.strip_prefix("transformer.").unwrap_or(n).to_string()),
            vec![
                ("h.0.attn.bias", Tensor::zeros((1, 1, 40, 40), DType::F32, &Device::Cpu).unwrap()),
                ("lm_head.weight", Tensor::zeros((50, 16), DType::F32, &Device::Cpu).unwrap()),
            ],
        );
        let target = decoder(2, 12);
        let line = load_pretrained(&target, Family::Gpt2, 2, dir.path()).unwrap();
        assert!(line.starts_with("initialised 28 tensors"), "{line}");
        let got = target.params.vars().find(|(n, _, _)| *n == "transformer.wpe.weight").unwrap().1.as_tensor().clone();
        let want = wpe.narrow(0, 0, 12).unwrap();
        assert_eq!(got.to_vec2::<f32>().unwrap(), want.to_vec2::<f32>().unwrap());
        // The first 12 positions compute what the source computes there.
        let ids: Vec<u32> = (0..12).map(|i| i * 3 + 1).collect();
        assert_eq!(logits(&target, &ids).unwrap(), logits(&source, &ids).unwrap());
    }

    #[test]
    fn a_tensorflow_named_bert_without_heads_loads_and_keeps_fresh_heads() {
        let dir = tempfile::tempdir().unwrap();
        let spec = ModelSpec::Encoder(
            serde_json::from_value(serde_json::json!({"layers": 2, "hidden": 16, "heads": 2, "ffn": 24})).unwrap(),
        );
        let make = |seed| {
            let input = ModelInput { spec: &spec, kind: TaskKind::Mlm, vocab: 50, max_len: 12, byol: None, seed };
            Model::new(&input, &Device::Cpu, DType::F32).unwrap()
        };
        let source = make(1);
        // A bare `BertModel` from a TensorFlow conversion: `gamma`/`beta`, no `bert.`, no MLM head.
        save(
            &source,
            dir.path(),
            |n| {
                let n = n.strip_prefix("bert.")?;
                Some(n.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"))
            },
            vec![],
        );
        let target = make(2);
        // Half an MLM head is refused: a head is there whole or not at all.
        let half = tempfile::tempdir().unwrap();
        save(
            &source,
            half.path(),
            |n| (!n.starts_with("cls.predictions.transform.dense")).then(|| n.to_string()),
            vec![],
        );
        let err = load_pretrained(&target, Family::BertMlm, 2, half.path()).unwrap_err().to_string();
        assert!(err.contains("2 tensor(s) missing") && err.contains("cls.predictions.transform.dense"), "{err}");
        let line = load_pretrained(&target, Family::BertMlm, 2, dir.path()).unwrap();
        assert!(line.contains("; the 5 tensors of the MLM head start fresh"), "{line}");
        for (name, var, _) in source.params.vars().filter(|(n, _, _)| n.starts_with("bert.")) {
            let theirs = target.params.vars().find(|(n, _, _)| *n == name).unwrap().1;
            let (a, b) = (var.as_tensor().flatten_all().unwrap(), theirs.as_tensor().flatten_all().unwrap());
            assert_eq!(a.to_vec1::<f32>().unwrap(), b.to_vec1::<f32>().unwrap(), "{name}");
        }
    }

    #[test]
    fn a_checkpoint_of_other_sizes_is_refused_naming_the_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let source = decoder(1, 12);
        save(&source, dir.path(), |n| Some(n.to_string()), vec![]);
        let wider = Model::new(
            &ModelInput {
                spec: &ModelSpec::Decoder(sizes()),
                kind: TaskKind::Causal,
                vocab: 60,
                max_len: 12,
                byol: None,
                seed: 3,
            },
            &Device::Cpu,
            DType::F32,
        )
        .unwrap();
        let err = load_pretrained(&wider, Family::Gpt2, 2, dir.path()).unwrap_err().to_string();
        assert!(err.contains("`transformer.wte.weight` has shape [50, 16], the model expects [60, 16]"), "{err}");
        // A layer the checkpoint lacks, and one it has too many of.
        save(&source, dir.path(), |n| (!n.starts_with("transformer.h.1.")).then(|| n.to_string()), vec![]);
        let err = load_pretrained(&decoder(2, 12), Family::Gpt2, 2, dir.path()).unwrap_err().to_string();
        assert!(err.contains("12 tensor(s) missing") && err.contains("transformer.h.1."), "{err}");
        save(&source, dir.path(), |n| Some(n.replace("transformer.h.1.", "transformer.h.7.")), vec![]);
        let err = load_pretrained(&decoder(2, 12), Family::Gpt2, 2, dir.path()).unwrap_err().to_string();
        assert!(err.contains("unexpected") && err.contains("transformer.h.7."), "{err}");
        // Two names for one tensor.
        let wte = source.params.vars().find(|(n, _, _)| *n == "transformer.wte.weight").unwrap().1.as_tensor().clone();
        save(&source, dir.path(), |n| Some(n.to_string()), vec![("wte.weight", wte)]);
        let err = load_pretrained(&decoder(2, 12), Family::Gpt2, 2, dir.path()).unwrap_err().to_string();
        assert!(err.contains("holds both `transformer.wte.weight` and `wte.weight`"), "{err}");
        // What the shapes do not show, from config.json: heads, activation, an untied head.
        save(&source, dir.path(), |n| Some(n.to_string()), vec![]);
        let config = dir.path().join("config.json");
        std::fs::write(&config, r#"{"model_type": "gpt2", "n_head": 4, "activation_function": "relu"}"#).unwrap();
        let err = load_pretrained(&decoder(2, 12), Family::Gpt2, 2, dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("n_head is 4, the model has 2 heads") && err.contains("activation_function is `relu`"),
            "{err}"
        );
        std::fs::write(&config, r#"{"model_type": "gpt2", "n_head": 2, "tie_word_embeddings": false}"#).unwrap();
        let err = load_pretrained(&decoder(2, 12), Family::Gpt2, 2, dir.path()).unwrap_err().to_string();
        assert!(err.contains("tie_word_embeddings is false"), "{err}");
        std::fs::write(&config, r#"{"model_type": "gpt2", "n_head": 2, "activation_function": "gelu_new"}"#).unwrap();
        load_pretrained(&decoder(2, 12), Family::Gpt2, 2, dir.path()).unwrap();
        std::fs::remove_file(&config).unwrap();
        // No weights at all.
        let empty = tempfile::tempdir().unwrap();
        let err = load_pretrained(&decoder(2, 12), Family::Gpt2, 2, empty.path()).unwrap_err().to_string();
        assert!(err.contains("holds no model.safetensors"), "{err}");
    }
}
