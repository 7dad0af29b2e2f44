//! The typed pipeline file. Doc comments here become the JSON Schema descriptions that editors
//! show, so they are written for users.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A pretext pipeline: where rows come from, how text becomes tokens, which pretext objective
/// turns tokens into examples, how examples are streamed, and where they are exported.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// Name of the pipeline; the default export directory is `out/<name>`.
    pub name: String,
    /// Seed of every random decision; same seed and data give byte-identical output.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Where rows come from (read through DataFusion). Give `source` or `sources`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceSpec>,
    /// A weighted mixture of named sources, interleaved by a deterministic schedule; each
    /// example carries its source's name in the `source` column.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<MixSourceSpec>,
    /// How a mixture of `sources` ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mixture: Option<MixtureSpec>,
    /// How text becomes token ids. Default: the built-in byte-level vocabulary.
    #[serde(default)]
    pub tokenizer: TokenizerSpec,
    /// The pretext objective (exactly one).
    pub task: TaskSpec,
    /// Shuffling, epochs, parallelism, sharding and batching.
    #[serde(default)]
    pub stream: StreamSpec,
    /// Where `pretext export` writes the dataset.
    #[serde(default)]
    pub export: ExportSpec,
    /// Training settings for `pretext train`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<TrainSpec>,
}

fn default_seed() -> u64 {
    42
}

/// File formats the source can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Parquet,
    Arrow,
    Csv,
    Jsonl,
    /// A Delta Lake table (a directory with `_delta_log/`): the data files of one table version.
    Delta,
    /// Ready-made examples: a `pretext export` directory (or Parquet files with the task's
    /// columns). The tokenizer and the task are not run; the task section must match the export.
    Pretext,
}

/// Where rows come from.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// A file, a directory (hive-style `key=value/` directories become columns) or a glob,
    /// relative to the pipeline file; or an object-store URL (`s3://bucket/prefix`, `gs://…`,
    /// `az://…`), with or without a glob.
    pub path: String,
    /// File format; inferred from the file extensions (or a `_delta_log/` directory) when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    /// Delta tables: read this table version instead of the newest (time travel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// Delta tables: read the newest version committed at or before this RFC 3339 timestamp
    /// (e.g. `2026-11-01T00:00:00Z`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_of: Option<String>,
    /// Object-store settings for `s3://`, `gs://` and `az://` paths, added to the usual
    /// environment variables (`AWS_ACCESS_KEY_ID`, `AWS_REGION`, `GOOGLE_SERVICE_ACCOUNT`,
    /// `AZURE_STORAGE_ACCOUNT_NAME`, …): e.g. `endpoint: http://127.0.0.1:9000`,
    /// `allow_http: "true"`, `region: eu-west-1`. Keys are object_store's configuration keys.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub storage_options: std::collections::BTreeMap<String, OptionValue>,
    /// Object stores: how long a request that fails for a passing reason (a 5xx, a throttle, a
    /// reset or a timeout) is retried before the run stops with a message saying so.
    #[serde(default)]
    pub retry: RetrySpec,
    /// Optional SQL over the table named `source` (filters, projections, expressions), applied to
    /// each file in scan order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
    /// The string column holding the text.
    #[serde(default = "default_text_column")]
    pub text_column: String,
    /// Optional column giving each row a stable key: its value when it is an integer, a stable
    /// 64-bit hash otherwise. Without it the key is a hash of (file, row).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_column: Option<String>,
    /// Image tasks: the column holding the images, as encoded PNG / JPEG bytes (binary) or as
    /// planar pixel arrays (lists of u8 in 0-255 or f32 in 0-1, with `image_shape`).
    #[serde(default = "default_image_column")]
    pub image_column: String,
    /// `[channels, height, width]` of pixel-array images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_shape: Option<[u32; 3]>,
    /// Image and tabular tasks: an integer column passed through as `label` (for linear probes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_column: Option<String>,
}

/// One member of a mixture: a named source with a weight.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MixSourceSpec {
    /// The name written in each example's `source` column and in the per-source counts.
    pub name: String,
    /// This source's share of the examples, relative to the others' (normalised to sum to 1).
    #[serde(default = "default_weight")]
    pub weight: f64,
    /// As `source.path`.
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
    #[serde(default = "default_text_column")]
    pub text_column: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_column: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_of: Option<String>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub storage_options: std::collections::BTreeMap<String, OptionValue>,
    #[serde(default)]
    pub retry: RetrySpec,
    #[serde(default = "default_image_column")]
    pub image_column: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_shape: Option<[u32; 3]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_column: Option<String>,
}

fn default_weight() -> f64 {
    1.0
}

impl MixSourceSpec {
    /// The member as a plain source.
    pub fn source(&self) -> SourceSpec {
        SourceSpec {
            path: self.path.clone(),
            format: self.format,
            version: self.version,
            as_of: self.as_of.clone(),
            storage_options: self.storage_options.clone(),
            retry: self.retry,
            sql: self.sql.clone(),
            text_column: self.text_column.clone(),
            key_column: self.key_column.clone(),
            image_column: self.image_column.clone(),
            image_shape: self.image_shape,
            label_column: self.label_column.clone(),
        }
    }
}

/// How a mixture ends.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MixtureSpec {
    /// `first_exhausted` (default): stop when any source runs out, so the weights hold exactly.
    /// `all_exhausted`: a source that runs out starts its next epoch until every source has
    /// run out once. `cycle`: never stop (training; each source restarts as it runs out).
    #[serde(default)]
    pub stop: MixtureStop,
}

/// See [`MixtureSpec::stop`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MixtureStop {
    #[default]
    FirstExhausted,
    AllExhausted,
    Cycle,
}

