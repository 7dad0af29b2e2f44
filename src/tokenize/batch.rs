//! Tokenizing a batch of documents: text cut into jobs of bounded size, each job's documents
//! encoded into list columns of token ids (and special-token masks, and word ids for
//! whole-word masking), keys kept.

use std::sync::Arc;

use arrow::array::{Array, AsArray, Int32Array, Int8Array, ListArray, RecordBatch};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use futures::StreamExt;

use super::{Encoded, Framing, TextTokenizer};
use crate::error::{Error, Result};
use crate::ground::batches::BatchStream;

/// Schema of tokenized documents: `example_key`, `input_ids: List<Int32>`,
/// `special_tokens_mask: List<Int8>` and, when asked for, `word_ids: List<Int32>`.
pub fn tokens_schema(words: bool) -> SchemaRef {
    let mut fields = vec![
        Field::new("example_key", DataType::UInt64, false),
        Field::new("input_ids", DataType::List(Arc::new(Field::new("item", DataType::Int32, false))), false),
        Field::new("special_tokens_mask", DataType::List(Arc::new(Field::new("item", DataType::Int8, false))), false),
    ];
    if words {
        fields.push(Field::new(
            "word_ids",
            DataType::List(Arc::new(Field::new("item", DataType::Int32, false))),
            false,
        ));
    }
    Arc::new(Schema::new(fields))
}

/// Builds a tokenized batch from plain vectors (tests and benches).
#[cfg(any(test, feature = "internals"))]
pub fn tokenized_batch(keys: &[u64], ids: &[Vec<i32>], special: &[Vec<i8>], words: Option<&[Vec<i32>]>) -> RecordBatch {
    let offsets = OffsetBuffer::from_lengths(ids.iter().map(Vec::len));
    let mut cols: Vec<Arc<dyn Array>> = vec![
        Arc::new(arrow::array::UInt64Array::from(keys.to_vec())),
        Arc::new(ListArray::new(
            Arc::new(Field::new("item", DataType::Int32, false)),
            offsets.clone(),
            Arc::new(Int32Array::from(ids.concat())),
            None,
        )),
        Arc::new(ListArray::new(
            Arc::new(Field::new("item", DataType::Int8, false)),
            offsets.clone(),
            Arc::new(Int8Array::from(special.concat())),
            None,
        )),
    ];
    if let Some(w) = words {
        cols.push(Arc::new(ListArray::new(
            Arc::new(Field::new("item", DataType::Int32, false)),
            offsets,
            Arc::new(Int32Array::from(w.concat())),
            None,
        )));
    }
    RecordBatch::try_new(tokens_schema(words.is_some()), cols).expect("consistent test batch")
}

/// Tokenizes one batch of documents (`example_key`, `text`).
pub fn tokenize_batch(
    tok: &TextTokenizer,
    batch: &RecordBatch,
    framing: Framing,
    max_len: Option<usize>,
    words: bool,
) -> Result<RecordBatch> {
    let keys = batch.column(0).clone();
    let text = batch.column(1).as_string_view();
    let mut enc = Encoded::default();
    let mut offsets = Vec::with_capacity(text.len() + 1);
    offsets.push(0i32);
    for i in 0..text.len() {
        tok.encode_framed(text.value(i), framing, max_len, words, &mut enc)?;
        let end = i32::try_from(enc.ids.len())
            .map_err(|_| Error::data("a batch of documents has more than 2^31 tokens; lower the source batch size"))?;
        offsets.push(end);
    }
    let offsets = OffsetBuffer::new(offsets.into());
    let mut cols: Vec<Arc<dyn Array>> = vec![
        keys,
        Arc::new(ListArray::new(
            Arc::new(Field::new("item", DataType::Int32, false)),
            offsets.clone(),
            Arc::new(Int32Array::from(enc.ids)),
            None,
        )),
        Arc::new(ListArray::new(
            Arc::new(Field::new("item", DataType::Int8, false)),
            offsets.clone(),
            Arc::new(Int8Array::from(enc.special)),
            None,
        )),
    ];
    if words {
        cols.push(Arc::new(ListArray::new(
            Arc::new(Field::new("item", DataType::Int32, false)),
            offsets,
            Arc::new(Int32Array::from(enc.words)),
            None,
        )));
    }
    Ok(RecordBatch::try_new(tokens_schema(words), cols)?)
}

/// Text per tokenizer job. Rows come in batches of a fixed count, and a batch of long documents
/// can hold most of a corpus (one of 4096 rows held 11 of a corpus's 20 MB): as one job, it
/// would run on one core while the others wait.
pub const TOKENIZE_JOB_BYTES: usize = 512 << 10;

/// Cuts batches of documents (`example_key`, `text: Utf8View`) into zero-copy slices of at most
/// `max_bytes` of text (or one document, if longer).
pub fn split_text(input: BatchStream, max_bytes: usize) -> BatchStream {
    let schema = input.schema();
    let out = input
        .map(move |item| {
            let pieces = match item {
                Err(e) => vec![Err(e)],
                Ok(batch) => {
                    let text = batch.column(1).as_string_view();
                    let mut pieces = Vec::new();
                    let (mut start, mut bytes) = (0, 0);
                    for (i, view) in text.views().iter().enumerate() {
                        // The low 32 bits of a view are the string's length.
                        let len = *view as u32 as usize;
                        if i > start && bytes + len > max_bytes {
                            pieces.push(Ok(batch.slice(start, i - start)));
                            (start, bytes) = (i, 0);
                        }
                        bytes += len;
                    }
                    if start > 0 {
                        pieces.push(Ok(batch.slice(start, batch.num_rows() - start)));
                    } else {
                        pieces.push(Ok(batch));
                    }
                    pieces
                }
            };
            futures::stream::iter(pieces)
        })
        .flatten();
    BatchStream::new(schema, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ground::batches::docs;

    #[test]
    fn text_is_cut_into_jobs_of_bounded_size_without_losing_a_row() {
        let texts = ["aaaa", "bb", "cccccccccc", "d", "ee", "", "ffff"];
        let batch = docs(&texts);
        let input = BatchStream::new(batch.schema(), futures::stream::iter(vec![Ok(batch.clone()), Ok(docs(&[]))]));
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let out: Vec<RecordBatch> = rt.block_on(split_text(input, 6).map(|b| b.unwrap()).collect());
        let sizes: Vec<Vec<usize>> =
            out.iter().map(|b| b.column(1).as_string_view().iter().map(|s| s.unwrap().len()).collect()).collect();
        // At most 6 bytes a piece, a longer document alone; the empty batch passes through.
        assert_eq!(sizes, vec![vec![4, 2], vec![10], vec![1, 2, 0], vec![4], vec![]]);
        let rows: Vec<&RecordBatch> = out.iter().filter(|b| b.num_rows() > 0).collect();
        let joined = arrow::compute::concat_batches(&batch.schema(), rows).unwrap();
        assert_eq!(joined, batch);
    }
}
