//! T5-style encoder-decoder: shared embeddings, pre-norm blocks with scale-only RMS norm, bias-free
//! projections, relative position buckets (learned in each stack's first block and shared by its
//! blocks), unscaled attention, ReLU feed-forward, and an LM head tied to the shared embeddings
//! (hidden states scaled by d_model^-0.5, as T5 v1.0). Names follow HuggingFace
//! `T5ForConditionalGeneration` (`encoder.block.0.layer.0.SelfAttention.q.weight`, …).

use candle_core::Tensor;

use crate::error::Result;
use crate::spec::BlockSizes;
use crate::train::nn::{attention, ce, embed, merge_heads, shape_constant, split_heads, Fwd, Linear, Params, RmsNorm};
use crate::train::vocab_loss::vocab_cross_entropy;

const BUCKETS: usize = 32;
const MAX_DISTANCE: usize = 128;

struct Attn {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
}

impl Attn {
    fn new(p: &mut Params, name: &str, h: usize, heads: usize) -> Result<Self> {
        let kv = h / heads;
        // T5's initialisation (Mesh TensorFlow): q ~ (d_model·d_kv)^-½, k and v ~ d_model^-½.
        Ok(Attn {
            q: Linear::new(p, &format!("{name}.q"), h, h, false, ((h * kv) as f64).powf(-0.5))?,
            k: Linear::new(p, &format!("{name}.k"), h, h, false, (h as f64).powf(-0.5))?,
            v: Linear::new(p, &format!("{name}.v"), h, h, false, (h as f64).powf(-0.5))?,
            o: Linear::new(p, &format!("{name}.o"), h, h, false, (h as f64).powf(-0.5))?,
        })
    }

    fn forward(&self, x: &Tensor, kv: &Tensor, bias: &Tensor, heads: usize, fwd: &Fwd) -> Result<Tensor> {
        let q = split_heads(&self.q.forward(x)?, heads)?;
        let k = split_heads(&self.k.forward(kv)?, heads)?;
        let v = split_heads(&self.v.forward(kv)?, heads)?;
        self.o.forward(&merge_heads(&attention(&q, &k, &v, Some(bias), 1.0, fwd)?)?)
    }
}

struct Ffn {
    wi: Linear,
    wo: Linear,
}

impl Ffn {
    fn new(p: &mut Params, name: &str, h: usize, f: usize) -> Result<Self> {
        Ok(Ffn {
            wi: Linear::new(p, &format!("{name}.wi"), h, f, false, (h as f64).powf(-0.5))?,
            wo: Linear::new(p, &format!("{name}.wo"), f, h, false, (f as f64).powf(-0.5))?,
        })
    }

    fn forward(&self, x: &Tensor, fwd: &Fwd) -> Result<Tensor> {
        let x = self.wi.forward(x)?.relu().map_err(ce)?;
        self.wo.forward(&fwd.dropout(&x)?)
    }
}

struct EncBlock {
    norm_1: RmsNorm,
    attn: Attn,
    norm_2: RmsNorm,
    ffn: Ffn,
}

struct DecBlock {
    norm_1: RmsNorm,
    self_attn: Attn,
    norm_2: RmsNorm,
    cross: Attn,
    norm_3: RmsNorm,
    ffn: Ffn,
}

pub struct Seq2seq {
    shared: Tensor,
    enc: Vec<EncBlock>,
    enc_rel: Tensor,
    enc_norm: RmsNorm,
    dec: Vec<DecBlock>,
    dec_rel: Tensor,
    dec_norm: RmsNorm,
    heads: usize,
    hidden: usize,
}