/// How requests to an object store are retried. A failure that a later try can cure (a 5xx
/// status, 429 / SlowDown, a connection reset, a timeout, a body cut short, while listing,
/// reading or writing) is retried with exponential backoff and jitter until `timeout_s` has
/// passed since the request's first try. Failures no retry can cure (a missing bucket or
/// object, refused credentials, an endpoint that does not answer when the store is first
/// reached) are reported at once.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// Seconds one request keeps being retried (covers an outage this long).
    #[serde(default = "default_retry_timeout_s")]
    #[schemars(range(min = 0.0, max = 86400.0))]
    pub timeout_s: f64,
    /// Most retries of one request.
    #[serde(default = "default_retry_max_retries")]
    #[schemars(range(max = 1000))]
    pub max_retries: u32,
    /// The first wait between tries, in seconds; each later wait is drawn up to twice the one
    /// before, at most `max_backoff_s`.
    #[serde(default = "default_retry_backoff_s")]
    #[schemars(range(min = 0.001, max = 60.0))]
    pub backoff_s: f64,
    /// The longest wait between two tries, in seconds.
    #[serde(default = "default_retry_max_backoff_s")]
    #[schemars(range(min = 0.001, max = 600.0))]
    pub max_backoff_s: f64,
}

impl Default for RetrySpec {
    fn default() -> Self {
        RetrySpec {
            timeout_s: default_retry_timeout_s(),
            max_retries: default_retry_max_retries(),
            backoff_s: default_retry_backoff_s(),
            max_backoff_s: default_retry_max_backoff_s(),
        }
    }
}

fn default_retry_timeout_s() -> f64 {
    120.0
}

fn default_retry_max_retries() -> u32 {
    30
}

fn default_retry_backoff_s() -> f64 {
    0.1
}

fn default_retry_max_backoff_s() -> f64 {
    10.0
}

/// A storage option's value: written as a string, a boolean or a number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum OptionValue {
    Text(String),
    Flag(bool),
    Number(serde_json::Number),
}

impl std::fmt::Display for OptionValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OptionValue::Text(s) => f.write_str(s),
            OptionValue::Flag(b) => write!(f, "{b}"),
            OptionValue::Number(n) => write!(f, "{n}"),
        }
    }
}

fn default_image_column() -> String {
    "image".into()
}

fn default_text_column() -> String {
    "text".into()
}

/// How text becomes token ids (exactly one choice).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TokenizerSpec {
    /// A HuggingFace `tokenizer.json` (its padding and truncation settings are ignored).
    File(String),
    /// Train a vocabulary on a sample of the source; saved beside the export.
    Train(TrainTokenizerSpec),
    /// Built-in byte-level vocabulary: 256 byte ids followed by the special tokens.
    Bytes(BytesSpec),
}

impl Default for TokenizerSpec {
    fn default() -> Self {
        TokenizerSpec::Bytes(BytesSpec {})
    }
}

/// Options of the built-in byte tokenizer (none yet).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BytesSpec {}

/// Vocabulary models that `tokenizer.train` can build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TokenizerModel {
    /// BERT-style WordPiece (lower-cased, `[CLS] … [SEP]`).
    Wordpiece,
    /// Byte-level BPE (RoBERTa-style `<s> … </s>`).
    Bpe,
}

/// Train a tokenizer on the first `sample_rows` texts of the source.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainTokenizerSpec {
    /// `wordpiece` or `bpe`.
    #[serde(default = "default_model")]
    pub model: TokenizerModel,
    /// Target vocabulary size, special tokens included.
    #[serde(default = "default_vocab_size")]
    #[schemars(range(min = 300, max = 1000000))]
    pub vocab_size: u32,
    /// How many source texts (in scan order) to train on.
    #[serde(default = "default_sample_rows")]
    #[schemars(range(min = 1))]
    pub sample_rows: u64,
    /// Pieces seen fewer times are not added.
    #[serde(default = "default_min_frequency")]
    pub min_frequency: u64,
}

fn default_model() -> TokenizerModel {
    TokenizerModel::Wordpiece
}
fn default_vocab_size() -> u32 {
    8000
}
fn default_sample_rows() -> u64 {
    50_000
}
fn default_min_frequency() -> u64 {
    2
}

/// The pretext objective (exactly one choice).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TaskSpec {
    /// Masked language modelling (BERT / HuggingFace `DataCollatorForLanguageModeling`).
    Mlm(MlmSpec),
    /// Next-token prediction over packed documents (GPT-2 / Megatron).
    Causal(CausalSpec),
    /// T5 span corruption.
    Span(SpanSpec),
    /// Two views of each document for contrastive training (SimCSE / DeCLUTR).
    ContrastiveText(ContrastiveTextSpec),
    /// BART-style denoising: text infilling, token deletion, sentence permutation.
    Denoise(DenoiseSpec),
    /// Augmented views of each image (SimCLR, BYOL, MoCo v2).
    ContrastiveImage(ContrastiveImageSpec),
    /// Masked-autoencoder images and patch masks.
    Mae(MaeSpec),
    /// Noisy and clean copies of each image.
    DenoiseImage(DenoiseImageSpec),
    /// Tabular rows with a fixed share of features corrupted from their marginals.
    Scarf(ScarfSpec),
    /// Tabular rows with features masked at random and replaced from their marginals.
    Vime(VimeSpec),
}

impl TaskSpec {
    /// The task's `seq_len` (tokens per input row); for image and tabular tasks, the values per
    /// row of the widest column (pixels of one image, or features).
    pub fn seq_len(&self) -> u32 {
        let pixels = |i: &ImageInputSpec| i.channels.saturating_mul(i.size).saturating_mul(i.size);
        match self {
            TaskSpec::Mlm(t) => t.seq_len,
            TaskSpec::Causal(t) => t.seq_len,
            TaskSpec::Span(t) => t.seq_len,
            TaskSpec::ContrastiveText(t) => t.seq_len,
            TaskSpec::Denoise(t) => t.seq_len,
            TaskSpec::ContrastiveImage(t) => pixels(&t.image),
            TaskSpec::Mae(t) => pixels(&t.image),
            TaskSpec::DenoiseImage(t) => pixels(&t.image),
            TaskSpec::Scarf(t) => t.columns.len() as u32,
            TaskSpec::Vime(t) => t.columns.len() as u32,
        }
    }

