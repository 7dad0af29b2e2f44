//! Writes the built-in image and table quickstart data, generated here (no third-party images):
//!
//! - `data/shapes/shapes.parquet`: 800 PNG images of 32×32 pixels, one coloured shape each (0
//!   disc, 1 square, 2 triangle, 3 cross) at a random place, size and colour on a noisy
//!   background; columns `id`, `image` (PNG bytes), `label`.
//! - `data/table/rows.parquet`: 2,000 rows of 12 numeric features (two with nulls) and 2
//!   categorical codes; `label` is a nonlinear function of a few of them, so a linear probe on
//!   good embeddings beats chance.
//!
//! Deterministic: the same files every run.
//!
//! ```text
//! cargo run --release --example gen_shapes -- data
//! ```

use std::sync::Arc;

use arrow::array::{ArrayRef, BinaryArray, Float64Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

const SIDE: i32 = 32;

/// Whether pixel `(x, y)` lies in shape `kind` centred at `(cx, cy)` with radius `r`.
fn inside(kind: usize, x: i32, y: i32, cx: i32, cy: i32, r: i32) -> bool {
    let (dx, dy) = (x - cx, y - cy);
    match kind {
        0 => dx * dx + dy * dy <= r * r,
        1 => dx.abs() <= r * 4 / 5 && dy.abs() <= r * 4 / 5,
        2 => dy <= r * 2 / 3 && dy >= -r && dx.abs() * 3 <= (dy + r) * 2,
        _ => (dx.abs() <= r / 3 && dy.abs() <= r) || (dy.abs() <= r / 3 && dx.abs() <= r),
    }
}

fn shape_png(rng: &mut impl Rng, kind: usize) -> Vec<u8> {
    let r = rng.random_range(6..12);
    let (cx, cy) = (rng.random_range(r..SIDE - r), rng.random_range(r..SIDE - r));
    let fg = [rng.random_range(120..256) as u8, rng.random_range(0..256) as u8, rng.random_range(0..256) as u8];
    let bg = [rng.random_range(0..90) as u8, rng.random_range(0..90) as u8, rng.random_range(0..90) as u8];
    let mut img = image::RgbImage::new(SIDE as u32, SIDE as u32);
    for y in 0..SIDE {
        for x in 0..SIDE {
            let px = if inside(kind, x, y, cx, cy, r) {
                fg
            } else {
                bg.map(|c| c.saturating_add(rng.random_range(0..2) * 12))
            };
            img.put_pixel(x as u32, y as u32, image::Rgb(px));
        }
    }
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img).write_to(&mut out, image::ImageOutputFormat::Png).expect("png encodes");
    out.into_inner()
}

fn write(path: &std::path::Path, batch: RecordBatch) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(path.parent().expect("a file path"))?;
    let props = WriterProperties::builder().set_compression(Compression::ZSTD(ZstdLevel::try_new(9)?)).build();
    let mut w = ArrowWriter::try_new(std::fs::File::create(path)?, batch.schema(), Some(props))?;
    w.write(&batch)?;
    w.close()?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "data".into()));
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(2026);

    let n = 800;
    let labels: Vec<i64> = (0..n).map(|i| (i % 4) as i64).collect();
    let images: Vec<Vec<u8>> = labels.iter().map(|&l| shape_png(&mut rng, l as usize)).collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("image", DataType::Binary, false),
        Field::new("label", DataType::Int64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from((0..n as i64).collect::<Vec<_>>())),
            Arc::new(BinaryArray::from(images.iter().map(|b| b.as_slice()).collect::<Vec<_>>())),
            Arc::new(Int64Array::from(labels)),
        ],
    )?;
    write(&root.join("shapes/shapes.parquet"), batch)?;

    let rows = 2000;
    let mut fields = vec![Field::new("id", DataType::Int64, false)];
    let mut cols: Vec<ArrayRef> = vec![Arc::new(Int64Array::from((0..rows as i64).collect::<Vec<_>>()))];
    let mut x = vec![vec![0f64; rows]; 12];
    for (j, col) in x.iter_mut().enumerate() {
        for v in col.iter_mut() {
            let z: f64 = (0..4).map(|_| rng.random::<f64>()).sum::<f64>() - 2.0;
            *v = z * (1.0 + j as f64) + 10.0 * j as f64;
        }
    }
    let cat_a: Vec<i64> = (0..rows).map(|_| rng.random_range(0..5)).collect();
    let cat_b: Vec<i64> = (0..rows).map(|_| rng.random_range(0..3)).collect();
    let label: Vec<i64> = (0..rows)
        .map(|i| {
            let s = (x[0][i] - 0.0) * (x[1][i] - 10.0) + (x[2][i] - 20.0).abs() - 2.0 + (cat_a[i] % 2) as f64;
            (s > 0.0) as i64
        })
        .collect();
    for (j, col) in x.iter().enumerate() {
        fields.push(Field::new(format!("x{j}"), DataType::Float64, true));
        let with_nulls: Vec<Option<f64>> = col
            .iter()
            .enumerate()
            .map(|(i, &v)| if (j == 4 && i % 17 == 0) || (j == 7 && i % 29 == 0) { None } else { Some(v) })
            .collect();
        cols.push(Arc::new(Float64Array::from(with_nulls)));
    }
    fields.push(Field::new("cat_a", DataType::Int64, false));
    cols.push(Arc::new(Int64Array::from(cat_a)));
    fields.push(Field::new("cat_b", DataType::Int64, false));
    cols.push(Arc::new(Int64Array::from(cat_b)));
    fields.push(Field::new("label", DataType::Int64, false));
    cols.push(Arc::new(Int64Array::from(label)));
    write(&root.join("table/rows.parquet"), RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?)?;
    println!("wrote {} and {}", root.join("shapes").display(), root.join("table").display());
    Ok(())
}
