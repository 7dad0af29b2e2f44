//! The MLP encoder of the tabular tasks, with SCARF's projection head (Bahri et al. 2022: 4
//! layers of 256 with ReLU, a 2-layer head, InfoNCE between a row and its corruption) and VIME's
//! two heads (Yoon et al. 2020: mask estimation, trained with binary cross-entropy, and feature
//! reconstruction, with mean squared error; the reconstruction term weighted by α = 2 as in
//! VIME's reference code). Categorical codes enter as numbers.

use candle_core::Tensor;

use crate::error::Result;
use crate::spec::MlpSpec;
use crate::train::models::vision::Projection;
use crate::train::nn::{ce, Fwd, Linear, Params};

const STD: f64 = 0.02;

/// VIME's weight of the feature-reconstruction loss.
pub const VIME_ALPHA: f64 = 2.0;

pub struct Mlp {
    layers: Vec<Linear>,
    projection: Option<Projection>,
    mask_head: Option<Linear>,
    feature_head: Option<Linear>,
}

impl Mlp {
    /// `vime`: with the mask and feature heads; else with the projection head.
    pub fn new(p: &mut Params, s: &MlpSpec, features: usize, vime: bool) -> Result<Mlp> {
        let h = s.hidden as usize;
        // He-style scale for ReLU layers keeps activations from shrinking with depth.
        let layers = (0..s.layers as usize)
            .map(|i| {
                let input = if i == 0 { features } else { h };
                Linear::new(p, &format!("encoder.layers.{i}"), input, h, true, (2.0 / input as f64).sqrt())
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Mlp {
            layers,
            projection: if vime { None } else { Some(Projection::new(p, "projection", h, h, s.projection as usize)?) },
            mask_head: if vime { Some(Linear::new(p, "vime.mask_head", h, features, true, STD)?) } else { None },
            feature_head: if vime { Some(Linear::new(p, "vime.feature_head", h, features, true, STD)?) } else { None },
        })
    }

    /// The row embedding `(B, hidden)`.
    pub fn encode(&self, x: &Tensor, fwd: &Fwd) -> Result<Tensor> {
        let mut x = x.clone();
        for l in &self.layers {
            x = fwd.dropout(&l.forward(&x)?.relu().map_err(ce)?)?;
        }
        Ok(x)
    }

    /// The projection head's output (the embedding itself without one).
    pub fn project(&self, x: &Tensor, fwd: &Fwd) -> Result<Tensor> {
        let h = self.encode(x, fwd)?;
        match &self.projection {
            Some(p) => p.forward(&h),
            None => Ok(h),
        }
    }

    /// VIME: BCE of the mask estimate plus α × MSE of the reconstructed features.
    pub fn vime_loss(&self, corrupted: &Tensor, clean: &Tensor, mask: &Tensor, fwd: &Fwd) -> Result<Tensor> {
        let (Some(mh), Some(fh)) = (&self.mask_head, &self.feature_head) else {
            return Err(crate::Error::internal("this MLP has no VIME heads"));
        };
        let h = self.encode(corrupted, fwd)?;
        let logits = mh.forward(&h)?;
        let bce = binary_cross_entropy_with_logits(&logits, mask)?;
        let rec = (fh.forward(&h)? - clean).and_then(|d| d.sqr()).and_then(|d| d.mean_all()).map_err(ce)?;
        (bce + (rec * VIME_ALPHA).map_err(ce)?).map_err(ce)
    }
}

/// Mean of `softplus(x) − x·y`, computed stably as `max(x, 0) − x·y + log(1 + e^−|x|)`.
pub fn binary_cross_entropy_with_logits(x: &Tensor, y: &Tensor) -> Result<Tensor> {
    let f = || -> candle_core::Result<Tensor> {
        let softplus = (x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
        (softplus - (x * y)?)?.mean_all()
    };
    f().map_err(ce)
}