    /// What the task reads: text, images or table columns.
    pub fn input(&self) -> TaskInput {
        match self {
            TaskSpec::ContrastiveImage(_) | TaskSpec::Mae(_) | TaskSpec::DenoiseImage(_) => TaskInput::Image,
            TaskSpec::Scarf(_) | TaskSpec::Vime(_) => TaskInput::Table,
            _ => TaskInput::Text,
        }
    }

    /// The feature columns of a tabular task.
    pub fn table_columns(&self) -> &[String] {
        match self {
            TaskSpec::Scarf(t) => &t.columns,
            TaskSpec::Vime(t) => &t.columns,
            _ => &[],
        }
    }
}

/// What a task reads from the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskInput {
    Text,
    Image,
    Table,
}

/// How causal rows are packed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PackMode {
    /// Concatenate and chunk: documents split across rows, no padding but in the last row.
    Greedy,
    /// Best-fit decreasing over a window of documents: documents kept whole where they fit,
    /// longer ones split into full rows; the padding share is reported.
    BestFit,
}

/// Next-token prediction. `labels` are aligned with `input_ids` (the model shifts, as in
/// HuggingFace causal-LM models).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CausalSpec {
    /// Tokens per row.
    #[serde(default = "default_causal_seq_len")]
    #[schemars(range(min = 2, max = 131072))]
    pub seq_len: u32,
    /// `greedy` (concatenate and chunk) or `best_fit` (documents kept whole where they fit).
    #[serde(default = "default_pack")]
    pub pack: PackMode,
    /// No loss on the first token of a document that follows another one in the row.
    #[serde(default)]
    pub mask_across_documents: bool,
    /// `position_ids` restart at 0 at every document start.
    #[serde(default = "default_true")]
    pub reset_position_ids: bool,
}

fn default_causal_seq_len() -> u32 {
    1024
}
fn default_pack() -> PackMode {
    PackMode::Greedy
}

/// T5 span corruption: input/target lengths computed so that no padding is needed.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SpanSpec {
    /// Length of `input_ids` (the raw span is longer: 512 → 568 raw, 114 targets).
    #[serde(default = "default_span_seq_len")]
    #[schemars(range(min = 2, max = 131072))]
    pub seq_len: u32,
    /// Share of raw tokens that are noise.
    #[serde(default = "default_noise_density")]
    #[schemars(range(min = 0.01, max = 0.99))]
    pub noise_density: f64,
    /// Mean length of a noise span.
    #[serde(default = "default_mean_span")]
    #[schemars(range(min = 1.0, max = 1000.0))]
    pub mean_noise_span_length: f64,
}

fn default_span_seq_len() -> u32 {
    512
}
fn default_noise_density() -> f64 {
    0.15
}
fn default_mean_span() -> f64 {
    3.0
}

/// A random contiguous crop of each view.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CropSpec {
    /// Shortest crop in tokens.
    #[schemars(range(min = 1))]
    pub min_tokens: u32,
    /// Longest crop in tokens.
    #[schemars(range(min = 1))]
    pub max_tokens: u32,
}

/// Two views per document; view generators compose in the order crop → dropout → mask.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContrastiveTextSpec {
    /// Tokens per view.
    #[serde(default = "default_seq_len")]
    #[schemars(range(min = 4, max = 131072))]
    pub seq_len: u32,
    /// SimCSE: both views are the document (the model's dropout is the augmentation).
    #[serde(default)]
    pub identical: bool,
    /// Random contiguous span per view (DeCLUTR-style).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crop: Option<CropSpec>,
    /// Each token dropped with this probability.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 0.99))]
    pub token_dropout: f64,
    /// Each token replaced by the mask token with this probability.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub mask_prob: f64,
}

/// BART-style denoising.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DenoiseSpec {
    /// Tokens per row.
    #[serde(default = "default_seq_len")]
    #[schemars(range(min = 4, max = 131072))]
    pub seq_len: u32,
    /// Share of tokens covered by masked spans (text infilling); 0 turns it off.
    #[serde(default = "default_mask_ratio")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub mask_spans: f64,
    /// Mean span length (Poisson λ).
    #[serde(default = "default_mean_span")]
    #[schemars(range(min = 0.1, max = 100.0))]
    pub poisson_lambda: f64,
    /// Each token deleted with this probability.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 0.99))]
    pub delete: f64,
    /// Shuffle the sentences (split after `.`, `!`, `?`).
    #[serde(default)]
    pub permute_sentences: bool,
}

/// Where the image tasks' pixels come from and how they are normalised.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageInputSpec {
    /// Side of the square images the task emits (pixels).
    #[serde(default = "default_image_size")]
    #[schemars(range(min = 4, max = 2048))]
    pub size: u32,
    /// Channels: 3 (RGB) or 1 (grey); sources are converted.
    #[serde(default = "default_channels")]
    #[schemars(range(min = 1, max = 3))]
    pub channels: u32,
    /// Per-channel mean subtracted after augmentation. Default: ImageNet's for RGB, 0.5 for grey.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<Vec<f64>>,
    /// Per-channel standard deviation divided by. Default: ImageNet's for RGB, 0.5 for grey.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std: Option<Vec<f64>>,
}

impl Default for ImageInputSpec {
    fn default() -> Self {
        ImageInputSpec { size: default_image_size(), channels: default_channels(), mean: None, std: None }
    }
}

fn default_image_size() -> u32 {
    224
}
fn default_channels() -> u32 {
    3
}

/// Named augmentation recipes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AugmentPreset {
    /// SimCLR: crop (0.08, 1), flip, jitter 0.8/0.8/0.8/0.2 at 0.8, grayscale 0.2, blur 0.5.
    #[default]
    Simclr,
    /// BYOL: asymmetric views (view a always blurred; view b blurred at 0.1, solarized at 0.2).
    Byol,
    /// MoCo v2: crop (0.2, 1), jitter 0.4/0.4/0.4/0.1 at 0.8, grayscale 0.2, blur 0.5, flip.
    MocoV2,
}

