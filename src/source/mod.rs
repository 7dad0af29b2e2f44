//! Rows from the data lake through DataFusion. Files are scanned one at a time in sorted order
//! (DataFusion does not promise order across partitions), each registered as the table `source`
//! for the optional SQL, so the scan order — and every key derived from it — is deterministic.
//!
//! Output: a [`BatchStream`] with columns `example_key: UInt64` and `text: Utf8View`; rows with a
//! null or blank text are skipped and counted in [`SourceStats`].

mod delta;
mod files;
mod flat;
mod store;
mod units;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, StringViewArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::runtime::SpawnedTask;
use datafusion::dataframe::DataFrame;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::*;
use futures::StreamExt;

use crate::error::{Error, Result};
use crate::spec::{Format, Member, Pipeline, SpecErrors, TaskInput};
use crate::BatchStream;
pub use delta::Snapshot as DeltaSnapshot;
pub use files::{format_of, SourceFile};
pub use store::{connect as connect_store, describe as describe_store_error, is_remote, list as list_store, Remote};
pub use units::Blocks;

/// Counters of what the source read, shared with the sink for its summary and manifest.
#[derive(Debug, Default)]
pub struct SourceStats {
    pub rows: AtomicU64,
    pub null_text: AtomicU64,
    pub blank_text: AtomicU64,
    pub documents: AtomicU64,
    /// Files whose rows `source.sql` rules out from their partition values alone: never read.
    pub files_pruned: AtomicU64,
    /// Files scanned.
    pub files_read: AtomicU64,
    /// Image tasks: rows whose image is null (skipped).
    pub null_image: AtomicU64,
    /// Image tasks: images that could not be decoded (skipped), and the first few of them.
    pub undecodable: AtomicU64,
    pub undecodable_examples: std::sync::Mutex<Vec<String>>,
    /// Row groups this process opened (sources read by row group; every scan counts, and
    /// nothing restores it on resume): how much of the data a rank touched.
    pub row_groups_opened: AtomicU64,
}

/// How many undecodable images are named in the summary and manifest.
pub const NAMED_UNDECODABLE: usize = 5;

impl SourceStats {
    /// rows, null texts, blank texts, documents, null images, files read, files pruned.
    pub fn counters(&self) -> [u64; 7] {
        [
            self.rows.load(Ordering::Relaxed),
            self.null_text.load(Ordering::Relaxed),
            self.blank_text.load(Ordering::Relaxed),
            self.documents.load(Ordering::Relaxed),
            self.null_image.load(Ordering::Relaxed),
            self.files_read.load(Ordering::Relaxed),
            self.files_pruned.load(Ordering::Relaxed),
        ]
    }

    /// Sets the counters (a resumed scan continues from the values at its start).
    pub fn restore(&self, c: [u64; 7]) {
        let all = [
            &self.rows,
            &self.null_text,
            &self.blank_text,
            &self.documents,
            &self.null_image,
            &self.files_read,
            &self.files_pruned,
        ];
        for (a, v) in all.into_iter().zip(c) {
            a.store(v, Ordering::Relaxed);
        }
    }

    pub fn snapshot(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "rows_read": self.rows.load(Ordering::Relaxed),
            "skipped_null_text": self.null_text.load(Ordering::Relaxed),
            "skipped_blank_text": self.blank_text.load(Ordering::Relaxed),
            "documents": self.documents.load(Ordering::Relaxed),
            "files_read": self.files_read.load(Ordering::Relaxed),
            "files_pruned": self.files_pruned.load(Ordering::Relaxed),
        });
        let (nulls, bad) = (self.null_image.load(Ordering::Relaxed), self.undecodable.load(Ordering::Relaxed));
        if nulls > 0 || bad > 0 {
            v["skipped_null_image"] = nulls.into();
            v["skipped_undecodable_image"] = bad.into();
            let named = self.undecodable_examples.lock().map(|v| v.clone()).unwrap_or_default();
            v["undecodable_images"] = named.into();
        }
        v
    }

    /// Counts an image that could not be decoded, naming the first few.
    pub fn record_undecodable(&self, key: u64, reason: &str) {
        let n = self.undecodable.fetch_add(1, Ordering::Relaxed);
        if (n as usize) < NAMED_UNDECODABLE {
            if let Ok(mut v) = self.undecodable_examples.lock() {
                v.push(format!("example_key {key}: {reason}"));
            }
            tracing::warn!("skipping an undecodable image (example_key {key}): {reason}");
        }
    }
}

/// This process's share: documents whose ordinal (in scan order) is `rank` modulo `world_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Shard {
    pub rank: u64,
    pub world_size: u64,
}

impl Shard {
    pub const WHOLE: Shard = Shard { rank: 0, world_size: 1 };
}

/// A resolved source: its files in scan order and how to read them.
#[derive(Debug, Clone)]
pub struct Source {
    /// The member's name in a mixture (`None` for a single source).
    pub name: Option<String>,
    /// The YAML path of its section (`source` or `sources.<i>`), for errors.
    at: Vec<String>,
    pub root: PathBuf,
    pub files: Vec<SourceFile>,
    pub format: Format,
    /// The bucket, when the files are in an object store.
    pub remote: Option<Remote>,
    /// The table version read, for Delta tables (its file list is `files`).
    pub delta: Option<DeltaSnapshot>,
    /// The row groups, when the source is read by row group (Parquet-family files, no `sql`).
    units: Option<Arc<units::Units>>,
    sql: Option<String>,
    text_column: String,
    key_column: Option<String>,
    /// What the task reads: text (`example_key`, `text`) or records (see [`Source::record_schema`]).
    pub input: TaskInput,
    image_column: String,
    label_column: Option<String>,
    table_columns: Vec<String>,
    /// How the image column stores images (image tasks).
    pub image_kind: Option<ImageKind>,
    pub stats: Arc<SourceStats>,
}

