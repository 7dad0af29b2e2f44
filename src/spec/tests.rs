use super::*;
use std::path::PathBuf;

fn check(text: &str) -> Result<Pipeline, SpecErrors> {
    load_str(text, "p.yaml", PathBuf::from("."), &[])
}

fn errors(text: &str) -> Vec<String> {
    check(text).unwrap_err().0.iter().map(|e| e.to_string()).collect()
}

const MINIMAL: &str = "name: t\nsource: { path: data }\ntask: { mlm: {} }\n";

#[test]
fn minimal_pipeline_gets_hf_defaults() {
    let p = check(MINIMAL).unwrap();
    let TaskSpec::Mlm(m) = &p.spec.task else { panic!("mlm") };
    assert_eq!((m.seq_len, m.mask_prob, m.mask_token_prob, m.random_token_prob), (128, 0.15, 0.8, 0.1));
    assert!(m.packing && !m.whole_word);
    assert_eq!(p.spec.seed, 42);
    assert!(matches!(p.spec.tokenizer, TokenizerSpec::Bytes(_)));
    assert_eq!(p.spec.primary_source().text_column, "text");
}

#[test]
fn every_problem_is_reported_at_once_with_positions() {
    let text = "name: t\nsource:\n  path: data\n  text_colum: body\ntask:\n  mlm:\n    mask_prob: 1.5\n    seq_len: many\nstream:\n  epochs: 0\n";
    let errs = errors(text);
    assert_eq!(errs.len(), 4, "{errs:#?}");
    assert!(errs[0].starts_with("error: p.yaml:4:3: source.text_colum: unknown key `text_colum`"), "{}", errs[0]);
    assert!(errs[0].contains("did you mean `text_column`?"), "{}", errs[0]);
    assert!(
        errs.iter()
            .any(|e| e
                .starts_with("error: p.yaml:7:16: task.mlm.mask_prob: 1.5 is out of range: must be between 0 and 1")),
        "{errs:#?}"
    );
    assert!(
        errs.iter()
            .any(|e| e
                .starts_with("error: p.yaml:8:14: task.mlm.seq_len: expected a whole number, found the string `many`")),
        "{errs:#?}"
    );
    assert!(errs.iter().any(|e| e.starts_with("error: p.yaml:10:11: stream.epochs: 0 is out of range")), "{errs:#?}");
}

#[test]
fn misspelt_keys_are_rejected_in_every_section() {
    let cases = [
        ("nmae: t\nname: t\nsource: { path: d }\ntask: { mlm: {} }\n", "nmae", "name"),
        ("name: t\nsource: { path: d, fromat: parquet }\ntask: { mlm: {} }\n", "fromat", "format"),
        ("name: t\nsource: { path: d }\ntokenizer: { fil: x.json }\ntask: { mlm: {} }\n", "fil", "file"),
        (
            "name: t\nsource: { path: d }\ntokenizer: { train: { vocab: 10 } }\ntask: { mlm: {} }\n",
            "vocab",
            "vocab_size",
        ),
        ("name: t\nsource: { path: d }\ntask: { mlmm: {} }\n", "mlmm", "mlm"),
        ("name: t\nsource: { path: d }\ntask: { mlm: { mask_prop: 0.1 } }\n", "mask_prop", "mask_prob"),
        ("name: t\nsource: { path: d }\ntask: { mlm: {} }\nstream: { batch_sise: 3 }\n", "batch_sise", "batch_size"),
        (
            "name: t\nsource: { path: d }\ntask: { mlm: {} }\nstream: { shuffle: { window_row: 3 } }\n",
            "window_row",
            "window_rows",
        ),
        (
            "name: t\nsource: { path: d }\ntask: { mlm: {} }\nstream: { shard: { rank: 0, world: 2 } }\n",
            "world",
            "world_size",
        ),
        (
            "name: t\nsource: { path: d }\ntask: { mlm: {} }\nexport: { rows_per_fle: 3 }\n",
            "rows_per_fle",
            "rows_per_file",
        ),
    ];
    for (text, bad, good) in cases {
        let errs = errors(text);
        assert!(
            errs.iter().any(|e| e.contains(&format!("`{bad}`")) && e.contains(&format!("did you mean `{good}`"))),
            "{bad}: {errs:#?}"
        );
    }
}

