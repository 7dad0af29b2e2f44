//! The stream cursor: for many random cut points, what was delivered before the cut followed by
//! what a stream restored from the cut's cursor delivers is the uninterrupted stream (single
//! sources, mixtures, across passes); ranks share the data disjointly and evenly; and an elastic
//! resume onto another world size delivers exactly the examples not yet delivered.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch};
use common::*;
use futures::StreamExt;
use pretext::plan::{BuildOptions, Plan};
use pretext::source::Split;
use pretext::stream::StreamCursor;

fn corpus(d: &Path) {
    write_parquet(&d.join("a/x.parquet"), &documents(230, 1));
    write_parquet(
        &d.join("a/y.parquet"),
        &documents(170, 2).into_iter().map(|(i, t)| (i + 500, t)).collect::<Vec<_>>(),
    );
    write_parquet(
        &d.join("b/z.parquet"),
        &documents(150, 3).into_iter().map(|(i, t)| (i + 1000, t)).collect::<Vec<_>>(),
    );
}

fn plan(d: &Path, yaml: &str, sets: &[String]) -> (tokio::runtime::Runtime, Arc<Plan>) {
    let p = pipeline(d, "p.yaml", yaml);
    let rt = pretext::cli::runtime().unwrap();
    let pl = pretext::load_pipeline(&p, sets).unwrap();
    let plan = rt.block_on(Plan::build(pl, &BuildOptions::default())).unwrap();
    (rt, plan)
}

/// One example, comparable: key, input ids, labels, source.
type Row = (u64, Vec<i32>, Vec<i32>, String);

fn rows(b: &RecordBatch) -> Vec<Row> {
    let keys = b.column_by_name("example_key").unwrap().as_primitive::<arrow::datatypes::UInt64Type>();
    let list = |name: &str, i: usize| {
        b.column_by_name(name)
            .map(|c| c.as_fixed_size_list().value(i).as_primitive::<arrow::datatypes::Int32Type>().values().to_vec())
            .unwrap_or_default()
    };
    let source = |i: usize| {
        b.column_by_name("source")
            .map(|c| {
                let d = c.as_dictionary::<arrow::datatypes::Int16Type>();
                d.values().as_string::<i32>().value(d.keys().value(i) as usize).to_string()
            })
            .unwrap_or_default()
    };
    (0..b.num_rows()).map(|i| (keys.value(i), list("input_ids", i), list("labels", i), source(i))).collect()
}

fn collect(
    rt: &tokio::runtime::Runtime,
    s: futures::stream::BoxStream<'static, pretext::Result<(RecordBatch, StreamCursor)>>,
    limit: usize,
) -> Vec<(Vec<Row>, StreamCursor)> {
    rt.block_on(async { s.take(limit).map(|r| r.unwrap()).map(|(b, c)| (rows(&b), c)).collect::<Vec<_>>().await })
}

/// Cut points spread over the stream, from a seeded generator.
fn cuts(n: usize, count: usize, seed: u64) -> Vec<usize> {
    let mut x = seed | 1;
    (0..count)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        })
        .collect()
}

fn flat(v: &[(Vec<Row>, StreamCursor)]) -> Vec<Row> {
    v.iter().flat_map(|(r, _)| r.clone()).collect()
}

/// For every cut, delivered-before ++ restored-after equals the uninterrupted stream.
fn check_resume(d: &Path, yaml: &str, passes: usize) {
    let (rt, plan) = plan(d, yaml, &[]);
    // Enough batches for `passes` passes.
    let one_pass = collect(&rt, plan.pass_from(Split::All, StreamCursor::start(0, plan.sources.len())), usize::MAX);
    let total = one_pass.len() * passes;
    let full = collect(&rt, plan.batches_from(Split::All, StreamCursor::start(0, plan.sources.len())), total);
    assert_eq!(full.len(), total);
    let whole = flat(&full);
    let mut cut_points = cuts(total - 1, 24, 7);
    cut_points.extend([0, one_pass.len() - 1, total - 2]);
    for c in cut_points {
        let cursor = full[c].1.clone();
        // Through JSON, as a checkpoint stores it.
        let cursor: StreamCursor = serde_json::from_str(&serde_json::to_string(&cursor).unwrap()).unwrap();
        let rest = collect(&rt, plan.batches_from(Split::All, cursor), total - c - 1);
        let mut joined = flat(&full[..=c]);
        joined.extend(flat(&rest));
        assert_eq!(joined.len(), whole.len(), "cut after batch {c}");
        assert!(joined == whole, "cut after batch {c}: the resumed stream differs");
    }
}

#[test]
fn packed_text_resumes_exactly_from_any_cut() {
    let t = tempdir();
    corpus(t.path());
    let yaml = "name: c\nsource: { path: a }\ntask: { mlm: { seq_len: 24 } }\nstream: { batch_size: 7, shuffle: { window_rows: 40 } }\n";
    check_resume(t.path(), yaml, 2);
    // Without shuffling too (windows still bound what a restore regenerates).
    let yaml = "name: c\nsource: { path: a }\ntask: { causal: { seq_len: 16 } }\nstream: { batch_size: 5 }\n";
    check_resume(t.path(), yaml, 1);
}