/// How a source column stores images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    /// Encoded PNG / JPEG bytes (a binary column).
    Encoded,
    /// Planar pixel arrays of u8 (0-255).
    U8,
    /// Planar pixel arrays of floats (0-1).
    F32,
}

impl ImageKind {
    fn of(t: &DataType) -> Option<ImageKind> {
        match t {
            DataType::Binary | DataType::LargeBinary | DataType::BinaryView | DataType::FixedSizeBinary(_) => {
                Some(ImageKind::Encoded)
            }
            DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) | DataType::ListView(f) => {
                match f.data_type() {
                    DataType::UInt8 => Some(ImageKind::U8),
                    DataType::Float32 | DataType::Float64 | DataType::Float16 => Some(ImageKind::F32),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// The Arrow type the scan casts the column to.
    pub fn data_type(&self) -> DataType {
        match self {
            // 64-bit offsets: a batch of large JPEGs can pass 2 GiB.
            ImageKind::Encoded => DataType::LargeBinary,
            ImageKind::U8 => DataType::List(Arc::new(Field::new("item", DataType::UInt8, true))),
            ImageKind::F32 => DataType::List(Arc::new(Field::new("item", DataType::Float32, true))),
        }
    }
}

fn is_integer(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
    )
}

fn is_numeric(t: &DataType) -> bool {
    is_integer(t)
        || matches!(
            t,
            DataType::Float16
                | DataType::Float32
                | DataType::Float64
                | DataType::Boolean
                | DataType::Decimal128(_, _)
                | DataType::Decimal256(_, _)
        )
}

/// Schema of the source stream.
pub fn doc_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("example_key", DataType::UInt64, false),
        Field::new("text", DataType::Utf8View, false),
    ]))
}

fn is_string(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View)
}

fn new_context(remote: Option<&Remote>) -> SessionContext {
    // One partition: a file is read front to back, so row order is the file's order.
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1).with_batch_size(4096));
    if let Some(r) = remote {
        ctx.register_object_store(&r.base, r.store.clone());
    }
    ctx
}

impl Source {
    /// Lists the files and checks, before any output exists, that every file can be read and
    /// has the configured columns (and that the SQL plans against it).
    pub async fn open(pipeline: &Pipeline, member: &Member) -> Result<Source> {
        let files::Listing { root, files, format, remote, delta } = files::list(pipeline, member).await?;
        let spec = &member.spec;
        let parquet = matches!(format, Format::Parquet | Format::Pretext | Format::Delta);
        let units = if parquet && spec.sql.is_none() {
            Some(Arc::new(units::Units::load(&files, remote.as_ref()).await?))
        } else {
            if parquet {
                files::check_parquet_footers(&files)?;
            }
            None
        };
        let mut source = Source {
            name: member.name.clone(),
            at: member.at.clone(),
            root,
            files,
            format,
            remote,
            delta,
            units,
            sql: spec.sql.clone(),
            text_column: spec.text_column.clone(),
            key_column: spec.key_column.clone(),
            input: pipeline.spec.task.input(),
            image_column: spec.image_column.clone(),
            label_column: spec.label_column.clone(),
            table_columns: pipeline.spec.task.table_columns().to_vec(),
            image_kind: None,
            stats: Arc::new(SourceStats::default()),
        };
        if format == Format::Pretext {
            // Checked against the task's schema once the task is built (`check_examples`).
            return Ok(source);
        }
        let ctx = new_context(source.remote.as_ref());
        let mut errors = Vec::new();
        for fi in 0..source.files.len() {
            let f = &source.files[fi].clone();
            if let Some(units) = source.units.clone() {
                // Read by row group: the footer read at listing gives the schema.
                let mut fields: Vec<Arc<Field>> = units.schema(fi).fields().iter().cloned().collect();
                let values = source.partition_values(f).map_err(|e| Error::data(format!("`{}`: {e}", f.relative)))?;
                for (k, v) in values {
                    if fields.iter().all(|fl| fl.name() != &k) {
                        fields.push(Arc::new(Field::new(k, v.data_type(), true)));
                    }
                }
                let schema: SchemaRef = Arc::new(Schema::new(fields));
                source.check_columns(pipeline, member, f, &schema, &mut errors);
                if !errors.is_empty() {
                    break;
                }
                continue;
            }
            let df = match source.frame(&ctx, f).await {
                Ok(df) => df,
                Err(FrameError::Sql(msg, columns)) => {
                    errors.push(pipeline.error_at(
                        &member.key("sql"),
                        format!("{msg} (planning against `{}`)", f.relative),
                        Some(format!("the table is called `source`; its columns are: {columns}")),
                    ));
                    break;
                }
                Err(FrameError::Read(e)) => {
                    return Err(Error::data_hint(
                        format!("cannot read `{}`: {e}", f.path.display()),
                        "check that the file is complete and of the configured `source.format`",
                    ))
                }
            };
            let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
            source.check_columns(pipeline, member, f, &schema, &mut errors);
            if !errors.is_empty() {
                break;
            }
        }
        if !errors.is_empty() {
            return Err(Error::Spec(SpecErrors(errors)));
        }
        Ok(source)
    }

