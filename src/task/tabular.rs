//! Tabular corruption: SCARF (a fixed share of each row's features replaced by draws from the
//! column's empirical marginal) and VIME (each feature replaced with probability p, same draws).
//!
//! The marginals come from a seeded reservoir sample per column (Vitter / Li's Algorithm L), fed
//! by the [`Observer`] stage in scan order, so the stream stays one pass and memory stays bounded;
//! the stream hands it every 1024 rows of a window as one batch, whatever the source's batches,
//! and each batch is corrupted with a snapshot taken after it was observed. Null features are imputed
//! (numeric: the reservoir's median; categorical codes: its most frequent value) and flagged in
//! `missing_mask`, never silently zero.

use std::sync::Arc;

use arrow::array::{Array, AsArray, Float64Array, RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, Field, Float64Type, Schema, SchemaRef};
use rand::{Rng, RngCore};
use rand_xoshiro::Xoshiro256PlusPlus;

use super::vision::{bool_list, bool_list_field, f32_list, f32_list_field};
use super::{Observed, Observer, Task, TaskContext};
use crate::error::{Error, Result};

/// Which features of a row are corrupted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Corruption {
    /// SCARF: exactly `round(rate · columns)` features per row, chosen uniformly.
    Exact(f64),
    /// VIME: each feature independently with this probability.
    Bernoulli(f64),
}

/// The SCARF / VIME objective, configured.
pub struct Tabular {
    pub columns: Vec<String>,
    pub categorical: Vec<bool>,
    pub corruption: Corruption,
    pub reservoir: usize,
    pub standardize: bool,
    pub label: bool,
    schema: SchemaRef,
}

/// Schema: `example_key`, `features`, `corrupted` (f32 per column), `corruption_mask`,
/// `missing_mask` (bool per column), `label` when the source has one.
pub fn output_schema(columns: usize, label: bool) -> SchemaRef {
    let mut fields = vec![
        Field::new("example_key", DataType::UInt64, false),
        f32_list_field("features", columns),
        f32_list_field("corrupted", columns),
        bool_list_field("corruption_mask", columns),
        bool_list_field("missing_mask", columns),
    ];
    if label {
        fields.push(Field::new("label", DataType::Int64, true));
    }
    Arc::new(Schema::new(fields))
}

/// A uniform draw in the open interval (0, 1).
fn open01(rng: &mut impl RngCore) -> f64 {
    ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

/// A uniform sample of at most `k` of the values pushed so far (Algorithm L: after the first
/// `k`, O(k log(n / k)) random draws in all, not one per value).
#[derive(Debug, Clone)]
pub struct Reservoir {
    k: usize,
    pub values: Vec<f64>,
    seen: u64,
    /// 0-based index of the next value that enters the sample.
    next: u64,
    w: f64,
    rng: Xoshiro256PlusPlus,
}

impl Reservoir {
    pub fn new(k: usize, rng: Xoshiro256PlusPlus) -> Reservoir {
        Reservoir { k: k.max(1), values: Vec::with_capacity(k.max(1)), seen: 0, next: 0, w: 1.0, rng }
    }

    fn skip(&mut self) {
        let u = open01(&mut self.rng);
        let skip = (u.ln() / (-self.w).ln_1p()).floor();
        self.next =
            self.next.saturating_add(if skip.is_finite() { skip as u64 } else { u64::MAX / 2 }).saturating_add(1);
    }

    pub fn push(&mut self, v: f64) {
        if self.values.len() < self.k {
            self.values.push(v);
            self.seen += 1;
            if self.values.len() == self.k {
                self.w = (open01(&mut self.rng).ln() / self.k as f64).exp();
                self.next = self.seen - 1;
                self.skip();
            }
            return;
        }
        if self.seen == self.next {
            let j = self.rng.random_range(0..self.k);
            self.values[j] = v;
            self.w *= (open01(&mut self.rng).ln() / self.k as f64).exp();
            self.skip();
        }
        self.seen += 1;
    }

    #[cfg(any(test, feature = "internals"))]
    pub fn seen(&self) -> u64 {
        self.seen
    }
}

/// A snapshot of every column's marginal.
#[derive(Debug, Clone, Default)]
pub struct Marginals {
    /// Sampled non-null values per column (empty when the column had none yet).
    pub values: Vec<Vec<f64>>,
    pub categorical: Vec<bool>,
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

impl Marginals {
    fn of(reservoirs: &[Reservoir], categorical: &[bool]) -> Marginals {
        let mut m = Marginals { categorical: categorical.to_vec(), ..Default::default() };
        for r in reservoirs {
            let v = r.values.clone();
            let n = v.len().max(1) as f64;
            let mean = v.iter().sum::<f64>() / n;
            let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
            m.values.push(v);
            m.mean.push(mean);
            m.std.push(if var > 1e-24 { var.sqrt() } else { 1.0 });
        }
        m
    }

    /// The imputation value of column `j`: the sample's median (numeric) or most frequent
    /// value (categorical); 0 before the column has shown any value. Computed when a batch
    /// first needs it, on the worker, not in the sequential stage.
    pub fn fill(&self, j: usize) -> f64 {
        let v = &self.values[j];
        if v.is_empty() {
            0.0
        } else if self.categorical[j] {
            mode(v)
        } else {
            let mut s = v.clone();
            let mid = s.len() / 2;
            *s.select_nth_unstable_by(mid, f64::total_cmp).1
        }
    }
}

/// The most frequent value (the smallest among ties).
fn mode(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let (mut best, mut best_n) = (s[0], 0);
    let mut i = 0;
    while i < s.len() {
        let j = s[i..].iter().take_while(|&&x| x == s[i]).count();
        if j > best_n {
            (best, best_n) = (s[i], j);
        }
        i += j;
    }
    best
}

/// Feeds the reservoirs in scan order.
pub struct MarginalObserver {
    columns: Vec<String>,
    categorical: Vec<bool>,
    reservoirs: Vec<Reservoir>,
}

impl Observer for MarginalObserver {
    fn observe(&mut self, batch: &RecordBatch) -> Result<Observed> {
        for (name, r) in self.columns.iter().zip(self.reservoirs.iter_mut()) {
            let col = feature(batch, name)?;
            // NaN and infinities count as missing, like nulls.
            if col.null_count() == 0 {
                col.values().iter().filter(|v| v.is_finite()).for_each(|&v| r.push(v));
            } else {
                col.iter().flatten().filter(|v| v.is_finite()).for_each(|v| r.push(v));
            }
        }
        Ok(Arc::new(Marginals::of(&self.reservoirs, &self.categorical)))
    }
}

fn feature<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a Float64Array> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_primitive_opt::<Float64Type>())
        .ok_or_else(|| Error::internal(format!("feature column `{name}` missing from task input")))
}

