//! The command line end to end: exit codes, messages, exports, resume, preview, schema.

mod common;

use common::*;

fn corpus(dir: &std::path::Path) {
    write_parquet(&dir.join("data/lang=en/part-0.parquet"), &documents(300, 1));
    write_parquet(&dir.join("data/lang=de/part-0.parquet"), &documents(200, 2));
}

const BASIC: &str = "name: basic\nsource: { path: data, key_column: id }\ntask: { mlm: { seq_len: 32 } }\nstream: { batch_size: 50 }\nexport: { rows_per_file: 300, row_group_rows: 128 }\n";

#[test]
fn every_committed_pipeline_validates() {
    let mut files: Vec<String> = std::fs::read_dir(repo().join("pipelines"))
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .filter(|p| p.ends_with(".yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let mut args = vec!["validate"];
    args.extend(files.iter().map(String::as_str));
    let o = pretext(&args, &repo());
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(stdout(&o).lines().filter(|l| l.starts_with("ok: ")).count(), files.len());
}

#[test]
fn validate_reports_problems_with_exit_code_1() {
    let t = tempdir();
    let p = pipeline(t.path(), "bad.yaml", "name: x\nsource: { path: data }\ntask: { mlm: { mask_prob: 1.5 } }\n");
    let o = pretext(&["validate", p.to_str().unwrap()], t.path());
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("bad.yaml:3:27: task.mlm.mask_prob: 1.5 is out of range"), "{err}");
}

#[test]
fn validate_verbose_prints_the_resolved_pipeline_with_its_retry_budgets() {
    let t = tempdir();
    write_parquet(&t.path().join("data/a.parquet"), &documents(4, 1));
    let p = pipeline(t.path(), "p.yaml", "name: x\nsource: { path: data }\ntask: { mlm: { seq_len: 16 } }\n");
    let set = ["--set", "source.retry.timeout_s=300"];
    let o = pretext(&[&["validate", "--verbose", p.to_str().unwrap()][..], &set].concat(), t.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let json = &out[out.find('{').unwrap()..];
    let resolved: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(resolved["source"]["retry"]["timeout_s"], 300.0, "{out}");
    assert_eq!(resolved["export"]["retry"]["timeout_s"], 120.0, "{out}");
    assert_eq!(resolved["export"]["retry"]["max_backoff_s"], 10.0, "{out}");
    assert_eq!(resolved["task"]["mlm"]["mask_prob"], 0.15, "{out}");
}

#[test]
fn export_writes_parts_manifest_and_hf_metadata() {
    let t = tempdir();
    corpus(t.path());
    let p = pipeline(t.path(), "p.yaml", BASIC);
    let o = pretext(&["export", p.to_str().unwrap(), "--out", "out"], t.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("exported "), "{}", stderr(&o));
    let out = t.path().join("out");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("_manifest.json")).unwrap()).unwrap();
    let parts = manifest["parts"].as_array().unwrap();
    assert!(parts.len() >= 2, "{manifest}");
    assert!(!out.join("_progress.json").exists());
    let batches = read_export(&out);
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows as u64, manifest["rows"].as_u64().unwrap());
    assert_eq!(parts[0]["rows"], 300);
    let schema = batches[0].schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["example_key", "input_ids", "attention_mask", "labels", "special_tokens_mask"]);
    let f = std::fs::File::open(out.join("part-00000.parquet")).unwrap();
    let file_schema =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f).unwrap().schema().clone();
    assert!(file_schema.metadata()["huggingface"].contains("\"length\":32"), "{:?}", file_schema.metadata());
    assert_eq!(manifest["source"]["files"].as_array().unwrap().len(), 2);
    assert_eq!(manifest["source"]["stats"]["documents"], 500);
    // Exporting again into a finished export is refused, and says what to do.
    let o = pretext(&["export", p.to_str().unwrap(), "--out", "out"], t.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("already holds a finished export"), "{}", stderr(&o));
}

