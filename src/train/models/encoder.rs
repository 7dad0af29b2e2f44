//! BERT-style encoder: word + position + token-type embeddings, post-LN blocks with GELU, an MLM
//! head tied to the word embeddings, and a pooler for contrastive training. Tensor names follow
//! HuggingFace `BertForMaskedLM` (`bert.encoder.layer.0.attention.self.query.weight`, …).

use candle_core::Tensor;

use crate::error::Result;
use crate::spec::{BlockSizes, Pooling};
use crate::train::batch::View;
use crate::train::nn::{ce, embed, gelu, qkv, self_attention, Fwd, LayerNorm, Linear, Params};
use crate::train::vocab_loss::vocab_cross_entropy;

const STD: f64 = 0.02;
const EPS: f64 = 1e-12;

struct Block {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    inter: Linear,
    out: Linear,
    out_norm: LayerNorm,
}

pub struct Encoder {
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    emb_norm: LayerNorm,
    blocks: Vec<Block>,
    heads: usize,
    head_transform: Linear,
    head_norm: LayerNorm,
    head_bias: Tensor,
    pooler: Linear,
    pooling: Pooling,
}

impl Encoder {
    pub fn new(p: &mut Params, s: &BlockSizes, pooling: Pooling, vocab: usize, max_len: usize) -> Result<Self> {
        let (h, f) = (s.hidden as usize, s.ffn());
        let word = p.normal("bert.embeddings.word_embeddings.weight", &[vocab, h], STD)?;
        let position = p.normal("bert.embeddings.position_embeddings.weight", &[max_len, h], STD)?;
        let token_type = p.normal("bert.embeddings.token_type_embeddings.weight", &[2, h], STD)?;
        let emb_norm = LayerNorm::new(p, "bert.embeddings.LayerNorm", h, EPS)?;
        let blocks = (0..s.layers as usize)
            .map(|i| {
                let n = format!("bert.encoder.layer.{i}");
                Ok(Block {
                    query: Linear::new(p, &format!("{n}.attention.self.query"), h, h, true, STD)?,
                    key: Linear::new(p, &format!("{n}.attention.self.key"), h, h, true, STD)?,
                    value: Linear::new(p, &format!("{n}.attention.self.value"), h, h, true, STD)?,
                    attn_out: Linear::new(p, &format!("{n}.attention.output.dense"), h, h, true, STD)?,
                    attn_norm: LayerNorm::new(p, &format!("{n}.attention.output.LayerNorm"), h, EPS)?,
                    inter: Linear::new(p, &format!("{n}.intermediate.dense"), h, f, true, STD)?,
                    out: Linear::new(p, &format!("{n}.output.dense"), f, h, true, STD)?,
                    out_norm: LayerNorm::new(p, &format!("{n}.output.LayerNorm"), h, EPS)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Encoder {
            word,
            position,
            token_type,
            emb_norm,
            blocks,
            heads: s.heads as usize,
            head_transform: Linear::new(p, "cls.predictions.transform.dense", h, h, true, STD)?,
            head_norm: LayerNorm::new(p, "cls.predictions.transform.LayerNorm", h, EPS)?,
            head_bias: p.zeros("cls.predictions.bias", &[vocab])?,
            pooler: Linear::new(p, "bert.pooler.dense", h, h, true, STD)?,
            pooling,
        })
    }

    /// Names of the parameters a task does not use (so they get no gradient): the MLM head when
    /// pooling, the pooler when predicting tokens.
    #[cfg(any(test, feature = "internals"))]
    pub fn unused(contrastive: bool) -> &'static [&'static str] {
        if contrastive {
            &["cls.predictions."]
        } else {
            &["bert.pooler."]
        }
    }

    /// Final hidden states `(B, T, H)`.
    pub fn hidden(&self, v: &View, fwd: &Fwd) -> Result<Tensor> {
        let (_, t) = v.ids.dims2().map_err(ce)?;
        let pos = self.position.narrow(0, 0, t).map_err(ce)?;
        let tt = self.token_type.narrow(0, 0, 1).map_err(ce)?;
        let x = embed(&self.word, &v.ids)?.broadcast_add(&pos).and_then(|x| x.broadcast_add(&tt)).map_err(ce)?;
        let mut x = fwd.dropout(&self.emb_norm.forward(&x)?)?;
        let scale = 1.0 / ((x.dim(2).map_err(ce)? / self.heads) as f64).sqrt();
        for b in &self.blocks {
            let packed = qkv(&x, &b.query, &b.key, &b.value)?;
            let a = self_attention(&packed, self.heads, Some(&v.pad_bias), scale, fwd)?;
            let a = b.attn_out.forward_dropout(&a, fwd)?;
            x = b.attn_norm.forward(&(x + a).map_err(ce)?)?;
            let f = gelu(&b.inter.forward(&x)?, true)?;
            let f = b.out.forward_dropout(&f, fwd)?;
            x = b.out_norm.forward(&(x + f).map_err(ce)?)?;
        }
        Ok(x)
    }

    /// The MLM head's features at the flat positions `select` of `hidden`, before the projection
    /// onto the vocabulary: `(n, hidden)`.
    fn mlm_features(&self, hidden: &Tensor, select: &Tensor) -> Result<Tensor> {
        let h = hidden.dim(2).map_err(ce)?;
        let rows = hidden.reshape(((), h)).and_then(|x| x.index_select(select, 0)).map_err(ce)?;
        let x = gelu(&self.head_transform.forward(&rows)?, true)?;
        self.head_norm.forward(&x)
    }

    /// Vocabulary logits at the flat positions `select` of `hidden`: `(n, vocab)` (training
    /// computes the loss without them, [`Encoder::mlm_loss`]).
    #[cfg(any(test, feature = "internals"))]
    pub fn mlm_logits(&self, hidden: &Tensor, select: &Tensor) -> Result<Tensor> {
        let x = self.mlm_features(hidden, select)?;
        x.matmul(&self.word.t().map_err(ce)?).and_then(|l| l.broadcast_add(&self.head_bias)).map_err(ce)
    }

    /// The MLM loss: mean cross-entropy at the flat positions `select` against `targets`.
    pub fn mlm_loss(&self, hidden: &Tensor, select: &Tensor, targets: &Tensor, fwd: &Fwd) -> Result<Tensor> {
        let x = self.mlm_features(hidden, select)?;
        vocab_cross_entropy(&x, &self.word, Some(&self.head_bias), targets, fwd.train)
    }

    /// One vector per row: pooled (mean over real tokens, or the first token), dense, tanh.
    pub fn embed_rows(&self, v: &View, fwd: &Fwd) -> Result<Tensor> {
        let hidden = self.hidden(v, fwd)?;
        let pooled = match self.pooling {
            Pooling::Cls => hidden.narrow(1, 0, 1).and_then(|x| x.squeeze(1)).map_err(ce)?,
            Pooling::Mean => {
                let m = v.mask.unsqueeze(2).map_err(ce)?;
                let sum = hidden.broadcast_mul(&m).and_then(|x| x.sum(1)).map_err(ce)?;
                let count = m.sum(1).and_then(|c| c.clamp(1.0, f64::MAX)).map_err(ce)?;
                sum.broadcast_div(&count).map_err(ce)?
            }
        };
        self.pooler.forward(&pooled)?.tanh().map_err(ce)
    }
}