    /// Checks that `f` (whose columns are `schema`) holds the configured columns, with usable
    /// types, adding an error naming the YAML key for each problem.
    fn check_columns(
        &mut self,
        pipeline: &Pipeline,
        member: &Member,
        f: &SourceFile,
        schema: &SchemaRef,
        errors: &mut Vec<crate::spec::SpecError>,
    ) {
        let columns = || schema.fields().iter().map(|f| format!("`{}`", f.name())).collect::<Vec<_>>().join(", ");
        match self.input {
            TaskInput::Text => match schema.fields().iter().find(|fl| fl.name() == &self.text_column) {
                None => errors.push(pipeline.error_at(&member.key("text_column"),
                    format!("column `{}` not found in `{}`", self.text_column, f.relative),
                    Some(format!("the columns are: {}", columns())),
                )),
                Some(field) if !is_string(field.data_type()) => errors.push(pipeline.error_at(&member.key("text_column"),
                    format!("column `{}` in `{}` is {}, not a string column", self.text_column, f.relative, field.data_type()),
                    Some(format!("pick a string column, or cast it in `source.sql` (e.g. `SELECT CAST(x AS VARCHAR) AS text FROM source`); the columns are: {}", columns())),
                )),
                Some(_) => {}
            },
            TaskInput::Image => {
                let col = &self.image_column;
                match schema.fields().iter().find(|fl| fl.name() == col) {
                    None => errors.push(pipeline.error_at(&member.key("image_column"),
                        format!("column `{col}` not found in `{}`", f.relative),
                        Some(format!("name the column holding the images; the columns are: {}", columns())),
                    )),
                    Some(field) => match ImageKind::of(field.data_type()) {
                        None => errors.push(pipeline.error_at(&member.key("image_column"),
                            format!("column `{col}` in `{}` is {}, which holds no images", f.relative, field.data_type()),
                            Some("images are encoded PNG / JPEG bytes (binary) or planar pixel lists of u8 or float".into()),
                        )),
                        Some(kind) => {
                            if self.image_kind.is_some_and(|k| k != kind) {
                                errors.push(pipeline.error_at(&member.key("image_column"),
                                    format!("column `{col}` in `{}` is {}, unlike the files before it", f.relative, field.data_type()),
                                    Some("every file must store images the same way".into()),
                                ));
                            }
                            self.image_kind = Some(kind);
                            let shape = member.spec.image_shape;
                            if kind != ImageKind::Encoded && shape.is_none() {
                                errors.push(pipeline.error_at(&member.key("image_shape"),
                                    format!("column `{col}` holds pixel arrays ({}), whose shape must be given", field.data_type()),
                                    Some("add `image_shape: [channels, height, width]` to `source` (planar, channel-major)".into()),
                                ));
                            }
                            if kind == ImageKind::Encoded && shape.is_some() {
                                errors.push(pipeline.error_at(&member.key("image_shape"),
                                    format!("column `{col}` holds encoded images, which carry their own shape"),
                                    Some("remove `image_shape` (it is for pixel arrays)".into()),
                                ));
                            }
                        }
                    },
                }
            }
            TaskInput::Table => {
                for col in &self.table_columns {
                    let at = ["task", pipeline.spec.task_name(), "columns"];
                    match schema.fields().iter().find(|fl| fl.name() == col) {
                        None => errors.push(pipeline.error_at(
                            &at,
                            format!("column `{col}` not found in `{}`", f.relative),
                            Some(match crate::spec::did_you_mean(col, schema.fields().iter().map(|f| f.name().as_str())) {
                                Some(m) => format!("did you mean `{m}`? the columns are: {}", columns()),
                                None => format!("the columns are: {}", columns()),
                            }),
                        )),
                        Some(field) if !is_numeric(field.data_type()) => errors.push(pipeline.error_at(
                            &at,
                            format!("column `{col}` in `{}` is {}, not numeric", f.relative, field.data_type()),
                            Some("encode categories as integer codes in `source.sql` (e.g. `CASE color WHEN 'red' THEN 0 WHEN 'blue' THEN 1 END AS color`) and list them in `categorical`".into()),
                        )),
                        Some(_) => {}
                    }
                }
            }
        }
        if let Some(l) = self.label_column.as_ref().filter(|_| self.input != TaskInput::Text) {
            match schema.fields().iter().find(|fl| fl.name() == l) {
                None => errors.push(pipeline.error_at(
                    &member.key("label_column"),
                    format!("column `{l}` not found in `{}`", f.relative),
                    Some(format!("the columns are: {}", columns())),
                )),
                Some(field) if !is_integer(field.data_type()) => errors.push(pipeline.error_at(
                    &member.key("label_column"),
                    format!("column `{l}` in `{}` is {}, not an integer class id", f.relative, field.data_type()),
                    Some("map the labels to integers in `source.sql`".into()),
                )),
                Some(_) => {}
            }
        }
        if let Some(k) = &self.key_column {
            if !schema.fields().iter().any(|fl| fl.name() == k) {
                errors.push(pipeline.error_at(
                    &member.key("key_column"),
                    format!("column `{k}` not found in `{}`", f.relative),
                    Some(format!("the columns are: {}", columns())),
                ));
            }
        }
    }

    /// Schema of the scanned rows: [`doc_schema`] for text tasks; for image tasks `example_key`,
    /// `image` (see [`ImageKind::data_type`]) and `label: Int64` when `label_column` is set; for
    /// tabular tasks `example_key`, each feature column as nullable `Float64`, and `label`.
    pub fn scan_schema(&self) -> SchemaRef {
        let mut fields = vec![Field::new("example_key", DataType::UInt64, false)];
        match self.input {
            TaskInput::Text => return doc_schema(),
            TaskInput::Image => {
                let kind = self.image_kind.unwrap_or(ImageKind::Encoded);
                fields.push(Field::new("image", kind.data_type(), false));
            }
            TaskInput::Table => {
                fields.extend(self.table_columns.iter().map(|c| Field::new(c, DataType::Float64, true)));
            }
        }
        if self.label_column.is_some() {
            fields.push(Field::new("label", DataType::Int64, true));
        }
        Arc::new(Schema::new(fields))
    }

    /// What data the source reads, for resumption checks: a hash of the file names and sizes,
    /// their count, and the Delta table version.
    pub fn identity(&self) -> serde_json::Value {
        let files: Vec<_> = self.files.iter().map(|f| serde_json::json!([f.relative, f.bytes])).collect();
        let digest = xxhash_rust::xxh3::xxh3_64(serde_json::Value::Array(files).to_string().as_bytes());
        serde_json::json!({
            "files": self.files.len(),
            "files_xxh3": format!("{digest:016x}"),
            "delta_version": self.delta.as_ref().map(|d| d.version),
        })
    }

