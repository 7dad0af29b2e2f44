//! The object store every `s3://` (`gs://`, `az://`) source and export talks to: object_store's
//! client, which already retries one request on a 5xx, a throttle (429, SlowDown), a reset or a
//! timeout, and resumes a GET body cut short with a ranged request for the rest, wrapped to
//!
//! - fail fast when nothing answers at the endpoint: before its first request the store asks
//!   once, without retries, and a refused connection or an unknown host is reported at once
//!   (a typo in `endpoint` must not wait out the retry budget);
//! - retry what the client leaves alone: a listing whose body is cut short (resumed after the
//!   last key it delivered, so no key is listed twice or skipped), and any other request that
//!   failed for a passing reason the client does not retry (a body error, a decode error);
//! - say, when the budget runs out, that the failure was transient, how many tries over how
//!   long, the object and the last status ([`GaveUp`]), so no reader calls a file unreadable
//!   because its server was busy.
//!
//! Failures no retry can cure (missing bucket or object, refused credentials, a conflict) pass
//! through unchanged, at once.

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryFutureExt, TryStreamExt};
use object_store::client::{HttpError, HttpErrorKind};
use object_store::path::Path as StorePath;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use rand::{Rng, SeedableRng};

use crate::error::GaveUp;
use crate::spec::RetrySpec;

/// What the wrapper shares with the listing streams it hands out.
#[derive(Debug)]
pub(super) struct Shared {
    /// The client that retries as `retry` says.
    pub full: Arc<dyn ObjectStore>,
    /// The same client without retries: the first question to the endpoint.
    pub probe: Arc<dyn ObjectStore>,
    /// The key asked about (the prefix the store was opened for).
    pub probe_at: StorePath,
    /// Whether anything answered: `Err` holds the error text when nothing did.
    pub probed: tokio::sync::OnceCell<Result<(), String>>,
    pub retry: RetrySpec,
    /// `scheme://bucket`, for the URLs in messages.
    pub base: String,
    /// The YAML path of the `retry` block, for hints.
    pub at: String,
}

/// See the module documentation.
#[derive(Debug)]
pub(super) struct Patient(pub Arc<Shared>);

impl std::fmt::Display for Patient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Patient({})", self.0.full)
    }
}

/// How a failed request may end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// No retry can cure it: report it now.
    Permanent,
    /// No connection was made, or the request was not sent: a wrong endpoint before the store
    /// first answered, a passing outage after.
    Unreachable,
    /// A passing failure: a 5xx, a throttle, a reset, a timeout, a body cut short.
    Transient,
}

/// The HTTP status in an object_store error's text (its retry error keeps it private).
fn status_of(text: &str) -> Option<u16> {
    let at = text.find("status code: ")? + "status code: ".len();
    text.get(at..at + 3)?.parse().ok()
}

fn classify(e: &object_store::Error) -> Class {
    if !matches!(e, object_store::Error::Generic { .. }) {
        // NotFound, PermissionDenied, Unauthenticated, AlreadyExists, Precondition, …
        return Class::Permanent;
    }
    let mut at: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(x) = at {
        if let Some(h) = x.downcast_ref::<HttpError>() {
            return match h.kind() {
                HttpErrorKind::Connect | HttpErrorKind::Request => Class::Unreachable,
                _ => Class::Transient,
            };
        }
        at = x.source();
    }
    let text = e.to_string();
    match status_of(&text) {
        Some(s) if s >= 500 || s == 429 || s == 408 => Class::Transient,
        Some(_) => Class::Permanent,
        None if text.contains("SlowDown") || text.contains("InternalError") => Class::Transient,
        None => Class::Permanent,
    }
}

/// Exponential backoff with full jitter, as object_store's client waits: each wait is drawn
/// between the first wait and twice the one before, at most `max_backoff_s`.
struct Backoff {
    first: f64,
    max: f64,
    last: f64,
    rng: rand_xoshiro::Xoshiro256PlusPlus,
}

