//! Resolution: a checked [`Pipeline`] becomes a runnable [`Plan`] (files listed and checked,
//! tokenizer loaded or trained, task configured). All I/O before the stream starts is here.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::AsArray;
use futures::StreamExt;

use crate::error::{Error, Result};
use crate::source::{ImageKind, Shard, Source};
use crate::spec::{AugmentPreset, ImageInputSpec, PackMode, Pipeline, SpecErrors, TaskSpec, TokenizerSpec};
use crate::stream::Packing;
use crate::task::causal::Causal;
use crate::task::contrastive::{Contrastive, Views};
use crate::task::denoise::Denoise;
use crate::task::span::Span;
use crate::task::tabular::{Corruption, Tabular};
use crate::task::vision::{ContrastiveImage, DenoiseImage, Erase, ImageOut, ImageReader, Mae};
use crate::task::{mlm::Mlm, Task};
use crate::tokenize::{train_tokenizer, Framing, TextTokenizer};
use crate::vision::augment::{Blur, Crop, Jitter, Solarize, ViewAugment};
use crate::vision::{IMAGENET_MEAN, IMAGENET_STD};

/// Everything a run needs, resolved.
pub struct Plan {
    pub pipeline: Pipeline,
    /// The single source, or the first member of a mixture.
    pub source: Source,
    /// Every source: one, or the members of a mixture in the order written.
    pub sources: Vec<Source>,
    /// The mixture weights, normalised to sum to 1 (`[1.0]` for a single source).
    pub weights: Vec<f64>,
    /// How a mixture ends.
    pub stop: crate::spec::MixtureStop,
    /// Examples delivered per member of a mixture.
    pub mix_counts: Arc<crate::stream::MixCounts>,
    pub tokenizer: TextTokenizer,
    pub task: Arc<dyn Task>,
    pub seed: u64,
    pub epochs: u32,
    pub workers: usize,
    pub batch_size: usize,
    pub shuffle_window: Option<usize>,
    pub shard: Shard,
    /// Tokens per row handed to the task (the raw span length for `span`).
    pub row_len: usize,
    /// The task's `seq_len`.
    pub seq_len: usize,
    pub packing: Packing,
    pub framing: Framing,
    pub whole_word: bool,
    pub pad_id: u32,
    /// Where a trained tokenizer was written (or read back from).
    pub tokenizer_file: Option<PathBuf>,
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

impl Plan {
    /// Resolves the pipeline: lists and checks the source, builds the tokenizer and the task.
    pub async fn build(pipeline: Pipeline, opts: &BuildOptions) -> Result<Arc<Plan>> {
        let members = pipeline.spec.members();
        let mut sources = Vec::with_capacity(members.len());
        for m in &members {
            sources.push(Source::open(&pipeline, m).await?);
        }
        let source = sources[0].clone();
        for (m, s) in members.iter().zip(&sources).skip(1) {
            let pretext = |s: &Source| s.format == crate::spec::Format::Pretext;
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
        let (tokenizer, tokenizer_file) = build_tokenizer(&pipeline, &sources, &weights, opts).await?;
        let stream = &pipeline.spec.stream;
        let built = build_task(&pipeline, &tokenizer, &source)?;
        for s in &sources {
            if s.format == crate::spec::Format::Pretext {
                s.check_examples(&pipeline, &built.task.output_schema()).await?;
            }
        }
        let mix_counts = Arc::new(crate::stream::MixCounts::new(sources.len()));
        Ok(Arc::new(Plan {
            seed: pipeline.spec.seed,
            epochs: stream.epochs,
            workers: stream.workers.resolve(),
            batch_size: stream.batch_size as usize,
            shuffle_window: stream.shuffle.window_rows(),
            shard,
            row_len: built.row_len,
            seq_len: pipeline.spec.task.seq_len() as usize,
            packing: built.packing,
            framing: built.framing,
            whole_word: built.whole_word,
            pad_id: built.pad,
            task: built.task,
            tokenizer,
            tokenizer_file,
            source,
            sources,
            weights,
            stop: pipeline.spec.mixture.as_ref().map(|m| m.stop).unwrap_or_default(),
            mix_counts,
            pipeline,
        }))
    }
}

impl Plan {
    /// What data the run reads (see [`Source::identity`]); one entry per mixture member.
    pub fn data_identity(&self) -> serde_json::Value {
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
}

/// A configured task and how its rows are made.
struct BuiltTask {
    task: Arc<dyn Task>,
    row_len: usize,
    packing: Packing,
    framing: Framing,
    whole_word: bool,
    pad: u32,
}

/// Image and table tasks: no tokenizing or packing; rows go to the task as the source reads them.
fn record_task(task: Arc<dyn Task>, spec: &TaskSpec) -> BuiltTask {
    BuiltTask {
        task,
        row_len: spec.seq_len() as usize,
        packing: Packing::PerDocument,
        framing: Framing::Template,
        whole_word: false,
        pad: 0,
    }
}

/// The output geometry and normalisation of an image task (ImageNet's statistics by default).
pub fn image_out(i: &ImageInputSpec) -> ImageOut {
    let c = i.channels as usize;
    let (mean, std) = match (c, &i.mean, &i.std) {
        (3, None, None) => (IMAGENET_MEAN.to_vec(), IMAGENET_STD.to_vec()),
        _ => (
            i.mean.as_ref().map(|v| v.iter().map(|&x| x as f32).collect()).unwrap_or_else(|| vec![0.5; c]),
            i.std.as_ref().map(|v| v.iter().map(|&x| x as f32).collect()).unwrap_or_else(|| vec![0.5; c]),
        ),
    };
    let (mean, std) = match c {
        3 if i.mean.is_none() && i.std.is_some() => (IMAGENET_MEAN.to_vec(), std),
        3 if i.mean.is_some() && i.std.is_none() => (mean, IMAGENET_STD.to_vec()),
        _ => (mean, std),
    };
    ImageOut { size: i.size as usize, channels: c, mean, std }
}

fn crop(c: &crate::spec::RandomCropSpec) -> Crop {
    Crop { scale: (c.scale[0], c.scale[1]), ratio: (c.ratio[0], c.ratio[1]) }
}

/// The views of `contrastive_image`: the preset's recipe per view, with the overrides applied.
pub fn view_recipes(t: &crate::spec::ContrastiveImageSpec) -> Vec<ViewAugment> {
    let base: Vec<ViewAugment> = match t.preset {
        AugmentPreset::Simclr => vec![ViewAugment::simclr()],
        AugmentPreset::MocoV2 => vec![ViewAugment::moco_v2()],
        AugmentPreset::Byol => ViewAugment::byol().to_vec(),
    };
    (0..t.views as usize)
        .map(|v| {
            let mut a = base[v % base.len()].clone();
            if let Some(o) = &t.augment {
                if let Some(c) = &o.crop {
                    a.crop = Some(crop(c));
                }
                if let Some(f) = o.flip {
                    a.flip = f;
                }
                if let Some(j) = &o.color_jitter {
                    a.jitter = Some(Jitter {
                        brightness: j.brightness,
                        contrast: j.contrast,
                        saturation: j.saturation,
                        hue: j.hue,
                        p: j.p,
                    });
                }
                if let Some(g) = o.grayscale {
                    a.grayscale = g;
                }
                if let Some(b) = &o.blur {
                    a.blur = Some(Blur { p: b.p, sigma: (b.sigma[0], b.sigma[1]) });
                }
                if let Some(s) = &o.solarize {
                    a.solarize = Some(Solarize { p: s.p, threshold: s.threshold });
                }
            }
            a
        })
        .collect()
}

fn build_task(pipeline: &Pipeline, tokenizer: &TextTokenizer, source: &Source) -> Result<BuiltTask> {
    let spec = &pipeline.spec.task;
    let label = pipeline.spec.primary_source().label_column.is_some();
    let reader = |channels: u32| ImageReader {
        kind: source.image_kind.unwrap_or(ImageKind::Encoded),
        shape: pipeline.spec.primary_source().image_shape.map(|[c, h, w]| [c as usize, h as usize, w as usize]),
        channels: channels as usize,
        stats: source.stats.clone(),
    };
    match spec {
        TaskSpec::ContrastiveImage(t) => {
            let task = ContrastiveImage::new(image_out(&t.image), view_recipes(t), reader(t.image.channels), label);
            return Ok(record_task(Arc::new(task), spec));
        }
        TaskSpec::Mae(t) => {
            let task = Mae::new(
                image_out(&t.image),
                t.patch_size as usize,
                t.mask_ratio,
                crop(&t.crop),
                t.flip,
                reader(t.image.channels),
                label,
            );
            return Ok(record_task(Arc::new(task), spec));
        }
        TaskSpec::DenoiseImage(t) => {
            let erase = t.erase.as_ref().map(|e| Erase {
                p: e.p,
                scale: (e.scale[0], e.scale[1]),
                ratio: (e.ratio[0], e.ratio[1]),
                value: e.value as f32,
            });
            let task = DenoiseImage::new(
                image_out(&t.image),
                t.gaussian,
                t.salt_pepper,
                erase,
                reader(t.image.channels),
                label,
            );
            return Ok(record_task(Arc::new(task), spec));
        }
        TaskSpec::Scarf(_) | TaskSpec::Vime(_) => {
            let (categorical, corruption, reservoir, standardize) = match spec {
                TaskSpec::Scarf(t) => {
                    (&t.categorical, Corruption::Exact(t.corruption_rate), t.reservoir, t.standardize)
                }
                TaskSpec::Vime(t) => (&t.categorical, Corruption::Bernoulli(t.mask_prob), t.reservoir, t.standardize),
                _ => unreachable!("matched above"),
            };
            let columns = spec.table_columns().to_vec();
            let task = Tabular::new(columns, categorical, corruption, reservoir as usize, standardize, label);
            return Ok(record_task(Arc::new(task), spec));
        }
        _ => {}
    }
    let name = pipeline.spec.task_name();
    let missing = |what: &str, names: &str| {
        Error::Spec(SpecErrors(vec![pipeline.error_at(
            &["tokenizer"],
            format!(
                "the tokenizer ({}) has no {what} token ({names}), which `task.{name}` needs",
                tokenizer.description
            ),
            Some(format!("add {names} to the tokenizer's special tokens, or use `tokenizer: {{ bytes: {{}} }}`")),
        )]))
    };
    let sp = &tokenizer.specials;
    let pad = sp.pad.ok_or_else(|| missing("padding", "`[PAD]` or `<pad>`"))?;
    let eos = || sp.eos.or(sp.sep).ok_or_else(|| missing("end-of-text", "`</s>`, `<|endoftext|>` or `[SEP]`"));
    let mask = || sp.mask.ok_or_else(|| missing("mask", "`[MASK]` or `<mask>`"));
    Ok(match spec {
        TaskSpec::Mlm(m) => BuiltTask {
            task: Arc::new(Mlm::new(m, mask()?, tokenizer.replacement_pool())?),
            row_len: m.seq_len as usize,
            packing: if m.packing { Packing::Greedy } else { Packing::PerDocument },
            framing: Framing::Template,
            whole_word: m.whole_word,
            pad,
        },
        TaskSpec::Causal(c) => BuiltTask {
            task: Arc::new(Causal::new(c.seq_len as usize, eos()?, c.mask_across_documents, c.reset_position_ids)),
            row_len: c.seq_len as usize,
            packing: match c.pack {
                PackMode::Greedy => Packing::Greedy,
                PackMode::BestFit => Packing::BestFit,
            },
            framing: Framing::Eos,
            whole_word: false,
            pad,
        },
        TaskSpec::Span(t) => {
            let eos = eos()?;
            let span = Span::new(
                t.seq_len as usize,
                t.noise_density,
                t.mean_noise_span_length,
                tokenizer.sentinels(),
                eos,
                pad,
            );
            let have = tokenizer.sentinels().len();
            if have < span.spans_needed() {
                return Err(Error::Spec(SpecErrors(vec![pipeline.error_at(
                    &["tokenizer"],
                    format!(
                        "span corruption with seq_len {} needs {} sentinel tokens (`<extra_id_0>` …) but the tokenizer ({}) has {have}",
                        t.seq_len,
                        span.spans_needed(),
                        tokenizer.description
                    ),
                    Some("use a T5 tokenizer.json (it has 100 `<extra_id_N>` tokens), add them as special tokens, or use `tokenizer: { bytes: {} }`".into()),
                )])));
            }
            BuiltTask {
                row_len: span.raw_len,
                task: Arc::new(span),
                packing: Packing::Greedy,
                framing: Framing::Eos,
                whole_word: false,
                pad,
            }
        }
        TaskSpec::ContrastiveText(c) => {
            let views = Views {
                crop: c.crop.as_ref().map(|c| (c.min_tokens as usize, c.max_tokens as usize)),
                token_dropout: c.token_dropout,
                mask_prob: c.mask_prob,
                identical: c.identical,
            };
            let mask_id = if c.mask_prob > 0.0 { Some(mask()?) } else { None };
            BuiltTask {
                task: Arc::new(Contrastive::new(c.seq_len as usize, views, mask_id, pad)),
                row_len: c.seq_len as usize,
                packing: Packing::PerDocument,
                framing: Framing::Template,
                whole_word: false,
                pad,
            }
        }
        TaskSpec::Denoise(d) => {
            let mask_id = if d.mask_spans > 0.0 { mask()? } else { sp.mask.unwrap_or(pad) };
            let task = Denoise::new(
                d.seq_len as usize,
                d.mask_spans,
                d.poisson_lambda,
                d.delete,
                d.permute_sentences,
                mask_id,
                pad,
                tokenizer.sentence_ends(),
            )?;
            BuiltTask {
                task: Arc::new(task),
                row_len: d.seq_len as usize,
                packing: Packing::PerDocument,
                framing: Framing::Template,
                whole_word: false,
                pad,
            }
        }
        TaskSpec::ContrastiveImage(_)
        | TaskSpec::Mae(_)
        | TaskSpec::DenoiseImage(_)
        | TaskSpec::Scarf(_)
        | TaskSpec::Vime(_) => unreachable!("record tasks are built above"),
    })
}

async fn build_tokenizer(
    pipeline: &Pipeline,
    sources: &[Source],
    weights: &[f64],
    opts: &BuildOptions,
) -> Result<(TextTokenizer, Option<PathBuf>)> {
    let source = &sources[0];
    match &pipeline.spec.tokenizer {
        TokenizerSpec::Bytes(_) => Ok((TextTokenizer::bytes(), None)),
        TokenizerSpec::File(f) => {
            let path = pipeline.resolve_path(f);
            if !path.is_file() {
                return Err(Error::Spec(SpecErrors(vec![pipeline.error_at(
                    &["tokenizer", "file"],
                    format!("tokenizer file `{f}` does not exist (resolved to `{}`)", path.display()),
                    Some("paths are relative to the pipeline file; or use `tokenizer: { bytes: {} }`".into()),
                )])));
            }
            let tok = TextTokenizer::from_file(&path).map_err(|e| match e {
                Error::Data { message, hint } => {
                    Error::Spec(SpecErrors(vec![pipeline.error_at(&["tokenizer", "file"], message, hint)]))
                }
                other => other,
            })?;
            Ok((tok, Some(path)))
        }
        TokenizerSpec::Train(_) if opts.check_only => Ok((TextTokenizer::bytes(), None)),
        TokenizerSpec::Train(_) if source.format == crate::spec::Format::Pretext => {
            // An export saves the tokenizer it trained beside its parts.
            let p = source.root.join("tokenizer.json");
            if !p.is_file() {
                return Err(Error::Spec(SpecErrors(vec![pipeline.error_at(
                    &["tokenizer"],
                    format!("`format: pretext` with a trained tokenizer needs `{}`, which does not exist", p.display()),
                    Some("point `tokenizer: { file: … }` at the tokenizer.json the examples were made with".into()),
                )])));
            }
            Ok((TextTokenizer::from_file(&p)?, Some(p)))
        }
        TokenizerSpec::Train(t) => {
            let saved = opts.tokenizer_dir.as_ref().map(|d| d.join("tokenizer.json"));
            let describe = |tok: &tokenizers::Tokenizer| {
                format!("trained {:?} ({} ids)", t.model, tok.get_vocab_size(true)).to_lowercase()
            };
            if let Some(p) = saved.as_ref().filter(|p| opts.reuse_tokenizer && p.is_file()) {
                let mut tok = TextTokenizer::from_file(p)?;
                tok.description = tok.hf().map(describe).unwrap_or_default();
                return Ok((tok, Some(p.clone())));
            }
            // A mixture trains on each source's share of the sample.
            let mut texts = Vec::new();
            for (s, w) in sources.iter().zip(weights) {
                let n = ((t.sample_rows as f64) * w).ceil() as usize;
                texts.extend(sample_texts(s, n).await?);
            }
            let tok = tokio::task::spawn_blocking({
                let t = t.clone();
                move || train_tokenizer(&t, &texts)
            })
            .await
            .map_err(|e| Error::internal(format!("tokenizer training stopped: {e}")))??;
            let bytes = tok.to_string(false).map_err(|e| Error::internal(format!("serializing the tokenizer: {e}")))?;
            let hash = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(bytes.as_bytes()));
            if let Some(p) = &saved {
                write_atomic(p, bytes.as_bytes())?;
            }
            let desc = describe(&tok);
            Ok((TextTokenizer::from_hf(tok, desc, Some(hash)), saved))
        }
    }
}

/// The first `n` texts of the whole source, in scan order.
pub async fn sample_texts(source: &Source, n: usize) -> Result<Vec<String>> {
    // A copy with its own counters, so sampling does not count as reading.
    let mut sampler = source.clone();
    sampler.stats = Default::default();
    let mut docs = sampler.scan(Shard::WHOLE, crate::source::ScanOptions::default());
    let mut out = Vec::new();
    while out.len() < n {
        let Some(batch) = docs.next().await else { break };
        let batch = batch?;
        let text = batch.column(1).as_string_view();
        out.extend(text.iter().flatten().take(n - out.len()).map(str::to_string));
    }
    Ok(out)
}

/// Writes `bytes` to a hidden temporary file beside `path`, then renames it into place.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, "create directory", e))?;
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, "write", e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, "rename into", e))
}