    /// Total size of the input files in bytes.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.bytes).sum()
    }

    /// The partition values of `f` (hive directories or Delta partitions) as typed scalars:
    /// Delta values take the column's type from the table schema, hive values are strings.
    fn partition_values(
        &self,
        f: &SourceFile,
    ) -> datafusion::error::Result<Vec<(String, datafusion::scalar::ScalarValue)>> {
        use datafusion::scalar::ScalarValue;
        f.partitions
            .iter()
            .map(|(k, v)| {
                let typed = self.delta.as_ref().and_then(|d| d.schema.field_with_name(k).ok()).map(|field| {
                    let t = field.data_type();
                    if v == delta::NULL_PARTITION {
                        ScalarValue::try_from(t)
                    } else {
                        ScalarValue::Utf8(Some(v.clone())).cast_to(t)
                    }
                });
                Ok((k.clone(), typed.unwrap_or_else(|| Ok(ScalarValue::Utf8(Some(v.clone()))))?))
            })
            .collect()
    }

    /// The columns a scan reads: the task's (`examples`) or the configured ones.
    fn read_columns(&self, examples: Option<&SchemaRef>) -> Vec<String> {
        if let Some(schema) = examples {
            return schema.fields().iter().map(|f| f.name().clone()).collect();
        }
        let mut columns = match self.input {
            TaskInput::Text => vec![self.text_column.clone()],
            TaskInput::Image => vec![self.image_column.clone()],
            TaskInput::Table => self.table_columns.clone(),
        };
        if self.input != TaskInput::Text {
            columns.extend(self.label_column.clone());
        }
        columns.extend(self.key_column.clone());
        columns
    }

    async fn frame(&self, ctx: &SessionContext, f: &SourceFile) -> std::result::Result<DataFrame, FrameError> {
        let path = f.path.to_string_lossy().to_string();
        let ext = f.path.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
        let df = match self.format {
            Format::Parquet | Format::Pretext | Format::Delta => {
                ctx.read_parquet(path, ParquetReadOptions { file_extension: &ext, ..Default::default() }).await
            }
            Format::Arrow => {
                ctx.read_arrow(
                    path,
                    datafusion::datasource::file_format::options::ArrowReadOptions {
                        file_extension: &ext,
                        ..Default::default()
                    },
                )
                .await
            }
            Format::Csv => ctx.read_csv(path, CsvReadOptions { file_extension: &ext, ..Default::default() }).await,
            Format::Jsonl => ctx.read_json(path, JsonReadOptions { file_extension: &ext, ..Default::default() }).await,
        }
        .map_err(FrameError::Read)?;
        let mut df = df;
        for (k, v) in self.partition_values(f).map_err(FrameError::Read)? {
            if df.schema().fields().iter().all(|fl| fl.name() != &k) {
                df = df.with_column(&k, lit(v)).map_err(FrameError::Read)?;
            }
        }
        let Some(sql) = &self.sql else { return Ok(df) };
        let columns = df.schema().fields().iter().map(|f| format!("`{}`", f.name())).collect::<Vec<_>>().join(", ");
        let _ = ctx.deregister_table("source");
        ctx.register_table("source", df.into_view()).map_err(FrameError::Read)?;
        let df = ctx.sql(sql).await.map_err(|e| FrameError::Sql(e.strip_backtrace().to_string(), columns.clone()))?;
        if let Some(op) = not_row_wise(df.logical_plan()) {
            return Err(FrameError::Sql(
                format!("{op} is not supported: `sql` runs on each file in scan order, so only row-wise queries (filters, projections, expressions) give the same result as over the whole table"),
                columns,
            ));
        }
        Ok(df)
    }

    /// Streams the documents of `shard`, lazily: nothing is read before the first poll.
    /// `opts.shuffle` permutes the file order with a seed (per epoch); `opts.count` adds to
    /// [`SourceStats`] (once per run, not per epoch).
    pub fn scan(&self, shard: Shard, opts: ScanOptions) -> BatchStream {
        let schema = self.scan_schema();
        let s = self
            .scan_inner(shard, opts, None)
            .map(|r| r.map(|(_, b)| b).map_err(datafusion::error::DataFusionError::from));
        Box::pin(RecordBatchStreamAdapter::new(schema, s))
    }

    /// Like [`Source::scan`] (or ready-made examples of schema `examples`), from `opts.start`,
    /// each batch tagged with its window: the split's rows `w · window_rows ..` (counted over
    /// all ranks) form window `w`, so windows are the same for every world size. A batch never
    /// spans two windows.
    pub fn scan_windows(
        &self,
        shard: Shard,
        opts: ScanOptions,
        examples: Option<SchemaRef>,
    ) -> futures::stream::BoxStream<'static, Result<(u64, RecordBatch)>> {
        self.scan_inner(shard, opts, examples)
    }

    fn scan_inner(
        &self,
        shard: Shard,
        opts: ScanOptions,
        examples: Option<SchemaRef>,
    ) -> futures::stream::BoxStream<'static, Result<(u64, RecordBatch)>> {
        // What a pass reads in order: files, or row groups when the source has them.
        let n = self.units.as_ref().map(|u| u.groups.len()).unwrap_or(self.files.len());
        let mut order: Vec<usize> = (0..n).collect();
        if let Some(seed) = opts.shuffle_seed {
            use rand::seq::SliceRandom;
            use rand::SeedableRng;
            order.shuffle(&mut rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed));
        }
        let window_rows = if opts.window_rows == 0 { u64::MAX } else { opts.window_rows };
        // Row groups of the whole split: ranks take blocks of the pass's rows (positions), so
        // each opens only the row groups of its block.
        let blocks = self.blocks(opts.split);
        let mut bases = Vec::new();
        let mut start = opts.start;
        if let (Some(units), Some(blocks)) = (&self.units, blocks) {
            let mut at = 0;
            for &g in &order {
                bases.push(at);
                at += units.groups[g].rows;
            }
            // Seek to the block, the first window asked for, or the saved start, whichever is last.
            let block = blocks.range(shard);
            let from = block.start.max(opts.from_window.saturating_mul(window_rows)).max(opts.start.ordinal);
            if from > opts.start.ordinal || opts.start == ScanStart::default() {
                let k = if from >= units.rows { order.len() } else { bases.partition_point(|&b| b <= from) - 1 };
                let row = match order.get(k) {
                    Some(&g) => units.groups[g].first_row + (from - bases[k]),
                    None => 0,
                };
                let counts = (from == opts.start.ordinal).then_some(opts.start.counts).flatten();
                start = ScanStart { file: k as u64, row, ordinal: from, counts };
            }
        }
        if opts.count {
            self.stats.restore(start.counts.unwrap_or_default());
        }
        let state = ScanState {
            source: Arc::new(self.clone()),
            first: None,
            prefetch: std::collections::VecDeque::new(),
            ahead: match (&self.remote, self.format) {
                (Some(_), _) => Ahead { items: REMOTE_AHEAD, bytes: REMOTE_AHEAD_BYTES, first_any_size: true },
                (None, Format::Pretext) => Ahead { items: READY_AHEAD, bytes: u64::MAX, first_any_size: true },
                (None, _) => Ahead { items: 1, bytes: LOCAL_AHEAD_BYTES, first_any_size: false },
            },
            ctx: new_context(self.remote.as_ref()),
            columns: Arc::new(self.read_columns(examples.as_ref())),
            cache: self.units.as_ref().and_then(|u| u.scan_cache(opts.shuffle_seed.is_none())),
            order,
            bases,
            counted_current: false,
            next_file: start.file as usize,
            current: None,
            sharder: Sharder {
                ordinal: start.ordinal,
                shard,
                split: opts.split,
                window_rows,
                starts: opts.starts.clone(),
                file: start.file,
                block: blocks.map(|b| b.range(shard)),
                recorded: None,
                base: 0,
            },
            skip: start,
            count: opts.count,
            examples,
            ready: std::collections::VecDeque::new(),
        };
        let stream = futures::stream::try_unfold(state, |mut st| async move {
            loop {
                if let Some(item) = st.ready.pop_front() {
                    return Ok(Some((item, st)));
                }
                if let Some((stream, file_idx, row)) = st.current.as_mut() {
                    let next = match st.first.take() {
                        Some(b) => Some(Ok(b)),
                        None => stream.next().await,
                    };
                    match next {
                        Some(batch) => {
                            let batch = batch
                                .map_err(|e| unreadable(&st.source.files[*file_idx].path.display().to_string(), e))?;
                            let mut start = *row;
                            *row += batch.num_rows() as u64;
                            let fi = *file_idx;
                            let mut batch = batch;
                            // Resuming inside this file: its first rows were delivered before.
                            if st.sharder.file == st.skip.file && start < st.skip.row {
                                let drop = (st.skip.row - start).min(batch.num_rows() as u64) as usize;
                                batch = batch.slice(drop, batch.num_rows() - drop);
                                start += drop as u64;
                                if batch.num_rows() == 0 {
                                    continue;
                                }
                            }
                            let (out, windows) = match st.examples.clone() {
                                Some(schema) => st.examples(&batch, fi, start, &schema)?,
                                None if st.source.input == TaskInput::Text => st.documents(&batch, fi, start)?,
                                None => st.records(&batch, fi, start)?,
                            };
                            st.ready.extend(split_windows(&out, &windows)?);
                            continue;
                        }
                        None => st.current = None,
                    }
                }
                if st.next_file >= st.order.len() || st.past_block(st.next_file) {
                    return Ok(None);
                }
                let k = st.next_file;
                let item = st.order[k];
                st.sharder.file = k as u64;
                st.next_file += 1;
                // Where reading starts in this item (a resumed scan starts inside one).
                let skip = if k as u64 == st.skip.file { st.skip.row } else { 0 };
                // The item opened ahead while the previous one streamed, or opened now; either
                // way the items after it start opening before it is awaited.
                if !matches!(st.prefetch.front(), Some((p, _)) if *p == k && skip == 0) {
                    st.prefetch.clear();
                    let (source, ctx, columns) = (st.source.clone(), st.ctx.clone(), st.columns.clone());
                    let task = SpawnedTask::spawn(open_item(source, ctx, columns, st.cache.clone(), item, skip));
                    st.prefetch.push_back((k, task));
                }
                let mut next = st.prefetch.back().map(|(p, _)| p + 1).unwrap_or(k + 1);
                // Items opened ahead: see `ScanState::ahead`.
                let bytes_of = |st: &ScanState, k: usize| match &st.source.units {
                    Some(units) => units.group_bytes(units.groups[st.order[k]]),
                    None => st.source.files[st.order[k]].bytes,
                };
                let ahead = st.ahead;
                let mut in_flight: u64 = st.prefetch.iter().skip(1).map(|(p, _)| bytes_of(&st, *p)).sum();
                while st.prefetch.len() <= ahead.items
                    && next < st.order.len()
                    && !st.past_block(next)
                    && ((ahead.first_any_size && st.prefetch.len() == 1)
                        || in_flight.saturating_add(bytes_of(&st, next)) <= ahead.bytes)
                {
                    in_flight += bytes_of(&st, next);
                    let (source, ctx, columns) = (st.source.clone(), st.ctx.clone(), st.columns.clone());
                    let item = st.order[next];
                    let task = SpawnedTask::spawn(open_item(source, ctx, columns, st.cache.clone(), item, 0));
                    st.prefetch.push_back((next, task));
                    next += 1;
                }
                let (_, task) = st.prefetch.pop_front().expect("the current item was just queued");
                let opened =
                    task.join().await.map_err(|e| Error::internal(format!("opening a file stopped: {e}")))??;
                let (fi, first_group) = match &st.source.units {
                    Some(units) => {
                        let g = units.groups[item];
                        st.sharder.base = st.bases.get(k).map(|b| b.wrapping_sub(g.first_row)).unwrap_or(0);
                        (g.file, g.index == 0)
                    }
                    None => (item, true),
                };
                match opened {
                    Opened::Pruned => {
                        if st.count {
                            st.source.stats.files_pruned.fetch_add(1, Ordering::Relaxed);
                        }
                        continue;
                    }
                    Opened::Stream(stream, first) => {
                        // A file counts as read with its first row group.
                        st.counted_current = first_group;
                        if st.count && st.counted_current {
                            st.source.stats.files_read.fetch_add(1, Ordering::Relaxed);
                        }
                        let row = match &st.source.units {
                            Some(units) => units.groups[item].first_row.max(skip),
                            None => 0,
                        };
                        st.current = Some((stream, fi, row));
                        st.first = first;
                    }
                }
            }
        });
        Box::pin(stream)
    }

    /// How `split`'s rows are shared between ranks: in blocks of row groups when the source is
    /// read by row group and the whole of it is split (`None`: every rank reads every row and
    /// takes every `world_size`-th one).
    pub fn blocks(&self, split: Split) -> Option<Blocks> {
        let units = self.units.as_ref()?;
        (split == Split::All).then_some(Blocks { rows: units.rows })
    }

    /// Checks that every file holds `schema`'s columns with the same types (`format: pretext`).
    pub async fn check_examples(&self, pipeline: &Pipeline, schema: &SchemaRef) -> Result<()> {
        let ctx = new_context(self.remote.as_ref());
        for f in &self.files {
            let df = self.frame(&ctx, f).await.map_err(|e| match e {
                FrameError::Read(e) => {
                    Error::data(format!("cannot read `{}`: {}", f.path.display(), e.strip_backtrace()))
                }
                FrameError::Sql(m, _) => Error::data(format!("`source.sql` on `{}`: {m}", f.relative)),
            })?;
            let have = df.schema();
            for want in schema.fields() {
                let problem = match have.fields().iter().find(|h| h.name() == want.name()) {
                    None => format!("has no column `{}`", want.name()),
                    Some(h) if h.data_type() != want.data_type() => {
                        format!("column `{}` is {}, the task needs {}", want.name(), h.data_type(), want.data_type())
                    }
                    Some(_) => continue,
                };
                return Err(Error::Spec(SpecErrors(vec![pipeline.error_at(&self.at.iter().map(String::as_str).chain(["format"]).collect::<Vec<_>>(),
                    format!("`{}` does not hold `task.{}` examples: it {problem}", f.relative, pipeline.spec.task_name()),
                    Some("`format: pretext` reads an export of the same task and seq_len (`pretext export`); use the pipeline that made it".into()),
                )])));
            }
        }
        Ok(())
    }
}

