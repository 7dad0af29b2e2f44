//! Image and tabular tasks end to end: PNG / JPEG bytes and pixel arrays in, SimCLR views, MAE
//! masks, denoising pairs, SCARF / VIME corruption out; undecodable images counted and named;
//! determinism across worker counts; the errors for misconfigured sources.

mod common;

use std::collections::HashSet;
use std::path::Path;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float32Type};
use common::*;

fn write_images(path: &Path, n: usize) {
    write(path, images(n));
}

fn write_pixels(path: &Path, n: usize, s: usize) {
    write(path, pixels(n, s));
}

fn write_table(path: &Path, n: usize) {
    write(path, table(n));
}

fn concat(batches: &[RecordBatch]) -> RecordBatch {
    arrow::compute::concat_batches(&batches[0].schema(), batches).unwrap()
}

fn f32s(b: &RecordBatch, name: &str) -> (Vec<f32>, usize) {
    let list = b.column_by_name(name).unwrap().as_fixed_size_list();
    let w = list.value_length() as usize;
    (list.values().as_primitive::<Float32Type>().values().to_vec(), w)
}

fn bools(b: &RecordBatch, name: &str) -> (Vec<bool>, usize) {
    let list = b.column_by_name(name).unwrap().as_fixed_size_list();
    let w = list.value_length() as usize;
    let v = list.values().as_boolean();
    ((0..v.len()).map(|i| v.value(i)).collect(), w)
}

fn export(dir: &Path, yaml: &str, extra: &[&str]) -> (RecordBatch, serde_json::Value) {
    let p = pipeline(dir, "p.yaml", yaml);
    let out = format!("out{}", extra.len());
    let mut args = vec!["export", p.to_str().unwrap(), "--out", out.as_str(), "--quiet"];
    args.extend(extra);
    let o = pretext(&args, dir);
    assert!(o.status.success(), "{}", stderr(&o));
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(&out).join("_manifest.json")).unwrap()).unwrap();
    (concat(&read_export(&dir.join(out))), manifest)
}

const SIMCLR: &str = "name: views\nsource: { path: img.parquet, key_column: id, label_column: label }\ntask: { contrastive_image: { image: { size: 32 } } }\nstream: { batch_size: 8 }\n";

#[test]
fn simclr_views_from_png_and_jpeg_bytes() {
    let t = tempdir();
    write_images(&t.path().join("img.parquet"), 40);
    let (b, manifest) = export(t.path(), SIMCLR, &[]);
    // 40 rows − 1 null − 1 undecodable.
    assert_eq!(b.num_rows(), 38);
    let stats = &manifest["source"]["stats"];
    assert_eq!(stats["skipped_null_image"], 1, "{stats}");
    assert_eq!(stats["skipped_undecodable_image"], 1, "{stats}");
    assert!(stats["undecodable_images"][0].as_str().unwrap().contains("example_key 5"), "{stats}");
    let (a, w) = f32s(&b, "view_a");
    let (v, _) = f32s(&b, "view_b");
    assert_eq!(w, 3 * 32 * 32);
    assert_ne!(a, v, "two views of an image differ");
    // Normalised with ImageNet's statistics: every value within (0 − 0.485) / 0.229 … (1 − 0.406) / 0.225.
    assert!(a.iter().chain(&v).all(|x| (-2.2..=2.7).contains(x)));
    let labels = b.column_by_name("label").unwrap().as_primitive::<arrow::datatypes::Int64Type>();
    let keys = b.column(0).as_primitive::<arrow::datatypes::UInt64Type>();
    for i in 0..b.num_rows() {
        assert_eq!(labels.value(i), keys.value(i) as i64 % 3, "labels travel with their images");
    }
}

#[test]
fn image_examples_do_not_depend_on_workers_or_batching() {
    let t = tempdir();
    write_images(&t.path().join("img.parquet"), 30);
    let (one, _) = export(t.path(), SIMCLR, &["--set", "stream.workers=1"]);
    let (two, _) = export(t.path(), SIMCLR, &["--set", "stream.workers=2", "--set", "stream.batch_size=3"]);
    assert_eq!(one, two);
}

