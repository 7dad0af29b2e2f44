//! The data lake: Delta tables (versions, time travel, partition pruning, the version recorded
//! and checked on resume) and object stores (a real S3-compatible server on loopback: moto).
//! `.ci/run` installs moto and sets `PRETEXT_REQUIRE_S3=1`, so there the S3 tests cannot skip.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::delta::{add, commit, create};
use common::s3::{pretext_s3, S3};
use common::*;
use serde_json::json;

// ---------------------------------------------------------------- Delta tables written by hand

fn remove(rel: &str) -> serde_json::Value {
    json!({"remove": {"path": rel, "deletionTimestamp": 1_700_000_100_000u64, "dataChange": true}})
}

/// Version 0: `en` (30 documents) and `de` (20); version 1 adds 10 `en` documents and removes
/// the `de` file. Returns an RFC 3339 time between the two commits.
fn make_table(table: &Path) -> String {
    let v0 = create(vec![
        add(table, "lang=en/part-0.parquet", &documents(30, 1), "en"),
        add(
            table,
            "lang=de/part-0.parquet",
            &documents(20, 2).into_iter().map(|(i, t)| (i + 100, t)).collect::<Vec<_>>(),
            "de",
        ),
    ]);
    commit(table, 0, &v0);
    std::thread::sleep(Duration::from_millis(1100));
    let between = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    std::thread::sleep(Duration::from_millis(1100));
    let v1 = vec![
        add(
            table,
            "lang=en/part-1.parquet",
            &documents(10, 3).into_iter().map(|(i, t)| (i + 200, t)).collect::<Vec<_>>(),
            "en",
        ),
        remove("lang=de/part-0.parquet"),
    ];
    commit(table, 1, &v1);
    between
}