/// How the data changed between two [`Source::identity`] values, in words.
pub fn describe_data_change(old: &serde_json::Value, new: &serde_json::Value) -> String {
    if let (Some(a), Some(b)) = (old.as_array(), new.as_array()) {
        if let Some((x, y)) = a.iter().zip(b).find(|(x, y)| x != y) {
            return format!("source `{}`: {}", y["name"].as_str().unwrap_or("?"), describe_data_change(x, y));
        }
        return "the list of sources changed".into();
    }
    match (old["delta_version"].as_u64(), new["delta_version"].as_u64()) {
        (Some(a), Some(b)) if a != b => format!("the Delta table was at version {a}, it is now at version {b}"),
        _ => format!(
            "the source files changed ({} file(s) then, {} now, or their names or sizes differ)",
            old["files"].as_u64().map(|n| n.to_string()).unwrap_or_else(|| "?".into()),
            new["files"].as_u64().map(|n| n.to_string()).unwrap_or_else(|| "?".into())
        ),
    }
}

/// A file made ready to stream: its first batch already read (so the footer and the first
/// row group are fetched), or pruned by `sql` on its partition values.
enum Opened {
    Pruned,
    Stream(SendableRecordBatchStream, Option<RecordBatch>),
}

/// Opens item `item` of a pass (a row group, or a file when the source has none) from its row
/// `skip` (counted in its file) and reads its first batch.
async fn open_item(
    source: Arc<Source>,
    ctx: SessionContext,
    columns: Arc<Vec<String>>,
    cache: Option<Arc<units::ObjectCache>>,
    item: usize,
    skip: u64,
) -> Result<Opened> {
    let mut stream = match &source.units {
        Some(units) => {
            let g = units.groups[item];
            let f = &source.files[g.file];
            source.stats.row_groups_opened.fetch_add(1, Ordering::Relaxed);
            let constants = source
                .partition_values(f)
                .map_err(|e| Error::data(format!("partition values of `{}`: {e}", f.relative)))?;
            units.open(g, skip.saturating_sub(g.first_row), &columns, &constants, f, cache.as_deref())?
        }
        None => {
            let f = &source.files[item];
            // `source.sql` names the file's table `source`: each open registers it in a context
            // of its own, as items open concurrently (ahead, and on a store 16 at a time).
            let ctx = if source.sql.is_some() { new_context(source.remote.as_ref()) } else { ctx };
            let df = source.frame(&ctx, f).await.map_err(|e| match e {
                FrameError::Read(e) => {
                    Error::data(format!("cannot read `{}`: {}", f.path.display(), e.strip_backtrace()))
                }
                FrameError::Sql(m, _) => Error::data(format!("`source.sql` on `{}`: {m}", f.relative)),
            })?;
            if source.sql.is_some() && !f.partitions.is_empty() {
                let plan = df
                    .clone()
                    .into_optimized_plan()
                    .map_err(|e| Error::data(format!("`source.sql` on `{}`: {}", f.relative, e.strip_backtrace())))?;
                if provably_empty(&plan) {
                    return Ok(Opened::Pruned);
                }
            }
            df.execute_stream()
                .await
                .map_err(|e| Error::data(format!("cannot read `{}`: {}", f.path.display(), e.strip_backtrace())))?
        }
    };
    let path = || match &source.units {
        Some(units) => source.files[units.groups[item].file].path.display().to_string(),
        None => source.files[item].path.display().to_string(),
    };
    let first = match stream.next().await {
        Some(b) => Some(b.map_err(|e| unreadable(&path(), e))?),
        None => None,
    };
    Ok(Opened::Stream(stream, first))
}

