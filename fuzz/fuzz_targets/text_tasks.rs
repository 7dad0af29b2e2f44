//! Every text objective's `apply` on arbitrary documents, row lengths and settings: no panic,
//! one output row per input row, each of the task's width.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pretext::stream::{Packer, Packing};
use pretext::task::causal::Causal;
use pretext::task::contrastive::{Contrastive, Views};
use pretext::task::denoise::Denoise;
use pretext::task::span::Span;
use pretext::task::{list_values, Task, TaskContext};
use pretext::tokenize::batch::tokenized_batch;

const PAD: u32 = 0;

fuzz_target!(|data: &[u8]| {
    if data.len() < 12 {
        return;
    }
    let (head, body) = data.split_at(12);
    let len = 4 + head[0] as usize % 96;
    let seed = u64::from_le_bytes(head[1..9].try_into().unwrap());
    let share = |b: u8| b as f64 / 255.0;
    // Documents: token ids 5.., a zero byte ends one.
    let docs: Vec<Vec<i32>> = body.split(|&b| b == 0).map(|d| d.iter().map(|&b| 4 + b as i32).collect()).collect();
    let cx = TaskContext { seed, epoch: 0 };
    let rows = |width: usize, mode: Packing, eos: bool| {
        let keys: Vec<u64> = (0..docs.len() as u64).collect();
        let ids: Vec<Vec<i32>> = docs
            .iter()
            .map(|d| if eos { [d.clone(), vec![2]].concat() } else { [vec![1], d.clone(), vec![3]].concat() })
            .collect();
        let special: Vec<Vec<i8>> = ids.iter().map(|d| d.iter().map(|&i| (i < 5) as i8).collect()).collect();
        let batch = tokenized_batch(&keys, &ids, &special, None);
        let mut p = Packer::with_mode(width, mode, false, PAD);
        let mut out = p.push(&batch).unwrap();
        out.extend(p.finish().unwrap());
        arrow_concat(out)
    };
    let check = |task: &dyn Task, input: Option<arrow::array::RecordBatch>, width: usize, column: &str| {
        let Some(input) = input else { return };
        let keys: Vec<u64> = (0..input.num_rows() as u64).collect();
        let out = task.apply(&input, &keys, &cx).unwrap();
        assert_eq!(out.num_rows(), input.num_rows());
        assert_eq!(list_values(&out, column).unwrap().len(), out.num_rows() * width);
    };
    match head[9] % 4 {
        0 => {
            let task = Causal::new(len, 2, head[10] & 1 == 1, head[10] & 2 == 2);
            let mode = if head[10] & 4 == 4 { Packing::BestFit } else { Packing::Greedy };
            check(&task, rows(len, mode, true), len, "input_ids");
        }
        1 => {
            let lo = 1 + head[10] as usize % 20;
            let views = Views {
                crop: Some((lo, lo + head[11] as usize % 30)),
                token_dropout: share(head[11]),
                mask_prob: share(head[10]),
                identical: false,
            };
            let task = Contrastive::new(len, views, Some(4), PAD);
            check(&task, rows(len, Packing::PerDocument, false), len, "input_ids_a");
        }
        2 => {
            let task = Denoise::new(
                len,
                share(head[10]) * 0.9,
                0.5 + share(head[11]) * 5.0,
                share(head[11]) * 0.9,
                head[10] & 1 == 1,
                4,
                PAD,
                vec![false; 300],
            )
            .unwrap();
            check(&task, rows(len, Packing::PerDocument, false), len, "input_ids");
        }
        _ => {
            let seq_len = len.max(8);
            let sentinels: Vec<i32> = (0..100).map(|k| 999 - k).collect();
            let task = Span::new(seq_len, 0.05 + share(head[10]) * 0.5, 1.0 + share(head[11]) * 5.0, sentinels, 2, PAD);
            check(&task, rows(task.raw_len, Packing::Greedy, true), seq_len, "input_ids");
        }
    }
});

fn arrow_concat(batches: Vec<arrow::array::RecordBatch>) -> Option<arrow::array::RecordBatch> {
    let first = batches.first()?.schema();
    Some(arrow::compute::concat_batches(&first, &batches).unwrap())
}
