//! Token lists → fixed-length rows. With packing, documents are concatenated (each already
//! carries its `[CLS] … [SEP]`) and cut into rows of `seq_len`, like `run_mlm.py`'s `group_texts`
//! but keeping the tail (padded); without, each document becomes one padded row.

use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch, UInt64Array};
use arrow::datatypes::{DataType, Field, Int32Type, Int8Type, Schema, SchemaRef};

use crate::error::{Error, Result};
use crate::task::{fixed_list, fixed_list_field};

/// Schema of packed rows: `example_key`, `input_ids`, `attention_mask`, `special_tokens_mask`,
/// and `word_ids` (row-local word groups, −1 for special tokens) when whole-word masking needs it.
pub fn rows_schema(seq_len: usize, words: bool) -> SchemaRef {
    let mut fields = vec![
        Field::new("example_key", DataType::UInt64, false),
        fixed_list_field("input_ids", seq_len),
        fixed_list_field("attention_mask", seq_len),
        fixed_list_field("special_tokens_mask", seq_len),
    ];
    if words {
        fields.push(fixed_list_field("word_ids", seq_len));
    }
    Arc::new(Schema::new(fields))
}

/// The key of a packed row: derived from the key of the document it starts in and the token
/// offset inside that document, so it is stable under any re-batching.
pub fn row_key(doc_key: u64, offset: usize) -> u64 {
    if offset == 0 {
        doc_key
    } else {
        xxhash_rust::xxh3::xxh3_64_with_seed(&(offset as u64).to_le_bytes(), doc_key)
    }
}

#[derive(Default)]
struct Rows {
    keys: Vec<u64>,
    ids: Vec<i32>,
    attention: Vec<i32>,
    special: Vec<i32>,
    words: Vec<i32>,
}

/// Values (tokens) of completed rows after which [`Packer::push`] hands a batch on.
pub const ROWS_BUDGET: usize = 1 << 18;

/// How documents become rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packing {
    /// Concatenate and chunk; documents split across rows; only the last row is padded.
    Greedy,
    /// Best-fit decreasing over windows of [`BEST_FIT_WINDOW`] documents: pieces shorter than a
    /// row are kept whole; longer documents first give full rows.
    BestFit,
    /// One (truncated) document per padded row.
    PerDocument,
}

/// Documents considered together by best-fit packing.
pub const BEST_FIT_WINDOW: usize = 1024;

/// A document piece waiting for best-fit packing.
struct Piece {
    key: u64,
    ids: Vec<i32>,
    special: Vec<i8>,
}

/// Cuts tokenized documents into rows; holds the partial row between batches.
pub struct Packer {
    seq_len: usize,
    packing: bool,
    best_fit: bool,
    pieces: Vec<Piece>,
    pub padding: u64,
    words: bool,
    pad: i32,
    schema: SchemaRef,
    done: Rows,
    /// Fill of the partial row (its tokens are the tail of `done`'s vectors past the full rows).
    fill: usize,
    /// Row-local word group counter and the (document, word) it was last assigned to.
    group: i32,
    last_word: (u64, i32),
    doc_seq: u64,
    pub tokens_in: u64,
}

impl Packer {
    #[cfg(any(test, feature = "internals"))]
    pub fn new(seq_len: usize, packing: bool, words: bool, pad: u32) -> Self {
        Self::with_mode(seq_len, if packing { Packing::Greedy } else { Packing::PerDocument }, words, pad)
    }

    pub fn with_mode(seq_len: usize, mode: Packing, words: bool, pad: u32) -> Self {
        Packer {
            seq_len,
            packing: mode != Packing::PerDocument,
            best_fit: mode == Packing::BestFit,
            pieces: Vec::new(),
            padding: 0,
            words,
            pad: pad as i32,
            schema: rows_schema(seq_len, words),
            done: Rows::default(),
            fill: 0,
            group: -1,
            last_word: (u64::MAX, -1),
            doc_seq: 0,
            tokens_in: 0,
        }
    }

    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Adds a batch of tokenized documents; returns the rows completed so far, in batches of at
    /// most [`ROWS_BUDGET`] values each so a huge document or `seq_len` keeps memory bounded.
    pub fn push(&mut self, batch: &RecordBatch) -> Result<Vec<RecordBatch>> {
        let keys = batch.column(0).as_primitive::<arrow::datatypes::UInt64Type>();
        let ids = batch.column(1).as_list::<i32>();
        let special = batch.column(2).as_list::<i32>();
        let words = if self.words { Some(batch.column(3).as_list::<i32>()) } else { None };
        let id_values = ids.values().as_primitive::<Int32Type>().values();
        let special_values = special.values().as_primitive::<Int8Type>().values();
        let word_values = words.map(|w| w.values().as_primitive::<Int32Type>().values());
        let offsets = ids.value_offsets();
        let mut out = Vec::new();
        for d in 0..batch.num_rows() {
            let (start, end) = (offsets[d] as usize, offsets[d + 1] as usize);
            self.doc_seq += 1;
            self.tokens_in += (end - start) as u64;
            if self.best_fit {
                self.add_piece(keys.value(d), &id_values[start..end], &special_values[start..end]);
                if self.pieces.len() >= BEST_FIT_WINDOW {
                    self.pack_best_fit();
                }
            } else {
                self.push_doc(
                    keys.value(d),
                    &id_values[start..end],
                    &special_values[start..end],
                    word_values.map(|w| &w[start..end]),
                );
            }
            if !self.packing {
                self.pad_row();
            }
            if self.done.ids.len() >= ROWS_BUDGET {
                out.extend(self.take_full()?);
            }
        }
        out.extend(self.take_full()?);
        Ok(out)
    }

