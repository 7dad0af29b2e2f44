//! A resolved source: its files listed, their footers (or row groups) read, and every file
//! checked to hold the columns the task reads, before any output exists.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::datatypes::{Field, Schema, SchemaRef};

use super::columns::{Columns, ImageKind};
use super::delta::Snapshot as DeltaSnapshot;
use super::frame::{frame, new_context, partition_values, FrameError, Reading};
use super::layout::SourceFile;
use super::listing;
use super::row_groups::RowGroups;
use super::split::{Blocks, Split};
use super::stats::SourceStats;
use super::store::Remote;
use crate::error::{Error, Result};
use crate::spec::{Format, Member, Pipeline, SpecErrors};

/// A resolved source: its files in scan order and how to read them.
#[derive(Debug, Clone)]
pub struct Source {
    /// The member's name in a mixture (`None` for a single source).
    pub name: Option<String>,
    /// The YAML path of its section (`source` or `sources.<i>`), for errors.
    pub(super) at: Vec<String>,
    pub root: PathBuf,
    pub files: Vec<SourceFile>,
    pub format: Format,
    /// The bucket, when the files are in an object store.
    pub remote: Option<Remote>,
    /// The table version read, for Delta tables (its file list is `files`).
    pub delta: Option<DeltaSnapshot>,
    /// The row groups, when the source is read by row group (Parquet-family files, no `sql`).
    pub(super) row_groups: Option<Arc<RowGroups>>,
    pub(super) sql: Option<String>,
    /// What the task reads from each row.
    pub columns: Columns,
    /// How the image column stores images (image tasks).
    pub image_kind: Option<ImageKind>,
    pub stats: Arc<SourceStats>,
}

impl Source {
    /// Lists the files and checks, before any output exists, that every file can be read and
    /// has the configured columns (and that the SQL plans against it).
    pub async fn open(pipeline: &Pipeline, member: &Member, columns: Columns) -> Result<Source> {
        let listing::Listing { root, files, format, remote, delta } = listing::list(pipeline, member).await?;
        let spec = &member.spec;
        let parquet = matches!(format, Format::Parquet | Format::Pretext | Format::Delta);
        let row_groups = if parquet && spec.sql.is_none() {
            Some(Arc::new(RowGroups::load(&files, remote.as_ref()).await?))
        } else {
            if parquet {
                listing::check_parquet_footers(&files)?;
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
            row_groups,
            sql: spec.sql.clone(),
            columns,
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
            if let Some(units) = source.row_groups.clone() {
                // Read by row group: the footer read at listing gives the schema.
                let mut fields: Vec<Arc<Field>> = units.schema(fi).fields().iter().cloned().collect();
                let values = partition_values(f, source.delta.as_ref())
                    .map_err(|e| Error::data(format!("`{}`: {e}", f.relative)))?;
                for (k, v) in values {
                    if fields.iter().all(|fl| fl.name() != &k) {
                        fields.push(Arc::new(Field::new(k, v.data_type(), true)));
                    }
                }
                let schema: SchemaRef = Arc::new(Schema::new(fields));
                source.columns.check(&mut source.image_kind, pipeline, member, f, &schema, &mut errors);
                if !errors.is_empty() {
                    break;
                }
                continue;
            }
            let df = match frame(&ctx, f, source.reading()).await {
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
            source.columns.check(&mut source.image_kind, pipeline, member, f, &schema, &mut errors);
            if !errors.is_empty() {
                break;
            }
        }
        if !errors.is_empty() {
            return Err(Error::Spec(SpecErrors(errors)));
        }
        Ok(source)
    }

    /// Schema of the scanned rows (see [`Columns::scan_schema`]).
    pub fn scan_schema(&self) -> SchemaRef {
        self.columns.scan_schema(self.image_kind)
    }

    /// How this source's files are read (for [`frame`]).
    pub(super) fn reading(&self) -> Reading<'_> {
        Reading { format: self.format, sql: self.sql.as_deref(), delta: self.delta.as_ref() }
    }

    /// How `split`'s rows are shared between ranks: in blocks of row groups when the source is
    /// read by row group and the whole of it is split (`None`: every rank reads every row and
    /// takes every `world_size`-th one).
    pub fn blocks(&self, split: Split) -> Option<Blocks> {
        let units = self.row_groups.as_ref()?;
        (split == Split::All).then_some(Blocks { rows: units.rows })
    }

    /// Checks that every file holds `schema`'s columns with the same types (`format: pretext`).
    pub async fn check_examples(&self, pipeline: &Pipeline, schema: &SchemaRef) -> Result<()> {
        let ctx = new_context(self.remote.as_ref());
        for f in &self.files {
            let df = frame(&ctx, f, self.reading()).await.map_err(|e| match e {
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
                    format!("`{}` does not hold `task.{}` examples: it {problem}", f.relative, self.columns.task),
                    Some("`format: pretext` reads an export of the same task and seq_len (`pretext export`); use the pipeline that made it".into()),
                )])));
            }
        }
        Ok(())
    }
}