impl Backoff {
    fn new(r: &RetrySpec) -> Backoff {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        let rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(nanos as u64 ^ std::process::id() as u64);
        Backoff { first: r.backoff_s, max: r.max_backoff_s, last: r.backoff_s, rng }
    }

    fn next(&mut self) -> Duration {
        let top = (self.last * 2.0).min(self.max).max(self.first);
        let wait = if top > self.first { self.rng.random_range(self.first..=top) } else { top };
        self.last = wait;
        Duration::from_secs_f64(wait)
    }
}

/// One request's failures so far: when the first came, how many tries.
struct Failing {
    since: Instant,
    tries: u32,
    backoff: Backoff,
}

impl Failing {
    fn new(r: &RetrySpec) -> Failing {
        Failing { since: Instant::now(), tries: 0, backoff: Backoff::new(r) }
    }
}

impl Shared {
    /// Whether anything answers at the endpoint, asked once per store, without retries: any
    /// answer (even a 404, a 403 or a 503) will do. A refused connection is tried twice more,
    /// briefly, then reported as it came.
    async fn reachable(&self) -> object_store::Result<()> {
        let answer = self
            .probed
            .get_or_init(|| async {
                let mut last = String::new();
                for wait_ms in [0, 200, 500] {
                    tokio::time::sleep(Duration::from_millis(wait_ms)).await;
                    match self.probe.head(&self.probe_at).await {
                        Err(e) if classify(&e) == Class::Unreachable => last = e.to_string(),
                        _ => return Ok(()),
                    }
                }
                Err(last)
            })
            .await;
        answer.clone().map_err(|text| {
            // The probe's error, as the client worded it ("Generic S3 error: …").
            let (store, text) = ["S3", "GCS", "MicrosoftAzure"]
                .into_iter()
                .find_map(|s| Some((s, text.strip_prefix(&format!("Generic {s} error: "))?.to_string())))
                .unwrap_or(("object store", text));
            object_store::Error::Generic { store, source: text.into() }
        })
    }

    fn url_of(&self, location: &StorePath) -> String {
        format!("{}/{location}", self.base)
    }

    /// Whether a failure is to be tried again (after the wait this returns), or the error to
    /// report: unchanged when permanent, a [`GaveUp`] when the budget is spent.
    async fn after_failure(
        &self,
        e: object_store::Error,
        failing: &mut Failing,
        what: &str,
        location: &StorePath,
    ) -> Result<(), object_store::Error> {
        if classify(&e) == Class::Permanent {
            return Err(e);
        }
        failing.tries += 1;
        let spent = failing.since.elapsed();
        if spent.as_secs_f64() >= self.retry.timeout_s || failing.tries > self.retry.max_retries {
            return Err(self.gave_up(e, what, location, failing));
        }
        let wait = failing.backoff.next();
        tracing::info!("{what} {}: {e}; trying again in {:.1} s", self.url_of(location), wait.as_secs_f64());
        tokio::time::sleep(wait).await;
        Ok(())
    }

