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
    /// Where rows come from (read through DataFusion).
    pub source: SourceSpec,
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
    /// Training settings for `pretext train` (accepted; not used by this version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("type" = "object"))]
    pub train: Option<serde_json::Value>,
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
}

/// Where rows come from.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// A file, a directory (hive-style `key=value/` directories become columns) or a glob,
    /// relative to the pipeline file.
    pub path: String,
    /// File format; inferred from the file extensions when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
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
}

impl TaskSpec {
    /// The task's `seq_len` (tokens per input row).
    pub fn seq_len(&self) -> u32 {
        match self {
            TaskSpec::Mlm(t) => t.seq_len,
            TaskSpec::Causal(t) => t.seq_len,
            TaskSpec::Span(t) => t.seq_len,
            TaskSpec::ContrastiveText(t) => t.seq_len,
            TaskSpec::Denoise(t) => t.seq_len,
        }
    }
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
}

impl Default for ExportSpec {
    fn default() -> Self {
        ExportSpec {
            path: None,
            rows_per_file: default_rows_per_file(),
            compression: default_compression(),
            zstd_level: default_zstd_level(),
            row_group_rows: default_row_group_rows(),
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
