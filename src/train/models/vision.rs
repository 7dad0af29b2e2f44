//! A small vision transformer (Dosovitskiy et al. 2021) with the heads of the image tasks: a
//! SimCLR projection MLP, an MAE decoder (He et al. 2021) and a per-patch pixel head for
//! denoising. Patches are embedded by reshape + matmul (the patch-embedding weight is stored as
//! HuggingFace's `(hidden, channels, p, p)` convolution kernel, so the two agree); blocks are
//! pre-LN; the image embedding is the mean of the final tokens. Names follow HuggingFace
//! `ViTModel` / `ViTMAEForPreTraining` (`vit.encoder.layer.0.attention.attention.query.weight`).

use candle_core::{Tensor, D};

use crate::error::Result;
use crate::spec::VitSpec;
use crate::train::nn::{ce, gelu, qkv, self_attention, Fwd, LayerNorm, Linear, Params};

const STD: f64 = 0.02;
const EPS: f64 = 1e-6;

/// One pre-LN transformer block.
struct Block {
    ln_1: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ln_2: LayerNorm,
    fc: Linear,
    proj: Linear,
}

impl Block {
    fn new(p: &mut Params, n: &str, h: usize, f: usize) -> Result<Block> {
        Ok(Block {
            ln_1: LayerNorm::new(p, &format!("{n}.layernorm_before"), h, EPS)?,
            q: Linear::new(p, &format!("{n}.attention.attention.query"), h, h, true, STD)?,
            k: Linear::new(p, &format!("{n}.attention.attention.key"), h, h, true, STD)?,
            v: Linear::new(p, &format!("{n}.attention.attention.value"), h, h, true, STD)?,
            o: Linear::new(p, &format!("{n}.attention.output.dense"), h, h, true, STD)?,
            ln_2: LayerNorm::new(p, &format!("{n}.layernorm_after"), h, EPS)?,
            fc: Linear::new(p, &format!("{n}.intermediate.dense"), h, f, true, STD)?,
            proj: Linear::new(p, &format!("{n}.output.dense"), f, h, true, STD)?,
        })
    }

    fn forward(&self, x: &Tensor, heads: usize, fwd: &Fwd) -> Result<Tensor> {
        let h = x.dim(2).map_err(ce)?;
        let scale = 1.0 / ((h / heads) as f64).sqrt();
        let y = self.ln_1.forward(x)?;
        let a = self_attention(&qkv(&y, &self.q, &self.k, &self.v)?, heads, None, scale, fwd)?;
        let x = (x + self.o.forward(&a)?).map_err(ce)?;
        let m = gelu(&self.fc.forward(&self.ln_2.forward(&x)?)?, true)?;
        (x + self.proj.forward(&m)?).map_err(ce)
    }
}

/// The MAE decoder: embeds the encoded kept patches, inserts mask tokens, restores the patch
/// order, and predicts every patch's pixels.
struct MaeDecoder {
    embed: Linear,
    mask_token: Tensor,
    pos: Tensor,
    blocks: Vec<Block>,
    norm: LayerNorm,
    pred: Linear,
    heads: usize,
}

/// A 2-layer projection MLP (SimCLR's `g`): linear, ReLU, linear.
pub struct Projection {
    a: Linear,
    b: Linear,
}

