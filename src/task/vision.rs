//! Image objectives: augmented views (SimCLR / BYOL / MoCo v2), masked-autoencoder inputs and
//! denoising pairs. Rows arrive as `example_key`, `image` (encoded bytes or planar pixels, see
//! [`crate::source::ImageKind`]) and an optional `label`; images that cannot be decoded are
//! counted in the source's statistics and skipped. Outputs are planar `c × size × size` images,
//! normalised per channel, as `FixedSizeList<Float32>`.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, FixedSizeListArray, Float32Array, RecordBatch, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Float32Type, Schema, SchemaRef, UInt8Type};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

use super::{fixed_list, Task, TaskContext};
use crate::error::{Error, Result};
use crate::source::{ImageKind, SourceStats};
use crate::vision::augment::{crop_box, Crop, ViewAugment};
use crate::vision::{resample, resize, Image};

/// A non-null `FixedSizeList<Float32>` column of `width`.
pub fn f32_list(values: Vec<f32>, width: usize) -> ArrayRef {
    let field = Arc::new(Field::new("item", DataType::Float32, false));
    Arc::new(FixedSizeListArray::new(field, width as i32, Arc::new(Float32Array::from(values)), None))
}

pub fn f32_list_field(name: &str, width: usize) -> Field {
    Field::new(
        name,
        DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, false)), width as i32),
        false,
    )
}

/// A non-null `FixedSizeList<Boolean>` column of `width`.
pub fn bool_list(values: Vec<bool>, width: usize) -> ArrayRef {
    let field = Arc::new(Field::new("item", DataType::Boolean, false));
    let bits = arrow::buffer::BooleanBuffer::collect_bool(values.len(), |i| values[i]);
    Arc::new(FixedSizeListArray::new(field, width as i32, Arc::new(BooleanArray::new(bits, None)), None))
}

pub fn bool_list_field(name: &str, width: usize) -> Field {
    Field::new(
        name,
        DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Boolean, false)), width as i32),
        false,
    )
}

fn i32_list_field(name: &str, width: usize) -> Field {
    Field::new(name, DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Int32, false)), width as i32), false)
}

/// The output geometry and normalisation shared by the image tasks.
#[derive(Debug, Clone)]
pub struct ImageOut {
    pub size: usize,
    pub channels: usize,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl ImageOut {
    /// Values per image.
    pub fn width(&self) -> usize {
        self.channels * self.size * self.size
    }
}

/// Reads the images of a row batch.
#[derive(Debug, Clone)]
pub struct ImageReader {
    pub kind: ImageKind,
    /// `[c, h, w]` of pixel arrays.
    pub shape: Option<[usize; 3]>,
    pub channels: usize,
    pub stats: Arc<SourceStats>,
}

impl ImageReader {
    /// The image of `row`, in `channels` channels, or why it cannot be read.
    pub fn image(&self, col: &dyn Array, row: usize) -> std::result::Result<Image, String> {
        let img = match self.kind {
            ImageKind::Encoded => {
                let bytes = col.as_binary_opt::<i64>().ok_or("the image column is not binary")?.value(row);
                return Image::decode(bytes, self.channels);
            }
            ImageKind::U8 | ImageKind::F32 => {
                let [c, h, w] = self.shape.ok_or("pixel arrays need `source.image_shape`")?;
                let list = col.as_list_opt::<i32>().ok_or("the image column is not a list")?;
                let values = list.value(row);
                if values.len() != c * h * w {
                    return Err(format!(
                        "{} pixel values, but image_shape [{c}, {h}, {w}] needs {}",
                        values.len(),
                        c * h * w
                    ));
                }
                if values.null_count() > 0 {
                    return Err("null pixel values".into());
                }
                if self.kind == ImageKind::U8 {
                    Image::from_u8(values.as_primitive::<UInt8Type>().values(), c, h, w)
                } else {
                    Image::from_f32(values.as_primitive::<Float32Type>().values(), c, h, w)
                }
            }
        };
        img.with_channels(self.channels).map_err(|e| e.to_string())
    }