impl Tabular {
    pub fn new(
        columns: Vec<String>,
        categorical: &[String],
        corruption: Corruption,
        reservoir: usize,
        standardize: bool,
        label: bool,
    ) -> Tabular {
        let categorical = columns.iter().map(|c| categorical.contains(c)).collect();
        let schema = output_schema(columns.len(), label);
        Tabular { columns, categorical, corruption, reservoir, standardize, label, schema }
    }

    fn new_observer(&self, cx: &TaskContext) -> MarginalObserver {
        let reservoirs = (0..self.columns.len())
            .map(|j| Reservoir::new(self.reservoir, cx.rng(crate::ground::seeds::marginal_key(j))))
            .collect();
        MarginalObserver { columns: self.columns.clone(), categorical: self.categorical.clone(), reservoirs }
    }

    /// Features per row corrupted under SCARF (`None` for VIME).
    pub fn exact_count(&self) -> Option<usize> {
        match self.corruption {
            Corruption::Exact(rate) => Some((rate * self.columns.len() as f64).round() as usize),
            Corruption::Bernoulli(_) => None,
        }
    }
}

impl Task for Tabular {
    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Corrupts with marginals from this batch alone (the stream uses [`Task::apply_observed`]).
    fn apply(&self, batch: &RecordBatch, keys: &[u64], cx: &TaskContext) -> Result<RecordBatch> {
        let seen = self.new_observer(cx).observe(batch)?;
        self.apply_observed(batch, keys, cx, &seen)
    }

    fn observer(&self, cx: &TaskContext) -> Option<Box<dyn Observer>> {
        Some(Box::new(self.new_observer(cx)))
    }

