//! Images as planar `f32` tensors in `[0, 1]`: decoding (PNG / JPEG through the `image` crate, or
//! raw pixel arrays), resampling, normalisation and the augmentations of the contrastive and
//! masked-image recipes ([`augment`]).

pub mod augment;

use crate::error::{Error, Result};

/// A planar (`c × h × w`, channel-major) image with values in `[0, 1]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub data: Vec<f32>,
}

impl Image {
    pub fn new(c: usize, h: usize, w: usize) -> Image {
        Image { c, h, w, data: vec![0.0; c * h * w] }
    }

    /// One channel's plane.
    pub fn plane(&self, ch: usize) -> &[f32] {
        &self.data[ch * self.h * self.w..(ch + 1) * self.h * self.w]
    }

    pub fn plane_mut(&mut self, ch: usize) -> &mut [f32] {
        let n = self.h * self.w;
        &mut self.data[ch * n..(ch + 1) * n]
    }

    /// Decodes PNG or JPEG bytes into `channels` (1: ITU-R 601 luma, 3: RGB) planes.
    pub fn decode(bytes: &[u8], channels: usize) -> std::result::Result<Image, String> {
        let img = image::load_from_memory(bytes).map_err(|e| e.to_string())?;
        let (w, h) = (img.width() as usize, img.height() as usize);
        if w == 0 || h == 0 {
            return Err("the image is empty".into());
        }
        let n = h * w;
        let mut out = Image::new(3, h, w);
        let rgb = img.to_rgb8();
        let (r, rest) = out.data.split_at_mut(n);
        let (g, b) = rest.split_at_mut(n);
        for (i, px) in rgb.as_raw().chunks_exact(3).enumerate() {
            r[i] = px[0] as f32 * (1.0 / 255.0);
            g[i] = px[1] as f32 * (1.0 / 255.0);
            b[i] = px[2] as f32 * (1.0 / 255.0);
        }
        // Grey through the same ITU-R 601 luma as pixel arrays and the augmentations.
        out.with_channels(channels).map_err(|e| e.to_string())
    }

    /// An image from planar `u8` pixels (`0..=255`).
    pub fn from_u8(pixels: &[u8], c: usize, h: usize, w: usize) -> Image {
        Image { c, h, w, data: pixels.iter().map(|&p| p as f32 * (1.0 / 255.0)).collect() }
    }

    /// An image from planar `f32` pixels, taken to be in `[0, 1]` (clamped).
    pub fn from_f32(pixels: &[f32], c: usize, h: usize, w: usize) -> Image {
        Image { c, h, w, data: pixels.iter().map(|&p| if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) }).collect() }
    }

    /// `channels` planes from this image: grey replicated to RGB, or RGB reduced to luma.
    pub fn with_channels(self, channels: usize) -> Result<Image> {
        match (self.c, channels) {
            (a, b) if a == b => Ok(self),
            (1, 3) => {
                let mut data = Vec::with_capacity(3 * self.data.len());
                for _ in 0..3 {
                    data.extend_from_slice(&self.data);
                }
                Ok(Image { c: 3, data, ..self })
            }
            (3, 1) => {
                let mut out = Image::new(1, self.h, self.w);
                augment::luma(&self, out.plane_mut(0));
                Ok(out)
            }
            (a, b) => Err(Error::data(format!("cannot turn a {a}-channel image into {b} channels"))),
        }
    }

    /// Mirrors the image left to right (in place).
    pub fn flip_horizontal(&mut self) {
        let w = self.w;
        for row in self.data.chunks_exact_mut(w) {
            row.reverse();
        }
    }

    /// Writes `(x - mean[c]) / std[c]` of every pixel to `out`.
    pub fn normalized_into(&self, mean: &[f32], std: &[f32], out: &mut Vec<f32>) {
        let n = self.h * self.w;
        for ch in 0..self.c {
            let (m, inv) = (mean[ch], 1.0 / std[ch]);
            out.extend(self.data[ch * n..(ch + 1) * n].iter().map(|&x| (x - m) * inv));
        }
    }
}

/// A crop box in input pixel coordinates (may be fractional).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CropBox {
    pub top: f64,
    pub left: f64,
    pub height: f64,
    pub width: f64,
}

impl CropBox {
    pub fn whole(img: &Image) -> CropBox {
        CropBox { top: 0.0, left: 0.0, height: img.h as f64, width: img.w as f64 }
    }
}

/// Per-output-pixel taps of a 1-D resampling: for output `i`, the inputs `start[i]..start[i] +
/// len[i]` with `weights[i * max_taps..]`.
struct Taps {
    start: Vec<usize>,
    len: Vec<usize>,
    max: usize,
    weights: Vec<f32>,
}

