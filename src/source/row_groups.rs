//! Row groups as the unit of reading, shuffling and sharding, for Parquet-family sources
//! (`parquet`, `delta`, `pretext`) without `sql`.
//!
//! Every file's footer is read once when the source opens; its row groups, in file order, then
//! lay out the rows of a pass. A shuffled pass reads the row groups in a seeded permutation,
//! and a rank reads only the row groups holding its block of rows (see [`super::split::Blocks`]). Each row
//! group is fetched with the footer already known, which on an object store is one ranged
//! request for its columns, the next ones fetched while the current one streams.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::runtime::SpawnedTask;
use datafusion::scalar::ScalarValue;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryFutureExt, TryStreamExt};
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::arrow::{ParquetRecordBatchStreamBuilder, ProjectionMask};
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};

use super::flat;
use super::layout::{not_parquet, read_failed, RowGroup, SourceFile};
use super::store::Remote;
use crate::error::{Error, Result};
use crate::ground::batches::BatchStream;

/// Rows per decoded batch.
const BATCH_ROWS: usize = 4096;

/// Footers fetched at once when a source on an object store opens.
const FOOTER_FETCHES: usize = 16;

/// The row groups of a source's files and what reading them needs.
#[derive(Debug)]
pub struct RowGroups {
    store: Arc<dyn ObjectStore>,
    locations: Vec<StorePath>,
    footers: Vec<ArrowReaderMetadata>,
    /// Whether the files are on an object store.
    remote: bool,
    /// Every row group, file by file.
    pub groups: Vec<RowGroup>,
    /// Rows in all files.
    pub rows: u64,
}

/// Objects on a store up to this size are fetched whole, once, when their first row group is
/// read: a request costs far more than its bytes, so several row groups of a small file should
/// not each pay for one.
const WHOLE_OBJECT_BYTES: u64 = 32 << 20;

/// How many bytes of whole objects stay cached for their other row groups.
const CACHED_OBJECT_BYTES: u64 = 128 << 20;

/// A whole object, fetched by the first reader that needs it.
type Whole = Arc<tokio::sync::OnceCell<bytes::Bytes>>;

/// Whole small objects, most recent last, shared by the readers of one scan (so each pass
/// fetches an object once, and no pass is served from an earlier one's memory).
#[derive(Debug, Default)]
pub struct ObjectCache {
    /// (file, bytes, its contents once fetched).
    entries: std::sync::Mutex<std::collections::VecDeque<(usize, u64, Whole)>>,
}

impl ObjectCache {
    /// The cell holding file `file` (`size` bytes), made (and older ones evicted) when missing.
    fn cell(&self, file: usize, size: u64) -> Whole {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, _, cell)) = entries.iter().find(|(f, _, _)| *f == file) {
            return cell.clone();
        }
        let cell = Arc::new(tokio::sync::OnceCell::new());
        entries.push_back((file, size, cell.clone()));
        let mut total: u64 = entries.iter().map(|(_, s, _)| s).sum();
        while total > CACHED_OBJECT_BYTES && entries.len() > 1 {
            if let Some((_, s, _)) = entries.pop_front() {
                total -= s;
            }
        }
        cell
    }
}

/// Ranged reads of one object of known size (what `parquet`'s async reader needs): the column
/// chunks of a row group arrive in one `get_ranges` call, which merges nearby ranges; a small
/// object on a store is fetched whole into `whole` instead.
#[derive(Clone)]
struct ObjectReader {
    store: Arc<dyn ObjectStore>,
    path: StorePath,
    size: u64,
    whole: Option<Whole>,
}

