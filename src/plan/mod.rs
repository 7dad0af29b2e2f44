//! Resolution: a checked [`Pipeline`] becomes a runnable [`Plan`]: sources listed and checked,
//! the tokenizer loaded or trained ([`tokenizer`]), the task configured ([`tasks`]), the shard,
//! seed, `seq_len`, vocabulary and special ids decided once. All I/O before the stream starts is
//! here, and the plan is the only reader of the spec after checking: sinks and the trainer take
//! the values resolved here.
//!
//! [`run`] wires the stream primitives into one pass (or endless passes) over the sources, and
//! [`examples`] turns a window's rows into its examples.

mod examples;
mod run;
mod tasks;
mod tokenizer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::SchemaRef;

use crate::error::{Error, Result, SpecError, SpecErrors};
use crate::source::{Columns, Shard, Source, Split};
use crate::spec::{
    default_model, ExportSpec, Format, MixtureStop, ModelSpec, OptionValue, Pipeline, TaskInput, TaskSpec, TrainSpec,
};
use crate::stream::{with_source, MixCounts, Packing, StreamCursor};
use crate::task::Task;
use crate::tokenize::{Framing, TextTokenizer};

pub use run::{DEFAULT_WINDOW_ROWS, STREAM_VERSION};
pub use tasks::image_out;
#[cfg(feature = "internals")]
pub use tokenizer::sample_texts;

/// Everything a run needs, resolved.
pub struct Plan {
    /// The checked pipeline; read here only, to resolve the values below.
    pipeline: Pipeline,
    /// `name`.
    pub(crate) name: String,
    /// The single source, or the first member of a mixture.
    pub(crate) source: Source,
    /// Every source: one, or the members of a mixture in the order written.
    pub(crate) sources: Vec<Source>,
    /// The mixture weights, normalised to sum to 1 (`[1.0]` for a single source).
    pub(crate) weights: Vec<f64>,
    /// How a mixture ends.
    pub(crate) stop: MixtureStop,
    /// Examples delivered per member of a mixture.
    pub(crate) mix_counts: Arc<MixCounts>,
    pub(crate) tokenizer: TextTokenizer,
    /// The task's settings as checked (the model and the preview read them).
    pub(crate) task_spec: TaskSpec,
    pub(crate) task: Arc<dyn Task>,
    /// What the task reads: text, images or table rows.
    pub(crate) input: TaskInput,
    /// The label column of the (first) source, for image and table tasks.
    pub(crate) label_column: Option<String>,
    /// `seed`: every random stream of the run is derived from it (see [`crate::ground::seeds`]).
    pub(crate) seed: u64,
    pub(crate) epochs: u32,
    pub(crate) workers: usize,
    /// Rows per batch: `stream.batch_size`, or `train.batch_size` when built for training.
    pub(crate) batch_size: usize,
    pub(crate) shuffle_window: Option<usize>,
    pub(crate) shard: Shard,
    /// Tokens per row handed to the task (the raw span length for `span`).
    pub(crate) row_len: usize,
    /// The task's `seq_len`: the width of its token columns (for image and table tasks, what
    /// [`TaskSpec::seq_len`] says of them).
    pub(crate) seq_len: usize,
    pub(crate) packing: Packing,
    pub(crate) framing: Framing,
    pub(crate) whole_word: bool,
    /// The padding id of the tokenizer (0 for image and table tasks).
    pub(crate) pad_id: u32,
    /// Where a trained tokenizer was written (or read back from).
    pub(crate) tokenizer_file: Option<PathBuf>,
    /// `export:` as checked.
    pub(crate) export: ExportSpec,
    /// `train:` resolved.
    pub(crate) train: TrainSettings,
}

