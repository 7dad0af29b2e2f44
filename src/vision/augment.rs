//! The augmentations of SimCLR / BYOL / MoCo v2 with torchvision's semantics: random resized
//! crop (`RandomResizedCrop.get_params`, fused with the resize), horizontal flip, colour jitter
//! (brightness, contrast, saturation, hue in a random order, `ColorJitter`), random grayscale,
//! gaussian blur and solarize. Every draw comes from the caller's RNG, in a fixed order.

use rand::seq::SliceRandom;
use rand::Rng;

use super::{resample, CropBox, Image};

/// Random resized crop: area fraction `scale` and aspect ratio (w / h) `ratio` ranges.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Crop {
    pub scale: (f64, f64),
    pub ratio: (f64, f64),
}

/// Colour jitter strengths (torchvision `ColorJitter`) applied with probability `p`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Jitter {
    pub brightness: f64,
    pub contrast: f64,
    pub saturation: f64,
    pub hue: f64,
    pub p: f64,
}

/// Gaussian blur with a uniform `sigma` range, applied with probability `p`; the kernel covers
/// 10% of the image side (odd, at least 3), as in SimCLR.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Blur {
    pub p: f64,
    pub sigma: (f64, f64),
}

/// Solarize (`x ≥ threshold → 1 − x`) with probability `p`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Solarize {
    pub p: f64,
    pub threshold: f64,
}

/// How one view is made, in this order: crop (or a plain resize), flip, jitter, grayscale,
/// blur, solarize.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewAugment {
    pub crop: Option<Crop>,
    pub flip: f64,
    pub jitter: Option<Jitter>,
    pub grayscale: f64,
    pub blur: Option<Blur>,
    pub solarize: Option<Solarize>,
}

impl ViewAugment {
    /// SimCLR (Chen et al. 2020, strength 1): crop (0.08, 1), flip 0.5, jitter 0.8/0.8/0.8/0.2 at
    /// p 0.8, grayscale 0.2, blur 0.5 with sigma (0.1, 2).
    pub fn simclr() -> ViewAugment {
        ViewAugment {
            crop: Some(Crop { scale: (0.08, 1.0), ratio: (3.0 / 4.0, 4.0 / 3.0) }),
            flip: 0.5,
            jitter: Some(Jitter { brightness: 0.8, contrast: 0.8, saturation: 0.8, hue: 0.2, p: 0.8 }),
            grayscale: 0.2,
            blur: Some(Blur { p: 0.5, sigma: (0.1, 2.0) }),
            solarize: None,
        }
    }

    /// BYOL's two asymmetric views (Grill et al. 2020, table 6): jitter 0.4/0.4/0.2/0.1 at p 0.8,
    /// grayscale 0.2; view a always blurred, never solarized; view b blurred at 0.1, solarized at 0.2.
    pub fn byol() -> [ViewAugment; 2] {
        let base = ViewAugment {
            crop: Some(Crop { scale: (0.08, 1.0), ratio: (3.0 / 4.0, 4.0 / 3.0) }),
            flip: 0.5,
            jitter: Some(Jitter { brightness: 0.4, contrast: 0.4, saturation: 0.2, hue: 0.1, p: 0.8 }),
            grayscale: 0.2,
            blur: Some(Blur { p: 1.0, sigma: (0.1, 2.0) }),
            solarize: None,
        };
        let b = ViewAugment {
            blur: Some(Blur { p: 0.1, sigma: (0.1, 2.0) }),
            solarize: Some(Solarize { p: 0.2, threshold: 0.5 }),
            ..base.clone()
        };
        [base, b]
    }

    /// MoCo v2 (Chen et al. 2020): crop (0.2, 1), jitter 0.4/0.4/0.4/0.1 at p 0.8, grayscale 0.2,
    /// blur 0.5, flip.
    pub fn moco_v2() -> ViewAugment {
        ViewAugment {
            crop: Some(Crop { scale: (0.2, 1.0), ratio: (3.0 / 4.0, 4.0 / 3.0) }),
            flip: 0.5,
            jitter: Some(Jitter { brightness: 0.4, contrast: 0.4, saturation: 0.4, hue: 0.1, p: 0.8 }),
            grayscale: 0.2,
            blur: Some(Blur { p: 0.5, sigma: (0.1, 2.0) }),
            solarize: None,
        }
    }