fn export(dir: &Path, source: &str, extra: &[&str]) -> (Output, serde_json::Value) {
    let yaml = format!(
        "name: lake\nsource: {source}\ntask: {{ mlm: {{ seq_len: 16, packing: false }} }}\nexport: {{ rows_per_file: 7 }}\n"
    );
    let p = pipeline(dir, "p.yaml", &yaml);
    let _ = std::fs::remove_dir_all(dir.join("out"));
    let mut args = vec!["export", p.to_str().unwrap(), "--out", "out", "--quiet"];
    args.extend_from_slice(extra);
    let o = pretext(&args, dir);
    let m = std::fs::read(dir.join("out/_manifest.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    (o, m)
}

fn ids(m: &serde_json::Value) -> u64 {
    m["rows"].as_u64().unwrap_or(u64::MAX)
}

#[test]
fn delta_versions_and_time_travel_read_their_own_rows() {
    let t = tempdir();
    let d = t.path();
    let between = make_table(&d.join("table"));
    for (source, rows, version) in [
        ("{ path: table }", 40, 1),
        ("{ path: table, format: delta }", 40, 1),
        ("{ path: table, version: 0 }", 50, 0),
        ("{ path: table, version: 1 }", 40, 1),
        (&*format!("{{ path: table, as_of: '{between}' }}"), 50, 0),
    ] {
        let (o, m) = export(d, source, &[]);
        assert!(o.status.success(), "{source}: {}", stderr(&o));
        assert_eq!(ids(&m), rows, "{source}");
        assert_eq!(m["source"]["format"], "delta", "{source}");
        assert_eq!(m["source"]["delta_version"], version, "{source}");
    }
    // Keys come from the key column, so a version's examples are the same in any later read.
    let (_, m0) = export(d, "{ path: table, version: 0, key_column: id }", &[]);
    let keys0 = export_keys(&d.join("out"));
    assert_eq!(ids(&m0), 50);
    let want: Vec<u64> = (0..30).chain(100..120).collect();
    let mut sorted = keys0.clone();
    sorted.sort();
    assert_eq!(sorted, want);
}

fn export_keys(dir: &Path) -> Vec<u64> {
    use arrow::array::AsArray;
    read_export(dir)
        .iter()
        .flat_map(|b| {
            b.column_by_name("example_key").unwrap().as_primitive::<arrow::datatypes::UInt64Type>().values().to_vec()
        })
        .collect()
}

#[test]
fn delta_partition_filters_prune_files() {
    let t = tempdir();
    let d = t.path();
    make_table(&d.join("table"));
    let (o, m) = export(d, "{ path: table, version: 0, sql: \"SELECT text FROM source WHERE lang = 'de'\" }", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(ids(&m), 20);
    let stats = &m["source"]["stats"];
    assert_eq!(stats["files_pruned"], 1, "{stats}");
    assert_eq!(stats["files_read"], 1, "{stats}");
    // Hive directories prune the same way.
    write_parquet(&d.join("hive/lang=en/a.parquet"), &documents(30, 1));
    write_parquet(&d.join("hive/lang=de/a.parquet"), &documents(20, 2));
    let (o, m) = export(d, "{ path: hive, sql: \"SELECT text FROM source WHERE lang = 'en'\" }", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!((ids(&m), m["source"]["stats"]["files_pruned"].as_u64()), (30, Some(1)));
}

#[test]
fn delta_errors_name_the_versions_and_the_fix() {
    let t = tempdir();
    let d = t.path();
    make_table(&d.join("table"));
    let (o, _) = export(d, "{ path: table, version: 7 }", &[]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("has no version 7") && e.contains("versions 0 to 1"), "{e}");
    let (o, _) = export(d, "{ path: table, as_of: '2001-01-01T00:00:00Z' }", &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no version committed at or before"), "{}", stderr(&o));
    let (o, _) = export(d, "{ path: table, as_of: 'yesterday' }", &[]);
    assert!(stderr(&o).contains("RFC 3339"), "{}", stderr(&o));
    let (o, _) = export(d, "{ path: table, version: 0, as_of: '2001-01-01T00:00:00Z' }", &[]);
    assert!(stderr(&o).contains("both choose the table version"), "{}", stderr(&o));
    std::fs::create_dir_all(d.join("plain")).unwrap();
    write_parquet(&d.join("plain/a.parquet"), &documents(3, 1));
    let (o, _) = export(d, "{ path: plain, format: delta }", &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not a Delta table"), "{}", stderr(&o));
    let (o, _) = export(d, "{ path: plain, version: 3, format: parquet }", &[]);
    assert!(stderr(&o).contains("`format` is not `delta`"), "{}", stderr(&o));
}

#[test]
fn resume_refuses_a_new_table_version_unless_allowed() {
    let t = tempdir();
    let d = t.path();
    let table = d.join("table");
    // Only version 0 exists while the export starts.
    let v0 = create(vec![add(&table, "lang=en/part-0.parquet", &documents(30, 1), "en")]);
    commit(&table, 0, &v0);
    let (o, m) = export(d, "{ path: table }", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Make an interrupted export of it: its first part and a progress file listing it.
    let cut = d.join("cut");
    let staging = cut.join(".pretext-partial");
    std::fs::create_dir_all(&staging).unwrap();
    let part = &m["parts"][0];
    let name = part["file"].as_str().unwrap();
    std::fs::copy(d.join("out").join(name), staging.join(name)).unwrap();
    let progress = json!({
        "pipeline_hash": m["pipeline_hash"], "fingerprint": m["fingerprint"],
        "settings_fingerprint": m["settings_fingerprint"], "data": m["source"]["data"],
        "pipeline": m["pipeline"], "parts": [part],
    });
    std::fs::write(staging.join("_progress.json"), serde_json::to_vec(&progress).unwrap()).unwrap();
    // A new version lands.
    commit(&table, 1, &[add(&table, "lang=en/part-1.parquet", &documents(10, 3), "en")]);
    let p = d.join("p.yaml");
    let o = pretext(&["export", p.to_str().unwrap(), "--out", "cut", "--resume", "--quiet"], d);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("version 0") && e.contains("version 1") && e.contains("--allow-new-data"), "{e}");
    let o = pretext(&["export", p.to_str().unwrap(), "--out", "cut", "--resume", "--allow-new-data", "--quiet"], d);
    assert!(o.status.success(), "{}", stderr(&o));
    let m2: serde_json::Value = serde_json::from_slice(&std::fs::read(cut.join("_manifest.json")).unwrap()).unwrap();
    assert_eq!(m2["source"]["delta_version"], 1);
    // Pinned to the version it started on, the resume is exact.
    let o = pretext(&["export", p.to_str().unwrap(), "--out", "cut2", "--quiet", "--set", "source.version=0"], d);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        dir_files(&d.join("cut2")).iter().filter(|(n, _)| n.starts_with("part-")).count(),
        m["parts"].as_array().unwrap().len()
    );
}

// ---------------------------------------------------------------- S3 through a local server

fn part_files(files: Vec<(String, Vec<u8>)>) -> Vec<(String, Vec<u8>)> {
    files.into_iter().filter(|(n, _)| n.starts_with("part-")).collect()
}

#[test]
fn s3_sources_and_exports_match_local_ones_and_resume_there() {
    let Some(s3) = S3::start(false) else { return };
    let t = tempdir();
    let d = t.path();
    write_parquet(&d.join("corpus/lang=en/a.parquet"), &documents(120, 1));
    write_parquet(&d.join("corpus/lang=de/b.parquet"), &documents(80, 2));
    make_table(&d.join("table"));
    s3.create_bucket("lake");
    s3.upload_dir(&d.join("corpus"), "lake", "corpus");
    s3.upload_dir(&d.join("table"), "lake", "tables/t");
    let opts = s3.options();
    let run = |name: &str, source: &str, out: &str, extra: &[&str]| {
        let yaml = format!(
            "name: s3\nsource: {source}\ntask: {{ mlm: {{ seq_len: 32 }} }}\nstream: {{ shuffle: {{ window_rows: 50 }} }}\nexport: {{ rows_per_file: 40, storage_options: {opts} }}\n"
        );
        let p = pipeline(d, name, &yaml);
        let mut args = vec!["export", p.to_str().unwrap(), "--out", out, "--quiet"];
        args.extend_from_slice(extra);
        pretext_s3(&args, d, "test")
    };
    // A Parquet corpus: the same bytes as from local disk.
    let o = run("local.yaml", "{ path: corpus }", "local", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let local = part_files(dir_files(&d.join("local")));
    assert!(local.len() > 2);
    let src = format!("{{ path: 's3://lake/corpus', storage_options: {opts} }}");
    let o = run("remote.yaml", &src, "from-s3", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(part_files(dir_files(&d.join("from-s3"))), local);
    // A glob over the bucket, and SQL on its partitions.
    let src = format!("{{ path: 's3://lake/corpus/lang=*/*.parquet', storage_options: {opts}, sql: \"SELECT text FROM source WHERE lang = 'de'\" }}");
    let o = run("glob.yaml", &src, "glob", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("glob/_manifest.json")).unwrap()).unwrap();
    assert_eq!(m["source"]["stats"]["documents"], 80);
    assert_eq!(m["source"]["stats"]["files_pruned"], 1);
    // A Delta table in the bucket, at each version.
    for (version, docs) in [(0, 50), (1, 40)] {
        let src = format!("{{ path: 's3://lake/tables/t', version: {version}, storage_options: {opts} }}");
        let o = run("delta.yaml", &src, &format!("delta{version}"), &[]);
        assert!(o.status.success(), "{}", stderr(&o));
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.join(format!("delta{version}/_manifest.json"))).unwrap()).unwrap();
        assert_eq!(
            (m["source"]["stats"]["documents"].as_u64(), m["source"]["delta_version"].as_u64()),
            (Some(docs), Some(version))
        );
    }
    // Export into the bucket: the same parts, nothing but the dataset visible at the end.
    let o = run("local.yaml", "{ path: corpus }", "s3://lake/exports/full", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(s3.finished_parts("exports/full"), local);
    // A second export there is refused; an interrupted one resumes to the same bytes.
    let o = run("local.yaml", "{ path: corpus }", "s3://lake/exports/full", &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("already holds a finished export"), "{}", stderr(&o));
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(d.join("local/_manifest.json")).unwrap()).unwrap();
    let parts = m["parts"].as_array().unwrap();
    for part in &parts[..2] {
        let name = part["file"].as_str().unwrap();
        let (code, _) = s3.request(
            "PUT",
            &format!("/lake/exports/cut/.pretext-partial/{name}"),
            &std::fs::read(d.join("local").join(name)).unwrap(),
        );
        assert_eq!(code, 200);
    }
    let progress = json!({
        "pipeline_hash": m["pipeline_hash"], "fingerprint": m["fingerprint"],
        "settings_fingerprint": m["settings_fingerprint"], "data": m["source"]["data"],
        "pipeline": m["pipeline"], "parts": parts[..2],
    });
    let (code, _) =
        s3.request("PUT", "/lake/exports/cut/.pretext-partial/_progress.json", &serde_json::to_vec(&progress).unwrap());
    assert_eq!(code, 200);
    let o = run("local.yaml", "{ path: corpus }", "s3://lake/exports/cut", &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--resume"), "{}", stderr(&o));
    let o = run("local.yaml", "{ path: corpus }", "s3://lake/exports/cut", &["--resume"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(s3.finished_parts("exports/cut"), local);
}

#[test]
fn s3_errors_name_the_bucket_and_what_to_check() {
    let Some(s3) = S3::start(false) else { return };
    let t = tempdir();
    let d = t.path();
    s3.create_bucket("there");
    write_parquet(&d.join("c/a.parquet"), &documents(5, 1));
    s3.upload_dir(&d.join("c"), "there", "c");
    let opts = s3.options();
    let run = |path: &str, key: &str| {
        let yaml = format!(
            "name: e\nsource: {{ path: '{path}', storage_options: {opts} }}\ntask: {{ mlm: {{ seq_len: 16 }} }}\n"
        );
        let p = pipeline(d, "e.yaml", &yaml);
        pretext_s3(&["export", p.to_str().unwrap(), "--out", "out", "--quiet"], d, key)
    };
    // What no retry can cure fails in seconds, though transient failures are retried for minutes.
    let started = std::time::Instant::now();
    let o = run("s3://missing-bucket/c", "test");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("s3://missing-bucket/c"), "{}", stderr(&o));
    assert!(started.elapsed() < Duration::from_secs(10), "a missing bucket took {:?}", started.elapsed());
    // An endpoint where nothing listens.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let yaml = format!("name: e\nsource: {{ path: 's3://there/c', storage_options: {{ endpoint: 'http://127.0.0.1:{free}', allow_http: true, region: us-east-1 }} }}\ntask: {{ mlm: {{ seq_len: 16 }} }}\n");
    let p = pipeline(d, "nobody.yaml", &yaml);
    let started = std::time::Instant::now();
    let o = pretext_s3(&["export", p.to_str().unwrap(), "--out", "out", "--quiet"], d, "test");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("did not answer") && stderr(&o).contains("endpoint"), "{}", stderr(&o));
    assert!(started.elapsed() < Duration::from_secs(10), "a dead endpoint took {:?}", started.elapsed());
    let o = run("s3://there/nothing-here", "test");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("nothing exists under"), "{}", stderr(&o));
    let o = run("s3://there/c/table", "test");
    assert_eq!(o.status.code(), Some(1));
    // An unknown storage option is named with its YAML path.
    let yaml = format!("name: e\nsource: {{ path: 's3://there/c', storage_options: {{ endpoint: '{}', colour: red }} }}\ntask: {{ mlm: {{ seq_len: 16 }} }}\n", s3.endpoint());
    let p = pipeline(d, "u.yaml", &yaml);
    let o = pretext_s3(&["export", p.to_str().unwrap(), "--out", "out", "--quiet"], d, "test");
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("source.storage_options.colour"), "{}", stderr(&o));
    // Wrong credentials: a server that checks them refuses, and the message says what to check.
    let Some(strict) = S3::start(true) else { return };
    let yaml = format!(
        "name: e\nsource: {{ path: 's3://there/c', storage_options: {} }}\ntask: {{ mlm: {{ seq_len: 16 }} }}\n",
        strict.options()
    );
    let p = pipeline(d, "w.yaml", &yaml);
    let started = std::time::Instant::now();
    let o = pretext_s3(&["export", p.to_str().unwrap(), "--out", "out", "--quiet"], d, "AKIAWRONGWRONGWRONG1");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("credentials"), "{}", stderr(&o));
    assert!(started.elapsed() < Duration::from_secs(10), "wrong credentials took {:?}", started.elapsed());
    assert!(!d.join("out").exists());
}

#[test]
fn training_records_the_table_version_and_resume_checks_it() {
    let t = tempdir();
    let d = t.path();
    let table = d.join("table");
    let v0 = create(vec![add(&table, "lang=en/part-0.parquet", &documents(60, 1), "en")]);
    commit(&table, 0, &v0);
    let yaml = "name: t\nsource: { path: table }\ntask: { mlm: { seq_len: 16 } }\nstream: { batch_size: 4 }\n\
                train: { model: { encoder: { layers: 1, hidden: 16, heads: 2 } }, schedule: { warmup_steps: 1 }, steps: 4, checkpoint: { every_steps: 2 } }\n";
    let p = pipeline(d, "t.yaml", yaml);
    let o = pretext(&["train", p.to_str().unwrap(), "--run-dir", "run", "--quiet"], d);
    assert!(o.status.success(), "{}", stderr(&o));
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("run/checkpoint-0000004/state.json")).unwrap()).unwrap();
    assert_eq!(state["data"]["delta_version"], 0, "{}", state["data"]);
    commit(&table, 1, &[add(&table, "lang=en/part-1.parquet", &documents(10, 3), "en")]);
    let more = ["--set", "train.steps=6"];
    let o =
        pretext(&[&["train", p.to_str().unwrap(), "--run-dir", "run", "--quiet", "--resume"][..], &more].concat(), d);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("version 0") && stderr(&o).contains("--allow-new-data"), "{}", stderr(&o));
    let o = pretext(
        &[&["train", p.to_str().unwrap(), "--run-dir", "run", "--quiet", "--resume", "--allow-new-data"][..], &more]
            .concat(),
        d,
    );
    assert!(o.status.success(), "{}", stderr(&o));
}