/// The `train:` section resolved: every default filled in, the model and temperature chosen.
#[derive(Debug, Clone)]
pub struct TrainSettings {
    /// `train:` as checked, with the defaults of an absent section.
    pub spec: TrainSpec,
    /// `train.model`, else the task's default model.
    pub model: ModelSpec,
    /// The contrastive temperature: `train.temperature`, else the task's recipe.
    pub temperature: f64,
    /// What throughput counts for the task: `tokens`, `images` (every view) or `rows`.
    pub unit: &'static str,
    /// `train.init_from`, resolved against the pipeline's directory.
    pub init_from: Option<PathBuf>,
    /// The vocabulary the model embeds: the tokenizer's, the feature columns of a table task,
    /// 0 for images.
    pub vocab: usize,
    /// The longest sequence the model positions: `seq_len` (the patch size for `mae`, 1 for
    /// table rows).
    pub max_len: usize,
}

/// Options that come from the command rather than the pipeline file.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Directory where `tokenizer.train` saves (and on resume re-reads) `tokenizer.json`.
    pub tokenizer_dir: Option<PathBuf>,
    /// Reuse a `tokenizer.json` already trained into `tokenizer_dir` (`export --resume`).
    pub reuse_tokenizer: bool,
    /// Check only (`pretext validate`): do not train a tokenizer, use the byte vocabulary's
    /// special tokens in its place.
    pub check_only: bool,
    /// Build for `pretext train`: batches hold `train.batch_size` rows when it is set.
    pub train: bool,
}

/// Where `pretext export` writes: `--out`, else `export.path`, else `out/<name>`; and the
/// storage options of an object-store destination.
pub fn export_destination(pipeline: &Pipeline, out: Option<PathBuf>) -> (PathBuf, BTreeMap<String, OptionValue>) {
    let spec = &pipeline.spec;
    let dir = out.unwrap_or_else(|| match &spec.export.path {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from("out").join(&spec.name),
    });
    (dir, spec.export.storage_options.clone())
}

/// Where `pretext train` keeps its run: `--run-dir`, else `train.checkpoint.dir`, else
/// `runs/<name>`.
pub fn run_dir(pipeline: &Pipeline, flag: Option<PathBuf>) -> PathBuf {
    let spec = &pipeline.spec;
    flag.unwrap_or_else(|| match spec.train.as_ref().and_then(|t| t.checkpoint.dir.clone()) {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from("runs").join(&spec.name),
    })
}

/// The shard of this process: the spec's, else `RANK` / `WORLD_SIZE`, else the whole.
fn resolve_shard(pipeline: &Pipeline) -> Result<Shard> {
    if let Some(s) = pipeline.spec.stream.shard {
        return Ok(Shard { rank: s.rank as u64, world_size: s.world_size as u64 });
    }
    let var = |name: &str| -> Result<Option<u64>> {
        match std::env::var(name) {
            Ok(v) => v.trim().parse::<u64>().map(Some).map_err(|_| {
                Error::env_hint(
                    format!("environment variable {name}={v:?} is not a whole number"),
                    "unset it or set `stream.shard` in the pipeline",
                )
            }),
            Err(_) => Ok(None),
        }
    };
    match (var("RANK")?, var("WORLD_SIZE")?) {
        (Some(rank), Some(world_size)) if world_size > 0 && rank < world_size => Ok(Shard { rank, world_size }),
        (Some(rank), Some(world_size)) => Err(Error::env_hint(
            format!("RANK={rank} with WORLD_SIZE={world_size} is not a valid shard"),
            "RANK must be below WORLD_SIZE",
        )),
        _ => Ok(Shard::WHOLE),
    }
}

/// What `tokens_per_s` counts for a task: tokens, images (every view) or table rows.
fn unit(input: TaskInput) -> &'static str {
    match input {
        TaskInput::Text => "tokens",
        TaskInput::Image => "images",
        TaskInput::Table => "rows",
    }
}

/// The default contrastive temperature of a task's recipe.
fn default_temperature(task: &TaskSpec) -> f64 {
    match task {
        TaskSpec::ContrastiveImage(_) => 0.5,
        TaskSpec::Scarf(_) => 1.0,
        _ => 0.05,
    }
}

