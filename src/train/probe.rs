//! Linear probes: the frozen encoder embeds a labelled split, a softmax-regression classifier is
//! fitted on one side and scored on the other, next to the same encoder at its initial weights
//! and the majority class, so a user sees whether pretraining learned something.

use crate::error::{Error, Result};

/// Embeddings and class ids of one side of the split.
#[derive(Debug, Default, Clone)]
pub struct Labelled {
    pub features: Vec<f32>,
    pub labels: Vec<usize>,
    pub dim: usize,
}

impl Labelled {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// A fitted multinomial logistic regression on standardised features.
pub struct Classifier {
    mean: Vec<f64>,
    std: Vec<f64>,
    w: Vec<f64>,
    b: Vec<f64>,
    classes: usize,
}

impl Classifier {
    /// Fits on `train` with full-batch Adam (lr 0.05, L2 1e-4, `iterations` steps).
    pub fn fit(train: &Labelled, classes: usize, iterations: usize) -> Result<Classifier> {
        let (n, d) = (train.len(), train.dim);
        if n == 0 || d == 0 {
            return Err(Error::data("no labelled rows to fit the probe on"));
        }
        let mut mean = vec![0f64; d];
        let mut sq = vec![0f64; d];
        for row in train.features.chunks_exact(d) {
            for j in 0..d {
                mean[j] += row[j] as f64;
                sq[j] += (row[j] as f64).powi(2);
            }
        }
        let std: Vec<f64> = (0..d)
            .map(|j| {
                mean[j] /= n as f64;
                (sq[j] / n as f64 - mean[j] * mean[j]).max(0.0).sqrt().max(1e-6)
            })
            .collect();
        let x: Vec<f64> = train
            .features
            .chunks_exact(d)
            .flat_map(|row| row.iter().enumerate().map(|(j, &v)| (v as f64 - mean[j]) / std[j]).collect::<Vec<_>>())
            .collect();
        let k = classes;
        let (mut w, mut b) = (vec![0f64; d * k], vec![0f64; k]);
        let (mut mw, mut vw, mut mb, mut vb) = (vec![0f64; d * k], vec![0f64; d * k], vec![0f64; k], vec![0f64; k]);
        let (lr, l2, b1, b2) = (0.05, 1e-4, 0.9, 0.999);
        let mut logits = vec![0f64; k];
        for t in 1..=iterations {
            let (mut gw, mut gb) = (vec![0f64; d * k], vec![0f64; k]);
            for (i, row) in x.chunks_exact(d).enumerate() {
                softmax_row(row, &w, &b, &mut logits);
                logits[train.labels[i]] -= 1.0;
                for c in 0..k {
                    let g = logits[c] / n as f64;
                    gb[c] += g;
                    for j in 0..d {
                        gw[j * k + c] += g * row[j];
                    }
                }
            }
            let step = |p: &mut [f64], g: &[f64], m: &mut [f64], v: &mut [f64], decay: f64| {
                for i in 0..p.len() {
                    let gi = g[i] + decay * p[i];
                    m[i] = b1 * m[i] + (1.0 - b1) * gi;
                    v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
                    let mh = m[i] / (1.0 - b1.powi(t as i32));
                    let vh = v[i] / (1.0 - b2.powi(t as i32));
                    p[i] -= lr * mh / (vh.sqrt() + 1e-8);
                }
            };
            step(&mut w, &gw, &mut mw, &mut vw, l2);
            step(&mut b, &gb, &mut mb, &mut vb, 0.0);
        }
        Ok(Classifier { mean, std, w, b, classes: k })
    }

    /// The share of `data` classified correctly.
    pub fn accuracy(&self, data: &Labelled) -> f64 {
        if data.is_empty() {
            return 0.0;
        }
        let d = data.dim;
        let mut logits = vec![0f64; self.classes];
        let mut right = 0usize;
        for (row, &label) in data.features.chunks_exact(d).zip(&data.labels) {
            let x: Vec<f64> = row.iter().enumerate().map(|(j, &v)| (v as f64 - self.mean[j]) / self.std[j]).collect();
            softmax_row(&x, &self.w, &self.b, &mut logits);
            let best = (0..self.classes).max_by(|&a, &b| logits[a].total_cmp(&logits[b])).unwrap_or(0);
            right += (best == label) as usize;
        }
        right as f64 / data.len() as f64
    }
}

/// Softmax of `x W + b` into `out`.
fn softmax_row(x: &[f64], w: &[f64], b: &[f64], out: &mut [f64]) {
    let k = b.len();
    out.copy_from_slice(b);
    for (j, &xj) in x.iter().enumerate() {
        for c in 0..k {
            out[c] += xj * w[j * k + c];
        }
    }
    let max = out.iter().cloned().fold(f64::MIN, f64::max);
    let mut sum = 0.0;
    for v in out.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    out.iter_mut().for_each(|v| *v /= sum);
}

/// The share of the most frequent class of `train` in `test` (what a constant guess scores).
pub fn majority(train: &Labelled, test: &Labelled, classes: usize) -> f64 {
    let mut counts = vec![0usize; classes];
    train.labels.iter().for_each(|&l| counts[l] += 1);
    let best = (0..classes).max_by_key(|&c| counts[c]).unwrap_or(0);
    if test.is_empty() {
        return 0.0;
    }
    test.labels.iter().filter(|&&l| l == best).count() as f64 / test.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separable_classes_are_learned() {
        // Class c sits at x_c = 3, noise elsewhere.
        let (mut train, mut test) =
            (Labelled { dim: 4, ..Default::default() }, Labelled { dim: 4, ..Default::default() });
        for i in 0..400 {
            let c = i % 4;
            let row: Vec<f32> =
                (0..4).map(|j| if j == c { 3.0 } else { ((i * 31 + j * 7) % 10) as f32 / 10.0 }).collect();
            let side = if i % 5 == 0 { &mut test } else { &mut train };
            side.features.extend(row);
            side.labels.push(c);
        }
        let clf = Classifier::fit(&train, 4, 200).unwrap();
        assert!(clf.accuracy(&test) > 0.95);
        assert!((majority(&train, &test, 4) - 0.25).abs() < 0.05);
    }
}