    /// Calls `f(i, image)` for every readable row; unreadable ones are recorded (first epoch
    /// only, so a run counts each once) and their rows left out of `kept`.
    pub fn for_each(
        &self,
        batch: &RecordBatch,
        keys: &[u64],
        cx: &TaskContext,
        mut f: impl FnMut(usize, Image),
    ) -> Result<Vec<u32>> {
        let col =
            batch.column_by_name("image").ok_or_else(|| Error::internal("column `image` missing from task input"))?;
        let mut kept = Vec::with_capacity(keys.len());
        for (i, &key) in keys.iter().enumerate() {
            match self.image(col.as_ref(), i) {
                Ok(img) => {
                    kept.push(i as u32);
                    f(i, img);
                }
                Err(reason) if cx.epoch == 0 => self.stats.record_undecodable(key, &reason),
                Err(_) => {}
            }
        }
        Ok(kept)
    }
}

/// `example_key`, then `names` as f32 images of `width`, (extra fields), then `label` if any.
fn image_schema(names: &[&str], width: usize, extra: Vec<Field>, label: bool) -> SchemaRef {
    let mut fields = vec![Field::new("example_key", DataType::UInt64, false)];
    fields.extend(names.iter().map(|n| f32_list_field(n, width)));
    fields.extend(extra);
    if label {
        fields.push(Field::new("label", DataType::Int64, true));
    }
    Arc::new(Schema::new(fields))
}

/// The kept rows' keys and (when present) labels.
fn kept_columns(batch: &RecordBatch, keys: &[u64], kept: &[u32], label: bool) -> Result<(ArrayRef, Option<ArrayRef>)> {
    let keys: ArrayRef = Arc::new(UInt64Array::from(kept.iter().map(|&i| keys[i as usize]).collect::<Vec<_>>()));
    let label = match label {
        false => None,
        true => {
            let col = batch
                .column_by_name("label")
                .ok_or_else(|| Error::internal("column `label` missing from task input"))?;
            Some(arrow::compute::take(col.as_ref(), &arrow::array::UInt32Array::from(kept.to_vec()), None)?)
        }
    };
    Ok((keys, label))
}

/// The names of `n` view columns: `view_a`, `view_b`, …
pub fn view_names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("view_{}", (b'a' + i as u8) as char)).collect()
}

/// Augmented views of each image.
pub struct ContrastiveImage {
    pub out: ImageOut,
    /// One recipe per view (BYOL's differ).
    pub views: Vec<ViewAugment>,
    pub reader: ImageReader,
    pub label: bool,
    schema: SchemaRef,
}

/// Schema: `example_key`, `view_a`, `view_b`, … (f32 × c·size·size), `label` when the source has one.
pub fn contrastive_schema(views: usize, width: usize, label: bool) -> SchemaRef {
    let names = view_names(views);
    image_schema(&names.iter().map(String::as_str).collect::<Vec<_>>(), width, Vec::new(), label)
}

impl ContrastiveImage {
    pub fn new(out: ImageOut, views: Vec<ViewAugment>, reader: ImageReader, label: bool) -> Self {
        let schema = contrastive_schema(views.len(), out.width(), label);
        ContrastiveImage { out, views, reader, label, schema }
    }
}

