//! Bad input: each case exits with code 1, names the file / YAML path / column, says what to do,
//! and leaves no output behind.

mod common;

use std::path::Path;

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
fn a_document_of_several_megabytes_works() {
    let t = tempdir();
    let big: String = (0..600_000).map(|i| ["lorem ", "ipsum ", "dolor ", "sit "][i % 4]).collect();
    assert!(big.len() > 3_000_000);
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
