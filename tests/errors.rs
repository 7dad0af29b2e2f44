//! Bad input: each case exits with code 1, names the file / YAML path / column, says what to do,
//! and leaves no output behind.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{BinaryArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use common::*;

/// Runs `export` of `yaml` in a scratch dir prepared by `setup`; returns stderr after checking the
/// exit code is 1 and that no output directory was created.
fn fails(yaml: &str, setup: impl Fn(&Path)) -> String {
    let t = tempdir();
    setup(t.path());
    let p = pipeline(t.path(), "p.yaml", yaml);
    let o = pretext(&["export", p.to_str().unwrap(), "--out", "out", "--quiet"], t.path());
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!t.path().join("out").exists(), "output left behind: {err}");
    err
}

fn good_data(dir: &Path) {
    write_parquet(&dir.join("data/a.parquet"), &documents(20, 3));
}

#[test]
fn malformed_yaml() {
    let err = fails("name: x\nsource: [unclosed\n", good_data);
    assert!(err.contains("p.yaml:") && err.contains("invalid YAML"), "{err}");
}

#[test]
fn unknown_key_with_did_you_mean() {
    let err = fails("name: x\nsource: { path: data, text_colum: text }\ntask: { mlm: {} }\n", good_data);
    assert!(err.contains("p.yaml:2:23: source.text_colum: unknown key `text_colum`"), "{err}");
    assert!(err.contains("hint: did you mean `text_column`?"), "{err}");
}

#[test]
fn wrong_type_and_out_of_range() {
    let err = fails("name: x\nsource: { path: data }\ntask: { mlm: { seq_len: long, mask_prob: 1.5 } }\n", good_data);
    assert!(err.contains("task.mlm.seq_len: expected a whole number, found the string `long`"), "{err}");
    assert!(err.contains("task.mlm.mask_prob: 1.5 is out of range: must be between 0 and 1"), "{err}");
    assert!(err.contains("2 problems in"), "{err}");
}

#[test]
fn missing_source_path() {
    let err = fails("name: x\nsource: { path: nowhere }\ntask: { mlm: {} }\n", good_data);
    assert!(err.contains("p.yaml:2:17: source.path: `nowhere` does not exist"), "{err}");
}

#[test]
fn glob_matching_no_file() {
    let err = fails("name: x\nsource: { path: 'data/*.csv' }\ntask: { mlm: {} }\n", good_data);
    assert!(err.contains("source.path") && err.contains("matches no"), "{err}");
}

#[test]
fn file_that_is_not_parquet() {
    let err = fails("name: x\nsource: { path: data/a.parquet }\ntask: { mlm: {} }\n", |d| {
        std::fs::create_dir_all(d.join("data")).unwrap();
        std::fs::write(d.join("data/a.parquet"), "id,text\n1,hello\n").unwrap();
    });
    assert!(err.contains("data/a.parquet` is not a readable Parquet file"), "{err}");
    assert!(err.contains("hint:"), "{err}");
}

#[test]
fn truncated_parquet() {
    let err = fails("name: x\nsource: { path: data }\ntask: { mlm: {} }\n", |d| {
        good_data(d);
        let p = d.join("data/a.parquet");
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    });
    assert!(err.contains("a.parquet` is not a readable Parquet file"), "{err}");
}

#[test]
fn text_column_missing_lists_columns() {
    let err = fails("name: x\nsource: { path: data, text_column: body }\ntask: { mlm: {} }\n", good_data);
    assert!(err.contains("source.text_column: column `body` not found in `a.parquet`"), "{err}");
    assert!(err.contains("the columns are: `id`, `text`"), "{err}");
}

#[test]
fn text_column_not_string() {
    let err = fails("name: x\nsource: { path: data, text_column: id }\ntask: { mlm: {} }\n", good_data);
    assert!(err.contains("column `id` in `a.parquet` is Int64, not a string column"), "{err}");
}

#[test]
fn sql_that_does_not_parse() {
    let err = fails("name: x\nsource: { path: data, sql: 'SELEC text FROM source' }\ntask: { mlm: {} }\n", good_data);
    assert!(err.contains("source.sql:"), "{err}");
    assert!(err.contains("the table is called `source`"), "{err}");
}

#[test]
fn sql_naming_a_missing_column() {
    let err = fails("name: x\nsource: { path: data, sql: 'SELECT body FROM source' }\ntask: { mlm: {} }\n", good_data);
    assert!(err.contains("source.sql:") && err.contains("body"), "{err}");
    assert!(err.contains("its columns are: `id`, `text`"), "{err}");
}

