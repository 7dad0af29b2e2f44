//! The model families (BERT-style encoder, GPT-2-style decoder, T5-style encoder-decoder, ViT,
//! CNN, MLP) and the loss each task trains with.

pub mod cnn;
pub mod decoder;
pub mod encoder;
pub mod mlp;
pub mod seq2seq;
pub mod vision;

use candle_core::{DType, Device, Tensor, D};

use crate::error::{Error, Result};
use crate::spec::ModelSpec;
use crate::train::batch::{Inputs, TaskKind};
use crate::train::nn::{ce, shape_constant, Fwd, Params};

pub use cnn::Cnn;
pub use decoder::Decoder;
pub use encoder::Encoder;
pub use mlp::Mlp;
pub use seq2seq::Seq2seq;
pub use vision::{Vit, VitHead};

/// Loss settings that come from `train:`.
#[derive(Debug, Clone, Copy)]
pub struct Objective {
    /// InfoNCE / NT-Xent temperature.
    pub temperature: f64,
    /// MAE: normalise each target patch by its own mean and variance.
    pub norm_pix_loss: bool,
}

impl Objective {
    #[cfg(any(test, feature = "internals"))]
    pub fn contrastive(temperature: f64) -> Objective {
        Objective { temperature, norm_pix_loss: false }
    }
}

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
    Vit(Vit),
    Mlp(Mlp),
    /// BYOL: the online network with its predictor, and the EMA target (`target.*`, frozen).
    Byol {
        online: Backbone,
        predictor: vision::Projection,
        target: Backbone,
    },
    /// Contrastive views through a ViT or CNN with a projection head (NT-Xent).
    Views(Backbone),
}

/// The image encoders of the contrastive task.
pub enum Backbone {
    Vit(Box<Vit>),
    Cnn(Box<Cnn>),
}

impl Backbone {
    fn new(p: &mut Params, spec: &ModelSpec, c: usize, s: usize) -> Result<Backbone> {
        Ok(match spec {
            ModelSpec::Vit(v) => {
                Backbone::Vit(Box::new(Vit::new(p, v, c, s, v.patch_size as usize, VitHead::Projection)?))
            }
            ModelSpec::Cnn(k) => Backbone::Cnn(Box::new(Cnn::new(p, k, c)?)),
            other => return Err(Error::internal(format!("`{}` is not an image encoder", other.kind()))),
        })
    }

    pub fn project(&self, images: &Tensor, fwd: &Fwd) -> Result<Tensor> {
        match self {
            Backbone::Vit(m) => m.project(images, fwd),
            Backbone::Cnn(m) => m.project(images, fwd),
        }
    }

    pub fn pooled(&self, images: &Tensor, fwd: &Fwd) -> Result<Tensor> {
        match self {
            Backbone::Vit(m) => m.pooled(images, fwd),
            Backbone::Cnn(m) => m.pooled(images, fwd),
        }
    }
}

/// What a model is built from.
#[derive(Debug, Clone, Copy)]
pub struct ModelInput<'a> {
    pub spec: &'a ModelSpec,
    /// The batches it trains on.
    pub kind: TaskKind,
    /// The vocabulary it embeds (token ids, or a table row's features).
    pub vocab: usize,
    /// The longest token row it positions (for MAE, the patch size).
    pub max_len: usize,
    /// BYOL's target network and predictor, for `contrastive_image`.
    pub byol: Option<&'a crate::spec::ByolSpec>,
    /// The seed of the initial weights (the pipeline's `seed`).
    pub seed: u64,
}

