//! Where Arrow meets candle: a batch of pretext examples becomes the tensors a model consumes.
//! Fixed-size list columns are read as flat `i32` slices; the loss positions (labels ≠ −100) are
//! gathered here, on the host, so the models compute their output heads only where a loss is taken.

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Int32Type;
use candle_core::{DType, Device, Shape, Tensor};

use crate::error::{Error, Result};
use crate::train::nn::{ce, MASKED};

/// Which inputs a task's batches carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskKind {
    Mlm,
    Contrastive,
    Causal,
    /// `span` (has `decoder_input_ids`) and `denoise` (decoder inputs are the labels shifted right).
    Seq2seq,
    /// `contrastive_image`: views of each image (`c` channels, `s × s` pixels).
    ImageViews {
        c: usize,
        s: usize,
    },
    /// `mae`: images and patch masks.
    Mae {
        c: usize,
        s: usize,
    },
    /// `denoise_image`: noisy and clean images.
    DenoiseImage {
        c: usize,
        s: usize,
    },
    /// `scarf` (InfoNCE between a row and its corruption) and `vime` (mask and value heads).
    Scarf,
    Vime,
}

impl TaskKind {
    pub fn of(task: &crate::spec::TaskSpec) -> TaskKind {
        use crate::spec::TaskSpec as T;
        match task {
            T::Mlm(_) => TaskKind::Mlm,
            T::ContrastiveText(_) => TaskKind::Contrastive,
            T::Causal(_) => TaskKind::Causal,
            T::Span(_) | T::Denoise(_) => TaskKind::Seq2seq,
            T::ContrastiveImage(t) => TaskKind::ImageViews { c: t.image.channels as usize, s: t.image.size as usize },
            T::Mae(t) => TaskKind::Mae { c: t.image.channels as usize, s: t.image.size as usize },
            T::DenoiseImage(t) => TaskKind::DenoiseImage { c: t.image.channels as usize, s: t.image.size as usize },
            T::Scarf(_) => TaskKind::Scarf,
            T::Vime(_) => TaskKind::Vime,
        }
    }

    /// Whether the model has a table of absolute token positions (BERT's, GPT-2's), which the
    /// rows' width must fit.
    pub fn positions_tokens(&self) -> bool {
        matches!(self, TaskKind::Mlm | TaskKind::Contrastive | TaskKind::Causal)
    }
}

/// One padded sequence batch: ids `(B, T)` u32, an additive key-padding bias `(B, 1, 1, T)` and
/// the real-token mask `(B, T)` as f32.
pub struct View {
    pub ids: Tensor,
    pub pad_bias: Tensor,
    pub mask: Tensor,
}

/// The model inputs of one batch. `select` holds flat indices into `B × T` of the positions with a
/// loss and `targets` the ids to predict there.
pub enum Inputs {
    Mlm {
        view: View,
        select: Tensor,
        targets: Tensor,
    },
    Contrastive {
        a: View,
        b: View,
    },
    Causal {
        ids: Tensor,
        positions: Tensor,
        bias: Tensor,
        select: Tensor,
        targets: Tensor,
    },
    Seq2seq {
        src: View,
        dec_ids: Tensor,
        dec_bias: Tensor,
        select: Tensor,
        targets: Tensor,
    },
    /// Views of each image, each `(B, C, H, W)`.
    Images {
        views: Vec<Tensor>,
    },
    /// MAE: images `(B, C, H, W)`; flat indices into the `B × patches` patch rows of the kept
    /// patches (`B × keep`, each row's in rank order), of the masked ones (`B × masked`), and, for
    /// the decoder, of each patch in the kept-then-masked sequence (`B × patches`).
    Mae {
        pixels: Tensor,
        keep: Tensor,
        masked: Tensor,
        restore: Tensor,
    },
    /// Denoising: `(B, C, H, W)` each.
    Denoise {
        noisy: Tensor,
        clean: Tensor,
    },
    /// Tabular rows `(B, F)`: the clean features, the corrupted ones and the corruption mask (0/1).
    Table {
        clean: Tensor,
        corrupted: Tensor,
        mask: Tensor,
    },
}

/// A training batch: model inputs and what to count.
pub struct TrainBatch {
    pub inputs: Inputs,
    /// Token positions fed to the model (rows × sequence length, both views or stacks counted).
    pub tokens: usize,
    /// Positions with a loss.
    pub loss_tokens: usize,
}