#[test]
fn resume_after_interruption_gives_identical_bytes() {
    let t = tempdir();
    corpus(t.path());
    let p = pipeline(t.path(), "p.yaml", &BASIC.replace("rows_per_file: 300", "rows_per_file: 97"));
    let o = pretext(
        &["export", p.to_str().unwrap(), "--out", "full", "--set", "stream.shuffle={window_rows: 100}"],
        t.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let full = dir_files(&t.path().join("full"));
    // Simulate a crash after two parts: keep them, and the progress file that listed them.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.path().join("full/_manifest.json")).unwrap()).unwrap();
    let cut = t.path().join("cut");
    let staging = cut.join(".pretext-partial");
    std::fs::create_dir_all(&staging).unwrap();
    let parts = manifest["parts"].as_array().unwrap();
    assert!(parts.len() > 3);
    for part in &parts[..2] {
        let name = part["file"].as_str().unwrap();
        std::fs::copy(t.path().join("full").join(name), staging.join(name)).unwrap();
    }
    std::fs::write(staging.join(".part-00002.parquet.tmp"), b"torn").unwrap();
    let progress = serde_json::json!({
        "pipeline_hash": manifest["pipeline_hash"],
        "fingerprint": manifest["fingerprint"],
        "pipeline": manifest["pipeline"],
        "parts": parts[..2],
    });
    std::fs::write(staging.join("_progress.json"), serde_json::to_vec(&progress).unwrap()).unwrap();
    // A reader listing the directory sees no dataset while the export is unfinished.
    assert!(dir_files(&cut).is_empty());
    // Without --resume: refused. With a different pipeline: refused, naming the field.
    let o = pretext(
        &["export", p.to_str().unwrap(), "--out", "cut", "--set", "stream.shuffle={window_rows: 100}"],
        t.path(),
    );
    assert!(stderr(&o).contains("--resume"), "{}", stderr(&o));
    let o = pretext(
        &[
            "export",
            p.to_str().unwrap(),
            "--out",
            "cut",
            "--resume",
            "--set",
            "stream.shuffle={window_rows: 100}",
            "--set",
            "seed=1",
        ],
        t.path(),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("`seed`"), "{}", stderr(&o));
    let o = pretext(
        &["export", p.to_str().unwrap(), "--out", "cut", "--resume", "--set", "stream.shuffle={window_rows: 100}"],
        t.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("(2 resumed)"), "{}", stderr(&o));
    assert_eq!(dir_files(&cut), full);
    assert!(!staging.exists());
    // Resuming a finished export is a no-op; with other data it is refused.
    let o = pretext(
        &["export", p.to_str().unwrap(), "--out", "cut", "--resume", "--set", "stream.shuffle={window_rows: 100}"],
        t.path(),
    );
    assert!(o.status.success() && stderr(&o).contains("nothing to do"), "{}", stderr(&o));
    write_parquet(&t.path().join("data/lang=en/part-1.parquet"), &documents(5, 9));
    let o = pretext(
        &["export", p.to_str().unwrap(), "--out", "cut", "--resume", "--set", "stream.shuffle={window_rows: 100}"],
        t.path(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("different pipeline or data"), "{}", stderr(&o));
}

#[test]
fn a_failure_after_the_first_part_keeps_it_for_resume_but_hides_it() {
    let t = tempdir();
    write_parquet(&t.path().join("data/a.parquet"), &documents(200, 1));
    // The second file's key column has a null: the export fails after finishing parts of the first.
    std::fs::create_dir_all(t.path().join("data")).unwrap();
    let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("id", arrow::datatypes::DataType::Int64, true),
        arrow::datatypes::Field::new("text", arrow::datatypes::DataType::Utf8, true),
    ]));
    let batch = arrow::array::RecordBatch::try_new(
        schema.clone(),
        vec![
            std::sync::Arc::new(arrow::array::Int64Array::from(vec![Some(1000), None])),
            std::sync::Arc::new(arrow::array::StringArray::from(vec!["a b c", "d e f"])),
        ],
    )
    .unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(t.path().join("data/b.parquet")).unwrap(),
        schema,
        None,
    )
    .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let p = pipeline(t.path(), "p.yaml", "name: f\nsource: { path: data, key_column: id }\ntask: { mlm: { seq_len: 16 } }\nexport: { rows_per_file: 100 }\n");
    let o = pretext(&["export", p.to_str().unwrap(), "--out", "out"], t.path());
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("key column `id` in `b.parquet`: 1 null value(s)"), "{err}");
    assert!(err.contains("--resume"), "{err}");
    assert!(dir_files(&t.path().join("out")).is_empty(), "parts visible after a failure");
}

