//! Weighted mixtures of named sources: the deterministic schedule holds every prefix within one
//! example of the weights, the stop rules, the `source` column and per-source counts, and
//! errors for bad mixtures.

mod common;

use std::path::Path;

use arrow::array::AsArray;
use common::*;

fn corpus(d: &Path) {
    write_parquet(&d.join("a/x.parquet"), &documents(300, 1));
    write_parquet(&d.join("b/x.parquet"), &documents(300, 2));
    write_parquet(&d.join("c/x.parquet"), &documents(120, 3));
}

fn mixture_yaml(sources: &str, extra: &str) -> String {
    format!(
        "name: mix\nsources:\n{sources}\ntask: {{ mlm: {{ seq_len: 32, packing: false }} }}\nstream: {{ batch_size: 32, shuffle: {{ window_rows: 64 }} }}\nexport: {{ rows_per_file: 250 }}\n{extra}"
    )
}

/// The `source` names of every exported example, in order, and the manifest.
fn export_sources(d: &Path, yaml: &str, out: &str, extra: &[&str]) -> (Vec<String>, serde_json::Value) {
    let p = pipeline(d, &format!("{out}.yaml"), yaml);
    let mut args = vec!["export", p.to_str().unwrap(), "--out", out, "--quiet"];
    args.extend_from_slice(extra);
    let o = pretext(&args, d);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut names = Vec::new();
    for b in read_export(&d.join(out)) {
        let col = b.column_by_name("source").unwrap();
        let dict = col.as_dictionary::<arrow::datatypes::Int16Type>();
        let values = dict.values().as_string::<i32>();
        for k in dict.keys().values().iter() {
            names.push(values.value(*k as usize).to_string());
        }
    }
    let m = serde_json::from_slice(&std::fs::read(d.join(out).join("_manifest.json")).unwrap()).unwrap();
    (names, m)
}

/// Every prefix holds each source within one example of its weight.
fn assert_prefixes(names: &[String], weights: &[(&str, f64)]) {
    let total: f64 = weights.iter().map(|w| w.1).sum();
    let mut counts = vec![0u64; weights.len()];
    for (n, name) in names.iter().enumerate() {
        let i = weights.iter().position(|w| w.0 == name).unwrap();
        counts[i] += 1;
        for (j, (w, c)) in weights.iter().zip(&counts).enumerate() {
            let want = w.1 / total * (n + 1) as f64;
            assert!((*c as f64 - want).abs() <= 1.0, "prefix {}: source {j} has {c}, weight says {want:.2}", n + 1);
        }
    }
}

#[test]
fn first_exhausted_keeps_every_prefix_on_the_weights() {
    let t = tempdir();
    let d = t.path();
    corpus(d);
    let yaml = mixture_yaml(
        "  - { name: wiki, path: a, weight: 3 }\n  - { name: books, path: b, weight: 1 }\n  - { name: code, path: c, weight: 2 }",
        "",
    );
    let (names, m) = export_sources(d, &yaml, "out", &[]);
    assert_prefixes(&names, &[("wiki", 3.0), ("books", 1.0), ("code", 2.0)]);
    // `code` (120 documents at a third of the stream) runs out first: about 360 examples in all.
    let count = |n: &str| names.iter().filter(|x| *x == n).count() as u64;
    assert_eq!(count("code"), 120);
    assert!((359..=362).contains(&names.len()), "{}", names.len());
    // The manifest counts each source; each part's counts add up.
    let sources = m["sources"].as_array().unwrap();
    for s in sources {
        assert_eq!(s["examples"].as_u64().unwrap(), count(s["name"].as_str().unwrap()), "{s}");
    }
    assert_eq!(m["rows"].as_u64().unwrap(), names.len() as u64);
    assert!(m["schema"].to_string().contains("Dictionary(Int16, Utf8)"), "{}", m["schema"]);
    // The same bytes again, and with another worker count.
    let (again, _) = export_sources(d, &yaml, "again", &["--set", "stream.workers=1"]);
    assert_eq!(again, names);
    assert_eq!(part_bytes(&d.join("out")), part_bytes(&d.join("again")));
}

fn part_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    dir_files(dir).into_iter().filter(|(n, _)| n.starts_with("part-")).collect()
}

