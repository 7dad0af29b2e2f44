//! The collapse monitor: statistics of a batch of embeddings that fall to zero when a
//! self-supervised encoder maps every input to (nearly) the same point.
//!
//! - `embedding_std`: the standard deviation of the l2-normalised embeddings per dimension,
//!   averaged over dimensions and multiplied by √dim. Embeddings spread over the sphere give ≈ 1
//!   (each coordinate of a random unit vector has std 1/√dim); a collapsed encoder gives 0.
//! - `effective_rank`: exp of the entropy of the normalised eigenvalues of the embeddings'
//!   covariance (Roy & Vetterli 2007): between 1 (one direction) and the dimension; 0 when there
//!   is no variance at all.

/// Collapse statistics of one batch of embeddings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Collapse {
    pub embedding_std: f64,
    pub effective_rank: f64,
    pub dim: usize,
}

/// Statistics of `rows` embeddings of `dim` values each, laid out row-major.
pub fn measure(values: &[f32], rows: usize, dim: usize) -> Collapse {
    if rows < 2 || dim == 0 {
        return Collapse { embedding_std: 0.0, effective_rank: 0.0, dim };
    }
    // l2-normalise each row.
    let mut z: Vec<f64> = values.iter().map(|&v| v as f64).collect();
    for r in z.chunks_exact_mut(dim) {
        let n = r.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
        r.iter_mut().for_each(|v| *v /= n);
    }
    let mut mean = vec![0f64; dim];
    for r in z.chunks_exact(dim) {
        mean.iter_mut().zip(r).for_each(|(m, v)| *m += v / rows as f64);
    }
    for r in z.chunks_exact_mut(dim) {
        r.iter_mut().zip(&mean).for_each(|(v, m)| *v -= m);
    }
    let std_sum: f64 =
        (0..dim).map(|j| (z.chunks_exact(dim).map(|r| r[j] * r[j]).sum::<f64>() / rows as f64).sqrt()).sum();
    let embedding_std = std_sum / dim as f64 * (dim as f64).sqrt();
    // The nonzero eigenvalues of the covariance are those of the smaller Gram matrix.
    let (k, gram) = if rows <= dim {
        let mut g = vec![0f64; rows * rows];
        for i in 0..rows {
            for j in 0..=i {
                let d: f64 = z[i * dim..(i + 1) * dim].iter().zip(&z[j * dim..(j + 1) * dim]).map(|(a, b)| a * b).sum();
                g[i * rows + j] = d;
                g[j * rows + i] = d;
            }
        }
        (rows, g)
    } else {
        let mut g = vec![0f64; dim * dim];
        for r in z.chunks_exact(dim) {
            for i in 0..dim {
                for j in 0..=i {
                    g[i * dim + j] += r[i] * r[j];
                }
            }
        }
        for i in 0..dim {
            for j in 0..i {
                g[j * dim + i] = g[i * dim + j];
            }
        }
        (dim, g)
    };
    let eig = symmetric_eigenvalues(gram, k);
    let total: f64 = eig.iter().map(|e| e.max(0.0)).sum();
    let effective_rank = if total <= 1e-12 {
        0.0
    } else {
        let h: f64 = eig.iter().map(|e| e.max(0.0) / total).filter(|&p| p > 0.0).map(|p| -p * p.ln()).sum();
        h.exp()
    };
    Collapse { embedding_std, effective_rank, dim }
}

/// Eigenvalues of a symmetric `n × n` matrix by cyclic Jacobi rotations (n is at most a few
/// hundred here: the smaller of the batch size and the embedding size).
pub fn symmetric_eigenvalues(mut a: Vec<f64>, n: usize) -> Vec<f64> {
    for _sweep in 0..50 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j].powi(2))
            .sum();
        let scale: f64 = (0..n).map(|i| a[i * n + i].powi(2)).sum::<f64>().max(1e-300);
        if off <= 1e-22 * scale {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let (app, aqq) = (a[p * n + p], a[q * n + q]);
                let theta = (aqq - app) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
            }
        }
    }
    (0..n).map(|i| a[i * n + i]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};

    #[test]
    fn eigenvalues_of_a_known_matrix() {
        // [[2, 1], [1, 2]] has eigenvalues 1 and 3.
        let mut e = symmetric_eigenvalues(vec![2.0, 1.0, 1.0, 2.0], 2);
        e.sort_by(f64::total_cmp);
        assert!((e[0] - 1.0).abs() < 1e-9 && (e[1] - 3.0).abs() < 1e-9, "{e:?}");
    }

    #[test]
    fn random_embeddings_are_healthy_and_constant_ones_collapsed() {
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(1);
        let (rows, dim) = (256, 32);
        let random: Vec<f32> = (0..rows * dim).map(|_| StandardNormal.sample(&mut rng)).collect();
        let c = measure(&random, rows, dim);
        assert!((0.85..1.1).contains(&c.embedding_std), "{c:?}");
        assert!(c.effective_rank > 25.0, "{c:?}");
        let constant: Vec<f32> = (0..rows * dim).map(|i| (i % dim) as f32 + 1.0).collect();
        let c = measure(&constant, rows, dim);
        assert!(c.embedding_std < 1e-6 && c.effective_rank == 0.0, "{c:?}");
        // Rank one: every row a multiple of one vector plus tiny noise.
        let line: Vec<f32> = (0..rows * dim).map(|i| if i % dim == 0 { 1.0 + (i / dim) as f32 } else { 0.0 }).collect();
        assert!(measure(&line, rows, dim).effective_rank < 1.01);
    }
}