#[test]
fn preview_shows_masked_tokens() {
    let t = tempdir();
    corpus(t.path());
    let p = pipeline(t.path(), "p.yaml", BASIC);
    let o = pretext(&["preview", p.to_str().unwrap(), "-n", "3"], t.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert_eq!(out.matches("--- example ").count(), 3, "{out}");
    assert!(out.contains("[MASK="), "{out}");
    assert!(out.contains("[CLS]"), "{out}");
}

#[test]
fn committed_schemas_are_fresh() {
    for (name, text) in pretext::schemas::generated() {
        let committed = std::fs::read_to_string(repo().join("schemas").join(name)).unwrap_or_default();
        assert!(committed == text, "schemas/{name} is stale: run `cargo run -- schema --write`");
    }
}

#[test]
fn quickstart_exports() {
    let t = tempdir();
    let o = pretext(&["export", repo().join("pipelines/quickstart.yaml").to_str().unwrap(), "--out", "q"], t.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let q = t.path().join("q");
    assert!(q.join("tokenizer.json").is_file());
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(q.join("_manifest.json")).unwrap()).unwrap();
    assert!(manifest["rows"].as_u64().unwrap() > 500, "{manifest}");
    assert!(manifest["source"]["stats"]["skipped_null_text"].as_u64().unwrap() > 0);
}

#[test]
fn a_directory_in_use_is_refused_and_a_killed_holder_leaves_no_lock() {
    let t = tempdir();
    corpus(t.path());
    let train =
        "train: { model: { encoder: { layers: 1, hidden: 16, heads: 2 } }, schedule: { warmup_steps: 1 }, steps: 2 }\n";
    let p = pipeline(t.path(), "p.yaml", &format!("{BASIC}{train}"));
    let p = p.to_str().unwrap();
    // Another process's export or run holds the directory (here: this test process).
    for (dir, args, what) in [
        ("out", vec!["export", p, "--out", "out", "--quiet"], "`pretext export` into `out`"),
        ("run", vec!["train", p, "--run-dir", "run", "--quiet"], "`pretext train`"),
    ] {
        let held = pretext::ground::lock::DirLock::acquire(&t.path().join(dir), "test", "").unwrap();
        let o = pretext(&args, t.path());
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains(&format!("is in use by another {what} (pid {})", std::process::id())), "{err}");
        assert!(err.contains("wait for that"), "{err}");
        // Nothing was written into the directory.
        assert!(!t.path().join(dir).exists(), "{dir} was touched");
        drop(held);
        let o = pretext(&args, t.path());
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(!pretext::ground::lock::lock_path(&t.path().join(dir)).exists(), "the lock file is removed at the end");
    }
    // A SIGKILLed export leaves its lock file behind, but not its lock: the next one proceeds.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pretext"))
        .args(["export", p, "--out", "killed", "--quiet"])
        .current_dir(t.path())
        .spawn()
        .unwrap();
    let lock = pretext::ground::lock::lock_path(&t.path().join("killed"));
    let started = std::time::Instant::now();
    while !lock.exists() && started.elapsed().as_secs() < 30 {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let again = pretext::ground::lock::DirLock::acquire(&t.path().join("killed"), "test", "").unwrap();
    drop(again);
}
