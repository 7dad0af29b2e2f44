//! DataFusion's side of a source: a session per scan, each file as a DataFrame (its partition
//! values as columns, then `source.sql` over it as the table `source`), and what the logical
//! plan of that query tells us before any row is read.

use datafusion::dataframe::DataFrame;
use datafusion::prelude::*;

use super::delta::{Snapshot, NULL_PARTITION};
use super::layout::SourceFile;
use super::store::Remote;
use crate::spec::Format;

/// How a source's files are read.
#[derive(Debug, Clone, Copy)]
pub struct Reading<'a> {
    pub format: Format,
    pub sql: Option<&'a str>,
    /// The Delta snapshot, whose schema types the partition values.
    pub delta: Option<&'a Snapshot>,
}

/// A DataFusion session that reads one file front to back, with `remote`'s store registered.
pub fn new_context(remote: Option<&Remote>) -> SessionContext {
    // One partition: a file is read front to back, so row order is the file's order.
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(1).with_batch_size(4096));
    if let Some(r) = remote {
        ctx.register_object_store(&r.base, r.store.clone());
    }
    ctx
}

/// The partition values of `f` (hive directories or Delta partitions) as typed scalars:
/// Delta values take the column's type from the table schema, hive values are strings.
pub fn partition_values(
    f: &SourceFile,
    delta: Option<&Snapshot>,
) -> datafusion::error::Result<Vec<(String, datafusion::scalar::ScalarValue)>> {
    use datafusion::scalar::ScalarValue;
    f.partitions
        .iter()
        .map(|(k, v)| {
            let typed = delta.and_then(|d| d.schema.field_with_name(k).ok()).map(|field| {
                let t = field.data_type();
                if v == NULL_PARTITION {
                    ScalarValue::try_from(t)
                } else {
                    ScalarValue::Utf8(Some(v.clone())).cast_to(t)
                }
            });
            Ok((k.clone(), typed.unwrap_or_else(|| Ok(ScalarValue::Utf8(Some(v.clone()))))?))
        })
        .collect()
}

/// File `f` as a DataFrame: read as `how.format`, its partition values added as columns, then
/// `how.sql` run over it as the table `source` (refused when it is not row-wise).
pub async fn frame(
    ctx: &SessionContext,
    f: &SourceFile,
    how: Reading<'_>,
) -> std::result::Result<DataFrame, FrameError> {
    let path = f.path.to_string_lossy().to_string();
    let ext = f.path.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
    let df = match how.format {
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
    for (k, v) in partition_values(f, how.delta).map_err(FrameError::Read)? {
        if df.schema().fields().iter().all(|fl| fl.name() != &k) {
            df = df.with_column(&k, lit(v)).map_err(FrameError::Read)?;
        }
    }
    let Some(sql) = how.sql else { return Ok(df) };
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

/// Whether the optimizer proved `plan` returns no rows (a filter on partition values that are
/// constants for this file folds to `false`), so the file need not be read.
pub fn provably_empty(plan: &datafusion::logical_expr::LogicalPlan) -> bool {
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

/// Why a file could not be made a DataFrame: it cannot be read, or `source.sql` does not plan
/// against it (the message, and the file's columns for the hint).
pub enum FrameError {
    Read(datafusion::error::DataFusionError),
    Sql(String, String),
}
