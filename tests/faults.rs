//! Flaky object stores: moto on loopback behind a fault-injecting proxy
//! (`tests/support/fault_proxy.py`) that answers 503 / 429, cuts GET, LIST and PUT bodies short
//! with resets, and goes down for whole seconds, reproducibly by seed. Every run under faults
//! must end byte-identical to a fault-free one, or stop with a message that says the failure
//! was transient and end identical after `--resume`; wrong endpoints, buckets and credentials
//! must still fail within seconds. `.ci/run` installs moto, so there these tests cannot skip.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use common::delta::{add, commit, create};
use common::s3::{pretext_s3, Proxy, S3};
use common::*;

/// Seeded runs per fault pattern.
const RUNS: u64 = 20;

/// A corpus of 3 files in 18 row groups, uploaded to `lake/corpus`; 24 files of 3 documents at
/// `lake/docs`; and a Delta table of two files at `lake/table`.
fn lake(s3: &S3, d: &Path) {
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        write_parquet_groups(&d.join(format!("corpus/{name}.parquet")), &documents(90, i as u64 + 1), 15);
    }
    // For training: many small files, each read whole when the scan reaches it, so reads go on
    // through the run.
    for i in 0..24 {
        write_parquet(&d.join(format!("docs/{i:02}.parquet")), &documents(3, i + 7));
    }
    let table = d.join("table");
    let v0 = create(vec![
        add(&table, "lang=en/part-0.parquet", &documents(40, 4), "en"),
        add(&table, "lang=de/part-0.parquet", &documents(30, 5), "de"),
    ]);
    commit(&table, 0, &v0);
    s3.create_bucket("lake");
    s3.upload_dir(&d.join("corpus"), "lake", "corpus");
    s3.upload_dir(&d.join("docs"), "lake", "docs");
    s3.upload_dir(&table, "lake", "table");
}

/// An export of `source` (its `storage_options` and `retry` written by the caller) to `out`.
fn export(d: &Path, name: &str, source: &str, export: &str, out: &str, extra: &[&str]) -> Output {
    let yaml = format!(
        "name: f\nsource: {source}\ntask: {{ mlm: {{ seq_len: 32 }} }}\nstream: {{ shuffle: {{ window_rows: 60 }} }}\nexport: {{ rows_per_file: 400{export} }}\n"
    );
    let p = pipeline(d, name, &yaml);
    let mut args = vec!["export", p.to_str().unwrap(), "--out", out, "--quiet"];
    args.extend_from_slice(extra);
    pretext_s3(&args, d, "test")
}