/// Random resized crop bounds.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RandomCropSpec {
    /// Range of the crop's area as a fraction of the image.
    #[serde(default = "default_crop_scale")]
    pub scale: [f64; 2],
    /// Range of the crop's aspect ratio (width / height).
    #[serde(default = "default_crop_ratio")]
    pub ratio: [f64; 2],
}

fn default_crop_scale() -> [f64; 2] {
    [0.08, 1.0]
}
fn default_crop_ratio() -> [f64; 2] {
    [3.0 / 4.0, 4.0 / 3.0]
}

/// Colour jitter (torchvision `ColorJitter`), applied with probability `p`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ColorJitterSpec {
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 10.0))]
    pub brightness: f64,
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 10.0))]
    pub contrast: f64,
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 10.0))]
    pub saturation: f64,
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 0.5))]
    pub hue: f64,
    #[serde(default = "default_jitter_p")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub p: f64,
}

fn default_jitter_p() -> f64 {
    0.8
}

/// Gaussian blur with a random sigma, applied with probability `p`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BlurSpec {
    #[serde(default = "default_half")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub p: f64,
    /// Range of the blur's sigma, in pixels.
    #[serde(default = "default_blur_sigma")]
    pub sigma: [f64; 2],
}

fn default_half() -> f64 {
    0.5
}
fn default_blur_sigma() -> [f64; 2] {
    [0.1, 2.0]
}

/// Solarize (`x ≥ threshold → 1 − x`, on `[0, 1]` pixels) with probability `p`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SolarizeSpec {
    #[serde(default = "default_solarize_p")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub p: f64,
    #[serde(default = "default_half")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub threshold: f64,
}

fn default_solarize_p() -> f64 {
    0.2
}

/// Overrides of the preset's transforms; each one given replaces it in every view.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AugmentSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crop: Option<RandomCropSpec>,
    /// Probability of a horizontal flip.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub flip: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color_jitter: Option<ColorJitterSpec>,
    /// Probability of turning the view grey.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub grayscale: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blur: Option<BlurSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub solarize: Option<SolarizeSpec>,
}

/// Augmented views of each image for contrastive training (SimCLR, BYOL, MoCo v2).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContrastiveImageSpec {
    /// Output size, channels and normalisation.
    #[serde(default)]
    pub image: ImageInputSpec,
    /// Views per image (columns `view_a`, `view_b`, …).
    #[serde(default = "default_views")]
    #[schemars(range(min = 2, max = 8))]
    pub views: u32,
    /// The augmentation recipe.
    #[serde(default)]
    pub preset: AugmentPreset,
    /// Changes to the preset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub augment: Option<AugmentSpec>,
}

fn default_views() -> u32 {
    2
}

/// Masked-autoencoder inputs (He et al. 2021): augmented images and a random patch mask.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MaeSpec {
    /// Output size, channels and normalisation.
    #[serde(default)]
    pub image: ImageInputSpec,
    /// Side of a square patch; divides `image.size`.
    #[serde(default = "default_patch_size")]
    #[schemars(range(min = 1, max = 1024))]
    pub patch_size: u32,
    /// Share of the patches masked (exactly `round(mask_ratio · patches)` per image).
    #[serde(default = "default_mae_ratio")]
    #[schemars(range(min = 0.0, max = 0.99))]
    pub mask_ratio: f64,
    /// Random resized crop before masking (the MAE recipe: scale (0.2, 1)).
    #[serde(default = "default_mae_crop")]
    pub crop: RandomCropSpec,
    /// Probability of a horizontal flip.
    #[serde(default = "default_half")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub flip: f64,
}

fn default_patch_size() -> u32 {
    16
}
fn default_mae_ratio() -> f64 {
    0.75
}
fn default_mae_crop() -> RandomCropSpec {
    RandomCropSpec { scale: [0.2, 1.0], ratio: default_crop_ratio() }
}

/// Random erasing (torchvision `RandomErasing`): a box of random area and ratio set to `value`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EraseSpec {
    #[serde(default = "default_erase_p")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub p: f64,
    #[serde(default = "default_erase_scale")]
    pub scale: [f64; 2],
    #[serde(default = "default_erase_ratio")]
    pub ratio: [f64; 2],
    /// Fill value on `[0, 1]` pixels.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub value: f64,
}

fn default_erase_p() -> f64 {
    1.0
}
fn default_erase_scale() -> [f64; 2] {
    [0.02, 0.33]
}
fn default_erase_ratio() -> [f64; 2] {
    [0.3, 3.3]
}

/// Denoising-autoencoder pairs: a corrupted and a clean copy of each image.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DenoiseImageSpec {
    /// Output size, channels and normalisation.
    #[serde(default)]
    pub image: ImageInputSpec,
    /// Standard deviation of additive gaussian noise on `[0, 1]` pixels; 0 turns it off.
    #[serde(default = "default_noise_sigma")]
    #[schemars(range(min = 0.0, max = 10.0))]
    pub gaussian: f64,
    /// Share of pixels set to black or white (salt and pepper); 0 turns it off.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub salt_pepper: f64,
    /// Random erasing; off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erase: Option<EraseSpec>,
}

fn default_noise_sigma() -> f64 {
    0.1
}

/// SCARF (Bahri et al. 2022): a fixed share of each row's features replaced by draws from the
/// column's empirical marginal.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScarfSpec {
    /// The feature columns, in order (numeric; categorical ones hold integer codes).
    pub columns: Vec<String>,
    /// Which of `columns` are categorical codes (nulls take the most frequent code, not the median).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categorical: Vec<String>,
    /// Share of each row's features corrupted: exactly `round(corruption_rate · columns)`.
    #[serde(default = "default_corruption_rate")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub corruption_rate: f64,
    /// Values kept per column (a seeded reservoir sample of the stream) to draw replacements from.
    #[serde(default = "default_reservoir")]
    #[schemars(range(min = 1, max = 1048576))]
    pub reservoir: u32,
    /// Standardise every numeric feature with the reservoir's mean and standard deviation
    /// (categorical codes stay as they are).
    #[serde(default)]
    pub standardize: bool,
}

