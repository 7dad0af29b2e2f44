//! Writing one export's part files: rows are cut into parts of `rows_per_file`, handed to the
//! Parquet writer in chunks at fixed offsets (so a resumed export makes the same calls as an
//! uninterrupted one), hashed as they are written, synced, and stored under their final name.

use std::fs::File;
use std::path::PathBuf;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int32Type, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as PqCompression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use super::manifest::{Part, Progress, ResumePoint};
use super::target::Target;
use crate::error::{Error, Result};
use crate::spec::{Compression, ExportSpec};
use crate::stream::StreamCursor;

pub(super) fn part_name(i: usize) -> String {
    format!("part-{i:05}.parquet")
}

/// Real (non-padding) input tokens: the sum of the `attention_mask*` columns, or every
/// `input_ids` value when the task has no attention mask (span corruption).
pub(super) fn tokens_in(batch: &RecordBatch) -> u64 {
    let mut total = 0;
    let mut found = false;
    for (field, col) in batch.schema().fields().iter().zip(batch.columns()) {
        if field.name().starts_with("attention_mask") {
            if let Some(l) = col.as_fixed_size_list_opt() {
                found = true;
                total += l.values().as_primitive::<Int32Type>().values().iter().map(|&v| v as u64).sum::<u64>();
            }
        }
    }
    if !found {
        if let Some(l) = batch.column_by_name("input_ids").and_then(|c| c.as_fixed_size_list_opt()) {
            total = l.values().len() as u64;
        }
    }
    total
}

/// A failed write of a part, with the I/O error under the Parquet writer's and what to do.
fn write_error(path: &std::path::Path, e: parquet::errors::ParquetError) -> Error {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return Error::io(path, "write", std::io::Error::new(io.kind(), io.to_string()));
        }
        cause = c.source();
    }
    Error::env(format!("cannot write `{}`: {e}", path.display()))
}

pub(super) struct PartWriter {
    index: usize,
    pub(super) tmp: PathBuf,
    writer: ArrowWriter<Hashed>,
    rows: u64,
    tokens: u64,
    /// Rows per mixture member.
    sources: std::collections::BTreeMap<String, u64>,
}

/// A part file, hashed (xxh3-64) and counted as it is written, so closing it reads nothing back.
struct Hashed {
    file: File,
    hash: xxhash_rust::xxh3::Xxh3,
    bytes: u64,
}

impl Hashed {
    fn new(file: File) -> Self {
        Hashed { file, hash: xxhash_rust::xxh3::Xxh3::new(), bytes: 0 }
    }
}