#[test]
fn missing_required_fields_and_bad_choices() {
    let errs = errors("seed: 1\ntask: { mlm: {}, span: {} }\n");
    assert!(errs.iter().any(|e| e.contains("missing required key `name`")), "{errs:#?}");
    assert!(errs.iter().any(|e| e.contains("missing required key `source`")), "{errs:#?}");
    assert!(errs.iter().any(|e| e.contains("choose exactly one")), "{errs:#?}");
    let errs = errors("name: t\nsource: { path: d, format: parqet }\ntask: { mlm: {} }\nstream: { workers: autp }\n");
    assert!(
        errs.iter().any(|e| e.contains("unknown value `parqet`") && e.contains("did you mean `parquet`")),
        "{errs:#?}"
    );
    assert!(errs.iter().any(|e| e.contains("stream.workers") && e.contains("did you mean `auto`")), "{errs:#?}");
}

#[test]
fn conflicting_choices_are_spec_errors() {
    let errs = errors("name: t\nsource: { path: d }\ntask: { mlm: { mask_token_prob: 0.9, random_token_prob: 0.2 } }\nstream: { shard: { rank: 2, world_size: 2 } }\n");
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(errs[0].contains("task.mlm.random_token_prob") && errs[0].contains("more than 1"), "{}", errs[0]);
    assert!(errs[1].contains("stream.shard.rank: rank 2 is not below world_size 2"), "{}", errs[1]);
}

#[test]
fn malformed_yaml_names_line_and_column() {
    let errs = errors("name: t\nsource: { path: d\ntask: x\n");
    assert_eq!(errs.len(), 1);
    assert!(errs[0].starts_with("error: p.yaml:"), "{}", errs[0]);
    assert!(errs[0].contains("invalid YAML"), "{}", errs[0]);
}

#[test]
fn overrides_are_type_checked_like_the_file() {
    let p = load_str(
        MINIMAL,
        "p.yaml",
        PathBuf::from("."),
        &["stream.batch_size=64".into(), "seed=7".into(), "stream.shuffle={window_rows: 8}".into()],
    )
    .unwrap();
    assert_eq!(p.spec.stream.batch_size, 64);
    assert_eq!(p.spec.seed, 7);
    assert_eq!(p.spec.stream.shuffle.window_rows(), Some(8));
    let errs = load_str(
        MINIMAL,
        "p.yaml",
        PathBuf::from("."),
        &["stream.batch_size=lots".into(), "task.mlm.mask_prob=2".into(), "nope".into()],
    )
    .unwrap_err();
    let text: Vec<String> = errs.0.iter().map(|e| e.to_string()).collect();
    assert_eq!(text.len(), 3, "{text:#?}");
    assert!(text.iter().any(|e| e.starts_with("error: --set nope: `nope` has no `=`")), "{text:#?}");
    assert!(
        text.iter()
            .any(|e| e.starts_with("error: --set stream.batch_size=lots: stream.batch_size: expected a whole number")),
        "{text:#?}"
    );
    assert!(
        text.iter().any(|e| e.starts_with("error: --set task.mlm.mask_prob=2: task.mlm.mask_prob: 2 is out of range")),
        "{text:#?}"
    );
}

#[test]
fn content_hash_ignores_output_location_and_workers() {
    let a = check(MINIMAL).unwrap();
    let b =
        load_str(MINIMAL, "p.yaml", PathBuf::from("."), &["export.path=elsewhere".into(), "stream.workers=3".into()])
            .unwrap();
    let c = load_str(MINIMAL, "p.yaml", PathBuf::from("."), &["seed=1".into()]).unwrap();
    assert_eq!(a.content_hash(), b.content_hash());
    assert_ne!(a.content_hash(), c.content_hash());
}