impl Model {
    /// Builds `input.spec` for `input.kind` with seeded initial weights.
    pub fn new(input: &ModelInput, device: &Device, dtype: DType) -> Result<Model> {
        let ModelInput { spec, kind, vocab, max_len, byol, seed } = *input;
        let mut params = Params::new(seed, device, dtype);
        let sizes = spec.sizes().unwrap_or_default();
        let net = match (spec, kind) {
            (ModelSpec::Encoder(e), TaskKind::Mlm | TaskKind::Contrastive) => {
                Net::Encoder(Encoder::new(&mut params, &sizes, e.pooling, vocab, max_len)?)
            }
            (ModelSpec::Decoder(s), TaskKind::Causal) => Net::Decoder(Decoder::new(&mut params, s, vocab, max_len)?),
            (ModelSpec::Seq2seq(s), TaskKind::Seq2seq) => Net::Seq2seq(Seq2seq::new(&mut params, s, vocab)?),
            (ModelSpec::Vit(_) | ModelSpec::Cnn(_), TaskKind::ImageViews { c, s }) => match byol {
                None => Net::Views(Backbone::new(&mut params, spec, c, s)?),
                Some(b) => {
                    let online = Backbone::new(&mut params, spec, c, s)?;
                    let proj = match spec {
                        ModelSpec::Vit(v) => v.projection,
                        ModelSpec::Cnn(k) => k.projection,
                        _ => unreachable!("matched above"),
                    } as usize;
                    let predictor =
                        vision::Projection::new(&mut params, "predictor", proj, b.predictor_hidden as usize, proj)?;
                    params.frozen_scope(BYOL_TARGET);
                    let target = Backbone::new(&mut params, spec, c, s)?;
                    params.frozen_scope("");
                    // BYOL starts the target as a copy of the online network.
                    params.ema(BYOL_TARGET, 0.0)?;
                    Net::Byol { online, predictor, target }
                }
            },
            (ModelSpec::Vit(v), TaskKind::Mae { c, s }) => {
                // MAE's patches are the task's; `max_len` carries the patch size.
                Net::Vit(Vit::new(&mut params, v, c, s, max_len, VitHead::Mae)?)
            }
            (ModelSpec::Vit(v), TaskKind::DenoiseImage { c, s }) => {
                Net::Vit(Vit::new(&mut params, v, c, s, v.patch_size as usize, VitHead::Pixels)?)
            }
            (ModelSpec::Mlp(m), TaskKind::Scarf) => Net::Mlp(Mlp::new(&mut params, m, vocab, false)?),
            (ModelSpec::Mlp(m), TaskKind::Vime) => Net::Mlp(Mlp::new(&mut params, m, vocab, true)?),
            (spec, kind) => {
                return Err(Error::internal(format!("a `{}` model cannot train {kind:?} batches", spec.kind())));
            }
        };
        let dropout = match spec {
            ModelSpec::Mlp(m) => m.dropout,
            _ => sizes.dropout,
        };
        Ok(Model { params, net, dropout, kind })
    }

    /// Embeddings of one batch for the collapse monitor (`None` for tasks without one): the
    /// projection head's output for contrastive tasks, the pooled encoder output otherwise.
    pub fn embeddings(&self, inputs: &Inputs) -> Result<Option<Tensor>> {
        let fwd = Fwd::eval();
        Ok(match (&self.net, inputs) {
            (Net::Encoder(m), Inputs::Contrastive { a, .. }) => Some(m.embed_rows(a, &fwd)?),
            (Net::Views(m), Inputs::Images { views }) => Some(m.project(&views[0], &fwd)?),
            (Net::Byol { online, .. }, Inputs::Images { views }) => Some(online.project(&views[0], &fwd)?),
            (Net::Vit(m), Inputs::Mae { pixels, .. }) => Some(m.pooled(pixels, &fwd)?),
            (Net::Vit(m), Inputs::Denoise { clean, .. }) => Some(m.pooled(clean, &fwd)?),
            (Net::Mlp(m), Inputs::Table { clean, .. }) => Some(m.project(clean, &fwd)?),
            _ => None,
        })
    }

