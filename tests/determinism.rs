//! Output bytes do not depend on worker count or batch size; shards are disjoint and covering.

mod common;

use std::collections::BTreeSet;

use arrow::array::AsArray;
use arrow::datatypes::UInt64Type;
use common::*;

const YAML: &str = "name: d\nsource: { path: data }\ntask: { mlm: { seq_len: 64, whole_word: WW } }\nstream: { shuffle: { window_rows: 64 }, epochs: 2 }\nexport: { rows_per_file: 150 }\n";

fn export(dir: &std::path::Path, yaml: &str, out: &str, sets: &[&str]) -> Vec<(String, Vec<u8>)> {
    let p = pipeline(dir, &format!("{out}.yaml"), yaml);
    let mut args = vec!["export", p.to_str().unwrap(), "--out", out, "--quiet"];
    for s in sets {
        args.extend(["--set", s]);
    }
    let o = pretext(&args, dir);
    assert!(o.status.success(), "{}", stderr(&o));
    dir_files(&dir.join(out)).into_iter().filter(|(n, _)| n.starts_with("part-")).collect()
}

#[test]
fn identical_bytes_for_any_worker_count_and_batch_size() {
    let t = tempdir();
    for i in 0..3 {
        write_parquet(&t.path().join(format!("data/f{i}.parquet")), &documents(150, i));
    }
    for ww in ["false", "true"] {
        let yaml = YAML.replace("WW", ww);
        let one = export(t.path(), &yaml, &format!("w1-{ww}"), &["stream.workers=1", "stream.batch_size=7"]);
        let four = export(t.path(), &yaml, &format!("w4-{ww}"), &["stream.workers=4", "stream.batch_size=256"]);
        assert!(one.len() > 2);
        assert_eq!(one, four, "whole_word={ww}");
    }
}

#[test]
fn seeds_and_epochs_change_the_masks() {
    let t = tempdir();
    write_parquet(&t.path().join("data/f.parquet"), &documents(100, 9));
    let yaml = YAML.replace("WW", "false");
    let a = export(t.path(), &yaml, "a", &[]);
    let b = export(t.path(), &yaml, "b", &["seed=43"]);
    assert_ne!(a, b);
}

fn keys(dir: &std::path::Path) -> Vec<u64> {
    read_export(dir).iter().flat_map(|b| b.column(0).as_primitive::<UInt64Type>().values().to_vec()).collect()
}

#[test]
fn shards_are_disjoint_and_cover_the_documents() {
    let t = tempdir();
    write_parquet(&t.path().join("data/f.parquet"), &documents(301, 4));
    let yaml = "name: s\nsource: { path: data, key_column: id }\ntask: { mlm: { seq_len: 64, packing: false } }\n";
    export(t.path(), yaml, "all", &[]);
    let mut union = BTreeSet::new();
    let mut total = 0;
    for rank in 0..3 {
        let out = format!("r{rank}");
        export(t.path(), yaml, &out, &[&format!("stream.shard={{rank: {rank}, world_size: 3}}")]);
        let k = keys(&t.path().join(&out));
        assert!((100..=101).contains(&k.len()), "rank {rank}: {}", k.len());
        total += k.len();
        union.extend(k);
    }
    let all: BTreeSet<u64> = keys(&t.path().join("all")).into_iter().collect();
    assert_eq!(total, all.len(), "shards overlap");
    assert_eq!(union, all);
    assert_eq!(all, (0..301).collect());
}