impl std::io::Write for Hashed {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

pub(super) struct Writer {
    target: Target,
    /// Where the stream continues after the part being closed.
    resume: Option<ResumePoint>,
    dir: PathBuf,
    schema: SchemaRef,
    props: WriterProperties,
    rows_per_file: u64,
    chunk: usize,
    pub(super) current: Option<PartWriter>,
    pending: Vec<RecordBatch>,
    pending_rows: usize,
    pub(super) progress: Progress,
}

impl Writer {
    /// A writer that continues after `progress`'s finished parts, in `target`'s work directory.
    pub(super) fn new(
        target: Target,
        schema: SchemaRef,
        spec: &ExportSpec,
        seq_len: usize,
        progress: Progress,
    ) -> Result<Writer> {
        let props = properties(spec, &schema)?;
        // The writer is handed chunks of at most 256k values (2048 rows of 128): the Parquet writer
        // still makes row groups of `row_group_rows`, encoding as it goes, while the rows waiting
        // for a chunk, their concatenation and the writer's levels stay small. (With 4M-value
        // chunks these were the largest terms in peak memory.)
        let width = seq_len.max(1);
        let chunk = (spec.row_group_rows as usize).min(spec.rows_per_file as usize).min((1 << 18) / width).max(1);
        Ok(Writer {
            dir: target.work_dir(),
            target,
            resume: None,
            schema,
            props,
            rows_per_file: spec.rows_per_file,
            chunk,
            current: None,
            pending: Vec::new(),
            pending_rows: 0,
            progress,
        })
    }
    fn open_part(&mut self) -> Result<()> {
        let index = self.progress.parts.len();
        let tmp = self.dir.join(format!(".{}.tmp", part_name(index)));
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, "create", e))?;
        let writer = ArrowWriter::try_new(Hashed::new(file), self.schema.clone(), Some(self.props.clone()))
            .map_err(|e| Error::internal(format!("parquet writer: {e}")))?;
        self.current = Some(PartWriter { index, tmp, writer, rows: 0, tokens: 0, sources: Default::default() });
        Ok(())
    }

    /// Buffers rows and writes them in chunks that start at fixed offsets inside the part, so a
    /// resumed export calls the Parquet writer with the same slices as an uninterrupted one.
    /// `before`: the stream cursor before this batch's first row, of which `skipped` rows were
    /// dropped before `batch`; a part that ends inside the batch records where to resume.
    pub(super) async fn push(&mut self, mut batch: RecordBatch, before: &StreamCursor, skipped: u64) -> Result<()> {
        let mut consumed = skipped;
        while batch.num_rows() > 0 {
            if self.current.is_none() {
                self.open_part()?;
            }
            let part_rows = self.current.as_ref().map(|p| p.rows).unwrap_or(0);
            // A chunk is `chunk` rows, or what is left of the part: offsets inside a part are fixed.
            let target = self.chunk.min((self.rows_per_file - part_rows) as usize);
            let take = (target - self.pending_rows).min(batch.num_rows());
            self.pending.push(batch.slice(0, take));
            self.pending_rows += take;
            consumed += take as u64;
            batch = batch.slice(take, batch.num_rows() - take);
            if self.pending_rows == target {
                self.flush_chunk()?;
                if self.current.as_ref().is_some_and(|p| p.rows == self.rows_per_file) {
                    self.resume = Some(ResumePoint { cursor: before.clone(), skip: consumed });
                    self.close_part().await?;
                }
            }
        }
        Ok(())
    }

    fn flush_chunk(&mut self) -> Result<()> {
        if self.pending_rows == 0 {
            return Ok(());
        }
        let chunk = match self.pending.as_slice() {
            [one] => one.clone(),
            _ => arrow::compute::concat_batches(&self.schema, &self.pending)?,
        };
        self.pending.clear();
        self.pending_rows = 0;
        let part = self.current.as_mut().ok_or_else(|| Error::internal("chunk without a part"))?;
        part.writer.write(&chunk).map_err(|e| write_error(&part.tmp, e))?;
        part.rows += chunk.num_rows() as u64;
        part.tokens += tokens_in(&chunk);
        if let Some(d) =
            chunk.column_by_name("source").and_then(|c| c.as_dictionary_opt::<arrow::datatypes::Int16Type>())
        {
            // Keys index this chunk's dictionary (concatenation may have merged several).
            let mut per_key = vec![0u64; d.values().len()];
            for &k in d.keys().values().iter() {
                per_key[k as usize] += 1;
            }
            let names = d.values().as_string::<i32>();
            for (k, n) in per_key.into_iter().enumerate().filter(|(_, n)| *n > 0) {
                *part.sources.entry(names.value(k).to_string()).or_default() += n;
            }
        }
        Ok(())
    }

    pub(super) async fn close_part(&mut self) -> Result<()> {
        self.flush_chunk()?;
        let Some(part) = self.current.take() else { return Ok(()) };
        let file = part.writer.into_inner().map_err(|e| write_error(&part.tmp, e))?;
        file.file.sync_all().map_err(|e| Error::io(&part.tmp, "sync", e))?;
        let name = part_name(part.index);
        let done = Part {
            resume: self.resume.take(),
            file: name.clone(),
            rows: part.rows,
            tokens: part.tokens,
            sources: part.sources,
            bytes: file.bytes,
            xxh3: format!("{:016x}", file.hash.digest()),
        };
        self.target.store_part(&name, &part.tmp).await?;
        self.progress.parts.push(done);
        self.target.save_progress(&self.progress).await
    }
}

/// The Parquet writer's settings for `schema` under the export spec.
pub(super) fn properties(spec: &ExportSpec, schema: &Schema) -> Result<WriterProperties> {
    let level = ZstdLevel::try_new(spec.zstd_level).map_err(Error::internal)?;
    let compression = match spec.compression {
        Compression::Zstd => PqCompression::ZSTD(level),
        Compression::Snappy => PqCompression::SNAPPY,
        Compression::Lz4 => PqCompression::LZ4_RAW,
        Compression::None => PqCompression::UNCOMPRESSED,
    };
    // Integer and float columns are written without dictionaries: on BERT MLM rows (30k-id
    // vocabulary) a dictionary made parts 4% larger and interning was a fifth of the writer's
    // time; zstd does better on the plain values. Text columns (`source`) keep theirs.
    let mut props = WriterProperties::builder().set_dictionary_enabled(false);
    for f in schema.fields() {
        if matches!(f.data_type(), DataType::Dictionary(..) | DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
        {
            props = props.set_column_dictionary_enabled(ColumnPath::from(f.name().as_str()), true);
        }
    }
    // Min/max of token ids, labels and masks select nothing, and computing them per value was a
    // sixth of the writer's time: list columns go without; scalar ones (`example_key`) keep theirs.
    let parquet_schema = parquet::arrow::ArrowSchemaConverter::new()
        .convert(schema)
        .map_err(|e| Error::internal(format!("parquet schema: {e}")))?;
    for leaf in parquet_schema.columns().iter().filter(|c| c.max_rep_level() > 0) {
        props = props.set_column_statistics_enabled(leaf.path().clone(), EnabledStatistics::None);
    }
    Ok(props
        .set_compression(compression)
        .set_max_row_group_row_count(Some(spec.row_group_rows as usize))
        .set_created_by(format!("pretext {}", env!("CARGO_PKG_VERSION")))
        .build())
}
