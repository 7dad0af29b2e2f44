//! Turning a batch read from a file into the rows a pass hands on: example keys, rows skipped
//! (null or blank text, null images) and counted, the split and the shard applied, each row's
//! window noted, and the task's columns cast to the scan's schema.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StringViewArray, UInt64Array};
use arrow::datatypes::{DataType, SchemaRef};

use super::columns::doc_schema;
use super::open::Source;
use super::split::Sharder;
use crate::error::{Error, Result};
use crate::spec::TaskInput;

/// What decides, row by row, which rows of the current item a pass keeps.
pub(super) struct RowReader {
    pub(super) source: Arc<Source>,
    pub(super) sharder: Sharder,
    /// Whether this scan adds to the source's counters.
    pub(super) count: bool,
    /// Whether opening the current item counted its file as read.
    pub(super) counted_current: bool,
}

impl RowReader {
    /// The counters before the current batch, with the current file not yet counted as read
    /// (a scan resumed in this file counts it when it opens it).
    fn base_counts(&self) -> [u64; 7] {
        let mut c = self.source.stats.counters();
        if self.counted_current {
            c[5] = c[5].saturating_sub(1);
        }
        c
    }

    /// Ready-made examples: the task's columns, filtered by split and shard.
    pub(super) fn examples(
        &mut self,
        batch: &RecordBatch,
        fi: usize,
        row: u64,
        schema: &SchemaRef,
    ) -> Result<(RecordBatch, Vec<u64>)> {
        let columns = schema
            .fields()
            .iter()
            .map(|f| {
                batch.column_by_name(f.name()).cloned().ok_or_else(|| {
                    Error::data(format!("column `{}` disappeared from `{}`", f.name(), self.source.files[fi].relative))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let keys = columns[0].as_primitive_opt::<arrow::datatypes::UInt64Type>().ok_or_else(|| {
            Error::data(format!("`example_key` in `{}` is not UInt64", self.source.files[fi].relative))
        })?;
        let mut keep = Vec::with_capacity(batch.num_rows());
        let mut windows = Vec::new();
        let base = self.count.then(|| self.base_counts());
        for (i, &k) in keys.values().iter().enumerate() {
            let docs = windows.len() as u64;
            let (mine, w) = self.sharder.mine(k, row + i as u64, || {
                base.map(|mut c| {
                    c[0] += i as u64;
                    c[3] += docs;
                    c
                })
            });
            keep.push(mine);
            if mine {
                windows.push(w);
            }
        }
        if self.count {
            self.source.stats.rows.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
            self.source.stats.documents.fetch_add(windows.len() as u64, Ordering::Relaxed);
        }
        let out = RecordBatch::try_new(schema.clone(), columns).map_err(|e| {
            Error::data(format!("`{}` does not hold valid examples: {e}", self.source.files[fi].relative))
        })?;
        Ok((arrow::compute::filter_record_batch(&out, &BooleanArray::from(keep))?, windows))
    }

    /// The example keys of one batch of file `fi` starting at `row`.
    fn keys(&self, batch: &RecordBatch, fi: usize, row: u64) -> Result<Vec<u64>> {
        let src = &self.source;
        Ok(match &src.columns.key {
            Some(k) => {
                let col = batch.column_by_name(k).ok_or_else(|| {
                    Error::data(format!("column `{k}` disappeared from `{}`", src.files[fi].relative))
                })?;
                key_values(col).map_err(|e| {
                    Error::data_hint(
                        format!("key column `{k}` in `{}`: {e}", src.files[fi].relative),
                        "every row needs a key: fill the nulls in `source.sql` (e.g. `COALESCE(id, -1)`) or drop `key_column`",
                    )
                })?
            }
            None => {
                let file_seed = xxhash_rust::xxh3::xxh3_64(src.files[fi].relative.as_bytes());
                (0..batch.num_rows() as u64)
                    .map(|i| xxhash_rust::xxh3::xxh3_64_with_seed(&(row + i).to_le_bytes(), file_seed))
                    .collect()
            }
        })
    }

    /// Image and table rows: keys, null-image filtering, split and shard, columns cast to
    /// [`Source::scan_schema`].
    pub(super) fn records(&mut self, batch: &RecordBatch, fi: usize, row: u64) -> Result<(RecordBatch, Vec<u64>)> {
        let n = batch.num_rows();
        let keys = self.keys(batch, fi, row)?;
        let src = &self.source;
        let schema = src.scan_schema();
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .ok_or_else(|| Error::data(format!("column `{name}` disappeared from `{}`", src.files[fi].relative)))
        };
        let mut columns: Vec<ArrayRef> = vec![Arc::new(UInt64Array::from(keys.clone()))];
        let mut null_images = None;
        for field in schema.fields().iter().skip(1) {
            let name = match (field.name().as_str(), src.columns.input) {
                ("image", TaskInput::Image) => src.columns.image.as_str(),
                ("label", _) if src.columns.label.is_some() => src.columns.label.as_deref().unwrap_or("label"),
                (other, _) => other,
            };
            let col = column(name)?;
            let cast = arrow::compute::cast(col, field.data_type()).map_err(|e| {
                Error::data_hint(
                    format!(
                        "column `{name}` in `{}` cannot be read as {}: {e}",
                        src.files[fi].relative,
                        field.data_type()
                    ),
                    "fix the values, or convert the column in `source.sql`",
                )
            })?;
            if field.name() == "image" {
                null_images = cast.logical_nulls();
            }
            columns.push(cast);
        }
        let mut keep = Vec::with_capacity(n);
        let mut windows = Vec::new();
        let mut nulls = 0u64;
        let mut docs = 0u64;
        let base = self.count.then(|| self.base_counts());
        for (i, &key) in keys.iter().enumerate() {
            let ok = if null_images.as_ref().is_some_and(|b| b.is_null(i)) {
                nulls += 1;
                false
            } else {
                let (n, d) = (nulls, docs);
                let (mine, w) = self.sharder.mine(key, row + i as u64, || {
                    base.map(|mut c| {
                        c[0] += i as u64;
                        c[3] += d;
                        c[4] += n;
                        c
                    })
                });
                if mine {
                    windows.push(w);
                }
                mine
            };
            docs += ok as u64;
            keep.push(ok);
        }
        if self.count {
            src.stats.rows.fetch_add(n as u64, Ordering::Relaxed);
            src.stats.null_image.fetch_add(nulls, Ordering::Relaxed);
            src.stats.documents.fetch_add(docs, Ordering::Relaxed);
        }
        let mask = BooleanArray::from(keep);
        let columns = columns
            .iter()
            .map(|c| {
                let c = arrow::compute::filter(c, &mask)?;
                // The image column is non-null once null rows are gone; drop its validity buffer.
                Ok(if c.null_count() == 0 && c.nulls().is_some() {
                    arrow::array::make_array(c.to_data().into_builder().nulls(None).build()?)
                } else {
                    c
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((RecordBatch::try_new(schema, columns)?, windows))
    }

    /// Keys, blank/null filtering and sharding for one batch of file `fi` starting at `row`.
    pub(super) fn documents(&mut self, batch: &RecordBatch, fi: usize, row: u64) -> Result<(RecordBatch, Vec<u64>)> {
        let keys = self.keys(batch, fi, row)?;
        let src = &self.source;
        let n = batch.num_rows();
        let text = batch.column_by_name(&src.columns.text).ok_or_else(|| {
            Error::data(format!("column `{}` disappeared from `{}`", src.columns.text, src.files[fi].relative))
        })?;
        let text = arrow::compute::cast(text, &DataType::Utf8View)?;
        let text = text.as_string_view();
        let mut keep = Vec::with_capacity(n);
        let mut windows = Vec::new();
        let (mut nulls, mut blanks, mut docs) = (0u64, 0u64, 0u64);
        let base = self.count.then(|| self.base_counts());
        for (i, &key) in keys.iter().enumerate() {
            let ok = if text.is_null(i) {
                nulls += 1;
                false
            } else if text.value(i).trim().is_empty() {
                blanks += 1;
                false
            } else {
                let (n, b, d) = (nulls, blanks, docs);
                let (mine, w) = self.sharder.mine(key, row + i as u64, || {
                    base.map(|mut c| {
                        c[0] += i as u64;
                        c[1] += n;
                        c[2] += b;
                        c[3] += d;
                        c
                    })
                });
                if mine {
                    windows.push(w);
                }
                docs += mine as u64;
                mine
            };
            keep.push(ok);
        }
        if self.count {
            src.stats.rows.fetch_add(n as u64, Ordering::Relaxed);
            src.stats.null_text.fetch_add(nulls, Ordering::Relaxed);
            src.stats.blank_text.fetch_add(blanks, Ordering::Relaxed);
            src.stats.documents.fetch_add(docs, Ordering::Relaxed);
        }
        let mask = BooleanArray::from(keep);
        let keys: ArrayRef = Arc::new(UInt64Array::from(keys));
        let keys = arrow::compute::filter(&keys, &mask)?;
        let text = arrow::compute::filter(text as &dyn Array, &mask)?;
        // Filtering keeps the view buffers; drop the validity so the column is non-null.
        let text: StringViewArray = text.as_string_view().clone();
        let (views, buffers, _) = text.into_parts();
        let text = StringViewArray::try_new(views, buffers, None)?;
        Ok((RecordBatch::try_new(doc_schema(), vec![keys, Arc::new(text)])?, windows))
    }
}

/// The example key of each row from the key column: integers as themselves (negative values
/// reinterpreted as u64), anything else a stable xxh3 hash of its string form. Nulls are an
/// error: rows without a key would share one key and one random stream.
fn key_values(col: &ArrayRef) -> std::result::Result<Vec<u64>, String> {
    use arrow::datatypes::*;
    if col.null_count() > 0 {
        return Err(format!("{} null value(s)", col.null_count()));
    }
    let n = col.len();
    let v: Vec<u64> = match col.data_type() {
        DataType::Int8 => col.as_primitive::<Int8Type>().values().iter().map(|&v| v as i64 as u64).collect(),
        DataType::Int16 => col.as_primitive::<Int16Type>().values().iter().map(|&v| v as i64 as u64).collect(),
        DataType::Int32 => col.as_primitive::<Int32Type>().values().iter().map(|&v| v as i64 as u64).collect(),
        DataType::Int64 => col.as_primitive::<Int64Type>().values().iter().map(|&v| v as u64).collect(),
        DataType::UInt8 => col.as_primitive::<UInt8Type>().values().iter().map(|&v| v as u64).collect(),
        DataType::UInt16 => col.as_primitive::<UInt16Type>().values().iter().map(|&v| v as u64).collect(),
        DataType::UInt32 => col.as_primitive::<UInt32Type>().values().iter().map(|&v| v as u64).collect(),
        DataType::UInt64 => col.as_primitive::<UInt64Type>().values().to_vec(),
        _ => {
            let strings = arrow::compute::cast(col, &DataType::Utf8View).map_err(|e| e.to_string())?;
            let strings = strings.as_string_view();
            (0..n).map(|i| xxhash_rust::xxh3::xxh3_64(strings.value(i).as_bytes())).collect()
        }
    };
    Ok(v)
}
