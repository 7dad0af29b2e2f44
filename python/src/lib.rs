//! `pretext._pretext`: the PyO3 extension under the `pretext` Python package.
//!
//! A thin layer over the library API: a pipeline is loaded (and its spec checked) when the
//! Python object is made, resolved into a [`Plan`] lazily in the process that uses it, and run
//! on this process's tokio runtime ahead of the consumer (a bounded channel of batches). Batches
//! cross into Python through the Arrow C data and C stream interfaces (PyCapsules), without a
//! copy. Every wait for the pipeline releases the GIL and wakes to let Python's signal handlers
//! run, so Ctrl-C raises `KeyboardInterrupt`.
//!
//! Fork safety: a tokio runtime's threads do not exist in a forked child (a DataLoader worker),
//! so the runtime and each plan are keyed by the process id and made anew in a child.

use std::ffi::CStr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::{Array, RecordBatch, RecordBatchReader, StructArray};
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::ffi::{FFI_ArrowArray, FFI_ArrowSchema};
use arrow::ffi_stream::FFI_ArrowArrayStream;
use futures::StreamExt;
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyCapsule, PyDict, PyList};

use pretext::{BuildOptions, Plan, Pos, Split, StreamCursor};

create_exception!(_pretext, Error, PyException, "Every error pretext raises.");
create_exception!(
    _pretext,
    SpecError,
    Error,
    "The pipeline file or a `set` override is wrong; `.errors` lists every problem."
);
create_exception!(_pretext, DataError, Error, "The data the pipeline reads is wrong or unreadable.");
create_exception!(
    _pretext,
    EnvError,
    Error,
    "The environment refused something (a file, a directory, permissions, a lock)."
);
create_exception!(_pretext, StoppedError, Error, "A signal stopped the command at a safe point.");
create_exception!(_pretext, InternalError, Error, "A broken invariant inside pretext: please report it.");

/// How long one wait for the pipeline blocks before Python's signal handlers get a turn.
const SIGNAL_POLL: Duration = Duration::from_millis(50);

/// A pretext error as the Python exception of its kind, with the CLI's message.
fn to_py(py: Python<'_>, e: pretext::Error) -> PyErr {
    let message = e.to_string();
    match e {
        pretext::Error::Spec(errors) => {
            let err = SpecError::new_err(message);
            let list = PyList::empty(py);
            for s in &errors.0 {
                let d = PyDict::new(py);
                let _ = d.set_item("file", &s.file);
                let (line, col, set) = match &s.pos {
                    Pos::File { line, col } => (Some(*line), Some(*col), None),
                    Pos::Override(text) => (None, None, Some(text.clone())),
                };
                let _ = d.set_item("line", line);
                let _ = d.set_item("column", col);
                let _ = d.set_item("set", set);
                let _ = d.set_item("path", &s.path);
                let _ = d.set_item("message", &s.message);
                let _ = d.set_item("hint", &s.hint);
                let _ = list.append(d);
            }
            let _ = err.value(py).setattr("errors", list);
            err
        }
        pretext::Error::Data { .. } => DataError::new_err(message),
        pretext::Error::Env { .. } => EnvError::new_err(message),
        pretext::Error::Stopped { signal, .. } => {
            let err = StoppedError::new_err(message);
            let _ = err.value(py).setattr("signal", signal);
            err
        }
        pretext::Error::Internal(_) => InternalError::new_err(message),
    }
}

/// Runs `f`, turning a Rust panic into `InternalError` (never a panic reaching Python).
fn guard<T>(f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => Err(panic_error(payload)),
    }
}

/// A caught panic as `InternalError`.
fn panic_error(payload: Box<dyn std::any::Any + Send>) -> PyErr {
    let what = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic".into());
    InternalError::new_err(format!(
        "internal error: {what}\n  please report this at the pretext issue tracker with the pipeline file"
    ))
}

