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
    let one_pass = collect(&rt, plan.pass_from(Split::All, StreamCursor::start(0, plan.sources().len())), usize::MAX);
    let total = one_pass.len() * passes;
    let full = collect(&rt, plan.batches_from(Split::All, StreamCursor::start(0, plan.sources().len())), total);
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

/// Every rank of `old_world` stops after the same batch (at several cuts); their cursors,
/// rebalanced for `new_world`, deliver exactly the examples not yet delivered, unchanged.
fn check_elastic(d: &Path, yaml: &str, worlds: &[(u64, u64, u64)]) {
    // The reference: every example of the pass, by key (per-document examples do not depend on
    // which rank makes them).
    let reference: BTreeMap<u64, Row> = rank_rows(d, yaml, 0, 1).into_iter().map(|r| (r.0, r)).collect();
    for &(old_world, new_world, seed) in worlds {
        let mut old = Vec::new();
        for r in 0..old_world {
            let sets = vec![format!("stream.shard={{rank: {r}, world_size: {old_world}}}")];
            let (rt, plan) = plan(d, yaml, &sets);
            old.push(collect(&rt, plan.pass_from(Split::All, StreamCursor::start(0, 1)), usize::MAX));
        }
        let shortest = old.iter().map(Vec::len).min().unwrap();
        for cut in cuts(shortest - 1, 4, seed) {
            // Data-parallel ranks stop after the same step.
            let mut delivered: Vec<Row> = old.iter().flat_map(|o| flat(&o[..=cut])).collect();
            let cursors: Vec<StreamCursor> = old.iter().map(|o| o[cut].1.clone()).collect();
            let (_, any) = plan(d, yaml, &[]);
            let new = any.rebalance(&cursors, new_world, Split::All).unwrap();
            let mut sizes = Vec::new();
            for (r, c) in new.into_iter().enumerate() {
                let c: StreamCursor = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
                let sets = vec![format!("stream.shard={{rank: {r}, world_size: {new_world}}}")];
                let (rt, plan) = plan(d, yaml, &sets);
                let rest = flat(&collect(&rt, plan.pass_from(Split::All, c), usize::MAX));
                sizes.push(rest.len());
                delivered.extend(rest);
            }
            let mut keys: Vec<u64> = delivered.iter().map(|r| r.0).collect();
            keys.sort();
            let want: Vec<u64> = reference.keys().copied().collect();
            assert_eq!(keys, want, "{old_world} → {new_world} ranks after batch {cut}: duplicates or gaps");
            for row in &delivered {
                assert_eq!(&reference[&row.0], row, "example {} changed across the resume", row.0);
            }
            // The rest is re-partitioned, not left to a few ranks.
            let (lo, hi) = (*sizes.iter().min().unwrap(), *sizes.iter().max().unwrap());
            let total: usize = sizes.iter().sum();
            assert!(
                hi - lo <= total / new_world as usize / 2 + 60,
                "{old_world} → {new_world} after batch {cut}: shares {sizes:?}"
            );
        }
    }
}

#[test]
fn elastic_resume_delivers_exactly_what_was_left() {
    let t = tempdir();
    corpus(t.path());
    let worlds = [(3u64, 2u64, 1u64), (2, 4, 2), (4, 3, 3), (2, 1, 4)];
    // Row groups shared in blocks.
    let yaml = "name: c\nsource: { path: a, key_column: id }\ntask: { mlm: { seq_len: 24, packing: false } }\nstream: { batch_size: 6, shuffle: { window_rows: 30 } }\n";
    check_elastic(t.path(), yaml, &worlds);
    // Rows shared one by one (a `sql` source is read by file).
    let yaml = "name: c\nsource: { path: a, key_column: id, sql: 'SELECT * FROM source WHERE id >= 0' }\ntask: { mlm: { seq_len: 24, packing: false } }\nstream: { batch_size: 6, shuffle: { window_rows: 30 } }\n";
    check_elastic(t.path(), yaml, &worlds);
    // Many small row groups, shuffled by row group.
    let g = tempdir();
    grouped_corpus(g.path());
    let yaml = "name: c\nsource: { path: a, key_column: id }\ntask: { mlm: { seq_len: 24, packing: false } }\nstream: { batch_size: 5, shuffle: { window_rows: 12 } }\n";
    check_elastic(g.path(), yaml, &[(3, 2, 5), (2, 5, 6), (5, 3, 7)]);
}

