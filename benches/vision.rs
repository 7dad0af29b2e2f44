//! Image and table tasks end to end through the pipeline (Parquet → task → batches), with the
//! workers of the machine, each next to a baseline measured in the same run:
//!
//! - `simclr_png32`: two SimCLR views per image from 4,000 PNGs of 32×32; baseline: decoding the
//!   same PNGs alone on as many threads.
//! - `mae_pixels224`: MAE crops, flips, normalisation and masks of 400 pre-decoded 224×224 RGB
//!   images (u8 pixel arrays) from Parquet; baseline: reading the pixel column alone; and
//!   `mae_task_alone_224`, the MAE task on the same images already in memory, on as many threads.
//! - `scarf_16cols`: SCARF corruption of 500,000 rows of 16 numeric columns; baseline: reading
//!   the 16 columns alone.
//!
//! ```text
//! cargo bench --bench vision
//! ```
//! Issue targets on 2 cores: SimCLR ≥ 3,000 images/s, MAE ≥ 1,000 images/s, SCARF ≥ 1 M rows/s.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{AsArray, BinaryArray, FixedSizeListArray, Float64Array, Int64Array, RecordBatch, UInt8Array};
use arrow::datatypes::{DataType, Field, Schema};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures::StreamExt;
use parquet::arrow::ArrowWriter;
use pretext::plan::{BuildOptions, Plan};

fn write(path: &Path, batches: &[RecordBatch]) {
    let mut w = ArrowWriter::try_new(std::fs::File::create(path).unwrap(), batches[0].schema(), None).unwrap();
    for b in batches {
        w.write(b).unwrap();
    }
    w.close().unwrap();
}

fn picture(i: usize, s: u32) -> image::RgbImage {
    image::RgbImage::from_fn(s, s, |x, y| {
        let inside = x.abs_diff((i as u32 * 7) % s) < s / 4 && y.abs_diff((i as u32 * 3) % s) < s / 4;
        let v = ((x * 5 + y * 11 + i as u32) % 32) as u8;
        image::Rgb(if inside { [230, 180 + v, 40] } else { [20 + v, 60, 90 + v] })
    })
}

fn pngs(dir: &Path, n: usize) -> Vec<Vec<u8>> {
    let images: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let mut out = std::io::Cursor::new(Vec::new());
            image::DynamicImage::ImageRgb8(picture(i, 32)).write_to(&mut out, image::ImageOutputFormat::Png).unwrap();
            out.into_inner()
        })
        .collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("image", DataType::Binary, false),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from((0..n as i64).collect::<Vec<_>>())),
            Arc::new(BinaryArray::from(images.iter().map(|b| b.as_slice()).collect::<Vec<_>>())),
        ],
    )
    .unwrap();
    write(&dir.join("png.parquet"), &[batch]);
    images
}

fn pixels(dir: &Path, n: usize, s: usize) {
    let item = Arc::new(Field::new("item", DataType::UInt8, false));
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("pixels", DataType::FixedSizeList(item.clone(), (3 * s * s) as i32), false),
    ]));
    let batches: Vec<RecordBatch> = (0..n / 50)
        .map(|chunk| {
            let mut values = Vec::with_capacity(50 * 3 * s * s);
            for i in chunk * 50..(chunk + 1) * 50 {
                let img = picture(i, s as u32);
                for c in 0..3 {
                    values.extend(img.pixels().map(|p| p.0[c]));
                }
            }
            let list =
                FixedSizeListArray::new(item.clone(), (3 * s * s) as i32, Arc::new(UInt8Array::from(values)), None);
            let ids = Int64Array::from((chunk as i64 * 50..(chunk as i64 + 1) * 50).collect::<Vec<_>>());
            RecordBatch::try_new(schema.clone(), vec![Arc::new(ids), Arc::new(list)]).unwrap()
        })
        .collect();
    write(&dir.join("pixels.parquet"), &batches);
}

fn table(dir: &Path, rows: usize) {
    let mut fields = vec![Field::new("id", DataType::Int64, false)];
    let mut cols: Vec<Arc<dyn arrow::array::Array>> =
        vec![Arc::new(Int64Array::from((0..rows as i64).collect::<Vec<_>>()))];
    for j in 0..16 {
        fields.push(Field::new(format!("f{j}"), DataType::Float64, true));
        cols.push(Arc::new(Float64Array::from(
            (0..rows).map(|i| ((i * (j + 3) * 7919) % 100_000) as f64 / 100.0).collect::<Vec<_>>(),
        )));
    }
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap();
    write(&dir.join("table.parquet"), &[batch]);
}

