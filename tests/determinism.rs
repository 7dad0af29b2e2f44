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
