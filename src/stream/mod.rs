//! Stream primitives, each a lazy transform of a [`BatchStream`] or of a stream of items with
//! their results: an ordered parallel map on the blocking pool ([`ordered_map`]), a stateful
//! transform with an end-of-stream flush ([`stateful`]), document packing ([`pack`]), the
//! seeded window shuffle ([`shuffle`]), one stream per window of a window-tagged scan
//! ([`windows`]), and the weighted mixture that cuts batches and keeps the cursor ([`mix`],
//! [`cursor`]). CPU work runs on the blocking pool through [`SpawnedTask`], at most `workers`
//! jobs in flight, results in input order, so output never depends on timing.
//!
//! Nothing here knows a pipeline: `plan` wires these primitives into a pipeline's stream.

mod cursor;
mod mix;
mod pack;
mod shuffle;
mod windows;

use std::future::Future;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::common::runtime::SpawnedTask;
use futures::{Stream, StreamExt};

use crate::error::{Error, Result};
use crate::ground::batches::BatchStream;
pub use cursor::{MemberPos, StreamCursor};
pub use mix::{mix, with_source, MixCounts, Opener, Windows, OWN};
pub use pack::{Packer, Packing};
pub use shuffle::WindowShuffle;
pub use windows::WindowedScan;

/// Applies `f` to every batch on the blocking pool, `workers` at a time, keeping input order.
pub fn ordered_map<F>(input: BatchStream, schema: SchemaRef, workers: usize, f: F) -> BatchStream
where
    F: Fn(RecordBatch) -> Result<RecordBatch> + Send + Sync + 'static,
{
    BatchStream::new(schema, ordered_blocking(input, workers, f))
}

/// Runs `f` on every item of `input` on the blocking pool, at most `workers` at once, and yields
/// the results in input order.
///
/// A task of its own pulls `input` and starts the jobs, so work goes on while the consumer is
/// busy elsewhere (writing a part, say). A `buffered` stream would start a job only when its
/// consumer polls it, and each stage would wait for the slowest one downstream. At most
/// `workers` finished results wait for the consumer. A failed job yields its error in its
/// place; a failed input ends the stream with its error; a panic in a job or while pulling the
/// input yields an error too, so the stream never ends early without one.
pub fn ordered_blocking<T, F>(
    input: impl Stream<Item = Result<T>> + Send + 'static,
    workers: usize,
    f: F,
) -> impl Stream<Item = Result<RecordBatch>> + Send + 'static
where
    T: Send + 'static,
    F: Fn(T) -> Result<RecordBatch> + Send + Sync + 'static,
{
    type Job = Result<SpawnedTask<Result<RecordBatch>>>;
    enum St<S, F> {
        Idle(S, Arc<F>),
        Running(tokio::sync::mpsc::Receiver<Job>, Option<SpawnedTask<()>>),
    }
    let workers = workers.max(1);
    let start = St::Idle(Box::pin(input), Arc::new(f));
    // The driver is spawned on the first poll, inside the runtime that polls it.
    futures::stream::unfold(start, move |st| async move {
        let (mut rx, mut driver) = match st {
            St::Running(rx, driver) => (rx, driver),
            St::Idle(mut input, f) => {
                let (tx, rx) = tokio::sync::mpsc::channel::<Job>(workers);
                let permits = Arc::new(tokio::sync::Semaphore::new(workers));
                let driver = SpawnedTask::spawn(async move {
                    loop {
                        let Ok(permit) = permits.clone().acquire_owned().await else { return };
                        let job = match input.next().await {
                            None => return,
                            Some(Err(e)) => Err(e),
                            Some(Ok(item)) => {
                                let f = f.clone();
                                Ok(SpawnedTask::spawn_blocking(move || {
                                    let r = f(item);
                                    drop(permit);
                                    r
                                }))
                            }
                        };
                        let failed = job.is_err();
                        if tx.send(job).await.is_err() || failed {
                            return;
                        }
                    }
                });
                (rx, Some(driver))
            }
        };
        let out = match rx.recv().await {
            Some(Ok(job)) => match job.join().await {
                Ok(r) => r,
                Err(e) => Err(Error::internal(format!("a worker thread failed: {e}"))),
            },
            Some(Err(e)) => Err(e),
            // The channel closes when the driver ends: make sure it ended without a panic.
            None => match driver.take()?.join().await {
                Ok(()) => return None,
                Err(e) => Err(Error::internal(format!("a pipeline stage failed: {e}"))),
            },
        };
        Some((out, St::Running(rx, driver)))
    })
    .fuse()
}