impl Task for ContrastiveImage {
    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn apply(&self, batch: &RecordBatch, keys: &[u64], cx: &TaskContext) -> Result<RecordBatch> {
        let (o, width) = (&self.out, self.out.width());
        let mut cols: Vec<Vec<f32>> = (0..self.views.len()).map(|_| Vec::with_capacity(keys.len() * width)).collect();
        let kept = self.reader.for_each(batch, keys, cx, |i, img| {
            let mut rng = cx.rng(keys[i]);
            for (aug, col) in self.views.iter().zip(cols.iter_mut()) {
                aug.apply(&img, o.size, o.size, &mut rng).normalized_into(&o.mean, &o.std, col);
            }
        })?;
        let (keys, label) = kept_columns(batch, keys, &kept, self.label)?;
        let mut columns = vec![keys];
        columns.extend(cols.into_iter().map(|c| f32_list(c, width)));
        columns.extend(label);
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

/// Masked-autoencoder inputs.
pub struct Mae {
    pub out: ImageOut,
    pub patch_size: usize,
    pub mask_ratio: f64,
    pub crop: Crop,
    pub flip: f64,
    pub reader: ImageReader,
    pub label: bool,
    schema: SchemaRef,
}

/// Schema: `example_key`, `pixel_values` (f32 × c·size·size), `mask` (bool per patch, true =
/// masked), `ids_restore` (i32 per patch), `label` when the source has one.
pub fn mae_schema(width: usize, patches: usize, label: bool) -> SchemaRef {
    image_schema(
        &["pixel_values"],
        width,
        vec![bool_list_field("mask", patches), i32_list_field("ids_restore", patches)],
        label,
    )
}

impl Mae {
    pub fn new(
        out: ImageOut,
        patch_size: usize,
        mask_ratio: f64,
        crop: Crop,
        flip: f64,
        reader: ImageReader,
        label: bool,
    ) -> Self {
        let patches = (out.size / patch_size).pow(2);
        let schema = mae_schema(out.width(), patches, label);
        Mae { out, patch_size, mask_ratio, crop, flip, reader, label, schema }
    }

    pub fn patches(&self) -> usize {
        (self.out.size / self.patch_size).pow(2)
    }

    /// How many patches each image masks: `round(mask_ratio · patches)`.
    pub fn masked(&self) -> usize {
        (self.mask_ratio * self.patches() as f64).round() as usize
    }
}

/// MAE's random masking (as in facebookresearch/mae, except that exactly `masked` =
/// `round(mask_ratio · n)` patches are hidden where the reference keeps `int(n · (1 − ratio))`)
/// for `n` patches: a random permutation
/// (`ids_shuffle`; the first `n - masked` are kept), its inverse (`ids_restore`) and the mask.
pub fn random_masking(n: usize, masked: usize, rng: &mut impl Rng, ids_restore: &mut Vec<i32>, mask: &mut Vec<bool>) {
    let mut shuffle: Vec<u32> = (0..n as u32).collect();
    shuffle.shuffle(rng);
    let keep = n - masked;
    let start = ids_restore.len();
    ids_restore.resize(start + n, 0);
    let restore = &mut ids_restore[start..];
    for (rank, &p) in shuffle.iter().enumerate() {
        restore[p as usize] = rank as i32;
    }
    mask.extend(restore.iter().map(|&r| r as usize >= keep));
}

impl Task for Mae {
    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn apply(&self, batch: &RecordBatch, keys: &[u64], cx: &TaskContext) -> Result<RecordBatch> {
        let (o, width, n) = (&self.out, self.out.width(), self.patches());
        let masked = self.masked();
        let mut pixels = Vec::with_capacity(keys.len() * width);
        let (mut restore, mut mask) = (Vec::with_capacity(keys.len() * n), Vec::with_capacity(keys.len() * n));
        let kept = self.reader.for_each(batch, keys, cx, |i, img| {
            let mut rng = cx.rng(keys[i]);
            let b = crop_box(img.h, img.w, &self.crop, &mut rng);
            let mut v = resample(&img, b, o.size, o.size);
            if self.flip > 0.0 && rng.random_bool(self.flip.min(1.0)) {
                v.flip_horizontal();
            }
            v.normalized_into(&o.mean, &o.std, &mut pixels);
            random_masking(n, masked, &mut rng, &mut restore, &mut mask);
        })?;
        let (keys, label) = kept_columns(batch, keys, &kept, self.label)?;
        let mut columns = vec![keys, f32_list(pixels, width), bool_list(mask, n), fixed_list(restore, n)];
        columns.extend(label);
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

/// Random erasing parameters (torchvision `RandomErasing`).
#[derive(Debug, Clone, Copy)]
pub struct Erase {
    pub p: f64,
    pub scale: (f64, f64),
    pub ratio: (f64, f64),
    pub value: f32,
}

/// Denoising pairs.
pub struct DenoiseImage {
    pub out: ImageOut,
    pub gaussian: f64,
    pub salt_pepper: f64,
    pub erase: Option<Erase>,
    pub reader: ImageReader,
    pub label: bool,
    schema: SchemaRef,
}

/// Schema: `example_key`, `noisy`, `clean` (f32 × c·size·size), `label` when the source has one.
pub fn denoise_schema(width: usize, label: bool) -> SchemaRef {
    image_schema(&["noisy", "clean"], width, Vec::new(), label)
}

impl DenoiseImage {
    pub fn new(
        out: ImageOut,
        gaussian: f64,
        salt_pepper: f64,
        erase: Option<Erase>,
        reader: ImageReader,
        label: bool,
    ) -> Self {
        let schema = denoise_schema(out.width(), label);
        DenoiseImage { out, gaussian, salt_pepper, erase, reader, label, schema }
    }

    /// Corrupts `img` (values in `[0, 1]`): gaussian noise, then salt and pepper, then erasing.
    pub fn corrupt(&self, img: &mut Image, rng: &mut impl Rng) {
        if self.gaussian > 0.0 {
            let s = self.gaussian as f32;
            for v in &mut img.data {
                let z: f32 = StandardNormal.sample(rng);
                *v = (*v + s * z).clamp(0.0, 1.0);
            }
        }
        if self.salt_pepper > 0.0 {
            let n = img.h * img.w;
            for i in 0..n {
                if rng.random_bool(self.salt_pepper) {
                    let value = if rng.random_bool(0.5) { 1.0 } else { 0.0 };
                    for ch in 0..img.c {
                        img.data[ch * n + i] = value;
                    }
                }
            }
        }
        if let Some(e) = &self.erase {
            if rng.random_bool(e.p.min(1.0)) {
                if let Some((top, left, h, w)) = erase_box(img.h, img.w, e, rng) {
                    let iw = img.w;
                    for ch in 0..img.c {
                        let plane = img.plane_mut(ch);
                        for y in top..top + h {
                            plane[y * iw + left..y * iw + left + w].fill(e.value);
                        }
                    }
                }
            }
        }
    }
}

/// torchvision `RandomErasing.get_params`: ten tries at a box that fits strictly inside.
pub fn erase_box(height: usize, width: usize, e: &Erase, rng: &mut impl Rng) -> Option<(usize, usize, usize, usize)> {
    let area = (height * width) as f64;
    let log_ratio = (e.ratio.0.ln(), e.ratio.1.ln());
    for _ in 0..10 {
        let target = area * rng.random_range(e.scale.0..=e.scale.1);
        let aspect = rng.random_range(log_ratio.0..=log_ratio.1).exp();
        let h = (target * aspect).sqrt().round() as usize;
        let w = (target / aspect).sqrt().round() as usize;
        if h == 0 || w == 0 || h >= height || w >= width {
            continue;
        }
        let top = rng.random_range(0..=height - h);
        let left = rng.random_range(0..=width - w);
        return Some((top, left, h, w));
    }
    None
}

impl Task for DenoiseImage {
    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn apply(&self, batch: &RecordBatch, keys: &[u64], cx: &TaskContext) -> Result<RecordBatch> {
        let (o, width) = (&self.out, self.out.width());
        let (mut noisy, mut clean) = (Vec::with_capacity(keys.len() * width), Vec::with_capacity(keys.len() * width));
        let kept = self.reader.for_each(batch, keys, cx, |i, img| {
            let mut rng = cx.rng(keys[i]);
            let mut v = resize(&img, o.size, o.size);
            v.normalized_into(&o.mean, &o.std, &mut clean);
            self.corrupt(&mut v, &mut rng);
            v.normalized_into(&o.mean, &o.std, &mut noisy);
        })?;
        let (keys, label) = kept_columns(batch, keys, &kept, self.label)?;
        let mut columns = vec![keys, f32_list(noisy, width), f32_list(clean, width)];
        columns.extend(label);
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

/// The values of a `FixedSizeList<Float32>` column.
pub fn f32_values<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a [f32]> {
    super::primitive_list_values::<Float32Type>(batch, name)
}

/// The values of a `FixedSizeList<Boolean>` column.
pub fn bool_values(batch: &RecordBatch, name: &str) -> Result<Vec<bool>> {
    let col = batch.column_by_name(name).ok_or_else(|| Error::internal(format!("column `{name}` missing")))?;
    let list = col.as_fixed_size_list_opt().ok_or_else(|| {
        Error::internal(format!("column `{name}` is {}, expected a fixed-size list", col.data_type()))
    })?;
    let values = list
        .values()
        .as_boolean_opt()
        .ok_or_else(|| Error::internal(format!("column `{name}` does not hold booleans")))?;
    let start = list.offset() * list.value_length() as usize;
    Ok((start..start + list.len() * list.value_length() as usize).map(|i| values.value(i)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_xoshiro::Xoshiro256PlusPlus;

    #[test]
    fn masking_hides_exactly_the_rounded_share_and_restores() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(9);
        for (n, ratio) in [(196usize, 0.75f64), (64, 0.5), (49, 0.9), (4, 0.75), (1, 0.0)] {
            let masked = (ratio * n as f64).round() as usize;
            let (mut restore, mut mask) = (Vec::new(), Vec::new());
            random_masking(n, masked, &mut rng, &mut restore, &mut mask);
            assert_eq!(mask.iter().filter(|&&m| m).count(), masked);
            let mut sorted = restore.clone();
            sorted.sort();
            assert_eq!(sorted, (0..n as i32).collect::<Vec<_>>());
        }
    }

    #[test]
    fn erase_boxes_fit_inside() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(2);
        let e = Erase { p: 1.0, scale: (0.02, 0.33), ratio: (0.3, 3.3), value: 0.0 };
        for _ in 0..1000 {
            if let Some((t, l, h, w)) = erase_box(32, 24, &e, &mut rng) {
                assert!(t + h <= 32 && l + w <= 24 && h > 0 && w > 0);
            }
        }
    }
}
