//! One stream per window of a window-tagged scan: the scan is shared, and each window's rows
//! are handed out as a [`BatchStream`] that ends where the next window begins.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use futures::stream::BoxStream;
use futures::StreamExt;

use crate::error::Result;
use crate::ground::batches::BatchStream;

/// A window-tagged scan (`(window, batch)` items, windows in rising order), handed out one
/// window at a time.
pub struct WindowedScan {
    shared: Arc<tokio::sync::Mutex<Shared>>,
    schema: SchemaRef,
}

struct Shared {
    scan: BoxStream<'static, Result<(u64, RecordBatch)>>,
    peeked: Option<Result<(u64, RecordBatch)>>,
}

impl Shared {
    /// The window of the next item (`Err(())`: the next item is an error), without taking it.
    async fn peek_window(&mut self) -> Option<std::result::Result<u64, ()>> {
        if self.peeked.is_none() {
            self.peeked = self.scan.next().await;
        }
        match self.peeked.as_ref()? {
            Ok((w, _)) => Some(Ok(*w)),
            Err(_) => Some(Err(())),
        }
    }
}

impl WindowedScan {
    /// `scan`, whose batches all have `schema`.
    pub fn new(scan: BoxStream<'static, Result<(u64, RecordBatch)>>, schema: SchemaRef) -> Self {
        WindowedScan { shared: Arc::new(tokio::sync::Mutex::new(Shared { scan, peeked: None })), schema }
    }

    /// The window the scan has reached (what is left of it is [`WindowedScan::rows`]), the
    /// scan's error in its place, or `None` at its end.
    pub async fn next_window(&self) -> Option<Result<u64>> {
        let mut g = self.shared.lock().await;
        match g.peek_window().await? {
            Ok(w) => Some(Ok(w)),
            Err(()) => g.peeked.take().and_then(|r| r.err()).map(Err),
        }
    }

    /// The rest of window `w`'s rows: they end where the scan reaches another window.
    pub fn rows(&self, w: u64) -> BatchStream {
        let s = futures::stream::unfold(self.shared.clone(), move |shared| async move {
            let item = {
                let mut g = shared.lock().await;
                match g.peek_window().await? {
                    Ok(x) if x != w => return None,
                    _ => g.peeked.take()?,
                }
            };
            Some((item.map(|(_, b)| b), shared))
        });
        BatchStream::new(self.schema.clone(), s)
    }
}
