//! The three model families and the loss each task trains with.

pub mod decoder;
pub mod encoder;
pub mod seq2seq;

use candle_core::{DType, Device, Tensor, D};

use crate::error::{Error, Result};
use crate::spec::ModelSpec;
use crate::train::batch::{Inputs, TaskKind};
use crate::train::nn::{ce, Fwd, Params};

pub use decoder::Decoder;
pub use encoder::Encoder;
pub use seq2seq::Seq2seq;

/// A model with its parameters.
pub struct Model {
    pub params: Params,
    pub net: Net,
    pub dropout: f64,
    pub kind: TaskKind,
}

pub enum Net {
    Encoder(Encoder),
    Decoder(Decoder),
    Seq2seq(Seq2seq),
}

impl Model {
    /// Builds `spec` for `kind` with seeded initial weights.
    pub fn new(
        spec: &ModelSpec,
        kind: TaskKind,
        vocab: usize,
        max_len: usize,
        seed: u64,
        device: &Device,
        dtype: DType,
    ) -> Result<Model> {
        let mut params = Params::new(seed, device, dtype);
        let sizes = spec.sizes();
        let net = match (spec, kind) {
            (ModelSpec::Encoder(e), TaskKind::Mlm | TaskKind::Contrastive) => {
                Net::Encoder(Encoder::new(&mut params, &sizes, e.pooling, vocab, max_len)?)
            }
            (ModelSpec::Decoder(s), TaskKind::Causal) => Net::Decoder(Decoder::new(&mut params, s, vocab, max_len)?),
            (ModelSpec::Seq2seq(s), TaskKind::Seq2seq) => Net::Seq2seq(Seq2seq::new(&mut params, s, vocab)?),
            (spec, kind) => {
                return Err(Error::internal(format!("a `{}` model cannot train {kind:?} batches", spec.kind())));
            }
        };
        Ok(Model { params, net, dropout: sizes.dropout, kind })
    }

    /// Parameter-name prefixes the task leaves unused (they receive no gradient by design).
    pub fn unused_prefixes(&self) -> &'static [&'static str] {
        match &self.net {
            Net::Encoder(_) => Encoder::unused(self.kind == TaskKind::Contrastive),
            _ => &[],
        }
    }

    /// The mean loss of a batch (a scalar tensor).
    pub fn loss(&self, inputs: &Inputs, fwd: &Fwd, temperature: f64) -> Result<Tensor> {
        match (&self.net, inputs) {
            (Net::Encoder(m), Inputs::Mlm { view, select, targets }) => {
                let h = m.hidden(view, fwd)?;
                masked_cross_entropy(&m.mlm_logits(&h, select)?, targets)
            }
            (Net::Encoder(m), Inputs::Contrastive { a, b }) => {
                let za = m.embed_rows(a, fwd)?;
                let zb = m.embed_rows(b, fwd)?;
                info_nce(&za, &zb, temperature)
            }
            (Net::Decoder(m), Inputs::Causal { ids, positions, bias, select, targets }) => {
                let h = m.hidden(ids, positions, bias, fwd)?;
                masked_cross_entropy(&m.logits(&h, select)?, targets)
            }
            (Net::Seq2seq(m), Inputs::Seq2seq { src, dec_ids, dec_bias, select, targets }) => {
                let enc = m.encode(&src.ids, &src.pad_bias, fwd)?;
                let h = m.decode(dec_ids, dec_bias, &enc, &src.pad_bias, fwd)?;
                masked_cross_entropy(&m.logits(&h, select)?, targets)
            }
            _ => Err(Error::internal("the batch does not match the model")),
        }
    }
}

/// Mean cross-entropy of `logits (n, vocab)` against `targets (n)`: the loss over the positions
/// whose label is not −100 (those were dropped when the batch was built). With no such
/// position the loss is 0.
pub fn masked_cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    if targets.dim(0).map_err(ce)? == 0 {
        return Tensor::new(0f32, logits.device()).map_err(ce);
    }
    let logits = logits.to_dtype(DType::F32).map_err(ce)?;
    candle_nn::loss::cross_entropy(&logits, targets).map_err(ce)
}

/// InfoNCE with in-batch negatives (SimCSE): row `i` of `a` must pick row `i` of `b` among all
/// rows of `b`, by cosine similarity divided by `temperature`.
pub fn info_nce(a: &Tensor, b: &Tensor, temperature: f64) -> Result<Tensor> {
    let f = || -> candle_core::Result<Tensor> {
        let a = a.to_dtype(DType::F32)?;
        let b = b.to_dtype(DType::F32)?;
        let norm = |x: &Tensor| -> candle_core::Result<Tensor> {
            let n = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-8, f64::MAX)?;
            x.broadcast_div(&n)
        };
        let sim = (norm(&a)?.matmul(&norm(&b)?.t()?)? / temperature)?;
        let n = sim.dim(0)?;
        let targets = Tensor::arange(0u32, n as u32, sim.device())?;
        candle_nn::loss::cross_entropy(&sim, &targets)
    };
    f().map_err(ce)
}