fn default_corruption_rate() -> f64 {
    0.6
}
fn default_reservoir() -> u32 {
    4096
}

/// VIME (Yoon et al. 2020): each feature independently replaced, with probability `mask_prob`,
/// by a draw from the column's empirical marginal; the mask is the mask-estimation target.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VimeSpec {
    /// The feature columns, in order (numeric; categorical ones hold integer codes).
    pub columns: Vec<String>,
    /// Which of `columns` are categorical codes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categorical: Vec<String>,
    /// Probability that a feature is replaced.
    #[serde(default = "default_vime_p")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub mask_prob: f64,
    /// Values kept per column to draw replacements from.
    #[serde(default = "default_reservoir")]
    #[schemars(range(min = 1, max = 1048576))]
    pub reservoir: u32,
    /// Standardise every numeric feature with the reservoir's mean and standard deviation
    /// (categorical codes stay as they are).
    #[serde(default)]
    pub standardize: bool,
}

fn default_vime_p() -> f64 {
    0.3
}

fn default_mask_ratio() -> f64 {
    0.3
}

/// Masked language modelling with HuggingFace semantics.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MlmSpec {
    /// Tokens per example row.
    #[serde(default = "default_seq_len")]
    #[schemars(range(min = 8, max = 131072))]
    pub seq_len: u32,
    /// Share of non-special tokens selected for prediction.
    #[serde(default = "default_mask_prob")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub mask_prob: f64,
    /// Of the selected tokens, the share replaced by the mask token.
    #[serde(default = "default_mask_token_prob")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub mask_token_prob: f64,
    /// Of the selected tokens, the share replaced by a random non-special token; the rest stay.
    #[serde(default = "default_random_token_prob")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub random_token_prob: f64,
    /// `true`: documents are joined and cut into rows of `seq_len` (the tail row is padded);
    /// `false`: one document per row, truncated and padded.
    #[serde(default = "default_true")]
    pub packing: bool,
    /// Select whole words: all pieces of a word are masked together.
    #[serde(default)]
    pub whole_word: bool,
}

fn default_seq_len() -> u32 {
    128
}
fn default_mask_prob() -> f64 {
    0.15
}
fn default_mask_token_prob() -> f64 {
    0.8
}
fn default_random_token_prob() -> f64 {
    0.1
}
fn default_true() -> bool {
    true
}

/// Shuffling, epochs, parallelism, sharding and batching.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamSpec {
    /// Rows per batch handed to the sink.
    #[serde(default = "default_batch_size")]
    #[schemars(range(min = 1, max = 1048576))]
    pub batch_size: u32,
    /// `false` keeps source order; `{window_rows: N}` shuffles inside seeded windows of N rows.
    #[serde(default)]
    pub shuffle: ShuffleSpec,
    /// Passes over the source; every epoch draws fresh masks.
    #[serde(default = "default_epochs")]
    #[schemars(range(min = 1, max = 100000))]
    pub epochs: u32,
    /// CPU threads for tokenizing and task work: `auto` or a number.
    #[serde(default)]
    pub workers: Workers,
    /// This process's share of the data. Default: from `RANK` / `WORLD_SIZE`, else the whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardSpec>,
}

impl Default for StreamSpec {
    fn default() -> Self {
        StreamSpec {
            batch_size: default_batch_size(),
            shuffle: ShuffleSpec::default(),
            epochs: default_epochs(),
            workers: Workers::default(),
            shard: None,
        }
    }
}

fn default_batch_size() -> u32 {
    256
}
fn default_epochs() -> u32 {
    1
}

/// `false`, `true` (a window of 65,536 rows) or `{window_rows: N}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ShuffleSpec {
    Enabled(bool),
    Window(ShuffleWindow),
}

impl Default for ShuffleSpec {
    fn default() -> Self {
        ShuffleSpec::Enabled(false)
    }
}

impl ShuffleSpec {
    /// The window size, or `None` when shuffling is off.
    pub fn window_rows(&self) -> Option<usize> {
        match self {
            ShuffleSpec::Enabled(false) => None,
            ShuffleSpec::Enabled(true) => Some(65_536),
            ShuffleSpec::Window(w) => Some(w.window_rows as usize),
        }
    }
}

/// A seeded shuffle inside windows of `window_rows` examples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShuffleWindow {
    /// Rows per shuffle window (memory grows with it).
    #[schemars(range(min = 2, max = 16777216))]
    pub window_rows: u32,
}

/// `auto` (one per core) or an explicit thread count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Workers {
    Auto(AutoKeyword),
    Count(#[schemars(range(min = 1, max = 1024))] u32),
}

impl Default for Workers {
    fn default() -> Self {
        Workers::Auto(AutoKeyword::Auto)
    }
}

impl Workers {
    /// The number of worker threads to use.
    pub fn resolve(&self) -> usize {
        match self {
            Workers::Auto(_) => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            Workers::Count(n) => *n as usize,
        }
    }
}

/// The keyword `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AutoKeyword {
    Auto,
}

/// One rank's disjoint share of the documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShardSpec {
    /// This process's index, `0 ≤ rank < world_size`.
    #[schemars(range(max = 1000000))]
    pub rank: u32,
    /// Number of processes sharing the data.
    #[schemars(range(min = 1, max = 1000000))]
    pub world_size: u32,
}

/// Parquet compression codecs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Zstd,
    Snappy,
    Lz4,
    None,
}