    fn push_doc(&mut self, key: u64, ids: &[i32], special: &[i8], words: Option<&[i32]>) {
        let l = self.seq_len;
        let mut off = 0;
        while off < ids.len() {
            if self.fill == 0 {
                self.done.keys.push(row_key(key, off));
                self.group = -1;
                self.last_word = (u64::MAX, -1);
            }
            let take = (l - self.fill).min(ids.len() - off);
            let r = off..off + take;
            self.done.ids.extend_from_slice(&ids[r.clone()]);
            self.done.special.extend(special[r.clone()].iter().map(|&s| s as i32));
            self.done.attention.extend(std::iter::repeat_n(1, take));
            if let Some(words) = words {
                for (&w, &sp) in words[r.clone()].iter().zip(&special[r]) {
                    if sp != 0 {
                        self.done.words.push(-1);
                        continue;
                    }
                    if w < 0 {
                        // A non-special token outside any word is a word of its own (as in HF).
                        self.group += 1;
                        self.last_word = (self.doc_seq, -1);
                        self.done.words.push(self.group);
                        continue;
                    }
                    if (self.doc_seq, w) != self.last_word {
                        self.group += 1;
                        self.last_word = (self.doc_seq, w);
                    }
                    self.done.words.push(self.group);
                }
            }
            self.fill += take;
            off += take;
            if self.fill == l {
                self.fill = 0;
            }
        }
    }

    /// Full rows of a long document go out at once; the rest waits for best-fit packing.
    fn add_piece(&mut self, key: u64, ids: &[i32], special: &[i8]) {
        let l = self.seq_len;
        let full = ids.len() / l * l;
        if full > 0 {
            self.push_doc(key, &ids[..full], &special[..full], None);
        }
        if full < ids.len() {
            self.pieces.push(Piece {
                key: row_key(key, full),
                ids: ids[full..].to_vec(),
                special: special[full..].to_vec(),
            });
        }
    }

    /// Best-fit decreasing: longest pieces first, each into the open row with the least room
    /// that still fits it; rows come out in the order they were opened.
    fn pack_best_fit(&mut self) {
        let l = self.seq_len;
        let pieces = std::mem::take(&mut self.pieces);
        let mut order: Vec<usize> = (0..pieces.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(pieces[i].ids.len()));
        let mut rows: Vec<(usize, Vec<usize>)> = Vec::new();
        for i in order {
            let len = pieces[i].ids.len();
            let best = rows.iter_mut().filter(|(room, _)| *room >= len).min_by_key(|(room, _)| *room);
            match best {
                Some((room, members)) => {
                    *room -= len;
                    members.push(i);
                }
                None => rows.push((l - len, vec![i])),
            }
        }
        for (_, members) in rows {
            for (j, &i) in members.iter().enumerate() {
                let p = &pieces[i];
                if j == 0 {
                    self.done.keys.push(p.key);
                }
                self.done.ids.extend_from_slice(&p.ids);
                self.done.special.extend(p.special.iter().map(|&s| s as i32));
                self.done.attention.extend(std::iter::repeat_n(1, p.ids.len()));
                self.fill += p.ids.len();
            }
            self.pad_row();
        }
    }

    /// Pads the partial row, if any, to `seq_len`.
    fn pad_row(&mut self) {
        if self.fill == 0 {
            return;
        }
        let n = self.seq_len - self.fill;
        self.padding += n as u64;
        self.done.ids.extend(std::iter::repeat_n(self.pad, n));
        self.done.special.extend(std::iter::repeat_n(1, n));
        self.done.attention.extend(std::iter::repeat_n(0, n));
        if self.words {
            self.done.words.extend(std::iter::repeat_n(-1, n));
        }
        self.fill = 0;
    }