impl Projection {
    pub fn new(p: &mut Params, name: &str, input: usize, hidden: usize, out: usize) -> Result<Projection> {
        Ok(Projection {
            a: Linear::new(p, &format!("{name}.0"), input, hidden, true, STD)?,
            b: Linear::new(p, &format!("{name}.2"), hidden, out, true, STD)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.b.forward(&self.a.forward(x)?.relu().map_err(ce)?)
    }
}

/// Which head the ViT carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VitHead {
    Projection,
    Mae,
    Pixels,
}

pub struct Vit {
    patch: usize,
    channels: usize,
    grid: usize,
    heads: usize,
    patch_w: Tensor,
    patch_b: Tensor,
    pos: Tensor,
    blocks: Vec<Block>,
    norm: LayerNorm,
    projection: Option<Projection>,
    decoder: Option<MaeDecoder>,
    pixels: Option<Linear>,
}

impl Vit {
    pub fn new(p: &mut Params, s: &VitSpec, channels: usize, size: usize, patch: usize, head: VitHead) -> Result<Vit> {
        let (h, grid) = (s.hidden as usize, size / patch);
        let n = grid * grid;
        let pp = channels * patch * patch;
        let blocks = (0..s.layers as usize)
            .map(|i| Block::new(p, &format!("vit.encoder.layer.{i}"), h, 4 * h))
            .collect::<Result<Vec<_>>>()?;
        let decoder = match head {
            VitHead::Mae => {
                let dh = s.decoder_hidden as usize;
                Some(MaeDecoder {
                    embed: Linear::new(p, "decoder.decoder_embed", h, dh, true, STD)?,
                    mask_token: p.normal("decoder.mask_token", &[1, 1, dh], STD)?,
                    pos: p.normal("decoder.decoder_pos_embed", &[1, n, dh], STD)?,
                    blocks: (0..s.decoder_layers as usize)
                        .map(|i| Block::new(p, &format!("decoder.decoder_layers.{i}"), dh, 4 * dh))
                        .collect::<Result<Vec<_>>>()?,
                    norm: LayerNorm::new(p, "decoder.decoder_norm", dh, EPS)?,
                    pred: Linear::new(p, "decoder.decoder_pred", dh, pp, true, STD)?,
                    heads: s.heads as usize,
                })
            }
            _ => None,
        };
        Ok(Vit {
            patch,
            channels,
            grid,
            heads: s.heads as usize,
            patch_w: p.normal(
                "vit.embeddings.patch_embeddings.projection.weight",
                &[h, channels, patch, patch],
                STD,
            )?,
            patch_b: p.zeros("vit.embeddings.patch_embeddings.projection.bias", &[h])?,
            pos: p.normal("vit.embeddings.position_embeddings", &[1, n, h], STD)?,
            blocks,
            norm: LayerNorm::new(p, "vit.layernorm", h, EPS)?,
            projection: match head {
                VitHead::Projection => Some(Projection::new(p, "projection", h, h, s.projection as usize)?),
                _ => None,
            },
            decoder,
            pixels: match head {
                VitHead::Pixels => Some(Linear::new(p, "pixel_head", h, pp, true, STD)?),
                _ => None,
            },
        })
    }

    /// `(B, C, H, W)` → patch rows `(B, patches, C·p·p)`, each patch channel-major like a
    /// convolution kernel.
    pub fn patchify(&self, images: &Tensor) -> Result<Tensor> {
        let b = images.dim(0).map_err(ce)?;
        let (g, p, c) = (self.grid, self.patch, self.channels);
        images
            .reshape((b, c, g, p, g, p))
            .and_then(|x| x.permute((0, 2, 4, 1, 3, 5)))
            .and_then(|x| x.contiguous())
            .and_then(|x| x.reshape((b, g * g, c * p * p)))
            .map_err(ce)
    }

    /// Patch rows → token embeddings with positions `(B, patches, hidden)`.
    fn embed(&self, patches: &Tensor) -> Result<Tensor> {
        let h = self.patch_w.dim(0).map_err(ce)?;
        let w = self.patch_w.reshape((h, ())).map_err(ce)?;
        let (b, n, pp) = patches.dims3().map_err(ce)?;
        let x = patches
            .reshape((b * n, pp))
            .and_then(|x| x.matmul(&w.t()?))
            .and_then(|x| x.broadcast_add(&self.patch_b))
            .and_then(|x| x.reshape((b, n, h)))
            .map_err(ce)?;
        x.broadcast_add(&self.pos).map_err(ce)
    }

    fn encode_tokens(&self, mut x: Tensor, fwd: &Fwd) -> Result<Tensor> {
        for b in &self.blocks {
            x = b.forward(&x, self.heads, fwd)?;
        }
        self.norm.forward(&x)
    }

    /// Final token states `(B, patches, hidden)` of whole images.
    pub fn encode(&self, images: &Tensor, fwd: &Fwd) -> Result<Tensor> {
        self.encode_tokens(self.embed(&self.patchify(images)?)?, fwd)
    }