/// `corpus` in row groups of 16 rows: 15 + 11 in `a/`, 10 in `b/`.
fn grouped_corpus(d: &Path) {
    write_parquet_groups(&d.join("a/x.parquet"), &documents(230, 1), 16);
    let y: Vec<_> = documents(170, 2).into_iter().map(|(i, t)| (i + 500, t)).collect();
    write_parquet_groups(&d.join("a/y.parquet"), &y, 16);
    let z: Vec<_> = documents(150, 3).into_iter().map(|(i, t)| (i + 1000, t)).collect();
    write_parquet_groups(&d.join("b/z.parquet"), &z, 16);
}

/// The row group (numbered over both files of `a/`) a key of `grouped_corpus` comes from.
fn group_of(key: u64) -> u64 {
    if key >= 500 {
        15 + (key - 500) / 16
    } else {
        key / 16
    }
}

#[test]
fn ranks_read_only_the_row_groups_of_their_blocks() {
    let t = tempdir();
    grouped_corpus(t.path());
    let yaml = "name: c\nsource: { path: a, key_column: id }\ntask: { mlm: { seq_len: 24, packing: false } }\nstream: { batch_size: 8, shuffle: { window_rows: 10 } }\n";
    let mut all: Vec<u64> = rank_rows(t.path(), yaml, 0, 1).iter().map(|r| r.0).collect();
    all.sort();
    assert_eq!(all.len(), 400);
    for world in [2u64, 3, 5, 7] {
        let mut shares = Vec::new();
        for r in 0..world {
            let sets = vec![format!("stream.shard={{rank: {r}, world_size: {world}}}")];
            let (rt, plan) = plan(t.path(), yaml, &sets);
            let keys: Vec<u64> = flat(&collect(&rt, plan.pass_from(Split::All, StreamCursor::start(0, 1)), usize::MAX))
                .iter()
                .map(|r| r.0)
                .collect();
            let opened = plan.sources()[0].stats.row_groups_opened.load(std::sync::atomic::Ordering::Relaxed);
            // 26 row groups: a block of 400 / world rows touches at most that many groups plus
            // one at each end.
            let most = (400 / world).div_ceil(16) + 2;
            assert!(opened <= most, "rank {r} of {world} opened {opened} row groups (at most {most} hold its block)");
            shares.push(keys);
        }
        let mut union = shares.concat();
        union.sort();
        assert_eq!(union, all, "world {world}: the ranks' union is not the data, or they overlap");
        let sizes: Vec<usize> = shares.iter().map(Vec::len).collect();
        let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
        assert!(hi - lo <= 1, "world {world}: sizes {sizes:?} differ by more than one example");
    }
}

#[test]
fn a_shuffled_pass_reads_the_row_groups_in_a_new_order_each_epoch() {
    let t = tempdir();
    grouped_corpus(t.path());
    let yaml = "name: c\nsource: { path: a, key_column: id }\ntask: { mlm: { seq_len: 24, packing: false } }\nstream: { batch_size: 8, epochs: 2, shuffle: { window_rows: 8 } }\n";
    let (rt, plan) = plan(t.path(), yaml, &[]);
    let order = |epoch: u32| {
        let keys: Vec<u64> = flat(&collect(&rt, plan.pass_from(Split::All, StreamCursor::start(epoch, 1)), usize::MAX))
            .iter()
            .map(|r| r.0)
            .collect();
        // The groups in the order they are first seen.
        let mut groups: Vec<u64> = Vec::new();
        for g in keys.iter().map(|&k| group_of(k)) {
            if !groups.contains(&g) {
                groups.push(g);
            }
        }
        (keys, groups)
    };
    let (k0, g0) = order(0);
    let (k1, g1) = order(1);
    assert_eq!(g0.len(), 26, "epoch 0 visits the groups {g0:?}");
    assert_eq!(g1.len(), 26, "epoch 1 visits the groups {g1:?}");
    assert_ne!(g0, (0..26).collect::<Vec<_>>(), "the row groups were read in file order");
    assert_ne!(g0, g1, "both epochs read the row groups in the same order");
    let (mut s0, mut s1) = (k0.clone(), k1.clone());
    s0.sort();
    s1.sort();
    assert_eq!(s0, s1);
    assert_eq!(s0.len(), 400);
}

#[test]
fn grouped_sources_resume_exactly_from_any_cut() {
    let t = tempdir();
    grouped_corpus(t.path());
    let yaml = "name: c\nsource: { path: a }\ntask: { mlm: { seq_len: 24 } }\nstream: { batch_size: 7, shuffle: { window_rows: 20 } }\n";
    check_resume(t.path(), yaml, 2);
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
