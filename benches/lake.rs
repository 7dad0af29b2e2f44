//! The data lake, each figure next to its baseline from the same run:
//!
//! - `scan_local` / `scan_s3`: reading the documents of a 12-file Parquet corpus through the
//!   source (DataFusion, keys, filters) from local disk, and from a local S3-compatible server
//!   (moto on loopback, or s3s-fs when `PRETEXT_BENCH_S3S_FS` names its binary) — the issue's
//!   target: S3 at least 50% of local. `get_s3_whole_files` (one after another, and 4 at once)
//!   is the server's floor: fetching the same objects whole, without reading them.
//! - `pass_local` / `pass_s3`: the whole pipeline (bytes tokenizer, packing, MLM) over the same
//!   corpus from disk and from the server, where reading overlaps the work.
//! - `scan_local_rank_1_of_4`: one rank of four (reads a quarter of the row groups);
//!   `scan_local_by_file`: the file-by-file path that `sql:` sources take; `*_shuffled`: the row
//!   groups in a seeded permutation.
//! - `restore_at_{10,50,90}pct`: restoring a stream cursor saved 10%, 50% and 90% into a pass
//!   and producing the first batch after it (packed MLM, windows of 4,096 documents) — target:
//!   under 1 second wherever the cursor is. Baseline: `first_batch_from_start`.
//! - Shuffle quality (printed, not timed): the mean distance, in source order, between
//!   neighbouring output examples, for `shuffle: false`, windows of 1,024 and 16,384 documents,
//!   next to the mean for a uniform random permutation (N/3).
//!
//! ```text
//! cargo bench --bench lake
//! ```
//! The S3 figures need `python3 -m pip install 'moto[server]'` (or `cargo install s3s-fs
//! --features binary` and `PRETEXT_BENCH_S3S_FS=$(which s3s-fs)`); without either they are
//! skipped.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures::StreamExt;
use object_store::{ObjectStoreExt, PutPayload};
use parquet::arrow::ArrowWriter;
use pretext::plan::{BuildOptions, Plan};
use pretext::source::{ScanOptions, Shard, Split};
use pretext::stream::StreamCursor;

const FILES: usize = 12;
const DOCS_PER_FILE: usize = 20_000;
const GROUP_ROWS: usize = 4096;

fn corpus(dir: &Path) -> u64 {
    let words = ["river", "stone", "light", "quiet", "north", "paper", "glass", "seven", "window", "garden"];
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("text", DataType::Utf8, false),
    ]));
    let mut bytes = 0;
    for f in 0..FILES {
        let ids: Vec<i64> = (0..DOCS_PER_FILE).map(|i| (f * DOCS_PER_FILE + i) as i64).collect();
        let texts: Vec<String> = ids
            .iter()
            .map(|&i| {
                let n = 20 + (i as usize * 7919) % 180;
                (0..n).map(|j| words[(i as usize + j * 31) % words.len()]).collect::<Vec<_>>().join(" ")
            })
            .collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from(ids)), Arc::new(StringArray::from(texts))],
        )
        .unwrap();
        let path = dir.join(format!("corpus/part-{f:02}.parquet"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let props = parquet::file::properties::WriterProperties::builder()
            .set_max_row_group_row_count(Some(GROUP_ROWS))
            .build();
        let mut w = ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), schema.clone(), Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        bytes += std::fs::metadata(&path).unwrap().len();
    }
    bytes
}

