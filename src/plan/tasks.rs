//! The task a pipeline asks for, configured: its objective with the tokenizer's special ids
//! (each one the task needs checked, with the YAML path in the error), the row length and
//! packing it takes, and for image tasks the output geometry and augmentations.

use std::sync::Arc;

use crate::error::{Error, Result, SpecErrors};
use crate::source::{ImageKind, Source};
use crate::spec::{AugmentPreset, ContrastiveImageSpec, ImageInputSpec, PackMode, Pipeline, RandomCropSpec, TaskSpec};
use crate::stream::Packing;
use crate::task::causal::Causal;
use crate::task::contrastive::{Contrastive, Views};
use crate::task::denoise::Denoise;
use crate::task::mlm::Mlm;
use crate::task::span::Span;
use crate::task::tabular::{Corruption, Tabular};
use crate::task::vision::{ContrastiveImage, DenoiseImage, Erase, ImageOut, ImageReader, Mae};
use crate::task::Task;
use crate::tokenize::{Framing, TextTokenizer};
use crate::vision::augment::{Blur, Crop, Jitter, Solarize, ViewAugment};
use crate::vision::{IMAGENET_MEAN, IMAGENET_STD};

/// A configured task and how its rows are made.
pub(super) struct BuiltTask {
    pub(super) task: Arc<dyn Task>,
    pub(super) row_len: usize,
    pub(super) packing: Packing,
    pub(super) framing: Framing,
    pub(super) whole_word: bool,
    pub(super) pad: u32,
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

fn crop(c: &RandomCropSpec) -> Crop {
    Crop { scale: (c.scale[0], c.scale[1]), ratio: (c.ratio[0], c.ratio[1]) }
}

/// The views of `contrastive_image`: the preset's recipe per view, with the overrides applied.
pub fn view_recipes(t: &ContrastiveImageSpec) -> Vec<ViewAugment> {
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

/// The task `pipeline` asks for, configured with `tokenizer`'s special ids and `source`'s image
/// storage.
pub(super) fn build(pipeline: &Pipeline, tokenizer: &TextTokenizer, source: &Source) -> Result<BuiltTask> {
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
    let name = pipeline.spec.task.name();
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
