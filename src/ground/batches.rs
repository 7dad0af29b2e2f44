//! The one data-plane type between stages: [`BatchStream`], a stream of record batches of one
//! schema whose errors are pretext's own [`Error`]s. DataFusion's `SendableRecordBatchStream`
//! is met only at the edges: a DataFrame's stream comes in through
//! [`BatchStream::from_datafusion`], and [`BatchStream::into_datafusion`] hands a stream to
//! anything that consumes DataFusion's streams.

use std::pin::Pin;
use std::task::{Context, Poll};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};

use crate::error::{Error, Result};

/// A lazy stream of record batches that all have [`BatchStream::schema`]. Nothing runs before
/// the first poll; an error travels in the stream, in place of the batch it stopped; dropping
/// the stream stops the work behind it.
pub struct BatchStream {
    schema: SchemaRef,
    inner: BoxStream<'static, Result<RecordBatch>>,
}

impl BatchStream {
    /// The batches of `stream`, which all have `schema`.
    pub(crate) fn new(schema: SchemaRef, stream: impl Stream<Item = Result<RecordBatch>> + Send + 'static) -> Self {
        BatchStream { schema, inner: stream.boxed() }
    }

    /// The schema of every batch.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// DataFusion's stream, its errors turned into pretext's (an error pretext raised inside a
    /// DataFusion plan comes back out as itself).
    pub(crate) fn from_datafusion(stream: SendableRecordBatchStream) -> Self {
        let schema = stream.schema();
        BatchStream::new(schema, stream.map(|r| r.map_err(Error::from)))
    }

    /// This stream as DataFusion's, for consumers of DataFusion's streams.
    pub fn into_datafusion(self) -> SendableRecordBatchStream {
        let schema = self.schema.clone();
        Box::pin(RecordBatchStreamAdapter::new(schema, self.inner.map(|r| r.map_err(Into::into))))
    }
}

impl Stream for BatchStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl std::fmt::Debug for BatchStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchStream").field("schema", &self.schema).finish_non_exhaustive()
    }
}

/// A batch of documents (`example_key` 0.., `text`), for the tests of the stages that read text.
#[cfg(test)]
pub(crate) fn docs(texts: &[&str]) -> RecordBatch {
    use arrow::array::{StringViewArray, UInt64Array};
    use arrow::datatypes::{DataType, Field, Schema};
    let schema = std::sync::Arc::new(Schema::new(vec![
        Field::new("example_key", DataType::UInt64, false),
        Field::new("text", DataType::Utf8View, false),
    ]));
    let keys = UInt64Array::from_iter_values(0..texts.len() as u64);
    RecordBatch::try_new(
        schema,
        vec![std::sync::Arc::new(keys), std::sync::Arc::new(StringViewArray::from(texts.to_vec()))],
    )
    .unwrap()
}
