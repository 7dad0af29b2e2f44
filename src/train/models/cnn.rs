//! A small ResNet-style CNN for the contrastive image task: a 3×3 stem, then per stage a stride-2
//! 3×3 convolution and a residual block of two 3×3 convolutions, group normalisation (batch
//! statistics would couple the examples of a batch, which contrastive losses must not see) and
//! ReLU, then global average pooling and a 2-layer projection head. Convolutions are
//! `nn::conv3x3` (im2col and GEMM both ways on the CPU); weights use He initialisation.

use candle_core::{DType, Tensor, D};

use crate::error::Result;
use crate::spec::CnnSpec;
use crate::train::kernels::{AddRelu, GroupNorm};
use crate::train::models::vision::Projection;
use crate::train::nn::{ce, conv3x3, fused, Fwd, Params};

const EPS: f64 = 1e-5;

/// A 3×3 convolution (no bias) followed by group normalisation.
struct ConvNorm {
    w: Tensor,
    gamma: Tensor,
    beta: Tensor,
    groups: usize,
    stride: usize,
}

impl ConvNorm {
    fn new(p: &mut Params, name: &str, input: usize, output: usize, stride: usize) -> Result<ConvNorm> {
        let std = (2.0 / (9 * input) as f64).sqrt();
        Ok(ConvNorm {
            w: p.normal(&format!("{name}.conv.weight"), &[output, input, 3, 3], std)?,
            gamma: p.ones(&format!("{name}.norm.weight"), &[output])?,
            beta: p.zeros(&format!("{name}.norm.bias"), &[output])?,
            groups: (1..=8).rev().find(|g| output.is_multiple_of(*g)).unwrap_or(1),
            stride,
        })
    }

    /// The convolution and the norm, with `relu` a ReLU after them (fused into the norm).
    fn forward(&self, x: &Tensor, relu: bool) -> Result<Tensor> {
        let y = conv3x3(x, &self.w, self.stride)?;
        norm(&y, &self.gamma, &self.beta, self.groups, relu)
    }
}

/// Group normalisation of `(B, C, H, W)` over `groups` channel groups (fused on the CPU in f32).
pub fn group_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, groups: usize) -> Result<Tensor> {
    norm(x, gamma, beta, groups, false)
}

/// `relu(group_norm(x))` in one pass on the CPU in f32.
pub fn group_norm_relu(x: &Tensor, gamma: &Tensor, beta: &Tensor, groups: usize) -> Result<Tensor> {
    norm(x, gamma, beta, groups, true)
}

fn norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, groups: usize, relu: bool) -> Result<Tensor> {
    if fused(x) && gamma.dtype() == DType::F32 {
        let c = |t: &Tensor| t.contiguous().map_err(ce);
        return c(x)?.apply_op3(&c(gamma)?, &c(beta)?, GroupNorm { groups, eps: EPS, relu }).map_err(ce);
    }
    let y = reference_group_norm(x, gamma, beta, groups)?;
    if relu {
        y.relu().map_err(ce)
    } else {
        Ok(y)
    }
}

/// `relu(a + b)` for `a` and `b` of one shape, in one pass on the CPU in f32.
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if fused(a) && b.dtype() == DType::F32 && a.dims() == b.dims() {
        let c = |t: &Tensor| t.contiguous().map_err(ce);
        return c(a)?.apply_op2(&c(b)?, AddRelu).map_err(ce);
    }
    (a + b).and_then(|z| z.relu()).map_err(ce)
}

/// [`group_norm`] composed from differentiable ops.
pub fn reference_group_norm(x: &Tensor, gamma: &Tensor, beta: &Tensor, groups: usize) -> Result<Tensor> {
    let f = || -> candle_core::Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let g = x.reshape((b, groups, (c / groups) * h * w))?;
        let mean = g.mean_keepdim(D::Minus1)?;
        let centred = g.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centred.broadcast_div(&(var + EPS)?.sqrt()?)?.reshape((b, c, h, w))?;
        normed.broadcast_mul(&gamma.reshape((1, c, 1, 1))?)?.broadcast_add(&beta.reshape((1, c, 1, 1))?)
    };
    f().map_err(ce)
}

struct Stage {
    down: ConvNorm,
    conv1: ConvNorm,
    conv2: ConvNorm,
}

pub struct Cnn {
    stem: ConvNorm,
    stages: Vec<Stage>,
    projection: Projection,
}

impl Cnn {
    pub fn new(p: &mut Params, s: &CnnSpec, channels: usize) -> Result<Cnn> {
        let widths: Vec<usize> = s.widths.iter().map(|&w| w as usize).collect();
        let stem = ConvNorm::new(p, "cnn.stem", channels, widths[0], 1)?;
        let mut stages = Vec::new();
        let mut input = widths[0];
        for (i, &w) in widths.iter().enumerate() {
            let n = format!("cnn.stages.{i}");
            stages.push(Stage {
                down: ConvNorm::new(p, &format!("{n}.down"), input, w, 2)?,
                conv1: ConvNorm::new(p, &format!("{n}.block.conv1"), w, w, 1)?,
                conv2: ConvNorm::new(p, &format!("{n}.block.conv2"), w, w, 1)?,
            });
            input = w;
        }
        let last = *widths.last().expect("at least one stage (checked with the spec)");
        Ok(Cnn { stem, stages, projection: Projection::new(p, "projection", last, last, s.projection as usize)? })
    }

    /// The pooled image embedding `(B, widths.last)`.
    pub fn pooled(&self, images: &Tensor, _fwd: &Fwd) -> Result<Tensor> {
        let mut x = self.stem.forward(images, true)?;
        for s in &self.stages {
            x = s.down.forward(&x, true)?;
            let y = s.conv1.forward(&x, true)?;
            let y = s.conv2.forward(&y, false)?;
            x = add_relu(&x, &y)?;
        }
        x.mean(D::Minus1).and_then(|x| x.mean(D::Minus1)).map_err(ce)
    }

    /// The projection head's output.
    pub fn project(&self, images: &Tensor, fwd: &Fwd) -> Result<Tensor> {
        self.projection.forward(&self.pooled(images, fwd)?)
    }
}