/// Whether the optimizer proved `plan` returns no rows (a filter on partition values that are
/// constants for this file folds to `false`), so the file need not be read.
fn provably_empty(plan: &datafusion::logical_expr::LogicalPlan) -> bool {
    use datafusion::logical_expr::LogicalPlan as P;
    match plan {
        P::EmptyRelation(e) => !e.produce_one_row,
        P::Projection(p) => provably_empty(&p.input),
        P::Filter(f) => provably_empty(&f.input),
        P::SubqueryAlias(a) => provably_empty(&a.input),
        _ => false,
    }
}

/// The first operator of `plan` whose result depends on more than one row at a time.
fn not_row_wise(plan: &datafusion::logical_expr::LogicalPlan) -> Option<&'static str> {
    use datafusion::logical_expr::LogicalPlan as P;
    let op = match plan {
        P::Aggregate(_) => Some("GROUP BY / aggregation"),
        P::Sort(_) => Some("ORDER BY"),
        P::Limit(_) => Some("LIMIT / OFFSET"),
        P::Distinct(_) => Some("DISTINCT"),
        P::Window(_) => Some("a window function"),
        P::Join(_) => Some("a join"),
        P::Union(_) => Some("UNION"),
        P::Repartition(_) => Some("repartitioning"),
        P::RecursiveQuery(_) => Some("a recursive query"),
        _ => None,
    };
    op.or_else(|| plan.inputs().into_iter().find_map(not_row_wise))
}