/// A stream transform with state and an end-of-stream flush.
pub fn stateful<S, P, F, Fut>(input: BatchStream, schema: SchemaRef, state: S, push: P, finish: F) -> BatchStream
where
    S: Send + 'static,
    P: FnMut(&mut S, RecordBatch) -> Result<Vec<RecordBatch>> + Send + 'static,
    F: FnOnce(S) -> Fut + Send + 'static,
    Fut: Future<Output = Result<Vec<RecordBatch>>> + Send + 'static,
{
    struct St<S, P, F> {
        input: BatchStream,
        state: Option<(S, P, F)>,
    }
    let s = futures::stream::unfold(St { input, state: Some((state, push, finish)) }, |mut st| async move {
        let (state, push, _) = st.state.as_mut()?;
        match st.input.next().await {
            Some(Ok(batch)) => {
                let r = push(state, batch);
                if r.is_err() {
                    st.state = None;
                }
                Some((r, st))
            }
            Some(Err(e)) => {
                st.state = None;
                Some((Err(e), st))
            }
            None => {
                let (state, _, finish) = st.state.take()?;
                Some((finish(state).await, st))
            }
        }
    })
    .map(|r: Result<Vec<RecordBatch>>| match r {
        Ok(v) => futures::stream::iter(v.into_iter().map(Ok)).left_stream(),
        Err(e) => futures::stream::iter(std::iter::once(Err(e))).right_stream(),
    })
    .flatten();
    BatchStream::new(schema, s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ground::batches::docs;
    use arrow::array::AsArray;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
    }

    #[test]
    fn ordered_jobs_keep_input_order_whatever_their_durations() {
        let batches: Vec<_> = (0..24u64).map(|i| Ok(docs(&[&i.to_string()]))).collect();
        let out: Vec<u64> = rt().block_on(async {
            let s = ordered_blocking(futures::stream::iter(batches), 3, |b: RecordBatch| {
                let n: u64 = b.column(1).as_string_view().value(0).parse().unwrap();
                std::thread::sleep(std::time::Duration::from_millis((n * 7) % 11));
                Ok(b)
            });
            s.map(|b| b.unwrap().column(1).as_string_view().value(0).parse::<u64>().unwrap()).collect().await
        });
        assert_eq!(out, (0..24).collect::<Vec<_>>());
    }

    #[test]
    fn jobs_run_ahead_while_the_consumer_is_busy_but_only_so_far() {
        let done = Arc::new(AtomicUsize::new(0));
        let counted = done.clone();
        let ran = rt().block_on(async move {
            let batches: Vec<_> = (0..100).map(|_| Ok(docs(&["x"]))).collect();
            let mut s = Box::pin(ordered_blocking(futures::stream::iter(batches), 2, move |b| {
                counted.fetch_add(1, Ordering::SeqCst);
                Ok(b)
            }));
            s.next().await.unwrap().unwrap();
            // The consumer is away: the stage goes on without being polled.
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            done.load(Ordering::SeqCst)
        });
        // One delivered, `workers` waiting in the channel, one waiting to be sent.
        assert!((3..=5).contains(&ran), "{ran} jobs ran");
    }

    #[test]
    fn a_failed_input_a_failed_job_or_a_panic_ends_the_stream_with_an_error() {
        let rt = rt();
        let ok = || Ok(docs(&["x"]));
        let collect = |s: futures::stream::BoxStream<'static, Result<RecordBatch>>| rt.block_on(s.collect::<Vec<_>>());
        let failed_input = vec![ok(), Err(Error::data("bad row group")), ok()];
        let out = collect(ordered_blocking(futures::stream::iter(failed_input), 2, Ok).boxed());
        assert_eq!(out.len(), 2);
        assert!(out[1].as_ref().unwrap_err().to_string().contains("bad row group"));

        let out = collect(
            ordered_blocking(futures::stream::iter(vec![ok(), ok(), ok()]), 2, |b: RecordBatch| {
                if b.num_rows() == 1 {
                    Err(Error::data("a job failed"))
                } else {
                    Ok(b)
                }
            })
            .boxed(),
        );
        assert!(out[0].as_ref().unwrap_err().to_string().contains("a job failed"));

        let out = collect(
            ordered_blocking(futures::stream::iter(vec![ok()]), 2, |_: RecordBatch| -> Result<RecordBatch> {
                panic!("boom")
            })
            .boxed(),
        );
        assert!(out[0].as_ref().unwrap_err().to_string().contains("worker thread failed"), "{out:?}");

        // A panic while pulling the input must not pass for the end of the stream.
        let panicking = futures::stream::iter(0..3).map(move |i| {
            assert!(i < 1, "the input panicked");
            ok()
        });
        let out = collect(ordered_blocking(panicking, 2, Ok).boxed());
        assert!(out.last().unwrap().as_ref().unwrap_err().to_string().contains("stage failed"), "{out:?}");
    }
}