    fn gave_up(
        &self,
        e: object_store::Error,
        what: &str,
        location: &StorePath,
        failing: &Failing,
    ) -> object_store::Error {
        let text = e.to_string();
        // The client's own retries of the last try, as its message counts them.
        let inner = text
            .split_once(", after ")
            .and_then(|(_, rest)| rest.split_once(" retries"))
            .and_then(|(n, _)| n.trim().parse::<u32>().ok())
            .unwrap_or(0);
        let tries = failing.tries + inner;
        let last = match status_of(&text) {
            Some(status) => {
                let code = text
                    .split_once("<Code>")
                    .and_then(|(_, rest)| rest.split_once("</Code>"))
                    .map(|(c, _)| format!(" {c}"))
                    .unwrap_or_default();
                format!("the last answer was status {status}{code}")
            }
            None => {
                let mut at: &(dyn std::error::Error + 'static) = &e;
                while let Some(next) = at.source() {
                    at = next;
                }
                format!("the last try failed with: {at}")
            }
        };
        let spent = failing.since.elapsed().as_secs_f64();
        let (at, budget) = (&self.at, self.retry.timeout_s);
        let g = GaveUp {
            message: format!(
                "object store `{}`: {what} failed for a passing reason {tries} times over {spent:.1} s ({last}); the retry budget is spent",
                self.url_of(location)
            ),
            hint: format!(
                "the store or the network was busy or down for longer than `{at}.timeout_s` ({budget} s): run the same command again with `--resume` to continue where it stopped (an export keeps its finished parts, training its checkpoints), or raise `{at}.timeout_s`"
            ),
        };
        object_store::Error::Generic { store: "object store", source: Box::new(g) }
    }

    /// `op` on the retrying client, tried again while it fails for a passing reason.
    async fn patiently<T, F, Fut>(&self, what: &str, location: &StorePath, op: F) -> object_store::Result<T>
    where
        F: Fn(Arc<dyn ObjectStore>) -> Fut,
        Fut: std::future::Future<Output = object_store::Result<T>>,
    {
        self.reachable().await?;
        let mut failing = None;
        loop {
            match op(self.full.clone()).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    let f = failing.get_or_insert_with(|| Failing::new(&self.retry));
                    self.after_failure(e, f, what, location).await?;
                }
            }
        }
    }
}

/// A listing that survives failures part-way: after one, it lists again from the last key it
/// delivered (stores list in key order, and `list_with_offset` starts after a key).
fn listing(
    shared: Arc<Shared>,
    prefix: Option<StorePath>,
    offset: Option<StorePath>,
) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
    struct State {
        shared: Arc<Shared>,
        prefix: Option<StorePath>,
        last: Option<StorePath>,
        pages: Option<BoxStream<'static, object_store::Result<ObjectMeta>>>,
        failing: Option<Failing>,
        done: bool,
    }
    let state = State { shared, prefix, last: offset, pages: None, failing: None, done: false };
    futures::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        if st.pages.is_none() {
            if let Err(e) = st.shared.reachable().await {
                st.done = true;
                return Some((Err(e), st));
            }
        }
        loop {
            let pages = st.pages.get_or_insert_with(|| match &st.last {
                Some(after) => st.shared.full.list_with_offset(st.prefix.as_ref(), after),
                None => st.shared.full.list(st.prefix.as_ref()),
            });
            match pages.next().await {
                None => return None,
                Some(Ok(meta)) => {
                    st.last = Some(meta.location.clone());
                    st.failing = None;
                    return Some((Ok(meta), st));
                }
                Some(Err(e)) => {
                    st.pages = None;
                    let at = st.prefix.clone().unwrap_or_default();
                    let failing = st.failing.get_or_insert_with(|| Failing::new(&st.shared.retry));
                    if let Err(e) = st.shared.after_failure(e, failing, "listing", &at).await {
                        st.done = true;
                        return Some((Err(e), st));
                    }
                }
            }
        }
    })
    .boxed()
}

#[async_trait::async_trait]
impl ObjectStore for Patient {
    async fn put_opts(
        &self,
        location: &StorePath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if !matches!(opts.mode, PutMode::Overwrite) {
            // A conditional write tried again after a reply that was lost would fail on its own
            // success: leave it to the client's retries, which know when that cannot happen.
            self.0.reachable().await?;
            return self.0.full.put_opts(location, payload, opts).await;
        }
        self.0
            .patiently("writing", location, |s| {
                let (payload, opts) = (payload.clone(), opts.clone());
                async move { s.put_opts(location, payload, opts).await }
            })
            .await
    }

    async fn put_multipart_opts(
        &self,
        location: &StorePath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.0
            .patiently("starting an upload", location, |s| {
                let opts = opts.clone();
                async move { s.put_multipart_opts(location, opts).await }
            })
            .await
    }