/// The `train:` section resolved for `task`, whose rows have `seq_len` tokens of `vocab`.
fn train_settings(pipeline: &Pipeline, vocab: usize, seq_len: usize) -> TrainSettings {
    let spec = pipeline.spec.train.clone().unwrap_or_else(|| serde_json::from_str("{}").expect("train defaults"));
    let task = &pipeline.spec.task;
    // The models of image and table tasks take their sizes from the task.
    let (vocab, max_len) = match task {
        TaskSpec::Scarf(_) | TaskSpec::Vime(_) => (task.table_columns().len(), 1),
        TaskSpec::Mae(t) => (0, t.patch_size as usize),
        _ => (vocab, seq_len.max(1)),
    };
    TrainSettings {
        model: spec.model.clone().unwrap_or_else(|| default_model(task)),
        temperature: spec.temperature.unwrap_or_else(|| default_temperature(task)),
        unit: unit(task.input()),
        init_from: spec.init_from.as_deref().map(|p| pipeline.resolve_path(p)),
        vocab,
        max_len,
        spec,
    }
}

impl Plan {
    /// Resolves the pipeline: lists and checks the source, builds the tokenizer and the task.
    pub async fn build(mut pipeline: Pipeline, opts: &BuildOptions) -> Result<Arc<Plan>> {
        if opts.train {
            // The run's settings (checkpoints compare them) record the batch it trains on.
            if let Some(rows) = pipeline.spec.train.as_ref().and_then(|t| t.batch_size) {
                pipeline.spec.stream.batch_size = rows;
            }
        }
        let members = pipeline.spec.members();
        let mut sources = Vec::with_capacity(members.len());
        for m in &members {
            let columns = Columns::of(&m.spec, &pipeline.spec.task);
            sources.push(Source::open(&pipeline, m, columns).await?);
        }
        let source = sources[0].clone();
        for (m, s) in members.iter().zip(&sources).skip(1) {
            let pretext = |s: &Source| s.format == Format::Pretext;
            if pretext(s) != pretext(&source) || s.image_kind != source.image_kind {
                return Err(Error::Spec(SpecErrors(vec![pipeline.error_at(
                    &m.key("format"),
                    format!("{} is read differently from the first source (ready-made examples, or how images are stored)", m.label()),
                    Some("mix sources of one kind: all raw data or all `format: pretext` exports, images stored the same way".into()),
                )])));
            }
        }
        let total: f64 = members.iter().map(|m| m.weight).sum();
        let weights: Vec<f64> = members.iter().map(|m| m.weight / total).collect();
        let shard = resolve_shard(&pipeline)?;
        let (tokenizer, tokenizer_file) = tokenizer::build(&pipeline, &sources, &weights, opts).await?;
        let built = tasks::build(&pipeline, &tokenizer, &source)?;
        for s in &sources {
            if s.format == Format::Pretext {
                s.check_examples(&pipeline, &built.task.output_schema()).await?;
            }
        }
        let spec = &pipeline.spec;
        let stream = &spec.stream;
        let seq_len = spec.task.seq_len() as usize;
        Ok(Arc::new(Plan {
            name: spec.name.clone(),
            seed: spec.seed,
            epochs: stream.epochs,
            workers: stream.workers.resolve(),
            batch_size: stream.batch_size as usize,
            shuffle_window: stream.shuffle.window_rows(),
            shard,
            row_len: built.row_len,
            seq_len,
            packing: built.packing,
            framing: built.framing,
            whole_word: built.whole_word,
            pad_id: built.pad,
            task: built.task,
            task_spec: spec.task.clone(),
            input: spec.task.input(),
            label_column: spec.primary_source().label_column,
            export: spec.export.clone(),
            train: train_settings(&pipeline, tokenizer.vocab_size as usize, seq_len),
            tokenizer,
            tokenizer_file,
            mix_counts: Arc::new(MixCounts::new(sources.len())),
            source,
            sources,
            weights,
            stop: spec.mixture.as_ref().map(|m| m.stop).unwrap_or_default(),
            pipeline,
        }))
    }

    /// The cursor at the start of pass `epoch` (what [`Plan::pass_from`] and
    /// [`Plan::batches_from`] start a stream from).
    pub fn epoch_start(&self, epoch: u32) -> StreamCursor {
        StreamCursor::start(epoch, self.sources.len())
    }

    /// `seed`: every random stream of the run is derived from it.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The shard this process reads: `stream.shard`, else `RANK` / `WORLD_SIZE`, else the whole.
    pub fn shard(&self) -> Shard {
        self.shard
    }