/// Reads the source alone (no task); returns the rows.
fn scan_rows(rt: &tokio::runtime::Runtime, plan: &Arc<Plan>) -> usize {
    rt.block_on(async {
        let mut s = plan.source().scan(pretext::source::Shard::WHOLE, Default::default());
        let mut n = 0;
        while let Some(b) = s.next().await {
            n += b.unwrap().num_rows();
        }
        n
    })
}

/// Drains one epoch of the pipeline; returns the examples.
fn drain(rt: &tokio::runtime::Runtime, plan: &Arc<Plan>) -> usize {
    rt.block_on(async {
        let mut s = plan.epoch_batches(0, pretext::source::Split::All);
        let mut n = 0;
        while let Some(b) = s.next().await {
            n += b.unwrap().num_rows();
        }
        n
    })
}

fn build(rt: &tokio::runtime::Runtime, dir: &Path, yaml: &str) -> Arc<Plan> {
    let p = pretext::spec::load_str(yaml, "bench.yaml", dir.to_path_buf(), &[]).unwrap();
    rt.block_on(Plan::build(p, &BuildOptions::default())).unwrap()
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let rt = pretext::cli::runtime().unwrap();
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);

    let n = 4000;
    let images = Arc::new(pngs(dir.path(), n));
    let simclr = build(
        &rt,
        dir.path(),
        "name: b\nsource: { path: png.parquet, key_column: id }\ntask: { contrastive_image: { image: { size: 32 } } }\nstream: { batch_size: 256 }\n",
    );
    let mut g = c.benchmark_group("vision");
    g.sample_size(10);
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("simclr_png32", |b| b.iter(|| assert_eq!(drain(&rt, &simclr), n)));
    g.bench_function("png32_decode_alone", |b| {
        b.iter(|| {
            std::thread::scope(|s| {
                for t in 0..workers {
                    let images = images.clone();
                    s.spawn(move || {
                        for img in images.iter().skip(t).step_by(workers) {
                            std::hint::black_box(pretext::vision::Image::decode(img, 3).unwrap());
                        }
                    });
                }
            })
        })
    });

    let n = 400;
    pixels(dir.path(), n, 224);
    let mae = build(
        &rt,
        dir.path(),
        "name: b\nsource: { path: pixels.parquet, key_column: id, image_column: pixels, image_shape: [3, 224, 224] }\ntask: { mae: {} }\nstream: { batch_size: 64 }\n",
    );
    let read = build(
        &rt,
        dir.path(),
        "name: b\nsource: { path: pixels.parquet, key_column: id, image_column: pixels, image_shape: [3, 224, 224] }\ntask: { mae: {} }\n",
    );
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("mae_pixels224", |b| b.iter(|| assert_eq!(drain(&rt, &mae), n)));
    // The MAE task alone on images already in memory (as the scan hands them over), on as many
    // threads as the pipeline uses: what "masking pre-decoded images" costs without Parquet.
    let rows: Vec<RecordBatch> = rt.block_on(async {
        let mut s = read.source().scan(pretext::source::Shard::WHOLE, Default::default());
        let mut out = Vec::new();
        while let Some(b) = s.next().await {
            let b = b.unwrap();
            for start in (0..b.num_rows()).step_by(50) {
                out.push(b.slice(start, 50.min(b.num_rows() - start)));
            }
        }
        out
    });
    let cx = pretext::task::TaskContext { seed: 1, epoch: 0 };
    g.bench_function("mae_task_alone_224", |b| {
        b.iter(|| {
            std::thread::scope(|s| {
                for t in 0..workers {
                    let (rows, task) = (&rows, mae.task().clone());
                    s.spawn(move || {
                        for batch in rows.iter().skip(t).step_by(workers) {
                            let keys = batch.column(0).as_primitive::<arrow::datatypes::UInt64Type>().values().to_vec();
                            std::hint::black_box(task.apply(batch, &keys, &cx).unwrap());
                        }
                    });
                }
            })
        })
    });
    g.bench_function("pixels224_read_alone", |b| b.iter(|| assert_eq!(scan_rows(&rt, &read), n)));

    let rows = 500_000;
    table(dir.path(), rows);
    let cols: Vec<String> = (0..16).map(|j| format!("f{j}")).collect();
    let yaml = format!(
        "name: b\nsource: {{ path: table.parquet, key_column: id }}\ntask: {{ scarf: {{ columns: [{}] }} }}\nstream: {{ batch_size: 4096 }}\n",
        cols.join(", ")
    );
    let scarf = build(&rt, dir.path(), &yaml);
    g.throughput(Throughput::Elements(rows as u64));
    g.bench_function("scarf_16cols", |b| b.iter(|| assert_eq!(drain(&rt, &scarf), rows)));
    g.bench_function("table_read_alone", |b| b.iter(|| assert_eq!(scan_rows(&rt, &scarf), rows)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