    fn apply_observed(
        &self,
        batch: &RecordBatch,
        keys: &[u64],
        cx: &TaskContext,
        seen: &Observed,
    ) -> Result<RecordBatch> {
        let m = seen
            .downcast_ref::<Marginals>()
            .ok_or_else(|| Error::internal("tabular task handed state that is not marginals"))?;
        let c = self.columns.len();
        let n = keys.len();
        let cols = self.columns.iter().map(|name| feature(batch, name)).collect::<Result<Vec<_>>>()?;
        let (mut features, mut corrupted) = (Vec::with_capacity(n * c), Vec::with_capacity(n * c));
        let (mut cmask, mut missing) = (Vec::with_capacity(n * c), Vec::with_capacity(n * c));
        let scale = |j: usize, v: f64| -> f32 {
            if self.standardize && !self.categorical[j] {
                ((v - m.mean[j]) / m.std[j]) as f32
            } else {
                v as f32
            }
        };
        let exact = self.exact_count();
        let mut fills: Vec<Option<f64>> = vec![None; c];
        let mut fill = |j: usize| *fills[j].get_or_insert_with(|| m.fill(j));
        let mut order: Vec<usize> = (0..c).collect();
        let mut chosen = vec![false; c];
        for (row, &key) in keys.iter().enumerate() {
            let mut rng = cx.rng(key);
            match (exact, self.corruption) {
                (Some(k), _) => {
                    // Partial Fisher-Yates: the first k of a random order (from the identity for
                    // every row, so a row's choice depends on its key alone).
                    chosen.fill(false);
                    order.iter_mut().enumerate().for_each(|(i, o)| *o = i);
                    for i in 0..k {
                        let j = rng.random_range(i..c);
                        order.swap(i, j);
                        chosen[order[i]] = true;
                    }
                }
                (None, Corruption::Bernoulli(p)) => chosen.iter_mut().for_each(|x| *x = rng.random_bool(p)),
                (None, Corruption::Exact(_)) => unreachable!("exact_count is Some for Exact"),
            }
            for j in 0..c {
                let col = cols[j];
                let is_missing = col.is_null(row) || !col.value(row).is_finite();
                let v = if is_missing { fill(j) } else { col.value(row) };
                let x = scale(j, v);
                features.push(x);
                missing.push(is_missing);
                let y = if chosen[j] {
                    let pool = &m.values[j];
                    scale(j, if pool.is_empty() { fill(j) } else { pool[rng.random_range(0..pool.len())] })
                } else {
                    x
                };
                // SCARF's mask is the chosen set; VIME's target is where the value changed
                // (`m_new = 1 · (x ≠ x̃)` in the reference code).
                cmask.push(match self.corruption {
                    Corruption::Exact(_) => chosen[j],
                    Corruption::Bernoulli(_) => chosen[j] && y != x,
                });
                corrupted.push(y);
            }
        }
        let mut columns = vec![
            Arc::new(UInt64Array::from(keys.to_vec())) as arrow::array::ArrayRef,
            f32_list(features, c),
            f32_list(corrupted, c),
            bool_list(cmask, c),
            bool_list(missing, c),
        ];
        if self.label {
            columns
                .push(batch.column_by_name("label").cloned().ok_or_else(|| Error::internal("column `label` missing"))?);
        }
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::TaskContext;
    use rand::SeedableRng;

    #[test]
    fn reservoir_is_uniform_and_bounded() {
        // Each of 10,000 values should land in a 100-slot sample with p = 1%; count the first
        // and last thousand over many seeds.
        let (mut early, mut late) = (0usize, 0usize);
        for seed in 0..200 {
            let mut r = Reservoir::new(100, Xoshiro256PlusPlus::seed_from_u64(seed));
            for v in 0..10_000 {
                r.push(v as f64);
            }
            assert_eq!(r.values.len(), 100);
            assert_eq!(r.seen(), 10_000);
            early += r.values.iter().filter(|&&v| v < 1000.0).count();
            late += r.values.iter().filter(|&&v| v >= 9000.0).count();
        }
        // Expected 2,000 each (200 seeds × 100 slots × 10%); allow ±10%.
        assert!((1800..2200).contains(&early), "early {early}");
        assert!((1800..2200).contains(&late), "late {late}");
    }

    #[test]
    fn non_finite_values_are_imputed_and_flagged_like_nulls() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("example_key", DataType::UInt64, false),
            Field::new("a", DataType::Float64, true),
            Field::new("b", DataType::Float64, true),
        ]));
        let a = Float64Array::from(vec![Some(1.0), Some(f64::NAN), None, Some(3.0), Some(f64::INFINITY)]);
        let b = Float64Array::from(vec![Some(f64::NAN), Some(2.0), Some(2.0), Some(5.0), Some(2.0)]);
        let keys: Vec<u64> = (0..5).collect();
        let batch =
            RecordBatch::try_new(schema, vec![Arc::new(UInt64Array::from(keys.clone())), Arc::new(a), Arc::new(b)])
                .unwrap();
        for categorical in [vec![], vec!["b".to_string()]] {
            let t = Tabular::new(vec!["a".into(), "b".into()], &categorical, Corruption::Exact(0.5), 16, true, false);
            let out = t.apply(&batch, &keys, &TaskContext { seed: 1, epoch: 0 }).unwrap();
            let missing = crate::task::vision::bool_values(&out, "missing_mask").unwrap();
            // Row-major: (a, b) per row.
            assert_eq!(missing, vec![false, true, true, false, true, false, false, false, true, false]);
            let f = crate::task::vision::f32_values(&out, "features").unwrap();
            let c = crate::task::vision::f32_values(&out, "corrupted").unwrap();
            assert!(f.iter().chain(c).all(|v| v.is_finite()), "{f:?} {c:?}");
        }
    }

    #[test]
    fn mode_prefers_the_most_frequent_then_the_smallest() {
        assert_eq!(mode(&[3.0, 1.0, 3.0, 2.0, 1.0, 3.0]), 3.0);
        assert_eq!(mode(&[2.0, 1.0]), 1.0);
    }
}