#[test]
fn tokenizer_file_missing() {
    let err = fails("name: x\nsource: { path: data }\ntokenizer: { file: tok.json }\ntask: { mlm: {} }\n", good_data);
    assert!(err.contains("p.yaml:3:20: tokenizer.file: tokenizer file `tok.json` does not exist"), "{err}");
}

#[test]
fn tokenizer_file_not_a_tokenizer() {
    let err = fails("name: x\nsource: { path: data }\ntokenizer: { file: tok.json }\ntask: { mlm: {} }\n", |d| {
        good_data(d);
        std::fs::write(d.join("tok.json"), "{\"hello\": 1}").unwrap();
    });
    assert!(err.contains("tokenizer.file: `") && err.contains("is not a HuggingFace tokenizer.json"), "{err}");
}

#[test]
fn output_directory_that_is_a_file() {
    let t = tempdir();
    good_data(t.path());
    std::fs::write(t.path().join("out"), "x").unwrap();
    let p = pipeline(t.path(), "p.yaml", "name: x\nsource: { path: data }\ntask: { mlm: {} }\n");
    let o = pretext(&["export", p.to_str().unwrap(), "--out", "out"], t.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("is a file, not a directory"), "{}", stderr(&o));
}

#[test]
fn empty_source_gives_an_empty_export_with_a_manifest() {
    let t = tempdir();
    write_parquet(&t.path().join("data/a.parquet"), &[(1, None), (2, Some("  ".into()))]);
    let p = pipeline(t.path(), "p.yaml", "name: x\nsource: { path: data }\ntask: { mlm: {} }\n");
    let o = pretext(&["export", p.to_str().unwrap(), "--out", "out"], t.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("no examples"), "{}", stderr(&o));
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.path().join("out/_manifest.json")).unwrap()).unwrap();
    assert_eq!(m["rows"], 0);
    assert_eq!(m["source"]["stats"]["skipped_null_text"], 1);
    assert_eq!(m["source"]["stats"]["skipped_blank_text"], 1);
}

#[test]
fn a_document_of_fifty_megabytes_works() {
    let t = tempdir();
    let big: String = (0..10_000_000).map(|i| ["lorem ", "ipsum ", "dolor ", "sit "][i % 4]).collect();
    assert!(big.len() > 50_000_000);
    write_parquet(&t.path().join("data/a.parquet"), &[(1, Some(big.clone())), (2, Some("short one".into()))]);
    let p = pipeline(t.path(), "p.yaml", "name: x\nsource: { path: data }\ntask: { mlm: { seq_len: 512 } }\n");
    let o = pretext(&["export", p.to_str().unwrap(), "--out", "out", "--quiet"], t.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(t.path().join("out/_manifest.json")).unwrap()).unwrap();
    // Bytes tokenizer: one id per byte plus [CLS]/[SEP] per document, packed into 512-token rows.
    let tokens = big.len() as u64 + 2 + 9 + 2;
    assert_eq!(m["tokens"].as_u64().unwrap(), tokens);
    assert_eq!(m["rows"].as_u64().unwrap(), tokens.div_ceil(512));
}

#[test]
fn sql_that_is_not_row_wise_is_refused() {
    let err = fails(
        "name: x\nsource: { path: data, sql: 'SELECT text FROM source LIMIT 5' }\ntask: { mlm: {} }\n",
        good_data,
    );
    assert!(err.contains("source.sql: LIMIT / OFFSET is not supported"), "{err}");
    let err = fails(
        "name: x\nsource: { path: data, sql: 'SELECT max(text) AS text FROM source' }\ntask: { mlm: {} }\n",
        good_data,
    );
    assert!(err.contains("GROUP BY / aggregation is not supported"), "{err}");
}

#[test]
fn a_directory_of_mixed_formats_asks_for_one() {
    let err = fails("name: x\nsource: { path: data }\ntask: { mlm: {} }\n", |d| {
        good_data(d);
        std::fs::write(d.join("data/b.jsonl"), "{\"text\": \"x\"}\n").unwrap();
    });
    assert!(err.contains("holds files of several formats (jsonl, parquet)"), "{err}");
    assert!(err.contains("set `source.format`"), "{err}");
}