    /// One augmented `out_h × out_w` view of `img`.
    pub fn apply(&self, img: &Image, out_h: usize, out_w: usize, rng: &mut impl Rng) -> Image {
        let b = match &self.crop {
            Some(c) => crop_box(img.h, img.w, c, rng),
            None => CropBox::whole(img),
        };
        let mut v = resample(img, b, out_h, out_w);
        if self.flip > 0.0 && rng.random_bool(self.flip.min(1.0)) {
            v.flip_horizontal();
        }
        if let Some(j) = &self.jitter {
            if rng.random_bool(j.p.min(1.0)) {
                color_jitter(&mut v, j, rng);
            }
        }
        if self.grayscale > 0.0 && rng.random_bool(self.grayscale.min(1.0)) {
            grayscale(&mut v);
        }
        if let Some(bl) = &self.blur {
            if rng.random_bool(bl.p.min(1.0)) {
                let sigma = uniform(rng, bl.sigma);
                gaussian_blur(&mut v, sigma, blur_kernel(out_h.min(out_w)));
            }
        }
        if let Some(s) = &self.solarize {
            if rng.random_bool(s.p.min(1.0)) {
                solarize(&mut v, s.threshold as f32);
            }
        }
        v
    }
}

fn uniform(rng: &mut impl Rng, (lo, hi): (f64, f64)) -> f64 {
    if hi > lo {
        rng.random_range(lo..hi)
    } else {
        lo
    }
}

/// torchvision `RandomResizedCrop.get_params`: ten tries at a box of random area and aspect
/// ratio that fits, else the largest centred box within the ratio bounds.
pub fn crop_box(height: usize, width: usize, c: &Crop, rng: &mut impl Rng) -> CropBox {
    let (hf, wf) = (height as f64, width as f64);
    let area = hf * wf;
    let log_ratio = (c.ratio.0.ln(), c.ratio.1.ln());
    for _ in 0..10 {
        let target = area * uniform(rng, c.scale);
        let aspect = uniform(rng, log_ratio).exp();
        let w = (target * aspect).sqrt().round();
        let h = (target / aspect).sqrt().round();
        if w > 0.0 && w <= wf && h > 0.0 && h <= hf {
            let top = rng.random_range(0..=(height - h as usize)) as f64;
            let left = rng.random_range(0..=(width - w as usize)) as f64;
            return CropBox { top, left, height: h, width: w };
        }
    }
    let in_ratio = wf / hf;
    let (w, h) = if in_ratio < c.ratio.0 {
        (wf, (wf / c.ratio.0).round())
    } else if in_ratio > c.ratio.1 {
        ((hf * c.ratio.1).round(), hf)
    } else {
        (wf, hf)
    };
    CropBox { top: ((hf - h) / 2.0).floor(), left: ((wf - w) / 2.0).floor(), height: h, width: w }
}

/// Kernel size for a blur on an image of side `side`: 10% of it, odd, at least 3.
pub fn blur_kernel(side: usize) -> usize {
    let k = (side as f64 * 0.1) as usize;
    (k | 1).max(3)
}

/// ITU-R 601 luma of an RGB image (torchvision `rgb_to_grayscale`); a 1-channel image as is.
pub fn luma(img: &Image, out: &mut [f32]) {
    if img.c < 3 {
        out.copy_from_slice(img.plane(0));
        return;
    }
    let (r, g, b) = (img.plane(0), img.plane(1), img.plane(2));
    for (i, o) in out.iter_mut().enumerate() {
        *o = 0.299 * r[i] + 0.587 * g[i] + 0.114 * b[i];
    }
}

/// Every channel set to the luma (the channel count stays).
pub fn grayscale(img: &mut Image) {
    if img.c < 3 {
        return;
    }
    let mut l = vec![0f32; img.h * img.w];
    luma(img, &mut l);
    for ch in 0..img.c {
        img.plane_mut(ch).copy_from_slice(&l);
    }
}