#[test]
fn mixtures_resume_exactly_from_any_cut() {
    let t = tempdir();
    corpus(t.path());
    let yaml = "name: c\nsources:\n  - { name: a, path: a, weight: 2 }\n  - { name: b, path: b, weight: 1 }\nmixture: { stop: all_exhausted }\ntask: { mlm: { seq_len: 24, packing: false } }\nstream: { batch_size: 6, shuffle: { window_rows: 32 } }\n";
    check_resume(t.path(), yaml, 2);
}

/// Each rank's whole pass.
fn rank_rows(d: &Path, yaml: &str, rank: u64, world: u64) -> Vec<Row> {
    let sets = vec![format!("stream.shard={{rank: {rank}, world_size: {world}}}")];
    let (rt, plan) = plan(d, yaml, &sets);
    flat(&collect(&rt, plan.pass_from(Split::All, StreamCursor::start(0, 1)), usize::MAX))
}

#[test]
fn ranks_share_the_data_disjointly_and_evenly() {
    let t = tempdir();
    corpus(t.path());
    let yaml = "name: c\nsource: { path: a, key_column: id }\ntask: { mlm: { seq_len: 24, packing: false } }\nstream: { batch_size: 8, shuffle: { window_rows: 50 } }\n";
    let all: Vec<u64> = {
        let mut k: Vec<u64> = rank_rows(t.path(), yaml, 0, 1).iter().map(|r| r.0).collect();
        k.sort();
        k
    };
    assert_eq!(all.len(), 400);
    for world in [2u64, 3, 4] {
        let shares: Vec<Vec<u64>> =
            (0..world).map(|r| rank_rows(t.path(), yaml, r, world).iter().map(|r| r.0).collect()).collect();
        let mut union: Vec<u64> = shares.concat();
        union.sort();
        assert_eq!(union, all, "world {world}: the ranks' union is not the data, or they overlap");
        let sizes: Vec<usize> = shares.iter().map(Vec::len).collect();
        let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
        assert!(hi - lo <= 1, "world {world}: sizes {sizes:?} differ by more than one example");
    }
}

#[test]
fn elastic_resume_delivers_exactly_what_was_left() {
    let t = tempdir();
    corpus(t.path());
    let yaml = "name: c\nsource: { path: a, key_column: id }\ntask: { mlm: { seq_len: 24, packing: false } }\nstream: { batch_size: 6, shuffle: { window_rows: 30 } }\n";
    // The reference: every example of the pass, by key (per-document examples do not depend on
    // which rank makes them).
    let reference: BTreeMap<u64, Row> = rank_rows(t.path(), yaml, 0, 1).into_iter().map(|r| (r.0, r)).collect();
    for (old_world, new_world, seed) in [(3u64, 2u64, 1u64), (2, 4, 2), (4, 3, 3), (2, 1, 4)] {
        let mut old = Vec::new();
        for r in 0..old_world {
            let sets = vec![format!("stream.shard={{rank: {r}, world_size: {old_world}}}")];
            let (rt, plan) = plan(t.path(), yaml, &sets);
            old.push(collect(&rt, plan.pass_from(Split::All, StreamCursor::start(0, 1)), usize::MAX));
        }
        let shortest = old.iter().map(Vec::len).min().unwrap();
        for cut in cuts(shortest - 1, 4, seed) {
            // Data-parallel ranks stop after the same step.
            let mut delivered: Vec<Row> = old.iter().flat_map(|o| flat(&o[..=cut])).collect();
            let cursors: Vec<StreamCursor> = old.iter().map(|o| o[cut].1.clone()).collect();
            let new = StreamCursor::rebalance(&cursors, new_world).unwrap();
            for (r, c) in new.into_iter().enumerate() {
                let sets = vec![format!("stream.shard={{rank: {r}, world_size: {new_world}}}")];
                let (rt, plan) = plan(t.path(), yaml, &sets);
                delivered.extend(flat(&collect(&rt, plan.pass_from(Split::All, c), usize::MAX)));
            }
            let mut keys: Vec<u64> = delivered.iter().map(|r| r.0).collect();
            keys.sort();
            let want: Vec<u64> = reference.keys().copied().collect();
            assert_eq!(keys, want, "{old_world} → {new_world} ranks after batch {cut}: duplicates or gaps");
            for row in &delivered {
                assert_eq!(&reference[&row.0], row, "example {} changed across the resume", row.0);
            }
        }
    }
}

#[test]
fn a_cursor_from_another_rank_is_refused() {
    let t = tempdir();
    corpus(t.path());
    let yaml = "name: c\nsource: { path: a }\ntask: { mlm: { seq_len: 24 } }\nstream: { batch_size: 8 }\n";
    let (rt, p0) = plan(t.path(), yaml, &["stream.shard={rank: 0, world_size: 2}".into()]);
    let first = collect(&rt, p0.pass_from(Split::All, StreamCursor::start(0, 1)), 2);
    let (rt, p1) = plan(t.path(), yaml, &["stream.shard={rank: 1, world_size: 2}".into()]);
    let err = rt.block_on(async { p1.pass_from(Split::All, first[1].1.clone()).next().await.unwrap().unwrap_err() });
    assert!(err.to_string().contains("rank 0 of 2"), "{err}");
}