    /// Pads and returns the last partial row at the end of the stream.
    pub fn finish(&mut self) -> Result<Option<RecordBatch>> {
        if self.best_fit {
            self.pack_best_fit();
        }
        self.pad_row();
        self.take_full()
    }

    fn take_full(&mut self) -> Result<Option<RecordBatch>> {
        let l = self.seq_len;
        let full = if self.fill == 0 { self.done.keys.len() } else { self.done.keys.len() - 1 };
        if full == 0 {
            return Ok(None);
        }
        let n = full * l;
        // The rows handed on keep no spare capacity (their Arrow buffer holds the whole
        // allocation, up to twice the values after doubling); the rest gets room for as many
        // values again, so the next batch seldom grows.
        let split = |v: &mut Vec<i32>| {
            let mut rest = Vec::with_capacity(n + l);
            rest.extend_from_slice(&v[n..]);
            v.truncate(n);
            v.shrink_to_fit();
            std::mem::replace(v, rest)
        };
        let rest_keys = self.done.keys.split_off(full);
        let keys = std::mem::replace(&mut self.done.keys, rest_keys);
        let mut columns = vec![
            Arc::new(UInt64Array::from(keys)) as Arc<dyn Array>,
            fixed_list(split(&mut self.done.ids), l),
            fixed_list(split(&mut self.done.attention), l),
            fixed_list(split(&mut self.done.special), l),
        ];
        if self.words {
            columns.push(fixed_list(split(&mut self.done.words), l));
        }
        RecordBatch::try_new(self.schema.clone(), columns)
            .map(Some)
            .map_err(|e| Error::internal(format!("packed rows: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenize::batch::tokenized_batch;

    #[test]
    fn packs_across_documents_and_pads_the_tail() {
        let mut p = Packer::new(4, true, false, 0);
        let b = tokenized_batch(&[7, 8], &[vec![1, 2, 3], vec![4, 5, 6]], &[vec![1, 0, 1], vec![1, 0, 1]], None);
        let out = p.push(&b).unwrap().pop().unwrap();
        let _ = Packing::Greedy;
        assert_eq!(out.num_rows(), 1);
        assert_eq!(crate::task::list_values(&out, "input_ids").unwrap(), &[1, 2, 3, 4]);
        assert_eq!(out.column(0).as_primitive::<arrow::datatypes::UInt64Type>().value(0), 7);
        let tail = p.finish().unwrap().unwrap();
        assert_eq!(crate::task::list_values(&tail, "input_ids").unwrap(), &[5, 6, 0, 0]);
        assert_eq!(crate::task::list_values(&tail, "attention_mask").unwrap(), &[1, 1, 0, 0]);
        assert_eq!(tail.column(0).as_primitive::<arrow::datatypes::UInt64Type>().value(0), row_key(8, 1));
        assert!(p.finish().unwrap().is_none());
    }
}

#[cfg(test)]
mod best_fit_tests {
    use super::*;
    use crate::tokenize::batch::tokenized_batch;

    #[test]
    fn best_fit_keeps_short_documents_whole() {
        let mut p = Packer::with_mode(8, Packing::BestFit, false, 0);
        let docs = vec![vec![1; 5], vec![2; 3], vec![3; 6], vec![4; 2], vec![5; 11]];
        let special: Vec<Vec<i8>> = docs.iter().map(|d| vec![0; d.len()]).collect();
        let b = tokenized_batch(&[1, 2, 3, 4, 5], &docs, &special, None);
        let mut out = p.push(&b).unwrap();
        out.extend(p.finish().unwrap());
        let ids: Vec<i32> =
            out.iter().flat_map(|b| crate::task::list_values(b, "input_ids").unwrap().to_vec()).collect();
        let rows: Vec<&[i32]> = ids.chunks(8).collect();
        // 11 → one full row of 5s + a piece of 3; pieces 6,5,3,3,2 → [3×6, 4×2], [1×5, 2×3], [5×3].
        assert_eq!(rows[0], &[5; 8]);
        assert_eq!(rows[1], &[3, 3, 3, 3, 3, 3, 4, 4]);
        assert_eq!(rows[2], &[1, 1, 1, 1, 1, 2, 2, 2]);
        assert_eq!(rows[3], &[5, 5, 5, 0, 0, 0, 0, 0]);
        assert_eq!(p.padding, 5);
    }
}