/// The determinism matrix: one task's exported parts are byte-identical for workers 1, 2 and 4,
/// for batches of 3 and of 512 rows, and on a second run; another seed changes them. Without
/// shuffling, they also do not depend on how the source files are cut into row groups (7 rows,
/// or one group). (With shuffling on, a pass reads row groups in a seeded order, so the row
/// groups are part of the input.)
fn matrix(task: &str, input: Input) {
    let t = tempdir();
    for (layout, group_rows) in [("small", 7), ("large", usize::MAX)] {
        let dir = t.path().join(layout);
        match input {
            Input::Text => {
                write_parquet_groups(&dir.join("a.parquet"), &documents(90, 5), group_rows);
                let b: Vec<_> = documents(70, 6).into_iter().map(|(i, s)| (i + 1000, s)).collect();
                write_parquet_groups(&dir.join("b.parquet"), &b, group_rows);
            }
            Input::Images => write_groups(&dir.join("img.parquet"), images(40), group_rows),
            Input::Pixels => write_groups(&dir.join("px.parquet"), pixels(40, 16), group_rows),
            Input::Table => write_groups(&dir.join("t.parquet"), table(150), group_rows),
        }
    }
    let source = match input {
        Input::Pixels => "{ path: SRC, key_column: id, image_column: pixels, image_shape: [3, 16, 16] }",
        Input::Text | Input::Images | Input::Table => "{ path: SRC, key_column: id }",
    };
    let yaml = format!(
        "name: m\nsource: {source}\ntask: {{ {task} }}\nstream: {{ shuffle: {{ window_rows: 16 }}, epochs: 2 }}\nexport: {{ rows_per_file: 40 }}\n"
    );
    let run = |out: &str, layout: &str, sets: &[String]| {
        let yaml = yaml.replace("SRC", layout);
        export(t.path(), &yaml, out, &sets.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let sets = |workers: u32, batch: u32, seed: u64| {
        vec![format!("stream.workers={workers}"), format!("stream.batch_size={batch}"), format!("seed={seed}")]
    };
    let reference = run("w1-b3", "small", &sets(1, 3, 42));
    assert!(reference.len() >= 2, "{task}: {} parts; the matrix needs several", reference.len());
    for workers in [1, 2, 4] {
        for batch in [3, 512] {
            let out = format!("w{workers}-b{batch}");
            if out != "w1-b3" {
                assert!(run(&out, "small", &sets(workers, batch, 42)) == reference, "{task}: {out} differs from w1-b3");
            }
        }
    }
    assert!(run("again", "small", &sets(2, 3, 42)) == reference, "{task}: a second run differs");
    assert!(run("seed", "small", &sets(2, 512, 43)) != reference, "{task}: seed 43 made the same examples");
    let mut unshuffled = sets(1, 3, 42);
    unshuffled.push("stream.shuffle=false".into());
    let small = run("small-rg", "small", &unshuffled);
    unshuffled[0] = "stream.workers=4".into();
    unshuffled[1] = "stream.batch_size=512".into();
    assert!(run("large-rg", "large", &unshuffled) == small, "{task}: the row groups changed the examples");
}

#[derive(Clone, Copy)]
enum Input {
    Text,
    Images,
    Pixels,
    Table,
}

#[test]
fn matrix_mlm() {
    matrix("mlm: { seq_len: 32, whole_word: true }", Input::Text);
}

#[test]
fn matrix_causal() {
    matrix("causal: { seq_len: 32, pack: best_fit }", Input::Text);
}

#[test]
fn matrix_span() {
    matrix("span: { seq_len: 48 }", Input::Text);
}

#[test]
fn matrix_contrastive_text() {
    matrix(
        "contrastive_text: { seq_len: 48, crop: { min_tokens: 8, max_tokens: 32 }, token_dropout: 0.1, mask_prob: 0.1 }",
        Input::Text,
    );
}

#[test]
fn matrix_denoise() {
    matrix("denoise: { seq_len: 64, delete: 0.1, permute_sentences: true }", Input::Text);
}

#[test]
fn matrix_contrastive_image() {
    matrix("contrastive_image: { image: { size: 16 } }", Input::Images);
}

#[test]
fn matrix_mae() {
    matrix("mae: { image: { size: 16 }, patch_size: 4 }", Input::Pixels);
}

#[test]
fn matrix_denoise_image() {
    matrix("denoise_image: { image: { size: 16 } }", Input::Pixels);
}

#[test]
fn matrix_scarf() {
    matrix("scarf: { columns: [f0, f1, f2, f3, color], categorical: [color] }", Input::Table);
}

#[test]
fn matrix_vime() {
    matrix("vime: { columns: [f0, f1, f2, f4, f5] }", Input::Table);
}
