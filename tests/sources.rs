//! Every source kind reads the same documents: Parquet file, hive directory, glob, Arrow IPC,
//! CSV and JSONL; SQL filters on partition columns.

mod common;

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use common::*;

fn export_rows(dir: &std::path::Path, source: &str) -> (u64, serde_json::Value) {
    let yaml = format!("name: s\nsource: {source}\ntask: {{ mlm: {{ seq_len: 16, packing: false }} }}\n");
    let p = pipeline(dir, "p.yaml", &yaml);
    let _ = std::fs::remove_dir_all(dir.join("out"));
    let o = pretext(&["export", p.to_str().unwrap(), "--out", "out", "--quiet"], dir);
    assert!(o.status.success(), "{source}: {}", stderr(&o));
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("out/_manifest.json")).unwrap()).unwrap();
    (m["rows"].as_u64().unwrap(), m)
}

#[test]
fn every_format_reads_the_same_rows() {
    let t = tempdir();
    let d = t.path();
    let docs = documents(40, 5);
    write_parquet(&d.join("pq/x.parquet"), &docs);
    // Arrow IPC file.
    let schema =
        Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false), Field::new("text", DataType::Utf8, true)]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(docs.iter().map(|r| r.0).collect::<Vec<_>>())),
            Arc::new(StringArray::from(docs.iter().map(|r| r.1.clone()).collect::<Vec<_>>())),
        ],
    )
    .unwrap();
    std::fs::create_dir_all(d.join("ipc")).unwrap();
    let mut w = arrow::ipc::writer::FileWriter::try_new(std::fs::File::create(d.join("ipc/x.arrow")).unwrap(), &schema)
        .unwrap();
    w.write(&batch).unwrap();
    w.finish().unwrap();
    // CSV and JSONL.
    std::fs::create_dir_all(d.join("csv")).unwrap();
    let csv: String = std::iter::once("id,text\n".to_string())
        .chain(docs.iter().map(|(i, t)| format!("{i},{}\n", t.as_ref().unwrap())))
        .collect();
    std::fs::write(d.join("csv/x.csv"), csv).unwrap();
    std::fs::create_dir_all(d.join("jsonl")).unwrap();
    let jsonl: String = docs.iter().map(|(i, t)| format!("{}\n", serde_json::json!({"id": i, "text": t}))).collect();
    std::fs::write(d.join("jsonl/x.jsonl"), jsonl).unwrap();
    for source in [
        "{ path: pq/x.parquet }",
        "{ path: pq }",
        "{ path: 'p*/*.parquet' }",
        "{ path: ipc/x.arrow }",
        "{ path: csv/x.csv }",
        "{ path: jsonl/x.jsonl }",
        "{ path: jsonl, format: jsonl }",
    ] {
        assert_eq!(export_rows(d, source).0, 40, "{source}");
    }
}

#[test]
fn hive_partitions_are_columns_for_sql() {
    let t = tempdir();
    let d = t.path();
    write_parquet(&d.join("data/lang=en/year=2024/a.parquet"), &documents(30, 1));
    write_parquet(&d.join("data/lang=de/year=2024/a.parquet"), &documents(20, 2));
    write_parquet(&d.join("data/lang=de/year=2023/a.parquet"), &documents(10, 3));
    let (rows, m) =
        export_rows(d, "{ path: data, sql: \"SELECT text FROM source WHERE lang = 'de' AND year = '2024'\" }");
    assert_eq!(rows, 20, "{m}");
    let (rows, _) = export_rows(d, "{ path: data, sql: \"SELECT text FROM source WHERE lang = 'en'\" }");
    assert_eq!(rows, 30);
    let (rows, _) = export_rows(d, "{ path: data }");
    assert_eq!(rows, 60);
}

#[test]
fn hidden_and_underscore_files_are_skipped() {
    let t = tempdir();
    let d = t.path();
    write_parquet(&d.join("data/a.parquet"), &documents(10, 1));
    write_parquet(&d.join("data/_tmp/b.parquet"), &documents(10, 2));
    write_parquet(&d.join("data/.c.parquet"), &documents(10, 3));
    assert_eq!(export_rows(d, "{ path: data }").0, 10);
}
