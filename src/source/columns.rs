//! The columns a source reads for its task: which ones (text, image, table features, label,
//! key), checking each file has them with usable types, and the schema of the rows a scan
//! hands on.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::layout::SourceFile;
use crate::spec::{did_you_mean, Member, Pipeline, SourceSpec, SpecError, TaskInput, TaskSpec};

/// What the task reads from each row of a source, as the pipeline names it.
#[derive(Debug, Clone)]
pub struct Columns {
    /// What the task reads: text (`example_key`, `text`) or records (see [`Columns::scan_schema`]).
    pub input: TaskInput,
    /// The task's YAML name, for the path of errors about `task.<name>.columns`.
    pub task: &'static str,
    pub text: String,
    pub key: Option<String>,
    pub image: String,
    pub label: Option<String>,
    pub table: Vec<String>,
}

impl Columns {
    /// The columns `source` names for `task`.
    pub fn of(source: &SourceSpec, task: &TaskSpec) -> Columns {
        Columns {
            input: task.input(),
            task: task.name(),
            text: source.text_column.clone(),
            key: source.key_column.clone(),
            image: source.image_column.clone(),
            label: source.label_column.clone(),
            table: task.table_columns().to_vec(),
        }
    }

    /// Checks that `f` (whose columns are `schema`) holds the configured columns, with usable
    /// types, adding an error naming the YAML key for each problem.
    pub(super) fn check(
        &self,
        image_kind: &mut Option<ImageKind>,
        pipeline: &Pipeline,
        member: &Member,
        f: &SourceFile,
        schema: &SchemaRef,
        errors: &mut Vec<SpecError>,
    ) {
        let columns = || schema.fields().iter().map(|f| format!("`{}`", f.name())).collect::<Vec<_>>().join(", ");
        match self.input {
            TaskInput::Text => match schema.fields().iter().find(|fl| fl.name() == &self.text) {
                None => errors.push(pipeline.error_at(&member.key("text_column"),
                    format!("column `{}` not found in `{}`", self.text, f.relative),
                    Some(format!("the columns are: {}", columns())),
                )),
                Some(field) if !is_string(field.data_type()) => errors.push(pipeline.error_at(&member.key("text_column"),
                    format!("column `{}` in `{}` is {}, not a string column", self.text, f.relative, field.data_type()),
                    Some(format!("pick a string column, or cast it in `source.sql` (e.g. `SELECT CAST(x AS VARCHAR) AS text FROM source`); the columns are: {}", columns())),
                )),
                Some(_) => {}
            },
            TaskInput::Image => {
                let col = &self.image;
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
                            if image_kind.is_some_and(|k| k != kind) {
                                errors.push(pipeline.error_at(&member.key("image_column"),
                                    format!("column `{col}` in `{}` is {}, unlike the files before it", f.relative, field.data_type()),
                                    Some("every file must store images the same way".into()),
                                ));
                            }
                            *image_kind = Some(kind);
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
                for col in &self.table {
                    let at = ["task", self.task, "columns"];
                    match schema.fields().iter().find(|fl| fl.name() == col) {
                        None => errors.push(pipeline.error_at(
                            &at,
                            format!("column `{col}` not found in `{}`", f.relative),
                            Some(match did_you_mean(col, schema.fields().iter().map(|f| f.name().as_str())) {
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
        if let Some(l) = self.label.as_ref().filter(|_| self.input != TaskInput::Text) {
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
        if let Some(k) = &self.key {
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
    pub fn scan_schema(&self, image_kind: Option<ImageKind>) -> SchemaRef {
        let mut fields = vec![Field::new("example_key", DataType::UInt64, false)];
        match self.input {
            TaskInput::Text => return doc_schema(),
            TaskInput::Image => {
                let kind = image_kind.unwrap_or(ImageKind::Encoded);
                fields.push(Field::new("image", kind.data_type(), false));
            }
            TaskInput::Table => {
                fields.extend(self.table.iter().map(|c| Field::new(c, DataType::Float64, true)));
            }
        }
        if self.label.is_some() {
            fields.push(Field::new("label", DataType::Int64, true));
        }
        Arc::new(Schema::new(fields))
    }

    /// The columns a scan reads: the task's (`examples`) or the configured ones.
    pub(super) fn read(&self, examples: Option<&SchemaRef>) -> Vec<String> {
        if let Some(schema) = examples {
            return schema.fields().iter().map(|f| f.name().clone()).collect();
        }
        let mut columns = match self.input {
            TaskInput::Text => vec![self.text.clone()],
            TaskInput::Image => vec![self.image.clone()],
            TaskInput::Table => self.table.clone(),
        };
        if self.input != TaskInput::Text {
            columns.extend(self.label.clone());
        }
        columns.extend(self.key.clone());
        columns
    }
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

pub(super) fn is_integer(t: &DataType) -> bool {
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