    /// The image embedding: the mean of the final tokens `(B, hidden)`.
    pub fn pooled(&self, images: &Tensor, fwd: &Fwd) -> Result<Tensor> {
        self.encode(images, fwd)?.mean(1).map_err(ce)
    }

    /// The projection head's output `(B, projection)`.
    pub fn project(&self, images: &Tensor, fwd: &Fwd) -> Result<Tensor> {
        let pooled = self.pooled(images, fwd)?;
        match &self.projection {
            Some(p) => p.forward(&pooled),
            None => Ok(pooled),
        }
    }

    /// MAE: the mean squared error on the masked patches (per-patch normalised targets when
    /// `norm_pix`). Patches are channel-major `(c, p, p)` (HuggingFace ViTMAE's `decoder_pred`
    /// orders them `(p, p, c)`, so that one weight does not transfer as is).
    pub fn mae_loss(
        &self,
        images: &Tensor,
        keep: &Tensor,
        masked: &Tensor,
        restore: &Tensor,
        norm_pix: bool,
        fwd: &Fwd,
    ) -> Result<Tensor> {
        let dec = self.decoder.as_ref().ok_or_else(|| crate::Error::internal("this ViT has no MAE decoder"))?;
        let patches = self.patchify(images)?;
        let (b, n, pp) = patches.dims3().map_err(ce)?;
        let tokens = self.embed(&patches)?;
        let h = tokens.dim(2).map_err(ce)?;
        let kept_n = keep.dim(0).map_err(ce)? / b;
        let kept = tokens
            .reshape((b * n, h))
            .and_then(|t| t.index_select(keep, 0))
            .and_then(|t| t.reshape((b, kept_n, h)))
            .map_err(ce)?;
        let enc = self.encode_tokens(kept, fwd)?;
        let y = dec.embed.forward(&enc)?;
        let dh = y.dim(2).map_err(ce)?;
        let masks = dec.mask_token.broadcast_as((b, n - kept_n, dh)).map_err(ce)?;
        let full = Tensor::cat(&[&y, &masks], 1)
            .and_then(|t| t.reshape((b * n, dh)))
            .and_then(|t| t.index_select(restore, 0))
            .and_then(|t| t.reshape((b, n, dh)))
            .and_then(|t| t.broadcast_add(&dec.pos))
            .map_err(ce)?;
        let mut x = full;
        for blk in &dec.blocks {
            x = blk.forward(&x, dec.heads, fwd)?;
        }
        let pred = dec.pred.forward(&dec.norm.forward(&x)?)?;
        let target = if norm_pix {
            let mean = patches.mean_keepdim(D::Minus1).map_err(ce)?;
            let centred = patches.broadcast_sub(&mean).map_err(ce)?;
            // torch.var's default: unbiased.
            let var = (centred.sqr().and_then(|c| c.sum_keepdim(D::Minus1)).map_err(ce)? / (pp.max(2) - 1) as f64)
                .map_err(ce)?;
            centred.broadcast_div(&(var + 1e-6).and_then(|v| v.sqrt()).map_err(ce)?).map_err(ce)?
        } else {
            patches
        };
        let err = (pred - target).and_then(|d| d.sqr()).and_then(|d| d.mean(D::Minus1)).map_err(ce)?;
        err.reshape(b * n).and_then(|e| e.index_select(masked, 0)).and_then(|e| e.mean_all()).map_err(ce)
    }

    /// Denoising: mean squared error between the pixels predicted from `noisy` and `clean`.
    pub fn denoise_loss(&self, noisy: &Tensor, clean: &Tensor, fwd: &Fwd) -> Result<Tensor> {
        let head = self.pixels.as_ref().ok_or_else(|| crate::Error::internal("this ViT has no pixel head"))?;
        let pred = head.forward(&self.encode(noisy, fwd)?)?;
        let target = self.patchify(clean)?;
        (pred - target).and_then(|d| d.sqr()).and_then(|d| d.mean_all()).map_err(ce)
    }
}
