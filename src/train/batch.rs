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
}

impl TaskKind {
    pub fn of(task: &crate::spec::TaskSpec) -> TaskKind {
        use crate::spec::TaskSpec as T;
        match task {
            T::Mlm(_) => TaskKind::Mlm,
            T::ContrastiveText(_) => TaskKind::Contrastive,
            T::Causal(_) => TaskKind::Causal,
            T::Span(_) | T::Denoise(_) => TaskKind::Seq2seq,
        }
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
    Mlm { view: View, select: Tensor, targets: Tensor },
    Contrastive { a: View, b: View },
    Causal { ids: Tensor, positions: Tensor, bias: Tensor, select: Tensor, targets: Tensor },
    Seq2seq { src: View, dec_ids: Tensor, dec_bias: Tensor, select: Tensor, targets: Tensor },
}

/// A training batch: model inputs and what to count.
pub struct TrainBatch {
    pub inputs: Inputs,
    pub rows: usize,
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
    match kind {
        TaskKind::Mlm => {
            let (ids, w) = list_column(batch, "input_ids")?;
            let (mask, _) = list_column(batch, "attention_mask")?;
            let (labels, _) = list_column(batch, "labels")?;
            let (select, targets, n) = selected(labels, rows, w, 0, &cx)?;
            Ok(TrainBatch {
                inputs: Inputs::Mlm { view: view(ids, mask, rows, w, &cx, "input_ids")?, select, targets },
                rows,
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
                rows,
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
                rows,
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
                rows,
                tokens: rows * (w + lw),
                loss_tokens: n,
            })
        }
    }
}