fn list_column<'a>(batch: &'a RecordBatch, name: &str) -> Result<(&'a [i32], usize)> {
    let col = batch.column_by_name(name).ok_or_else(|| {
        Error::data_hint(
            format!("the training batch has no `{name}` column"),
            "train from the pipeline's own task, or from an export made with the same task",
        )
    })?;
    let list = col.as_fixed_size_list_opt().ok_or_else(|| {
        Error::data(format!("column `{name}` is {}, not a fixed-size list of int32", col.data_type()))
    })?;
    let width = list.value_length() as usize;
    let values = list
        .values()
        .as_primitive_opt::<Int32Type>()
        .ok_or_else(|| Error::data(format!("column `{name}` holds {}, not int32", list.values().data_type())))?;
    let start = list.offset() * width;
    let values = &values.values()[start..start + list.len() * width];
    Ok((values, width))
}

fn f32_column<'a>(batch: &'a RecordBatch, name: &str) -> Result<(&'a [f32], usize)> {
    if batch.column_by_name(name).is_none() {
        return Err(Error::data_hint(
            format!("the training batch has no `{name}` column"),
            "train from the pipeline's own task, or from an export made with the same task",
        ));
    }
    let values = crate::task::vision::f32_values(batch, name)
        .map_err(|_| Error::data(format!("column `{name}` is not a fixed-size list of float32")))?;
    let width = if batch.num_rows() == 0 { 0 } else { values.len() / batch.num_rows() };
    Ok((values, width))
}

/// Ids as u32, each checked to be below `limit`.
fn ids_tensor(values: &[i32], rows: usize, width: usize, limit: u32, device: &Device, what: &str) -> Result<Tensor> {
    let ids: Vec<u32> = values
        .iter()
        .map(|&v| match u32::try_from(v) {
            Ok(id) if id < limit => Ok(id),
            _ => Err(Error::data_hint(
                format!("column `{what}` holds the id {v}, outside 0..{limit}"),
                "the examples were made with another tokenizer or seq_len: train with the pipeline that made them",
            )),
        })
        .collect::<Result<_>>()?;
    Tensor::from_vec(ids, (rows, width), device).map_err(ce)
}

/// A float tensor in the model's dtype.
fn floats(values: Vec<f32>, shape: impl Into<Shape>, device: &Device, dtype: DType) -> Result<Tensor> {
    Tensor::from_vec(values, shape, device).and_then(|t| t.to_dtype(dtype)).map_err(ce)
}

/// Where tensors go and what ids are valid.
struct Ctx<'a> {
    vocab: u32,
    device: &'a Device,
    dtype: DType,
}

fn view(ids: &[i32], mask: &[i32], rows: usize, width: usize, cx: &Ctx, what: &str) -> Result<View> {
    let (device, dtype) = (cx.device, cx.dtype);
    let bias: Vec<f32> = mask.iter().map(|&m| if m != 0 { 0.0 } else { MASKED }).collect();
    let maskf: Vec<f32> = mask.iter().map(|&m| (m != 0) as u8 as f32).collect();
    Ok(View {
        ids: ids_tensor(ids, rows, width, cx.vocab, device, what)?,
        pad_bias: floats(bias, (rows, 1, 1, width), device, dtype)?,
        mask: floats(maskf, (rows, width), device, dtype)?,
    })
}

/// Loss positions and targets: `labels[r, t + shift]` at flat position `r × width + t`.
fn selected(labels: &[i32], rows: usize, width: usize, shift: usize, cx: &Ctx) -> Result<(Tensor, Tensor, usize)> {
    let device = cx.device;
    let mut select = Vec::new();
    let mut targets = Vec::new();
    for r in 0..rows {
        for t in 0..width - shift {
            let l = labels[r * width + t + shift];
            if l != -100 {
                let l = u32::try_from(l).ok().filter(|&l| l < cx.vocab).ok_or_else(|| {
                    Error::data(format!("`labels` holds {l}; only ids below {} and -100 are allowed", cx.vocab))
                })?;
                select.push((r * width + t) as u32);
                targets.push(l);
            }
        }
    }
    let n = select.len();
    Ok((Tensor::from_vec(select, n, device).map_err(ce)?, Tensor::from_vec(targets, n, device).map_err(ce)?, n))
}