/// The runtime a pipeline runs on: a handle to this process's tokio runtime, and the runtime's
/// generation (a new one after each fork).
#[derive(Clone)]
struct Rt {
    handle: tokio::runtime::Handle,
    generation: u64,
}

impl Rt {
    /// Fails once the runtime this was taken from is gone (the process forked since).
    fn check(&self) -> PyResult<()> {
        if self.generation == GENERATION.load(Ordering::SeqCst) {
            return Ok(());
        }
        Err(EnvError::new_err(
            "this batch iterator was stopped when the process forked (a DataLoader starting its workers, say): \
             start a new one from its last cursor",
        ))
    }
}

/// This process's runtime and the process that made it.
static RUNTIME: Mutex<Option<(u32, tokio::runtime::Runtime)>> = Mutex::new(None);
/// Bumped whenever the runtime is shut down for a fork.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// This process's tokio runtime, made on first use (and anew in a forked child, and in the parent
/// after a fork).
fn runtime() -> PyResult<Rt> {
    let mut slot = RUNTIME.lock().unwrap_or_else(|p| p.into_inner());
    let pid = std::process::id();
    if let Some((owner, rt)) = slot.as_ref() {
        if *owner == pid {
            return Ok(Rt { handle: rt.handle().clone(), generation: GENERATION.load(Ordering::SeqCst) });
        }
    }
    // A runtime inherited through fork has no threads behind it: dropping it would wait for
    // them, so it is forgotten.
    if let Some((_, stale)) = slot.take() {
        std::mem::forget(stale);
        GENERATION.fetch_add(1, Ordering::SeqCst);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("pretext")
        .build()
        .map_err(|e| EnvError::new_err(format!("cannot start the async runtime: {e}")))?;
    let out = Rt { handle: rt.handle().clone(), generation: GENERATION.load(Ordering::SeqCst) };
    *slot = Some((pid, rt));
    Ok(out)
}

/// Called by `os.register_at_fork(before=...)`: stops this process's runtime and joins its
/// threads, so that the child starts with no Rust thread caught holding a lock (a forked child
/// has only the forking thread; a lock another thread held stays locked there forever). Pipelines
/// rebuild their plans and runtime on next use, in the parent and in the child.
#[pyfunction]
fn _before_fork(py: Python<'_>) {
    let taken = RUNTIME.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some((owner, rt)) = taken {
        GENERATION.fetch_add(1, Ordering::SeqCst);
        if owner == std::process::id() {
            py.detach(|| rt.shutdown_timeout(FORK_SHUTDOWN));
        } else {
            std::mem::forget(rt);
        }
    }
}

/// How long a fork waits for the pipeline's blocking jobs (a row group being decoded, say).
const FORK_SHUTDOWN: Duration = Duration::from_secs(10);

/// Waits for `fut` on the runtime with the GIL released, waking every [`SIGNAL_POLL`] to run
/// Python's signal handlers (a `KeyboardInterrupt` drops the future and propagates).
fn wait<F>(py: Python<'_>, rt: &Rt, fut: F) -> PyResult<F::Output>
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    let mut fut = std::pin::pin!(fut);
    loop {
        rt.check()?;
        let polled = py.detach(|| rt.handle.block_on(async { tokio::time::timeout(SIGNAL_POLL, &mut fut).await.ok() }));
        match polled {
            Some(out) => return Ok(out),
            None => py.check_signals()?,
        }
    }
}

/// Runs the future `make` returns to completion on a thread of its own (driving `rt`), while
/// this thread waits with the GIL released and runs Python's signal handlers every
/// [`SIGNAL_POLL`]; a `KeyboardInterrupt` cancels the future (dropping it at its next await) and
/// propagates. For the library's long calls (building a plan, an export), whose futures the
/// compiler cannot prove `Send` in a generic context, so they are made and polled on one thread.
fn call<T, F, Fut>(py: Python<'_>, rt: &Rt, make: F) -> PyResult<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
    T: Send + 'static,
{
    let (cancel, cancelled) = tokio::sync::oneshot::channel::<()>();
    let (done, mut result) = std::sync::mpsc::channel();
    let handle = rt.handle.clone();
    let worker = std::thread::Builder::new()
        .name("pretext-call".into())
        .spawn(move || {
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                handle.block_on(async move {
                    tokio::select! {
                        out = make() => Some(out),
                        _ = cancelled => None,
                    }
                })
            }));
            let _ = done.send(out);
        })
        .map_err(|e| EnvError::new_err(format!("cannot start a thread: {e}")))?;
    loop {
        let waiting = &mut result;
        match py.detach(move || waiting.recv_timeout(SIGNAL_POLL)) {
            Ok(out) => {
                let _ = worker.join();
                return match out {
                    Ok(Some(out)) => Ok(out),
                    Ok(None) => Err(InternalError::new_err("internal error: a call ended without a result")),
                    Err(payload) => Err(panic_error(payload)),
                };
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if let Err(interrupt) = py.check_signals() {
                    drop(cancel);
                    let _ = py.detach(|| worker.join());
                    return Err(interrupt);
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                return Err(InternalError::new_err("internal error: the call's thread ended without a result"));
            }
        }
    }
}