/// Where and how `pretext export` writes.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportSpec {
    /// Output directory (relative to the working directory). Default: `out/<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Rows per `part-NNNNN.parquet` file.
    #[serde(default = "default_rows_per_file")]
    #[schemars(range(min = 1))]
    pub rows_per_file: u64,
    /// Parquet compression codec.
    #[serde(default = "default_compression")]
    pub compression: Compression,
    /// zstd level (1 fastest … 22 smallest).
    #[serde(default = "default_zstd_level")]
    #[schemars(range(min = 1, max = 22))]
    pub zstd_level: i32,
    /// Rows per Parquet row group.
    #[serde(default = "default_row_group_rows")]
    #[schemars(range(min = 1, max = 16777216))]
    pub row_group_rows: u32,
    /// Object-store settings when `path` is `s3://…`, `gs://…` or `az://…` (see
    /// `source.storage_options`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub storage_options: std::collections::BTreeMap<String, OptionValue>,
    /// As `source.retry`, for the requests that write the export.
    #[serde(default)]
    pub retry: RetrySpec,
}

impl Default for ExportSpec {
    fn default() -> Self {
        ExportSpec {
            path: None,
            rows_per_file: default_rows_per_file(),
            compression: default_compression(),
            zstd_level: default_zstd_level(),
            row_group_rows: default_row_group_rows(),
            storage_options: Default::default(),
            retry: RetrySpec::default(),
        }
    }
}

fn default_rows_per_file() -> u64 {
    100_000
}
fn default_compression() -> Compression {
    Compression::Zstd
}
fn default_zstd_level() -> i32 {
    3
}
fn default_row_group_rows() -> u32 {
    8192
}

/// How `pretext train` trains a model on the stream. Training runs `steps` optimizer steps,
/// starting a new epoch (fresh masks, new shuffle) whenever the source runs out; `stream.epochs`
/// applies to exports only.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec {
    /// The model (exactly one): `encoder` for `mlm` and `contrastive_text`, `decoder` for
    /// `causal`, `seq2seq` for `span` and `denoise`. Default: the task's model, default sizes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelSpec>,
    /// The optimizer.
    #[serde(default)]
    pub optimizer: OptimizerSpec,
    /// Learning-rate schedule: linear warmup, then decay.
    #[serde(default)]
    pub schedule: ScheduleSpec,
    /// Rows per training batch. Default: `stream.batch_size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1048576))]
    pub batch_size: Option<u32>,
    /// Optimizer steps to run (each uses `accumulate` batches).
    #[serde(default = "default_steps")]
    #[schemars(range(min = 1, max = 1000000000))]
    pub steps: u64,
    /// Batches whose gradients are summed before each optimizer step.
    #[serde(default = "default_one")]
    #[schemars(range(min = 1, max = 65536))]
    pub accumulate: u32,
    /// Clip gradients to this global L2 norm; `0` disables clipping.
    #[serde(default = "default_clip")]
    #[schemars(range(min = 0.0))]
    pub clip_grad_norm: f64,
    /// `auto` (CUDA when built with `--features cuda` and a GPU is present, else CPU), `cpu` or `cuda:N`.
    #[serde(default = "default_device")]
    pub device: String,
    /// Parameter and activation type: `f32`, or `bf16` on CUDA (bf16 weights and activations,
    /// f32 master weights in the optimizer, losses in f32).
    #[serde(default)]
    pub dtype: DTypeSpec,
    /// Ready batches queued between the pipeline and the trainer.
    #[serde(default = "default_prefetch")]
    #[schemars(range(min = 1, max = 1024))]
    pub prefetch: u32,
    /// Write a metrics line every this many steps.
    #[serde(default = "default_log_every")]
    #[schemars(range(min = 1))]
    pub log_every: u64,
    /// Temperature of the contrastive loss (InfoNCE / NT-Xent). Default: 0.05 for
    /// `contrastive_text` (SimCSE), 0.5 for `contrastive_image` (SimCLR), 1.0 for `scarf` (SCARF).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0001, max = 100.0))]
    pub temperature: Option<f64>,
    /// `contrastive_image`: train BYOL (an EMA target network and a predictor; no negatives)
    /// instead of SimCLR's NT-Xent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub byol: Option<ByolSpec>,
    /// MAE: reconstruct each patch normalised by its own mean and variance (the paper's better
    /// setting; the reference code's default is off).
    #[serde(default)]
    pub norm_pix_loss: bool,
    /// Collapse monitor: warn when the per-dimension standard deviation of the l2-normalised
    /// embeddings, times √dim (≈ 1 when healthy, 0 when every input maps to one point), falls
    /// below this. Checked at every eval (every `log_every` steps without eval).
    #[serde(default = "default_collapse_threshold")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub collapse_threshold: f64,
    /// Run directory, checkpoint interval and how many checkpoints to keep.
    #[serde(default)]
    pub checkpoint: CheckpointSpec,
    /// Held-out evaluation on a deterministic split of the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval: Option<EvalSpec>,
    /// Start from the weights of a HuggingFace `transformers` model directory (or a
    /// `.safetensors` file) instead of a random initialisation: a BERT checkpoint for the
    /// `encoder`, a GPT-2 one for the `decoder`, of the sizes `model` gives (a longer position
    /// table is cut to `seq_len`; a head the checkpoint lacks starts fresh). Relative to the
    /// pipeline file. Applies when a run starts, not when it resumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<String>,
}

fn default_steps() -> u64 {
    1000
}
fn default_one() -> u32 {
    1
}
fn default_clip() -> f64 {
    1.0
}
fn default_device() -> String {
    "auto".into()
}
fn default_prefetch() -> u32 {
    4
}
fn default_log_every() -> u64 {
    10
}
fn default_collapse_threshold() -> f64 {
    0.1
}

/// BYOL (Grill et al. 2020).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ByolSpec {
    /// Base EMA rate of the target network, raised to 1 over training by a cosine (BYOL: 0.996).
    #[serde(default = "default_byol_ema")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub ema: f64,
    /// Hidden size of the predictor MLP (BYOL: 4096 for a 256-wide projection).
    #[serde(default = "default_predictor_hidden")]
    #[schemars(range(min = 2, max = 65536))]
    pub predictor_hidden: u32,
}

fn default_byol_ema() -> f64 {
    0.996
}
fn default_predictor_hidden() -> u32 {
    512
}

/// Floating-point type of the model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DTypeSpec {
    #[default]
    F32,
    Bf16,
}

