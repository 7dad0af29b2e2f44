//! Helpers shared by the integration tests: corpora written on the fly, and the CLI binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
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