fn split(plan: &Plan, name: &str) -> PyResult<Split> {
    plan.split(name).ok_or_else(|| match name {
        "train" | "eval" => PyValueError::new_err(format!(
            "split {name:?} needs `train.eval` in the pipeline (it defines the held-out documents); use split=\"all\""
        )),
        other => PyValueError::new_err(format!("split must be \"all\", \"train\" or \"eval\", not {other:?}")),
    })
}

fn parse_cursor(json: &str) -> PyResult<StreamCursor> {
    serde_json::from_str(json).map_err(|e| {
        PyValueError::new_err(format!(
            "not a pretext stream cursor ({e}): pass the cursor a batch came with, or a state_dict() saved from one"
        ))
    })
}

fn cursor_json(c: &StreamCursor) -> PyResult<String> {
    serde_json::to_string(c).map_err(|e| InternalError::new_err(format!("cannot write a cursor: {e}")))
}

fn schema_capsule<'py>(py: Python<'py>, schema: &arrow::datatypes::Schema) -> PyResult<Bound<'py, PyCapsule>> {
    let ffi = FFI_ArrowSchema::try_from(schema)
        .map_err(|e| InternalError::new_err(format!("cannot export the schema to Arrow C: {e}")))?;
    PyCapsule::new_with_value(py, ffi, c"arrow_schema")
}

/// A loaded pipeline file; the plan is resolved on first use in each process.
#[pyclass(module = "pretext._pretext", name = "_Pipeline", frozen)]
struct PyPipeline {
    pipeline: pretext::Pipeline,
    tokenizer_dir: Option<PathBuf>,
    /// The plan, and the process and runtime generation it was built in.
    plan: Mutex<Option<(u32, u64, Arc<Plan>)>>,
}

impl PyPipeline {
    fn plan(&self, py: Python<'_>) -> PyResult<(Rt, Arc<Plan>)> {
        let rt = runtime()?;
        let pid = std::process::id();
        // A plan from before a fork may hold connections of the runtime that was stopped.
        if let Some((owner, generation, plan)) = self.plan.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            if *owner == pid && *generation == rt.generation {
                return Ok((rt, plan.clone()));
            }
        }
        let opts =
            BuildOptions { tokenizer_dir: self.tokenizer_dir.clone(), reuse_tokenizer: true, ..Default::default() };
        let pipeline = self.pipeline.clone();
        let plan =
            call(py, &rt, move || async move { Plan::build(pipeline, &opts).await })?.map_err(|e| to_py(py, e))?;
        *self.plan.lock().unwrap_or_else(|p| p.into_inner()) = Some((pid, rt.generation, plan.clone()));
        Ok((rt, plan))
    }
}