/// The model (exactly one choice).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ModelSpec {
    /// BERT-style encoder: post-LN blocks, GELU, MLM head tied to the embeddings.
    Encoder(EncoderSpec),
    /// GPT-2-style decoder: pre-LN blocks, causal attention inside each packed document.
    Decoder(BlockSizes),
    /// T5-style encoder-decoder with relative position buckets.
    Seq2seq(BlockSizes),
    /// Vision transformer (patch embedding by reshape + matmul, pre-LN blocks, mean pooling),
    /// with an MAE decoder for `mae` and a pixel head for `denoise_image`.
    Vit(VitSpec),
    /// Small ResNet-style CNN (3×3 convolutions, group norm, global average pooling) for
    /// `contrastive_image`.
    Cnn(CnnSpec),
    /// MLP encoder for tabular tasks (SCARF / VIME).
    Mlp(MlpSpec),
}

/// Vision transformer sizes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VitSpec {
    /// Side of a square patch; divides the image size. `mae` uses the task's `patch_size`.
    #[serde(default = "default_vit_patch")]
    #[schemars(range(min = 1, max = 1024))]
    pub patch_size: u32,
    #[serde(default = "default_layers")]
    #[schemars(range(min = 1, max = 256))]
    pub layers: u32,
    /// Hidden size; a multiple of `heads`.
    #[serde(default = "default_vit_hidden")]
    #[schemars(range(min = 8, max = 65536))]
    pub hidden: u32,
    #[serde(default = "default_vit_heads")]
    #[schemars(range(min = 1, max = 1024))]
    pub heads: u32,
    /// MAE decoder blocks (`mae` only).
    #[serde(default = "default_decoder_layers")]
    #[schemars(range(min = 1, max = 64))]
    pub decoder_layers: u32,
    /// MAE decoder hidden size (`mae` only); a multiple of `heads`.
    #[serde(default = "default_decoder_hidden")]
    #[schemars(range(min = 8, max = 65536))]
    pub decoder_hidden: u32,
    /// Output size of the projection head (contrastive tasks).
    #[serde(default = "default_projection")]
    #[schemars(range(min = 2, max = 65536))]
    pub projection: u32,
}

impl Default for VitSpec {
    fn default() -> Self {
        VitSpec {
            patch_size: default_vit_patch(),
            layers: default_layers(),
            hidden: default_vit_hidden(),
            heads: default_vit_heads(),
            decoder_layers: default_decoder_layers(),
            decoder_hidden: default_decoder_hidden(),
            projection: default_projection(),
        }
    }
}

fn default_vit_patch() -> u32 {
    8
}
fn default_vit_hidden() -> u32 {
    192
}
fn default_vit_heads() -> u32 {
    3
}
fn default_decoder_layers() -> u32 {
    2
}
fn default_decoder_hidden() -> u32 {
    96
}
fn default_projection() -> u32 {
    128
}

/// CNN sizes: one stage per entry of `widths`, each a stride-2 3×3 convolution and a residual
/// block, then global average pooling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CnnSpec {
    #[serde(default = "default_cnn_widths")]
    pub widths: Vec<u32>,
    /// Output size of the projection head (contrastive tasks).
    #[serde(default = "default_projection")]
    #[schemars(range(min = 2, max = 65536))]
    pub projection: u32,
}

impl Default for CnnSpec {
    fn default() -> Self {
        CnnSpec { widths: default_cnn_widths(), projection: default_projection() }
    }
}

fn default_cnn_widths() -> Vec<u32> {
    vec![32, 64, 128]
}

/// MLP encoder sizes (SCARF: 4 layers of 256 with ReLU; a 2-layer projection head).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MlpSpec {
    #[serde(default = "default_mlp_layers")]
    #[schemars(range(min = 1, max = 64))]
    pub layers: u32,
    #[serde(default = "default_mlp_hidden")]
    #[schemars(range(min = 2, max = 65536))]
    pub hidden: u32,
    /// Output size of the projection head (`scarf`).
    #[serde(default = "default_mlp_hidden")]
    #[schemars(range(min = 2, max = 65536))]
    pub projection: u32,
    /// Dropout after each hidden layer.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 0.9))]
    pub dropout: f64,
}

impl Default for MlpSpec {
    fn default() -> Self {
        MlpSpec {
            layers: default_mlp_layers(),
            hidden: default_mlp_hidden(),
            projection: default_mlp_hidden(),
            dropout: 0.0,
        }
    }
}

fn default_mlp_layers() -> u32 {
    4
}
fn default_mlp_hidden() -> u32 {
    256
}

/// Transformer sizes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BlockSizes {
    /// Transformer blocks (per stack for `seq2seq`).
    #[serde(default = "default_layers")]
    #[schemars(range(min = 1, max = 256))]
    pub layers: u32,
    /// Hidden size; a multiple of `heads`.
    #[serde(default = "default_hidden")]
    #[schemars(range(min = 8, max = 65536))]
    pub hidden: u32,
    /// Attention heads.
    #[serde(default = "default_heads")]
    #[schemars(range(min = 1, max = 1024))]
    pub heads: u32,
    /// Feed-forward size. Default: 4 × hidden.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1048576))]
    pub ffn: Option<u32>,
    /// Dropout probability on embeddings, attention weights and block outputs.
    #[serde(default = "default_dropout")]
    #[schemars(range(min = 0.0, max = 0.9))]
    pub dropout: f64,
}

impl Default for BlockSizes {
    fn default() -> Self {
        BlockSizes {
            layers: default_layers(),
            hidden: default_hidden(),
            heads: default_heads(),
            ffn: None,
            dropout: default_dropout(),
        }
    }
}

impl BlockSizes {
    /// The feed-forward size.
    pub fn ffn(&self) -> usize {
        self.ffn.map(|f| f as usize).unwrap_or(4 * self.hidden as usize)
    }
}