#[test]
fn all_exhausted_restarts_sources_until_each_ran_out() {
    let t = tempdir();
    let d = t.path();
    corpus(d);
    let yaml = mixture_yaml(
        "  - { name: wiki, path: a, weight: 3 }\n  - { name: code, path: c, weight: 1 }",
        "mixture: { stop: all_exhausted }\n",
    );
    let (names, _) = export_sources(d, &yaml, "out", &[]);
    assert_prefixes(&names, &[("wiki", 3.0), ("code", 1.0)]);
    // `wiki` (300) runs out first and restarts; `code` (120 at a quarter) ends it near 480.
    let count = |n: &str| names.iter().filter(|x| *x == n).count();
    assert_eq!(count("code"), 120);
    assert!((479..=482).contains(&names.len()), "{}", names.len());
    // A restarted source draws new masks: its second pass is not a copy of its first.
    let rows = read_export(&d.join("out"));
    let ids: Vec<Vec<i32>> = rows
        .iter()
        .flat_map(|b| {
            let ids = b.column_by_name("input_ids").unwrap().as_fixed_size_list().clone();
            // Keys index each batch's own dictionary: compare the names.
            let dict = b.column_by_name("source").unwrap().as_dictionary::<arrow::datatypes::Int16Type>().clone();
            (0..b.num_rows())
                .filter(move |i| dict.values().as_string::<i32>().value(dict.keys().value(*i) as usize) == "wiki")
                .map(move |i| ids.value(i).as_primitive::<arrow::datatypes::Int32Type>().values().to_vec())
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(ids.len() > 300);
    assert_ne!(ids[300..], ids[..ids.len() - 300]);
}

#[test]
fn bad_mixtures_are_refused_naming_the_source() {
    let t = tempdir();
    let d = t.path();
    corpus(d);
    let run = |yaml: &str| {
        let p = pipeline(d, "bad.yaml", yaml);
        pretext(&["validate", p.to_str().unwrap()], d)
    };
    let o = run(&mixture_yaml("  - { name: a, path: a, weight: 0 }\n  - { name: b, path: b, weight: 0 }", ""));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("every source has weight 0"), "{}", stderr(&o));
    let o = run(&mixture_yaml("  - { name: a, path: a, weight: -1 }\n  - { name: b, path: b }", ""));
    assert!(stderr(&o).contains("sources.0.weight") && stderr(&o).contains("not a non-negative"), "{}", stderr(&o));
    let o = run(&mixture_yaml("  - { name: a, path: a }\n  - { name: a, path: b }", ""));
    assert!(stderr(&o).contains("two sources are named `a`"), "{}", stderr(&o));
    let o = run(&mixture_yaml("  - { name: a, path: a }\n  - { name: b, path: nowhere }", ""));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("sources.1.path") && stderr(&o).contains("nowhere"), "{}", stderr(&o));
    let o = run(&format!("source: {{ path: a }}\n{}", mixture_yaml("  - { name: a, path: a }", "")));
    assert!(stderr(&o).contains("both `source` and `sources`"), "{}", stderr(&o));
    // `cycle` never ends: fine for training, refused for export.
    let p = pipeline(
        d,
        "cycle.yaml",
        &mixture_yaml("  - { name: a, path: a }\n  - { name: b, path: b }", "mixture: { stop: cycle }\n"),
    );
    let o = pretext(&["export", p.to_str().unwrap(), "--out", "out", "--quiet"], d);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("never ends"), "{}", stderr(&o));
    assert!(!d.join("out").exists());
}

#[test]
fn a_mixture_trains_and_previews() {
    let t = tempdir();
    let d = t.path();
    corpus(d);
    let yaml = mixture_yaml(
        "  - { name: wiki, path: a, weight: 1 }\n  - { name: code, path: c, weight: 1 }",
        "mixture: { stop: cycle }\ntrain: { model: { encoder: { layers: 1, hidden: 32, heads: 2 } }, schedule: { warmup_steps: 2 }, steps: 12, log_every: 4, checkpoint: { every_steps: 6 } }\n",
    );
    let p = pipeline(d, "train.yaml", &yaml);
    let o = pretext(&["train", p.to_str().unwrap(), "--run-dir", "run", "--quiet"], d);
    assert!(o.status.success(), "{}", stderr(&o));
    // The metrics count each source's examples; equal weights keep them within one.
    let last: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(d.join("run/metrics.jsonl")).unwrap().lines().last().unwrap())
            .unwrap();
    let (w, c) = (last["source_examples"]["wiki"].as_i64().unwrap(), last["source_examples"]["code"].as_i64().unwrap());
    assert!(w + c >= 12 * 32 && (w - c).abs() <= 1, "{last}");
    let o = pretext(&["preview", p.to_str().unwrap(), "-n", "2"], d);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("source"), "{}", stdout(&o));
}