    async fn get_opts(&self, location: &StorePath, options: GetOptions) -> object_store::Result<GetResult> {
        let mut got = self
            .0
            .patiently("reading", location, |s| {
                let options = options.clone();
                async move { s.get_opts(location, options).await }
            })
            .await?;
        // The client resumes a body cut short from where it stopped, within the budget; a body
        // it gave up on is reported as what it is.
        if let GetResultPayload::Stream(body) = got.payload {
            let (shared, location) = (self.0.clone(), location.clone());
            let started = Instant::now();
            got.payload = GetResultPayload::Stream(
                body.map_err(move |e| match classify(&e) {
                    Class::Permanent => e,
                    _ => {
                        let failing = Failing { since: started, tries: 1, backoff: Backoff::new(&shared.retry) };
                        shared.gave_up(e, "reading", &location, &failing)
                    }
                })
                .boxed(),
            );
        }
        Ok(got)
    }

    async fn get_ranges(&self, location: &StorePath, ranges: &[Range<u64>]) -> object_store::Result<Vec<Bytes>> {
        self.0.patiently("reading", location, |s| async move { s.get_ranges(location, ranges).await }).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<StorePath>>,
    ) -> BoxStream<'static, object_store::Result<StorePath>> {
        let shared = self.0.clone();
        locations
            .and_then(move |location| {
                let shared = shared.clone();
                async move {
                    shared
                        .patiently("deleting", &location, |s| {
                            let location = location.clone();
                            async move { s.delete(&location).await }
                        })
                        .map_ok(|()| location.clone())
                        .await
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&StorePath>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        listing(self.0.clone(), prefix.cloned(), None)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&StorePath>,
        offset: &StorePath,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        listing(self.0.clone(), prefix.cloned(), Some(offset.clone()))
    }

    async fn list_with_delimiter(&self, prefix: Option<&StorePath>) -> object_store::Result<ListResult> {
        let at = prefix.cloned().unwrap_or_default();
        self.0.patiently("listing", &at, |s| async move { s.list_with_delimiter(prefix).await }).await
    }

    async fn copy_opts(&self, from: &StorePath, to: &StorePath, options: CopyOptions) -> object_store::Result<()> {
        self.0
            .patiently("copying", from, |s| {
                let options = options.clone();
                async move { s.copy_opts(from, to, options).await }
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_read_from_the_clients_message() {
        let text = "Error performing GET http://x/b/k in 1ms - Server returned non-2xx status code: 503 Service Unavailable: <Code>SlowDown</Code>";
        assert_eq!(status_of(text), Some(503));
        assert_eq!(status_of("nothing here"), None);
        let e = |t: &str| object_store::Error::Generic { store: "S3", source: t.to_string().into() };
        assert_eq!(classify(&e(text)), Class::Transient);
        assert_eq!(classify(&e("Server returned non-2xx status code: 429 Too Many Requests")), Class::Transient);
        assert_eq!(classify(&e("Server returned non-2xx status code: 400 Bad Request")), Class::Permanent);
        let missing = object_store::Error::NotFound { path: "k".into(), source: "gone".to_string().into() };
        assert_eq!(classify(&missing), Class::Permanent);
    }

    #[test]
    fn backoff_grows_with_jitter_up_to_its_ceiling() {
        let r = RetrySpec { timeout_s: 60.0, max_retries: 10, backoff_s: 0.1, max_backoff_s: 2.0 };
        let mut b = Backoff::new(&r);
        let waits: Vec<f64> = (0..12).map(|_| b.next().as_secs_f64()).collect();
        assert!(waits.iter().all(|w| (0.1..=2.0).contains(w)), "{waits:?}");
        assert!(waits.windows(2).all(|w| w[1] <= (w[0] * 2.0).max(0.1) + 1e-9), "{waits:?}");
    }
}