    /// The frozen encoder's representation of one batch, for linear probes: the pooled image
    /// embedding (first view) or the row embedding, before any projection head.
    pub fn features(&self, inputs: &Inputs) -> Result<Option<Tensor>> {
        let fwd = Fwd::eval();
        Ok(match (&self.net, inputs) {
            (Net::Views(m), Inputs::Images { views }) => Some(m.pooled(&views[0], &fwd)?),
            (Net::Byol { online, .. }, Inputs::Images { views }) => Some(online.pooled(&views[0], &fwd)?),
            (Net::Vit(m), Inputs::Mae { pixels, .. }) => Some(m.pooled(pixels, &fwd)?),
            (Net::Vit(m), Inputs::Denoise { clean, .. }) => Some(m.pooled(clean, &fwd)?),
            (Net::Mlp(m), Inputs::Table { clean, .. }) => Some(m.encode(clean, &fwd)?),
            (Net::Encoder(m), Inputs::Contrastive { a, .. }) => Some(m.embed_rows(a, &fwd)?),
            _ => None,
        })
    }

    /// Parameter-name prefixes the task leaves unused (they receive no gradient by design).
    #[cfg(any(test, feature = "internals"))]
    pub fn unused_prefixes(&self) -> &'static [&'static str] {
        match &self.net {
            Net::Encoder(_) => Encoder::unused(self.kind == TaskKind::Contrastive),
            Net::Byol { .. } => &[BYOL_TARGET],
            _ => &[],
        }
    }

    /// After an optimizer step: BYOL moves its target network towards the online one, with
    /// `τ = 1 − (1 − ema)·(cos(π·step/steps) + 1)/2`.
    pub fn after_step(&self, byol: Option<&crate::spec::ByolSpec>, step: u64, steps: u64) -> Result<()> {
        if let (Net::Byol { .. }, Some(b)) = (&self.net, byol) {
            let k = (step as f64 / steps.max(1) as f64).min(1.0);
            let tau = 1.0 - (1.0 - b.ema) * ((std::f64::consts::PI * k).cos() + 1.0) / 2.0;
            self.params.ema(BYOL_TARGET, tau)?;
        }
        Ok(())
    }

    /// The mean loss of a batch (a scalar tensor).
    pub fn loss(&self, inputs: &Inputs, fwd: &Fwd, objective: Objective) -> Result<Tensor> {
        let temperature = objective.temperature;
        match (&self.net, inputs) {
            (Net::Views(m), Inputs::Images { views }) => {
                let z = views.iter().map(|v| m.project(v, fwd)).collect::<Result<Vec<_>>>()?;
                // All pairs of views (two views: SimCLR's NT-Xent).
                let n = z.len();
                mean_of(
                    (0..n)
                        .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
                        .map(|(i, j)| nt_xent(&z[i], &z[j], temperature)),
                )
            }
            (Net::Byol { online, predictor, target }, Inputs::Images { views }) => {
                // Each view's prediction against the target's projection of every other view.
                let p =
                    views.iter().map(|v| predictor.forward(&online.project(v, fwd)?)).collect::<Result<Vec<_>>>()?;
                let z = views
                    .iter()
                    .map(|v| target.project(v, &Fwd::eval()).map(|t| t.detach()))
                    .collect::<Result<Vec<_>>>()?;
                let n = views.len();
                mean_of(
                    (0..n)
                        .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
                        .map(|(i, j)| byol_loss(&p[i], &z[j])),
                )
            }
            (Net::Vit(m), Inputs::Mae { pixels, keep, masked, restore, .. }) => {
                m.mae_loss(pixels, keep, masked, restore, objective.norm_pix_loss, fwd)
            }
            (Net::Vit(m), Inputs::Denoise { noisy, clean }) => m.denoise_loss(noisy, clean, fwd),
            (Net::Mlp(m), Inputs::Table { clean, corrupted, mask }) => match self.kind {
                TaskKind::Vime => m.vime_loss(corrupted, clean, mask, fwd),
                _ => info_nce(&m.project(clean, fwd)?, &m.project(corrupted, fwd)?, temperature),
            },
            (Net::Encoder(m), Inputs::Mlm { view, select, targets }) => {
                let h = m.hidden(view, fwd)?;
                m.mlm_loss(&h, select, targets, fwd)
            }
            (Net::Encoder(m), Inputs::Contrastive { a, b }) => {
                let za = m.embed_rows(a, fwd)?;
                let zb = m.embed_rows(b, fwd)?;
                info_nce(&za, &zb, temperature)
            }
            (Net::Decoder(m), Inputs::Causal { ids, positions, bias, select, targets }) => {
                let h = m.hidden(ids, positions, bias, fwd)?;
                m.lm_loss(&h, select, targets, fwd)
            }
            (Net::Seq2seq(m), Inputs::Seq2seq { src, dec_ids, dec_bias, select, targets }) => {
                let enc = m.encode(&src.ids, &src.pad_bias, fwd)?;
                let h = m.decode(dec_ids, dec_bias, &enc, &src.pad_bias, fwd)?;
                m.lm_loss(&h, select, targets, fwd)
            }
            _ => Err(Error::internal("the batch does not match the model")),
        }
    }
}