#[test]
fn a_shuffle_window_too_large_for_memory_is_a_spec_error() {
    let err = fails("name: x\nsource: { path: data }\ntask: { mlm: { seq_len: 4096 } }\nstream: { shuffle: { window_rows: 1000000 } }\n", good_data);
    assert!(err.contains("stream.shuffle: a shuffle window of 1000000 rows"), "{err}");
    assert!(err.contains("lower `window_rows` to at most 32768"), "{err}");
}

/// The data a catalogue case reads, made in its scratch directory `d`.
fn setup(case: &str, d: &Path) {
    match case {
        "07-not-parquet" => {
            std::fs::create_dir_all(d.join("data")).unwrap();
            std::fs::write(d.join("data/a.parquet"), "id,text\n1,hello\n").unwrap();
        }
        "08-truncated-parquet" => {
            good_data(d);
            let p = d.join("data/a.parquet");
            let bytes = std::fs::read(&p).unwrap();
            std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
        }
        "09-corrupt-page" => {
            // Snappy pages whose compressed bytes are overwritten half way into the text column's
            // first data page; the footer is intact.
            let rows = documents(200, 4);
            let schema = Arc::new(Schema::new(vec![
                Field::new("id", DataType::Int64, false),
                Field::new("text", DataType::Utf8, true),
            ]));
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(Int64Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
                    Arc::new(StringArray::from(rows.iter().map(|r| r.1.clone()).collect::<Vec<_>>())),
                ],
            )
            .unwrap();
            let props = parquet::file::properties::WriterProperties::builder()
                .set_compression(parquet::basic::Compression::SNAPPY)
                .set_dictionary_enabled(false)
                .build();
            let p = d.join("data/a.parquet");
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            let mut w =
                parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&p).unwrap(), schema, Some(props)).unwrap();
            w.write(&batch).unwrap();
            let meta = w.close().unwrap();
            let text = meta.row_group(0).column(1);
            let (start, len) = (text.data_page_offset() as usize, text.compressed_size() as usize);
            let mut bytes = std::fs::read(&p).unwrap();
            for b in &mut bytes[start + len / 2..start + len / 2 + 64] {
                *b = 0xff;
            }
            std::fs::write(&p, bytes).unwrap();
        }
        "12-null-and-blank-texts" => {
            write_parquet(&d.join("data/a.parquet"), &[(1, None), (2, Some("  ".into())), (3, Some("\n\t".into()))]);
        }
        "13-empty-table" => write_parquet(&d.join("data/a.parquet"), &[]),
        "14-binary-text-column" | "23-invalid-utf8-cast-to-text" => {
            let schema = Arc::new(Schema::new(vec![
                Field::new("id", DataType::Int64, false),
                Field::new("text", DataType::Binary, true),
            ]));
            let texts: Vec<&[u8]> = vec![b"fine text", b"bad \xff\xfe bytes", b"more fine text"];
            let batch = RecordBatch::try_new(
                schema,
                vec![Arc::new(Int64Array::from(vec![1, 2, 3])), Arc::new(BinaryArray::from(texts))],
            )
            .unwrap();
            write(&d.join("data/a.parquet"), batch);
        }
        "16-tokenizer-not-a-tokenizer" => {
            good_data(d);
            std::fs::write(d.join("tok.json"), "{\"hello\": 1}").unwrap();
        }
        "17-output-is-a-file" => {
            good_data(d);
            std::fs::write(d.join("out"), "x").unwrap();
        }
        "18-write-fails" => write_parquet(&d.join("data/a.parquet"), &documents(3000, 8)),
        "19-permission-denied" => {
            good_data(d);
            std::fs::set_permissions(d.join("data"), std::fs::Permissions::from_mode(0o000)).unwrap();
        }
        "20-unreadable-image" => write(&d.join("data/img.parquet"), images(12)),
        "22-mixed-formats" => {
            good_data(d);
            std::fs::write(d.join("data/b.jsonl"), "{\"text\": \"x\"}\n").unwrap();
        }
        _ => good_data(d),
    }
}