/// Encoder sizes, plus how `contrastive_text` pools a sequence into one vector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EncoderSpec {
    /// Transformer blocks.
    #[serde(default = "default_layers")]
    #[schemars(range(min = 1, max = 256))]
    pub layers: u32,
    /// Hidden size; a multiple of `heads`.
    #[serde(default = "default_hidden")]
    #[schemars(range(min = 8, max = 65536))]
    pub hidden: u32,
    /// Attention heads.
    #[serde(default = "default_heads")]
    #[schemars(range(min = 1, max = 1024))]
    pub heads: u32,
    /// Feed-forward size. Default: 4 × hidden.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1048576))]
    pub ffn: Option<u32>,
    /// Dropout probability on embeddings, attention weights and block outputs.
    #[serde(default = "default_dropout")]
    #[schemars(range(min = 0.0, max = 0.9))]
    pub dropout: f64,
    /// `mean` over real tokens, or the first (`cls`) token; then a dense + tanh projection.
    #[serde(default)]
    pub pooling: Pooling,
}

impl Default for EncoderSpec {
    fn default() -> Self {
        let s = BlockSizes::default();
        EncoderSpec {
            layers: s.layers,
            hidden: s.hidden,
            heads: s.heads,
            ffn: s.ffn,
            dropout: s.dropout,
            pooling: Pooling::default(),
        }
    }
}

impl EncoderSpec {
    /// The transformer sizes.
    pub fn sizes(&self) -> BlockSizes {
        BlockSizes { layers: self.layers, hidden: self.hidden, heads: self.heads, ffn: self.ffn, dropout: self.dropout }
    }
}

/// Sequence pooling for contrastive training.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    #[default]
    Mean,
    Cls,
}

fn default_layers() -> u32 {
    4
}
fn default_hidden() -> u32 {
    256
}
fn default_heads() -> u32 {
    4
}
fn default_dropout() -> f64 {
    0.1
}

/// The optimizer (exactly one choice).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum OptimizerSpec {
    /// AdamW with decoupled weight decay (none on biases and norm weights).
    Adamw(AdamWSpec),
}

impl Default for OptimizerSpec {
    fn default() -> Self {
        OptimizerSpec::Adamw(AdamWSpec::default())
    }
}

/// AdamW settings (PyTorch defaults but the learning rate).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdamWSpec {
    /// Peak learning rate.
    #[serde(default = "default_lr")]
    #[schemars(range(min = 0.0, max = 10.0))]
    pub lr: f64,
    /// Decoupled weight decay.
    #[serde(default = "default_weight_decay")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub weight_decay: f64,
    /// β₁ (first-moment decay).
    #[serde(default = "default_beta1")]
    #[schemars(range(min = 0.0, max = 0.99999))]
    pub beta1: f64,
    /// β₂ (second-moment decay).
    #[serde(default = "default_beta2")]
    #[schemars(range(min = 0.0, max = 0.99999999))]
    pub beta2: f64,
    /// Added to the denominator.
    #[serde(default = "default_eps")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub eps: f64,
}

impl Default for AdamWSpec {
    fn default() -> Self {
        AdamWSpec {
            lr: default_lr(),
            weight_decay: default_weight_decay(),
            beta1: default_beta1(),
            beta2: default_beta2(),
            eps: default_eps(),
        }
    }
}

fn default_lr() -> f64 {
    5e-4
}
fn default_weight_decay() -> f64 {
    0.01
}
fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.999
}
fn default_eps() -> f64 {
    1e-8
}

/// Linear warmup to the peak learning rate, then decay to `min_lr_ratio` × peak at `steps`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// Steps of linear warmup, a fixed count (it must not exceed `steps`). Give this or
    /// `warmup_ratio`, not both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_steps: Option<u64>,
    /// Warmup as a share of `train.steps`, rounded up (transformers' `warmup_ratio`). Default
    /// 0.06 when neither key is given, so the default fits any run length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub warmup_ratio: Option<f64>,
    /// `cosine`, `linear` or `constant` after warmup.
    #[serde(default)]
    pub decay: Decay,
    /// Final learning rate as a share of the peak.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_lr_ratio: f64,
}

impl ScheduleSpec {
    /// The warmup ratio used when the pipeline names neither `warmup_steps` nor `warmup_ratio`.
    pub const DEFAULT_WARMUP_RATIO: f64 = 0.06;

    /// Warmup steps for a run of `steps` optimizer steps: `warmup_steps` as written, else
    /// ⌈`warmup_ratio` × `steps`⌉ (never more than `steps`).
    pub fn warmup(&self, steps: u64) -> u64 {
        match self.warmup_steps {
            Some(n) => n,
            None => {
                let ratio = self.warmup_ratio.unwrap_or(Self::DEFAULT_WARMUP_RATIO).clamp(0.0, 1.0);
                // Less a hair, so that 0.1 × 300 (30.000000000000004 in f64) is 30, not 31.
                ((ratio * steps as f64 - 1e-9).ceil().max(0.0) as u64).min(steps)
            }
        }
    }
}

/// Decay after warmup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Decay {
    #[default]
    Cosine,
    Linear,
    Constant,
}

/// Where a run writes and how often it checkpoints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckpointSpec {
    /// Run directory (metrics, checkpoints, tokenizer). Default: `runs/<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    /// Checkpoint every this many steps (and always at the end). Default: 500.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub every_steps: Option<u64>,
    /// Checkpoints kept (older ones are deleted). Default: 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub keep: Option<u32>,
}

/// Held-out evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvalSpec {
    /// Share of documents held out, chosen by a hash of the example key and the seed.
    #[serde(default = "default_eval_fraction")]
    #[schemars(range(min = 0.0001, max = 0.5))]
    pub fraction: f64,
    /// Evaluate every this many steps (and at the end).
    #[serde(default = "default_eval_every")]
    #[schemars(range(min = 1))]
    pub every_steps: u64,
    /// At most this many batches of the held-out split per evaluation.
    #[serde(default = "default_eval_batches")]
    #[schemars(range(min = 1))]
    pub batches: u32,
}

fn default_eval_fraction() -> f64 {
    0.01
}
fn default_eval_every() -> u64 {
    200
}
fn default_eval_batches() -> u32 {
    20
}
