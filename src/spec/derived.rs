//! Facts that follow from a checked spec alone: the sources of a run, the model a task trains
//! by default, which paths are remote, T5's span lengths. The stages use these instead of
//! deciding them again, and the rules use them to check a spec without importing a stage.

use super::*;

/// One source of a run: the single `source`, or one member of `sources`.
#[derive(Debug, Clone)]
pub struct Member {
    /// The member's name (`None` for a single `source`).
    pub name: Option<String>,
    pub weight: f64,
    pub spec: SourceSpec,
    /// The YAML path of its section, for errors: `["source"]` or `["sources", "<i>"]`.
    pub at: Vec<String>,
}

impl Member {
    /// The YAML path of `key` in this source's section.
    pub fn key<'a>(&'a self, key: &'a str) -> Vec<&'a str> {
        self.at.iter().map(String::as_str).chain(std::iter::once(key)).collect()
    }

    /// How messages name this source: `source` or `sources[i] (name)`.
    pub fn label(&self) -> String {
        match &self.name {
            None => "source".into(),
            Some(n) => format!("source `{n}`"),
        }
    }
}

impl TaskSpec {
    /// The task's name as written in YAML (`mlm`, …).
    pub fn name(&self) -> &'static str {
        match self {
            TaskSpec::Mlm(_) => "mlm",
            TaskSpec::Causal(_) => "causal",
            TaskSpec::Span(_) => "span",
            TaskSpec::ContrastiveText(_) => "contrastive_text",
            TaskSpec::Denoise(_) => "denoise",
            TaskSpec::ContrastiveImage(_) => "contrastive_image",
            TaskSpec::Mae(_) => "mae",
            TaskSpec::DenoiseImage(_) => "denoise_image",
            TaskSpec::Scarf(_) => "scarf",
            TaskSpec::Vime(_) => "vime",
        }
    }
}

impl PipelineSpec {
    /// The task's name as written in YAML (`mlm`, …).
    pub fn task_name(&self) -> &'static str {
        self.task.name()
    }

    /// Every source of the run, in the order written.
    pub fn members(&self) -> Vec<Member> {
        match &self.source {
            Some(s) => vec![Member { name: None, weight: 1.0, spec: s.clone(), at: vec!["source".into()] }],
            None => self
                .sources
                .iter()
                .enumerate()
                .map(|(i, m)| Member {
                    name: Some(m.name.clone()),
                    weight: m.weight,
                    spec: m.source(),
                    at: vec!["sources".into(), i.to_string()],
                })
                .collect(),
        }
    }

    /// The single source, or the first member of a mixture (for settings all members share).
    pub fn primary_source(&self) -> SourceSpec {
        self.members().into_iter().next().map(|m| m.spec).unwrap_or_else(|| SourceSpec {
            path: String::new(),
            format: None,
            version: None,
            as_of: None,
            storage_options: Default::default(),
            retry: Default::default(),
            sql: None,
            text_column: "text".into(),
            key_column: None,
            image_column: "image".into(),
            image_shape: None,
            label_column: None,
        })
    }
}

/// Whether a storage option holds a credential (never written to manifests or checkpoints).
pub fn is_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["secret", "token", "password", "access_key", "account_key", "sas", "service_account_key", "client_secret"]
        .iter()
        .any(|s| k.contains(s))
}

/// The model each task trains by default, and the YAML name of its kind.
pub fn default_model(task: &TaskSpec) -> ModelSpec {
    match task {
        TaskSpec::Mlm(_) | TaskSpec::ContrastiveText(_) => ModelSpec::Encoder(EncoderSpec::default()),
        TaskSpec::Causal(_) => ModelSpec::Decoder(BlockSizes::default()),
        TaskSpec::Span(_) | TaskSpec::Denoise(_) => ModelSpec::Seq2seq(BlockSizes::default()),
        TaskSpec::ContrastiveImage(_) | TaskSpec::Mae(_) | TaskSpec::DenoiseImage(_) => {
            ModelSpec::Vit(VitSpec::default())
        }
        TaskSpec::Scarf(_) | TaskSpec::Vime(_) => ModelSpec::Mlp(MlpSpec::default()),
    }
}