enum FrameError {
    Read(datafusion::error::DataFusionError),
    Sql(String, String),
}

/// How to scan: see [`Source::scan`].
#[derive(Debug, Clone, Default)]
pub struct ScanOptions {
    pub shuffle_seed: Option<u64>,
    pub count: bool,
    /// Which documents: all, or one side of a held-out split.
    pub split: Split,
    /// Where to begin (default: the start of the epoch).
    pub start: ScanStart,
    /// Rows of the split per window (see [`Source::scan_windows`]); 0: one window.
    pub window_rows: u64,
    /// The first window wanted: a scan sharded by blocks seeks to it without reading the rows
    /// before it.
    pub from_window: u64,
    /// Receives where each window begins, as the scan reaches it.
    pub starts: Option<Arc<WindowStarts>>,
}

/// A position in one epoch's scan: the `row`-th row (after `sql`) of the `file`-th file in the
/// epoch's file order, which is the `ordinal`-th row of the split (all ranks counted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScanStart {
    pub file: u64,
    pub row: u64,
    pub ordinal: u64,
    /// The first pass's read counters at this row ([`SourceStats::counters`]), so a resumed
    /// export's manifest counts every row once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<[u64; 7]>,
}

/// A file that failed while being read: damaged pages, a changed file, a failed disk.
pub(crate) fn unreadable(path: &str, e: impl Into<Error>) -> Error {
    match e.into() {
        // Already says which file; or not about the file's bytes.
        e @ Error::Data { .. } if e.to_string().contains(path) => e,
        e @ (Error::Internal(_) | Error::Env { .. } | Error::Stopped { .. } | Error::Spec(_)) => e,
        e if e.to_string().contains("non-UTF-8") => Error::data_hint(
            format!("cannot read `{path}`: {e}"),
            "the text holds bytes that are not UTF-8: fix the data, or leave those rows out in `source.sql`",
        ),
        e => Error::data_hint(
            format!("cannot read `{path}`: {e}"),
            "the file is damaged, or changed while it was read: restore or remove it, then run again (an export keeps its finished parts for `--resume`)",
        ),
    }
}

/// Where a window begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WindowStart {
    pub window: u64,
    pub at: ScanStart,
}

/// The starts of the windows a scan has reached (the most recent ones).
#[derive(Debug, Default)]
pub struct WindowStarts(std::sync::Mutex<std::collections::VecDeque<WindowStart>>);

impl WindowStarts {
    const KEEP: usize = 64;

    pub fn record(&self, start: WindowStart) {
        if let Ok(mut v) = self.0.lock() {
            if v.back().is_some_and(|b| b.window >= start.window) {
                return;
            }
            v.push_back(start);
            while v.len() > Self::KEEP {
                v.pop_front();
            }
        }
    }

    pub fn get(&self, window: u64) -> Option<WindowStart> {
        self.0.lock().ok()?.iter().rev().find(|s| s.window == window).copied()
    }
}

/// A deterministic document split: a document is held out when a hash of its key and the seed
/// falls below `fraction` of the hash range, so the split does not depend on order or sharding.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum Split {
    #[default]
    All,
    /// Documents not held out.
    Train { fraction: f64, seed: u64 },
    /// The held-out documents.
    Eval { fraction: f64, seed: u64 },
}

impl Split {
    /// Whether the document with `key` belongs to this side.
    pub fn contains(&self, key: u64) -> bool {
        let held_out = |fraction: f64, seed: u64| {
            let h = xxhash_rust::xxh3::xxh3_64_with_seed(&key.to_le_bytes(), seed ^ 0x4556_414c);
            (h as f64) < fraction * 18_446_744_073_709_551_616.0
        };
        match *self {
            Split::All => true,
            Split::Train { fraction, seed } => !held_out(fraction, seed),
            Split::Eval { fraction, seed } => held_out(fraction, seed),
        }
    }
}

/// Items (row groups or files) of an object store opened ahead of the one streaming.
const REMOTE_AHEAD: usize = 16;