#[test]
fn byol_preset_and_overrides_make_asymmetric_views() {
    let t = tempdir();
    write_images(&t.path().join("img.parquet"), 12);
    let yaml = "name: byol\nsource: { path: img.parquet, key_column: id }\ntask: { contrastive_image: { image: { size: 24, channels: 1 }, preset: byol, views: 3, augment: { color_jitter: { p: 0.0 } } } }\n";
    let (b, _) = export(t.path(), yaml, &[]);
    assert!(b.column_by_name("label").is_none());
    for name in ["view_a", "view_b", "view_c"] {
        assert_eq!(f32s(&b, name).1, 24 * 24);
    }
}

#[test]
fn mae_masks_exactly_the_rounded_share_of_pixel_array_images() {
    let t = tempdir();
    write_pixels(&t.path().join("px.parquet"), 20, 32);
    let yaml = "name: mae\nsource: { path: px.parquet, key_column: id, image_column: pixels, image_shape: [3, 32, 32] }\ntask: { mae: { image: { size: 32 }, patch_size: 8, mask_ratio: 0.75 } }\n";
    let (b, _) = export(t.path(), yaml, &[]);
    assert_eq!(b.num_rows(), 20);
    let (mask, n) = bools(&b, "mask");
    assert_eq!(n, 16);
    let restore = b.column_by_name("ids_restore").unwrap().as_fixed_size_list();
    let restore = restore.values().as_primitive::<arrow::datatypes::Int32Type>().values().to_vec();
    for r in 0..20 {
        let m = &mask[r * n..(r + 1) * n];
        assert_eq!(m.iter().filter(|&&x| x).count(), 12);
        let ids = &restore[r * n..(r + 1) * n];
        let set: HashSet<i32> = ids.iter().copied().collect();
        assert_eq!(set.len(), n, "ids_restore is a permutation");
        for p in 0..n {
            assert_eq!(m[p], ids[p] >= 4, "masked ⇔ ranked after the kept patches");
        }
    }
    assert_eq!(f32s(&b, "pixel_values").1, 3 * 32 * 32);
}

#[test]
fn denoise_pairs_differ_only_by_the_noise() {
    let t = tempdir();
    write_pixels(&t.path().join("px.parquet"), 6, 16);
    let yaml = "name: dn\nsource: { path: px.parquet, key_column: id, image_column: pixels, image_shape: [3, 16, 16] }\ntask: { denoise_image: { image: { size: 16, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5] }, gaussian: 0.0, salt_pepper: 0.1 } }\n";
    let (b, _) = export(t.path(), yaml, &[]);
    let (noisy, w) = f32s(&b, "noisy");
    let (clean, _) = f32s(&b, "clean");
    assert_eq!(w, 3 * 16 * 16);
    // Same size: the clean image is the source exactly, normalised to [-1, 1].
    let src = picture(0, 16, 16);
    assert!((clean[0] - (src.get_pixel(0, 0).0[0] as f32 / 255.0 - 0.5) / 0.5).abs() < 1e-5);
    // Salt and pepper sets whole pixels (all channels) to black (-1) or white (1).
    let plane = 16 * 16;
    let changed: Vec<usize> =
        (0..plane).filter(|&i| (0..3).any(|c| noisy[c * plane + i] != clean[c * plane + i])).collect();
    assert!(!changed.is_empty());
    for i in changed {
        let v = noisy[i];
        assert!(v == -1.0 || v == 1.0);
        assert!((0..3).all(|c| noisy[c * plane + i] == v));
    }
}