    /// Examples per batch.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// `stream.epochs`: the passes [`Plan::stream`] makes (an export's length).
    pub fn epochs(&self) -> u32 {
        self.epochs
    }

    /// The split named `name`: `all`, or `train` / `eval`, the two sides of the held-out split
    /// `train.eval` defines (`None` when the pipeline has no `train.eval`, or for another name).
    pub fn split(&self, name: &str) -> Option<Split> {
        let eval = self.train.spec.eval.as_ref();
        match name {
            "all" => Some(Split::All),
            "train" => eval.map(|e| Split::Train { fraction: e.fraction, seed: self.seed }),
            "eval" => eval.map(|e| Split::Eval { fraction: e.fraction, seed: self.seed }),
            _ => None,
        }
    }

    /// The vocabulary's size and its special ids by name (`pad`, `unk`, `cls`, `sep`, `mask`,
    /// `bos`, `eos`; `None` where it has none): what a model built for the batches needs.
    pub fn vocabulary(&self) -> (u32, [(&'static str, Option<u32>); 7]) {
        let s = &self.tokenizer.specials;
        let ids = [
            ("pad", s.pad),
            ("unk", s.unk),
            ("cls", s.cls),
            ("sep", s.sep),
            ("mask", s.mask),
            ("bos", s.bos),
            ("eos", s.eos),
        ];
        (self.tokenizer.vocab_size, ids)
    }

    /// The task's name as written in YAML (`mlm`, …).
    pub fn task_name(&self) -> &'static str {
        self.task_spec.name()
    }

    /// The pipeline file this plan was built from.
    pub(crate) fn pipeline_file(&self) -> &Path {
        &self.pipeline.file
    }

    /// The directory relative paths of the pipeline are resolved against.
    pub(crate) fn base_dir(&self) -> &Path {
        &self.pipeline.base_dir
    }

    /// The pipeline with every default filled in, credentials redacted (what manifests and
    /// runs record; see [`Pipeline::resolved_json`]).
    pub(crate) fn resolved_json(&self) -> serde_json::Value {
        self.pipeline.resolved_json()
    }

    /// The hash of everything that determines the examples (see [`Pipeline::content_hash`]).
    pub(crate) fn content_hash(&self) -> u64 {
        self.pipeline.content_hash()
    }

    /// A located error about the pipeline's field at `path`.
    pub(crate) fn error_at(&self, path: &[&str], message: impl Into<String>, hint: Option<String>) -> SpecError {
        self.pipeline.error_at(path, message, hint)
    }

    /// What data the run reads (see [`Source::identity`]); one entry per mixture member.
    pub(crate) fn data_identity(&self) -> serde_json::Value {
        if self.sources.len() == 1 {
            return self.source.identity();
        }
        serde_json::Value::Array(
            self.sources
                .iter()
                .map(|s| {
                    let mut v = s.identity();
                    v["name"] = s.name.clone().into();
                    v
                })
                .collect(),
        )
    }

    /// The schema of the examples: the task's, with the `source` column of a mixture.
    pub fn output_schema(&self) -> SchemaRef {
        let schema = self.task.output_schema();
        if self.sources.len() > 1 {
            with_source(&schema)
        } else {
            schema
        }
    }

    /// Rows of the source per window: the unit of shuffling, sharding and resumption. Every
    /// `window_rows` rows of the split (counted over all ranks) make one window; packing starts
    /// afresh in each window, and its examples are shuffled in windows of `window_rows` examples.
    pub(crate) fn window_rows(&self) -> u64 {
        self.shuffle_window.map(|w| w as u64).unwrap_or(DEFAULT_WINDOW_ROWS)
    }
}

/// The plan's parts, for the crate's own tests and benches.
#[cfg(feature = "internals")]
impl Plan {
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    pub fn framing(&self) -> Framing {
        self.framing
    }

    pub fn source(&self) -> &Source {
        &self.source
    }

    pub fn sources(&self) -> &[Source] {
        &self.sources
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    pub fn task(&self) -> &Arc<dyn Task> {
        &self.task
    }
}