/// Local row groups of text (or images, or tables) are opened ahead only while this small:
/// the page cache makes local reads quick, and a large one held open ahead (a whole file, for
/// files written as one row group) was the largest term in peak memory that grew with the
/// corpus (two row groups' bytes and pages alive instead of one).
const LOCAL_AHEAD_BYTES: u64 = 4 << 20;

/// Local row groups of ready-made examples opened (that is, decoded) ahead of the one
/// streaming. Their rows are handed on without further work, so with one ahead the next
/// decode started only as the current one was taken, and a 2-core pass ran on 1.4 cores.
const READY_AHEAD: usize = 2;

/// Bytes (compressed) of those items at most.
const REMOTE_AHEAD_BYTES: u64 = 64 << 20;

/// How far a scan opens items ahead of the one streaming.
#[derive(Debug, Clone, Copy)]
struct Ahead {
    /// Items at most.
    items: usize,
    /// Their compressed bytes at most, all together.
    bytes: u64,
    /// Whether the first item ahead is opened whatever its size.
    first_any_size: bool,
}

struct ScanState {
    source: Arc<Source>,
    /// The current item's first batch, read when it was opened.
    first: Option<RecordBatch>,
    /// The next items in the order (by position), being opened while the current one streams.
    prefetch: std::collections::VecDeque<(usize, SpawnedTask<Result<Opened>>)>,
    /// How far to open ahead.
    ahead: Ahead,
    ctx: SessionContext,
    /// The columns read from row groups.
    columns: Arc<Vec<String>>,
    /// Whole small objects fetched in this scan, for their other row groups.
    cache: Option<Arc<units::ObjectCache>>,
    /// The pass's items: row groups of `source.units`, or files.
    order: Vec<usize>,
    /// With blocks: the position of each item's first row in the pass.
    bases: Vec<u64>,
    /// Whether opening the current item counted its file as read.
    counted_current: bool,
    next_file: usize,
    current: Option<(SendableRecordBatchStream, usize, u64)>,
    sharder: Sharder,
    /// Where a resumed scan begins: rows before it in its file are dropped.
    skip: ScanStart,
    count: bool,
    /// `Some(task schema)` when reading ready-made examples.
    examples: Option<SchemaRef>,
    /// Window-tagged batches ready to hand out.
    ready: std::collections::VecDeque<(u64, RecordBatch)>,
}

/// Which rows belong to this split and shard. By rows: the shard takes every `world_size`-th
/// row of the split, counted in scan order, and every `window_rows` rows of the split make a
/// window. By blocks: the shard takes the rows of its block of positions in the pass, and
/// every `window_rows` positions make a window.
struct Sharder {
    ordinal: u64,
    shard: Shard,
    split: Split,
    window_rows: u64,
    starts: Option<Arc<WindowStarts>>,
    /// Position of the item being read in the pass's order.
    file: u64,
    /// The shard's block of positions, when sharding by blocks.
    block: Option<std::ops::Range<u64>>,
    /// By blocks: the window whose start was recorded last.
    recorded: Option<u64>,
    /// By blocks: the position of the current file's row 0 (`row + base` is a row's position).
    base: u64,
}

impl Sharder {
    /// Whether the next row that passed the filters (the `row`-th of its file) belongs to this
    /// split and shard, and its window.
    fn mine(&mut self, key: u64, row: u64, counts: impl FnOnce() -> Option<[u64; 7]>) -> (bool, u64) {
        if let Some(block) = &self.block {
            let p = row.wrapping_add(self.base);
            let window = p / self.window_rows;
            if !block.contains(&p) {
                return (false, window);
            }
            if self.recorded != Some(window) {
                self.recorded = Some(window);
                if let Some(starts) = &self.starts {
                    let at = ScanStart { file: self.file, row, ordinal: p, counts: counts() };
                    starts.record(WindowStart { window, at });
                }
            }
            return (true, window);
        }
        let window = self.ordinal / self.window_rows;
        if !self.split.contains(key) {
            return (false, window);
        }
        if self.ordinal.is_multiple_of(self.window_rows) {
            if let Some(starts) = &self.starts {
                let at = ScanStart { file: self.file, row, ordinal: self.ordinal, counts: counts() };
                starts.record(WindowStart { window, at });
            }
        }
        let mine = self.ordinal % self.shard.world_size == self.shard.rank;
        self.ordinal += 1;
        (mine, window)
    }
}

/// Cuts a filtered batch into runs of one window each (`windows`: the window of every row).
fn split_windows(batch: &RecordBatch, windows: &[u64]) -> Result<Vec<(u64, RecordBatch)>> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=windows.len() {
        if i == windows.len() || windows[i] != windows[start] {
            out.push((windows[start], batch.slice(start, i - start)));
            start = i;
        }
    }
    Ok(out)
}

impl ScanState {
    /// Whether the item at position `k` lies past the shard's block.
    fn past_block(&self, k: usize) -> bool {
        matches!((&self.sharder.block, self.bases.get(k)), (Some(b), Some(&base)) if base >= b.end)
    }

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
    fn examples(
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
        Ok(match &src.key_column {
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
    fn records(&mut self, batch: &RecordBatch, fi: usize, row: u64) -> Result<(RecordBatch, Vec<u64>)> {
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
            let name = match (field.name().as_str(), src.input) {
                ("image", TaskInput::Image) => src.image_column.as_str(),
                ("label", _) if src.label_column.is_some() => src.label_column.as_deref().unwrap_or("label"),
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
    fn documents(&mut self, batch: &RecordBatch, fi: usize, row: u64) -> Result<(RecordBatch, Vec<u64>)> {
        let keys = self.keys(batch, fi, row)?;
        let src = &self.source;
        let n = batch.num_rows();
        let text = batch.column_by_name(&src.text_column).ok_or_else(|| {
            Error::data(format!("column `{}` disappeared from `{}`", src.text_column, src.files[fi].relative))
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