/// torchvision `ColorJitter`: factors drawn first, then the four adjustments in a random order.
pub fn color_jitter(img: &mut Image, j: &Jitter, rng: &mut impl Rng) {
    let mut order = [0usize, 1, 2, 3];
    order.shuffle(rng);
    let factor = |rng: &mut _, s: f64| if s > 0.0 { uniform(rng, ((1.0 - s).max(0.0), 1.0 + s)) as f32 } else { 1.0 };
    let brightness = factor(rng, j.brightness);
    let contrast = factor(rng, j.contrast);
    let saturation = factor(rng, j.saturation);
    let hue = if j.hue > 0.0 { uniform(rng, (-j.hue, j.hue)) as f32 } else { 0.0 };
    for op in order {
        match op {
            0 if brightness != 1.0 => {
                for v in &mut img.data {
                    *v = (*v * brightness).clamp(0.0, 1.0);
                }
            }
            1 if contrast != 1.0 => {
                let mut l = vec![0f32; img.h * img.w];
                luma(img, &mut l);
                let mean = l.iter().sum::<f32>() / l.len() as f32;
                for v in &mut img.data {
                    *v = (contrast * *v + (1.0 - contrast) * mean).clamp(0.0, 1.0);
                }
            }
            2 if saturation != 1.0 && img.c >= 3 => {
                let mut l = vec![0f32; img.h * img.w];
                luma(img, &mut l);
                for ch in 0..img.c {
                    for (v, &g) in img.plane_mut(ch).iter_mut().zip(&l) {
                        *v = (saturation * *v + (1.0 - saturation) * g).clamp(0.0, 1.0);
                    }
                }
            }
            3 if hue != 0.0 && img.c >= 3 => adjust_hue(img, hue),
            _ => {}
        }
    }
}

/// Rotates the hue of an RGB image by `shift` turns (torchvision `adjust_hue`, via HSV).
pub fn adjust_hue(img: &mut Image, shift: f32) {
    let n = img.h * img.w;
    let (r, rest) = img.data.split_at_mut(n);
    let (g, rest) = rest.split_at_mut(n);
    let b = &mut rest[..n];
    for i in 0..n {
        let (h, s, v) = rgb_to_hsv(r[i], g[i], b[i]);
        let h = (h + shift).rem_euclid(1.0);
        (r[i], g[i], b[i]) = hsv_to_rgb(h, s, v);
    }
}

fn rgb_to_hsv(r: f32, g: f32, b: f32) -> (f32, f32, f32) {
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let d = max - min;
    let s = if max > 0.0 { d / max } else { 0.0 };
    let h = if d == 0.0 {
        0.0
    } else if max == r {
        ((g - b) / d).rem_euclid(6.0) / 6.0
    } else if max == g {
        ((b - r) / d + 2.0) / 6.0
    } else {
        ((r - g) / d + 4.0) / 6.0
    };
    (h, s, max)
}

fn hsv_to_rgb(h: f32, s: f32, v: f32) -> (f32, f32, f32) {
    let h6 = h * 6.0;
    let i = h6.floor();
    let f = h6 - i;
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    match (i as i32).rem_euclid(6) {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    }
}

/// Separable gaussian blur with reflect padding (torchvision `gaussian_blur`).
pub fn gaussian_blur(img: &mut Image, sigma: f64, kernel: usize) {
    let half = (kernel / 2) as isize;
    let mut k: Vec<f32> = (-half..=half).map(|x| (-((x * x) as f64) / (2.0 * sigma * sigma)).exp() as f32).collect();
    let total: f32 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= total);
    let (h, w) = (img.h as isize, img.w as isize);
    let reflect = |i: isize, n: isize| -> usize {
        if n == 1 {
            return 0;
        }
        let period = 2 * (n - 1);
        let m = i.rem_euclid(period);
        (if m >= n { period - m } else { m }) as usize
    };
    let mut tmp = vec![0f32; img.h * img.w];
    for ch in 0..img.c {
        let plane = img.plane_mut(ch);
        for y in 0..h {
            let row = &plane[(y * w) as usize..((y + 1) * w) as usize];
            for x in 0..w {
                let mut acc = 0.0;
                for (t, &kv) in k.iter().enumerate() {
                    acc += kv * row[reflect(x + t as isize - half, w)];
                }
                tmp[(y * w + x) as usize] = acc;
            }
        }
        for y in 0..h {
            for x in 0..w {
                let mut acc = 0.0;
                for (t, &kv) in k.iter().enumerate() {
                    acc += kv * tmp[reflect(y + t as isize - half, h) * w as usize + x as usize];
                }
                plane[(y * w + x) as usize] = acc;
            }
        }
    }
}

