//! The data lake: Delta tables (versions, time travel, partition pruning, the version recorded
//! and checked on resume) and object stores (a real S3-compatible server on loopback: moto).
//! `.ci/run` installs moto and sets `PRETEXT_REQUIRE_S3=1`, so there the S3 tests cannot skip.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

// ---------------------------------------------------------------- Delta tables written by hand

/// The table's schema: `id` and `text` in the data files, `lang` a partition column.
fn schema_string() -> String {
    json!({"type": "struct", "fields": [
        {"name": "id", "type": "long", "nullable": false, "metadata": {}},
        {"name": "text", "type": "string", "nullable": true, "metadata": {}},
        {"name": "lang", "type": "string", "nullable": true, "metadata": {}},
    ]})
    .to_string()
}

/// Writes a data file of `docs` at `rel` inside the table and returns its `add` action.
fn add(table: &Path, rel: &str, docs: &[(i64, Option<String>)], lang: &str) -> serde_json::Value {
    let path = table.join(rel);
    write_parquet(&path, docs);
    let size = std::fs::metadata(&path).unwrap().len();
    json!({"add": {"path": rel, "partitionValues": {"lang": lang}, "size": size,
        "modificationTime": 1_700_000_000_000u64, "dataChange": true}})
}

fn remove(rel: &str) -> serde_json::Value {
    json!({"remove": {"path": rel, "deletionTimestamp": 1_700_000_100_000u64, "dataChange": true}})
}

/// Writes commit `version` of the table's log.
fn commit(table: &Path, version: u64, actions: &[serde_json::Value]) {
    let log = table.join("_delta_log");
    std::fs::create_dir_all(&log).unwrap();
    let mut text = String::new();
    for a in actions {
        text.push_str(&a.to_string());
        text.push('\n');
    }
    std::fs::write(log.join(format!("{version:020}.json")), text).unwrap();
}

/// Version 0: `en` (30 documents) and `de` (20); version 1 adds 10 `en` documents and removes
/// the `de` file. Returns an RFC 3339 time between the two commits.
/// The actions of a first commit: protocol, metadata (partitioned by `lang`), then `adds`.
fn create(adds: Vec<serde_json::Value>) -> Vec<serde_json::Value> {
    let mut v = vec![
        json!({"protocol": {"minReaderVersion": 1, "minWriterVersion": 2}}),
        json!({"metaData": {"id": "00000000-0000-0000-0000-000000000001", "format": {"provider": "parquet", "options": {}},
            "schemaString": schema_string(), "partitionColumns": ["lang"], "configuration": {}, "createdTime": 1_700_000_000_000u64}}),
    ];
    v.extend(adds);
    v
}

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

/// A moto S3 server on a free loopback port, stopped at drop.
struct S3 {
    child: Child,
    port: u16,
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl S3 {
    /// Starts the server; `None` (test skipped) when moto is missing and CI does not require it.
    fn start(enforce_auth: bool) -> Option<S3> {
        let ready = Command::new("python3")
            .args(["-c", "import moto.server, flask, flask_cors"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !ready {
            assert!(std::env::var_os("PRETEXT_REQUIRE_S3").is_none(), "moto[server] is required here but missing");
            eprintln!("skipped: python3 with moto[server] is not available (pip install 'moto[server]')");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut cmd = Command::new("python3");
        cmd.args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if enforce_auth {
            cmd.env("INITIAL_NO_AUTH_ACTION_COUNT", "0");
        }
        let child = cmd.spawn().unwrap();
        let s3 = S3 { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto did not start on port {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(s3)
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A raw, unsigned request (moto accepts them without auth enforcement).
    fn request(&self, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.port,
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        let text = String::from_utf8_lossy(&out);
        let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body_at = out.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4).unwrap_or(out.len());
        (code, out[body_at..].to_vec())
    }

    fn create_bucket(&self, bucket: &str) {
        let (code, body) = self.request("PUT", &format!("/{bucket}"), b"");
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    }

    /// Uploads every file under `dir` to `bucket/prefix/…`.
    fn upload_dir(&self, dir: &Path, bucket: &str, prefix: &str) {
        let mut stack = vec![dir.to_path_buf()];
        while let Some(p) = stack.pop() {
            for e in std::fs::read_dir(&p).unwrap() {
                let e = e.unwrap().path();
                if e.is_dir() {
                    stack.push(e);
                } else {
                    let rel = e.strip_prefix(dir).unwrap().to_string_lossy().replace('\\', "/");
                    let (code, body) =
                        self.request("PUT", &format!("/{bucket}/{prefix}/{rel}"), &std::fs::read(&e).unwrap());
                    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
                }
            }
        }
    }

    /// Reads an object back, signed (objects are private, so unsigned reads are refused).
    fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        use object_store::ObjectStoreExt;
        let store = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id("test")
            .with_secret_access_key("test-secret")
            .build()
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let r = store.get(&object_store::path::Path::from(key)).await.ok()?;
            r.bytes().await.ok().map(|b| b.to_vec())
        })
    }

    /// The keys under `prefix`, sorted.
    fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let (code, body) = self.request("GET", &format!("/{bucket}?list-type=2&prefix={prefix}"), b"");
        assert_eq!(code, 200);
        let text = String::from_utf8_lossy(&body).to_string();
        let mut keys: Vec<String> =
            text.split("<Key>").skip(1).filter_map(|s| s.split_once("</Key>").map(|(k, _)| k.to_string())).collect();
        keys.sort();
        keys
    }

    /// The parts of the finished export at `lake/<prefix>`, checking that nothing but the
    /// dataset is visible there.
    fn finished_parts(&self, prefix: &str) -> Vec<(String, Vec<u8>)> {
        let keys = self.keys("lake", &format!("{prefix}/"));
        assert!(keys.iter().all(|k| !k.contains(".pretext-partial")), "{keys:?}");
        assert!(keys.contains(&format!("{prefix}/_manifest.json")), "{keys:?}");
        keys.iter()
            .filter_map(|k| {
                k.strip_prefix(&format!("{prefix}/"))
                    .filter(|n| n.starts_with("part-"))
                    .map(|n| (n.to_string(), self.get("lake", k).unwrap()))
            })
            .collect()
    }

    /// Options for pipelines reading or writing this server.
    fn options(&self) -> String {
        format!("{{ endpoint: '{}', allow_http: true, region: us-east-1 }}", self.endpoint())
    }
}

/// Runs the CLI with test credentials in the environment.
fn pretext_s3(args: &[&str], cwd: &Path, key: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pretext"))
        .args(args)
        .current_dir(cwd)
        .env("AWS_ACCESS_KEY_ID", key)
        .env("AWS_SECRET_ACCESS_KEY", "test-secret")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("RANK")
        .env_remove("WORLD_SIZE")
        .output()
        .unwrap()
}

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
    let o = run("s3://missing-bucket/c", "test");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("s3://missing-bucket/c"), "{}", stderr(&o));
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
    let o = pretext_s3(&["export", p.to_str().unwrap(), "--out", "out", "--quiet"], d, "AKIAWRONGWRONGWRONG1");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("credentials"), "{}", stderr(&o));
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