/// Converts a batch of `kind`'s examples into model inputs on `device`; ids must be below `vocab`.
pub fn to_inputs(
    kind: TaskKind,
    batch: &RecordBatch,
    pad_id: u32,
    vocab: u32,
    device: &Device,
    dtype: DType,
) -> Result<TrainBatch> {
    let cx = Ctx { vocab, device, dtype };
    let rows = batch.num_rows();
    let image = |name: &str, c: usize, s: usize| -> Result<Tensor> {
        let (values, w) = f32_column(batch, name)?;
        if w != c * s * s {
            return Err(Error::data_hint(
                format!("column `{name}` holds {w} values per row; the task's images need {c}×{s}×{s} = {}", c * s * s),
                "train from the pipeline that made the examples (same `image` settings)",
            ));
        }
        floats(values.to_vec(), (rows, c, s, s), device, dtype)
    };
    match kind {
        TaskKind::ImageViews { c, s } => {
            let names: Vec<String> = batch
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().to_string())
                .filter(|n| n.starts_with("view_"))
                .collect();
            if names.len() < 2 {
                return Err(Error::data("a contrastive_image batch needs at least two `view_*` columns"));
            }
            let views = names.iter().map(|n| image(n, c, s)).collect::<Result<Vec<_>>>()?;
            Ok(TrainBatch { tokens: rows * views.len(), loss_tokens: rows, inputs: Inputs::Images { views } })
        }
        TaskKind::Mae { c, s } => {
            let pixels = image("pixel_values", c, s)?;
            let (restore_ids, n) = list_column(batch, "ids_restore")?;
            let mask = crate::task::vision::bool_values(batch, "mask")?;
            if mask.len() != rows * n {
                return Err(Error::data(format!(
                    "`mask` holds {} values per row and `ids_restore` {n}: they must agree",
                    mask.len() / rows.max(1)
                )));
            }
            let masked_n = mask.iter().take(n).filter(|&&m| m).count();
            let mut seen = vec![false; n];
            let keep_n = n - masked_n;
            let (mut keep, mut masked, mut restore) =
                (Vec::with_capacity(rows * keep_n), Vec::with_capacity(rows * masked_n), Vec::with_capacity(rows * n));
            let mut by_rank = vec![0u32; n];
            for r in 0..rows {
                let ids = &restore_ids[r * n..(r + 1) * n];
                let m = &mask[r * n..(r + 1) * n];
                if m.iter().filter(|&&x| x).count() != masked_n {
                    return Err(Error::data("every row of an MAE batch must mask the same number of patches"));
                }
                seen.fill(false);
                for (p, &rank) in ids.iter().enumerate() {
                    let rank = usize::try_from(rank).ok().filter(|&k| k < n && !seen[k]).ok_or_else(|| {
                        Error::data(format!(
                            "`ids_restore` holds {rank}, which is outside 0..{n} or repeated: it must be a permutation"
                        ))
                    })?;
                    seen[rank] = true;
                    if m[p] != (rank >= keep_n) {
                        return Err(Error::data(
                            "`mask` and `ids_restore` disagree: masked patches are the ones ranked last",
                        ));
                    }
                    by_rank[rank] = p as u32;
                    restore.push((r * n + rank) as u32);
                }
                keep.extend(by_rank[..keep_n].iter().map(|&p| (r * n) as u32 + p));
                masked.extend((0..n).filter(|&p| m[p]).map(|p| (r * n + p) as u32));
            }
            let t = |v: Vec<u32>| {
                let len = v.len();
                Tensor::from_vec(v, len, device).map_err(ce)
            };
            Ok(TrainBatch {
                tokens: rows,
                loss_tokens: rows,
                inputs: Inputs::Mae { pixels, keep: t(keep)?, masked: t(masked)?, restore: t(restore)? },
            })
        }
        TaskKind::DenoiseImage { c, s } => Ok(TrainBatch {
            tokens: rows,
            loss_tokens: rows,
            inputs: Inputs::Denoise { noisy: image("noisy", c, s)?, clean: image("clean", c, s)? },
        }),
        TaskKind::Scarf | TaskKind::Vime => {
            let (clean, f) = f32_column(batch, "features")?;
            let (corrupted, _) = f32_column(batch, "corrupted")?;
            let mask: Vec<f32> =
                crate::task::vision::bool_values(batch, "corruption_mask")?.iter().map(|&m| m as u8 as f32).collect();
            if clean.iter().chain(corrupted).any(|v| !v.is_finite()) {
                return Err(Error::data_hint(
                    "a feature value is not finite (NaN or infinite)",
                    "filter or fix those rows in `source.sql`",
                ));
            }
            Ok(TrainBatch {
                tokens: rows,
                loss_tokens: rows,
                inputs: Inputs::Table {
                    clean: floats(clean.to_vec(), (rows, f), device, dtype)?,
                    corrupted: floats(corrupted.to_vec(), (rows, f), device, dtype)?,
                    mask: floats(mask, (rows, f), device, dtype)?,
                },
            })
        }
        TaskKind::Mlm => {
            let (ids, w) = list_column(batch, "input_ids")?;
            let (mask, _) = list_column(batch, "attention_mask")?;
            let (labels, _) = list_column(batch, "labels")?;
            let (select, targets, n) = selected(labels, rows, w, 0, &cx)?;
            Ok(TrainBatch {
                inputs: Inputs::Mlm { view: view(ids, mask, rows, w, &cx, "input_ids")?, select, targets },
                tokens: rows * w,
                loss_tokens: n,
            })
        }
        TaskKind::Contrastive => {
            let (ia, w) = list_column(batch, "input_ids_a")?;
            let (ma, _) = list_column(batch, "attention_mask_a")?;
            let (ib, _) = list_column(batch, "input_ids_b")?;
            let (mb, _) = list_column(batch, "attention_mask_b")?;
            Ok(TrainBatch {
                inputs: Inputs::Contrastive {
                    a: view(ia, ma, rows, w, &cx, "input_ids_a")?,
                    b: view(ib, mb, rows, w, &cx, "input_ids_b")?,
                },
                tokens: 2 * rows * w,
                loss_tokens: rows,
            })
        }
        TaskKind::Causal => {
            let (ids, w) = list_column(batch, "input_ids")?;
            let (labels, _) = list_column(batch, "labels")?;
            let (pos, _) = list_column(batch, "position_ids")?;
            let (seg, _) = list_column(batch, "segment_ids")?;
            // Causal and block-diagonal: position i sees j ≤ i of its own document only.
            let mut bias = vec![MASKED; rows * w * w];
            for r in 0..rows {
                let s = &seg[r * w..(r + 1) * w];
                for i in 0..w {
                    let row = &mut bias[(r * w + i) * w..(r * w + i + 1) * w];
                    for j in (0..=i).rev() {
                        if s[j] != s[i] {
                            break;
                        }
                        row[j] = 0.0;
                    }
                }
            }
            let (select, targets, n) = selected(labels, rows, w, 1, &cx)?;
            Ok(TrainBatch {
                inputs: Inputs::Causal {
                    ids: ids_tensor(ids, rows, w, vocab, device, "input_ids")?,
                    positions: ids_tensor(pos, rows, w, w as u32, device, "position_ids")?,
                    bias: floats(bias, (rows, 1, w, w), device, dtype)?,
                    select,
                    targets,
                },
                tokens: rows * w,
                loss_tokens: n,
            })
        }
        TaskKind::Seq2seq => {
            let (ids, w) = list_column(batch, "input_ids")?;
            let (labels, lw) = list_column(batch, "labels")?;
            let mask: Vec<i32> = match batch.column_by_name("attention_mask") {
                Some(_) => list_column(batch, "attention_mask")?.0.to_vec(),
                None => ids.iter().map(|&i| (i as u32 != pad_id) as i32).collect(),
            };
            let dec: Vec<i32> = match batch.column_by_name("decoder_input_ids") {
                Some(_) => list_column(batch, "decoder_input_ids")?.0.to_vec(),
                // Labels shifted right, starting with the padding id (T5's decoder start).
                None => (0..rows * lw)
                    .map(|i| if i % lw == 0 || labels[i - 1] < 0 { pad_id as i32 } else { labels[i - 1] })
                    .collect(),
            };
            let mut causal = vec![MASKED; lw * lw];
            for i in 0..lw {
                causal[i * lw..i * lw + i + 1].fill(0.0);
            }
            let (select, targets, n) = selected(labels, rows, lw, 0, &cx)?;
            Ok(TrainBatch {
                inputs: Inputs::Seq2seq {
                    src: view(ids, &mask, rows, w, &cx, "input_ids")?,
                    dec_ids: ids_tensor(&dec, rows, lw, vocab, device, "decoder_input_ids")?,
                    dec_bias: floats(causal, (1, 1, lw, lw), device, dtype)?,
                    select,
                    targets,
                },
                tokens: rows * (w + lw),
                loss_tokens: n,
            })
        }
    }
}