#[test]
fn scarf_corrupts_exactly_the_share_with_values_seen_in_the_column() {
    let t = tempdir();
    write_table(&t.path().join("t.parquet"), 500);
    let cols: Vec<String> = (0..16).map(|j| format!("f{j}")).chain(["color".to_string()]).collect();
    let yaml = format!(
        "name: scarf\nsource: {{ path: t.parquet, key_column: id, label_column: label }}\ntask: {{ scarf: {{ columns: [{}], categorical: [color], reservoir: 64 }} }}\n",
        cols.join(", ")
    );
    let (b, _) = export(t.path(), &yaml, &[]);
    assert_eq!(b.num_rows(), 500);
    let (feat, c) = f32s(&b, "features");
    let (cor, _) = f32s(&b, "corrupted");
    let (mask, _) = bools(&b, "corruption_mask");
    let (missing, _) = bools(&b, "missing_mask");
    assert_eq!(c, 17);
    // The values each column holds (as f32).
    let source = concat(&[{
        let f = std::fs::File::open(t.path().join("t.parquet")).unwrap();
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
            .unwrap()
            .build()
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
    }]);
    let seen: Vec<HashSet<u32>> = cols
        .iter()
        .map(|n| {
            let col = arrow::compute::cast(source.column_by_name(n).unwrap(), &DataType::Float64).unwrap();
            col.as_primitive::<arrow::datatypes::Float64Type>().iter().flatten().map(|v| (v as f32).to_bits()).collect()
        })
        .collect();
    let k = (0.6f64 * 17.0).round() as usize;
    for r in 0..b.num_rows() {
        let row = r * c..(r + 1) * c;
        assert_eq!(mask[row.clone()].iter().filter(|&&m| m).count(), k, "row {r}");
        for j in 0..c {
            let i = r * c + j;
            if !mask[i] {
                assert_eq!(cor[i], feat[i]);
            } else {
                assert!(seen[j].contains(&cor[i].to_bits()), "column {} got {} which it never held", cols[j], cor[i]);
            }
            // Imputed values are real values of the column too (median / most frequent code).
            assert!(seen[j].contains(&feat[i].to_bits()));
        }
    }
    // f3 is null every 10th row and `color` every 13th: flagged, never silently zero.
    assert_eq!(missing.iter().filter(|&&m| m).count(), 50 + 39);
    assert!(missing[3] && missing[16], "row 0 has both nulls");
}

#[test]
fn a_rows_corruption_choice_depends_on_its_key_alone() {
    let t = tempdir();
    write_table(&t.path().join("t.parquet"), 300);
    let yaml = "name: s\nsource: { path: t.parquet, key_column: id }\ntask: { scarf: { columns: [f0, f1, f2, f4, f5, f6, f7] } }\n";
    let (whole, _) = export(t.path(), yaml, &[]);
    let (half, _) = export(t.path(), yaml, &["--set", "stream.shard={rank: 1, world_size: 2}"]);
    let masks = |b: &RecordBatch| {
        let (m, c) = bools(b, "corruption_mask");
        let keys = b.column(0).as_primitive::<arrow::datatypes::UInt64Type>().values().to_vec();
        keys.into_iter()
            .enumerate()
            .map(|(r, k)| (k, m[r * c..(r + 1) * c].to_vec()))
            .collect::<std::collections::HashMap<_, _>>()
    };
    let (w, h) = (masks(&whole), masks(&half));
    assert_eq!(h.len(), 150);
    for (k, m) in &h {
        assert_eq!(&w[k], m, "key {k}: the shard chose other features");
    }
}

#[test]
fn vime_masks_each_feature_with_its_probability() {
    let t = tempdir();
    write_table(&t.path().join("t.parquet"), 2000);
    let yaml = "name: vime\nsource: { path: t.parquet, key_column: id }\ntask: { vime: { columns: [f0, f1, f2, f4, f5, f6, f7, f8], standardize: true } }\n";
    let (b, _) = export(t.path(), yaml, &[]);
    let (mask, _) = bools(&b, "corruption_mask");
    let share = mask.iter().filter(|&&m| m).count() as f64 / mask.len() as f64;
    // VIME's target marks the features whose value changed: a little under 0.3.
    assert!((0.25..0.31).contains(&share), "{share}");
    let (feat, _) = f32s(&b, "features");
    let (cor, _) = f32s(&b, "corrupted");
    for i in 0..mask.len() {
        assert_eq!(mask[i], feat[i] != cor[i], "value {i}");
    }
    let mean = feat.iter().map(|&x| x as f64).sum::<f64>() / feat.len() as f64;
    assert!(mean.abs() < 0.2, "standardised features have mean near 0, got {mean}");
}

