//! GPT-2-style decoder: token + position embeddings, pre-LN blocks, attention that is causal and
//! block-diagonal over packed documents (the bias comes from `segment_ids`), a tied LM head.
//! Tensor names and layouts follow HuggingFace `GPT2LMHeadModel` (`transformer.h.0.attn.c_attn.weight`
//! stored `(in, out)` as its `Conv1D`).

use candle_core::Tensor;

use crate::error::Result;
use crate::spec::BlockSizes;
use crate::train::nn::{ce, embed, gelu, self_attention, Fwd, LayerNorm, Linear, Params};
use crate::train::vocab_loss::vocab_cross_entropy;

const STD: f64 = 0.02;
const EPS: f64 = 1e-5;

struct Block {
    ln_1: LayerNorm,
    c_attn: Linear,
    c_proj: Linear,
    ln_2: LayerNorm,
    c_fc: Linear,
    mlp_proj: Linear,
}

pub struct Decoder {
    wte: Tensor,
    wpe: Tensor,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    heads: usize,
}

impl Decoder {
    pub fn new(p: &mut Params, s: &BlockSizes, vocab: usize, max_len: usize) -> Result<Self> {
        let (h, f) = (s.hidden as usize, s.ffn());
        // GPT-2 scales the residual projections by 1/√(2·layers).
        let proj_std = STD / (2.0 * s.layers as f64).sqrt();
        let blocks = (0..s.layers as usize)
            .map(|i| {
                let n = format!("transformer.h.{i}");
                Ok(Block {
                    ln_1: LayerNorm::new(p, &format!("{n}.ln_1"), h, EPS)?,
                    c_attn: Linear::conv1d(p, &format!("{n}.attn.c_attn"), h, 3 * h, STD)?,
                    c_proj: Linear::conv1d(p, &format!("{n}.attn.c_proj"), h, h, proj_std)?,
                    ln_2: LayerNorm::new(p, &format!("{n}.ln_2"), h, EPS)?,
                    c_fc: Linear::conv1d(p, &format!("{n}.mlp.c_fc"), h, f, STD)?,
                    mlp_proj: Linear::conv1d(p, &format!("{n}.mlp.c_proj"), f, h, proj_std)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Decoder {
            wte: p.normal("transformer.wte.weight", &[vocab, h], STD)?,
            wpe: p.normal("transformer.wpe.weight", &[max_len, h], 0.01)?,
            blocks,
            ln_f: LayerNorm::new(p, "transformer.ln_f", h, EPS)?,
            heads: s.heads as usize,
        })
    }

    /// Final hidden states `(B, T, H)`; `bias` is `(B, 1, T, T)`.
    pub fn hidden(&self, ids: &Tensor, positions: &Tensor, bias: &Tensor, fwd: &Fwd) -> Result<Tensor> {
        let x = (embed(&self.wte, ids)? + embed(&self.wpe, positions)?).map_err(ce)?;
        let mut x = fwd.dropout(&x)?;
        let h = x.dim(2).map_err(ce)?;
        let scale = 1.0 / ((h / self.heads) as f64).sqrt();
        for b in &self.blocks {
            let qkv = b.c_attn.forward(&b.ln_1.forward(&x)?)?;
            let a = self_attention(&qkv, self.heads, Some(bias), scale, fwd)?;
            x = (x + b.c_proj.forward_dropout(&a, fwd)?).map_err(ce)?;
            let m = gelu(&b.c_fc.forward(&b.ln_2.forward(&x)?)?, false)?;
            x = (x + b.mlp_proj.forward_dropout(&m, fwd)?).map_err(ce)?;
        }
        self.ln_f.forward(&x)
    }

    /// Next-token logits at the flat positions `select`: `(n, vocab)` (training computes the
    /// loss without them, [`Decoder::lm_loss`]).
    #[cfg(any(test, feature = "internals"))]
    pub fn logits(&self, hidden: &Tensor, select: &Tensor) -> Result<Tensor> {
        rows_at(hidden, select)?.matmul(&self.wte.t().map_err(ce)?).map_err(ce)
    }

    /// The next-token loss: mean cross-entropy at the flat positions `select` against `targets`.
    pub fn lm_loss(&self, hidden: &Tensor, select: &Tensor, targets: &Tensor, fwd: &Fwd) -> Result<Tensor> {
        vocab_cross_entropy(&rows_at(hidden, select)?, &self.wte, None, targets, fwd.train)
    }
}

/// The rows of `hidden (B, T, H)` at the flat positions `select`: `(n, H)`.
fn rows_at(hidden: &Tensor, select: &Tensor) -> Result<Tensor> {
    let h = hidden.dim(2).map_err(ce)?;
    hidden.reshape(((), h)).and_then(|x| x.index_select(select, 0)).map_err(ce)
}