/// Triangle-filter (bilinear) taps from the input span `[offset, offset + span)` of an axis of
/// `size` pixels onto `out` pixels. When shrinking, the filter widens with the scale (as PIL and
/// torchvision's `antialias=True` do), so downsampling averages instead of aliasing.
fn taps(size: usize, offset: f64, span: f64, out: usize) -> Taps {
    let scale = span / out as f64;
    let support = scale.max(1.0);
    let max = (support.ceil() as usize) * 2 + 1;
    let mut t =
        Taps { start: Vec::with_capacity(out), len: Vec::with_capacity(out), max, weights: vec![0.0; out * max] };
    // Only pixels inside the span are read, as when cropping first and resizing after.
    let first = (offset.floor().max(0.0) as usize).min(size - 1);
    let end = ((offset + span).ceil() as usize).clamp(first + 1, size);
    for i in 0..out {
        let center = offset + (i as f64 + 0.5) * scale;
        let lo = ((center - support).floor().max(first as f64) as usize).min(end - 1);
        let hi = ((center + support).ceil() as usize).min(end).max(lo + 1);
        let ws = &mut t.weights[i * max..(i + 1) * max];
        let mut total = 0.0;
        let mut n = 0;
        for (k, x) in (lo..hi).enumerate().take(max) {
            let d = ((x as f64 + 0.5 - center) / support).abs();
            let wgt = (1.0 - d).max(0.0);
            ws[k] = wgt as f32;
            total += wgt;
            n = k + 1;
        }
        if total <= 0.0 {
            // The centre lies outside every pixel's support (only at the very border): nearest.
            let nearest = (center.floor().max(first as f64) as usize).min(end - 1);
            t.start.push(nearest);
            t.len.push(1);
            ws[0] = 1.0;
            continue;
        }
        for w in &mut ws[..n] {
            *w = (*w as f64 / total) as f32;
        }
        t.start.push(lo);
        t.len.push(n);
    }
    t
}

/// Resamples the region `b` of `img` to `out_h × out_w` (separable triangle filter, antialiased
/// when shrinking). A crop and a resize in one pass, as `RandomResizedCrop` needs.
pub fn resample(img: &Image, b: CropBox, out_h: usize, out_w: usize) -> Image {
    let tx = taps(img.w, b.left, b.width, out_w);
    let ty = taps(img.h, b.top, b.height, out_h);
    // Only the input rows some output row reads.
    let row_lo = ty.start.iter().copied().min().unwrap_or(0);
    let row_hi = ty.start.iter().zip(&ty.len).map(|(s, l)| s + l).max().unwrap_or(0);
    let rows = row_hi - row_lo;
    let mut mid = vec![0f32; rows * out_w];
    let mut out = Image::new(img.c, out_h, out_w);
    for ch in 0..img.c {
        let plane = img.plane(ch);
        for (r, mrow) in mid.chunks_exact_mut(out_w).enumerate() {
            let src = &plane[(row_lo + r) * img.w..(row_lo + r + 1) * img.w];
            for (x, m) in mrow.iter_mut().enumerate() {
                let (s, n) = (tx.start[x], tx.len[x]);
                let ws = &tx.weights[x * tx.max..x * tx.max + n];
                *m = src[s..s + n].iter().zip(ws).map(|(a, w)| a * w).sum();
            }
        }
        let dst = out.plane_mut(ch);
        for y in 0..out_h {
            let (s, n) = (ty.start[y] - row_lo, ty.len[y]);
            let ws = &ty.weights[y * ty.max..y * ty.max + n];
            let drow = &mut dst[y * out_w..(y + 1) * out_w];
            drow.fill(0.0);
            for (k, &wgt) in ws.iter().enumerate() {
                let mrow = &mid[(s + k) * out_w..(s + k + 1) * out_w];
                for (d, &m) in drow.iter_mut().zip(mrow) {
                    *d += wgt * m;
                }
            }
        }
    }
    out
}

/// The whole image resized to `out_h × out_w`.
pub fn resize(img: &Image, out_h: usize, out_w: usize) -> Image {
    if img.h == out_h && img.w == out_w {
        return img.clone();
    }
    resample(img, CropBox::whole(img), out_h, out_w)
}

/// ImageNet's per-channel mean and standard deviation (torchvision's defaults).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(h: usize, w: usize) -> Image {
        let mut img = Image::new(1, h, w);
        for y in 0..h {
            for x in 0..w {
                img.data[y * w + x] = x as f32 / (w - 1) as f32;
            }
        }
        img
    }

    #[test]
    fn identity_resample_keeps_pixels() {
        let img = ramp(5, 7);
        let out = resample(&img, CropBox::whole(&img), 5, 7);
        for (a, b) in img.data.iter().zip(&out.data) {
            assert!((a - b).abs() < 1e-6);
        }
    }

    #[test]
    fn constant_images_stay_constant_at_any_size() {
        let mut img = Image::new(3, 13, 9);
        img.data.fill(0.25);
        for (h, w) in [(4, 4), (32, 17), (1, 1), (50, 3)] {
            let out = resample(&img, CropBox { top: 1.5, left: 0.25, height: 10.0, width: 7.5 }, h, w);
            assert!(out.data.iter().all(|v| (v - 0.25).abs() < 1e-5), "{h}x{w}");
        }
    }

    #[test]
    fn downsampling_averages() {
        // Alternating columns 0/1 shrunk 2× must come out near 0.5, not 0 or 1 (no aliasing).
        let mut img = Image::new(1, 4, 64);
        for (i, v) in img.data.iter_mut().enumerate() {
            *v = (i % 2) as f32;
        }
        let out = resize(&img, 4, 8);
        assert!(out.data.iter().all(|v| (v - 0.5).abs() < 0.1), "{:?}", out.data);
    }

    #[test]
    fn flip_is_an_involution() {
        let img = ramp(3, 6);
        let mut f = img.clone();
        f.flip_horizontal();
        assert_ne!(f, img);
        assert_eq!(f.data[0], 1.0);
        f.flip_horizontal();
        assert_eq!(f, img);
    }
}