#[test]
fn misconfigured_image_and_table_sources_name_the_key() {
    let t = tempdir();
    write_images(&t.path().join("img.parquet"), 4);
    write_pixels(&t.path().join("px.parquet"), 2, 8);
    write_table(&t.path().join("t.parquet"), 10);
    let cases: &[(&str, &str)] = &[
        (
            "name: a\nsource: { path: img.parquet, image_column: picture }\ntask: { contrastive_image: {} }\n",
            "source.image_column",
        ),
        (
            "name: a\nsource: { path: px.parquet, image_column: pixels }\ntask: { mae: { image: { size: 8 }, patch_size: 4 } }\n",
            "source.image_shape",
        ),
        ("name: a\nsource: { path: img.parquet }\ntask: { mae: { image: { size: 30 }, patch_size: 16 } }\n", "task.mae.patch_size"),
        ("name: a\nsource: { path: t.parquet }\ntask: { scarf: { columns: [f0, f99] } }\n", "task.scarf.columns"),
        (
            "name: a\nsource: { path: t.parquet }\ntask: { scarf: { columns: [f0], categorical: [color] } }\n",
            "task.scarf.categorical",
        ),
        (
            "name: a\nsource: { path: img.parquet }\ntokenizer: { train: {} }\ntask: { contrastive_image: {} }\n",
            "tokenizer",
        ),
        (
            "name: a\nsource: { path: img.parquet }\ntask: { contrastive_image: { image: { channels: 3, mean: [0.5] } } }\n",
            "task.contrastive_image.image.mean",
        ),
        (
            "name: a\nsource: { path: img.parquet, label_column: image }\ntask: { contrastive_image: {} }\n",
            "source.label_column",
        ),
        (
            "name: a\nsource: { path: px.parquet, image_column: pixels, image_shape: [3, 8, 8] }\ntask: { mae: { image: { size: 8 }, patch_size: 4, mask_ratio: 0.1 } }\n",
            "task.mae.mask_ratio",
        ),
        ("name: a\nsource: { path: t.parquet }\ntask: { scarf: { columns: [f0, label] } }\n", "task.scarf.columns"),
    ];
    for (yaml, key) in cases {
        let p = pipeline(t.path(), "bad.yaml", yaml);
        let o = pretext(&["validate", p.to_str().unwrap()], t.path());
        assert!(!o.status.success(), "{yaml}");
        assert!(stderr(&o).contains(key), "{yaml}\nexpected `{key}` in:\n{}", stderr(&o));
    }
}

#[test]
fn preview_draws_a_contact_sheet_and_prints_tables() {
    let t = tempdir();
    write_pixels(&t.path().join("px.parquet"), 5, 16);
    let yaml = "name: mae\nsource: { path: px.parquet, key_column: id, image_column: pixels, image_shape: [3, 16, 16] }\ntask: { mae: { image: { size: 16 }, patch_size: 4 } }\n";
    let p = pipeline(t.path(), "p.yaml", yaml);
    let o = pretext(&["preview", p.to_str().unwrap(), "-n", "3", "--out", "sheet.png"], t.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("12 of 16 patches masked"), "{}", stdout(&o));
    // 3 rows, 2 tiles (image, masked image) of 16 × 6 = 96 pixels with 4-pixel gaps.
    let sheet = image::open(t.path().join("sheet.png")).unwrap();
    assert_eq!((sheet.width(), sheet.height()), (2 * 100 + 4, 3 * 100 + 4));

    write_table(&t.path().join("t.parquet"), 30);
    let p = pipeline(
        t.path(),
        "t.yaml",
        "name: s\nsource: { path: t.parquet }\ntask: { scarf: { columns: [f0, f3, color] } }\n",
    );
    let o = pretext(&["preview", p.to_str().unwrap(), "-n", "1"], t.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("2 of 3 features corrupted") && text.contains("color"), "{text}");
}
