//! Helpers shared by the integration tests: corpora written on the fly, and the CLI binary.
#![allow(dead_code)]

pub mod delta;
pub mod s3;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use arrow::array::{
    Array, BinaryArray, FixedSizeListArray, Float64Array, Int64Array, RecordBatch, StringArray, UInt8Array,
};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;

/// Writes a Parquet file with columns `id: Int64` and `text: Utf8` (nullable).
pub fn write_parquet(path: &Path, rows: &[(i64, Option<String>)]) {
    write_parquet_groups(path, rows, usize::MAX);
}

/// Like [`write_parquet`], in row groups of at most `group_rows` rows.
pub fn write_parquet_groups(path: &Path, rows: &[(i64, Option<String>)], group_rows: usize) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let schema =
        Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false), Field::new("text", DataType::Utf8, true)]));
    let ids = Int64Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>());
    let texts = StringArray::from(rows.iter().map(|r| r.1.clone()).collect::<Vec<_>>());
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(ids), Arc::new(texts)]).unwrap();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(group_rows.max(1)))
        .build();
    let mut w = ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// Deterministic pseudo-text: `n` documents of varied length from a small vocabulary.
pub fn documents(n: usize, seed: u64) -> Vec<(i64, Option<String>)> {
    const WORDS: &[&str] = &[
        "alpha", "beta", "gamma", "delta", "river", "stone", "light", "quiet", "north", "paper", "glass", "seven",
        "morning", "window", "garden",
    ];
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|i| {
            let len = 3 + (next() % 120) as usize;
            let text: Vec<&str> = (0..len).map(|_| WORDS[(next() % WORDS.len() as u64) as usize]).collect();
            (i as i64, Some(text.join(" ")))
        })
        .collect()
}

/// A scratch directory removed at drop.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Runs the `pretext` binary.
pub fn pretext(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pretext"))
        .args(args)
        .current_dir(cwd)
        .env("NO_COLOR", "1")
        .env_remove("RANK")
        .env_remove("WORLD_SIZE")
        .output()
        .unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// Writes a pipeline file into `dir` and returns its path.
pub fn pipeline(dir: &Path, name: &str, yaml: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, yaml).unwrap();
    p
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Sorted `(file name, bytes)` of the visible files of a directory.
pub fn dir_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().is_file())
        .map(|e| (e.file_name().to_string_lossy().to_string(), std::fs::read(e.path()).unwrap()))
        .collect();
    v.sort();
    v
}

/// Reads every `part-*.parquet` of an export into batches, in file order.
pub fn read_export(dir: &Path) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    for (name, _) in dir_files(dir) {
        if name.starts_with("part-") {
            let f = std::fs::File::open(dir.join(&name)).unwrap();
            let r = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f).unwrap().build().unwrap();
            out.extend(r.map(|b| b.unwrap()));
        }
    }
    out
}

/// A deterministic picture: a colour gradient with a bright square whose place depends on `i`.
pub fn picture(i: usize, w: u32, h: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        let (cx, cy) = ((i * 7) as u32 % w, (i * 3) as u32 % h);
        let inside = x.abs_diff(cx) < w / 4 && y.abs_diff(cy) < h / 4;
        let base = [(x * 255 / w) as u8, (y * 255 / h) as u8, ((i * 40) % 256) as u8];
        image::Rgb(if inside { [255, 255 - base[0], 40] } else { base })
    })
}

pub fn encode(img: &image::RgbImage, png: bool) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    let format = if png { image::ImageOutputFormat::Png } else { image::ImageOutputFormat::Jpeg(90) };
    image::DynamicImage::ImageRgb8(img.clone()).write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// Writes `batch` as one Parquet file.
pub fn write(path: &Path, batch: RecordBatch) {
    write_groups(path, batch, usize::MAX);
}

/// Writes `batch` as a Parquet file in row groups of at most `group_rows` rows.
pub fn write_groups(path: &Path, batch: RecordBatch, group_rows: usize) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(group_rows.max(1)))
        .build();
    let mut w = ArrowWriter::try_new(std::fs::File::create(path).unwrap(), batch.schema(), Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

/// `n` encoded images (PNG and some JPEG, varied sizes) with `id` and `label`; row 5 holds
/// garbage bytes and row 7 a null image.
pub fn images(n: usize) -> RecordBatch {
    let images: Vec<Option<Vec<u8>>> = (0..n)
        .map(|i| match i {
            5 => Some(b"definitely not a png".to_vec()),
            7 => None,
            _ => Some(encode(&picture(i, 40 + (i % 3) as u32 * 8, 30 + (i % 2) as u32 * 10), i % 4 != 3)),
        })
        .collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("image", DataType::Binary, true),
        Field::new("label", DataType::Int64, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from((0..n as i64).collect::<Vec<_>>())),
            Arc::new(BinaryArray::from(images.iter().map(|b| b.as_deref()).collect::<Vec<_>>())),
            Arc::new(Int64Array::from((0..n as i64).map(|i| i % 3).collect::<Vec<_>>())),
        ],
    )
    .unwrap()
}

/// `n` planar u8 images of `[3, s, s]` as `FixedSizeList<UInt8>`.
pub fn pixels(n: usize, s: usize) -> RecordBatch {
    let mut values = Vec::with_capacity(n * 3 * s * s);
    for i in 0..n {
        let img = picture(i, s as u32, s as u32);
        for c in 0..3 {
            values.extend(img.pixels().map(|p| p.0[c]));
        }
    }
    let item = Arc::new(Field::new("item", DataType::UInt8, false));
    let pixels = FixedSizeListArray::new(item.clone(), (3 * s * s) as i32, Arc::new(UInt8Array::from(values)), None);
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("pixels", DataType::FixedSizeList(item, (3 * s * s) as i32), false),
    ]));
    RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from((0..n as i64).collect::<Vec<_>>())), Arc::new(pixels)])
        .unwrap()
}

/// A table of `n` rows: 16 numeric features `f0..f15` (f3 with nulls), `color` codes 0..4 with
/// nulls, and `label`.
pub fn table(n: usize) -> RecordBatch {
    let mut fields = vec![Field::new("id", DataType::Int64, false)];
    let mut cols: Vec<Arc<dyn Array>> = vec![Arc::new(Int64Array::from((0..n as i64).collect::<Vec<_>>()))];
    for j in 0..16 {
        fields.push(Field::new(format!("f{j}"), DataType::Float64, true));
        let v: Vec<Option<f64>> = (0..n)
            .map(|i| {
                if j == 3 && i % 10 == 0 {
                    None
                } else {
                    Some(((i * (j + 3) * 7919) % 1000) as f64 / 10.0 + j as f64)
                }
            })
            .collect();
        cols.push(Arc::new(Float64Array::from(v)));
    }
    fields.push(Field::new("color", DataType::Int64, true));
    cols.push(Arc::new(Int64Array::from(
        (0..n).map(|i| if i % 13 == 0 { None } else { Some((i % 5) as i64) }).collect::<Vec<_>>(),
    )));
    fields.push(Field::new("label", DataType::Int64, false));
    cols.push(Arc::new(Int64Array::from((0..n as i64).map(|i| i % 2).collect::<Vec<_>>())));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap()
}