/// `x ≥ threshold → 1 − x`.
pub fn solarize(img: &mut Image, threshold: f32) {
    for v in &mut img.data {
        if *v >= threshold {
            *v = 1.0 - *v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_xoshiro::Xoshiro256PlusPlus;

    #[test]
    fn crop_boxes_lie_inside_and_within_bounds() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
        let c = Crop { scale: (0.08, 1.0), ratio: (0.75, 4.0 / 3.0) };
        for (h, w) in [(32, 32), (224, 224), (100, 300), (300, 40), (7, 5)] {
            for _ in 0..2000 {
                let b = crop_box(h, w, &c, &mut rng);
                assert!(b.top >= 0.0 && b.left >= 0.0 && b.height >= 1.0 && b.width >= 1.0);
                assert!(b.top + b.height <= h as f64 && b.left + b.width <= w as f64, "{b:?} in {h}x{w}");
                let area = b.height * b.width / (h * w) as f64;
                let ratio = b.width / b.height;
                // Rounding each side to whole pixels moves the area and ratio by at most a pixel.
                let slack_area = (b.height + b.width + 1.0) / (h * w) as f64;
                let slack_ratio = ratio * (1.0 / b.height + 1.0 / b.width) * 1.01;
                let fallback = area > c.scale.1 + slack_area || ratio < c.ratio.0 - slack_ratio;
                if !fallback {
                    assert!(area >= c.scale.0 - slack_area && area <= c.scale.1 + slack_area, "{area} {b:?}");
                    assert!(ratio >= c.ratio.0 - slack_ratio && ratio <= c.ratio.1 + slack_ratio, "{ratio} {b:?}");
                }
            }
        }
    }

    #[test]
    fn square_crops_respect_bounds_exactly_enough() {
        // On a square 224 image every try fits, so there is never a fallback.
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        let c = Crop { scale: (0.2, 0.5), ratio: (0.75, 4.0 / 3.0) };
        for _ in 0..5000 {
            let b = crop_box(224, 224, &c, &mut rng);
            let area = b.height * b.width / (224.0 * 224.0);
            assert!((0.2 - 0.01..=0.5 + 0.01).contains(&area), "{area}");
            let r = b.width / b.height;
            assert!((0.75 - 0.02..=4.0 / 3.0 + 0.02).contains(&r), "{r}");
        }
    }

    #[test]
    fn hsv_round_trips_and_hue_turns_are_periodic() {
        for (r, g, b) in [(0.1, 0.5, 0.9), (1.0, 0.0, 0.0), (0.3, 0.3, 0.3), (0.9, 0.8, 0.1)] {
            let (h, s, v) = rgb_to_hsv(r, g, b);
            let (r2, g2, b2) = hsv_to_rgb(h, s, v);
            assert!((r - r2).abs() < 1e-5 && (g - g2).abs() < 1e-5 && (b - b2).abs() < 1e-5);
        }
        let mut img = Image { c: 3, h: 1, w: 2, data: vec![0.1, 0.7, 0.5, 0.2, 0.9, 0.3] };
        let orig = img.clone();
        adjust_hue(&mut img, 0.5);
        assert_ne!(img, orig);
        adjust_hue(&mut img, 0.5);
        for (a, b) in img.data.iter().zip(&orig.data) {
            assert!((a - b).abs() < 1e-5);
        }
    }

    #[test]
    fn blur_keeps_constants_and_mass() {
        let mut img = Image::new(1, 9, 9);
        img.data.fill(0.4);
        gaussian_blur(&mut img, 1.5, 5);
        assert!(img.data.iter().all(|v| (v - 0.4).abs() < 1e-6));
        let mut dot = Image::new(1, 9, 9);
        dot.data[40] = 1.0;
        gaussian_blur(&mut dot, 1.0, 3);
        assert!(dot.data[40] < 1.0 && dot.data[41] > 0.0);
        assert!((dot.data.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }

    #[test]
    fn views_stay_in_range_and_depend_only_on_the_rng() {
        let mut img = Image::new(3, 40, 30);
        for (i, v) in img.data.iter_mut().enumerate() {
            *v = ((i * 37) % 101) as f32 / 100.0;
        }
        for aug in [ViewAugment::simclr(), ViewAugment::moco_v2(), ViewAugment::byol()[1].clone()] {
            let a = aug.apply(&img, 16, 16, &mut Xoshiro256PlusPlus::seed_from_u64(3));
            let b = aug.apply(&img, 16, 16, &mut Xoshiro256PlusPlus::seed_from_u64(3));
            assert_eq!(a, b);
            assert_eq!((a.c, a.h, a.w), (3, 16, 16));
            assert!(a.data.iter().all(|v| (-1e-6..=1.0 + 1e-6).contains(v)));
        }
    }
}