/// The model kinds a task can train (the first is its default).
pub fn allowed_models(task: &TaskSpec) -> &'static [&'static str] {
    match task {
        TaskSpec::Mlm(_) | TaskSpec::ContrastiveText(_) => &["encoder"],
        TaskSpec::Causal(_) => &["decoder"],
        TaskSpec::Span(_) | TaskSpec::Denoise(_) => &["seq2seq"],
        TaskSpec::ContrastiveImage(_) => &["vit", "cnn"],
        TaskSpec::DenoiseImage(_) | TaskSpec::Mae(_) => &["vit"],
        TaskSpec::Scarf(_) | TaskSpec::Vime(_) => &["mlp"],
    }
}

impl ModelSpec {
    /// `encoder`, `decoder` or `seq2seq`.
    pub fn kind(&self) -> &'static str {
        match self {
            ModelSpec::Encoder(_) => "encoder",
            ModelSpec::Decoder(_) => "decoder",
            ModelSpec::Seq2seq(_) => "seq2seq",
            ModelSpec::Vit(_) => "vit",
            ModelSpec::Cnn(_) => "cnn",
            ModelSpec::Mlp(_) => "mlp",
        }
    }

    /// The transformer sizes (`None` for the CNN and the MLP).
    pub fn sizes(&self) -> Option<BlockSizes> {
        match self {
            ModelSpec::Encoder(e) => Some(e.sizes()),
            ModelSpec::Decoder(s) | ModelSpec::Seq2seq(s) => Some(s.clone()),
            ModelSpec::Vit(v) => {
                Some(BlockSizes { layers: v.layers, hidden: v.hidden, heads: v.heads, ffn: None, dropout: 0.0 })
            }
            ModelSpec::Cnn(_) | ModelSpec::Mlp(_) => None,
        }
    }
}

/// A parsed `train.device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    Auto,
    Cpu,
    Cuda(usize),
}

impl DeviceChoice {
    pub fn parse(s: &str) -> Option<DeviceChoice> {
        match s {
            "auto" => Some(DeviceChoice::Auto),
            "cpu" => Some(DeviceChoice::Cpu),
            "cuda" => Some(DeviceChoice::Cuda(0)),
            _ => s.strip_prefix("cuda:").and_then(|n| n.parse().ok()).map(DeviceChoice::Cuda),
        }
    }
}

// T5's length arithmetic for span corruption: the rule on `task.span.seq_len` needs it, and
// the task cuts its rows by it.

/// `(inputs, targets)` lengths of a raw span of `tokens` (T5's
/// `_tokens_length_to_inputs_length_targets_length`): one sentinel per noise span, plus EOS.
pub fn lengths_for(tokens: usize, noise_density: f64, mean_span: f64) -> (usize, usize) {
    let noise = (tokens as f64 * noise_density).round_ties_even() as usize;
    let nonnoise = tokens - noise;
    let spans = (noise as f64 / mean_span).round_ties_even() as usize;
    (nonnoise + spans + 1, noise + spans + 1)
}

/// T5's `compute_input_and_target_lengths`: the raw length whose corrupted inputs fill exactly
/// `inputs_len`, and the resulting target length. 512 → (568, 114).
pub fn compute_input_and_target_lengths(inputs_len: usize, noise_density: f64, mean_span: f64) -> (usize, usize) {
    let mut tokens = inputs_len;
    while lengths_for(tokens + 1, noise_density, mean_span).0 <= inputs_len {
        tokens += 1;
    }
    let (_, mut targets) = lengths_for(tokens, noise_density, mean_span);
    // T5's "minor hack" so that targets do not exceed inputs at density 0.5.
    if noise_density == 0.5 && targets > inputs_len {
        tokens -= 1;
        targets -= 1;
    }
    (tokens, targets)
}

/// The smallest `seq_len` whose raw span holds at least one noise span.
pub fn min_seq_len(noise_density: f64, mean_span: f64) -> usize {
    (2..100_000)
        .find(|&l| {
            let (raw, _) = compute_input_and_target_lengths(l, noise_density, mean_span);
            let noise = (raw as f64 * noise_density).round_ties_even() as usize;
            noise >= 1 && noise < raw && (noise as f64 / mean_span).round_ties_even() >= 1.0
        })
        .unwrap_or(100_000)
}

const SCHEMES: &[&str] = &["s3", "s3a", "gs", "gcs", "az", "azure", "abfs", "abfss"];

/// Whether `path` names an object-store location rather than a local path.
pub fn is_remote(path: &str) -> bool {
    path.split_once("://").is_some_and(|(scheme, _)| SCHEMES.contains(&scheme.to_ascii_lowercase().as_str()))
}