fn external(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for ObjectReader {
    fn get_bytes(&mut self, range: std::ops::Range<u64>) -> BoxFuture<'_, parquet::errors::Result<bytes::Bytes>> {
        self.store.get_range(&self.path, range).map_err(external).boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<std::ops::Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<bytes::Bytes>>> {
        async move {
            let Some(whole) = &self.whole else {
                return self.store.get_ranges(&self.path, &ranges).await.map_err(external);
            };
            let (store, path) = (&self.store, &self.path);
            let all = whole
                .get_or_try_init(|| async move { store.get(path).await?.bytes().await })
                .await
                .map_err(external)?;
            ranges
                .iter()
                .map(|r| {
                    let (a, b) = (r.start as usize, r.end as usize);
                    if b > all.len() || a > b {
                        return Err(ParquetError::General(format!(
                            "range {a}..{b} is past the end of the object ({} bytes)",
                            all.len()
                        )));
                    }
                    Ok(all.slice(a..b))
                })
                .collect()
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let reader = ParquetMetaDataReader::new().with_arrow_reader_options(options);
            Ok(Arc::new(reader.load_and_finish(self, size).await?))
        }
        .boxed()
    }
}

impl RowGroups {
    /// Reads every file's footer (local files directly, objects 16 at a time).
    pub async fn load(files: &[SourceFile], remote: Option<&Remote>) -> Result<RowGroups> {
        let (store, locations): (Arc<dyn ObjectStore>, Vec<StorePath>) = match remote {
            Some(r) => {
                let base = r.base.as_str().trim_end_matches('/').to_string();
                let locations = files
                    .iter()
                    .map(|f| {
                        let url = f.path.to_string_lossy();
                        let key = url.strip_prefix(&base).unwrap_or(&url).trim_start_matches('/');
                        StorePath::parse(key).map_err(|e| Error::data(format!("`{url}`: {e}")))
                    })
                    .collect::<Result<_>>()?;
                (r.store.clone(), locations)
            }
            None => {
                let locations = files
                    .iter()
                    .map(|f| {
                        let abs = std::fs::canonicalize(&f.path).map_err(|e| Error::io(&f.path, "open", e))?;
                        StorePath::from_absolute_path(&abs).map_err(|e| not_parquet(f, e))
                    })
                    .collect::<Result<_>>()?;
                (Arc::new(object_store::local::LocalFileSystem::new()), locations)
            }
        };
        let footers: Vec<ArrowReaderMetadata> = if remote.is_none() {
            files
                .iter()
                .map(|f| {
                    let file = std::fs::File::open(&f.path).map_err(|e| Error::io(&f.path, "open", e))?;
                    ArrowReaderMetadata::load(&file, ArrowReaderOptions::new()).map_err(|e| not_parquet(f, e))
                })
                .collect::<Result<_>>()?
        } else {
            futures::stream::iter(files.iter().zip(&locations).map(|(f, loc)| {
                let mut reader = ObjectReader { store: store.clone(), path: loc.clone(), size: f.bytes, whole: None };
                async move {
                    ArrowReaderMetadata::load_async(&mut reader, ArrowReaderOptions::new())
                        .await
                        .map_err(|e| not_parquet(f, e))
                }
            }))
            .buffered(FOOTER_FETCHES)
            .try_collect()
            .await?
        };
        let mut groups = Vec::new();
        let mut rows = 0;
        for (file, footer) in footers.iter().enumerate() {
            let mut first_row = 0;
            for (index, rg) in footer.metadata().row_groups().iter().enumerate() {
                let n = rg.num_rows().max(0) as u64;
                groups.push(RowGroup { file, index, first_row, rows: n });
                first_row += n;
            }
            rows += first_row;
        }
        // Strings and binaries decode as views into the pages (no copy), as DataFusion reads them.
        let footers = footers
            .into_iter()
            .zip(files)
            .map(|(footer, f)| {
                let schema = Schema::new_with_metadata(
                    footer
                        .schema()
                        .fields()
                        .iter()
                        .map(|fl| match fl.data_type() {
                            DataType::Utf8 | DataType::LargeUtf8 => {
                                Arc::new(fl.as_ref().clone().with_data_type(DataType::Utf8View))
                            }
                            DataType::Binary | DataType::LargeBinary => {
                                Arc::new(fl.as_ref().clone().with_data_type(DataType::BinaryView))
                            }
                            _ => fl.clone(),
                        })
                        .collect::<Vec<_>>(),
                    footer.schema().metadata().clone(),
                );
                let options = ArrowReaderOptions::new().with_schema(Arc::new(schema));
                ArrowReaderMetadata::try_new(footer.metadata().clone(), options).map_err(|e| not_parquet(f, e))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RowGroups { store, locations, footers, remote: remote.is_some(), groups, rows })
    }

    /// A cache of whole small objects for one scan that reads the row groups in file order
    /// (`None` for local files, and for shuffled scans: those visit a file's row groups far
    /// apart, and ranged reads of the wanted columns fetch less than whole objects evicted
    /// and fetched again).
    pub fn scan_cache(&self, in_order: bool) -> Option<Arc<ObjectCache>> {
        (self.remote && in_order).then(|| Arc::new(ObjectCache::default()))
    }

    /// The compressed size of row group `g`.
    pub fn group_bytes(&self, g: RowGroup) -> u64 {
        self.footers[g.file].metadata().row_group(g.index).compressed_size().max(0) as u64
    }

    /// The Arrow schema of file `file`.
    pub fn schema(&self, file: usize) -> &SchemaRef {
        self.footers[file].schema()
    }

    /// Streams the rows of row group `g` from its row `skip`, with only the `columns` the file
    /// holds; `constants` (partition values) are appended as columns.
    pub fn open(
        &self,
        g: RowGroup,
        skip: u64,
        columns: &[String],
        constants: &[(String, ScalarValue)],
        file: &SourceFile,
        cache: Option<&ObjectCache>,
    ) -> Result<BatchStream> {
        let footer = self.footers[g.file].clone();
        let schema = footer.schema().clone();
        // The reader returns the chosen columns in the file's order.
        let mut roots: Vec<usize> =
            columns.iter().filter_map(|c| schema.fields().iter().position(|f| f.name() == c)).collect();
        roots.sort_unstable();
        roots.dedup();
        let whole = cache.filter(|_| file.bytes <= WHOLE_OBJECT_BYTES).map(|c| c.cell(g.file, file.bytes));
        let reader =
            ObjectReader { store: self.store.clone(), path: self.locations[g.file].clone(), size: file.bytes, whole };
        let chosen: Vec<Arc<Field>> = roots.iter().map(|&i| schema.fields()[i].clone()).collect();
        let read: SchemaRef = Arc::new(Schema::new(chosen.clone()));
        let generic = {
            let (footer, file, roots, read) = (footer.clone(), file.clone(), roots.clone(), read.clone());
            move |reader: ObjectReader| -> Result<BatchStream> {
                let mask =
                    ProjectionMask::roots(footer.metadata().file_metadata().schema_descr(), roots.iter().copied());
                let mut builder = ParquetRecordBatchStreamBuilder::new_with_metadata(reader, footer)
                    .with_row_groups(vec![g.index])
                    .with_projection(mask)
                    .with_batch_size(BATCH_ROWS);
                if skip > 0 {
                    builder = builder.with_offset(skip as usize);
                }
                let stream = builder.build().map_err(|e| not_parquet(&file, e))?;
                Ok(BatchStream::new(read, stream.map_err(Error::from)))
            }
        };
        // Ready-made examples and other fixed-width columns skip the generic reader.
        let stream = match flat::plan(footer.metadata(), g.index, &roots, &chosen) {
            Some(flat) => flat_group(footer.metadata().clone(), g, skip, flat, read, reader, generic),
            None => generic(reader)?,
        };
        let mut fields = chosen;
        let constants: Vec<(String, ScalarValue)> =
            constants.iter().filter(|(k, _)| !schema.fields().iter().any(|f| f.name() == k)).cloned().collect();
        fields.extend(constants.iter().map(|(k, v)| Arc::new(Field::new(k, v.data_type(), true))));
        let out: SchemaRef = Arc::new(Schema::new(fields));
        let out_schema = out.clone();
        let path = file.path.display().to_string();
        let batches = stream.map(move |r| {
            let batch = r.map_err(|e| read_failed(&path, e))?;
            if constants.is_empty() {
                return Ok(batch);
            }
            let n = batch.num_rows();
            let mut cols: Vec<ArrayRef> = batch.columns().to_vec();
            for (_, v) in &constants {
                cols.push(v.to_array_of_size(n).map_err(Error::from)?);
            }
            Ok(RecordBatch::try_new(out_schema.clone(), cols)?)
        });
        Ok(BatchStream::new(out, batches))
    }
}

/// Row group `g` read by the direct decoder (see [`flat`]): its column chunks fetched in one
/// request, decoded on the blocking pool one task per column, then handed out in batches from
/// row `skip`. A chunk that turns out not to be flat sends the row group to `generic`.
fn flat_group(
    meta: Arc<ParquetMetaData>,
    g: RowGroup,
    skip: u64,
    columns: Vec<flat::FlatColumn>,
    schema: SchemaRef,
    reader: ObjectReader,
    generic: impl FnOnce(ObjectReader) -> Result<BatchStream> + Send + 'static,
) -> BatchStream {
    let out = schema.clone();
    let mut fetch = reader.clone();
    let decoded = async move {
        let rg = meta.row_group(g.index);
        let rows = rg.num_rows().max(0) as usize;
        let ranges = columns
            .iter()
            .map(|c| {
                let (start, len) = rg.column(c.leaf).byte_range();
                start..start + len
            })
            .collect();
        let chunks = fetch.get_byte_ranges(ranges).await?;
        let tasks: Vec<_> = columns
            .into_iter()
            .zip(chunks)
            .map(|(c, chunk)| {
                let meta = meta.clone();
                SpawnedTask::spawn_blocking(move || {
                    flat::decode(chunk, meta.row_group(g.index).column(c.leaf), rows, &c)
                })
            })
            .collect();
        let mut arrays = Vec::with_capacity(tasks.len());
        for t in tasks {
            match t.join().await.map_err(|e| ParquetError::External(Box::new(e)))?? {
                Some(a) => arrays.push(a),
                None => return Ok(None),
            }
        }
        let batch = RecordBatch::try_new(schema, arrays)?;
        Ok::<_, ParquetError>(Some(batch))
    };
    let stream = futures::stream::once(async move {
        let items: futures::stream::BoxStream<'static, Result<RecordBatch>> = match decoded.await {
            Ok(Some(batch)) => {
                let n = batch.num_rows();
                let from = (skip as usize).min(n);
                let batches: Vec<_> =
                    (from..n).step_by(BATCH_ROWS).map(|a| Ok(batch.slice(a, BATCH_ROWS.min(n - a)))).collect();
                futures::stream::iter(batches).boxed()
            }
            Ok(None) => match generic(reader) {
                Ok(s) => s.boxed(),
                Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
            },
            Err(e) => futures::stream::once(async move { Err(Error::from(e)) }).boxed(),
        };
        items
    })
    .flatten();
    BatchStream::new(out, stream)
}