#[pymethods]
impl PyPipeline {
    #[new]
    #[pyo3(signature = (path, sets, tokenizer_dir=None))]
    fn new(py: Python<'_>, path: PathBuf, sets: Vec<String>, tokenizer_dir: Option<PathBuf>) -> PyResult<Self> {
        guard(|| {
            let pipeline = pretext::load_pipeline(&path, &sets).map_err(|e| to_py(py, e))?;
            Ok(PyPipeline { pipeline, tokenizer_dir, plan: Mutex::new(None) })
        })
    }

    /// The pipeline's `name`.
    #[getter]
    fn name(&self) -> String {
        self.pipeline.name().to_string()
    }

    /// Resolves the plan now (lists and checks the sources, trains or loads the tokenizer).
    fn build(&self, py: Python<'_>) -> PyResult<()> {
        guard(|| self.plan(py).map(|_| ()))
    }

    /// Checks the pipeline as `pretext validate` does (sources, columns, SQL, tokenizer) without
    /// training a tokenizer.
    fn validate(&self, py: Python<'_>) -> PyResult<()> {
        guard(|| {
            let rt = runtime()?;
            let opts = BuildOptions { check_only: true, ..Default::default() };
            let pipeline = self.pipeline.clone();
            call(py, &rt, move || async move { Plan::build(pipeline, &opts).await })?.map_err(|e| to_py(py, e))?;
            Ok(())
        })
    }

    /// The first `n` examples decoded as `pretext preview` prints them.
    fn preview(&self, py: Python<'_>, n: usize) -> PyResult<String> {
        guard(|| {
            let (rt, plan) = self.plan(py)?;
            call(py, &rt, move || async move { pretext::cli::preview_text(&plan, n).await })?.map_err(|e| to_py(py, e))
        })
    }

    /// The Arrow schema of the batches, as an `arrow_schema` PyCapsule.
    fn schema<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyCapsule>> {
        guard(|| {
            let (_, plan) = self.plan(py)?;
            schema_capsule(py, &plan.output_schema())
        })
    }