/// Runs `export p.yaml --out out` for a catalogue case in `d`.
fn run_case(case: &str, d: &Path) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_pretext"));
    cmd.args(["export", "p.yaml", "--out", "out", "--quiet"])
        .current_dir(d)
        .env_remove("RANK")
        .env_remove("WORLD_SIZE")
        .env("NO_COLOR", "1");
    match case {
        "18-write-fails" => {
            // Files may grow to 40 kB, and SIGXFSZ is ignored: a write past that fails with
            // EFBIG, as a full disk fails with ENOSPC.
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    let limit = libc::rlimit { rlim_cur: 40_000, rlim_max: 40_000 };
                    libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                    if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        "19-permission-denied" if unsafe { libc::geteuid() } == 0 => {
            // Root reads everything: run as `nobody`, from a link to the binary it can reach.
            let bin = d.join("pretext");
            std::fs::hard_link(env!("CARGO_BIN_EXE_pretext"), &bin)
                .or_else(|_| std::fs::copy(env!("CARGO_BIN_EXE_pretext"), &bin).map(|_| ()))
                .unwrap();
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777)).unwrap();
            std::fs::set_permissions(d.join("p.yaml"), std::fs::Permissions::from_mode(0o644)).unwrap();
            let mut c = std::process::Command::new(&bin);
            c.args(["export", "p.yaml", "--out", "out", "--quiet"])
                .current_dir(d)
                .env_remove("RANK")
                .env_remove("WORLD_SIZE")
                .env("NO_COLOR", "1")
                .uid(65534)
                .gid(65534);
            return c.output().unwrap();
        }
        _ => {}
    }
    cmd.output().unwrap()
}

/// Stderr with the scratch directory written `<dir>` and durations `<time>`.
fn normalize(err: &str, d: &Path) -> String {
    let mut s = err.to_string();
    for p in [std::fs::canonicalize(d).unwrap(), d.to_path_buf()] {
        s = s.replace(&p.display().to_string(), "<dir>");
    }
    let s = regex_lite(&s);
    // Log lines start with a timestamp.
    s.lines()
        .map(|l| match l.find("Z  ") {
            Some(i) if l.starts_with("20") && i < 40 => format!("<timestamp>{}", &l[i + 1..]),
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + if s.ends_with('\n') { "\n" } else { "" }
}

/// Replaces `in 0.1s (12.3k tokens/s)` and similar run times with `in <time>`.
fn regex_lite(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find(" in ") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 4..];
        let digits = after.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(after.len());
        if digits > 0 && after[digits..].starts_with('s') {
            out.push_str(" in <time>");
            let mut tail = &after[digits + 1..];
            if tail.starts_with(" (") {
                if let Some(end) = tail.find(')') {
                    tail = &tail[end + 1..];
                }
            }
            rest = tail;
        } else {
            out.push_str(" in ");
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The bad-input catalogue. Every directory of `tests/fixtures/bad/` holds a `pipeline.yaml`
/// and `expected.txt`: the exit code, then the exact stderr of `pretext export` (scratch
/// directory `<dir>`, run times `<time>`). [`setup`] makes the data each case reads. A failed
/// case leaves no output directory, or only the hidden one a resumable export keeps.
/// `PRETEXT_BLESS=1 cargo test --test errors` rewrites the expected files.
#[test]
fn bad_input_catalogue() {
    let root = repo().join("tests/fixtures/bad");
    let mut cases: Vec<String> =
        std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().to_string()).collect();
    cases.sort();
    assert!(cases.len() >= 20, "{cases:?}");
    let bless = std::env::var_os("PRETEXT_BLESS").is_some_and(|v| v != "0");
    let mut failures = Vec::new();
    for case in &cases {
        let t = tempdir();
        std::fs::copy(root.join(case).join("pipeline.yaml"), t.path().join("p.yaml")).unwrap();
        setup(case, t.path());
        let o = run_case(case, t.path());
        if case == "19-permission-denied" {
            std::fs::set_permissions(t.path().join("data"), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let err = stderr(&o);
        let code = o.status.code().unwrap_or(-1);
        let got = format!("exit: {code}\n{}", normalize(&err, t.path()));
        assert!(!err.contains("panicked"), "{case}: {err}");
        let out = t.path().join("out");
        if code != 0 {
            if case == "17-output-is-a-file" {
                assert_eq!(std::fs::read(&out).unwrap(), b"x", "{case}: the file was changed");
            } else if out.exists() {
                let visible: Vec<_> = std::fs::read_dir(&out)
                    .unwrap()
                    .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
                    .filter(|n| !n.starts_with('.'))
                    .collect();
                assert!(visible.is_empty(), "{case}: output left behind: {visible:?}");
            }
        }
        let expected_path = root.join(case).join("expected.txt");
        if bless {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if expected != got {
            failures.push(format!("--- {case}: expected\n{expected}--- got\n{got}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ (PRETEXT_BLESS=1 rewrites them):\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