/// The mean of a non-empty series of scalar losses.
fn mean_of(losses: impl Iterator<Item = Result<Tensor>>) -> Result<Tensor> {
    let (mut total, mut n): (Option<Tensor>, usize) = (None, 0);
    for l in losses {
        let l = l?;
        total = Some(match total {
            None => l,
            Some(t) => (t + l).map_err(ce)?,
        });
        n += 1;
    }
    let total = total.ok_or_else(|| Error::internal("a loss over fewer than two views"))?;
    (total / n as f64).map_err(ce)
}

/// The prefix of BYOL's target-network parameters.
pub const BYOL_TARGET: &str = "target.";

/// BYOL's regression loss: `2 − 2·cos(p, z)`, the mean over rows.
pub fn byol_loss(p: &Tensor, z: &Tensor) -> Result<Tensor> {
    let f = || -> candle_core::Result<Tensor> {
        let norm = |x: &Tensor| -> candle_core::Result<Tensor> {
            let n = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-8, f64::MAX)?;
            x.broadcast_div(&n)
        };
        let cos = (norm(p)? * norm(z)?)?.sum(D::Minus1)?;
        ((cos * -2.0)? + 2.0)?.mean_all()
    };
    f().map_err(ce)
}

/// NT-Xent (SimCLR): the 2N embeddings of both views, each of which must pick its partner among
/// the other 2N − 1 by cosine similarity divided by `temperature`; the mean over all 2N.
pub fn nt_xent(a: &Tensor, b: &Tensor, temperature: f64) -> Result<Tensor> {
    let f = || -> candle_core::Result<Tensor> {
        let z = Tensor::cat(&[&a.to_dtype(DType::F32)?, &b.to_dtype(DType::F32)?], 0)?;
        let n2 = z.dim(0)?;
        let n = n2 / 2;
        let norm = z.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-8, f64::MAX)?;
        let z = z.broadcast_div(&norm)?;
        let sim = (z.matmul(&z.t()?)? / temperature)?;
        // A row never picks itself.
        let diag = shape_constant("nt_xent.diagonal", &[n2], z.device(), || {
            let mut diag = vec![0f32; n2 * n2];
            for i in 0..n2 {
                diag[i * n2 + i] = crate::train::nn::MASKED;
            }
            Tensor::from_vec(diag, (n2, n2), z.device())
        })?;
        let sim = (sim + diag)?;
        let targets = shape_constant("nt_xent.targets", &[n2], z.device(), || {
            Tensor::from_vec((0..n2).map(|i| ((i + n) % n2) as u32).collect::<Vec<_>>(), n2, z.device())
        })?;
        candle_nn::loss::cross_entropy(&sim, &targets)
    };
    f().map_err(ce)
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
        let targets =
            shape_constant("info_nce.targets", &[n], sim.device(), || Tensor::arange(0u32, n as u32, sim.device()))?;
        candle_nn::loss::cross_entropy(&sim, &targets)
    };
    f().map_err(ce)
}