    /// `stream.batch_size`, `stream.epochs`, `seed`, the task's name, the shard, the vocabulary's
    /// size and its special ids (`None` where the vocabulary has none).
    fn info<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        guard(|| {
            let (_, plan) = self.plan(py)?;
            let d = PyDict::new(py);
            d.set_item("batch_size", plan.batch_size())?;
            d.set_item("epochs", plan.epochs())?;
            d.set_item("seed", plan.seed())?;
            d.set_item("task", plan.task_name())?;
            d.set_item("rank", plan.shard().rank)?;
            d.set_item("world_size", plan.shard().world_size)?;
            let (vocab_size, specials) = plan.vocabulary();
            d.set_item("vocab_size", vocab_size)?;
            for (name, id) in specials {
                d.set_item(format!("{name}_token_id"), id)?;
            }
            Ok(d)
        })
    }

    /// The cursor at the start of pass `epoch`, as JSON.
    fn start_cursor(&self, py: Python<'_>, epoch: u32) -> PyResult<String> {
        guard(|| {
            let (_, plan) = self.plan(py)?;
            cursor_json(&plan.epoch_start(epoch))
        })
    }

    /// Batches from `cursor` (JSON; default the start of pass 0): one pass, or pass after pass
    /// when `forever`. `prefetch` batches are made ahead of the consumer.
    #[pyo3(signature = (split_name, cursor=None, forever=false, prefetch=4))]
    fn iter(
        &self,
        py: Python<'_>,
        split_name: &str,
        cursor: Option<&str>,
        forever: bool,
        prefetch: usize,
    ) -> PyResult<BatchIter> {
        guard(|| {
            let (rt, plan) = self.plan(py)?;
            let split = split(&plan, split_name)?;
            let cursor = match cursor {
                Some(json) => parse_cursor(json)?,
                None => plan.epoch_start(0),
            };
            let stream = if forever { plan.batches_from(split, cursor) } else { plan.pass_from(split, cursor) };
            let (tx, rx) = tokio::sync::mpsc::channel(prefetch.max(1));
            let task = rt.handle.spawn(async move {
                let mut stream = stream;
                while let Some(item) = stream.next().await {
                    let stop = item.is_err();
                    if tx.send(item).await.is_err() || stop {
                        break;
                    }
                }
            });
            let task = Mutex::new(Some(Producer(task)));
            Ok(BatchIter { rt, schema: plan.output_schema(), rx: Mutex::new(Some(rx)), task })
        })
    }

    /// The cursors of a world's ranks (all saved after the same batch) turned into cursors for
    /// `world_size` ranks that together deliver exactly the rest of the pass.
    fn rebalance(
        &self,
        py: Python<'_>,
        cursors: Vec<String>,
        world_size: u64,
        split_name: &str,
    ) -> PyResult<Vec<String>> {
        guard(|| {
            let (_, plan) = self.plan(py)?;
            let split = split(&plan, split_name)?;
            let old = cursors.iter().map(|c| parse_cursor(c)).collect::<PyResult<Vec<_>>>()?;
            let new = plan.rebalance(&old, world_size, split).map_err(|e| to_py(py, e))?;
            new.iter().map(cursor_json).collect()
        })
    }

    /// Writes the pipeline's examples as `pretext export` does; returns the report.
    #[pyo3(signature = (out=None, resume=false, allow_new_data=false, progress_bar=false))]
    fn export<'py>(
        &self,
        py: Python<'py>,
        out: Option<PathBuf>,
        resume: bool,
        allow_new_data: bool,
        progress_bar: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        guard(|| {
            let rt = runtime()?;
            let request = pretext::ExportRequest { out, resume, allow_new_data, progress_bar };
            let pipeline = self.pipeline.clone();
            let report = call(py, &rt, move || async move { pretext::export(pipeline, &request).await })?
                .map_err(|e| to_py(py, e))?;
            let d = PyDict::new(py);
            d.set_item("dir", &report.dir)?;
            d.set_item("rows", report.rows)?;
            d.set_item("tokens", report.tokens)?;
            d.set_item("parts", report.parts)?;
            d.set_item("resumed_parts", report.resumed_parts)?;
            d.set_item("already_complete", report.already_complete)?;
            d.set_item("seconds", report.seconds)?;
            d.set_item("summary", report.summary())?;
            Ok(d)
        })
    }
}

/// The channel the pipeline's task fills ahead of the consumer.
type Batches = tokio::sync::mpsc::Receiver<pretext::Result<(RecordBatch, StreamCursor)>>;

/// One batch as it crosses into Python: schema and array capsules, and its cursor as JSON.
type Exported<'py> = (Bound<'py, PyCapsule>, Bound<'py, PyCapsule>, String);

/// Batches made ahead on the runtime, handed over one at a time.
#[pyclass(module = "pretext._pretext", name = "_BatchIter", frozen)]
struct BatchIter {
    rt: Rt,
    schema: SchemaRef,
    rx: Mutex<Option<Batches>>,
    task: Mutex<Option<Producer>>,
}

/// The task filling a [`Batches`] channel, stopped when its last consumer is dropped.
struct Producer(tokio::task::JoinHandle<()>);

impl Drop for Producer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl BatchIter {
    /// The next batch and its cursor, waiting with the GIL released; `None` at the end.
    fn next_item(&self, py: Python<'_>) -> PyResult<Option<(RecordBatch, StreamCursor)>> {
        let mut slot = self.rx.lock().unwrap_or_else(|p| p.into_inner());
        let Some(rx) = slot.as_mut() else { return Ok(None) };
        match wait(py, &self.rt, rx.recv())? {
            Some(Ok(item)) => Ok(Some(item)),
            Some(Err(e)) => {
                *slot = None;
                Err(to_py(py, e))
            }
            None => {
                *slot = None;
                Ok(None)
            }
        }
    }
}