/// A local S3-compatible server: `s3s-fs` (Rust) when `PRETEXT_BENCH_S3S_FS` names its binary
/// (`cargo install s3s-fs --features binary`), else moto in server mode (Python).
struct Server {
    child: Child,
    port: u16,
    name: &'static str,
    _root: Option<tempfile::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn server() -> Option<Server> {
    let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
    let server = match std::env::var("PRETEXT_BENCH_S3S_FS") {
        Ok(bin) => {
            let root = tempfile::tempdir().ok()?;
            std::fs::create_dir(root.path().join("lake")).ok()?;
            let child = Command::new(bin)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--access-key", "bench", "--secret-key", "bench"])
                .arg(root.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .ok()?;
            Server { child, port, name: "s3s-fs", _root: Some(root) }
        }
        Err(_) => {
            let ok =
                Command::new("python3").args(["-c", "import moto.server, flask_cors"]).output().ok()?.status.success();
            if !ok {
                eprintln!("moto[server] is not installed: skipping the S3 figures");
                return None;
            }
            let child = Command::new("python3")
                .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .ok()?;
            Server { child, port, name: "moto", _root: None }
        }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("S3 server: {}", server.name);
    Some(server)
}

fn plan(rt: &tokio::runtime::Runtime, dir: &Path, yaml: &str) -> Arc<Plan> {
    let p = dir.join("p.yaml");
    std::fs::write(&p, yaml).unwrap();
    let pl = pretext::load_pipeline(&p, &[]).unwrap();
    rt.block_on(Plan::build(pl, &BuildOptions::default())).unwrap()
}

fn scan_all(rt: &tokio::runtime::Runtime, plan: &Arc<Plan>) -> u64 {
    scan_shard(rt, plan, Shard::WHOLE)
}

fn scan_shard(rt: &tokio::runtime::Runtime, plan: &Arc<Plan>, shard: Shard) -> u64 {
    scan_with(rt, plan, shard, ScanOptions::default())
}

/// A pass reading the row groups in a seeded permutation.
fn scan_shuffled(rt: &tokio::runtime::Runtime, plan: &Arc<Plan>) -> u64 {
    scan_with(rt, plan, Shard::WHOLE, ScanOptions { shuffle_seed: Some(7), ..Default::default() })
}

/// A whole pass of the pipeline (tokenize, pack, mask), the reading overlapped with the work.
fn pass(rt: &tokio::runtime::Runtime, plan: &Arc<Plan>) -> u64 {
    rt.block_on(async {
        let mut s = plan.stream();
        let mut n = 0;
        while let Some(b) = s.next().await {
            n += b.unwrap().num_rows() as u64;
        }
        n
    })
}

fn scan_with(rt: &tokio::runtime::Runtime, plan: &Arc<Plan>, shard: Shard, opts: ScanOptions) -> u64 {
    rt.block_on(async {
        let mut s = plan.source().scan(shard, opts);
        let mut n = 0;
        while let Some(b) = s.next().await {
            n += b.unwrap().num_rows() as u64;
        }
        n
    })
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bytes = corpus(d);
    let rt = pretext::cli::runtime().unwrap();
    let docs = (FILES * DOCS_PER_FILE) as u64;

    let mut g = c.benchmark_group("lake");
    g.sample_size(10).measurement_time(Duration::from_secs(10)).throughput(Throughput::Bytes(bytes));
    let local = plan(&rt, d, "name: b\nsource: { path: corpus }\ntask: { mlm: { seq_len: 128 } }\n");
    assert_eq!(scan_all(&rt, &local), docs);
    g.bench_function("scan_local", |b| b.iter(|| scan_all(&rt, &local)));
    g.bench_function("scan_local_shuffled", |b| b.iter(|| scan_shuffled(&rt, &local)));
    // One rank of four: opens only the row groups of its block.
    let quarter = Shard { rank: 1, world_size: 4 };
    assert_eq!(scan_shard(&rt, &local, quarter), docs / 4);
    g.bench_function("scan_local_rank_1_of_4", |b| b.iter(|| scan_shard(&rt, &local, quarter)));
    // The same source read file by file (a `sql` source), every rank reading every row.
    let by_file = plan(
        &rt,
        d,
        "name: b\nsource: { path: corpus, sql: 'SELECT * FROM source' }\ntask: { mlm: { seq_len: 128 } }\n",
    );
    assert_eq!(scan_all(&rt, &by_file), docs);
    g.bench_function("scan_local_by_file", |b| b.iter(|| scan_all(&rt, &by_file)));
    let server = server();
    if let Some(m) = &server {
        let endpoint = format!("http://127.0.0.1:{}", m.port);
        std::env::set_var("AWS_ACCESS_KEY_ID", "bench");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "bench");
        let store = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name("lake")
            .with_endpoint(&endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id("bench")
            .with_secret_access_key("bench")
            .build()
            .unwrap();
        if m.name == "moto" {
            // moto creates a bucket on an unsigned PUT (s3s-fs has it as a directory).
            let mut s = std::net::TcpStream::connect(("127.0.0.1", m.port)).unwrap();
            use std::io::{Read, Write};
            write!(
                s,
                "PUT /lake HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                m.port
            )
            .unwrap();
            let mut reply = String::new();
            let _ = s.read_to_string(&mut reply);
        }
        rt.block_on(async {
            for f in 0..FILES {
                let name = format!("part-{f:02}.parquet");
                let data = std::fs::read(d.join("corpus").join(&name)).unwrap();
                store.put(&format!("corpus/{name}").into(), PutPayload::from(data)).await.unwrap();
            }
        });
        let remote = plan(
            &rt,
            d,
            &format!("name: b\nsource: {{ path: 's3://lake/corpus', storage_options: {{ endpoint: '{endpoint}', allow_http: true, region: us-east-1 }} }}\ntask: {{ mlm: {{ seq_len: 128 }} }}\n"),
        );
        assert_eq!(scan_all(&rt, &remote), docs);
        g.bench_function("scan_s3", |b| b.iter(|| scan_all(&rt, &remote)));
        // The pipeline end to end, from the store and from disk: reading overlaps the work.
        g.bench_function("pass_local", |b| b.iter(|| pass(&rt, &local)));
        g.bench_function("pass_s3", |b| b.iter(|| pass(&rt, &remote)));
        g.bench_function("scan_s3_shuffled", |b| b.iter(|| scan_shuffled(&rt, &remote)));
        // The server's floor: every file fetched whole, one after another, by object_store.
        g.bench_function("get_s3_whole_files_4_at_once", |b| {
            b.iter(|| {
                rt.block_on(async {
                    let gets = (0..FILES).map(|f| {
                        let key = format!("corpus/part-{f:02}.parquet");
                        let store = &store;
                        async move { store.get(&key.as_str().into()).await.unwrap().bytes().await.unwrap().len() }
                    });
                    futures::stream::iter(gets).buffer_unordered(4).collect::<Vec<_>>().await.iter().sum::<usize>()
                })
            })
        });
        g.bench_function("get_s3_whole_files", |b| {
            b.iter(|| {
                rt.block_on(async {
                    let mut n = 0;
                    for f in 0..FILES {
                        let key = format!("corpus/part-{f:02}.parquet");
                        n += store.get(&key.as_str().into()).await.unwrap().bytes().await.unwrap().len();
                    }
                    n
                })
            })
        });
    }
    g.finish();

    // Restoring a cursor: time to the first batch after it, early, midway and late in a pass.
    let yaml = "name: b\nsource: { path: corpus }\ntask: { mlm: { seq_len: 128 } }\nstream: { batch_size: 64, shuffle: { window_rows: 4096 } }\n";
    let p = plan(&rt, d, yaml);
    let cursors: Vec<StreamCursor> = rt.block_on(async {
        let s = p.pass_from(Split::All, StreamCursor::start(0, 1));
        s.map(|r| r.unwrap().1).collect::<Vec<_>>().await
    });
    let mut g = c.benchmark_group("cursor");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    g.bench_function("first_batch_from_start", |b| {
        b.iter(|| {
            rt.block_on(async { p.pass_from(Split::All, StreamCursor::start(0, 1)).next().await.unwrap().unwrap() })
        })
    });
    for pct in [10usize, 50, 90] {
        let cursor = cursors[cursors.len() * pct / 100].clone();
        g.bench_function(format!("restore_at_{pct}pct"), |b| {
            b.iter(|| rt.block_on(async { p.pass_from(Split::All, cursor.clone()).next().await.unwrap().unwrap() }))
        });
    }
    g.finish();

    // Shuffle quality: mean |source position difference| of neighbouring output examples.
    for (label, shuffle) in [
        ("shuffle: false", "false"),
        ("window 1,024", "{ window_rows: 1024 }"),
        ("window 16,384", "{ window_rows: 16384 }"),
    ] {
        let yaml = format!("name: b\nsource: {{ path: corpus, key_column: id }}\ntask: {{ mlm: {{ seq_len: 128, packing: false }} }}\nstream: {{ batch_size: 4096, shuffle: {shuffle} }}\n");
        let p = plan(&rt, d, &yaml);
        let keys: Vec<i64> = rt.block_on(async {
            let s = p.pass_from(Split::All, StreamCursor::start(0, 1));
            s.map(|r| {
                let b = r.unwrap().0;
                b.column(0)
                    .as_primitive::<arrow::datatypes::UInt64Type>()
                    .values()
                    .iter()
                    .map(|&k| k as i64)
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
            .await
            .concat()
        });
        let mean = keys.windows(2).map(|w| (w[1] - w[0]).unsigned_abs() as f64).sum::<f64>() / (keys.len() - 1) as f64;
        println!(
            "shuffle quality, {label}: mean distance between neighbours {mean:.0} source positions (uniform permutation: {:.0}; {} examples)",
            keys.len() as f64 / 3.0,
            keys.len()
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