/// moto with the lake uploaded, the scratch directory, and the parts of a fault-free export of
/// `lake/corpus` (in `ref`); `None` where moto is missing and CI does not require it.
fn fault_free() -> Option<(S3, tempfile::TempDir, Vec<Part>)> {
    let s3 = S3::start(false)?;
    let t = tempdir();
    let d = t.path();
    lake(&s3, d);
    let o = export(d, "ref.yaml", &s3_source("s3://lake/corpus", &s3.options(), ""), "", "ref", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let reference = parts(&d.join("ref"));
    Some((s3, t, reference))
}

fn s3_source(path: &str, options: &str, retry: &str) -> String {
    format!("{{ path: '{path}', storage_options: {options}{retry} }}")
}

/// An export's part: its file name and bytes.
type Part = (String, Vec<u8>);

fn parts(dir: &Path) -> Vec<Part> {
    dir_files(dir).into_iter().filter(|(n, _)| n.starts_with("part-")).collect()
}

/// Adds `b`'s counts to `a`.
fn tally(a: &mut std::collections::BTreeMap<String, u64>, b: std::collections::BTreeMap<String, u64>) {
    for (k, v) in b {
        *a.entry(k).or_default() += v;
    }
}

#[test]
fn exports_from_s3_are_identical_under_mid_body_resets_of_gets_and_lists() {
    let Some((s3, t, reference)) = fault_free() else { return };
    let d = t.path();
    assert!(reference.len() > 3);
    let mut injected = Default::default();
    for seed in 0..RUNS {
        let proxy = Proxy::start(&s3, &["--seed", &seed.to_string(), "--reset-get", "0.15", "--reset-list", "0.15"]);
        let out = format!("r{seed}");
        let o = export(d, "r.yaml", &s3_source("s3://lake/corpus", &proxy.options(), ""), "", &out, &[]);
        assert!(o.status.success(), "seed {seed}: {}", stderr(&o));
        assert!(parts(&d.join(&out)) == reference, "seed {seed}: the export differs from the fault-free one");
        tally(&mut injected, proxy.injected());
    }
    // The faults happened: bodies of both kinds were cut short.
    assert!(injected.get("reset_GET").copied().unwrap_or(0) >= RUNS, "{injected:?}");
    assert!(injected.get("reset_LIST").copied().unwrap_or(0) >= 1, "{injected:?}");
}

#[test]
fn exports_to_s3_are_identical_when_a_quarter_of_all_requests_get_503_or_uploads_are_cut() {
    let Some((s3, t, reference)) = fault_free() else { return };
    let d = t.path();
    let mut injected = Default::default();
    // One export to `lake/out/<name><seed>` through a proxy with `faults`; the source is read
    // through the proxy too, or (`direct`) straight from the server.
    let mut to_s3 = |name: &str, seed: u64, faults: &[&str], direct: bool| {
        let proxy = Proxy::start(&s3, &[&["--seed", &seed.to_string()][..], faults].concat());
        let from = if direct { s3.options() } else { proxy.options() };
        let to = format!(", storage_options: {}", proxy.options());
        let out = format!("out/{name}{seed}");
        let o = export(d, "s.yaml", &s3_source("s3://lake/corpus", &from, ""), &to, &format!("s3://lake/{out}"), &[]);
        assert!(o.status.success(), "{name} seed {seed}: {}", stderr(&o));
        assert!(s3.finished_parts(&out) == reference, "{name} seed {seed}: the export differs");
        tally(&mut injected, proxy.injected());
    };
    for seed in 0..RUNS {
        to_s3("s", seed, &["--status-rate", "0.25", "--statuses", "503"], false);
    }
    // Uploads cut off half-way through their bodies.
    for seed in 0..5 {
        to_s3("p", seed, &["--reset-put", "0.15"], true);
    }
    for kind in ["status_503_GET", "status_503_PUT", "status_503_HEAD"] {
        assert!(injected.get(kind).copied().unwrap_or(0) >= 1, "{kind}: {injected:?}");
    }
    assert!(injected.get("reset_PUT").copied().unwrap_or(0) >= 1, "{injected:?}");
}

#[test]
fn delta_tables_and_training_on_s3_are_identical_under_faults() {
    let Some(s3) = S3::start(false) else { return };
    let t = tempdir();
    let d = t.path();
    lake(&s3, d);
    let faults = ["--reset-get", "0.15", "--reset-list", "0.15", "--status-rate", "0.2"];
    let faults = [&faults[..], &["--statuses", "503,429", "--latency-ms", "20"]].concat();
    // A Delta table: its log and its files.
    let delta = |options: &str| format!("{{ path: 's3://lake/table', format: delta, storage_options: {options} }}");
    let o = export(d, "dref.yaml", &delta(&s3.options()), "", "dref", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let reference = parts(&d.join("dref"));
    for seed in 0..5u64 {
        let proxy = Proxy::start(&s3, &[&["--seed", &seed.to_string()][..], &faults].concat());
        let out = format!("d{seed}");
        let o = export(d, "d.yaml", &delta(&proxy.options()), "", &out, &[]);
        assert!(o.status.success(), "seed {seed}: {}", stderr(&o));
        assert!(parts(&d.join(&out)) == reference, "seed {seed}: the Delta export differs");
    }
    // Training a few steps from the bucket: the same weights as without faults.
    let reference = train(d, "tref", &s3.options(), "");
    let proxy = Proxy::start(&s3, &[&["--seed", "11"][..], &faults].concat());
    assert_eq!(train(d, "t1", &proxy.options(), ""), reference);
    assert!(proxy.injected().values().sum::<u64>() > 0);
}

/// Trains 40 steps (about an epoch and a half) from `s3://lake/docs` into `run_dir` and returns
/// the final weights.
fn train(d: &Path, run_dir: &str, options: &str, retry: &str) -> Vec<u8> {
    let o = train_run(d, run_dir, options, retry, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::read(d.join(run_dir).join("checkpoint-0000040/model.safetensors")).unwrap()
}

fn train_run(d: &Path, run_dir: &str, options: &str, retry: &str, extra: &[&str]) -> Output {
    let yaml = format!(
        "name: t\nsource: {}\ntask: {{ mlm: {{ seq_len: 128 }} }}\nstream: {{ batch_size: 8, shuffle: false }}\n\
         train: {{ model: {{ encoder: {{ layers: 1, hidden: 16, heads: 2 }} }}, steps: 40, prefetch: 1, checkpoint: {{ every_steps: 4 }} }}\n",
        s3_source("s3://lake/docs", options, retry)
    );
    let p = pipeline(d, &format!("{run_dir}.yaml"), &yaml);
    let mut args = vec!["train", p.to_str().unwrap(), "--run-dir", run_dir, "--quiet"];
    args.extend_from_slice(extra);
    pretext_s3(&args, d, "test")
}

#[test]
fn an_outage_of_thirty_seconds_mid_export_and_mid_training_is_waited_out() {
    let Some((s3, t, reference)) = fault_free() else { return };
    let d = t.path();
    let trained = train(d, "tref", &s3.options(), "");
    // Both at once, each behind its own proxy that resets every connection for 30 s part-way
    // through the reads: the export reads 6 footers and 18 row groups; training reads 48 footers,
    // then the 24 files in its first epoch and again in its second, which the run is well into
    // when the outage begins.
    let export_proxy = Proxy::start(&s3, &["--outage-after-reads", "10", "--outage-s", "30"]);
    let train_proxy = Proxy::start(&s3, &["--outage-after-reads", "76", "--outage-s", "30"]);
    let started = Instant::now();
    std::thread::scope(|scope| {
        let exporting = scope
            .spawn(|| export(d, "o.yaml", &s3_source("s3://lake/corpus", &export_proxy.options(), ""), "", "o", &[]));
        let training = scope.spawn(|| train_run(d, "to", &train_proxy.options(), "", &[]));
        let o = exporting.join().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let o = training.join().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    });
    assert!(started.elapsed() > Duration::from_secs(30), "the outage did not happen");
    assert!(parts(&d.join("o")) == reference, "the export differs from the fault-free one");
    assert_eq!(std::fs::read(d.join("to/checkpoint-0000040/model.safetensors")).unwrap(), trained);
    for proxy in [&export_proxy, &train_proxy] {
        assert!(proxy.injected().get("outage_reset").is_some_and(|n| *n > 0), "{:?}", proxy.injected());
    }
}

#[test]
fn a_spent_budget_says_the_failure_was_transient_and_resume_ends_identical() {
    let Some((s3, t, reference)) = fault_free() else { return };
    let d = t.path();
    let trained = train(d, "tref", &s3.options(), "");
    // A budget of 2 s against an outage of a minute.
    let retry = ", retry: { timeout_s: 2, backoff_s: 0.05, max_backoff_s: 0.5 }";
    let proxy = Proxy::start(&s3, &["--outage-after-reads", "10", "--outage-s", "60"]);
    let started = Instant::now();
    let o = export(d, "o.yaml", &s3_source("s3://lake/corpus", &proxy.options(), retry), "", "o", &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
    assert!(e.contains("failed for a passing reason") && e.contains("s3://lake/corpus/"), "{e}");
    assert!(e.contains("--resume") && e.contains("source.retry.timeout_s"), "{e}");
    assert!(!e.contains("not a readable Parquet file"), "{e}");
    // The store is back: the export continues to the same bytes.
    let o = export(d, "o.yaml", &s3_source("s3://lake/corpus", &s3.options(), ""), "", "o", &["--resume"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(parts(&d.join("o")) == reference, "the resumed export differs from the fault-free one");
    // Training: a checkpoint of the last step, the hint to resume, and a resumed run that ends
    // on the uninterrupted run's weights.
    let proxy = Proxy::start(&s3, &["--outage-after-reads", "76", "--outage-s", "60"]);
    let o = train_run(d, "to", &proxy.options(), retry, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("failed for a passing reason") && e.contains("training stopped after step"), "{e}");
    let o = train_run(d, "to", &s3.options(), "", &["--resume"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(d.join("to/checkpoint-0000040/model.safetensors")).unwrap(), trained);
}