#[pymethods]
impl BatchIter {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// `(arrow_schema capsule, arrow_array capsule, cursor JSON)` of the next batch.
    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Exported<'py>>> {
        guard(|| {
            let Some((batch, cursor)) = self.next_item(py)? else { return Ok(None) };
            let schema = schema_capsule(py, batch.schema().as_ref())?;
            let array = FFI_ArrowArray::new(&StructArray::from(batch).to_data());
            let array = PyCapsule::new_with_value(py, array, c"arrow_array")?;
            Ok(Some((schema, array, cursor_json(&cursor)?)))
        })
    }

    /// The rest of the batches as an `arrow_array_stream` PyCapsule (the cursors are dropped).
    fn stream<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyCapsule>> {
        guard(|| {
            let rx = self.rx.lock().unwrap_or_else(|p| p.into_inner()).take();
            // The reader outlives this iterator (pyarrow holds it): it owns the producer now.
            let producer = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
            let reader = StreamReader { rt: self.rt.clone(), schema: self.schema.clone(), rx, _producer: producer };
            let stream = FFI_ArrowArrayStream::new(Box::new(reader));
            PyCapsule::new_with_value(py, stream, STREAM_NAME)
        })
    }
}

const STREAM_NAME: &CStr = c"arrow_array_stream";

/// The batches of a [`BatchIter`] as an arrow `RecordBatchReader` (for the C stream interface;
/// the consumer, not Python, drives it, so it blocks without the GIL).
struct StreamReader {
    rt: Rt,
    schema: SchemaRef,
    rx: Option<Batches>,
    _producer: Option<Producer>,
}

impl Iterator for StreamReader {
    type Item = Result<RecordBatch, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rx = self.rx.as_mut()?;
        if let Err(e) = self.rt.check() {
            self.rx = None;
            return Some(Err(ArrowError::ExternalError(Box::new(std::io::Error::other(e.to_string())))));
        }
        match self.rt.handle.block_on(rx.recv()) {
            Some(Ok((batch, _))) => Some(Ok(batch)),
            Some(Err(e)) => {
                self.rx = None;
                Some(Err(ArrowError::ExternalError(Box::new(e))))
            }
            None => {
                self.rx = None;
                None
            }
        }
    }
}

impl RecordBatchReader for StreamReader {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

/// The `pretext` command: runs it with `argv` (the program's name first) and returns its exit
/// code. Signals are the command's own (graceful stop at a safe point, as documented).
#[pyfunction]
fn cli_main(py: Python<'_>, argv: Vec<String>) -> i32 {
    py.detach(|| pretext::cli::main(argv))
}

/// glibc's mmap threshold fixed as the `pretext` binary fixes it, so large buffers are returned
/// to the system when freed and memory stays flat over a long iteration.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    // SAFETY: mallopt only changes allocator parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

#[pymodule]
fn _pretext(m: &Bound<'_, PyModule>) -> PyResult<()> {
    tune_allocator();
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("Error", py.get_type::<Error>())?;
    m.add("SpecError", py.get_type::<SpecError>())?;
    m.add("DataError", py.get_type::<DataError>())?;
    m.add("EnvError", py.get_type::<EnvError>())?;
    m.add("StoppedError", py.get_type::<StoppedError>())?;
    m.add("InternalError", py.get_type::<InternalError>())?;
    m.add_class::<PyPipeline>()?;
    m.add_class::<BatchIter>()?;
    m.add_function(wrap_pyfunction!(cli_main, m)?)?;
    m.add_function(wrap_pyfunction!(_before_fork, m)?)?;
    Ok(())
}