impl Seq2seq {
    pub fn new(p: &mut Params, s: &BlockSizes, vocab: usize) -> Result<Self> {
        let (h, f, heads) = (s.hidden as usize, s.ffn(), s.heads as usize);
        let enc = (0..s.layers as usize)
            .map(|i| {
                let n = format!("encoder.block.{i}.layer");
                Ok(EncBlock {
                    norm_1: RmsNorm::new(p, &format!("{n}.0.layer_norm"), h)?,
                    attn: Attn::new(p, &format!("{n}.0.SelfAttention"), h, heads)?,
                    norm_2: RmsNorm::new(p, &format!("{n}.1.layer_norm"), h)?,
                    ffn: Ffn::new(p, &format!("{n}.1.DenseReluDense"), h, f)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let dec = (0..s.layers as usize)
            .map(|i| {
                let n = format!("decoder.block.{i}.layer");
                Ok(DecBlock {
                    norm_1: RmsNorm::new(p, &format!("{n}.0.layer_norm"), h)?,
                    self_attn: Attn::new(p, &format!("{n}.0.SelfAttention"), h, heads)?,
                    norm_2: RmsNorm::new(p, &format!("{n}.1.layer_norm"), h)?,
                    cross: Attn::new(p, &format!("{n}.1.EncDecAttention"), h, heads)?,
                    norm_3: RmsNorm::new(p, &format!("{n}.2.layer_norm"), h)?,
                    ffn: Ffn::new(p, &format!("{n}.2.DenseReluDense"), h, f)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let rel_std = (h as f64).powf(-0.5);
        Ok(Seq2seq {
            shared: p.normal("shared.weight", &[vocab, h], 1.0)?,
            enc,
            enc_rel: p.normal(
                "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                &[BUCKETS, heads],
                rel_std,
            )?,
            enc_norm: RmsNorm::new(p, "encoder.final_layer_norm", h)?,
            dec,
            dec_rel: p.normal(
                "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                &[BUCKETS, heads],
                rel_std,
            )?,
            dec_norm: RmsNorm::new(p, "decoder.final_layer_norm", h)?,
            heads,
            hidden: h,
        })
    }

    /// `(1, heads, q, k)` position bias from a stack's bucket embedding.
    fn position_bias(&self, table: &Tensor, q: usize, k: usize, bidirectional: bool) -> Result<Tensor> {
        let name = if bidirectional { "t5.buckets.bidirectional" } else { "t5.buckets.causal" };
        let ids = shape_constant(name, &[q, k], table.device(), || {
            let buckets: Vec<u32> =
                (0..q).flat_map(|i| (0..k).map(move |j| relative_bucket(j as i64 - i as i64, bidirectional))).collect();
            Tensor::from_vec(buckets, (q, k), table.device())
        })
        .map_err(ce)?;
        embed(table, &ids)?.permute((2, 0, 1)).and_then(|b| b.unsqueeze(0)).map_err(ce)
    }

    /// Encoder states `(B, S, H)`.
    pub fn encode(&self, ids: &Tensor, pad_bias: &Tensor, fwd: &Fwd) -> Result<Tensor> {
        let s = ids.dim(1).map_err(ce)?;
        let bias = self.position_bias(&self.enc_rel, s, s, true)?.broadcast_add(pad_bias).map_err(ce)?;
        let mut x = fwd.dropout(&embed(&self.shared, ids)?)?;
        for b in &self.enc {
            let n = b.norm_1.forward(&x)?;
            x = (&x + fwd.dropout(&b.attn.forward(&n, &n, &bias, self.heads, fwd)?)?).map_err(ce)?;
            let n = b.norm_2.forward(&x)?;
            x = (&x + fwd.dropout(&b.ffn.forward(&n, fwd)?)?).map_err(ce)?;
        }
        fwd.dropout(&self.enc_norm.forward(&x)?)
    }

    /// Decoder states `(B, L, H)`.
    pub fn decode(
        &self,
        dec_ids: &Tensor,
        dec_bias: &Tensor,
        enc: &Tensor,
        enc_bias: &Tensor,
        fwd: &Fwd,
    ) -> Result<Tensor> {
        let l = dec_ids.dim(1).map_err(ce)?;
        let bias = self.position_bias(&self.dec_rel, l, l, false)?.broadcast_add(dec_bias).map_err(ce)?;
        let mut x = fwd.dropout(&embed(&self.shared, dec_ids)?)?;
        for b in &self.dec {
            let n = b.norm_1.forward(&x)?;
            x = (&x + fwd.dropout(&b.self_attn.forward(&n, &n, &bias, self.heads, fwd)?)?).map_err(ce)?;
            let n = b.norm_2.forward(&x)?;
            x = (&x + fwd.dropout(&b.cross.forward(&n, enc, enc_bias, self.heads, fwd)?)?).map_err(ce)?;
            let n = b.norm_3.forward(&x)?;
            x = (&x + fwd.dropout(&b.ffn.forward(&n, fwd)?)?).map_err(ce)?;
        }
        fwd.dropout(&self.dec_norm.forward(&x)?)
    }

    /// Logits at the flat decoder positions `select`: `(n, vocab)` (training computes the loss
    /// without them, [`Seq2seq::lm_loss`]).
    #[cfg(any(test, feature = "internals"))]
    pub fn logits(&self, hidden: &Tensor, select: &Tensor) -> Result<Tensor> {
        self.head_rows(hidden, select)?.matmul(&self.shared.t().map_err(ce)?).map_err(ce)
    }

    /// The loss: mean cross-entropy at the flat decoder positions `select` against `targets`.
    pub fn lm_loss(&self, hidden: &Tensor, select: &Tensor, targets: &Tensor, fwd: &Fwd) -> Result<Tensor> {
        vocab_cross_entropy(&self.head_rows(hidden, select)?, &self.shared, None, targets, fwd.train)
    }

    /// The rows at `select`, scaled by 1/√hidden as T5's tied head does: `(n, hidden)`.
    fn head_rows(&self, hidden: &Tensor, select: &Tensor) -> Result<Tensor> {
        let rows = hidden.reshape(((), self.hidden)).and_then(|x| x.index_select(select, 0)).map_err(ce)?;
        (rows * (self.hidden as f64).powf(-0.5)).map_err(ce)
    }
}

/// T5's relative position bucket of `memory − query` (HuggingFace `_relative_position_bucket`
/// with 32 buckets and a maximum distance of 128).
pub fn relative_bucket(relative: i64, bidirectional: bool) -> u32 {
    let mut buckets = BUCKETS as i64;
    let mut out = 0i64;
    let mut n = relative;
    if bidirectional {
        buckets /= 2;
        if n > 0 {
            out += buckets;
        }
        n = n.abs();
    } else {
        n = -n.min(0);
    }
    let max_exact = buckets / 2;
    if n < max_exact {
        out += n;
    } else {
        // In f32, as the reference computes it, so bucket edges agree exactly.
        let ratio = ((MAX_DISTANCE as f64) / max_exact as f64).ln() as f32;
        let large = max_exact + ((n as f32 / max_exact as f32).ln() / ratio * (buckets - max_exact) as f32) as i64;
        out += large.min(buckets - 1);
    }
    out as u32
}

#[cfg(test)]
mod tests {
    use super::relative_bucket;

    #[test]
    fn buckets_match_huggingface() {
        // Reference: transformers' `T5Attention._relative_position_bucket` (num_buckets=32,
        // max_distance=128) transcribed line by line to numpy with float32 logs, evaluated at
        // these relative positions.
        let rel = [-200, -128, -64, -20, -8, -7, -1, 0, 1, 7, 8, 20, 64, 128, 200];
        let bi = [15, 15, 14, 10, 8, 7, 1, 0, 17, 23, 24, 26, 30, 31, 31];
        let uni = [31, 31, 26, 17, 8, 7, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        for (i, r) in rel.iter().enumerate() {
            assert_eq!(relative_bucket(*r, true), bi[i], "bidirectional {r}");
            assert_eq!(relative_bucket(*r, false), uni[i], "unidirectional {r}");
        }
    }
}
